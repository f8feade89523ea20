import dataclasses

import numpy as np
import keras
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from npvae_tf import Config, NonparametricVAE, VAE, build_model
from npvae_tf.model.likelihoods import MIN_VARIANCE
from tests.helpers import SMALL, images, numpy_mlp, numpy_weights, small_model, softplus

tfd = tfp.distributions


def numpy_nll(likelihood, outputs, y):
    """-log p(y | decoder outputs) per example, written from each family's formula."""
    if likelihood == "gaussian":
        mean, log_variance = np.split(outputs, 2, axis=-1)
        variance = np.exp(log_variance) + MIN_VARIANCE
        return (0.5 * (np.log(2 * np.pi * variance) + (y - mean) ** 2 / variance)).sum(-1)
    nll = softplus(outputs) - y * outputs  # -log Bernoulli(y; sigmoid(logits))
    if likelihood == "continuous_bernoulli":  # minus log C(lambda), C = 2 artanh(1-2l)/(1-2l)
        lam = 1.0 / (1.0 + np.exp(-outputs))
        nll = nll - np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    return nll.sum(-1)


def numpy_loss_terms(model, y, eps, match_weight, x_path_weight=0.0):
    """The paper's objective (plus the optional X-path term) written out in NumPy, per example."""
    loc, raw = np.split(numpy_mlp(model.encoder, y), 2, axis=-1)
    scale = softplus(raw) + 1e-5
    z = loc + scale * eps
    reconstruction = numpy_nll(model.likelihood, numpy_mlp(model.decoder, z), y)
    kl = 0.5 * (scale ** 2 + loc ** 2 - 1.0 - 2.0 * np.log(scale)).sum(-1)
    terms = {"reconstruction": reconstruction, "kl": kl}
    loss = reconstruction + kl
    if isinstance(model, NonparametricVAE):
        x = numpy_mlp(model.x_encoder, y)
        lengthscale = float(model.kernel.lengthscale)
        w = numpy_weights(x, x, lengthscale, exclude_diagonal=True)
        z_tilde = w @ loc
        terms["match"] = ((loc - z_tilde) ** 2).sum(-1)
        loss = loss + match_weight * terms["match"]
        if x_path_weight > 0:
            decoder = model.x_path_decoder_net or model.decoder
            terms["x_path"] = numpy_nll(model.likelihood, numpy_mlp(decoder, z_tilde), y)
            loss = loss + x_path_weight * terms["x_path"]
        terms["lengthscale"] = np.full(len(y), lengthscale)
        terms["lengthscale_over_x_std"] = np.full(len(y), lengthscale / x.std(axis=0).mean())
    terms["loss"] = loss
    return terms


@pytest.mark.parametrize("model_name,match_weight,x_path_weight,x_path_decoder,likelihood", [
    ("npvae", 1.0, 0.0, "shared", "bernoulli"), ("npvae", 0.25, 0.0, "shared", "bernoulli"),
    ("vae", 1.0, 0.0, "shared", "bernoulli"), ("npvae", 1.0, 0.5, "shared", "bernoulli"),
    ("npvae", 0.0, 2.0, "separate", "bernoulli"), ("vae", 1.0, 0.0, "shared", "gaussian"),
    ("npvae", 1.0, 0.5, "shared", "gaussian"), ("npvae", 0.0, 2.0, "separate", "gaussian"),
    ("npvae", 1.0, 0.5, "shared", "continuous_bernoulli")])
def test_loss_matches_numpy_reference(model_name, match_weight, x_path_weight, x_path_decoder,
                                      likelihood):
    model = small_model(model_name, match_weight=match_weight, x_path_weight=x_path_weight,
                        x_path_decoder=x_path_decoder, likelihood=likelihood)
    y = images(9)
    if likelihood == "gaussian":  # standardised real values, half of them negative
        y = np.random.default_rng(4).normal(size=y.shape).astype(np.float32)
    seed = tf.constant([11, 29], tf.int32)
    # z = loc + scale * eps, with eps the prior's draw for the same seed.
    eps = model.prior.sample(9, seed=seed).numpy()
    got = {k: v.numpy() for k, v in model.loss_terms(y, training=False, seed=seed).items()}
    expected = numpy_loss_terms(model, y.astype(np.float64), eps.astype(np.float64),
                                match_weight, x_path_weight)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_separate_x_path_decoder_is_its_own_network():
    model = small_model("npvae", x_path_weight=1.0, x_path_decoder="separate")
    z = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    shared = model.decoder_likelihood(z).mean().numpy()
    own = model.x_path_likelihood(z).mean().numpy()
    assert not np.allclose(shared, own)
    # Images generated at X locations are the VAE decoder's (sharp); the X path's own
    # decoder is for its likelihood.
    x_ref, z_ref = np.zeros((1, 2), np.float32), z[:1]
    np.testing.assert_allclose(model.decode_from_x(x_ref, x_ref, z_ref).numpy(), shared[:1],
                               rtol=1e-6)
    shared_model = small_model("npvae", x_path_weight=1.0)
    assert shared_model.x_path_decoder_net is None
    np.testing.assert_allclose(shared_model.x_path_likelihood(z).mean().numpy(),
                               shared_model.decoder_likelihood(z).mean().numpy())


