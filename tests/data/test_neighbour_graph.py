"""The neighbour graph (npvae_tf/data/neighbour_graph.py): its draws, the cache, the landmarks."""

import os

import numpy as np
import pytest
import tensorflow as tf

from npvae_tf.data import neighbour_graph as neighbours
from npvae_tf.core.config import Config, ConfigError
from npvae_tf.data.pipeline import make_dataset
from npvae_tf.data.neighbour_graph import (GraphError, GraphSampler, NeighbourGraph, graph_for_run,
                                           graph_key)
from tests.helpers import synthetic_digits


def small_graph():
    """5 points; row i's neighbours and weights written out by hand."""
    rows = {0: {1: 1.0, 2: 0.5}, 1: {0: 1.0, 3: 0.25}, 2: {0: 0.5}, 3: {1: 0.25, 4: 1.0},
            4: {3: 1.0}}
    indptr, indices, weights = [0], [], []
    for i in range(5):
        for j, w in sorted(rows[i].items()):
            indices.append(j)
            weights.append(w)
        indptr.append(len(indices))
    return NeighbourGraph(np.array(indptr, np.int64), np.array(indices, np.int32),
                          np.array(weights, np.float32), key={"test": 1}), rows


def test_sampling_keys_and_head_weights_follow_the_graph():
    graph, rows = small_graph()
    degree = np.array([sum(rows[i].values()) for i in range(5)])
    np.testing.assert_allclose(graph.degree, degree)
    np.testing.assert_allclose(graph.head_weight, degree / degree.mean(), rtol=1e-6)
    keys = graph.sampling_keys()
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(keys[graph.indptr[1:] - 1], np.arange(1, 6))


