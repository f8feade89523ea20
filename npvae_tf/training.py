"""Training a run: data, model, callbacks, resume, and the order a run folder is written in.

The run folder's layout is :mod:`npvae_tf.runs`. What training guarantees:

* One process per run folder: :class:`npvae_tf.runs.RunLock` is held for the whole run.
* Nothing is half-written: every file goes to a temporary name and is renamed.
* Exact resume: after each epoch, in this order, the epoch's row is appended to
  ``training_log.csv``, ``best.keras`` is updated, and then the resume state
  (:class:`ResumeState`: every model variable, including the random generators' states, and
  every optimizer variable) is written and recorded. A rerun restarts at the first epoch the
  state does not hold, drops log rows of later epochs, and (each epoch's data order being a
  function of the seed and the epoch) continues exactly as an uninterrupted run would.
* Finishing in order: ``model.keras``, ``reference_set.npz``, ``test_metrics.json`` (seeded,
  so a rerun computes the same numbers), ``fit_summary.json``, and only then is ``backup/``
  removed; a kill at any instant leaves a folder that a rerun completes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from npvae_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow loads: none of its start-up lines (npvae_tf/quiet.py)
import keras
import numpy as np
import tensorflow as tf

from npvae_tf.config import Config, ConfigError
from npvae_tf.data import evaluation_images, load_mnist, make_dataset, steps_per_epoch
from npvae_tf.distribute import worker_dir, worker_identity
from npvae_tf.metrics import elbo_summary
from npvae_tf.model import build_model
from npvae_tf.optimizers import FusedAdam
from npvae_tf.files import atomic_write, write_json, write_text
from npvae_tf.reference import build_reference_set
from npvae_tf.sampling import XDensity
from npvae_tf.runs import DATA_FILE
from npvae_tf.runs import (BACKUP_DIR, BEST_FILE, FIT_FILE, LOG_FILE, LOGS_DIR,  # noqa: F401
                           METRICS_FILE, MODEL_FILE, RunError, RunLock, check_for_training)
from npvae_tf.seeds import stream_seed
from npvae_tf.summaries import MODEL_LOGS, ModelSummaries


class TrainingError(RuntimeError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


# --- resume state ------------------------------------------------------------------------------

class ResumeState(keras.callbacks.Callback):
    """The state a run resumes from, written after every epoch: ``backup/``.

    Keras' ``save_weights`` (and so ``BackupAndRestore``) leaves out the random generators'
    states (``SeedGenerator`` variables are in ``layer.variables`` but not in what a layer
    saves), so a resumed run would redraw its first epochs' noise and dropout masks. This
    saves *every* variable of the model (weights, generator states, the kernel's lengthscale)
    and of the optimizer (step count, moments) by position, as one ``.npz``.

    Atomic: each epoch's arrays go to a new file (temporary name, then rename), and only then
    does ``backup.json``, replaced in one step, point at them; older files are then removed.
    The backup is removed by :func:`train` once the run is finished, not at the end of fit
    (Keras' ``BackupAndRestore`` removes it before the final model is saved).
    """

    META = "backup.json"

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup_dir = backup_dir

    @classmethod
    def saved_epoch(cls, backup_dir: str) -> int:
        """Epochs finished according to the backup in ``backup_dir`` (0 if none)."""
        meta = cls._read_meta(backup_dir)
        return int(meta["epoch"]) if meta else 0

    @classmethod
    def _read_meta(cls, backup_dir: str) -> Optional[dict]:
        path = os.path.join(backup_dir, cls.META)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    @staticmethod
    def _variables(model) -> List:
        return list(model.variables) + list(model.optimizer.variables)

    def restore(self, model) -> int:
        """Loads the backup into ``model`` (compiled; builds its optimizer); the epoch."""
        meta = self._read_meta(self.backup_dir)
        if not meta:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = self._variables(model)
        path = os.path.join(self.backup_dir, meta["state"])
        with np.load(path) as arrays:
            if len(arrays.files) != len(variables):
                raise RunError(f"{path}: {len(arrays.files)} arrays for {len(variables)} "
                               "variables; the backup does not fit this model")
            for i, variable in enumerate(variables):
                value = arrays[f"v{i}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise RunError(f"{path}: variable {i} ({variable.path}) has shape "
                                   f"{tuple(variable.shape)}, the backup {value.shape}")
                variable.assign(value)
        return int(meta["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"state-{epoch + 1}.npz"
        arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(self._variables(self.model))}
        atomic_write(os.path.join(self.backup_dir, name), lambda tmp: np.savez(tmp, **arrays))
        write_json(os.path.join(self.backup_dir, self.META), {"epoch": epoch + 1, "state": name})
        for old in os.listdir(self.backup_dir):  # older epochs are no longer pointed at
            if old.startswith("state-") and old != name:
                os.remove(os.path.join(self.backup_dir, old))


class EpochLog(keras.callbacks.Callback):
    """``training_log.csv``: one row per finished epoch, exact values (``repr`` of floats).

    Written before the resume state, so no finished epoch is missing from the log. On
    resume at epoch ``k`` the rows of epochs ``>= k`` (written by an epoch whose state was
    never saved; the resumed run writes them again, with the same values) and any torn last
    line are dropped first, so the log equals that of an uninterrupted run.
    """

    def __init__(self, path: str, initial_epoch: int = 0):
        super().__init__()
        self.path, self.initial_epoch = path, initial_epoch
        self.keys: Optional[List[str]] = None

    def on_train_begin(self, logs=None):
        if not os.path.isfile(self.path):
            return
        with open(self.path, newline="") as f:
            text = f.read()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]  # torn by a kill mid-write
        rows = list(csv.reader(lines))
        if not rows:
            return
        header, kept = rows[0], [rows[0]]
        self.keys = header[1:]
        for row in rows[1:]:
            if len(row) == len(header) and row[0].isdigit() and int(row[0]) < self.initial_epoch:
                kept.append(row)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        if out.getvalue() != text:
            write_text(self.path, out.getvalue())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            with open(self.path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(["epoch"] + self.keys)
        values = [repr(float(logs[k])) if k in logs else "" for k in self.keys]
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow([str(epoch)] + values)
        with open(self.path, "a", newline="") as f:  # one write: a line is whole or torn
            f.write(line.getvalue())
            f.flush()
            os.fsync(f.fileno())


class FitTimer(keras.callbacks.Callback):
    """``fit_summary.json``: the seconds each finished epoch took, over every invocation.

    Written with the epoch's log row, before its resume state; on resume at epoch ``k`` the
    times of epochs ``>= k`` are dropped (they are redone), as in :class:`EpochLog`.
    """

    def __init__(self, path: str, initial_epoch: int = 0):
        super().__init__()
        self.path, self.initial_epoch = path, initial_epoch
        self.seconds: List[float] = []

    def on_train_begin(self, logs=None):
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.seconds = list(json.load(f).get("epoch_seconds", []))[:self.initial_epoch]

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.time() - self.started)
        total = float(sum(self.seconds))
        write_json(self.path, {"train_seconds": total, "epochs_timed": len(self.seconds),
                               "seconds_per_epoch": total / len(self.seconds),
                               "epoch_seconds": self.seconds})


class Progress(keras.callbacks.Callback):
    """Progress in at most ``width`` (100) columns.

    One plain line per epoch (epoch, losses, time). With ``live`` (an interactive terminal)
    also a single line rewritten in place during the epoch, cut to the terminal's width so
    it never wraps and leaves stale rows.
    """

    def __init__(self, epochs: int, steps: Optional[int], live: bool, stream=None,
                 width: int = 100):
        super().__init__()
        self.epochs, self.steps, self.live = epochs, steps, live
        self.stream = stream or sys.stdout
        self.width = width
        self._shown = 0
        self._last_draw = 0.0

    def _columns(self) -> int:
        if not self.live:
            return self.width
        return max(20, min(self.width, shutil.get_terminal_size((self.width, 24)).columns - 1))

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def on_train_begin(self, logs=None):
        self._train_start, self._epochs_done = time.time(), 0

    def _eta(self, epochs_left: int) -> str:
        """Time remaining at this invocation's mean epoch time (with validation)."""
        done = getattr(self, "_epochs_done", 0)
        if not done or not hasattr(self, "_train_start"):
            return "ETA ?"
        per_epoch = (time.time() - self._train_start) / done
        return f"ETA {_clock(per_epoch * epochs_left)}"

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._epoch_start = epoch, time.time()

    def on_train_batch_end(self, batch, logs=None):
        if not self.live or time.time() - self._last_draw < 0.25:
            return
        self._last_draw = time.time()
        logs = logs or {}
        steps = f"/{self.steps}" if self.steps else ""
        left = self.epochs - self._epoch_number() + 1 - (batch + 1) / (self.steps or 1e9)
        line = (f"epoch {self._epoch_number()}/{self.epochs}  batch {batch + 1}{steps}  "
                f"loss {logs.get('loss', float('nan')):.3f}  "
                f"{time.time() - self._epoch_start:.0f} s  {self._eta(left)}")[:self._columns()]
        self._write("\r" + line.ljust(self._shown))
        self._shown = len(line)

    def _epoch_number(self) -> int:
        return getattr(self, "_epoch", 0) + 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._epochs_done = getattr(self, "_epochs_done", 0) + 1
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        if "elbo" in logs:  # the ELBO (nats per image; higher is better), training/validation
            val = f"/{float(logs['val_elbo']):.2f}" if "val_elbo" in logs else ""
            parts.append(f"ELBO {float(logs['elbo']):.2f}{val}")
        # (log key, label, decimals): the loss's terms by name, then the kernel's diagnostics.
        for key, label, decimals in (("kl", "KL", 2), ("match", "match", 3),
                                     ("val_x_path", "X path", 2), ("lengthscale", "l", 3),
                                     ("lengthscale_over_x_std", "l/sd(x)", 2)):
            if key in logs:
                parts.append(f"{label} {float(logs[key]):.{decimals}f}")
        elapsed = time.time() - getattr(self, "_train_start", self._epoch_start)
        timing = (f"{time.time() - self._epoch_start:.1f} s  {_clock(elapsed)} "
                  f"{self._eta(self.epochs - epoch - 1)}")
        while parts and len("  ".join(parts + [timing])) > self.width:
            parts.pop()  # the diagnostics go first: the time always fits
        line = "  ".join(parts + [timing])[:self.width]
        if self.live and self._shown:
            line = "\r" + line.ljust(self._shown)
        self._shown = 0
        self._write(line + "\n")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
        f"{len(data.validation.images):,} validation / {len(data.test.images):,} test images",
        f"model       {kind}, scheme {config.scheme}, Z {config.z_dim}{x}, "
        f"batch {config.batch_size}; {params}",
        f"device      {devices}, {_strategy_name(strategy)} "
        f"({strategy.num_replicas_in_sync} replica(s))",
    ])


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
    """Refuses a folder made by another config (:class:`npvae_tf.runs.RunError`); True if
    the run already finished."""
    return check_for_training(config, run_dir)


