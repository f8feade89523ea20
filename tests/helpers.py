"""Helpers the test modules share (generated data, small models, NumPy references, run
folders, processes); fixtures are in conftest.py. Heavy imports (Keras, TensorFlow) are made
inside the helpers that need them.
"""

import gzip
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- generated data -----------------------------------------------------------------------------

def write_idx(path, array, magic=None, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else 0x800 + array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path + (".gz" if gz else ""), "wb") as f:
        f.write(header + array.tobytes())


def synthetic_digits(n, seed=0, size=28):
    """Ten blurry, noisy prototype images: learnable, class-structured, deterministic."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, size, size)) > 0.7).astype(np.float32)
    labels = rng.integers(0, 10, n)
    noise = rng.random((n, size, size)) < 0.05
    images = np.where(noise, 1 - prototypes[labels], prototypes[labels])
    return (images * 255).astype(np.uint8), labels.astype(np.uint8)


def write_mnist_like(folder, n_train=600, n_test=200, size=28, gz=True):
    os.makedirs(folder, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed, size)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), images, gz=gz)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels, gz=gz)
    return folder


def digit_images(n, seed):
    images, labels = synthetic_digits(n, seed)
    return images.reshape(n, -1).astype(np.float32) / 255.0, labels


# --- small models and their NumPy references ----------------------------------------------------

SMALL = dict(z_dim=5, x_dim=2, hidden=(16, 12), image_shape=(4, 4), dropout=0.1, seed=3)


def small_model(model="npvae", **changes):
    import keras
    
    from npvae_tf import Config, build_model

    keras.utils.set_random_seed(0)
    m = build_model(Config(model=model, **{**SMALL, **changes}))
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    return m


def images(n=8, seed=0):
    return np.random.default_rng(seed).random((n, 16)).astype(np.float32)


def numpy_mlp(sequential, inputs):
    import keras

    h = inputs.astype(np.float64)
    for layer in sequential.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = (w.numpy().astype(np.float64) for w in layer.weights)
            h = h @ kernel + bias
            if layer.activation is keras.activations.relu:
                h = np.maximum(h, 0.0)
    return h


def softplus(a):
    return np.logaddexp(0.0, a)


def numpy_weights(x_query, x_ref, lengthscale, exclude_diagonal):
    """W_ij ∝ exp(-||x_i - x_j||^2 / (2 l^2)), W_ii = 0 in-batch, rows sum to 1."""
    sq = ((x_query[:, None, :] - x_ref[None, :, :]) ** 2).sum(-1)
    log_k = -sq / (2 * lengthscale ** 2)
    if exclude_diagonal:
        np.fill_diagonal(log_k, -np.inf)
    # The common factor exp(max_j log k_ij) cancels in the normalisation (no underflow).
    k = np.exp(log_k - log_k.max(1, keepdims=True))
    return k / k.sum(1, keepdims=True)


# --- run folders and processes ------------------------------------------------------------------

def make_run(folder, images, labels, **settings):
    """A run folder as train.py leaves it (config, model.keras, reference set, density over X),
    untrained."""
    from npvae_tf.core.config import Config
    from npvae_tf.core.files import write_json
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import build_reference_set
    from npvae_tf.runs.layout import MODEL_FILE, TEST_METRICS_FILE
    from npvae_tf.runs.x_density import XDensity

    config = Config(hidden=(32, 32), validation_examples=100, **settings)
    config.save(folder)
    model = build_model(config)
    reference = build_reference_set(model, images, labels)
    if reference.x is not None:
        # A lengthscale well below the spread of X: each location sees a few neighbours,
        # so a wrong weight, chunk or padding shows in the output.
        model.kernel.log_lengthscale.assign(np.log(0.2 * reference.x.std()))
        if config.placement == "neighbours":  # kept for placing new images, as training does
            import dataclasses

            from npvae_tf.runs.reference import compact_images

            stored, scale = compact_images(images)
            reference = dataclasses.replace(reference, images=stored, images_scale=scale)
    model.save(os.path.join(folder, MODEL_FILE))
    reference.save(folder)
    if reference.x is not None:
        XDensity.fit(reference.x, config.seed).save(folder)
    write_json(os.path.join(folder, TEST_METRICS_FILE), {"elbo": 0.0})  # marks the run finished


HOLDER = textwrap.dedent("""
    import sys, time
    from npvae_tf.runs.lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def start_holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, folder], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def unwritable_folder(tmp_path):
    """A folder this process cannot write (root ignores permissions: use /sys then)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("")
    except OSError:
        return str(folder)
    return "/sys"
