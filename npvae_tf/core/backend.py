"""The package's one import of TensorFlow, Keras and TensorFlow Probability.

Every module that needs them imports them from here (``from npvae_tf.core.backend import tf``),
so TensorFlow always loads through :func:`npvae_tf.core.quiet.quiet_tensorflow`, without its
start-up chatter, whichever module a program imports first.
"""

from npvae_tf.core.quiet import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

__all__ = ["keras", "tf", "tfp"]
