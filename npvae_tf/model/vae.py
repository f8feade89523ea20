"""The VAE (Kingma & Welling 2014) and the nonparametric VAE (Bodin et al. 2017, eq. 5).

Shapes: ``B`` batch, ``P = H*W`` pixels, ``Z`` latent size, ``D`` size of X.

VAE, per example (the loss is the batch mean):
    q(z|y) = N(mu(y), diag(sigma(y)^2))                 ``approx_posterior``
    p(y|z) = prod_p p(y_p; decoder_p(z))               ``decoder_likelihood``
             (Bernoulli by default; :mod:`npvae_tf.model.likelihoods` lists the families)
    loss_i = -log p(y_i|z_i) + KL(q(z|y_i) || N(0, I)),  z_i ~ q(z|y_i)  (= -ELBO_i)

Nonparametric VAE adds a deterministic encoder ``x_i = f(y_i)`` (``[B, D]``) and the kernel
prediction of each latent mean from the others in the batch:
    z~_i = sum_{j != i} W_ij E[z_j],  W = row-softmax(-||x_i - x_j||^2 / (2 l^2))
    loss_i = -ELBO_i + match_weight * ||E[z_i] - z~_i||^2
so that minimising the mean loss maximises ``L_g - sum_i ||E[z_i] - z~_i||^2`` per example.

Optionally (``neighbour_weight`` > 0, the ``umap`` scheme) the X encoder also learns UMAP's
cross-entropy against the fuzzy k-NN graph of the training images,
``loss_i += neighbour_weight * neighbour_i`` (:mod:`npvae_tf.model.neighbour_loss`); the term
depends on the X encoder only, so it never moves the VAE.

Optionally (``x_path_weight`` > 0, not in the paper) the loss also trains the *X path*, the
route a new image takes through X after training:
    loss_i += x_path_weight * (-log p_X(y_i | z~_i))
where ``p_X`` is the model's decoder (``x_path_decoder="shared"``) or one of its own
(``"separate"``); with ``x_path_stop_gradient`` the E[z_j] that z~_i averages are constants.

Random streams: the posterior noise and every dropout layer draw from their own seed, derived
from the run seed and the consumer's name (:func:`npvae_tf.core.seeds.stream_seed`).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from npvae_tf.core.backend import keras, tf, tfp
from npvae_tf.core.config import Config
from npvae_tf.core.objective import Objective, objective_from
from npvae_tf.core.seeds import stream_seed
from npvae_tf.model import optimizers  # noqa: F401  registers FusedAdam: model.keras files name it
from npvae_tf.model.kernel import SquaredExponentialKernel
from npvae_tf.model.layers import RNG_ALG, mlp, replica_all_gather, replica_position
from npvae_tf.model.likelihoods import decoder_distribution, output_width
from npvae_tf.data.neighbour_graph import umap_ab
from npvae_tf.model.neighbour_loss import neighbour_cross_entropy

tfd = tfp.distributions

# Smallest posterior standard deviation: keeps log sigma finite for saturated units.
MIN_SCALE = 1e-5


@keras.saving.register_keras_serializable(package="npvae_tf")
class VAE(keras.Model):
    """Gaussian-encoder VAE with two ReLU MLPs and the decoder likelihood ``likelihood``.

    Calling the model maps examples ``[B, P]`` to the decoder's mean ``[B, P]`` (pixel
    probabilities for the Bernoulli) decoded at the posterior mean (deterministic).
    """

    # Whether the model has the embedding X (``embed``, the kernel): what is asked instead of
    # the class or its attributes.
    has_x = False

    def __init__(self, z_dim: int = 500, image_dim: int = 784, hidden: Sequence[int] = (500, 500),
                 dropout: float = 0.1, seed: Optional[int] = None,
                 likelihood: str = "bernoulli", **kwargs):
        super().__init__(**kwargs)
        self.z_dim = int(z_dim)
        self.image_dim = int(image_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.seed = seed
        self.likelihood = str(likelihood)
        self.encoder = mlp(self.hidden, 2 * self.z_dim, self.dropout, seed, "encoder")
        self.decoder = mlp(self.hidden, output_width(self.likelihood, self.image_dim),
                           self.dropout, seed, "decoder")
        self.sample_seeds = keras.random.SeedGenerator(stream_seed(seed, "posterior_noise"),
                                                       name="sample_seeds")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")

    @property
    def trained_variables(self):
        """What training's optimizer updates, in order (its slots follow this list, so a resume
        builds it from the same list): every trainable variable."""
        return self.trainable_variables

    # --- the model's distributions -------------------------------------------------------
    @property
    def prior(self) -> tfd.Distribution:
        """p(z) = N(0, I_Z)."""
        return tfd.MultivariateNormalDiag(loc=tf.zeros([self.z_dim]),
                                          scale_diag=tf.ones([self.z_dim]))

    def approx_posterior(self, y, training=False) -> tfd.Distribution:
        """q(z|y) = N(mu, diag(sigma^2)); batch shape ``[B]``, event shape ``[Z]``."""
        params = self.encoder(y, training=training)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=tf.nn.softplus(raw_scale) + MIN_SCALE)

    def decoder_likelihood(self, z, training=False) -> tfd.Distribution:
        """p(y|z): the likelihood family on the decoder's outputs; batch ``[B]``, event ``[P]``."""
        return decoder_distribution(self.likelihood, self.decoder(z, training=training))

    def sample_seed(self) -> tf.Tensor:
        """A fresh stateless seed ``[2]`` from the model's seeded generator."""
        return tf.cast(self.sample_seeds.next(), tf.int32)

    # --- the objective ---------------------------------------------------------------------
    def loss_terms(self, y, training=False, seed=None, neighbours=None) -> Dict[str, tf.Tensor]:
        """Per-example terms ``[B]``: reconstruction (-log p(y|z), z ~ q), kl, and loss.

        ``seed``: a stateless seed ``[2]`` for the reparameterised draw of z (default: the
        next one from the model's seeded generator). ``neighbours``: the graph draws the
        training pipeline adds to each batch for the neighbour term (``tails`` ``[B, P]``,
        ``head_weight`` ``[B]``, ``negatives`` ``[B, K]``), or None.
        """
        y = tf.convert_to_tensor(y, tf.float32)
        q = self.approx_posterior(y, training=training)
        z = self.reparameterized_sample(q, self.sample_seed() if seed is None else seed)
        reconstruction = -self.decoder_likelihood(z, training=training).log_prob(y)
        kl = tfd.kl_divergence(q, self.prior)
        terms = {"reconstruction": reconstruction, "kl": kl}
        terms.update(self.extra_terms(y, q, training, neighbours))
        terms["loss"] = self.total_loss(terms)
        return terms

    def reparameterized_sample(self, q, seed) -> tf.Tensor:
        """``z = E[z] + sigma * eps`` with ``eps ~ N(0, I)``, ``[B, Z]``.

        ``eps`` is drawn for the *global* batch and each replica takes its own rows, so the
        draw (hence the loss) does not depend on how the batch is split over replicas
        (replicas hold equal shares: distributed batches are divisible by the replica count).
        """
        batch = tf.shape(q.loc)[0]
        replicas, replica_id = replica_position()
        # = self.prior.sample(batch * replicas, seed=seed), with the generator named.
        eps = tf.random.stateless_normal([batch * replicas, self.z_dim], seed=seed,
                                         alg=RNG_ALG)
        if replicas > 1:
            eps = eps[replica_id * batch:(replica_id + 1) * batch]
        return q.loc + q.stddev() * eps

    def extra_terms(self, y, q, training, neighbours=None) -> Dict[str, tf.Tensor]:
        return {}

    def total_loss(self, terms) -> tf.Tensor:
        return terms["reconstruction"] + terms["kl"]

    def _update_metrics(self, terms) -> Dict[str, tf.Tensor]:
        self.loss_tracker.update_state(terms["loss"])
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])
        self.elbo_tracker.update_state(-(terms["reconstruction"] + terms["kl"]))
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces multi-worker step outputs with reduce(MEAN, axis=0), which
            # rejects scalars: give it rank-1 values (the mean of equal values is unchanged).
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker, self.elbo_tracker]

    @staticmethod
    def _images(data):
        return data[0] if isinstance(data, (tuple, list)) else data

    @staticmethod
    def _neighbours(data):
        """The neighbour-graph draws of a training batch (a dict after the images), or None."""
        if isinstance(data, (tuple, list)) and len(data) > 1 and isinstance(data[1], dict):
            return data[1]
        return None

    def scaled_loss(self, per_example_loss: tf.Tensor) -> tf.Tensor:
        """Sum over the local batch divided by the *global* batch size.

        With one replica this is the batch mean; with several, summing the replicas'
        gradients gives exactly the single-device gradient of the global mean.
        """
        replicas, _ = replica_position()
        global_batch = tf.cast(tf.shape(per_example_loss)[0] * replicas, per_example_loss.dtype)
        return tf.reduce_sum(per_example_loss) / global_batch

    def train_step(self, data):
        y = self._images(data)
        with tf.GradientTape() as tape:
            terms = self.loss_terms(y, training=True, neighbours=self._neighbours(data))
            loss = self.scaled_loss(terms["loss"])
        variables = self.trained_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables)
                                        if g is not None])
        return self._update_metrics(terms)

    def test_step(self, data):
        y = self._images(data)
        terms = self.loss_terms(y, training=False)
        return self._update_metrics(terms)

    # --- inference -------------------------------------------------------------------------
    def build(self, input_shape=None):
        # Creates every weight, so a saved model can load its variables before any call.
        self.encoder.build((None, self.image_dim))
        self.decoder.build((None, self.z_dim))
        super().build((None, self.image_dim))

    def call(self, y, training=False):
        q = self.approx_posterior(y, training=training)
        return self.decoder_likelihood(q.mean(), training=training).mean()

    def decode(self, z):
        """The decoder's mean ``[B, P]`` (image probabilities) for latents ``[B, Z]``."""
        return self.decoder_likelihood(tf.convert_to_tensor(z, tf.float32)).mean()

    def get_config(self):
        config = super().get_config()
        config.update(z_dim=self.z_dim, image_dim=self.image_dim, hidden=list(self.hidden),
                      dropout=self.dropout, seed=self.seed, likelihood=self.likelihood)
        return config