def test_tails_are_drawn_with_the_graph_weights():
    graph, rows = small_graph()
    sampler = GraphSampler(graph)
    draws = 20000
    heads = tf.constant(np.repeat(np.arange(5), draws // 5), tf.int32)
    tails = sampler.tails(heads, tf.constant([1, 2], tf.int64)).numpy()
    assert tails.shape == (draws,)
    for i in range(5):
        got = tails[heads.numpy() == i]
        total = sum(rows[i].values())
        assert set(got) == set(rows[i])  # only the row's neighbours, each of them
        for j, w in rows[i].items():
            # binomial standard error at n = 4000 is < 0.008
            assert np.mean(got == j) == pytest.approx(w / total, abs=0.03), (i, j)


def test_negatives_count_range_and_never_the_head_itself():
    sampler = GraphSampler(small_graph()[0], negatives=7)
    positions = sampler.negative_positions(tf.constant(9), tf.constant([3, 4], tf.int64)).numpy()
    assert positions.shape == (9, 7)
    assert positions.min() >= 0 and positions.max() < 18
    assert not np.any(positions == np.arange(9)[:, None])
    # Every other position of the pool of 2b is drawn (uniform over 2b - 1).
    wide = GraphSampler(small_graph()[0], negatives=4000)
    row0 = wide.negative_positions(tf.constant(4), tf.constant([1, 1], tf.int64)).numpy()[0]
    assert set(row0) == set(range(1, 8))


def test_pipeline_adds_the_graph_draws_deterministically():
    images = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    graph, rows = small_graph()

    def batches():
        return list(make_dataset(images, 4, shuffle=True, seed=3, epochs=2,
                                 neighbours=graph).as_numpy_iterator())

    first, again = batches(), batches()
    assert len(first) == 2  # one batch of 4 per epoch (the left-over fifth image is dropped)
    for (y, nb), (y2, nb2) in zip(first, again):
        assert set(nb) == {"tails", "head_weight", "negatives"}
        np.testing.assert_array_equal(nb["tails"], nb2["tails"])
        np.testing.assert_array_equal(nb["negatives"], nb2["negatives"])
        b = len(y)
        assert nb["tails"].shape == y.shape and nb["negatives"].shape == (b, 5)
        for head, tail, weight in zip(y, nb["tails"], nb["head_weight"]):
            i = int(np.flatnonzero((images == head).all(1))[0])
            j = int(np.flatnonzero((images == tail).all(1))[0])
            assert j in rows[i]
            assert weight == pytest.approx(graph.head_weight[i])
    with pytest.raises(ValueError, match="shuffled"):
        make_dataset(images, 4, neighbours=graph)


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits(120, seed=2)[0].reshape(120, -1).astype(np.float32) / 255


def test_built_graph_is_symmetric_and_covers_every_image(digits):
    graph = neighbours.build_graph(digits, graph_key("abc", 5, 0.1, 0))
    graph.validate(len(digits))
    dense = np.zeros((120, 120))
    for i in range(120):
        dense[i, graph.indices[graph.indptr[i]:graph.indptr[i + 1]]] = \
            graph.weights[graph.indptr[i]:graph.indptr[i + 1]]
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)
    assert np.all(np.diag(dense) == 0) and dense.max() <= 1.0 + 1e-6
    assert np.all((dense > 0).sum(1) >= 4)  # at least the k - 1 nearest others


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_the_smallest_training_sets_get_edges_and_a_layout(digits, n):
    # umap-learn counts a point as its own first neighbour: with n - 1 = 1 neighbour, two
    # examples had no edge, and UMAP's layout failed on the empty graph (a traceback); its
    # spectral start fails on a few examples (more eigenvectors than points).
    graph = neighbours.build_graph(digits[:n], graph_key("abc", 15, 0.1, 0, embedding_dim=2))
    assert graph.size == n and len(graph.weights) >= n and np.all(graph.weights > 0)
    assert graph.embedding.shape == (n, 2) and np.all(np.isfinite(graph.embedding))
    with pytest.raises(ValueError, match="at least 2 training examples, got 1"):
        neighbours.build_graph(digits[:1], graph_key("abc", 15, 0.1, 0))


def test_graph_cache_hit_miss_and_the_run_folder_copy(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    builds = []
    real_build = neighbours.build_graph
    monkeypatch.setattr(neighbours, "build_graph",
                        lambda images, key: builds.append(key) or real_build(images, key))
    key = graph_key("sha-a", 5, 0.1, 0)
    lines = []
    os.makedirs(tmp_path / "run1")
    first = graph_for_run(str(tmp_path / "run1" / "g.npz"), digits, key, lines.append)
    assert len(builds) == 1 and any("building" in line for line in lines)
    os.makedirs(tmp_path / "run2")
    second = graph_for_run(str(tmp_path / "run2" / "g.npz"), digits, key, lines.append)
    assert len(builds) == 1 and "from the cache" in lines[-1]  # hit
    np.testing.assert_array_equal(first.indices, second.indices)
    for other in (graph_key("sha-b", 5, 0.1, 0), graph_key("sha-a", 6, 0.1, 0),
                  graph_key("sha-a", 5, 0.3, 0)):  # other data, other settings: miss
        folder = tmp_path / f"run-{len(builds)}"
        os.makedirs(folder)
        graph_for_run(str(folder / "g.npz"), digits, other, lines.append)
    assert len(builds) == 4
    # The run folder's own graph is what a rerun (resume) uses, and it must be the run's.
    os.remove(next((tmp_path / "cache" / "graphs").glob("*.npz")))
    again = graph_for_run(str(tmp_path / "run1" / "g.npz"), digits, key, lines.append)
    assert len(builds) == 4
    np.testing.assert_array_equal(again.weights, first.weights)
    with pytest.raises(GraphError, match="other data or settings"):
        graph_for_run(str(tmp_path / "run1" / "g.npz"), digits, graph_key("sha-b", 5, 0.1, 0))


def test_a_truncated_cache_is_rebuilt_and_a_truncated_run_graph_is_one_line(digits, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    key, lines = graph_key("sha-t", 5, 0.1, 0), []
    os.makedirs(tmp_path / "run1")
    graph_for_run(str(tmp_path / "run1" / "g.npz"), digits, key, lines.append)
    cached = next((tmp_path / "cache" / "graphs").glob("*.npz"))
    cached.write_bytes(cached.read_bytes()[:100])  # a killed write, a full disk
    os.makedirs(tmp_path / "run2")
    rebuilt = graph_for_run(str(tmp_path / "run2" / "g.npz"), digits, key, lines.append)
    assert any("unreadable" in line and "building it again" in line for line in lines)
    assert rebuilt.size == len(digits)
    own = tmp_path / "run2" / "g.npz"
    own.write_bytes(own.read_bytes()[:100])
    with pytest.raises(GraphError, match="g.npz: not a readable neighbour graph") as info:
        graph_for_run(str(own), digits, key)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("changes, message", [
    (dict(neighbour_weight=1.0, n_neighbors=1), "n_neighbors must be >= 2"),
    (dict(neighbour_weight=1.0, min_dist=-0.1), "min_dist must be >= 0"),
    (dict(neighbour_weight=-1.0), "neighbour_weight must be >= 0"),
    (dict(model="vae", neighbour_weight=1.0), "applies to model 'npvae' only"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        Config(**changes)
    assert "\n" not in str(info.value)


def test_new_fields_at_their_defaults_keep_old_run_folder_names():
    from npvae_tf.runs.layout import config_digest

    config = Config(z_dim=500)
    # The digest of a config.json written before these fields existed.
    old = {k: v for k, v in config.to_dict().items()
           if k not in ("x_path_decoder_epochs", "neighbour_weight", "n_neighbors", "min_dist",
                        "landmark_weight", "likelihood", "test_fraction")}
    assert config.digest_fields() == old
    # The folder name the code of before these fields (and the package's layers) gave it.
    assert config_digest(config) == "a648a6cb"
    assert config_digest(config) != config_digest(config.replace(neighbour_weight=1.0))
    assert config_digest(config) != config_digest(config.replace(likelihood="gaussian"))


def test_landmarks_are_the_graphs_umap_layout_and_leave_the_graph_intact(digits):
    plain = neighbours.build_graph(digits, graph_key("abc", 5, 0.1, 0))
    with_layout = neighbours.build_graph(digits, graph_key("abc", 5, 0.1, 0, embedding_dim=2))
    assert plain.embedding is None and with_layout.embedding.shape == (120, 2)
    # umap-learn prunes the matrix it is given in place: the graph kept must be the whole one
    np.testing.assert_array_equal(with_layout.weights, plain.weights)
    # the layout keeps the synthetic classes apart: 5-NN in it beats chance by far
    from sklearn.neighbors import KNeighborsClassifier

    labels = synthetic_digits(120, seed=2)[1]
    knn = KNeighborsClassifier(6).fit(with_layout.embedding, labels)
    assert knn.score(with_layout.embedding, labels) > 0.8


def test_landmark_term_is_the_squared_distance_to_the_layout_and_trains_x_only():
    import keras
    from npvae_tf.model.vae import build_model

    config = Config(z_dim=3, hidden=(8,), image_shape=(2, 2), dropout=0.0, match_weight=0.0,
                    landmark_weight=2.0, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    y = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    u = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    draws = {"tails": y[::-1], "head_weight": np.ones(6, np.float32),
             "negatives": np.zeros((6, 5), np.int32), "landmarks": u}
    terms = model.loss_terms(y, neighbours=draws, seed=tf.constant([1, 2]))
    x = model.embed(y).numpy()
    np.testing.assert_allclose(terms["landmark"].numpy(), ((x - u) ** 2).sum(-1), rtol=1e-5)
    without = model.loss_terms(y, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(terms["loss"] - without["loss"], 2.0 * terms["landmark"],
                               rtol=1e-5)
    with tf.GradientTape() as tape:
        landmark = tf.reduce_sum(model.loss_terms(y, neighbours=draws)["landmark"])
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(landmark, model.trainable_variables)))
    assert all(g is None for p, g in grads.items() if "/encoder/" in p or "/decoder/" in p)
    assert any(g is not None for p, g in grads.items() if "x_encoder" in p)
