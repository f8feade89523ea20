"""Training a run: data, model, resume, and the order a run folder is written in.

The run folder's layout is :mod:`npvae_tf.runs`. What training guarantees:

* One process per run folder: :class:`npvae_tf.runs.lock.RunLock` is held for the whole run.
* Nothing is half-written: every file goes to a temporary name and is renamed.
* Exact resume: after each epoch, in this order, the epoch's row is appended to
  ``training_log.csv``, ``best.keras`` is updated, and then the resume state
  (:class:`ResumeState`: every model variable, including the random generators' states, and
  every optimizer variable) is written and recorded (the callbacks:
  :mod:`npvae_tf.training.callbacks`). A rerun restarts at the first epoch the state does not
  hold, drops log rows of later epochs, and (each epoch's data order being a
  function of the seed and the epoch) continues exactly as an uninterrupted run would.
* Finishing in order: ``model.keras``, ``reference_set.npz``, ``test_metrics.json`` (seeded,
  so a rerun computes the same numbers), ``fit_summary.json``, and only then is ``backup/``
  removed; a kill at any instant leaves a folder that a rerun completes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Callable, Dict, Optional, Sequence

from npvae_tf.core.backend import keras
import numpy as np
from npvae_tf.core.backend import tf

from npvae_tf.core.config import Config, ConfigError
from npvae_tf.data.pipeline import evaluation_images, make_dataset, steps_per_epoch
from npvae_tf.data.datasets import load_for_config
from npvae_tf.training.distribute import worker_dir, worker_identity
from npvae_tf.model.estimates import elbo_summary
from npvae_tf.model.vae import build_model
from npvae_tf.model.optimizers import FusedAdam
from npvae_tf.core.files import atomic_write, write_json
from npvae_tf.runs.reference import build_reference_set, compact_images
from npvae_tf.runs.x_density import XDensity
from npvae_tf.training.callbacks import Progress, ResumeState, callbacks_for
from npvae_tf.runs.layout import (BACKUP_DIR, LOG_FILE, LOGS_DIR, MODEL_FILE, TEST_METRICS_FILE,
                                  NEIGHBOUR_GRAPH_FILE, RunError, check_data, check_for_training,
                                  is_run, record_data)
from npvae_tf.runs.lock import RunLock
from npvae_tf.core.seeds import stream_seed
from npvae_tf.training.summaries import MODEL_LOGS, ModelSummaries


class TrainingError(RuntimeError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


def _strategy_name(strategy) -> str:
    name = type(strategy).__name__
    return "default strategy" if name.startswith("_Default") else name


def startup_block(config: Config, run_dir: str, initial_epoch: int, data, model,
                  strategy) -> str:
    """What a run is about to do, before its first epoch: folder, data, model, devices."""
    state = (f"resumed at epoch {initial_epoch + 1} of {config.epochs}" if initial_epoch
             else f"new, {config.epochs} epochs")
    try:
        params = f"{model.count_params():,} parameters"
    except ValueError:  # not built yet
        params = "parameters counted once built"
    kind = "npVAE" if config.model == "npvae" else "VAE"
    x = f", X {config.x_dim}-D" if config.model == "npvae" else ""
    gpus = tf.config.list_logical_devices("GPU")
    devices = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    return "\n".join([
        f"run folder  {os.path.abspath(run_dir)} ({state})",
        f"data        {data.source}: {len(data.train.images):,} train / "
        f"{len(data.validation.images):,} validation / {len(data.test.images):,} test examples "
        f"of shape {'x'.join(map(str, data.image_shape))}",
        f"model       {kind}, scheme {_scheme(config)}, Z {config.z_dim}{x}, "
        f"batch {config.batch_size}; {params}",
        f"device      {devices}, {_strategy_name(strategy)} "
        f"({strategy.num_replicas_in_sync} replica(s))",
    ])


def _scheme(config: Config) -> str:
    """``umap-landmark (npVAE: neighbour 1, landmarks 1, match 0)``: the name and what it is."""
    name = config.scheme_name
    return f"{name} ({config.scheme})" if name else config.scheme


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """The optimizer training compiles with (``benchmarks/bench_train.py`` measures it)."""
    return FusedAdam(config.learning_rate)


def fit_run(config: Config, run_dir: str, data=None, verbose: int = 1,
            extra_callbacks: Sequence[keras.callbacks.Callback] = (),
            strategy: Optional[tf.distribute.Strategy] = None,
            log: Callable[[str], None] = print) -> Dict[str, float]:
    """Trains, resumes or finishes the run ``config`` describes in ``run_dir``; test metrics.

    ``data``: where the data comes from (a path, a :class:`~npvae_tf.data.datasets.DataSpec`,
    arrays as :class:`~npvae_tf.data.sources.RawData`; None: MNIST), see
    :func:`npvae_tf.data.datasets.load_data`.

    Holds the run folder's lock throughout (a second process gets
    :class:`npvae_tf.runs.layout.RunLockedError` at once). ``verbose``: 0 prints nothing, 1 one
    line per epoch and the resume message, 2 also a live line on a terminal.
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
    # Another config's folder, or a folder that is not a run: refuse before touching it.
    finished = check_for_training(config, run_dir)
    RunLock(own_dir).check_free()  # a busy folder: refuse before loading the data
    # The data is found and read before the run folder (and its lock) is created, so a
    # data error leaves nothing behind.
    spec, data = data, None if finished else load_for_config(data, config)
    try:
        lock = RunLock(own_dir).acquire()
    except OSError as e:
        raise RunError(f"{own_dir}: cannot create the run folder ({e.strerror or e})") from None
    try:
        return _train_locked(config, run_dir, own_dir, chief, spec, verbose,
                             extra_callbacks, strategy, log if verbose else (lambda _: None),
                             data)
    finally:
        lock.release()


