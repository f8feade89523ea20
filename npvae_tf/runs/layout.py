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
import hashlib
import json
import os
from typing import Dict, List, Optional

from npvae_tf.core.config import CONFIG_FILE, Config, ConfigError

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
# evaluate.py's mark on a folder it writes into: it writes again only where it finds it.
EVAL_MARKER = ".npvae-evaluate"
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


def _shown(path: str) -> str:
    """``path`` as an error names it: as given, and where it is when given relative
    (``runs/quick (/home/me/runs/quick)``), so a message says where it looked."""
    full = os.path.abspath(path)
    return path if os.path.normpath(path) == full else f"{path} ({full})"


def read_config(path: str) -> Config:
    """The run's Config; a folder without one, or with an unusable one, raises RunError."""
    if not os.path.exists(path):
        raise RunError(f"{_shown(path)}: no such run folder")
    if not os.path.isdir(path):
        raise RunError(f"{_shown(path)}: not a folder")
    if not is_run(path):
        raise RunError(f"{_shown(path)}: not a run folder (no {CONFIG_FILE})")
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


def _is_own_entry(folder: str, name: str) -> bool:
    """Whether ``folder/name`` is something training puts in a run folder before its
    ``config.json``: the lock file, or a worker's own folder (``worker-<i>/``, see
    :func:`npvae_tf.distribute.worker_dir`) that holds the lock."""
    if name == LOCK_FILE:
        return True
    return (name.startswith("worker-") and name[len("worker-"):].isdigit()
            and os.path.isfile(os.path.join(folder, name, LOCK_FILE)))


def describe_entries(folder: str, names: List[str], limit: int = 4) -> str:
    """``notes.txt, logs/, backup/ and 2 more``: what a folder holds, in one short phrase."""
    names = sorted(names)
    shown = [n + ("/" if os.path.isdir(os.path.join(folder, n)) else "") for n in names[:limit]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def check_for_training(config: Config, path: str) -> bool:
    """Before training ``config`` into ``path``: True if the run there is already finished.

    Training writes only into a folder that is absent, empty, or a run folder whose
    ``config.json`` agrees with ``config``: any other folder (a user's own files, another
    configuration's run) is refused with :class:`RunError`, naming what it holds, before
    anything is written or deleted there.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunError(f"{path} exists and is not a folder; choose another --out")
    if not is_run(path):
        if os.path.isdir(path):
            foreign = [n for n in os.listdir(path) if not _is_own_entry(path, n)]
            if foreign:
                raise RunError(f"{path} is not a run folder and not empty (holds "
                               f"{describe_entries(path, foreign)}); training writes only into "
                               "a new or empty folder or its own run folder: choose another "
                               "--out")
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
    """Writes ``data.json``: ``provenance`` (:attr:`npvae_tf.data.datasets.Dataset.provenance`) with a
    file source made absolute, so evaluation finds the data again from any folder."""
    from npvae_tf.core.files import write_json

    source = provenance["source"]
    data_file = os.path.join(path, DATA_FILE)
    named = source.startswith(("keras.", "sklearn:"))  # a data set's name, not a file
    write_json(data_file, {**provenance, "source": source if named
                           else os.path.abspath(source)})
    return data_file

