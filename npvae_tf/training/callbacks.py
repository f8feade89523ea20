"""The callbacks of training's fit: the per-epoch files of a run folder and the progress line.

Each writes one thing, atomically or in whole lines: :class:`EpochLog` (``training_log.csv``),
:class:`FitTimer` (``fit_summary.json``), :class:`AtomicBestCheckpoint` (``best.keras``),
:class:`ResumeState` (``backup/``); :class:`Progress` prints. :func:`callbacks_for` puts them
in the order exact resume needs (see :mod:`npvae_tf.training`).
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
from typing import List, Optional, Sequence

from npvae_tf.core.backend import keras
from npvae_tf.core.clock import hms
import numpy as np

from npvae_tf.core.files import atomic_write, write_json, write_text
from npvae_tf.runs.layout import BACKUP_DIR, BEST_FILE, FIT_FILE, LOG_FILE, LOGS_DIR, RunError


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
        if not model.optimizer.built:  # as training's first step builds it
            model.optimizer.build(getattr(model, "trained_variables", model.trainable_variables))
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
        return f"ETA {hms(per_epoch * epochs_left)}"

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
        # (log key, label, decimals): the loss's terms by name, then the kernel's diagnostics;
        # a term the objective weighs 0 (logged as a diagnostic) is not shown.
        objective = getattr(self.model, "objective", None)
        inactive = {"match"} if objective is not None and objective.match_weight == 0 else set()
        for key, label, decimals in (("kl", "KL", 2), ("match", "match", 3),
                                     ("neighbour", "neighbour", 3), ("landmark", "landmark", 3),
                                     ("val_x_path", "X path", 2), ("lengthscale", "l", 3),
                                     ("lengthscale_over_x_std", "l/sd(x)", 2)):
            if key in logs and key not in inactive:
                parts.append(f"{label} {float(logs[key]):.{decimals}f}")
        elapsed = time.time() - getattr(self, "_train_start", self._epoch_start)
        timing = (f"{time.time() - self._epoch_start:.1f} s  {hms(elapsed)} "
                  f"{self._eta(self.epochs - epoch - 1)}")
        while parts and len("  ".join(parts + [timing])) > self.width:
            parts.pop()  # the diagnostics go first: the time always fits
        line = "  ".join(parts + [timing])[:self.width]
        if self.live and self._shown:
            line = "\r" + line.ljust(self._shown)
        self._shown = 0
        self._write(line + "\n")


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
