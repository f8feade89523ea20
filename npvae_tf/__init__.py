"""npvae_tf: the nonparametric VAE (Bodin et al. 2017) in TensorFlow 2 / Keras 3 / TFP.

Importing the package does not import TensorFlow (seconds of start-up and a page of log
lines): the command lines parse flags and check folders first. Names that need TensorFlow
are exported lazily (PEP 562) and load on first use, e.g. ``npvae_tf.build_model``.

The Python API: ``npvae_tf.load_run(path)`` and ``npvae_tf.train(config, run_dir)`` return a
:class:`npvae_tf.serving.api.TrainedRun` with ``embed``, ``encode``, ``reconstruct``, ``decode``,
``generate_from_x`` and ``sample`` on NumPy arrays; ``npvae_tf.NPVAE`` is the scikit-learn
estimator (``fit_transform``, ``inverse_transform``, ``sample``).
"""

import importlib

__version__ = "0.1.0"

# Exported name -> module that defines it (imported on first access).
_LAZY = {
    "Config": "npvae_tf.core.config",
    "ConfigError": "npvae_tf.core.config",
    "RunError": "npvae_tf.runs.layout",
    "FusedAdam": "npvae_tf.model.optimizers",
    "SquaredExponentialKernel": "npvae_tf.model.kernel",
    "VAE": "npvae_tf.model.vae",
    "NonparametricVAE": "npvae_tf.model.vae",
    "build_model": "npvae_tf.model.vae",
    # The Python API (npvae_tf/serving/api.py): NumPy in, NumPy out.
    "load_run": "npvae_tf.serving.api",
    "train": "npvae_tf.serving.api",
    "TrainedRun": "npvae_tf.serving.api",
    "NPVAE": "npvae_tf.serving.estimator",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'npvae_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
