"""Every random consumer of a run draws from its own stream: none coincide.

Two consumers seeded alike draw the same raw bits (Keras' SeedGenerator walks (s, 0), (s, 1),
...; NumPy's default_rng(s) is one stream): the reparameterisation noise and the encoder's
first dropout mask once did, and so did evaluation's prior sample and its importance
weights of batch 1.
"""

import numpy as np

from npvae_tf.core.config import Config
from npvae_tf.evaluation.steps import EVALUATION_STREAMS, evaluation_seeds
from npvae_tf.model.vae import build_model
from npvae_tf.core.seeds import stream_seed

# The named streams training and its test metrics use besides the model's generators.
TRAINING_STREAMS = ("data_order", "binarize", "validation_binarize", "test_metrics",
                    "evaluation_binarize/train", "evaluation_binarize/validation",
                    "evaluation_binarize/test", "neighbour_tails", "neighbour_negatives")


def generator_seeds(model):
    """The seed of every SeedGenerator in the model (state [seed, counter] or similar)."""
    states = [np.asarray(v.numpy()) for v in model.variables if "seed_generator_state" in v.path]
    return states


def test_every_generator_of_the_model_has_its_own_seed():
    config = Config(z_dim=3, hidden=(8, 8), x_path_weight=1.0, x_path_decoder="separate", seed=0)
    model = build_model(config)
    states = generator_seeds(model)
    # posterior noise + two dropout layers in each of encoder, decoder, x_encoder, x-path decoder
    assert len(states) == 1 + 2 * 4
    assert len({tuple(s.tolist()) for s in states}) == len(states)
    named = {stream_seed(0, name) for name in TRAINING_STREAMS}
    assert len(named) == len(TRAINING_STREAMS)
    in_generators = {int(v) for s in states for v in s.tolist()}
    assert not named & in_generators


def test_every_evaluation_consumer_has_its_own_seed_apart_from_training():
    seeds = evaluation_seeds(0)
    assert set(seeds) == set(EVALUATION_STREAMS)
    assert len(set(seeds.values())) == len(seeds)
    model = build_model(Config(z_dim=3, hidden=(8,), seed=0))  # training seed = eval seed
    training = {stream_seed(0, n) for n in TRAINING_STREAMS}
    training |= {int(v) for s in generator_seeds(model) for v in s.tolist()}
    assert not set(seeds.values()) & training
    assert evaluation_seeds(1) != seeds
