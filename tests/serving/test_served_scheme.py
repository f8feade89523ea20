"""The recommended (neighbour) scheme served whole from one SavedModel: ``place``,
``encode``'s ``x_placed``, sharp ``generate_from_x`` and ``reconstruct_through_x`` with its
``log_prob``; the same through the Python API and the session-style loader."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from npvae_tf.core.backend import tf
from npvae_tf.core.objective import SCHEMES
from npvae_tf.data.datasets import Scaling
from npvae_tf.serving.api import load_run
from npvae_tf.serving.export import export_run
from npvae_tf.serving.folders import INFO_FILE
from npvae_tf.serving.module import QUERY_BLOCK, ServingModule
from tests.helpers import digit_images, make_run

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    images, labels = digit_images(400, 0)
    run = str(root / "run")
    make_run(run, images, labels, z_dim=6, **SCHEMES["neighbour"].changes)
    export = export_run(run, str(root / "export"), chunk_size=128)
    trained = load_run(run)
    with open(os.path.join(export, INFO_FILE)) as f:
        info = json.load(f)
    return types.SimpleNamespace(run=run, export=export, trained=trained, train=images,
                                 queries=digit_images(40, 5)[0], info=info,
                                 signatures=tf.saved_model.load(export).signatures)


def placed_by_definition(train, train_x, queries, k=15):
    """The median training location of each query's k nearest training images (float64)."""
    d = ((queries[:, None, :].astype(np.float64) - train[None].astype(np.float64)) ** 2).sum(-1)
    return np.median(train_x[np.argsort(d, axis=1, kind="stable")[:, :k]], axis=1)


def test_the_export_says_what_it_serves_with_which_decoder(served):
    info = served.info
    assert {"place", "reconstruct_through_x", "generate_from_x", "sample"} <= \
        set(info["signatures"])
    assert info["placement"] == "neighbours" and info["placement_neighbours"] == 15
    # Images read as bytes are kept as bytes: a quarter of float32.
    assert info["placement_storage"] == "uint8"
    assert info["decoders"] == {"generate_from_x": "the VAE's decoder",
                                "sample": "the VAE's decoder",
                                "reconstruct_through_x": "the X path's own decoder"}


