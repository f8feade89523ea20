"""How fast batch 1,024 could go at M = 55,000 with stock TensorFlow ops: floors for the
indexed kernel, against the exact kernel, side by side in one process.

    python benchmarks/bench_kernel_floor.py --run runs/paper-z500 [--out FILE]
    python benchmarks/bench_kernel_floor.py [--quick]    # a synthetic set; --quick: smoke run

On the 1,024 queries of ``bench_indexed_kernel.py`` (the same draw), CPU-seconds per batch
(``time.process_time``, median of ``--reps``):

* ``exact`` and ``indexed``: the serving module's kernel alone (``ServingModule`` with
  ``indexed=False`` / ``True``: the SavedModel's code, pair listing and bounds included);
* ``decoder``: the X path decoder alone, which every kernel pays once per image;
* floors, which give the sparse work every advantage: only the (query, point) pairs within
  the visited radius (a KD-tree; no cell slack, no ring), weights computed beforehand in
  NumPy, and only the product with ``E[z]`` timed:

  - ``sparse``: one CSR matrix times ``E[z]`` (``SparseMatrixMatMul``) per chunk of
    queries in Z-order, query-major (as the indexed pass does) or transposed (reference-major:
    each ``E[z]`` row is read once per chunk and added to every query that needs it);
  - ``blocked g``: Z-ordered blocks of ``g`` queries, the union of their rows gathered and
    multiplied by one batched dense matmul (rows shared, flops multiplied).

``ceiling`` is ``(exact + decoder) / (x + decoder)``: what ``generate_from_x`` at batch 1,024
would gain over the exact kernel if ``x`` were the whole cost of the indexed kernel. Each
floor's z~ is checked against the exact kernel's. Nothing is written unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from benchmarks.bench_indexed_kernel import (check_out, clustered, lengthscale_for,  # noqa: E402
                                             load_npvae_run, write_out)

BATCH = 1024


def cpu_seconds(fn, *args, reps: int) -> float:
    """Median CPU-seconds (all threads) of ``fn(*args)``, after one untimed call (tracing)."""
    import numpy as np

    def call():
        out = fn(*args)
        return [t.numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]

    call()
    times = []
    for _ in range(reps):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return float(np.median(times))


def floors(x_sorted, z_sorted, queries, lengthscale, radius, reps, block_sizes):
    """``{name: (CPU-s per batch, max |z~ - z~ float64| / max |z~|)}`` of the product-only
    floors (z~ checked against NumPy sums over the same rows), and ``"pairs per query"``.

    ``queries`` ``[N, 2]`` in the order the products take them (Z-order); N a multiple of
    every block size."""
    import numpy as np
    import tensorflow as tf
    from sklearn.neighbors import KDTree

    from npvae_tf.model.grid_search import SPARSE_QUERIES

    m, n = len(x_sorted), len(queries)
    if any(n % g for g in block_sizes):
        raise ValueError(f"{n} queries do not split into blocks of {block_sizes}")
    inv = 0.5 / lengthscale ** 2
    near = KDTree(x_sorted).query_radius(queries, r=radius)
    query = np.concatenate([np.full(len(a), i) for i, a in enumerate(near)])
    ref = np.concatenate([np.sort(a) for a in near])
    p = np.exp(-((x_sorted[ref] - queries[query]) ** 2).sum(1) * inv)
    mass = np.bincount(query, p, n)
    z = tf.constant(z_sorted)
    out = {"pairs per query": len(ref) / n}

    def check(numerator):
        truth = np.zeros((n, z_sorted.shape[1]))
        np.add.at(truth, query, p[:, None] * z_sorted[ref])
        return float(np.abs(numerator / mass[:, None] - truth / mass[:, None]).max()
                     / np.abs(truth / mass[:, None]).max())

    def csr(rows, cols, values, shape):
        return tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=tf.constant(np.stack([rows, cols], 1), tf.int64),
            values=tf.constant(values, tf.float32), dense_shape=tf.constant(shape, tf.int64))

    for name, chunk, transposed in (("sparse, query-major", SPARSE_QUERIES, False),
                                    ("sparse, reference-major", n, True)):
        mats = []
        for start in range(0, n, chunk):
            keep = (query >= start) & (query < start + chunk)
            q, r, v = query[keep] - start, ref[keep], p[keep]
            size = min(chunk, n - start)
            if transposed:  # CSR rows must ascend: sorted by reference point
                o = np.lexsort((q, r))
                mats.append(csr(r[o], q[o], v[o], [m, size]))
            else:
                mats.append(csr(q, r, v, [size, m]))

        def product(mats=mats, transposed=transposed):
            return tf.concat([tf.raw_ops.SparseMatrixMatMul(a=a, b=z, transpose_a=transposed)
                              for a in mats], 0)

        out[name] = (cpu_seconds(product, reps=reps), check(product().numpy()))

    for g in block_sizes:
        blocks = [np.unique(np.concatenate(near[s:s + g])) for s in range(0, n, g)]
        width = max(len(b) for b in blocks)
        rows = np.stack([np.pad(b, (0, width - len(b)), constant_values=b[0]) for b in blocks])
        # Every row of the block's union, weighted for every query of the block (padding: 0).
        d2 = ((queries.reshape(len(blocks), g, 1, 2) - x_sorted[rows][:, None]) ** 2).sum(-1)
        w = np.where(np.arange(width)[None, None] < np.array([len(b) for b in blocks])[:, None, None],
                     np.exp(-d2 * inv), 0.0)
        weights, gathered = tf.constant(w, tf.float32), tf.constant(rows)

        def blocked(weights=weights, gathered=gathered):
            return tf.matmul(weights, tf.gather(z, gathered))  # [G, g, U] x [G, U, Z]

        # Checked on two blocks against float64 over the same rows (the union reaches past
        # the radius, so its weights are not the floors' pairs).
        got = blocked().numpy()[:2]
        truth = np.einsum("bgu,buz->bgz", w[:2], z_sorted[rows[:2]].astype(np.float64))
        norm = w[:2].sum(-1)[..., None]
        diff = float(np.abs(got / norm - truth / norm).max() / np.abs(truth / norm).max())
        out[f"blocked {g}"] = (cpu_seconds(blocked, reps=reps), diff)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="an npVAE run (its reference set, z_dim "
                        "and serving lengthscale); default: a synthetic clustered set")
    parser.add_argument("--quick", action="store_true", help="smoke run: small M and Z")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per row (median)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    check_out(parser, args.out, args.quick)
    run = load_npvae_run(parser, args.run)

    import numpy as np
    import tensorflow as tf

    from npvae_tf.core.config import Config
    from npvae_tf.serving.module import ServingModule
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import ReferenceSet
    from npvae_tf.runs.x_density import XDensity

    m, z_dim = (5000, 16) if args.quick else (55000, 500)
    rng = np.random.default_rng(m)  # as bench_indexed_kernel.py: the same 1,024 queries
    if run is not None:
        x, z, l = run.reference.x, run.reference.z_mean, run.lengthscale
        source = f"run {args.run}"
    else:
        x, _ = clustered(m)
        z = rng.normal(size=(m, z_dim)).astype(np.float32)
        # --quick: fewer neighbours, so that the grid still helps at the small M.
        l, source = lengthscale_for(x, target=30 if args.quick else 241), "synthetic clustered"
    queries = (x[rng.integers(0, len(x), BATCH)]
               + rng.normal(size=(BATCH, 2)).astype(np.float32) * l).astype(np.float32)
    model = build_model(Config(z_dim=z.shape[1], hidden=(64,) if args.quick else (500, 500)))
    reference = ReferenceSet(z_mean=z, labels=np.zeros(len(x), np.int64), x=x)
    density = XDensity.fit(x[:5000], 0)
    modules = {kind: ServingModule(model, reference, density=density, lengthscale=l,
                                   indexed=kind == "indexed") for kind in ("indexed", "exact")}
    index = modules["indexed"].index
    if index is None:
        sys.exit("bench_kernel_floor.py: error: the grid index is not usable for this set")
    q = tf.constant(queries)
    seconds = {kind: cpu_seconds(tf.function(module._kernel_mean), q, reps=args.reps)
               for kind, module in modules.items()}
    exact_z = modules["exact"]._kernel_mean(q).numpy()
    decoder = tf.function(lambda z_: model.x_path_likelihood(z_).mean())
    seconds["decoder"] = cpu_seconds(decoder, tf.constant(exact_z), reps=args.reps)
    # Z-ordered, as the indexed pass takes them, so that the chunks and blocks are compact.
    from npvae_tf.model.grid_search import _tile_ids, _z_order

    _, row, col = (t.numpy() for t in _tile_ids(q, index, 1))
    order = np.argsort(_z_order(tf.constant(row - row.min()), tf.constant(col - col.min())).numpy(),
                       kind="stable")
    x_sorted, z_sorted = x[index.order].astype(np.float64), z[index.order]
    found = floors(x_sorted, z_sorted, queries[order].astype(np.float64), l, index.radius,
                   args.reps, (32, 64) if args.quick else (16, 32, 64, 128))
    pairs = found.pop("pairs per query")

    base = seconds["exact"] + seconds["decoder"]
    print(f"M = {len(x):,} ({source}), Z = {z.shape[1]}, l = {l:.4g}, batch {BATCH:,}; "
          f"{index!r}; {pairs:,.0f} reference points within the visited radius per query")
    print(f"decoder alone: {seconds['decoder']:.3f} CPU-s per batch (paid by every kernel)\n")
    print("| kernel, alone | CPU-s per batch | max rel diff in z~ | generate_from_x ceiling vs exact |")
    print("|---|---:|---:|---:|")
    indexed_z = modules["indexed"]._kernel_mean(q).numpy()
    rows = [("exact", seconds["exact"], None),
            ("indexed (as served)", seconds["indexed"],
             float(np.abs(indexed_z - exact_z).max() / np.abs(exact_z).max()))]
    rows += [(f"floor: {name}", s, diff) for name, (s, diff) in found.items()]
    results = {"M": len(x), "Z": int(z.shape[1]), "source": source, "lengthscale": float(l),
               "index": repr(index), "pairs_per_query": pairs, "batch": BATCH,
               "decoder_cpu_s": seconds["decoder"], "rows": []}
    for name, s, diff in rows:
        ceiling = base / (s + seconds["decoder"])
        print(f"| {name} | {s:.3f} | {'' if diff is None else f'{diff:.1e}'} | {ceiling:.1f}x |")
        results["rows"].append({"kernel": name, "cpu_s": s, "max_rel_diff": diff,
                                "ceiling_vs_exact": ceiling})
    best = max(results["rows"][2:], key=lambda r: r["ceiling_vs_exact"])
    print(f"\nbest {best['kernel']}: at most {best['ceiling_vs_exact']:.1f}x the exact "
          f"kernel (target 10x)")
    if args.out:
        write_out(args.out, results)


if __name__ == "__main__":
    main()
