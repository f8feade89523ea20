"""Writing a run's SavedModel (:class:`~npvae_tf.serving.module.ServingModule`) atomically.

``export_run(RUN, DIR)`` loads a finished run, builds its serving module and writes the
SavedModel into ``DIR``: into a temporary sibling first, renamed onto ``DIR`` once complete,
so an interrupted export leaves the earlier one (or nothing), never half a SavedModel; a
folder that is not an earlier export is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

from npvae_tf.runs.reference import DEFAULT_CHUNK_SIZE, ReferenceSet
from npvae_tf.runs.x_density import XDensity, x_density_for
from npvae_tf.serving.module import INFO_FILE, ExportError, ServingModule


# --- writing -------------------------------------------------------------------------------
def is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def atomic_write_dir(path: str, write) -> None:
    """Calls ``write(tmp_dir)`` then renames ``tmp_dir`` onto ``path``.

    An existing ``path`` is moved aside first and deleted only once the new folder is in
    place; if anything fails, ``path`` is left as it was and the temporary folder removed.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
    aside = None
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a server may be another user
        if os.path.lexists(path):
            aside = tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent)
            os.rename(path, os.path.join(aside, name))
            try:
                os.rename(tmp, path)
            except OSError:
                os.rename(os.path.join(aside, name), path)
                raise
        else:
            os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and os.path.exists(path):
            shutil.rmtree(aside, ignore_errors=True)


# What an export writes at the top of its folder (TensorFlow's SavedModel files, then ours).
EXPORT_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"}


def check_target(export_dir: str) -> None:
    """Refuses to replace anything but an empty folder or an earlier export of this program.

    An earlier export is a SavedModel holding ``assets.extra/npvae_export.json`` (which only
    :func:`export_model` writes) and nothing beside what an export writes: a SavedModel of
    someone else's, or one with a user's file added, is never deleted.
    """
    from npvae_tf.runs.layout import describe_entries

    if not os.path.lexists(export_dir):
        return
    if not os.path.isdir(export_dir) or os.path.islink(export_dir):
        raise ExportError(f"{export_dir} exists and is not a folder; choose another --out")
    names = os.listdir(export_dir)
    if not names:
        return
    if not is_saved_model(export_dir):
        raise ExportError(f"{export_dir} exists and is not a SavedModel; refusing to replace it "
                          f"(holds {describe_entries(export_dir, names)})")
    if not os.path.isfile(os.path.join(export_dir, INFO_FILE)):
        raise ExportError(f"{export_dir} holds a SavedModel export.py did not write (no "
                          f"{INFO_FILE}); refusing to replace it: choose another --out")
    foreign = sorted(set(names) - EXPORT_ENTRIES)
    if foreign:
        raise ExportError(f"{export_dir} holds files an export does not write "
                          f"({describe_entries(export_dir, foreign)}); refusing to replace it: "
                          "move them or choose another --out")


def export_model(model, export_dir: str, reference: Optional[ReferenceSet] = None, *,
                 density: Optional[XDensity] = None, lengthscale: Optional[float] = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, jit_compile: bool = False,
                 extra_info: Optional[dict] = None, indexed: bool = True) -> str:
    """Writes the SavedModel of ``model`` to ``export_dir`` atomically; returns its path.

    ``density``, ``lengthscale``, ``chunk_size``, ``jit_compile``: see :class:`ServingModule`.
    """
    check_target(export_dir)
    module = ServingModule(model, reference, density=density, lengthscale=lengthscale,
                           chunk_size=chunk_size, jit_compile=jit_compile, indexed=indexed)
    info = {**module.info(), **(extra_info or {})}
    archive = module.archive()

    def write(tmp):
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, os.path.dirname(INFO_FILE)), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write_dir(export_dir, write)
    return os.path.abspath(export_dir)


def load_exportable(run_dir: str):
    """``(config, model, reference)`` of a finished run folder (reference ``None`` for a VAE).

    :func:`npvae_tf.runs.load.load_run` checks and loads the folder; its errors come back as
    :class:`ExportError`.
    """
    from npvae_tf.runs.layout import RunError
    from npvae_tf.runs.load import load_run

    try:
        run = load_run(run_dir)
    except RunError as e:
        raise ExportError(str(e)) from None
    return run.config, run.model, (run.reference if run.has_x else None)


def export_run(run_dir: str, export_dir: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               jit_compile: bool = False) -> str:
    """Exports the final model (``model.keras``) of ``run_dir`` with its reference set, the
    density over X training stored, and the serving lengthscale.

    Raises :class:`ExportError` or :class:`~npvae_tf.config.ConfigError` with a one-line
    message for a folder that is not a finished run, or an unsafe ``export_dir``.
    """
    check_target(export_dir)
    config, model, reference = load_exportable(run_dir)
    density = None
    if reference is not None:
        try:
            density = x_density_for(run_dir, reference.x, config.seed)
        except ValueError as e:
            raise ExportError(str(e)) from None
    return export_model(model, export_dir, reference, density=density,
                        chunk_size=chunk_size, jit_compile=jit_compile,
                        extra_info={"run_dir": os.path.abspath(run_dir),
                                    "config": config.to_dict()})
