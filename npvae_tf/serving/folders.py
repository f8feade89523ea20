"""SavedModel folders on disk, without TensorFlow: what an export writes, whether a folder may
be replaced (checked before any work), and the atomic replacement itself."""

from __future__ import annotations

import os
import shutil
import tempfile

INFO_FILE = os.path.join("assets.extra", "npvae_export.json")


class ExportError(ValueError):
    """A run cannot be exported (missing or inconsistent files, unsafe target)."""


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
