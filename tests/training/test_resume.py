"""Exact resume (npvae_tf/training/fit.py with train.py): a run killed at any point and rerun ends
with the files of an uninterrupted run, bit for bit on CPU.

One run is killed five times, at different kinds of points, with SIGKILL (no clean-up at all)
and SIGINT (Ctrl-C), each rerun with the same command; a driver process puts the kill where
it must be (a callback, or a wrapped function), so no timing is involved.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import npvae_tf.model.vae  # noqa: F401  registers the classes model.keras names
from npvae_tf.runs.reference import ReferenceSet
from npvae_tf.core.config import Config
from npvae_tf.runs.layout import (BACKUP_DIR, BEST_FILE, LOG_FILE, TEST_METRICS_FILE, MODEL_FILE,
                                  default_run_dir)
from tests.helpers import ROOT, synthetic_digits, write_idx

# Runs train.py's main() with one kill planted. argv: KILL ARGS...; KILL is one of
#   batch:SIG:EPOCH:BATCH   after that training batch            (mid-epoch)
#   epoch_end:SIG:EPOCH     after the epoch's log row, before its resume state is written
#   call:SIG:NAME           when npvae_tf.training calls NAME    (while finishing the run)
#   none
DRIVER = textwrap.dedent("""
    import os, signal, sys
    root, kill, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    # Ctrl-C as in a terminal, also when the suite runs in the background (a shell
    # starts background jobs with SIGINT ignored, and the child would inherit that).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, root)
    import train as cli
    from npvae_tf.core.quiet import quiet_tensorflow
    quiet_tensorflow()
    import keras
    import npvae_tf.training.fit as training

    def die(sig):
        sys.stdout.flush()
        os.kill(os.getpid(), getattr(signal, sig))

    kind, *spec = kill.split(":")
    if kind in ("batch", "epoch_end"):
        class Killer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch
            def on_train_batch_end(self, batch, logs=None):
                if kind == "batch" and (self.epoch, batch) == (int(spec[1]), int(spec[2])):
                    die(spec[0])
            def on_epoch_end(self, epoch, logs=None):
                if kind == "epoch_end" and epoch == int(spec[1]):
                    die(spec[0])
        original = training.callbacks_for
        def callbacks_for(run_dir, own_dir, chief, initial_epoch=0, extra=(), progress=None):
            return original(run_dir, own_dir, chief, initial_epoch, [*extra, Killer()],
                            progress)
        training.callbacks_for = callbacks_for
    elif kind == "call":
        sig, name = spec
        if name == "shutil.rmtree":
            training.shutil = type("S", (), {"rmtree": staticmethod(lambda *a, **k: die(sig))})
        else:
            setattr(training, name, lambda *a, **k: die(sig))
    cli.main(argv)
