"""TensorBoard (npvae_tf/training/summaries.py): per-epoch images and the lengthscale in the event
files, the Embedding Projector's files, and a real TensorBoard serving both."""

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import projector

from npvae_tf.core.config import Config
from npvae_tf.model.vae import build_model
from npvae_tf.runs.layout import LOGS_DIR
from npvae_tf.evaluation.projector import PROJECTOR_CONFIG, write_projector
from npvae_tf.data.pictures import tile
from npvae_tf.training.summaries import MODEL_LOGS, ModelSummaries
from npvae_tf.training.fit import fit_run
from tests.helpers import digit_images

EPOCHS = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_like_dir):
    """A tiny npVAE trained for two epochs, with a projector written as evaluate.py does."""
    folder = str(tmp_path_factory.mktemp("tb") / "run")
    config = Config(z_dim=4, hidden=(16,), epochs=EPOCHS, batch_size=64, validation_examples=100)
    metrics = fit_run(config, folder, data=mnist_like_dir, verbose=0)
    images, labels = digit_images(60, 2)
    x = np.random.default_rng(0).normal(size=(60, 2))
    z = np.random.default_rng(1).normal(size=(60, 4))
    write_projector(os.path.join(folder, "eval", "projector"), images, labels,
                    {"x": x, "z_mean": z}, (28, 28))
    return folder, metrics, images, labels, x


def events(folder):
    acc = EventAccumulator(folder, size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def png(tensor_event):
    """The PNG of a tf.summary.image event (tensor: width, height, encoded images)."""
    encoded = tf.make_ndarray(tensor_event.tensor_proto)
    return np.asarray(Image.open(io.BytesIO(encoded[2])))


def test_training_writes_model_images_and_the_lengthscale_every_epoch(run):
    folder, metrics, _, _, _ = run
    acc = events(os.path.join(folder, LOGS_DIR, MODEL_LOGS))
    tags = set(acc.Tags()["tensors"])
    assert {"reconstructions", "prior_samples", "x_grid", "kernel/lengthscale"} <= tags
    for tag in ("reconstructions", "prior_samples", "x_grid", "kernel/lengthscale"):
        assert [e.step for e in acc.Tensors(tag)] == list(range(1, EPOCHS + 1)), tag
    recon = png(acc.Tensors("reconstructions")[-1])
    assert recon.shape[:2] == (2 * 28, 16 * 28)  # 16 validation images over their reconstructions
    assert png(acc.Tensors("x_grid")[-1]).shape[:2] == (10 * 28, 10 * 28)
    assert png(acc.Tensors("prior_samples")[-1]).shape[:2] == (4 * 28, 4 * 28)
    # The last epoch's lengthscale is the trained model's.
    last = float(tf.make_ndarray(acc.Tensors("kernel/lengthscale")[-1].tensor_proto))
    assert last == pytest.approx(metrics["lengthscale"], rel=1e-5)


def test_a_vae_gets_images_without_x_grid_or_lengthscale(tmp_path):
    model = build_model(Config(model="vae", z_dim=3, hidden=(8,)))
    images, _ = digit_images(20, 0)
    callback = ModelSummaries(str(tmp_path), images, (28, 28), count=6)
    callback.set_model(model)
    callback.on_epoch_end(0)
    callback.on_train_end()
    acc = events(str(tmp_path))
    assert set(acc.Tags()["tensors"]) == {"reconstructions", "prior_samples"}
    np.testing.assert_allclose(png(acc.Tensors("reconstructions")[0])[:28, :28 * 6] / 255.0,
                               tile(images[:6], (28, 28), 6), atol=1 / 255)


def test_projector_config_points_at_files_that_hold_the_embeddings(run):
    folder, _, images, labels, x = run
    out = os.path.join(folder, "eval", "projector")
    config = projector.ProjectorConfig()
    from google.protobuf import text_format

    text_format.Parse(open(os.path.join(out, PROJECTOR_CONFIG)).read(), config)
    assert [e.tensor_name for e in config.embeddings] == ["x", "z_mean"]
    for embedding in config.embeddings:
        for name in (embedding.tensor_path, embedding.metadata_path,
                     embedding.sprite.image_path):
            assert os.path.isfile(os.path.join(out, name)), name
        tensor = np.loadtxt(os.path.join(out, embedding.tensor_path), ndmin=2)
        assert tensor.shape == tuple(embedding.tensor_shape)
    # A 2-D X is written with a third column of zeros (the projector's default 3-D PCA view
    # shows nothing for two columns): the first two are X.
    written = np.loadtxt(os.path.join(out, "x.tsv"))
    np.testing.assert_allclose(written[:, :2], x, rtol=1e-5)
    np.testing.assert_array_equal(written[:, 2:], 0)
    rows = open(os.path.join(out, "metadata.tsv")).read().splitlines()
    assert rows[0] == "index\tlabel" and [r.split("\t")[1] for r in rows[1:]] == \
        [str(c) for c in labels]
    sprite = np.asarray(Image.open(os.path.join(out, "sprite.png")))
    assert sprite.shape == (8 * 28, 8 * 28)  # 60 images in an 8 x 8 mosaic
    np.testing.assert_allclose(sprite[28:56, :28] / 255.0, images[8].reshape(28, 28),
                               atol=1 / 255)
    assert any("tfevents" in f for f in os.listdir(out))  # TensorBoard lists the folder


def test_tensorboard_serves_the_images_and_the_projector(run):
    folder = run[0]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", folder, "--host",
               "127.0.0.1", "--port", "0", "--load_fast", "false", "--reload_interval", "1"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    deadline = time.time() + 180
    try:
        url = None
        while url is None and time.time() < deadline:
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                pytest.fail(f"TensorBoard exited with {server.returncode}")
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else None
        assert url, "TensorBoard did not report its address in time"

        def get(path, **query):
            full = f"{url}{path}?{urllib.parse.urlencode(query)}" if query else url + path
            with urllib.request.urlopen(full, timeout=30) as response:
                return response.read()

        model_run = f"{LOGS_DIR}/{MODEL_LOGS}"
        while time.time() < deadline:  # the first load of the logdir takes a moment
            tags = json.loads(get("/data/plugin/images/tags"))
            if "x_grid" in tags.get(model_run, {}):
                break
            time.sleep(1)
        assert {"reconstructions", "prior_samples", "x_grid"} <= set(tags[model_run])
        entries = json.loads(get("/data/plugin/images/images", run=model_run, tag="x_grid"))
        assert [e["step"] for e in entries] == list(range(1, EPOCHS + 1))
        image = Image.open(io.BytesIO(get("/data/plugin/images/individualImage?"
                                          + entries[-1]["query"])))
        assert image.size == (10 * 28, 10 * 28)

        runs = json.loads(get("/data/plugin/projector/runs"))
        assert "eval/projector" in runs
        info = json.loads(get("/data/plugin/projector/info", run="eval/projector"))
        assert [e["tensorName"] for e in info["embeddings"]] == ["x", "z_mean"]
        x = np.frombuffer(get("/data/plugin/projector/tensor", run="eval/projector", name="x"),
                          np.float32)
        np.testing.assert_allclose(x.reshape(-1, 3)[:, :2], run[4], rtol=1e-5)  # + zeros
        metadata = get("/data/plugin/projector/metadata", run="eval/projector",
                       name="x").decode()
        assert metadata.splitlines()[0] == "index\tlabel"
        sprite = get("/data/plugin/projector/sprite_image", run="eval/projector", name="x")
        assert Image.open(io.BytesIO(sprite)).size == (8 * 28, 8 * 28)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
