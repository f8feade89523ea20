"""Serving benchmark: throughput of an exported SavedModel's ``generate_from_x`` and ``encode``.

    python benchmarks/bench_serving.py                        # untrained z500, 55,000 refs
    python benchmarks/bench_serving.py --run runs/npvae-z500  # a real run folder
    python benchmarks/bench_serving.py --quick                # small smoke run (seconds)
    python benchmarks/bench_serving.py --xla                  # the export made with --xla

The model is exported to a temporary folder, then a fresh process that imports TensorFlow
only loads the SavedModel and times each signature at batch sizes 1, 64 and 1,024 (images/s:
best and median over repeated calls after a warm-up call that compiles), with the process's
peak resident memory after each. ``generate_from_x`` cost does not depend on the weights: the
kernel is dense over all ``M`` reference points, so a synthetic reference set of the right
shape times the same as a trained one.

Then, in this process, the design measured at batch 1,024: the bare ``[N, M] @ [M, Z]``
product (the floor: ``2 N M Z`` flops), the export's kernel with and without XLA and for
several chunk sizes, and the live model's ``decode_from_x``, each as a ratio to the bare
product (calls interleaved, best of several, so shared-machine load affects all alike).
Figures are measured in one run; nothing is asserted about timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCHES = (1, 64, 1024)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def time_calls(fn, min_seconds: float, max_calls: int):
    """Wall and process-CPU seconds per call (after one warm-up call), >= 3 of each.

    CPU time (all threads) is what a call costs whatever else runs on the machine; on C
    dedicated cores a call's wall time lies between ``cpu / C`` and ``cpu``.
    """
    fn()
    walls, cpus = [], []
    started = time.perf_counter()
    while len(walls) < 3 or (time.perf_counter() - started < min_seconds
                             and len(walls) < max_calls):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus


def serve(export_dir: str, min_seconds: float, max_calls: int) -> dict:
    """Runs in a fresh process: TensorFlow and the SavedModel only."""
    import numpy as np
    import tensorflow as tf

    started = time.perf_counter()
    loaded = tf.saved_model.load(export_dir)
    result = {"load_seconds": time.perf_counter() - started, "rss_after_load_mib": peak_rss_mib(),
              "rows": []}
    info = json.load(open(os.path.join(export_dir, "assets.extra", "npvae_export.json")))
    rng = np.random.default_rng(0)
    inputs = {"encode": ("images", lambda n: rng.random((n, info["image_dim"]), np.float32))}
    if "generate_from_x" in loaded.signatures:
        x_ref = loaded.reference_x[0].numpy()[:info["reference_size"]]
        inputs["generate_from_x"] = (
            "x", lambda n: (x_ref[rng.integers(0, len(x_ref), n)]
                            + rng.normal(size=(n, x_ref.shape[1]))).astype(np.float32))
    for name, (arg, make) in inputs.items():
        fn = loaded.signatures[name]
        for batch in BATCHES:
            value = tf.constant(make(batch))
            t = time.perf_counter()
            fn(**{arg: value})
            first = time.perf_counter() - t
            walls, cpus = time_calls(lambda: [v.numpy() for v in fn(**{arg: value}).values()],
                                     min_seconds, max_calls)
            result["rows"].append({
                "signature": name, "batch": batch, "first_call_s": first, "calls": len(walls),
                "best_images_per_s": batch / min(walls),
                "median_images_per_s": batch / statistics.median(walls),
                "images_per_cpu_s": batch / statistics.median(cpus),
                "peak_rss_mib": peak_rss_mib()})
    return result


def make_model(args):
    """``(model, reference, description)``: a run folder's, or an untrained synthetic one."""
    import numpy as np

    from npvae_tf.core.config import Config
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import ReferenceSet

    if args.run:
        from npvae_tf.runs.load import load_run

        run = load_run(args.run)
        config, model, reference = run.config, run.model, run.reference
        if not run.has_x:
            raise SystemExit(f"bench_serving.py: error: {args.run} is not an npVAE run")
        return model, reference, f"run {args.run} (z_dim {config.z_dim})"
    config = Config(z_dim=args.z_dim, hidden=tuple(args.hidden))
    model = build_model(config)
    rng = np.random.default_rng(0)
    m = args.reference_size
    # The spread of a trained run's X (std ~5 around l ~1.3); values do not change the cost.
    reference = ReferenceSet(z_mean=rng.normal(size=(m, args.z_dim)).astype(np.float32),
                             labels=rng.integers(0, 10, m),
                             x=(rng.normal(size=(m, 2)) * 5).astype(np.float32))
    return model, reference, (f"untrained npVAE z_dim {args.z_dim}, hidden {args.hidden}, "
                              f"{m} synthetic reference points")


