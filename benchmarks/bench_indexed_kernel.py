"""Indexed against exact kernel: ``generate_from_x`` at batch 1 and 1,024, M = 55,000 and
1,000,000 reference points.

    python benchmarks/bench_indexed_kernel.py                  # synthetic 55,000 and 1,000,000
    python benchmarks/bench_indexed_kernel.py --run RUN        # a trained run's reference set
                                                               # (and 1,000,000 of its shape)
    python benchmarks/bench_indexed_kernel.py --quick          # smoke run (small M, Z)

Each (M, kernel) is measured in a fresh process (so peak resident memory is its own) through
the export's :class:`~npvae_tf.serving.module.ServingModule` (the SavedModel's and the API's code),
``indexed=True`` against ``indexed=False``; images per CPU-second (``time.process_time``,
all threads: load on the shared machine matters less than for wall time). The synthetic
reference set is a clustered 2-D density (10 anisotropic Gaussian clusters of unequal size,
spread ~ 7 serving lengthscales as in a trained run) and the lengthscale is set so that a
median of ~241 reference points carry weight per query (``1 / sum_j W_j^2``, the README's
figure for the paper scheme at Z = 500); the M = 1,000,000 set is the same shape, denser, with
its lengthscale chosen the same way. The largest difference in z~ between the two kernels is
relative to the largest |z~|. With ``--run``, M = 55,000 is the run's own reference set and
serving lengthscale and M = 1,000,000 a kernel density sample of its X. Batch 1 cycles
through distinct locations (the explorer's case). Nothing is written unless ``--out`` is
given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TARGET_NEIGHBOURS = 241


def clustered(m: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, 2)) * 3.0
    sizes = rng.dirichlet(np.ones(10) * 2)
    labels = rng.choice(10, m, p=sizes)
    angle = rng.uniform(0, np.pi, 10)
    scale = rng.uniform(0.4, 1.5, (10, 2))
    e = rng.normal(size=(m, 2)) * scale[labels]
    c, s = np.cos(angle[labels]), np.sin(angle[labels])
    x = centres[labels] + np.stack([c * e[:, 0] - s * e[:, 1], s * e[:, 0] + c * e[:, 1]], 1)
    return x.astype(np.float32), labels


def lengthscale_for(x, target=TARGET_NEIGHBOURS, seed=1):
    """l with a median of ``target`` effective neighbours over 300 queries (bisection)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    q = x[rng.integers(0, len(x), 300)].astype(np.float64)
    lo, hi = 1e-4, 10.0
    for _ in range(40):
        l = (lo * hi) ** 0.5
        d2 = ((q[:, None] - x[None].astype(np.float64)) ** 2).sum(-1) if len(x) <= 60000 else None
        if d2 is None:  # large M: in blocks
            neff = []
            for b in range(0, 300, 20):
                d = ((q[b:b + 20, None] - x[None]) ** 2).sum(-1)
                w = np.exp(-(d - d.min(1, keepdims=True)) / (2 * l * l))
                neff.append(w.sum(1) ** 2 / (w ** 2).sum(1))
            neff = np.concatenate(neff)
        else:
            w = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * l * l))
            neff = w.sum(1) ** 2 / (w ** 2).sum(1)
        lo, hi = (l, hi) if np.median(neff) < target else (lo, l)
        if hi / lo < 1.02:
            break
    return (lo * hi) ** 0.5


def check_out(parser, out, quick: bool) -> None:
    """Refuse a bad ``--out`` with one line before minutes of work, not after."""
    if not out:
        return
    if quick:
        parser.error("--quick is a smoke run and writes nothing: drop --out")
    if os.path.isdir(out):
        parser.error(f"--out {out}: a folder, not a file path")
    from npvae_tf.runs.layout import RunError
    from npvae_tf.runs.outputs import check_writable

    try:  # a probe file, not os.access (which says yes to root on /proc or read-only)
        check_writable(os.path.dirname(os.path.abspath(out)), "folder for --out")
    except RunError as error:
        parser.error(f"--out {out}: {error}")


def write_out(out, results) -> None:
    """``results`` as JSON at ``out`` (checked by :func:`check_out`; its folder made if new)."""
    from npvae_tf.core.files import write_json

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json(out, results)  # atomic: an interrupted write leaves the old file


def load_npvae_run(parser, path):
    """The finished npVAE run at ``path`` with a 2-D X (None without one); else one line."""
    if not path:
        return None
    import npvae_tf

    try:
        run = npvae_tf.load_run(path)
    except Exception as error:  # a one-line message, not a traceback
        parser.error(f"--run {path}: {error}")
    if getattr(run.reference, "x", None) is None or run.reference.x.shape[1] != 2:
        parser.error(f"--run {path}: not an npVAE run with a 2-D X")
    return run


