"""Device placement with ``tf.distribute``: choosing a strategy and who writes the files.

``auto`` picks MultiWorkerMirroredStrategy when ``TF_CONFIG`` is set, MirroredStrategy with
more than one GPU (or with ``cpu_replicas > 1``), OneDeviceStrategy on one GPU, and the default
strategy on a CPU. Whatever the strategy, ``--batch_size`` is the *global* batch: the model
gathers x and E[z] over replicas so the kernel sees the whole global batch (see
``npvae_tf.model.layers.replica_all_gather``), and losses are divided by the global batch size.
"""

from __future__ import annotations

import json
import os

from npvae_tf.core.backend import tf

from npvae_tf.core.config import STRATEGIES



def split_cpu(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices (before TensorFlow initialises them),
    so multi-replica training can be tried on a machine without GPUs."""
    if replicas < 1:
        raise ValueError(f"cpu_replicas must be >= 1, got {replicas}")
    if replicas == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    configs = [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, configs)
    except RuntimeError as e:  # TensorFlow has already initialised its devices
        raise RuntimeError(f"cannot split the CPU into {replicas} devices after TensorFlow "
                           f"started ({e})") from None


def make_strategy(name: str = "auto", cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``name`` names (see the module docstring for ``auto``)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        name = _auto(cpu_replicas)
    if name == "multi_worker":
        # Must come first: it configures the collective runtime of this process.
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    split_cpu(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def _auto(cpu_replicas: int) -> str:
    if os.environ.get("TF_CONFIG"):
        return "multi_worker"
    gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus > 1 or cpu_replicas > 1:
        return "mirrored"
    return "one_device" if gpus == 1 else "default"


def worker_identity(strategy: tf.distribute.Strategy) -> tuple:
    """``(is_chief, task_id)``. Only the chief writes the run folder; other workers keep their
    own files (backup, final model) under ``RUN/worker-<task_id>/``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, task_id


def worker_dir(run_dir: str, strategy: tf.distribute.Strategy) -> str:
    chief, task_id = worker_identity(strategy)
    return run_dir if chief else os.path.join(run_dir, f"worker-{task_id}")


def tf_config(workers, index: int) -> str:
    """``TF_CONFIG`` for worker ``index`` of a cluster of ``workers`` (``host:port`` strings)."""
    return json.dumps({"cluster": {"worker": list(workers)},
                       "task": {"type": "worker", "index": int(index)}})
