"""Training throughput of the VAE and the npVAE, as ratios to this machine's own limits.

    python benchmarks/bench_train.py                 # full run (~8 minutes on 2 CPU cores)
    python benchmarks/bench_train.py --quick         # CI smoke test (small layers, few steps)

In one process it measures, for each model (VAE, npVAE), z_dim (2, 20, 500; batch 128) and
``jit_compile`` setting:

* **step time**: the compiled Keras train function that ``model.fit`` (hence ``train.py``)
  calls once per batch, built by ``model.compile(optimizer=Adam(1e-3), jit_compile=...)`` as
  ``npvae_tf.training.fit.fit_run`` does and fed by ``npvae_tf.data.pipeline.make_dataset(..., shuffle=True)``
  over the MNIST training split. Timing covers windows of consecutive steps inside an epoch
  (after warm-up: tracing, XLA compilation, first steps); the mean step of a window is one
  sample and the median over rounds is reported. Callbacks, validation and the progress bar
  are per-epoch costs and left out; one ``model.fit`` epoch is timed as a cross-check.
* **matmul peak at the model's shapes**: the step's matmuls alone -- ``tf.matmul`` (fp32, in a
  ``tf.function``) at exactly the forward and both backward shapes of every Dense layer and
  of the kernel's ``W @ E[z]``, chained back to back -- as TensorFlow graph ops (oneDNN on
  x86) and XLA-compiled, each timed like the step, right after it in every round; the faster
  is the fastest the step could be if it were nothing but its matmuls. Peak FLOP/s "at the
  model's shapes" = the step's matmul FLOPs / that time; fraction of peak = that time / the
  step time, per round (median and range over rounds). Each shape on its own (best of a few
  calls per round) is tabulated in the JSON as well.
* **FLOPs** per step: each Dense layer ``2*B*in*out`` forward, the same for the gradient with
  respect to the weights and for the gradient with respect to its input (left out for layers
  that read the images); the kernel: ``3*B*B*D`` for the distances and ``2*B*B*Z`` for
  ``W @ E[z]``, each forward plus twice backward. Biases, activations, the loss and Adam are
  not counted (they are the overhead the fraction of peak exposes).
* **input wait**: the time the step spends blocked in ``IteratorGetNext`` (from a
  ``tf.profiler`` trace of the step on the training pipeline), plus the first batch of every
  epoch, which waits for the shuffle buffer to fill (Keras starts a new iterator each epoch),
  spread over the epoch's steps. The same step fed from one batch held in memory is also
  timed; the difference (``input_pipeline_cost_vs_memory``) adds the pipeline's CPU use.
* **ratios**: npVAE/VAE step time at each z_dim and ``jit_compile`` setting.
* **breakdown**: forward, forward+backward and the kernel alone, compiled like the step, and a
  ``tf.profiler`` trace of the step: op time by category (matmul, optimizer, random, other)
  and the largest ops.

Every timing is repeated in rounds that interleave all configurations and the matmul peaks, so
that load from other processes hits them alike; ratios are taken within a round and the median
over rounds is reported. Results go to
``benchmarks/results/bench_train.{json,md}`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.train_profile import profile_steps  # noqa: E402
from benchmarks.train_report import markdown  # noqa: E402
from benchmarks.train_steps import (BatchStream, MatmulPeak, ModelMatmuls, StepRunner,  # noqa: E402,F401
                                    config_name, first_batch_timer, matmuls, step_flops)

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results")
# --quick writes here unless --out says otherwise: a smoke run must never replace the
# committed results in DEFAULT_OUT (ignored by git).
QUICK_OUT = os.path.join(DEFAULT_OUT, "quick")
_KEEP_ALIVE = []
TARGETS = {"npvae_over_vae_max": 1.4, "fraction_of_peak_min": 0.60, "input_wait_max": 0.05}


# --- the benchmark --------------------------------------------------------------------------

def machine_info():
    import tensorflow as tf

    cpu, fields = platform.processor() or platform.machine(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    flags = fields.get("flags", "").split()
    vector = next((v for v in ("avx512f", "avx2", "avx", "neon") if v in flags), None)
    return {
        "cpu": cpu,
        "cpu_family_model": (f"{fields['cpu family']}/{fields['model']}"
                             if "cpu family" in fields and "model" in fields else None),
        "widest_vector_isa": vector,
        "logical_cpus": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)"),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
    }


def median(values):
    return float(statistics.median(values))


def benchmark_configs(args, image_shape):
    """The Config of every (model, z_dim, jit_compile) measured."""
    from npvae_tf.core.config import Config

    return {(model, z, jit): Config(
                model=model, z_dim=z, hidden=tuple(args.hidden), batch_size=args.batch_size,
                seed=args.seed, image_shape=image_shape,
                validation_examples=args.validation_examples, jit_compile=jit)
            for z in args.z_dims for jit in args.jit for model in args.models}


def matmul_peaks(configs, args):
    """Unique matmul shapes over all configurations, and their chains as TF ops and XLA."""
    shapes = sorted({mm[1:] for c in configs.values() for mm in matmuls(c)})
    peaks = {(shape, xla): MatmulPeak(*shape, xla=xla, target_flops=args.matmul_flops,
                                      max_chain=args.max_chain)
             for shape in shapes for xla in (False, True)}
    return shapes, peaks


def warmed_up_runners(configs, stream, cached_batch, args, elapsed):
    runners = {}
    for key, config in configs.items():
        runners[key] = StepRunner(config, key[2], cached_batch)
        runners[key].warm_up(stream, args.warmup_steps)
        log(args, f"[{elapsed():5.0f} s] warmed up {runners[key].name} "
                  f"(trace/compile and first steps {runners[key].compile_seconds:.1f} s)")
    return runners


def timed_rounds(runners, peaks, model_matmuls, stream, args, elapsed):
    """Every timing, in rounds that interleave the configurations (alternating order)."""
    t = {"pipeline_next": [], "matmul": {k: [] for k in peaks},
         "step_iter": {k: [] for k in runners}, "step_cached": {k: [] for k in runners},
         "parts": {(k, p): [] for k, r in runners.items() for p in r.parts},
         "matmul_only": {k: [] for k in model_matmuls}}
    order = list(runners)
    # (Not gc.disable(): with the collector off, dropping a tf.data iterator mid-epoch was
    # seen to block for ~10 s.)
    gc.collect()
    for r in range(args.rounds):
        t["pipeline_next"].append(stream.next_seconds())
        for k, peak in peaks.items():
            t["matmul"][k].append(peak.seconds_per_matmul())
        for key in (order if r % 2 == 0 else order[::-1]):
            runner = runners[key]
            t["step_iter"][key].append(runner.time_window(stream.reserve(args.steps),
                                                          args.steps))
            for xla in (False, True):
                t["matmul_only"][(key, xla)].append(
                    model_matmuls[(key, xla)].time_window(args.steps))
            t["step_cached"][key].append(runner.time_window(runner.cached, args.steps))
            for part in runner.parts:
                t["parts"][(key, part)].append(runner.time_part(part, args.steps))
        log(args, f"[{elapsed():5.0f} s] round {r + 1}/{args.rounds}: " + ", ".join(
            f"{runners[k].name} {1e3 * t['step_iter'][k][-1]:.1f} ms" for k in order))
    return t


def fit_check(runners, images, step_iter, args, elapsed):
    """One epoch of model.fit, as train.py runs it (no validation or callbacks), for one
    config; None when skipped."""
    from npvae_tf.data.pipeline import make_dataset

    fit_key = (args.models[-1], max(args.z_dims), args.jit[0])
    if not args.fit_check or fit_key not in runners:
        return None
    runner = runners[fit_key]
    dataset = make_dataset(images, args.batch_size, shuffle=True, seed=args.seed)
    first_batch = first_batch_timer()
    t0 = time.perf_counter()
    runner.model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[first_batch])
    seconds = time.perf_counter() - t0
    steps = math.ceil(len(images) / args.batch_size)
    log(args, f"[{elapsed():5.0f} s] fit epoch {runner.name}: {seconds:.1f} s")
    return {"config": runner.name, "epoch_s": seconds, "steps": steps,
            "ms_per_step": 1e3 * seconds / steps, "first_batch_s": first_batch.seconds,
            "benchmark_step_ms": 1e3 * median(step_iter[fit_key])}


def profile_all(runners, stream, args, elapsed):
    profiles = {}
    if args.profile_steps:
        for runner in runners.values():
            try:
                profiles[runner.name] = profile_steps(
                    runner, stream, args.profile_steps,
                    os.path.join(args.out, f".profile-{os.getpid()}"))
            except Exception as e:  # noqa: BLE001 - the profile is evidence, not the result
                profiles[runner.name] = {"error": f"{type(e).__name__}: {e}"}
        log(args, f"[{elapsed():5.0f} s] profiled {len(profiles)} configurations")
    return profiles


def result_row(key, configs, t, profile, epoch_start, stream, runner, batch_size):
    """One configuration's row of the results: times, FLOP rates, fractions, breakdown."""
    model, z, jit = key
    step_iter, step_cached, parts = t["step_iter"], t["step_cached"], t["parts"]
    total, mm_flops = step_flops(configs[key])
    # The step's matmuls alone in the same round, right after the step: TF ops or XLA,
    # whichever was faster.
    mm_round = [min(a, b) for a, b in zip(t["matmul_only"][(key, False)],
                                          t["matmul_only"][(key, True)])]
    fractions = [m / s for m, s in zip(mm_round, step_iter[key])]
    mm_seconds = median(mm_round)
    step = median(step_iter[key])
    # Waiting for the input pipeline: the time the step spends blocked in IteratorGetNext
    # (profiled), plus the epoch's first batch (shuffle buffer fill) spread over the epoch.
    # The difference to the step fed from memory also counts the pipeline's CPU use.
    steady_wait = median([(s - sc) / s for s, sc in zip(step_iter[key], step_cached[key])])
    epoch_wait = epoch_start / stream.steps_per_epoch / step
    if "input_wait_ms_per_step" in profile:
        blocked = profile["input_wait_ms_per_step"] / profile["wall_ms_per_step_under_profiler"]
    else:
        blocked = max(steady_wait, 0.0)
    row = {
        "model": model, "z_dim": z, "jit_compile": jit,
        "step_ms": 1e3 * step,
        "step_ms_min": 1e3 * min(step_iter[key]),
        "step_ms_max": 1e3 * max(step_iter[key]),
        "examples_per_s": batch_size / step,
        "gflop_per_step": total / 1e9,
        "matmul_gflop_per_step": mm_flops / 1e9,
        "effective_gflops": total / step / 1e9,
        "peak_gflops_at_shapes": mm_flops / mm_seconds / 1e9,
        "fraction_of_peak": median(fractions),
        "fraction_of_peak_range": [min(fractions), max(fractions)],
        "matmul_only_ms_tf": 1e3 * median(t["matmul_only"][(key, False)]),
        "matmul_only_ms_xla": 1e3 * median(t["matmul_only"][(key, True)]),
        "input_wait": blocked + epoch_wait,
        "input_wait_blocked": blocked,
        "input_wait_epoch_start": epoch_wait,
        "input_pipeline_cost_vs_memory": steady_wait,
        "breakdown_ms": {
            "step_cached_batch": 1e3 * median(step_cached[key]),
            "forward": 1e3 * median(parts[(key, "forward")]),
            "forward_backward": 1e3 * median(parts[(key, "gradients")]),
            "optimizer_and_metrics": 1e3 * median(
                [a - b for a, b in zip(step_cached[key], parts[(key, "gradients")])]),
            "matmuls_at_peak": 1e3 * mm_seconds,
            "kernel_forward_backward": (1e3 * median(parts[(key, "kernel")])
                                        if (key, "kernel") in parts else 0.0),
        },
        "compile_and_first_step_s": runner.compile_seconds,
    }
    if model == "npvae" and ("vae", z, jit) in step_iter:
        ratios = [a / b for a, b in zip(step_iter[key], step_iter[("vae", z, jit)])]
        row["npvae_over_vae"] = median(ratios)
        row["npvae_over_vae_flops"] = total / step_flops(configs[("vae", z, jit)])[0]
    return row


