"""The per-run lock: one process trains into a run folder at a time.

Held with ``fcntl.flock`` on ``RUN/.lock`` (released by the kernel when the process dies, so
a killed run never leaves a stale lock).
"""

from __future__ import annotations

import errno
import os
from typing import Optional

from npvae_tf.runs.layout import LOCK_FILE, RunLockedError


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

    def _refuse(self) -> "RunLockedError":
        pid = self.holder()
        return RunLockedError(
            f"{self.run_dir} is in use by another training process"
            f"{f' (pid {pid})' if pid else ''}; wait for it to end, or choose another --out")

    def check_free(self) -> None:
        """Raises :class:`RunLockedError` if a live process holds the lock now; creates
        nothing. Cheap and free of TensorFlow, so a command line refuses a busy folder at
        once; :meth:`acquire` is still what excludes a second process."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody has trained here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise self._refuse() from None
        finally:
            os.close(fd)  # closing releases a lock this probe took

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
            raise self._refuse() from None
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