def callbacks_for(run_dir: str, own_dir: str, chief: bool, initial_epoch: int = 0,
                  extra: Sequence[keras.callbacks.Callback] = (),
                  progress: Optional[keras.callbacks.Callback] = None):
    """The callbacks of fit, in the order their ``on_epoch_end`` must run.

    Logs and checkpoints (the chief's) come before the resume state (every worker's own), so
    a kill between them makes the rerun redo the epoch, never skip its log row; the
    progress line comes after it.
    """
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if chief:
        callbacks += [
            EpochLog(os.path.join(run_dir, LOG_FILE), initial_epoch),
            FitTimer(os.path.join(run_dir, FIT_FILE), initial_epoch),
            AtomicBestCheckpoint(os.path.join(run_dir, BEST_FILE)),
            keras.callbacks.TensorBoard(os.path.join(run_dir, LOGS_DIR), write_graph=False),
        ]
    callbacks += list(extra) + [ResumeState(os.path.join(own_dir, BACKUP_DIR))]
    # Last: an epoch's line is printed once its resume state is saved, so an interrupted
    # run has kept every epoch it reported.
    return callbacks + ([progress] if progress is not None else [])


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """The optimizer training compiles with (``benchmarks/bench_train.py`` measures it)."""
    return FusedAdam(config.learning_rate)