@keras.saving.register_keras_serializable(package="npvae_tf")
class NonparametricVAE(VAE):
    """The VAE plus an X encoder and the in-batch kernel prediction of the latent means."""

    has_x = True

    def __init__(self, x_dim: int = 2, initial_lengthscale: float = 1.0,
                 objective: Optional[Objective] = None, **kwargs):
        """``objective``: the loss's knobs; a saved model's config gives them one by one
        (``match_weight=...``, as :meth:`get_config` writes them)."""
        knobs, kwargs = objective_from(kwargs, "model.keras")
        super().__init__(**kwargs)
        self.x_dim = int(x_dim)
        self.initial_lengthscale = float(initial_lengthscale)
        self.objective = objective or knobs
        # UMAP's (a, b) for min_dist: fitted once (umap-learn), only when the term is on.
        self.umap_ab = (umap_ab(self.objective.min_dist) if self.objective.neighbour_weight > 0
                        else None)
        self.x_encoder = mlp(self.hidden, self.x_dim, self.dropout, self.seed, "x_encoder")
        # The X path's own decoder, or None: decode z~ with the VAE's decoder.
        self.x_path_decoder_net = (mlp(self.hidden, output_width(self.likelihood, self.image_dim),
                                       self.dropout, self.seed, "x_path_decoder")
                                   if self.objective.x_path_decoder == "separate" else None)
        self.kernel = SquaredExponentialKernel(self.initial_lengthscale, name="kernel")
        self.match_tracker = keras.metrics.Mean(name="match")
        self.x_path_tracker = keras.metrics.Mean(name="x_path")
        self.neighbour_tracker = keras.metrics.Mean(name="neighbour")
        self.landmark_tracker = keras.metrics.Mean(name="landmark")
        self.lengthscale_tracker = keras.metrics.Mean(name="lengthscale")
        self.relative_lengthscale_tracker = keras.metrics.Mean(name="lengthscale_over_x_std")

    def embed(self, y, training=False):
        """The deterministic embedding ``x = f(y)``, ``[B, D]``."""
        return self.x_encoder(tf.convert_to_tensor(y, tf.float32), training=training)

    def x_path_likelihood(self, z_tilde, training=False) -> tfd.Distribution:
        """p_X(y | z~): the distribution images decoded from X have; batch ``[N]``, event ``[P]``.

        The VAE's ``decoder_likelihood`` unless the X path has a decoder of its own.
        """
        if self.x_path_decoder_net is None:
            return self.decoder_likelihood(z_tilde, training=training)
        return decoder_distribution(self.likelihood,
                                    self.x_path_decoder_net(z_tilde, training=training))

    def extra_terms(self, y, q, training, neighbours=None):
        """Per-example ``match_i = ||E[z_i] - z~_i||^2`` and ``x_path_i = -log p_X(y_i | z~_i)``;
        with ``neighbours`` (training batches of the ``umap`` scheme) ``neighbour_i``.

        z~ comes from the kernel over the global batch (``[B, Z]``). Also ``[B]``-broadcast
        diagnostics: the lengthscale and its ratio to the batch's spread of X (the mean over
        coordinates of the standard deviation of x), which says how many batch neighbours
        the kernel averages.
        """
        z_mean = q.mean()
        x = self.embed(y, training=training)
        x_all, own = self._in_batch(x)
        weights = self.kernel.kernel_weights(x, x_all, exclude=own)  # [b, global batch]
        z_tilde = tf.matmul(weights, replica_all_gather(z_mean))
        terms = {"match": tf.reduce_sum(tf.square(z_mean - z_tilde), axis=-1)}
        if self.objective.x_path_weight > 0:
            if self.objective.x_path_stop_gradient:
                # E[z_j] held constant; the weights stay differentiable (X, lengthscale).
                z_tilde = tf.matmul(weights, replica_all_gather(tf.stop_gradient(z_mean)))
            terms["x_path"] = -self.x_path_likelihood(z_tilde, training=training).log_prob(y)
        if self.objective.neighbour_weight > 0 and neighbours is not None:
            terms["neighbour"] = self._neighbour_term(x, neighbours, training)
        if self.objective.landmark_weight > 0 and neighbours is not None:
            # ||x_i - u_i||^2 to the head's place in the graph's UMAP layout.
            terms["landmark"] = tf.reduce_sum(tf.square(x - neighbours["landmarks"]), axis=-1)
        lengthscale = tf.stop_gradient(self.kernel.lengthscale)
        spread = tf.reduce_mean(tf.math.reduce_std(tf.stop_gradient(replica_all_gather(x)), axis=0))
        ones = tf.ones_like(terms["match"])
        terms["lengthscale"] = lengthscale * ones
        terms["lengthscale_over_x_std"] = lengthscale / tf.maximum(spread, 1e-12) * ones
        return terms

    def _neighbour_term(self, x, neighbours, training):
        """``[b]``: UMAP's cross-entropy of each head (this replica's batch) with its drawn
        tail, against negatives from the global batch's heads and tails."""
        x_tails = self.embed(neighbours["tails"], training=training)
        pool = tf.concat([replica_all_gather(x), replica_all_gather(x_tails)], axis=0)
        a, b = self.umap_ab
        return neighbour_cross_entropy(x, x_tails, pool, neighbours["negatives"],
                                       neighbours["head_weight"], a, b)

    def _in_batch(self, x):
        """The global batch's X ``[B, D]`` (this replica's ``x`` is ``[b, D]``), and the mask
        ``[b, B]`` of each point's own position (excluded: W_ii = 0)."""
        replicas, replica_id = replica_position()
        x_all = replica_all_gather(x)
        b = tf.shape(x)[0]
        # This replica's rows sit at [offset, offset + b) of the gathered batch (the diagonal
        # on one device).
        offset = replica_id * b if replicas > 1 else 0
        own = tf.equal(tf.range(tf.shape(x_all)[0])[None, :], (tf.range(b) + offset)[:, None])
        return x_all, own

    def total_loss(self, terms):
        loss = terms["reconstruction"] + terms["kl"] + self.objective.match_weight * terms["match"]
        if self.objective.x_path_weight > 0:
            loss += self.objective.x_path_weight * terms["x_path"]
        if "neighbour" in terms:
            loss += self.objective.neighbour_weight * terms["neighbour"]
        if "landmark" in terms:
            loss += self.objective.landmark_weight * terms["landmark"]
        return loss

    def _update_metrics(self, terms):
        self.match_tracker.update_state(terms["match"])
        if "x_path" in terms:
            self.x_path_tracker.update_state(terms["x_path"])
        if "neighbour" in terms:
            self.neighbour_tracker.update_state(terms["neighbour"])
        if "landmark" in terms:
            self.landmark_tracker.update_state(terms["landmark"])
        self.lengthscale_tracker.update_state(terms["lengthscale"])
        self.relative_lengthscale_tracker.update_state(terms["lengthscale_over_x_std"])
        return super()._update_metrics(terms)

    @property
    def trained_variables(self):
        """Every trainable variable but an X-path decoder fitted after training: no term of
        the objective reaches it (its optimizer has no slots for it, in a resume too)."""
        own = self.x_path_decoder_net
        if own is None or self.objective.x_path_weight > 0:
            return self.trainable_variables
        skip = {id(v) for v in own.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in skip]

    @property
    def metrics(self):
        extra = [self.match_tracker]
        if self.objective.x_path_weight > 0:
            extra.append(self.x_path_tracker)
        if self.objective.neighbour_weight > 0:
            extra.append(self.neighbour_tracker)
        if self.objective.landmark_weight > 0:
            extra.append(self.landmark_tracker)
        return super().metrics + extra + [self.lengthscale_tracker,
                                          self.relative_lengthscale_tracker]

    def build(self, input_shape=None):
        self.x_encoder.build((None, self.image_dim))
        if self.x_path_decoder_net is not None:
            self.x_path_decoder_net.build((None, self.z_dim))
        super().build(input_shape)

    def predictive_mean(self, x_query, x_ref, z_ref, chunk_size=None, lengthscale=None):
        """``z~* = sum_j W(x*, x_j) z_ref_j`` over a reference set (chunked); ``[N, Z]``.

        ``lengthscale``: the kernel's lengthscale for this prediction (default: the learned
        one); see :func:`npvae_tf.runs.reference.select_serving_lengthscale`.
        """
        if int(np.shape(x_ref)[0]) < 1:
            raise ValueError("the reference set is empty")
        return self.kernel.predictive_mean(tf.convert_to_tensor(x_query, tf.float32),
                                           x_ref, z_ref, chunk_size, lengthscale=lengthscale)

    def decode_from_x(self, x_query, x_ref, z_ref, chunk_size=None, lengthscale=None):
        """Image means ``[N, P]`` at X locations ``[N, D]``: the VAE decoder's ``E[y | z~(x*)]``,
        the sharp images (the X path's own decoder, if any, is for its likelihood)."""
        z_tilde = self.predictive_mean(x_query, x_ref, z_ref, chunk_size, lengthscale)
        return self.decode(z_tilde)

    def get_config(self):
        config = super().get_config()
        config.update(x_dim=self.x_dim, initial_lengthscale=self.initial_lengthscale,
                      **self.objective.model_knobs())
        return config


def build_model(config: Config) -> VAE:
    """The (built, untrained) model a :class:`Config` describes."""
    common = dict(z_dim=config.z_dim, image_dim=config.image_dim, hidden=config.hidden,
                  dropout=config.dropout, seed=config.seed, likelihood=config.likelihood)
    if config.has_x:
        model = NonparametricVAE(x_dim=config.x_dim,
                                 initial_lengthscale=config.initial_lengthscale,
                                 objective=config.objective(), **common)
    else:
        model = VAE(**common)
    model.build()
    return model
