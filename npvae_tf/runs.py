r"""Run folders: their layout, the one check, the one loader, the per-run lock, default names.

Every part of the project that reads or writes a run folder goes through this module, so the
layout is written down once. A run folder (``train.py --out RUN``)::

    config.json          the Config (enough to rebuild the model); written first
    data.json            the data trained on: source, sha256 of its arrays, name (MNIST)
    neighbour_graph.npz  umap scheme: the fuzzy k-NN graph of the training images (at start)
    .lock                held (``fcntl.flock``) by the one process training into the folder
    training_log.csv     one row per finished epoch                       \
    best.keras(.json)    the model at the best validation loss so far      } after every
    fit_summary.json     seconds of each finished epoch (all invocations)  } epoch, in
    backup/              resume state of the last finished epoch: model,  } this order
                         optimizer and random-generator states           /
    logs/                TensorBoard
    model.keras          the final model                       \\
    reference_set.npz    training-set E[z] (and x) with labels  |  written in this order
    x_density.npz        npVAE: the mixture over the training X  } when fitting ends; the
                         that sampling uses (sampling.XDensity) |  last one marks a
    test_metrics.json    seeded test-set metrics               /   finished run
    eval/                evaluate.py's outputs (default): metrics.json, figures, projector/

A folder is *a run* when it holds ``config.json``, and *finished* when it also holds
``model.keras``, ``reference_set.npz`` and ``test_metrics.json``. Importing this module does
not import TensorFlow (the command lines check folders before TensorFlow starts);
:func:`load_run` imports it when it loads a model.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
import os
from typing import Dict, List, Optional

from npvae_tf.config import CONFIG_FILE, Config, ConfigError

MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
REFERENCE_FILE = "reference_set.npz"
# Which data the run was trained on: source, sha256 of the arrays, "MNIST" or null.
DATA_FILE = "data.json"
X_DENSITY_FILE = "x_density.npz"
# The umap scheme: the fuzzy k-NN graph of the training images the run trains against.
NEIGHBOUR_GRAPH_FILE = "neighbour_graph.npz"
TEST_METRICS_FILE = "test_metrics.json"
FIT_FILE = "fit_summary.json"
LOG_FILE = "training_log.csv"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
LOCK_FILE = ".lock"
EVAL_DIR = "eval"
# evaluate.py's metrics of one run, in its output folder (default RUN/eval/).
EVAL_METRICS_FILE = "metrics.json"
# What a finished run holds; test_metrics.json is written last, after the other two.
FINISHED_FILES = (CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, TEST_METRICS_FILE)
DEFAULT_ROOT = "runs"


class RunError(ValueError):
    """A folder is not a (finished, consistent) run; the message names folder and problem."""


class RunLockedError(RunError):
    """Another live process holds the run folder's lock."""


# --- names and state ---------------------------------------------------------------------------