def train(config: Config, run_dir: str, data_dir: Optional[str] = None, verbose: int = 1,
          extra_callbacks: Sequence[keras.callbacks.Callback] = (),
          strategy: Optional[tf.distribute.Strategy] = None,
          log: Callable[[str], None] = print) -> Dict[str, float]:
    """Trains, resumes or finishes the run ``config`` describes in ``run_dir``; test metrics.

    Holds the run folder's lock throughout (a second process gets
    :class:`npvae_tf.runs.RunLockedError` at once). ``verbose``: 0 prints nothing, 1 one
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
    finished = check_run_dir(config, run_dir)
    RunLock(own_dir).check_free()  # a busy folder: refuse before loading the data
    # The data is found and read before the run folder (and its lock) is created, so a
    # data error leaves nothing behind.
    data = None if finished else load_mnist(data_dir, config.validation_examples,
                                            config.train_examples, config.image_shape)
    try:
        lock = RunLock(own_dir).acquire()
    except OSError as e:
        raise RunError(f"{own_dir}: cannot create the run folder ({e.strerror or e})") from None
    try:
        return _train_locked(config, run_dir, own_dir, chief, data_dir, verbose,
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


def _train_locked(config, run_dir, own_dir, chief, data_dir, verbose, extra_callbacks,
                  strategy, log, data=None):
    backup_dir = os.path.join(own_dir, BACKUP_DIR)
    _remove_stale_temporaries(own_dir, backup_dir)
    if check_run_dir(config, run_dir):  # finished, perhaps but for removing the backup
        shutil.rmtree(backup_dir, ignore_errors=True)
        with open(os.path.join(run_dir, METRICS_FILE)) as f:
            return json.load(f)
    if data is None:  # finished when checked, unfinished now (a folder copied in?)
        data = load_mnist(data_dir, config.validation_examples, config.train_examples,
                          config.image_shape)
    if chief and not os.path.isfile(os.path.join(run_dir, "config.json")):
        config.save(run_dir)
    if chief:  # evaluate.py finds (and checks) the data by this record
        data_file = os.path.join(run_dir, DATA_FILE)
        if os.path.isfile(data_file):
            with open(data_file) as f:
                before = json.load(f).get("sha256")
            if before and before != data.sha256:
                raise ConfigError(f"{run_dir} was trained on other data (sha256 "
                                  f"{before[:12]}...) than {data.source} (sha256 "
                                  f"{data.sha256[:12]}...); pass that data's --data_dir")
        write_json(data_file, {**data.provenance, "source": _absolute_source(data.source)})
    model_path = os.path.join(own_dir, MODEL_FILE)
    if os.path.isfile(model_path):
        # Fitting finished in an earlier, interrupted invocation: only the last steps remain.
        log(f"resuming {run_dir}: all {config.epochs} epochs done; finishing the run")
        model = keras.saving.load_model(model_path)
    else:
        model = _fit(config, data, run_dir, own_dir, chief, strategy, verbose, extra_callbacks,
                     log)
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
        if hasattr(model, "kernel"):
            metrics["lengthscale"] = float(model.kernel.lengthscale.numpy())
            metrics["serving_lengthscale"] = reference.lengthscale
        write_json(os.path.join(run_dir, METRICS_FILE), metrics)  # marks the run finished
    else:
        metrics = {}
    shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


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
    train_ds = make_dataset(data.train.images, config.batch_size, shuffle=True,
                            seed=config.seed, binarize=config.binarize, drop_remainder=even,
                            first_epoch=initial_epoch, epochs=config.epochs)
    val_ds = make_dataset(data.validation.images, config.batch_size,
                          seed=stream_seed(config.seed, "validation_binarize"),
                          binarize=config.binarize, drop_remainder=even)
    if chief:  # what the model does, per epoch, in TensorBoard (npvae_tf/summaries.py)
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


def _absolute_source(source: str) -> str:
    return source if source.startswith("keras.") else os.path.abspath(source)


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
