"""Files that are never half-written: write under a temporary name, then rename.

An interrupted process (even SIGKILL) leaves either the old file or the new one, never a
truncated mix, so nothing a user saved is lost.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable


def atomic_write(path: str, write: Callable[[str], Any]) -> None:
    """Calls ``write(tmp_path)`` then renames onto ``path``.

    The temporary name keeps the extension (Keras and NumPy check it).
    """
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _json_default(value):
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str, values) -> None:
    write_text(path, json.dumps(values, indent=2, sort_keys=True, default=_json_default) + "\n")