def child(spec: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from npvae_tf.core.config import Config
    from npvae_tf.serving.module import ServingModule
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import ReferenceSet
    from npvae_tf.runs.x_density import XDensity

    data = np.load(spec["data"])
    x, z = data["x"], data["z"]
    model = build_model(Config(z_dim=z.shape[1], hidden=tuple(spec["hidden"])))
    reference = ReferenceSet(z_mean=z, labels=np.zeros(len(x), np.int64), x=x)
    t = time.process_time()
    module = ServingModule(model, reference, density=XDensity.fit(x[:5000], 0),
                           lengthscale=spec["lengthscale"], indexed=spec["indexed"])
    build = time.process_time() - t
    queries = data["queries"]
    out = {"build_cpu_s": build, "index": repr(getattr(module, "index", None)), "rows": []}
    for batch in (1, 1024):
        module.generate_from_x(tf.constant(queries[:batch]))  # trace
        calls = spec["calls"][str(batch)]
        cpu = []
        for i in range(calls):
            # Batch 1: a different location each call (the explorer's case; one repeated
            # query would time one neighbourhood, and a warm cache).
            q = tf.constant(queries[:batch] if batch > 1 else queries[i % len(queries)][None])
            c = time.process_time()
            [v.numpy() for v in module.generate_from_x(q).values()]
            cpu.append(time.process_time() - c)
        out["rows"].append({"batch": batch, "images_per_cpu_s": batch / float(np.median(cpu)),
                            "calls": calls})
    z_out = module.generate_from_x(tf.constant(queries))["z"].numpy()
    np.save(spec["z_out"], z_out)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="an npVAE run (its reference set, z_dim "
                        "and serving lengthscale) for M = 55,000")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--z_dim", type=int, default=500)
    parser.add_argument("--sizes", type=int, nargs="+", default=[55000, 1000000])
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        json.dump(child(json.load(open(args.child))), sys.stdout)
        return
    check_out(parser, args.out, args.quick)
    run = load_npvae_run(parser, args.run)
    import numpy as np

    if args.quick:
        args.sizes, args.z_dim = [5000, 20000], 16
    hidden = [64] if args.quick else [500, 500]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.sizes:
            rng = np.random.default_rng(m)
            if run is not None and m == args.sizes[0]:
                x, z, l = run.reference.x, run.reference.z_mean, run.lengthscale
                source = f"run {args.run}"
            elif run is not None:
                # The run's X, denser: a kernel density sample of it (bandwidth l / 2 at
                # the new size, finer than the map's structure), with l scaled as 1 / sqrt(M)
                # so that as many points carry weight per query (N_eff ~ density * l^2).
                base = results[0]
                l = base["lengthscale"] * (base["M"] / m) ** 0.5
                x = (base_x[rng.integers(0, len(base_x), m)]
                     + rng.normal(size=(m, 2)) * 0.5 * l).astype(np.float32)
                z = rng.normal(size=(m, base["Z"])).astype(np.float32)
                source = f"the run's X resampled ({m:,} points)"
            else:
                x, _ = clustered(m)
                z = rng.normal(size=(m, args.z_dim)).astype(np.float32)
                # The same shape denser: N_eff ~ density * l^2, so l scales as 1/sqrt(M)
                # (bisection for the first size only; it is slow for M = 1,000,000).
                l = (lengthscale_for(x) if not results else
                     results[0]["lengthscale"] * (results[0]["M"] / m) ** 0.5)
                source = "synthetic clustered"
            if not results:
                base_x = x
            queries = (x[rng.integers(0, len(x), 1024)]
                       + rng.normal(size=(1024, 2)).astype(np.float32) * l).astype(np.float32)
            path = os.path.join(tmp, f"data-{m}.npz")
            np.savez(path, x=x, z=z, queries=queries)
            del z
            row = {"M": len(x), "Z": int(np.load(path)["z"].shape[1]), "source": source,
                   "lengthscale": l}
            for indexed in (True, False):
                spec = {"data": path, "hidden": hidden, "lengthscale": l, "indexed": indexed,
                        "z_out": os.path.join(tmp, f"z-{m}-{indexed}.npy"),
                        "calls": {"1": 100 if args.quick or indexed else 20,
                                  "1024": 3 if indexed or m < 100000 else 2}}
                spec_path = os.path.join(tmp, "spec.json")
                json.dump(spec, open(spec_path, "w"))
                done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                                       spec_path], capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"bench_indexed_kernel.py: error: {done.stderr[-2000:]}")
                row["indexed" if indexed else "exact"] = json.loads(done.stdout)
            a, b = (np.load(os.path.join(tmp, f"z-{m}-{k}.npy")) for k in (True, False))
            row["max_rel_diff"] = float(np.abs(a - b).max() / np.abs(b).max())
            results.append(row)
            print(f"M = {row['M']:,} ({source}), Z = {row['Z']}, l = {l:.4g}; "
                  f"index {row['indexed']['index']} (module with index and density built in "
                  f"{row['indexed']['build_cpu_s']:.2f} CPU-s); max |z~ indexed - exact| / max |z~| = {row['max_rel_diff']:.1e}",
                  flush=True)
            for e, i in zip(row["exact"]["rows"], row["indexed"]["rows"]):
                print(f"  batch {e['batch']}: exact {e['images_per_cpu_s']:,.0f}, indexed "
                      f"{i['images_per_cpu_s']:,.0f} images per CPU-s; peak RSS "
                      f"{row['exact']['peak_rss_mib']:,.0f} / {row['indexed']['peak_rss_mib']:,.0f} MiB",
                      flush=True)
    print(f"\n| M | batch | exact img/CPU-s | indexed img/CPU-s | ratio | peak RSS exact / indexed MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in results:
        for e, i in zip(row["exact"]["rows"], row["indexed"]["rows"]):
            print(f"| {row['M']:,} | {e['batch']:,} | {e['images_per_cpu_s']:,.0f} | "
                  f"{i['images_per_cpu_s']:,.0f} | {i['images_per_cpu_s'] / e['images_per_cpu_s']:.1f}x | "
                  f"{row['exact']['peak_rss_mib']:,.0f} / {row['indexed']['peak_rss_mib']:,.0f} |")
    if len(results) > 1:
        for batch in (0, 1):
            first, last = (r["indexed"]["rows"][batch]["images_per_cpu_s"] for r in
                           (results[0], results[-1]))
            print(f"indexed cost per image, M = {results[-1]['M']:,} over M = "
                  f"{results[0]['M']:,}, batch {results[0]['indexed']['rows'][batch]['batch']}: "
                  f"{first / last:.2f}")
    if args.out and not args.quick:
        write_out(args.out, results)


if __name__ == "__main__":
    main()
