"""The reference set and the serving lengthscale chosen on validation images."""

import numpy as np
import pytest

from npvae_tf.runs.reference import (ReferenceSet, build_reference_set, select_serving_lengthscale,
                                     x_path_scorer)
from tests.helpers import images, numpy_mlp, numpy_weights, small_model, softplus


def _reference(model, n=40, seed=0):
    return build_reference_set(model, images(n, seed=seed), np.arange(n) % 3)


def test_x_path_scorer_matches_numpy():
    model = small_model("npvae")
    reference = _reference(model)
    y = images(7, seed=9)
    got = x_path_scorer(model, reference, batch_size=3)(y, 0.4)
    x = numpy_mlp(model.x_encoder, y)
    x_ref = numpy_mlp(model.x_encoder, images(40, seed=0))
    z_ref = np.split(numpy_mlp(model.encoder, images(40, seed=0)), 2, axis=-1)[0]
    logits = numpy_mlp(model.decoder, numpy_weights(x, x_ref, 0.4, False) @ z_ref)
    np.testing.assert_allclose(got, (y * logits - softplus(logits)).sum(-1), rtol=1e-4, atol=1e-3)


def test_serving_lengthscale_is_the_best_scale_on_the_given_images():
    model = small_model("npvae")
    reference = _reference(model)
    y = images(12, seed=4)
    scales = (1.0, 0.5, 0.1, 0.01)
    chosen, record = select_serving_lengthscale(model, reference, y, scales, max_extensions=0,
                                                min_lengthscale=0.0)
    learned = float(model.kernel.lengthscale)
    score = x_path_scorer(model, reference)
    scores = [np.mean(score(y, s * learned)) for s in scales]
    assert record["learned_lengthscale"] == pytest.approx(learned)
    np.testing.assert_allclose(record["log_likelihood"], scores, rtol=1e-6)
    assert chosen == pytest.approx(learned * scales[int(np.argmax(scores))])


def test_reference_set_round_trip_keeps_the_serving_lengthscale(tmp_path):
    model = small_model("npvae")
    reference = build_reference_set(model, images(30), np.arange(30) % 3,
                                    validation_images=images(10, seed=5))
    assert reference.lengthscale is not None and reference.selection is not None
    reference.save(str(tmp_path))
    loaded = ReferenceSet.load(str(tmp_path))
    assert loaded.lengthscale == pytest.approx(reference.lengthscale)
    assert loaded.selection["scales"] == pytest.approx(list(reference.selection["scales"]))
    np.testing.assert_array_equal(loaded.x, reference.x)
    # A VAE keeps no lengthscale; a reference set without one loads with None.
    vae = small_model("vae")
    plain = build_reference_set(vae, images(30), np.arange(30) % 3, images(10))
    (tmp_path / "vae").mkdir()
    plain.save(str(tmp_path / "vae"))
    assert ReferenceSet.load(str(tmp_path / "vae")).lengthscale is None


def test_serving_grid_extends_past_its_edge_and_says_where_it_stopped():
    model = small_model("npvae")
    reference = _reference(model)
    y = images(12, seed=4)
    learned = float(model.kernel.lengthscale)
    score = x_path_scorer(model, reference)
    scores = {s: np.mean(score(y, s * learned)) for s in (1.0, 0.5)}
    edge = max(scores, key=scores.get)  # the best of a two-point grid is always on its edge
    chosen, record = select_serving_lengthscale(model, reference, y, (1.0, 0.5),
                                                max_extensions=3, min_lengthscale=0.0)
    assert record["extensions"] >= 1 and len(record["scales"]) == 2 + record["extensions"]
    assert record["scales"] == sorted(record["scales"], reverse=True)
    best = record["scales"][int(np.argmax(record["log_likelihood"]))]
    assert chosen == pytest.approx(best * learned)
    assert record["on_edge"] == (best in (record["scales"][0], record["scales"][-1]))
    # extended in the direction of the edge the two-point grid's best was on
    assert (max(record["scales"]) > 1.0) == (edge == 1.0)
    if not record["on_edge"]:
        assert record["extensions"] < 3


def test_neighbour_scheme_anchors_the_grid_at_the_median_nearest_neighbour_distance():
    from npvae_tf.runs.reference import median_neighbour_distance
    from sklearn.neighbors import NearestNeighbors

    model = small_model("npvae", match_weight=0.0, neighbour_weight=1.0)
    reference = _reference(model)
    d, _ = NearestNeighbors(n_neighbors=2).fit(reference.x).kneighbors(reference.x)
    assert median_neighbour_distance(reference.x) == pytest.approx(np.median(d[:, 1]))
    chosen, record = select_serving_lengthscale(model, reference, images(12, seed=4), (1.0, 4.0))
    assert record["anchor_kind"].startswith("median nearest-neighbour")
    assert record["anchor"] == pytest.approx(np.median(d[:, 1]))
    best = record["scales"][int(np.argmax(record["log_likelihood"]))]
    assert chosen == pytest.approx(best * record["anchor"])


def test_no_serving_lengthscale_below_a_quarter_of_the_nearest_neighbour_spacing(monkeypatch):
    """An X path that is always better at a smaller l (as a barely trained run's can be): the
    grid would halve l towards 0; the floor stops it."""
    import npvae_tf.runs.reference as reference_module
    from npvae_tf.runs.reference import MIN_LENGTHSCALE_SHARE, median_neighbour_distance

    monkeypatch.setattr(reference_module, "x_path_scorer",
                        lambda *a, **k: lambda y, l: np.full(len(y), -l))
    model = small_model("npvae")
    reference = _reference(model)
    floor = MIN_LENGTHSCALE_SHARE * median_neighbour_distance(reference.x)
    learned = float(model.kernel.lengthscale)
    free, free_record = select_serving_lengthscale(model, reference, images(40, seed=0),
                                                   (1.0, 0.5), max_extensions=30,
                                                   min_lengthscale=0.0)
    assert free < floor  # without it, the search runs far below the spacing
    chosen, record = select_serving_lengthscale(model, reference, images(40, seed=0),
                                                (1.0, 0.5), max_extensions=30)
    assert chosen == pytest.approx(floor) and record["at_floor"] and not record["on_edge"]
    assert record["floor"] == pytest.approx(floor)
    assert min(record["scales"]) * learned == pytest.approx(floor)
    assert record["extensions"] < 30  # halving stopped at the floor
