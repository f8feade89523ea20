"""Importing TensorFlow without its start-up chatter; free of TensorFlow itself.

Used by the command lines (before they import TensorFlow) and by every module of the package
that imports TensorFlow or Keras, so the Python API is as quiet as ``train.py``.
"""

from __future__ import annotations

import os
import sys


# TensorFlow's start-up lines that say nothing a user must act on. They are printed by C++
# code while TensorFlow loads, before its logging is configured, so TF_CPP_MIN_LOG_LEVEL
# does not reach them: they are filtered out of what the import writes to stderr instead.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory", "computation placer already registered",
    "TensorRT",
)
# Said when the machine has no GPU; filtered only when TensorFlow indeed finds none.
NO_GPU_NOISE = ("failed call to cuInit",)


def quiet_tensorflow() -> None:
    """Imports TensorFlow without its start-up chatter (keeps every other line it prints).

    Must run before anything imports TensorFlow: sets ``TF_CPP_MIN_LOG_LEVEL=2`` (no INFO
    or WARNING lines from its C++ logging once configured; errors stay), then imports it and
    lists the GPUs (where CUDA reports a machine without one) with stderr sent to a file,
    and writes back every line that is not in :data:`STARTUP_NOISE` (or, on a machine
    without GPUs, :data:`NO_GPU_NOISE`). Listing GPUs does not initialise devices, so
    ``tf.distribute`` can still configure them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        except BaseException:
            gpus = None
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            noise = STARTUP_NOISE + (NO_GPU_NOISE if gpus == [] else ())
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(marker in line for marker in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()
