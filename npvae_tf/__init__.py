"""npvae_tf: the nonparametric VAE (Bodin et al. 2017) in TensorFlow 2 / Keras 3 / TFP."""

from npvae_tf.config import Config
from npvae_tf.kernels import SquaredExponentialKernel
from npvae_tf.model import VAE, NonparametricVAE, build_model
from npvae_tf.optimizers import FusedAdam

__all__ = ["Config", "FusedAdam", "SquaredExponentialKernel", "VAE", "NonparametricVAE",
           "build_model"]
__version__ = "0.1.0"