def _remove_stale_temporaries(*folders: str) -> None:
    """Removes ``.tmp-*`` files a killed process left mid-write (see ``files.atomic_write``).

    Safe: it runs under the run's lock, so no live process is writing them.
    """
    for folder in folders:
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                path = os.path.join(folder, name)
                if name.startswith(".tmp-") and os.path.isfile(path):
                    os.remove(path)


def _train_locked(config, run_dir, own_dir, chief, spec, verbose, extra_callbacks,
                  strategy, log, data=None):
    backup_dir = os.path.join(own_dir, BACKUP_DIR)
    _remove_stale_temporaries(own_dir, backup_dir)
    if check_for_training(config, run_dir):  # finished, perhaps but for removing the backup
        shutil.rmtree(backup_dir, ignore_errors=True)
        with open(os.path.join(run_dir, TEST_METRICS_FILE)) as f:
            return json.load(f)
    if data is None:  # finished when checked, unfinished now (a folder copied in?)
        data = load_for_config(spec, config)
    if chief and not is_run(run_dir):
        config.save(run_dir)
    if chief:  # evaluate.py finds (and checks) the data by this record
        try:
            check_data(run_dir, data.sha256, data.source)
        except RunError as e:
            raise ConfigError(str(e)) from None
        record_data(run_dir, data.provenance)
    model_path = os.path.join(own_dir, MODEL_FILE)
    if os.path.isfile(model_path):
        # Fitting finished in an earlier, interrupted invocation: only the last steps remain.
        log(f"resuming {run_dir}: all {config.epochs} epochs done; finishing the run")
        model = keras.saving.load_model(model_path)
    else:
        model = _fit(config, data, run_dir, own_dir, chief, strategy, verbose, extra_callbacks,
                     log)
        if config.fits_x_path_decoder:  # part of the model: done before model.keras
            _fit_own_x_path_decoder(config, model, data, log)
        atomic_write(model_path, model.save)
    if chief:
        # The model trained on (and evaluation uses) binarised images with --binarize: so
        # are the reference set's embeddings and the validation images that choose its
        # serving lengthscale.
        train_images = evaluation_images(data.train.images, config.binarize, config.seed,
                                         "train")
        validation_images = evaluation_images(data.validation.images, config.binarize,
                                              config.seed, "validation")
        started = time.time()
        reference = build_reference_set(model, train_images, data.train.labels,
                                        validation_images)
        if model.has_x and config.placement == "neighbours":  # what places new examples
            stored, scale = compact_images(train_images)
            reference = dataclasses.replace(reference, images=stored, images_scale=scale)
        reference.save(run_dir)
        log(f"reference set: E[z] of the {len(train_images):,} training images"
            f"{' and the serving lengthscale' if reference.x is not None else ''} "
            f"({time.time() - started:.1f} s)")
        if reference.x is not None:
            # Fitted once, here: evaluation and the export both sample it.
            XDensity.fit(reference.x, config.seed).save(run_dir)
        test_images = evaluation_images(data.test.images, config.binarize, config.seed)
        started = time.time()
        metrics = elbo_summary(model, test_images, config.batch_size,
                               seed=stream_seed(config.seed, "test_metrics"))
        log(f"test metrics on {len(test_images):,} images ({time.time() - started:.1f} s)")
        if model.has_x:
            metrics["lengthscale"] = float(model.kernel.lengthscale.numpy())
            metrics["serving_lengthscale"] = reference.lengthscale
        write_json(os.path.join(run_dir, TEST_METRICS_FILE), metrics)  # marks the run finished
    else:
        metrics = {}
    shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