def design_comparison(model, reference, chunks, repeats: int, jit_options=(True, False)):
    """Best (wall, CPU) seconds per 1,024 queries for each kernel variant, calls interleaved.

    Also the largest difference of each export variant's probabilities from the live model's.
    """
    import numpy as np
    import tensorflow as tf

    from npvae_tf.serving.module import ServingModule

    n = 1024
    rng = np.random.default_rng(1)
    x = tf.constant((reference.x[rng.integers(0, len(reference.x), n)]
                     + rng.normal(size=(n, reference.x.shape[1]))).astype(np.float32))
    x_ref, z_ref = tf.constant(reference.x), tf.constant(reference.z_mean)
    w = tf.random.uniform([n, len(reference.x)])
    variants = {"bare [N,M]@[M,Z] matmul": tf.function(lambda: tf.matmul(w, z_ref))}
    live = tf.function(lambda: model.decode_from_x(x, x_ref, z_ref))
    variants["live model.decode_from_x (chunk 8192, graph)"] = live
    modules = {}
    for chunk in chunks:
        for jit in jit_options:
            module = ServingModule(model, reference, chunk_size=chunk, jit_compile=jit)
            modules[(chunk, jit)] = module
            variants[f"export kernel chunk {chunk}, {'XLA' if jit else 'graph'}"] = (
                lambda module=module: module.generate_from_x(x)["images"])
    best = {name: (float("inf"), float("inf")) for name in variants}
    for name, fn in variants.items():
        fn()  # compile / trace
    for _ in range(repeats):
        for name, fn in variants.items():
            t, c = time.perf_counter(), time.process_time()
            fn().numpy()
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    reference_images = live().numpy()
    errors = {name: float(np.abs(modules[key].generate_from_x(x)["images"].numpy()
                                 - reference_images).max())
              for key, name in ((k, f"export kernel chunk {k[0]}, {'XLA' if k[1] else 'graph'}")
                                for k in modules)}
    return best, errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="an npVAE run folder (default: synthetic)")
    parser.add_argument("--quick", action="store_true",
                        help="small model and reference set, few repeats (a smoke test)")
    parser.add_argument("--reference_size", type=int, default=55000)
    parser.add_argument("--z_dim", type=int, default=500)
    parser.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    parser.add_argument("--min_seconds", type=float, default=3.0,
                        help="time each (signature, batch) for at least this long")
    parser.add_argument("--xla", action="store_true",
                        help="time an export made with --xla (XLA-compiled kernel)")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)

    if args.serve:
        json.dump(serve(args.serve, args.min_seconds, max_calls=200), sys.stdout)
        return
    if args.quick:
        args.reference_size, args.z_dim, args.hidden, args.min_seconds = 2000, 8, [64, 64], 0.1
    load_before = os.getloadavg()
    import tensorflow as tf

    from npvae_tf.serving.export import DEFAULT_CHUNK_SIZE, export_model

    model, reference, description = make_model(args)
    print(f"model: {description}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} (1 min) at start; "
          f"TensorFlow {tf.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = os.path.join(tmp, "export")
        t = time.perf_counter()
        export_model(model, export_dir, reference, jit_compile=args.xla)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export_dir)
                   for f in fs)
        print(f"export{' (--xla)' if args.xla else ''}: {time.perf_counter() - t:.1f} s, "
              f"{size / 2**20:.1f} MiB")
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--serve", export_dir,
                                "--min_seconds", str(args.min_seconds)],
                               capture_output=True, text=True, cwd=tmp)
        if child.returncode != 0:
            sys.exit(f"bench_serving.py: error: serving process failed:\n{child.stderr[-3000:]}")
        served = json.loads(child.stdout)
    print(f"\nserving process (TensorFlow + SavedModel only): load {served['load_seconds']:.1f} s, "
          f"peak RSS after load {served['rss_after_load_mib']:.0f} MiB")
    print(f"{'signature':<16} {'batch':>5} {'images/s best':>14} {'median':>10} "
          f"{'per CPU-s':>10} {'first call s':>12} {'calls':>6} {'peak RSS MiB':>13}")
    for r in served["rows"]:
        print(f"{r['signature']:<16} {r['batch']:>5} {r['best_images_per_s']:>14.0f} "
              f"{r['median_images_per_s']:>10.0f} {r['images_per_cpu_s']:>10.0f} "
              f"{r['first_call_s']:>12.2f} {r['calls']:>6} {r['peak_rss_mib']:>13.0f}")
    print("(images/s: wall clock, best and median call; per CPU-s: images per second of "
          "process CPU time, all threads; first call: tracing, and with --xla compilation)")

    chunks = (DEFAULT_CHUNK_SIZE,) if args.quick else (512, 1024, 2048, 4096)
    best, errors = design_comparison(model, reference, chunks, repeats=2 if args.quick else 4,
                                     jit_options=(True,) if args.quick else (True, False))
    wall0, cpu0 = best["bare [N,M]@[M,Z] matmul"]
    flops = 2 * 1024 * len(reference.x) * model.z_dim
    print(f"\nbatch 1024, M = {len(reference.x)}, Z = {model.z_dim}, best of "
          f"{2 if args.quick else 4} interleaved calls; ratios to the bare product "
          f"({flops / 1e9:.3g} GFLOP: {flops / wall0 / 1e9:.0f} GFLOP/s wall, "
          f"{flops / cpu0 / 1e9:.0f} per CPU-s)")
    print(f"  {'variant':<46} {'wall s':>7} {'ratio':>6} {'images/s':>9} {'CPU s':>7} {'ratio':>6}")
    for name, (wall, cpu) in best.items():
        error = f"  max |p - live| {errors[name]:.1e}" if name in errors else ""
        print(f"  {name:<46} {wall:7.3f} {wall / wall0:6.2f} {1024 / wall:9.0f} {cpu:7.3f} "
              f"{cpu / cpu0:6.2f}{error}")
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")


if __name__ == "__main__":
    main()