def config_digest(config: Config) -> str:
    """8 hex digits that identify a configuration (every field, in canonical JSON)."""
    text = json.dumps(config.digest_fields(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_run_dir(config: Config, root: str = DEFAULT_ROOT) -> str:
    """``root/MODEL-zZ-DIGEST``: the same configuration always names the same folder.

    So rerunning a command without ``--out`` finds its own run again: it resumes an
    interrupted run and does nothing for a finished one, instead of starting a new folder.
    """
    return os.path.join(root, f"{config.model}-z{config.z_dim}-{config_digest(config)}")


def is_run(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def is_finished(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in FINISHED_FILES)


def missing_files(path: str) -> List[str]:
    return [f for f in FINISHED_FILES if not os.path.isfile(os.path.join(path, f))]


def config_differences(a: Config, b: Config) -> List[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


def read_config(path: str) -> Config:
    """The run's Config; a folder without one, or with an unusable one, raises RunError."""
    if not os.path.exists(path):
        raise RunError(f"{path}: no such run folder")
    if not os.path.isdir(path):
        raise RunError(f"{path}: not a folder")
    if not is_run(path):
        raise RunError(f"{path}: not a run folder (no {CONFIG_FILE})")
    try:
        return Config.load(path)
    except (ConfigError, TypeError, OSError) as e:
        raise RunError(f"{path}: unusable {CONFIG_FILE} ({e})") from None


def check_run_dir(path: str, config: Optional[Config] = None, finished: bool = True) -> Config:
    """The one check of a run folder, fast and before any work; returns its Config.

    ``config``: the configuration the caller expects; a folder made by another raises
    (a run folder is never reused for a different configuration). ``finished``: also
    require the files of a finished run (for evaluation, export, loading).
    """
    found = read_config(path)
    if config is not None and found != config:
        raise RunError(f"{path} holds a run with a different config (differs in: "
                       f"{', '.join(config_differences(found, config))}); choose another --out")
    if finished:
        missing = missing_files(path)
        if missing:
            raise RunError(f"{path}: unfinished run, missing {', '.join(missing)} (training "
                           "was interrupted or is still going; rerun the same train.py "
                           "command to finish it)")
    return found


def check_for_training(config: Config, path: str) -> bool:
    """Before training ``config`` into ``path``: refuses another configuration's run folder
    (:class:`RunError`); True if the run there is already finished."""
    if not is_run(path):
        return False
    check_run_dir(path, config, finished=False)
    return is_finished(path)


def find_latest_run(root: str = DEFAULT_ROOT) -> str:
    """The *finished* run under ``root`` whose ``config.json`` was written last.

    Unfinished runs (interrupted, or training right now) are skipped: they cannot be
    evaluated, and picking one would hide the newest finished run.
    """
    candidates, unfinished = [], 0
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if not is_run(path):
                continue
            if not is_finished(path):
                unfinished += 1
                continue
            candidates.append((os.path.getmtime(os.path.join(path, CONFIG_FILE)), path))
    if not candidates:
        more = f" ({unfinished} unfinished)" if unfinished else ""
        raise RunError(f"no run folder given and no finished run found under {root}/{more}")
    return max(candidates)[1]


def read_training_log(path: str) -> Optional[Dict]:
    """``training_log.csv`` as column arrays (the last row of each epoch kept), or None."""
    import numpy as np

    if not os.path.isfile(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_epoch = {}
    for row in rows:
        try:
            by_epoch[int(row["epoch"])] = {k: float(v) for k, v in row.items()
                                           if v not in ("", None)}
        except (KeyError, ValueError, TypeError):
            continue
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    keys = sorted(set.intersection(*(set(by_epoch[e]) for e in epochs)))
    return {k: np.array([by_epoch[e][k] for e in epochs]) for k in keys}


# --- the data record ---------------------------------------------------------------------------

def recorded_data(path: str) -> Optional[Dict]:
    """The run's ``data.json`` (source, sha256, name), or None for runs from before it."""
    data_file = os.path.join(path, DATA_FILE)
    if not os.path.isfile(data_file):
        return None
    with open(data_file) as f:
        return json.load(f)


def check_data(path: str, sha256: str, source: str) -> Optional[Dict]:
    """Refuses data (``sha256``, from ``source``) other than the data the run in ``path``
    records (:class:`RunError`); returns the record (None for runs from before it)."""
    recorded = recorded_data(path)
    if recorded and recorded.get("sha256") and recorded["sha256"] != sha256:
        raise RunError(f"{path}: trained on other data ({recorded.get('source')}, sha256 "
                       f"{recorded['sha256'][:12]}...) than {source} (sha256 "
                       f"{sha256[:12]}...); pass that data's --data_dir")
    return recorded


def record_data(path: str, provenance: Dict) -> str:
    """Writes ``data.json``: ``provenance`` (:attr:`npvae_tf.data.Dataset.provenance`) with a
    file source made absolute, so evaluation finds the data again from any folder."""
    from npvae_tf.files import write_json

    source = provenance["source"]
    data_file = os.path.join(path, DATA_FILE)
    write_json(data_file, {**provenance, "source": source if source.startswith("keras.")
                           else os.path.abspath(source)})
    return data_file


# --- loading -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """A finished run loaded from its folder: config, final model, reference set, log."""

    path: str
    config: Config
    model: object                      # keras.Model (VAE or NonparametricVAE)
    reference: object                  # npvae_tf.reference.ReferenceSet
    log: Optional[Dict] = None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def has_x(self) -> bool:
        return self.config.has_x

    @property
    def space(self) -> Optional[str]:
        """The run's 2-D space: "X" (npVAE with 2-D X), "Z" (2-D VAE), or None."""
        if self.has_x:
            return "X" if self.config.x_dim == 2 else None
        return "Z" if self.config.z_dim == 2 else None

    @property
    def label(self) -> str:
        return f"{self.config.scheme} z_dim {self.config.z_dim}"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def consistency_problems(config: Config, model, reference) -> List[str]:
    """Where the model or reference set disagree with ``config.json`` (empty if none).

    Compares every setting the saved model records, so a folder holding one run's config
    and another run's weights is refused rather than used.
    """
    problems = []
    try:
        saved = model.get_config()  # the settings model.keras was built with
    except Exception:  # noqa: BLE001 - a foreign model: compare what can be compared
        saved = {}
    wanted = {"image_dim": config.image_dim, **config.to_dict()}
    if not config.has_x:  # a VAE has no X settings
        wanted = {k: v for k, v in wanted.items()
                  if k not in ("x_dim", "match_weight", "initial_lengthscale")
                  and not k.startswith("x_path")}
    for key, want in wanted.items():
        if key not in saved:
            continue
        got = tuple(saved[key]) if isinstance(saved[key], list) else saved[key]
        if got != want:
            problems.append(f"{key}: config {want}, model {got}")
    if config.has_x != getattr(model, "has_x", False):  # False too for a foreign model
        problems.append(f"config says {config.model!r}, model.keras holds "
                        f"{type(model).__name__}")
    if reference is not None:
        if reference.z_mean.shape[1:] != (config.z_dim,):
            problems.append(f"z_dim: config {config.z_dim}, reference set "
                            f"{reference.z_mean.shape[1]}")
        if config.has_x != (reference.x is not None):
            problems.append(f"config says {config.model!r} but the reference set "
                            f"{'has' if reference.x is not None else 'has no'} x")
        elif reference.x is not None and reference.x.shape[1:] != (config.x_dim,):
            problems.append(f"x_dim: config {config.x_dim}, reference set "
                            f"{reference.x.shape[1]}")
        if config.train_examples is not None and len(reference.labels) != config.train_examples:
            problems.append(f"train_examples: config {config.train_examples}, reference set "
                            f"{len(reference.labels)}")
    return problems


def load_run(path: str, compile: bool = False) -> Run:
    """Loads a finished run from its folder alone and checks that its parts agree.

    Raises :class:`RunError` with a one-line message for a missing, unfinished, unreadable
    or inconsistent folder.
    """
    config = check_run_dir(path)
    import zipfile

    import keras

    import npvae_tf.model  # noqa: F401  registers the classes model.keras names
    from npvae_tf.reference import ReferenceSet

    model_path = os.path.join(path, MODEL_FILE)
    try:
        model = keras.saving.load_model(model_path, compile=compile)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: Keras raises many types
        raise RunError(f"{model_path}: cannot load ({_first_line(e)})") from None
    try:
        reference = ReferenceSet.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{os.path.join(path, REFERENCE_FILE)}: cannot load the reference "
                       f"set ({_first_line(e)})") from None
    problems = consistency_problems(config, model, reference)
    if problems:
        raise RunError(f"{path}: inconsistent run folder: {'; '.join(problems)}")
    return Run(path, config, model, reference, read_training_log(os.path.join(path, LOG_FILE)))


# --- the lock ----------------------------------------------------------------------------------

class RunLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    ``fcntl.flock`` on ``RUN/.lock``: the operating system releases it when the holder exits
    in any way (also SIGKILL or a crash), so a lock left by a dead process never blocks a
    rerun. The file holds the holder's pid, which a refused process names. The file itself
    is never removed (removing it would let two processes lock two different files).

    Usage: ``with RunLock(run_dir): ...``; a held lock raises :class:`RunLockedError` at once.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def holder(self) -> Optional[int]:
        try:
            with open(self.path) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> "RunLock":
        import fcntl

        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = self.holder()
            raise RunLockedError(
                f"{self.run_dir} is in use by another training process"
                f"{f' (pid {pid})' if pid else ''}; wait for it to end, or choose another "
                "--out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# --- output locations --------------------------------------------------------------------------

def check_writable(path: str, what: str = "output folder") -> None:
    """Fails at once, with one line, if ``path`` cannot be created or written.

    Finds ``path`` or its nearest existing ancestor, checks it is a folder, and creates and
    removes a hidden probe file in it (``os.access`` is not enough: it says yes to root on a
    read-only file system). Creates nothing else; call it before any long work.
    """
    import tempfile

    path = os.path.abspath(path)
    target = path
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        if target == path:
            raise RunError(f"{path}: {what} exists and is not a folder")
        raise RunError(f"{path}: cannot create the {what}: {target} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".npvae-probe-", dir=target)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise RunError(f"{path}: cannot write the {what} in {target} "
                       f"({e.strerror or e})") from None