def _gradients(model, y, seed, **settings):
    """Gradients of the mean loss by variable path, with the model's settings overridden
    (eager calls read them afresh, and the weights stay the same)."""
    model.objective = dataclasses.replace(model.objective, **settings)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.loss_terms(y, training=False, seed=seed)["loss"])
    return {v.path.split("/", 1)[1]: g for v, g in zip(
        model.trainable_variables, tape.gradient(loss, model.trainable_variables))}


def test_x_path_stop_gradient_leaves_the_vae_encoder_to_the_elbo():
    """With match weight 0, a separate decoder and the stop-gradient, the VAE's encoder gets
    exactly the ELBO's gradient; without the stop-gradient the X-path term reaches it too."""
    y, seed = tf.constant(images(12)), tf.constant([3, 4])
    model = small_model("npvae", match_weight=0.0, x_path_weight=1.0, x_path_decoder="separate")
    held = _gradients(model, y, seed, x_path_stop_gradient=True)
    free = _gradients(model, y, seed, x_path_stop_gradient=False)
    vae = _gradients(model, y, seed, x_path_weight=0.0)
    encoder = [p for p in vae if p.startswith("encoder/")]
    assert encoder
    for path in encoder:
        np.testing.assert_allclose(held[path], vae[path], rtol=1e-5, atol=1e-7, err_msg=path)
    assert any(not np.allclose(free[p], vae[p], rtol=1e-3, atol=1e-6) for p in encoder)
    # The X encoder and the lengthscale still learn from the X path.
    x_encoder = [p for p in held if p.startswith("x_encoder/") or "lengthscale" in p]
    assert x_encoder and all(held[p] is not None and np.any(held[p] != 0) for p in x_encoder)


def test_random_streams_are_distinct():
    """Posterior noise and every dropout layer start from different seeds (issue: the noise
    and the encoder's first dropout mask used to come from the same raw bits)."""
    model = small_model("npvae", x_path_weight=1.0, x_path_decoder="separate")
    states = {}
    for layer in [model] + list(model._flatten_layers(include_self=False)):
        for generator in getattr(layer, "_seed_generators", []):
            states[generator.state.path] = tuple(generator.state.numpy().tolist())
    assert len(states) >= 1 + 4 * 2  # noise + 2 dropout layers in each of 4 MLPs
    assert len(set(states.values())) == len(states), states


def test_match_weight_zero_gives_the_vae_objective():
    model = small_model("npvae", match_weight=0.0)
    terms = model.loss_terms(images(), seed=tf.constant([1, 2]))
    np.testing.assert_allclose(terms["loss"], terms["reconstruction"] + terms["kl"], rtol=1e-6)
    assert float(tf.reduce_mean(terms["match"])) > 0  # still reported


@pytest.mark.parametrize("as_tensor", [False, True])
def test_decoder_likelihood_is_binary_cross_entropy_for_grayscale_targets(as_tensor):
    model = small_model("vae")
    z = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    y = np.full((4, 16), 0.7, np.float32)
    y[:, :4] = 0.2
    logits = model.decoder(z).numpy().astype(np.float64)
    bce = (softplus(logits) - y * logits).sum(-1)
    got = model.decoder_likelihood(z).log_prob(tf.constant(y) if as_tensor else y).numpy()
    np.testing.assert_allclose(-got, bce, rtol=1e-5)


def test_posterior_and_kl_are_tfp_distributions():
    model = small_model("vae")
    q = model.approx_posterior(images(3))
    assert isinstance(q, tfd.MultivariateNormalDiag)
    assert q.batch_shape == [3] and q.event_shape == [5]
    assert np.all(q.stddev().numpy() > 0)


