"""tf.distribute: replica-count invariance, multi-worker training, and kill-and-resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import npvae_tf.model.vae  # noqa: F401  registers the classes model.keras names
from npvae_tf.training.distribute import _auto, tf_config, worker_dir, worker_identity
from tests.helpers import ROOT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
TINY = ["--z_dim", "8", "--hidden", "64", "64", "--batch_size", "64",
        "--validation_examples", "100", "--quiet"]


def last_json_line(text):
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


@pytest.mark.parametrize("model", ["npvae", "vae", "xpath", "umap"])
def test_two_replicas_give_the_single_device_loss_and_gradients(model):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "replica_equivalence.py"),
                             model], capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = last_json_line(result.stdout)
    assert diff["replicas"] == 2
    assert diff["loss_rel"] < 1e-5
    assert diff["grad_rel"] < 1e-5
    assert diff["weights_rel"] < 1e-5  # after three optimizer steps through model.fit


def test_auto_strategy_choice(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert _auto(1) in ("default", "one_device", "mirrored")  # depends on the GPUs present
    assert _auto(2) == "mirrored"
    monkeypatch.setenv("TF_CONFIG", tf_config(["127.0.0.1:1", "127.0.0.1:2"], 0))
    assert _auto(1) == "multi_worker"


def test_single_process_is_the_chief(tmp_path):
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    assert worker_identity(strategy) == (True, 0)
    assert worker_dir(str(tmp_path), strategy) == str(tmp_path)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_to_identical_weights(tmp_path, mnist_like_dir):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    out = str(tmp_path / "run")
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *TINY,
                               "--epochs", "1", "--data_dir", mnist_like_dir, "--out", out,
                               "--strategy", "multi_worker"],
                              env={**ENV, "TF_CONFIG": tf_config(workers, i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "test ELBO" in outputs[0][0]  # the chief reports
    chief = keras.saving.load_model(os.path.join(out, "model.keras"))
    other = keras.saving.load_model(os.path.join(out, "worker-1", "model.keras"))
    for a, b in zip(chief.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert os.path.isfile(os.path.join(out, "reference_set.npz"))
    assert not os.path.exists(os.path.join(out, "worker-1", "reference_set.npz"))


def test_sigkill_mid_epoch_then_rerun_resumes_and_finishes(tmp_path, mnist_like_dir):
    out = str(tmp_path / "run")
    epochs = 6
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *TINY, "--batch_size", "16",
           "--epochs", str(epochs), "--data_dir", mnist_like_dir, "--out", out]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = os.path.join(out, "backup", "backup.json")
    deadline = time.time() + 300
    while not os.path.isfile(meta) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved_epoch = json.load(open(meta))["epoch"]
    assert 1 <= saved_epoch < epochs
    assert not os.path.exists(os.path.join(out, "model.keras"))

    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert model.z_dim == 8
    with open(os.path.join(out, "training_log.csv")) as f:
        logged = [int(line.split(",")[0]) for line in f.read().splitlines()[1:] if line[:1].isdigit()]
    assert logged[-1] == epochs - 1          # every configured epoch ran
    assert logged.count(0) == 1              # the rerun resumed rather than starting over
    assert not os.path.exists(os.path.join(out, "backup"))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