def test_place_is_the_median_x_of_the_15_nearest_training_images(served):
    ref = served.trained.reference
    expected = placed_by_definition(served.train, ref.x, served.queries)
    got = served.signatures["place"](images=tf.constant(served.queries))["x"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    encoded = served.signatures["encode"](images=tf.constant(served.queries))
    np.testing.assert_array_equal(encoded["x_placed"].numpy(), got)
    model = served.trained.model
    np.testing.assert_allclose(encoded["x"].numpy(), model.embed(served.queries).numpy(), **TOL)


def test_place_in_several_query_blocks_and_of_no_image(served):
    queries = np.concatenate([served.queries] * (QUERY_BLOCK // len(served.queries) + 1))
    assert len(queries) > QUERY_BLOCK
    got = served.signatures["place"](images=tf.constant(queries))["x"].numpy()
    np.testing.assert_array_equal(got, np.concatenate([got[:len(served.queries)]] *
                                                      (len(queries) // len(served.queries))))
    empty = served.signatures["place"](images=tf.zeros([0, queries.shape[1]]))["x"]
    assert empty.shape == (0, 2)


def test_reconstruct_through_x_decodes_the_placed_image_with_the_x_path_decoder(served):
    model, ref = served.trained.model, served.trained.reference
    y = served.queries
    out = served.signatures["reconstruct_through_x"](images=tf.constant(y))
    placed = served.signatures["place"](images=tf.constant(y))["x"].numpy()
    np.testing.assert_array_equal(out["x"].numpy(), placed)
    z = model.predictive_mean(placed, ref.x, ref.z_mean, lengthscale=ref.lengthscale)
    np.testing.assert_allclose(out["z"].numpy(), z.numpy(), **TOL)
    own = model.x_path_likelihood(z)
    np.testing.assert_allclose(out["images"].numpy(), own.mean().numpy(), **TOL)
    np.testing.assert_allclose(out["log_prob"].numpy(), own.log_prob(y).numpy(), rtol=1e-5,
                               atol=1e-3)
    # generate_from_x at the same place: the VAE's decoder, sharper than the X path's own.
    sharp = served.signatures["generate_from_x"](x=tf.constant(placed))["images"].numpy()
    np.testing.assert_allclose(sharp, model.decode(z).numpy(), **TOL)
    assert not np.allclose(sharp, own.mean().numpy(), atol=1e-3)


def test_the_api_places_and_reconstructs_through_x_as_the_saved_model(served):
    trained, y = served.trained, served.queries
    placed = served.signatures["place"](images=tf.constant(y))["x"].numpy()
    np.testing.assert_array_equal(trained.place(y), placed)
    np.testing.assert_array_equal(trained.locate(y), placed)
    means, log_prob = trained.reconstruct_through_x(y.reshape(-1, 28, 28))
    out = served.signatures["reconstruct_through_x"](images=tf.constant(y))
    np.testing.assert_allclose(means, out["images"].numpy(), **TOL)
    np.testing.assert_allclose(log_prob, out["log_prob"].numpy(), rtol=1e-6, atol=1e-4)


def test_a_run_placed_by_its_encoder_has_no_place(tmp_path):
    images, labels = digit_images(120, 1)
    make_run(str(tmp_path / "paper"), images, labels, z_dim=4)
    trained = load_run(str(tmp_path / "paper"))
    assert trained.placement == "encoder"
    with pytest.raises(ValueError, match="places new images by its encoder"):
        trained.place(images[:2])
    np.testing.assert_array_equal(trained.locate(images[:3]), trained.embed(images[:3]))
    assert "place" not in ServingModule(trained.model, trained.reference).signature_names


def test_saved_model_cli_run_serves_place_and_reconstruct_through_x(served, tmp_path):
    np.save(tmp_path / "images.npy", served.queries[:4])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    for signature in ("place", "reconstruct_through_x"):
        result = subprocess.run([cli, "run", "--dir", served.export, "--tag_set", "serve",
                                 "--signature_def", signature, "--inputs",
                                 f"images={tmp_path / 'images.npy'}", "--outdir",
                                 str(tmp_path / signature)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    live = served.signatures["reconstruct_through_x"](images=tf.constant(served.queries[:4]))
    np.testing.assert_allclose(np.load(tmp_path / "place" / "x.npy"), live["x"].numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "reconstruct_through_x" / "log_prob.npy"),
                               live["log_prob"].numpy(), rtol=1e-6, atol=1e-4)


def test_log_prob_of_standardised_data_is_in_the_data_units(tmp_path):
    """A Gaussian run on standardised data: log_prob of the raw features is the density of
    N(mean * s + o, (stddev * s)^2) in raw units, by the change of variables."""
    rng = np.random.default_rng(4)
    raw = rng.normal(3.0, 2.5, size=(150, 6)).astype(np.float32)
    offset, scale = raw.mean(0), raw.std(0) * np.linspace(0.5, 2.0, 6).astype(np.float32)
    standardised = (raw - offset) / scale
    make_run(str(tmp_path / "run"), standardised, np.zeros(150, np.int64), z_dim=3,
             image_shape=(6,), likelihood="gaussian", **SCHEMES["neighbour"].changes)
    trained = load_run(str(tmp_path / "run"))
    module = ServingModule(trained.model, trained.reference,
                           scaling=Scaling("standardised", offset, scale))
    out = module.reconstruct_through_x(tf.constant(raw[:7]))
    z = trained.model.predictive_mean(out["x"], trained.reference.x, trained.reference.z_mean,
                                      lengthscale=trained.reference.lengthscale)
    decoded = trained.model.x_path_likelihood(z)
    mean = decoded.mean().numpy() * scale + offset
    std = decoded.stddev().numpy() * scale
    expected = (-0.5 * ((raw[:7] - mean) / std) ** 2 - np.log(std)
                - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(out["log_prob"].numpy(), expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out["images"].numpy(), mean, rtol=1e-5, atol=1e-4)


def test_an_older_run_without_its_training_images_serves_all_but_the_placement(tmp_path):
    """A neighbour run whose reference set does not keep its training images, and whose data
    cannot be found: sampling and decoding work, placing says why it cannot."""
    import dataclasses

    from npvae_tf.runs.reference import ReferenceSet

    images, labels = digit_images(120, 2)
    run = str(tmp_path / "old")
    make_run(run, images, labels, z_dim=4, **SCHEMES["neighbour"].changes)
    old = ReferenceSet.load(run)
    dataclasses.replace(old, images=None).save(run)
    trained = load_run(run)
    assert trained.sample(3, seed=0).shape == (3, images.shape[1])
    for call in (trained.place, trained.locate, trained.reconstruct_through_x):
        with pytest.raises(ValueError, match="training images to place from are not available"):
            call(images[:2])
