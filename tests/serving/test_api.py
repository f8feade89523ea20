"""The Python API (npvae_tf/serving/api.py): the README snippet runs; NumPy results equal the model's
and the SavedModel's; bad input fails in one line."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

import npvae_tf
from npvae_tf.serving.api import TrainedRun
from npvae_tf.core.config import Config
from npvae_tf.serving.export import export_run
from npvae_tf.runs.layout import RunError
from tests.helpers import ROOT, digit_images, make_run

TOL = dict(rtol=1e-5, atol=1e-5)
README_CONFIG = "npvae_tf.Config(z_dim=20, epochs=5, train_examples=10000)"
TINY_CONFIG = ("npvae_tf.Config(z_dim=4, hidden=(16,), epochs=1, batch_size=64, "
               "validation_examples=100)")


def readme_snippet():
    """The first indented code block of the README's "Python API" section."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"((?:\n {4}.*|\n)+)", section[section.index("\n    "):]).group(1)
    return "\n".join(line[4:] for line in block.strip("\n").splitlines())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_like_dir):
    """The README snippet, run with a tiny config on generated data; its namespace."""
    folder = str(tmp_path_factory.mktemp("api") / "api-demo")
    snippet = readme_snippet()
    assert README_CONFIG in snippet and '"runs/api-demo"' in snippet
    code = snippet.replace(README_CONFIG, TINY_CONFIG).replace('"runs/api-demo"', repr(folder))
    before = os.environ.get("NPVAE_DATA_DIR")
    os.environ["NPVAE_DATA_DIR"] = mnist_like_dir
    try:
        namespace = {}
        exec(compile(code, "README.md (Python API)", "exec"), namespace)
    finally:
        if before is None:
            os.environ.pop("NPVAE_DATA_DIR")
        else:
            os.environ["NPVAE_DATA_DIR"] = before
    return namespace


def test_readme_snippet_runs_and_returns_numpy_of_the_documented_shapes(trained):
    run = trained["run"]
    assert isinstance(run, TrainedRun) and run.has_x
    assert isinstance(trained["images"], np.ndarray) and trained["images"].shape == (16, 784)
    assert trained["x"].shape == (16, 2) and trained["z_mean"].shape == (16, 4)
    assert trained["z_stddev"].shape == (16, 4) and trained["probs"].shape == (16, 784)
    assert np.all((trained["images"] >= 0) & (trained["images"] <= 1))


def test_results_equal_the_model_computed_directly(trained):
    run = trained["run"]
    model, ref = run.model, run.reference
    images, _ = digit_images(40, 5)
    np.testing.assert_allclose(run.embed(images), model.embed(images).numpy(), **TOL)
    # [N, 28, 28] images are taken as well.
    np.testing.assert_allclose(run.embed(images.reshape(-1, 28, 28)),
                               model.embed(images).numpy(), **TOL)
    z_mean, z_stddev = run.encode(images)
    q = model.approx_posterior(images)
    np.testing.assert_allclose(z_mean, q.mean().numpy(), **TOL)
    np.testing.assert_allclose(z_stddev, q.stddev().numpy(), **TOL)
    np.testing.assert_allclose(run.reconstruct(images), model(images).numpy(), **TOL)
    np.testing.assert_allclose(run.decode(z_mean), model.decode(z_mean).numpy(), **TOL)
    x = run.embed(images)
    expected = model.decode_from_x(x, ref.x, ref.z_mean, lengthscale=run.lengthscale).numpy()
    np.testing.assert_allclose(run.generate_from_x(x), expected, **TOL)
    # The serving lengthscale training recorded, not the learned one.
    assert run.lengthscale == pytest.approx(ref.lengthscale)


def test_sample_is_the_exported_signature_and_seeded(trained, tmp_path):
    run = trained["run"]
    first = run.sample(50, seed=3)
    np.testing.assert_array_equal(first, run.sample(50, seed=3))
    assert not np.allclose(first, run.sample(50, seed=4))
    export = export_run(run.path, str(tmp_path / "export"))
    served = tf.saved_model.load(export).signatures["sample"](
        count=tf.constant(50), seed=tf.constant(3, tf.int64))["images"].numpy()
    np.testing.assert_allclose(first, served, **TOL)


def test_load_run_returns_the_same_run(trained):
    again = npvae_tf.load_run(trained["run"].path)
    images, _ = digit_images(5, 1)
    np.testing.assert_array_equal(again.embed(images), trained["run"].embed(images))
    assert again.config == trained["run"].config


@pytest.mark.parametrize("call,message", [
    (lambda r: r.embed(np.zeros((2, 783))), "images must be [N, 784]"),
    (lambda r: r.encode(np.full((2, 784), 255.0)), "images must be pixel values in [0, 1]"),
    (lambda r: r.reconstruct(np.full((2, 784), np.nan)), "images must be finite"),
    (lambda r: r.decode(np.zeros((2, 5))), "z must be [N, 4]"),
    (lambda r: r.generate_from_x(np.zeros((2, 3))), "x must be [N, 2]"),
    (lambda r: r.sample(-1), "n must be an integer"),
])
def test_bad_input_is_a_one_line_value_error(trained, call, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        call(trained["run"])
    assert "\n" not in str(info.value)


def test_a_vae_run_has_no_x_space(tmp_path):
    images, labels = digit_images(200, 0)
    make_run(str(tmp_path / "vae"), images, labels, model="vae", z_dim=3)
    run = npvae_tf.load_run(str(tmp_path / "vae"))
    assert not run.has_x and run.lengthscale is None
    assert run.sample(7, seed=1).shape == (7, 784)
    with pytest.raises(ValueError, match="is a VAE run; only the npVAE has an X space"):
        run.embed(images[:2])


def test_load_run_of_a_folder_that_is_not_a_run_fails_clearly(tmp_path):
    with pytest.raises(RunError, match="no config.json|no such run folder|not a run"):
        npvae_tf.load_run(str(tmp_path))


def test_train_with_a_config_returns_the_loaded_run(trained):
    # npvae_tf.train ran in the snippet; rerunning it finds the run finished.
    run = npvae_tf.train(trained["run"].config, trained["run"].path, verbose=0)
    assert isinstance(run, TrainedRun) and run.config == Config(**run.config.to_dict())


def test_the_run_records_the_data_it_was_trained_on(trained, mnist_like_dir):
    import json

    from npvae_tf.data.datasets import load_data
    from npvae_tf.runs.layout import DATA_FILE

    recorded = json.load(open(os.path.join(trained["run"].path, DATA_FILE)))
    data = load_data(mnist_like_dir, validation_examples=100)
    assert {k: recorded[k] for k in ("source", "sha256", "name", "shape")} == {
        "source": os.path.abspath(mnist_like_dir), "sha256": data.sha256, "name": None,
        "shape": [28, 28]}
    assert recorded["scaling"]["kind"] == "bytes" and recorded["test_split"] is None
