"""SavedModel export for serving: named signatures over a trained run, TensorFlow alone.

Shapes: ``N`` batch (dynamic, may be 0), ``P`` pixels (784), ``Z`` latent size, ``D`` size of
X, ``M`` reference points. Signatures of the exported SavedModel (inputs -> outputs):

    serving_default, reconstruct   images [N, P] -> images [N, P]
        decode(E[z|y]): reconstruction probabilities, as ``model(images)``
    encode      images [N, P] -> z_mean [N, Z], z_stddev [N, Z] (+ x [N, D] for the npVAE)
    decode      z [N, Z] -> images [N, P]                 sigmoid(decoder logits)
    generate_from_x (npVAE)
                x [N, D] -> images [N, P], z [N, Z]
        z = z~(x) = sum_j W(x, x_j) E[z_j] over the reference set stored in the SavedModel
        (``W`` the row-softmax of ``-||x - x_j||^2 / (2 l^2)``), images = decode(z)
    sample      count [] int32, seed [] int64 -> images [count, P], z [count, Z]
                (+ x [count, D] for the npVAE)
        npVAE: ancestral sampling in X, x from the Gaussian mixture over the training X that
        evaluation uses (:func:`mixture_parameters`), then as generate_from_x.
        VAE: z ~ N(0, I). Stateless: the same (count, seed) gives the same images.

Image inputs are float32 pixels in [0, 1]; every input is checked when the signature runs
(shape with ``EnsureShape``, dtype by the signature, values with ``tf.debugging`` asserts),
so bad input raises ``InvalidArgumentError`` with a message naming the problem.

Speed of ``generate_from_x``: the kernel is ``model.kernel.predictive_mean`` (chunked,
streaming softmax) unchanged, but compiled with XLA, which fuses its element-wise work
(distances, masking, exp, running maximum) into the chunk loop. At batch 1,024 with
M = 55,000 and Z = 500 that cuts its CPU time from ~2.6 to ~1.1-1.2 times that of the bare
``[N, M] @ [M, Z]`` product (2 N M Z flops), the floor for an exact kernel: the weights are
not sparse enough to prune (a query's neighbours within 40 nats of its nearest point are
typically over half the reference set) and E[z] has full rank. See
``benchmarks/bench_serving.py``. XLA compiles once per input shape, so queries are cut into
blocks of :data:`QUERY_BLOCK` rows and the last block is padded up to one of
:data:`QUERY_BUCKETS`: at most ``len(QUERY_BUCKETS)`` compilations per process, each about
0.5 to 2 s on its first use. The reference set is stored padded to a multiple of the chunk
size, the padding at ``x = +inf`` (kernel logit -inf) with ``E[z] = 0``, so no call copies
the ``[M, Z]`` matrix to pad it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np
import tensorflow as tf

from npvae_tf.reference import ReferenceSet

# Reference points per kernel chunk: with XLA, 512 and 1,024 cost the least CPU time at batch
# 1,024 with M = 55,000, Z = 500 (within ~5%; 2,048 +5-10%, 4,096 +15-20%; bench_serving.py).
DEFAULT_CHUNK_SIZE = 1024
# Padded batch sizes seen by the XLA-compiled kernel; the last is the block size.
QUERY_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 640, 768, 896, 1024)
QUERY_BLOCK = QUERY_BUCKETS[-1]
MAX_SAMPLE_COUNT = 100_000
INFO_FILE = os.path.join("assets.extra", "npvae_export.json")
SIGNATURES_NPVAE = ("serving_default", "reconstruct", "encode", "decode", "generate_from_x",
                    "sample")
SIGNATURES_VAE = ("serving_default", "reconstruct", "encode", "decode", "sample")


class ExportError(ValueError):
    """A run cannot be exported (missing or inconsistent files, unsafe target)."""


# --- the density over X used for ancestral sampling -----------------------------------------
def mixture_parameters(x: np.ndarray) -> dict:
    """The density over X that evaluation samples from, as arrays to store in a SavedModel.

    The Gaussian mixture ``p(x) = sum_c w_c N(x; mu_c, S_c)`` of
    :func:`npvae_tf.sampling.fit_x_density` fitted to embeddings ``x`` ``[M, D]`` (M >= 2):
    ``weights`` ``[C]``, ``means`` ``[C, D]``, ``scale_tril`` ``[C, D, D]`` (``S_c = L_c L_c^T``).
    """
    from npvae_tf.sampling import fit_x_density
    from npvae_tf.seeds import stream_seed

    try:  # fitted as evaluate.py fits it with its default --eval_seed 0
        mixture = fit_x_density(x, stream_seed(0, "evaluation/x_density_fit"))
    except ValueError as e:
        raise ExportError(f"cannot fit the density over X for sampling: {e}") from None
    return {"weights": mixture.weights_.astype(np.float32),
            "means": mixture.means_.astype(np.float32),
            "scale_tril": np.linalg.cholesky(mixture.covariances_).astype(np.float32)}


def mixture_sample(weights, means, scale_tril, count, seed) -> tf.Tensor:
    """``count`` draws ``[count, D]`` from the mixture of :func:`mixture_parameters`, stateless.

    ``c ~ Categorical(weights)`` with the stateless seed ``[seed, 0]``, then
    ``x = mu_c + L_c eps``, ``eps ~ N(0, I_D)`` with ``[seed, 1]``: the same (count, seed)
    gives the same x. ``seed``: int64 scalar.
    """
    weights, means, scale_tril = (tf.convert_to_tensor(a, tf.float32)
                                  for a in (weights, means, scale_tril))
    seed = tf.cast(seed, tf.int64)
    component = tf.random.stateless_categorical(tf.math.log(weights)[None, :], count,
                                                seed=tf.stack([seed, 0]))[0]
    eps = tf.random.stateless_normal([count, tf.shape(means)[1]], seed=tf.stack([seed, 1]))
    offset = tf.linalg.matvec(tf.gather(scale_tril, component), eps)
    return tf.gather(means, component) + offset


# --- input validation inside the signatures ------------------------------------------------
def _checked_matrix(t: tf.Tensor, width: int, name: str) -> tf.Tensor:
    """``t`` ``[N, width]``, checked at run time for shape and finiteness."""
    # Grappler trusts the signature's static shape and folds rank/width asserts away, so a
    # [3, 783] tensor would reach the first matmul; EnsureShape checks the real shape.
    t = tf.ensure_shape(t, [None, width], name=f"check_{name}_shape")
    return tf.debugging.assert_all_finite(t, f"{name} must be finite (no NaN or Inf)")


def _checked_images(images: tf.Tensor, image_dim: int) -> tf.Tensor:
    images = _checked_matrix(images, image_dim, "images")
    in_range = [
        tf.debugging.assert_greater_equal(images, 0.0,
                                          message="images must be pixel values in [0, 1]"),
        tf.debugging.assert_less_equal(images, 1.0,
                                       message="images must be pixel values in [0, 1]"),
    ]
    with tf.control_dependencies(in_range):
        return tf.identity(images)


def _checked_count(count: tf.Tensor) -> tf.Tensor:
    count = tf.ensure_shape(count, [], name="check_count_shape")
    checks = [
        tf.debugging.assert_non_negative(count, message="count must be >= 0"),
        tf.debugging.assert_less_equal(count, MAX_SAMPLE_COUNT,
                                       message=f"count must be <= {MAX_SAMPLE_COUNT}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(count)


def _checked_seed(seed: tf.Tensor) -> tf.Tensor:
    return tf.ensure_shape(seed, [], name="check_seed_shape")


# --- the exported module --------------------------------------------------------------------
def _pad_reference(x: np.ndarray, z: np.ndarray, chunk: int):
    """Pads ``[M, D]``, ``[M, Z]`` to a multiple of ``chunk`` rows: x = +inf, z = 0.

    ``-||x* - inf||^2 / (2 l^2) = -inf``: the padding gets kernel weight 0 (and, were exp
    to round -inf up to its smallest output, it still adds nothing: its E[z] is 0).
    """
    pad = -len(x) % chunk
    x = np.concatenate([x, np.full((pad, x.shape[1]), np.inf, np.float32)])
    z = np.concatenate([z, np.zeros((pad, z.shape[1]), np.float32)])
    return x, z


def _function(method, input_signature):
    # The graphs use explicit tf.cond / tf.map_fn / tf.foldl; without AutoGraph, tracing
    # does not depend on re-reading (possibly edited) source files.
    return tf.function(method, input_signature=input_signature, autograph=False)


class ServingModule(tf.Module):
    """The signatures above over a built Keras :class:`~npvae_tf.model.VAE` or npVAE.

    Args:
      model: the trained model (``NonparametricVAE`` needs ``reference``).
      reference: the reference set (``x`` ``[M, D]``, ``z_mean`` ``[M, Z]``) for the npVAE.
      chunk_size: reference points per kernel chunk (memory ``O(QUERY_BLOCK * chunk)``).
      jit_compile: compile the kernel with XLA (see the module docstring).
    """

    def __init__(self, model, reference: Optional[ReferenceSet] = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, jit_compile: bool = True):
        super().__init__(name="npvae_serving")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # The Keras model is used by the traced functions but not saved as an object: only
        # its variables are (loading then needs neither Keras nor npvae_tf).
        object.__setattr__(self, "_model", model)
        self.model_variables = list(model.variables)
        self.image_dim, self.z_dim = int(model.image_dim), int(model.z_dim)
        self.is_npvae = hasattr(model, "kernel")
        images = tf.TensorSpec([None, self.image_dim], tf.float32, name="images")
        self.reconstruct = _function(self._reconstruct, [images])
        self.encode = _function(self._encode, [images])
        self.decode = _function(self._decode, [tf.TensorSpec([None, self.z_dim], tf.float32,
                                                             name="z")])
        sample_spec = [tf.TensorSpec([], tf.int32, name="count"),
                       tf.TensorSpec([], tf.int64, name="seed")]
        if not self.is_npvae:
            self.sample = _function(self._sample_prior, sample_spec)
            return
        if reference is None or reference.x is None:
            raise ExportError("the npVAE export needs a reference set with x")
        self._check_reference(reference)
        self.x_dim, self.chunk_size = int(model.x_dim), int(chunk_size)
        self.jit_compile = bool(jit_compile)
        self.reference_size = len(reference.x)
        # The serving lengthscale chosen after training (reference.py), else the learned one.
        self.lengthscale = float(reference.lengthscale if reference.lengthscale is not None
                                 else model.kernel.lengthscale.numpy())
        x_pad, z_pad = _pad_reference(np.asarray(reference.x, np.float32),
                                      np.asarray(reference.z_mean, np.float32), self.chunk_size)
        self.reference_x = tf.Variable(x_pad, trainable=False, name="reference_x")
        self.reference_z_mean = tf.Variable(z_pad, trainable=False, name="reference_z_mean")
        self.density = mixture_parameters(reference.x)
        self.x_density = {name: tf.Variable(value, trainable=False, name=f"x_density_{name}")
                          for name, value in self.density.items()}
        core = (tf.function(self._kernel_mean, jit_compile=True, autograph=False)
                if jit_compile else self._kernel_mean)
        object.__setattr__(self, "_core", core)  # a helper, not a saved endpoint
        self.generate_from_x = _function(
            self._generate_from_x, [tf.TensorSpec([None, self.x_dim], tf.float32, name="x")])
        self.sample = _function(self._sample_mixture, sample_spec)

    def _check_reference(self, reference: ReferenceSet) -> None:
        m = self._model
        x, z = np.shape(reference.x), np.shape(reference.z_mean)
        if len(x) != 2 or len(z) != 2 or x[0] != z[0] or x[0] < 1:
            raise ExportError(f"reference set x {x} and z_mean {z} do not match")
        if x[1] != m.x_dim or z[1] != m.z_dim:
            raise ExportError(f"reference set x {x} / z_mean {z} does not fit the model "
                              f"(x_dim {m.x_dim}, z_dim {m.z_dim})")
        if not (np.all(np.isfinite(reference.x)) and np.all(np.isfinite(reference.z_mean))):
            raise ExportError("reference set holds NaN or Inf values")

    @property
    def signature_names(self):
        return SIGNATURES_NPVAE if self.is_npvae else SIGNATURES_VAE

    def signatures(self) -> dict:
        fns = {"serving_default": self.reconstruct, "reconstruct": self.reconstruct,
               "encode": self.encode, "decode": self.decode, "sample": self.sample}
        if self.is_npvae:
            fns["generate_from_x"] = self.generate_from_x
        return {name: fns[name].get_concrete_function() for name in self.signature_names}

    # The model's own maths: approx_posterior, decode, embed, kernel.predictive_mean.
    def _reconstruct(self, images):
        images = _checked_images(images, self.image_dim)
        z_mean = self._model.approx_posterior(images).mean()
        return {"images": self._model.decode(z_mean)}

    def _encode(self, images):
        images = _checked_images(images, self.image_dim)
        q = self._model.approx_posterior(images)
        out = {"z_mean": q.mean(), "z_stddev": q.stddev()}
        if self.is_npvae:
            out["x"] = self._model.embed(images)
        return out

    def _decode(self, z):
        return {"images": self._model.decode(_checked_matrix(z, self.z_dim, "z"))}

    def _sample_prior(self, count, seed):
        count, seed = _checked_count(count), _checked_seed(seed)
        z = tf.random.stateless_normal([count, self.z_dim], seed=tf.stack([seed, 0]))
        return {"images": self._model.decode(z), "z": z}

    def _kernel_mean(self, x):
        return self._model.kernel.predictive_mean(x, self.reference_x, self.reference_z_mean,
                                                  self.chunk_size, lengthscale=self.lengthscale)

    def _predictive_mean(self, x):
        """``z~(x)`` ``[N, Z]`` in blocks of QUERY_BLOCK queries; the rest padded to a bucket."""
        n = tf.shape(x)[0]
        full = n // QUERY_BLOCK * QUERY_BLOCK
        blocks = tf.reshape(x[:full], [-1, QUERY_BLOCK, self.x_dim])
        # One block at a time: each kernel call already uses every core, and memory stays
        # O(QUERY_BLOCK * (chunk + Z)).
        head = tf.map_fn(self._core, blocks, parallel_iterations=1,
                         fn_output_signature=tf.TensorSpec([QUERY_BLOCK, self.z_dim], tf.float32))
        rest = n - full

        def tail():
            size = rest
            if self.jit_compile:
                buckets = tf.constant(QUERY_BUCKETS, tf.int32)
                size = tf.gather(buckets, tf.searchsorted(buckets, rest[None])[0])
            padded = tf.pad(x[full:], [[0, size - rest], [0, 0]])  # zeros: finite queries
            return self._core(padded)[:rest]

        tail_z = tf.cond(rest > 0, tail, lambda: tf.zeros([0, self.z_dim]))
        return tf.concat([tf.reshape(head, [-1, self.z_dim]), tail_z], axis=0)

    def _generate_from_x(self, x):
        z = self._predictive_mean(_checked_matrix(x, self.x_dim, "x"))
        return {"images": self._model.x_path_likelihood(z).mean(), "z": z}

    def _sample_mixture(self, count, seed):
        x = mixture_sample(**self.x_density, count=_checked_count(count),
                           seed=_checked_seed(seed))
        z = self._predictive_mean(x)
        return {"images": self._model.x_path_likelihood(z).mean(), "z": z, "x": x}

    def info(self) -> dict:
        """What the export holds, written to ``assets.extra/npvae_export.json``."""
        info = {"model": "npvae" if self.is_npvae else "vae", "image_dim": self.image_dim,
                "z_dim": self.z_dim, "signatures": list(self.signature_names),
                "max_sample_count": MAX_SAMPLE_COUNT, "tensorflow": tf.__version__}
        if self.is_npvae:
            info.update(
                x_dim=self.x_dim, reference_size=self.reference_size,
                lengthscale=self.lengthscale,
                learned_lengthscale=float(self._model.kernel.lengthscale.numpy()),
                chunk_size=self.chunk_size, jit_compile=self.jit_compile,
                query_buckets=list(QUERY_BUCKETS),
                x_density={"kind": "gaussian_mixture",
                           "fitted_by": "npvae_tf.sampling.fit_x_density",
                           **{name: value.tolist() for name, value in self.density.items()}})
        return info


# --- writing -------------------------------------------------------------------------------
def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def atomic_write_dir(path: str, write) -> None:
    """Calls ``write(tmp_dir)`` then renames ``tmp_dir`` onto ``path``.

    An existing ``path`` is moved aside first and deleted only once the new folder is in
    place; if anything fails, ``path`` is left as it was and the temporary folder removed.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
    aside = None
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a server may be another user
        if os.path.lexists(path):
            aside = tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent)
            os.rename(path, os.path.join(aside, name))
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(os.path.join(aside, name), path)
                raise
        else:
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and os.path.exists(path):
            shutil.rmtree(aside, ignore_errors=True)