def _fit_own_x_path_decoder(config, model, data, log):
    """The X path's own decoder, fitted on leave-one-out averages at the lengthscale the
    VAE's decoder serves best (seeded: a rerun after a kill refits it identically)."""
    from npvae_tf.runs.reference import ReferenceSet, encode_means, select_serving_lengthscale
    from npvae_tf.training.xpath_decoder import fit_x_path_decoder

    train_images = evaluation_images(data.train.images, config.binarize, config.seed, "train")
    z_mean, x = encode_means(model, train_images)
    reference = ReferenceSet(z_mean=z_mean, labels=data.train.labels, x=x)
    lengthscale, _ = select_serving_lengthscale(
        model, reference, evaluation_images(data.validation.images, config.binarize,
                                            config.seed, "validation"), shared_decoder=True)
    fit_x_path_decoder(model, train_images, x, z_mean, lengthscale, config.x_path_decoder_epochs,
                       config.batch_size, config.seed, config.learning_rate, log)


def _fit(config, data, run_dir, own_dir, chief, strategy, verbose, extra_callbacks, log):
    """Builds the model in the strategy's scope, restores the resume state, fits."""
    keras.utils.set_random_seed(config.seed)
    backup = ResumeState(os.path.join(own_dir, BACKUP_DIR))
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=make_optimizer(config), jit_compile=config.jit_compile)
        initial_epoch = backup.restore(model)
    if initial_epoch:
        log(f"resuming {run_dir} from epoch {initial_epoch + 1} of {config.epochs} "
            f"({initial_epoch} done)")
    log(startup_block(config, run_dir, initial_epoch, data, model, strategy))
    # With several replicas every batch is full, so it splits evenly.
    even = strategy.num_replicas_in_sync > 1
    # Fit resumes at this epoch; the data must start there too (each epoch's order depends
    # on (seed, epoch) only, so a resumed run sees the same batches).
    graph = None
    if config.uses_neighbour_graph:  # the umap schemes: the graph the run was started with
        from npvae_tf.data.neighbour_graph import graph_for_run, graph_key

        key = graph_key(data.sha256, config.n_neighbors, config.min_dist, config.seed,
                        config.x_dim if config.landmark_weight > 0 else 0)
        graph = graph_for_run(os.path.join(own_dir, NEIGHBOUR_GRAPH_FILE), data.train.images,
                              key, log)
    train_ds = make_dataset(data.train.images, config.batch_size, shuffle=True,
                            seed=config.seed, binarize=config.binarize, drop_remainder=even,
                            first_epoch=initial_epoch, epochs=config.epochs, neighbours=graph)
    val_ds = make_dataset(data.validation.images, config.batch_size,
                          seed=stream_seed(config.seed, "validation_binarize"),
                          binarize=config.binarize, drop_remainder=even)
    if chief:  # what the model does, per epoch, in TensorBoard (npvae_tf/training/summaries.py)
        extra_callbacks = [*extra_callbacks, ModelSummaries(
            os.path.join(run_dir, LOGS_DIR, MODEL_LOGS), data.validation.images,
            config.image_shape, stream_seed(config.seed, "summaries"))]
    progress = None
    if verbose:
        live = verbose > 1 and sys.stdout.isatty()
        progress = Progress(config.epochs, steps_per_epoch(len(data.train.images),
                                                           config.batch_size, even), live)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, shuffle=False,
                        initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch(len(data.train.images),
                                                        config.batch_size, even),
                        callbacks=callbacks_for(run_dir, own_dir, chief, initial_epoch,
                                                extra_callbacks, progress),
                        verbose=0)
    losses = history.history.get("loss", [])
    if losses and not np.all(np.isfinite(losses)):
        raise TrainingError(f"training diverged (loss {losses[-1]}); see {run_dir}/{LOG_FILE}")
    return model


def format_metrics(metrics: Dict[str, float]) -> str:
    lines = [f"test ELBO {metrics['elbo']:.2f} nats  (reconstruction at a sample "
             f"{metrics['reconstruction']:.2f}, at the mean {metrics['reconstruction_at_mean']:.2f}, "
             f"KL {metrics['kl']:.2f})"]
    if "match" in metrics:
        serving = metrics.get("serving_lengthscale")
        lines.append(f"match ||E[z] - z~||^2 {metrics['match']:.3f}, lengthscale "
                     f"{metrics.get('lengthscale', float('nan')):.4g} (serving "
                     f"{float('nan') if serving is None else serving:.4g})")
    if "x_path" in metrics:
        lines.append(f"X path -log p(y|z~) within test batches {metrics['x_path']:.2f} nats")
    return "\n".join(lines)
