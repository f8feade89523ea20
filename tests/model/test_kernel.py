import numpy as np
import pytest
import tensorflow as tf

from npvae_tf.model.kernel import SquaredExponentialKernel
from tests.helpers import numpy_weights


@pytest.mark.parametrize("lengthscale", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("n,d,z", [(2, 1, 1), (7, 2, 3), (33, 5, 11)])
def test_in_batch_weights_and_means_match_numpy(lengthscale, n, d, z):
    rng = np.random.default_rng(n * d + z)
    x = rng.normal(size=(n, d)).astype(np.float32)
    mu = rng.normal(size=(n, z)).astype(np.float32)
    kernel = SquaredExponentialKernel(lengthscale)
    w = kernel.kernel_weights(x).numpy()
    expected = numpy_weights(x.astype(np.float64), x.astype(np.float64), lengthscale,
                             exclude_diagonal=True)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert np.all(np.diag(w) == 0.0)
    np.testing.assert_allclose(kernel(x, mu).numpy(), expected @ mu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_predictive_mean_matches_unchunked_numpy(chunk):
    rng = np.random.default_rng(chunk)
    x_ref = rng.normal(size=(150, 2)).astype(np.float32) * 3
    z_ref = rng.normal(size=(150, 6)).astype(np.float32)
    x_query = rng.normal(size=(9, 2)).astype(np.float32) * 3
    kernel = SquaredExponentialKernel(0.7)
    got = kernel.predictive_mean(x_query, x_ref, z_ref, chunk_size=chunk).numpy()
    expected = numpy_weights(x_query.astype(np.float64), x_ref.astype(np.float64), 0.7, False) @ z_ref
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_reference_weights_do_not_exclude_anything():
    x = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    w = SquaredExponentialKernel(1.0).kernel_weights(x, x).numpy()
    assert w[0, 0] > w[0, 1] > 0


def test_far_apart_points_stay_finite_and_pick_the_nearest():
    x = np.array([[0.0, 0.0], [1e3, 0.0], [0.0, 1e3 + 1.0], [1e3, 1.0]], np.float32)
    mu = np.arange(8, dtype=np.float32).reshape(4, 2)
    kernel = SquaredExponentialKernel(1.0)
    w = kernel.kernel_weights(x).numpy()
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    # Point 1 and point 3 are each other's only neighbour within reach.
    assert w[1, 3] == pytest.approx(1.0) and w[3, 1] == pytest.approx(1.0)
    z_tilde = kernel.predictive_mean(x, x[[0]], mu[[0]]).numpy()
    assert np.all(np.isfinite(z_tilde))


def test_far_apart_gradients_are_finite():
    x = tf.Variable(np.array([[0.0, 0.0], [1e3, 0.0], [-1e3, 5e2]], np.float32))
    mu = tf.constant(np.eye(3, dtype=np.float32))
    kernel = SquaredExponentialKernel(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(mu - kernel(x, mu)))
    grads = tape.gradient(loss, [x, kernel.log_lengthscale])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_identical_points_give_uniform_weights():
    x = np.ones((5, 2), np.float32) * 123.0
    w = SquaredExponentialKernel(0.01).kernel_weights(x).numpy()
    expected = (np.ones((5, 5)) - np.eye(5)) / 4
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_batch_of_two_predicts_each_from_the_other():
    x = np.array([[0.0], [50.0]], np.float32)
    mu = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    z_tilde = SquaredExponentialKernel(1.0)(x, mu).numpy()
    np.testing.assert_allclose(z_tilde, mu[::-1])


def test_lengthscale_is_learned_and_serialises():
    kernel = SquaredExponentialKernel(2.5, chunk_size=17)
    assert kernel.trainable_weights == [kernel.log_lengthscale]
    assert float(kernel.lengthscale) == pytest.approx(2.5)
    clone = SquaredExponentialKernel.from_config(kernel.get_config())
    assert clone.chunk_size == 17 and float(clone.lengthscale) == pytest.approx(2.5)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="initial_lengthscale"):
        SquaredExponentialKernel(0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        SquaredExponentialKernel(1.0, chunk_size=0)


@pytest.mark.parametrize("d", [1, 2, 8, 9, 20])
def test_squared_distances_both_paths(d):
    from npvae_tf.model.kernel import squared_distances

    rng = np.random.default_rng(d)
    a, b = rng.normal(size=(5, d)).astype(np.float32), rng.normal(size=(7, d)).astype(np.float32)
    expected = ((a[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(a, b).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_explicit_lengthscale_overrides_the_learned_one():
    rng = np.random.default_rng(5)
    x_ref, z_ref = rng.normal(size=(40, 2)).astype(np.float32), rng.normal(size=(40, 3))
    x_query = rng.normal(size=(6, 2)).astype(np.float32)
    kernel = SquaredExponentialKernel(2.0)
    got = kernel.predictive_mean(x_query, x_ref, z_ref.astype(np.float32), chunk_size=16,
                                 lengthscale=0.3).numpy()
    expected = numpy_weights(x_query.astype(np.float64), x_ref.astype(np.float64), 0.3, False) @ z_ref
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float(kernel.lengthscale) == pytest.approx(2.0)  # the learned one is untouched


@pytest.mark.parametrize("chunk", [1, 16, 1000])
@pytest.mark.parametrize("lengthscale", [0.05, 0.5, 50.0])
def test_effective_neighbours_is_the_inverse_sum_of_squared_weights(chunk, lengthscale):
    rng = np.random.default_rng(7)
    x_ref = rng.normal(size=(60, 2)).astype(np.float32) * 2
    x_query = rng.normal(size=(5, 2)).astype(np.float32) * 2
    kernel = SquaredExponentialKernel(1.0)
    got = kernel.effective_neighbours(x_query, x_ref, chunk_size=chunk,
                                      lengthscale=lengthscale).numpy()
    w = numpy_weights(x_query.astype(np.float64), x_ref.astype(np.float64), lengthscale, False)
    np.testing.assert_allclose(got, 1.0 / (w ** 2).sum(1), rtol=1e-4)
    assert np.all((got >= 1.0 - 1e-5) & (got <= 60 + 1e-3))


def test_effective_neighbours_extremes():
    kernel = SquaredExponentialKernel(1.0)
    same = np.zeros((10, 2), np.float32)  # identical points: uniform weights, all 10 count
    np.testing.assert_allclose(kernel.effective_neighbours(same[:2], same).numpy(), 10.0)
    far = np.array([[0.0, 0.0], [1e4, 0.0], [-1e4, 5e3]], np.float32)  # one point takes it all
    np.testing.assert_allclose(kernel.effective_neighbours(far, far).numpy(), 1.0)


# --- no NaN where no neighbour is in reach ---------------------------------------------------

def test_a_single_point_has_no_neighbour_and_predicts_zero_not_nan():
    import numpy as np
    import tensorflow as tf

    from npvae_tf.model.kernel import SquaredExponentialKernel

    kernel = SquaredExponentialKernel(1.0)
    x = tf.constant([[0.3, -0.2]])
    z = tf.constant([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(kernel.kernel_weights(x).numpy(), [[0.0]])
    np.testing.assert_array_equal(kernel(x, z).numpy(), [[0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(kernel(x, z))
    assert np.all(np.isfinite(tape.gradient(out, [x, kernel.log_lengthscale])[0].numpy()))


def test_far_away_queries_give_finite_predictions():
    import numpy as np

    from npvae_tf.model.kernel import SquaredExponentialKernel

    kernel = SquaredExponentialKernel(1.0)
    rng = np.random.default_rng(0)
    x_ref = rng.normal(size=(50, 2)).astype(np.float32)
    z_ref = rng.normal(size=(50, 4)).astype(np.float32)
    # 1e19: squared distances ~2e38 still fit float32; 3e19: every one overflows to inf.
    queries = np.array([[1e19, 1e19], [-3e19, 0.0], [3e19, 3e19], [0.1, 0.2]], np.float32)
    z = kernel.predictive_mean(queries, x_ref, z_ref, chunk_size=16).numpy()
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(z[1:3], 0.0)  # no neighbour within float range
    exact = kernel(queries[3:], z_ref, x_ref).numpy()  # an ordinary query is unchanged
    np.testing.assert_allclose(z[3:], exact, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(kernel.effective_neighbours(queries, x_ref).numpy()))