def matmul_rows(shapes, matmul_times):
    rows = []
    for shape in shapes:
        m, k, n, ta, tb = shape
        flops = 2 * m * k * n
        rows.append({
            "m": m, "k": k, "n": n, "transpose_a": ta, "transpose_b": tb,
            "gflops_tf": flops / median(matmul_times[(shape, False)]) / 1e9,
            "gflops_xla": flops / median(matmul_times[(shape, True)]) / 1e9,
            "gflops_tf_best": flops / min(matmul_times[(shape, False)]) / 1e9,
            "gflops_xla_best": flops / min(matmul_times[(shape, True)]) / 1e9})
    return rows


def target_checks(rows):
    checks = {}
    for row in rows:
        check = {"fraction_of_peak": row["fraction_of_peak"] >= TARGETS["fraction_of_peak_min"],
                 "input_wait": row["input_wait"] < TARGETS["input_wait_max"]}
        if "npvae_over_vae" in row:
            check["npvae_over_vae"] = row["npvae_over_vae"] <= TARGETS["npvae_over_vae_max"]
        checks[config_name(row["model"], row["z_dim"], row["jit_compile"])] = check
    return checks


def run_benchmark(args):
    import keras
    import tensorflow as tf

    from npvae_tf.core.config import Config
    from npvae_tf.data.datasets import load_data
    from npvae_tf.training.fit import make_optimizer

    tf.get_logger().setLevel("ERROR")  # one tf.function per matmul shape: retracing notes
    load_start = os.getloadavg()
    started = time.time()

    def elapsed():
        return time.time() - started

    # At most --train_examples images (load_data refuses more than the data holds; the
    # quick default, 2048, is an upper bound).
    data = load_data(args.data_dir, validation_examples=args.validation_examples)
    images = data.train.images[:args.train_examples]
    stream = BatchStream(images, args.batch_size, args.seed)
    cached_batch = tf.constant(images[:args.batch_size])
    configs = benchmark_configs(args, data.image_shape)
    shapes, peaks = matmul_peaks(configs, args)
    log(args, f"[{elapsed():5.0f} s] compiled {len(peaks)} matmul chains "
              f"({len(shapes)} shapes)")
    model_matmuls = {(key, xla): ModelMatmuls(config, xla)
                     for key, config in configs.items() for xla in (False, True)}
    runners = warmed_up_runners(configs, stream, cached_batch, args, elapsed)
    t = timed_rounds(runners, peaks, model_matmuls, stream, args, elapsed)
    fit = fit_check(runners, images, t["step_iter"], args, elapsed)
    profiles = profile_all(runners, stream, args, elapsed)
    log(args, f"[{elapsed():5.0f} s] summarising")
    epoch_start = median(stream.epoch_start_seconds)
    rows = [result_row(key, configs, t, profiles.get(runner.name, {}), epoch_start, stream,
                       runner, args.batch_size) for key, runner in runners.items()]
    # Kept alive to the end (see __main__): dropping tf.data iterators left mid-epoch can block
    # for minutes while their pipeline threads stop.
    _KEEP_ALIVE.extend([runners, stream, model_matmuls, peaks])
    return {
        "benchmark": "bench_train",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "load": {"loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
                 "note": args.load_note},
        "settings": {"batch_size": args.batch_size, "hidden": list(args.hidden),
                     "z_dims": args.z_dims, "models": args.models, "jit_compile": args.jit,
                     "rounds": args.rounds, "steps_per_window": args.steps,
                     "warmup_steps": args.warmup_steps, "data_source": data.source,
                     "train_examples": len(images),
                     "optimizer": type(make_optimizer(Config())).__name__,
                     "learning_rate": Config().learning_rate,
                     "keras_backend": keras.backend.backend(), "seconds": None},
        "input_pipeline": {"epoch_start_s": epoch_start,
                           "epoch_start_s_all": stream.epoch_start_seconds,
                           "steps_per_epoch": stream.steps_per_epoch,
                           "next_batch_ms_alone": 1e3 * median(t["pipeline_next"])},
        "matmul": matmul_rows(shapes, t["matmul"]),
        "results": rows,
        "fit_check": fit,
        "profiles": profiles,
        "targets": {"thresholds": TARGETS, "checks": target_checks(rows)},
        "_elapsed": elapsed(),
    }