def check_target(export_dir: str) -> None:
    """Refuses to replace anything but an empty folder or an earlier SavedModel."""
    if not os.path.lexists(export_dir):
        return
    if not os.path.isdir(export_dir) or os.path.islink(export_dir):
        raise ExportError(f"{export_dir} exists and is not a folder; choose another --out")
    if os.listdir(export_dir) and not is_saved_model(export_dir):
        raise ExportError(f"{export_dir} exists and is not a SavedModel; refusing to replace it")


def export_model(model, export_dir: str, reference: Optional[ReferenceSet] = None, *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, jit_compile: bool = True,
                 extra_info: Optional[dict] = None) -> str:
    """Writes the SavedModel of ``model`` to ``export_dir`` atomically; returns its path."""
    check_target(export_dir)
    module = ServingModule(model, reference, chunk_size=chunk_size, jit_compile=jit_compile)
    info = {**module.info(), **(extra_info or {})}

    def write(tmp):
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        os.makedirs(os.path.join(tmp, os.path.dirname(INFO_FILE)), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write_dir(export_dir, write)
    return os.path.abspath(export_dir)


def load_run(run_dir: str):
    """``(config, model, reference)`` of a finished run folder (reference ``None`` for a VAE).

    :func:`npvae_tf.runs.load_run` checks and loads the folder; its errors come back as
    :class:`ExportError`.
    """
    from npvae_tf.runs import RunError, load_run as load_checked_run

    try:
        run = load_checked_run(run_dir)
    except RunError as e:
        raise ExportError(str(e)) from None
    return run.config, run.model, (run.reference if run.config.model == "npvae" else None)


def export_run(run_dir: str, export_dir: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               jit_compile: bool = True) -> str:
    """Exports the final model (``model.keras``) of ``run_dir`` with its reference set.

    Raises :class:`ExportError` or :class:`~npvae_tf.config.ConfigError` with a one-line
    message for a folder that is not a finished run, or an unsafe ``export_dir``.
    """
    check_target(export_dir)
    config, model, reference = load_run(run_dir)
    return export_model(model, export_dir, reference, chunk_size=chunk_size,
                        jit_compile=jit_compile,
                        extra_info={"run_dir": os.path.abspath(run_dir),
                                    "config": config.to_dict()})


__all__ = ["ExportError", "mixture_parameters", "mixture_sample",
           "ServingModule", "atomic_write_dir", "export_model", "export_run", "load_run"]