@pytest.mark.parametrize("model_name", ["npvae", "vae"])
def test_train_step_changes_weights_and_test_step_does_not(model_name):
    model = small_model(model_name)
    y = tf.constant(images(16))
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.test_step(y)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    logs = model.train_step(y)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(changed), [v.path for v, c in zip(model.trainable_variables, changed) if not c]
    assert np.isfinite(float(logs["loss"]))
    if model_name == "npvae":
        assert "match" in logs
        assert any(v is model.kernel.log_lengthscale for v in model.trainable_variables)


def test_same_seed_gives_the_same_training_losses():
    def run():
        model = small_model("npvae")
        return [float(model.train_step(tf.constant(images(16, s)))["loss"]) for s in range(3)]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 3


def test_saved_model_loads_back_with_identical_outputs(tmp_path):
    model = small_model("npvae")
    model.fit(images(32), batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NonparametricVAE) and loaded.get_config() == model.get_config()
    y = images(10, seed=5)
    np.testing.assert_array_equal(loaded(y).numpy(), model(y).numpy())
    np.testing.assert_array_equal(loaded.embed(y).numpy(), model.embed(y).numpy())
    assert float(loaded.kernel.lengthscale) == float(model.kernel.lengthscale)


def test_vae_save_load(tmp_path):
    model = small_model("vae")
    path = str(tmp_path / "v.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is VAE
    np.testing.assert_array_equal(loaded(images()).numpy(), model(images()).numpy())


def test_decode_from_x_uses_the_reference_set():
    model = small_model("npvae")
    x_ref = np.array([[0.0, 0.0], [100.0, 100.0]], np.float32)
    z_ref = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    z_tilde = model.predictive_mean(np.array([[0.1, 0.0]], np.float32), x_ref, z_ref).numpy()
    np.testing.assert_allclose(z_tilde[0], z_ref[0], rtol=1e-5)
    probs = model.decode_from_x(np.zeros((3, 2), np.float32), x_ref, z_ref).numpy()
    assert probs.shape == (3, 16) and np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(ValueError, match="empty"):
        model.predictive_mean(np.zeros((1, 2), np.float32), np.zeros((0, 2)), np.zeros((0, 5)))


def test_xla_compiled_training_runs():
    keras.utils.set_random_seed(0)
    model = build_model(Config(**SMALL))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(images(32), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))



HELD_SCHEMES = {
    "xpath": dict(match_weight=0.0, x_path_weight=1.0, x_path_decoder="separate",
                  x_path_stop_gradient=True),
    "umap": dict(match_weight=0.0, neighbour_weight=1.0),
}


@pytest.mark.parametrize("scheme", list(HELD_SCHEMES))
def test_schemes_that_hold_the_vae_train_it_bit_for_bit(scheme):
    """match 0 + terms that never reach the VAE (the X path with E[z] held, its own or the
    held shared decoder; the neighbour term): the VAE inside the npVAE gets the same initial
    weights, data, noise, dropout masks and gradients as a plain VAE, so its weights after
    training are identical (these terms cost the VAE nothing), while X does train."""
    from npvae_tf.data.pipeline import make_dataset, steps_per_epoch
    from npvae_tf.data.neighbour_graph import build_graph
    from npvae_tf.model.optimizers import FusedAdam

    y = images(64, seed=8)
    graph = build_graph(y, {"n_neighbors": 5, "seed": 0})
    weights, x_before = {}, None
    for name, changes in (("vae", dict(model="vae")), (scheme, HELD_SCHEMES[scheme])):
        keras.utils.set_random_seed(0)
        model = build_model(Config(**{**SMALL, **changes}))
        model.compile(optimizer=FusedAdam(1e-2))
        if name != "vae":
            x_before = model.x_encoder.get_weights()
        with_graph = graph if changes.get("neighbour_weight") else None
        model.fit(make_dataset(y, 16, shuffle=True, seed=3, epochs=2, neighbours=with_graph),
                  epochs=2, steps_per_epoch=steps_per_epoch(64, 16), verbose=0)
        weights[name] = {v.path.split("/", 1)[1]: v.numpy() for v in model.trainable_variables
                         if v.path.split("/", 1)[1].startswith(("encoder/", "decoder/"))}
    assert weights["vae"] and weights["vae"].keys() == weights[scheme].keys()
    for path, value in weights["vae"].items():
        np.testing.assert_array_equal(weights[scheme][path], value, err_msg=path)
    assert any(not np.array_equal(a, b) for a, b in zip(x_before, model.x_encoder.get_weights()))
    if "neighbour_weight" in HELD_SCHEMES[scheme]:
        assert "neighbour" in [m.name for m in model.metrics]
