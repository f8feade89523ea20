"""Training a run: data, model, callbacks, and the files a run folder holds.

A run folder::

    config.json          the Config (enough to rebuild the model)
    model.keras          the final model
    best.keras           the model at the best validation loss so far
    reference_set.npz    training-set E[z] (and x for the npVAE) with labels
    x_density.npz        npVAE: the Gaussian mixture over the training X that sampling uses
    test_metrics.json    test-set ELBO, reconstruction (sample and mean), KL, match
    fit_summary.json     training time
    training_log.csv     per-epoch metrics;  logs/  TensorBoard;  backup/  resume state

Every file is written under a temporary name and renamed, so an interrupted run never leaves
a half-written model; rerunning the same command resumes from ``backup/``.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from npvae_tf.config import Config, ConfigError, CONFIG_FILE
from npvae_tf.data import evaluation_images, load_mnist, make_dataset, steps_per_epoch
from npvae_tf.distribute import worker_dir, worker_identity
from npvae_tf.metrics import elbo_summary
from npvae_tf.model import build_model
from npvae_tf.optimizers import FusedAdam
from npvae_tf.files import atomic_write, write_json
from npvae_tf.reference import build_reference_set
from npvae_tf.sampling import XDensity

MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
METRICS_FILE = "test_metrics.json"
LOG_FILE = "training_log.csv"
FIT_FILE = "fit_summary.json"


class TrainingError(RuntimeError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is never half-written.

    Keras writes ``latest.weights.h5`` and then its metadata in place, so a kill during or
    between the two writes corrupts the backup or pairs weights with the wrong epoch. Here
    each epoch's weights go to a new file (temporary name, then rename), and only then does
    the metadata, renamed into place in one step, point at them.
    """

    META = "backup.json"

    def _meta_path(self):
        return os.path.join(self.backup_dir, self.META)

    @classmethod
    def saved_epoch(cls, backup_dir: str) -> int:
        """Epochs finished according to the backup in ``backup_dir`` (0 if none)."""
        path = os.path.join(backup_dir, cls.META)
        if not os.path.isfile(path):
            return 0
        with open(path) as f:
            return int(json.load(f)["epoch"])

    def _load_model(self):
        if not os.path.isfile(self._meta_path()):
            return
        with open(self._meta_path()) as f:
            meta = json.load(f)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, meta["weights"]))
        self.model._initial_epoch = int(meta["epoch"])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{self._current_epoch}.weights.h5"
        atomic_write(os.path.join(self.backup_dir, name), self.model.save_weights)
        write_json(self._meta_path(), {"epoch": self._current_epoch, "weights": name})
        for old in os.listdir(self.backup_dir):  # older epochs are no longer pointed at
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever ``monitor`` improves, via a temporary file and a rename.

    The best value is kept beside the checkpoint, so a resumed run does not overwrite a
    better checkpoint with a worse one.
    """

    def __init__(self, path: str, monitor: str = "val_loss"):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.state_path = path + ".json"

    def _best(self) -> float:
        if os.path.isfile(self.state_path) and os.path.isfile(self.path):
            with open(self.state_path) as f:
                return float(json.load(f)["best"])
        return math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value) or value >= self._best():
            return
        atomic_write(self.path, self.model.save)
        write_json(self.state_path, {"best": float(value), "epoch": epoch + 1,
                                     "monitor": self.monitor})


def check_run_dir(config: Config, run_dir: str) -> bool:
    """Refuses to reuse a folder made by another config; True if the run already finished."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.isfile(path):
        previous = Config.load(run_dir)
        if previous != config:
            differ = sorted(k for k, v in config.to_dict().items() if previous.to_dict()[k] != v)
            raise ConfigError(f"{run_dir} holds a run with a different config (differs in: "
                              f"{', '.join(differ)}); choose another --out")
    return all(os.path.isfile(os.path.join(run_dir, f)) for f in (MODEL_FILE, METRICS_FILE))


def callbacks_for(run_dir: str, own_dir: str, chief: bool,
                  extra: Sequence[keras.callbacks.Callback] = ()):
    """Backups in ``own_dir`` (one per worker); logs and checkpoints from the chief only."""
    callbacks = [AtomicBackupAndRestore(os.path.join(own_dir, "backup")),
                 keras.callbacks.TerminateOnNaN()]
    if chief:
        callbacks += [
            AtomicBestCheckpoint(os.path.join(run_dir, BEST_FILE)),
            keras.callbacks.CSVLogger(os.path.join(run_dir, LOG_FILE), append=True),
            keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False),
        ]
    return callbacks + list(extra)


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """The optimizer training compiles with (``benchmarks/bench_train.py`` measures it)."""
    return FusedAdam(config.learning_rate)