def log(args, message):
    if not args.quiet:
        print(message, flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny CI smoke run: one z_dim, small layers, few steps")
    parser.add_argument("--z_dims", type=int, nargs="+", default=None,
                        help="latent sizes (default 2 20 500; quick: 8)")
    parser.add_argument("--models", nargs="+", choices=("vae", "npvae"), default=["vae", "npvae"])
    parser.add_argument("--jit", nargs="+", choices=("off", "on"), default=["off", "on"],
                        help="jit_compile settings to measure")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden widths (default 500 500; quick: 64 64)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=None, help="repeats (default 7; quick 2)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed window (default 20; quick 3)")
    parser.add_argument("--warmup_steps", type=int, default=None,
                        help="untimed steps after compilation (default 10; quick 2)")
    parser.add_argument("--matmul_flops", type=float, default=None,
                        help="FLOPs per timed matmul chain (default 2e8; quick 2e7)")
    parser.add_argument("--max_chain", type=int, default=None,
                        help="most matmuls per timed chain (default 32; quick 4)")
    parser.add_argument("--data_dir", default=None,
                        help="MNIST folder (default: $NPVAE_DATA_DIR, then the Keras cache)")
    parser.add_argument("--train_examples", type=int, default=None,
                        help="use the first N training images (default all; quick 2048)")
    parser.add_argument("--validation_examples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile_steps", type=int, default=None,
                        help="steps traced with tf.profiler per configuration for the op "
                             "breakdown (default 10; quick 2; 0: no profile)")
    parser.add_argument("--no_fit_check", dest="fit_check", action="store_false",
                        help="skip the one-epoch model.fit cross-check")
    parser.add_argument("--out", default=None,
                        help="folder for bench_train.json and bench_train.md (default "
                             "benchmarks/results; with --quick benchmarks/results/quick)")
    parser.add_argument("--load_note", default="",
                        help="free text recorded with the load averages (e.g. other jobs)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = dict(z_dims=[8] if quick else [2, 20, 500], hidden=[64, 64] if quick else [500, 500],
                    rounds=2 if quick else 7, steps=3 if quick else 20,
                    warmup_steps=2 if quick else 10, matmul_flops=2e7 if quick else 2e8,
                    train_examples=2048 if quick else None,
                    profile_steps=2 if quick else 10,
                    max_chain=4 if quick else 32)
    defaults["out"] = QUICK_OUT if quick else DEFAULT_OUT
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.jit = [j == "on" for j in dict.fromkeys(args.jit)]
    if args.train_examples is not None and args.train_examples < args.batch_size * 2:
        parser.error("train_examples must hold at least two batches")
    return args


def main(argv=None):
    args = parse_args(argv)
    result = run_benchmark(args)
    result["settings"]["seconds"] = round(result.pop("_elapsed"), 1)
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "bench_train.json")
    md_path = os.path.join(args.out, "bench_train.md")
    with open(json_path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(json_path + ".tmp", json_path)
    table = markdown(result)
    with open(md_path + ".tmp", "w") as f:
        f.write(table)
    os.replace(md_path + ".tmp", md_path)
    print(table)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
    # Skip interpreter teardown: destroying the tf.data iterators left mid-epoch was seen to
    # block for minutes (IteratorResource waiting on its pipeline threads).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
