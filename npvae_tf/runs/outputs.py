"""Output folders a command writes into: checked before any work, never a user's files.

A command refuses a folder it cannot write, or one holding files it did not write (its marker
file says which folders it made), with one line naming the folder.
"""

from __future__ import annotations

import os

from npvae_tf.runs.layout import RunError, describe_entries


def check_writable(path: str, what: str = "output folder") -> None:
    """Fails at once, with one line, if ``path`` cannot be created or written.

    Finds ``path`` or its nearest existing ancestor, checks it is a folder the process may
    write, on a file system that is mounted read-write and stores files (``/proc`` and
    ``/sys`` report no blocks; ``os.access`` alone says yes to root there and on a read-only
    mount). Writes nothing: a folder a user owns keeps its contents and its mtime. Call it
    before any long work.
    """
    path = os.path.abspath(path)
    target = path
    while not os.path.exists(target):
        target = os.path.dirname(target)
    if not os.path.isdir(target):
        if target == path:
            raise RunError(f"{path}: {what} exists and is not a folder")
        raise RunError(f"{path}: cannot create the {what}: {target} is not a folder")
    fs = os.statvfs(target)
    problem = ("permission denied" if not os.access(target, os.W_OK | os.X_OK)
               else "read-only file system" if fs.f_flag & os.ST_RDONLY
               else "not a file system that stores files" if fs.f_blocks == 0 else None)
    if problem:
        raise RunError(f"{path}: cannot write the {what} in {target} ({problem})")


def check_output_folder(path: str, marker: str, program: str, owned: bool = False) -> None:
    """Refuses (:class:`RunError`, one line naming the folder and what it holds) to write
    into ``path`` unless it is absent, empty, holds ``marker`` (the program wrote there
    before: :func:`mark_output_folder`), or is ``owned`` (e.g. a run folder's own ``eval/``).
    So a program never overwrites a file it did not write."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise RunError(f"{path} exists and is not a folder; choose another --out")
    names = os.listdir(path)
    if not names or marker in names or owned:
        return
    raise RunError(f"{path} holds files {program} did not write ({describe_entries(path, names)}; "
                   f"no {marker}); choose a new or empty --out")


def mark_output_folder(path: str, marker: str, program: str) -> None:
    """Creates ``path`` and leaves ``marker`` in it: the folder is the program's output."""
    os.makedirs(path, exist_ok=True)
    marker_path = os.path.join(path, marker)
    if not os.path.exists(marker_path):
        with open(marker_path, "w") as f:
            f.write(f"written by {program} (npvae_tf); it writes into this folder again only "
                    "while this file is here\n")