def train(config: Config, run_dir: str, data_dir: Optional[str] = None, verbose: int = 1,
          extra_callbacks: Sequence[keras.callbacks.Callback] = (),
          strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, float]:
    """Trains (or resumes) the run ``config`` describes in ``run_dir``; returns test metrics.

    ``strategy``: a ``tf.distribute`` strategy (default: the current one). The model,
    optimizer and metrics are created in its scope; ``config.batch_size`` is the global
    batch, which must divide evenly over the replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(f"batch_size {config.batch_size} does not split evenly over "
                          f"{replicas} replicas")
    chief, _ = worker_identity(strategy)
    own_dir = worker_dir(run_dir, strategy)
    if check_run_dir(config, run_dir):
        with open(os.path.join(run_dir, METRICS_FILE)) as f:
            return json.load(f)
    data = load_mnist(data_dir, config.validation_examples, config.train_examples,
                      config.image_shape)
    if chief:
        config.save(run_dir)
    os.makedirs(own_dir, exist_ok=True)
    model_path = os.path.join(own_dir, MODEL_FILE)
    if os.path.isfile(model_path):
        # Fitting finished in an earlier, interrupted invocation: only the last steps remain.
        model = keras.saving.load_model(model_path)
    else:
        model = _fit(config, data, run_dir, own_dir, chief, strategy, verbose, extra_callbacks)
        atomic_write(model_path, model.save)
    if not chief:
        return {}
    validation_images = evaluation_images(data.validation.images, config.binarize,
                                          config.seed)
    reference = build_reference_set(model, data.train.images, data.train.labels,
                                    validation_images)
    reference.save(run_dir)
    if reference.x is not None:
        # Fitted once, here: evaluation and the export both sample this density.
        XDensity.fit(reference.x, config.seed).save(run_dir)
    test_images = evaluation_images(data.test.images, config.binarize, config.seed)
    metrics = elbo_summary(model, test_images, config.batch_size)
    if os.path.isfile(os.path.join(run_dir, FIT_FILE)):
        with open(os.path.join(run_dir, FIT_FILE)) as f:
            metrics.update(json.load(f))
    if hasattr(model, "kernel"):
        metrics["lengthscale"] = float(model.kernel.lengthscale.numpy())
        metrics["serving_lengthscale"] = reference.lengthscale
    write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    return metrics


def _fit(config, data, run_dir, own_dir, chief, strategy, verbose, extra_callbacks):
    """Builds the model in the strategy's scope and fits it; writes ``fit_summary.json``."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=make_optimizer(config),
                      jit_compile=config.jit_compile)
    # With several replicas every batch is full, so it splits evenly.
    even = strategy.num_replicas_in_sync > 1
    # The backup callback resumes fit at this epoch; the data must start there too (each
    # epoch's order depends on (seed, epoch) only, so a resumed run sees the same batches).
    first_epoch = AtomicBackupAndRestore.saved_epoch(os.path.join(own_dir, "backup"))
    train_ds = make_dataset(data.train.images, config.batch_size, shuffle=True,
                            seed=config.seed, binarize=config.binarize, drop_remainder=even,
                            first_epoch=first_epoch, epochs=config.epochs)
    val_ds = make_dataset(data.validation.images, config.batch_size, seed=config.seed + 1,
                          binarize=config.binarize, drop_remainder=even)
    started = time.time()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, shuffle=False,
                        steps_per_epoch=steps_per_epoch(len(data.train.images),
                                                        config.batch_size, even),
                        callbacks=callbacks_for(run_dir, own_dir, chief, extra_callbacks),
                        verbose=verbose)
    seconds = time.time() - started
    losses = history.history.get("loss", [])
    if losses and not np.all(np.isfinite(losses)):
        raise TrainingError(f"training diverged (loss {losses[-1]}); see {run_dir}/{LOG_FILE}")
    if chief:
        # Epochs of this invocation only: a resumed run times its remaining epochs.
        write_json(os.path.join(run_dir, FIT_FILE), {
            "train_seconds": seconds, "epochs_timed": len(losses),
            "seconds_per_epoch": seconds / max(len(losses), 1)})
    return model


def format_metrics(metrics: Dict[str, float]) -> str:
    lines = [f"test ELBO {metrics['elbo']:.2f} nats  (reconstruction at a sample "
             f"{metrics['reconstruction']:.2f}, at the mean {metrics['reconstruction_at_mean']:.2f}, "
             f"KL {metrics['kl']:.2f})"]
    if "match" in metrics:
        lines.append(f"match ||E[z] - z~||^2 {metrics['match']:.3f}, lengthscale "
                     f"{metrics.get('lengthscale', float('nan')):.4g}")
    return "\n".join(lines)
