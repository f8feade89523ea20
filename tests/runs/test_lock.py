"""The per-run lock (npvae_tf/runs/lock.py): one training process per run folder."""

import os
import signal

import pytest

from npvae_tf.runs.layout import LOCK_FILE, RunLockedError
from npvae_tf.runs.lock import RunLock
from tests.helpers import start_holder


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_held_lock_refuses_at_once_and_a_dead_holder_frees_it(tmp_path, kill):
    folder = str(tmp_path / "run")
    holder = start_holder(folder)
    try:
        with pytest.raises(RunLockedError, match=rf"{folder} is in use by another training "
                                                 rf"process \(pid {holder.pid}\)"):
            RunLock(folder).acquire()
    finally:
        holder.send_signal(kill)
        holder.wait(timeout=60)
    with RunLock(folder) as lock:  # the dead holder's lock is gone; its file stays
        assert lock.holder() == os.getpid()
    assert os.path.isfile(os.path.join(folder, LOCK_FILE))


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    folder = str(tmp_path / "run")
    with RunLock(folder):
        with pytest.raises(RunLockedError):
            RunLock(folder).acquire()
    RunLock(folder).acquire().release()
