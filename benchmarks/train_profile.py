"""bench_train.py's profile: TensorFlow's profiler over a few training steps, op self-times
grouped into categories (matmul, element-wise, random, input, ...)."""

from __future__ import annotations

import os
import time

# Events that schedule, wait or dispatch rather than compute. Their own time inside an op
# (e.g. ``ParallelFor`` shards) counts for that op; elsewhere it is left out.
WRAPPERS = ("ExecutorState", "ExecutorDoneCallback", "ParallelFor", "ThunkExecutor",
            "BlockUntilReady", "CpuExecutable", "ThreadpoolListener", "SlinkyThreadPool", "Eager",
            "TFE_", "KernelAndDevice", "FunctionRun", "multi_step_on_iterator",
            "one_step_on_data", "ValidateInputTypeAndPlacement", "Iterator::", "MakeIterator",
            "Prefetch", "optional:", "end: ")


def op_category(name):
    lower = name.lower()
    if "matmul" in lower or lower.startswith("dot"):
        return "matmul"
    if "adam/" in lower or "assign" in lower or "resourceapply" in lower:
        return "optimizer"
    if "random" in lower or "dropout" in lower:
        return "random"
    return "other"


def op_self_times(space, steps):
    """Milliseconds per step of every op (TF op or XLA thunk), from an ``XSpace``.

    An op's time is its own (self) time plus that of scheduling events nested in it, so work
    done in nested ``ParallelFor`` shards is not lost; summed over threads.
    """
    totals = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack = []  # [end_ps, owner name or None]
            for ev in events:
                while stack and stack[-1][0] <= ev.offset_ps:
                    stack.pop()
                name = plane.event_metadata[ev.metadata_id].name
                owner = stack[-1][1] if stack else None
                if stack and owner is not None:
                    totals[owner] = totals.get(owner, 0.0) - ev.duration_ps / 1e9 / steps
                if not name.startswith(WRAPPERS):
                    owner = name
                if owner is not None:
                    totals[owner] = totals.get(owner, 0.0) + ev.duration_ps / 1e9 / steps
                stack.append([ev.offset_ps + ev.duration_ps, owner])
    return {k: v for k, v in totals.items() if v > 1e-6}


def profile_steps(runner, stream, steps, logdir):
    """Traces ``steps`` training steps on the training pipeline.

    Returns op time per step by category and the largest ops, and the time the step spent
    blocked in ``IteratorGetNext`` (waiting for the input pipeline).

    Graph mode (jit off): ops are TensorFlow ops ``name:Type``. XLA (jit on): ops are HLO
    thunks and fusions (``MatMul.28``, ``bitcast_concatenate_fusion.4``); what a fusion
    computes is in the HLO dump (``XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text``).
    """
    import glob
    import shutil

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    shutil.rmtree(logdir, ignore_errors=True)
    iterator = stream.reserve(steps)  # a new epoch's shuffle buffer fill is not traced
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    try:
        runner._run(iterator, steps)
    finally:
        wall = (time.perf_counter() - t0) / steps
        tf.profiler.experimental.stop()
    try:
        space = xplane_pb2.XSpace()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        with open(paths[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    totals = op_self_times(space, steps)
    get_next = sum(v for k, v in totals.items() if k.startswith("IteratorGetNext"))
    totals = {k: v for k, v in totals.items() if not k.startswith("IteratorGetNext")}
    summed = sum(totals.values()) or 1.0
    categories = {}
    for name, ms in totals.items():
        key = op_category(name)
        categories[key] = categories.get(key, 0.0) + ms
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
    return {
        "wall_ms_per_step_under_profiler": 1e3 * wall,
        "input_wait_ms_per_step": get_next,
        "op_ms_per_step_summed_over_threads": summed,
        "categories_ms": {k: round(v, 3) for k, v in sorted(categories.items())},
        "top_ops": [{"op": n, "ms": round(v, 3), "share": round(v / summed, 4)} for n, v in top],
    }