""")


def run_train(kill, args, cwd):
    return subprocess.run([sys.executable, "-c", DRIVER, ROOT, kill, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# No --out: the run folder is the default one, which the same flags find again.
CONFIG = Config(z_dim=4, hidden=(32, 32), epochs=3, batch_size=64, validation_examples=100,
                binarize=True)


def train_args(data_dir):
    return ["--z_dim", "4", "--hidden", "32", "32", "--epochs", "3", "--batch_size", "64",
            "--validation_examples", "100", "--binarize", "--data_dir", data_dir]


@pytest.fixture(scope="module")
def gray_digits_dir(tmp_path_factory):
    """Generated digits with grey levels (the shared fixture's are pure black and white, so
    binarising them would change nothing)."""
    folder = str(tmp_path_factory.mktemp("gray_digits"))
    rng = np.random.default_rng(0)
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        images, labels = synthetic_digits(n, seed)
        grey = images * rng.uniform(0.2, 0.9, size=(n, 1, 1))
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), grey.astype(np.uint8))
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), labels)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, gray_digits_dir):
    mnist_like_dir = gray_digits_dir
    cwd = str(tmp_path_factory.mktemp("uninterrupted"))
    result = run_train("none", train_args(mnist_like_dir), cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout and "\x1b" not in result.stdout  # not a terminal
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    # Lines fit a terminal, paths aside (the folders' own length is not the program's).
    short = result.stdout.replace(cwd, "CWD").replace(mnist_like_dir, "DATA")
    assert all(len(line) <= 100 for line in short.splitlines()), short
    return os.path.join(cwd, default_run_dir(CONFIG))


def weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def assert_same_run(a, b):
    for name in (LOG_FILE, TEST_METRICS_FILE, "config.json", BEST_FILE + ".json"):
        with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
            assert fa.read() == fb.read(), name
    for name in (MODEL_FILE, BEST_FILE):
        for wa, wb in zip(weights(os.path.join(a, name)), weights(os.path.join(b, name)),
                          strict=True):
            np.testing.assert_array_equal(wa, wb, err_msg=name)
    ra, rb = ReferenceSet.load(a), ReferenceSet.load(b)
    np.testing.assert_array_equal(ra.z_mean, rb.z_mean)
    np.testing.assert_array_equal(ra.x, rb.x)
    assert ra.lengthscale == rb.lengthscale


def test_a_run_killed_again_and_again_ends_as_if_never_interrupted(uninterrupted, tmp_path,
                                                                    gray_digits_dir):
    out = str(tmp_path / default_run_dir(CONFIG))
    args = train_args(gray_digits_dir)
    cwd = str(tmp_path)

    # 1. SIGKILL in the middle of the first epoch: no resume state yet.
    result = run_train("batch:SIGKILL:0:2", args, cwd)
    assert result.returncode == -9
    assert not os.path.exists(os.path.join(out, BACKUP_DIR, "backup.json"))

    # 2. Ctrl-C in the middle of the second epoch: one line, no traceback, exit 130.
    result = run_train("batch:SIGINT:1:3", args, cwd)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"interrupted: rerun the same command to resume {default_run_dir(CONFIG)}"
    with open(os.path.join(out, LOG_FILE)) as f:
        assert len(f.read().splitlines()) == 2  # header and epoch 0

    # 3. SIGKILL after epoch 1's log row, before its resume state: the rerun redoes epoch 1
    #    and its row is not doubled.
    result = run_train("epoch_end:SIGKILL:1", args, cwd)
    assert result.returncode == -9
    assert f"resuming {default_run_dir(CONFIG)} from epoch 2 of 3 (1 done)" in result.stdout
    with open(os.path.join(out, LOG_FILE)) as f:
        assert len(f.read().splitlines()) == 3

    # 4. SIGKILL once fitting is over and model.keras written, before the reference set.
    result = run_train("call:SIGKILL:build_reference_set", args, cwd)
    assert result.returncode == -9
    assert os.path.isfile(os.path.join(out, MODEL_FILE))
    assert os.path.isdir(os.path.join(out, BACKUP_DIR))  # still there: nothing is lost

    # 5. SIGKILL after test_metrics.json, as the backup is about to be removed.
    result = run_train("call:SIGKILL:shutil.rmtree", args, cwd)
    assert result.returncode == -9
    assert "all 3 epochs done; finishing the run" in result.stdout
    assert os.path.isfile(os.path.join(out, TEST_METRICS_FILE))

    # 6. The rerun finds a finished run: it only removes the leftover backup (and what a
    #    process killed mid-write leaves, as a kill inside best.keras's save would).
    stale = os.path.join(out, ".tmp-99999-best.keras")
    open(stale, "w").close()
    result = run_train("none", args, cwd)
    assert not os.path.exists(stale)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already trained; nothing to do" in result.stdout
    assert not os.path.exists(os.path.join(out, BACKUP_DIR))
    assert_same_run(uninterrupted, out)
    fits = json.load(open(os.path.join(out, "fit_summary.json")))
    assert fits["epochs_timed"] == 3 and len(fits["epoch_seconds"]) == 3


def test_binarize_holds_end_to_end(uninterrupted, gray_digits_dir):
    """--binarize: the reference set (hence the X density) comes from the binarised training
    images the model was trained on, not from grayscale ones."""
    from npvae_tf.data.pipeline import evaluation_images
    from npvae_tf.data.datasets import load_data
    from npvae_tf.runs.reference import encode_means

    data = load_data(gray_digits_dir, validation_examples=CONFIG.validation_examples)
    model = keras.saving.load_model(os.path.join(uninterrupted, MODEL_FILE), compile=False)
    reference = ReferenceSet.load(uninterrupted)
    binary = evaluation_images(data.train.images, True, CONFIG.seed, "train")
    assert set(np.unique(binary)) == {0.0, 1.0}
    z_mean, x = encode_means(model, binary)
    np.testing.assert_allclose(reference.z_mean, z_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference.x, x, rtol=1e-5, atol=1e-6)
    gray_z, _ = encode_means(model, data.train.images)
    assert not np.allclose(reference.z_mean, gray_z, atol=1e-3)


def test_the_uninterrupted_run_leaves_no_backup_and_logs_each_epoch_once(uninterrupted):
    assert not os.path.exists(os.path.join(uninterrupted, BACKUP_DIR))
    with open(os.path.join(uninterrupted, LOG_FILE)) as f:
        rows = f.read().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]


def test_the_neighbour_scheme_resumes_exactly_from_its_own_graph(uninterrupted, tmp_path,
                                                                 gray_digits_dir, monkeypatch):
    """The neighbour scheme (graph, landmarks, an X-path decoder fitted after training): the
    graph is copied into the run folder at start and the tails and negatives are drawn per
    (seed, epoch, batch), so a run killed mid-epoch and rerun ends bit for bit as an
    uninterrupted one, even with the graph cache emptied in between. (Its optimizer has no
    slots for the X-path decoder; a resume once built them and refused the backup.)"""
    from npvae_tf.runs.layout import NEIGHBOUR_GRAPH_FILE

    cache = tmp_path / "cache"
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(cache))
    args = train_args(gray_digits_dir) + ["--scheme", "neighbour", "--n_neighbors", "5",
                                          "--x_path_decoder_epochs", "2", "--out", "run"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    result = run_train("none", args, str(whole))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "neighbour graph: building" in result.stdout
    result = run_train("batch:SIGKILL:1:3", args, str(killed))
    assert result.returncode == -9 and "from the cache" in result.stdout
    for path in (cache / "graphs").glob("*.npz"):
        path.unlink()  # the rerun must read the run folder's own graph
    result = run_train("none", args, str(killed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming run from epoch 2 of 3" in result.stdout and "building" not in result.stdout
    assert_same_run(str(whole / "run"), str(killed / "run"))
    with open(whole / "run" / NEIGHBOUR_GRAPH_FILE, "rb") as a, \
            open(killed / "run" / NEIGHBOUR_GRAPH_FILE, "rb") as b:
        assert a.read() == b.read()
    with open(whole / "run" / LOG_FILE) as f:
        assert "neighbour" in f.readline()
