"""Training-step time of each scheme against the plain VAE, measured side by side.

    .venv/bin/python benchmarks/bench_schemes.py              # MNIST, Z = 500, batch 128
    .venv/bin/python benchmarks/bench_schemes.py --quick      # smoke run; writes nothing

Each scheme's real training step (``model.fit``'s compiled train function on batches of the
real input pipeline: for the umap schemes with their graph draws) is timed in interleaved
rounds; the table gives the median step time and its ratio to the VAE's in the same run.
Results go to ``benchmarks/results/bench_schemes.md`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCHEMES = ("vae", "paper", "xpath", "umap", "umap-landmark")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--z_dim", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--data_dir", default=None, help="MNIST (default: $NPVAE_DATA_DIR ...)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny model and generated data; prints, writes nothing")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results",
                                                      "bench_schemes.md"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from npvae_tf.cli import common as cli

    cli.quiet_tensorflow()
    import numpy as np

    from npvae_tf.core.config import Config
    from npvae_tf.data.datasets import load_data
    from npvae_tf.data.pipeline import make_dataset
    from npvae_tf.reproduce.grid import SCHEMES as GRID
    from npvae_tf.model.vae import build_model
    from npvae_tf.data.neighbour_graph import graph_for_run, graph_key
    from npvae_tf.model.optimizers import FusedAdam

    if args.quick:
        rng = np.random.default_rng(0)
        images = (rng.random((600, 784)) > 0.7).astype(np.float32)
        sha, base = "quick", Config(z_dim=8, hidden=(32, 32))
        args.rounds, args.steps = 2, 3
    else:
        data = load_data(args.data_dir)
        images, sha, base = data.train.images, data.sha256, Config(z_dim=args.z_dim)
    import tempfile

    scratch = tempfile.mkdtemp(prefix="bench-schemes-")  # the graphs come from the cache
    runners = {}
    for name in SCHEMES:
        config = base.replace(**GRID[name].changes)
        graph = None
        if config.uses_neighbour_graph:
            key = graph_key(sha, config.n_neighbors, config.min_dist, config.seed,
                            config.x_dim if config.landmark_weight > 0 else 0)
            graph = graph_for_run(os.path.join(scratch, f"graph-{name}.npz"), images, key,
                                  log=lambda line: print(line, flush=True))
        model = build_model(config)
        model.compile(optimizer=FusedAdam(config.learning_rate))
        ds = make_dataset(images, config.batch_size, shuffle=True, seed=0, epochs=1000,
                          neighbours=graph)
        batches = iter(ds)
        model.make_train_function()
        step = model.train_function
        for _ in range(3):  # trace and warm up
            step(batches)
        runners[name] = (step, batches)
    times = {name: [] for name in SCHEMES}
    for _ in range(args.rounds):
        for name, (step, batches) in runners.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                out = step(batches)
            float(out["loss"])  # wait for the last step
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    median = {name: float(np.median(t)) for name, t in times.items()}
    lines = [f"| scheme | step ms (median of {args.rounds} rounds of {args.steps}) | × VAE |",
             "|---|---:|---:|"]
    lines += [f"| `{name}` | {median[name]:.1f} | {median[name] / median['vae']:.2f} |"
              for name in SCHEMES]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        with open(args.out, "w") as f:
            f.write(f"# Training step time by scheme\n\n`python benchmarks/bench_schemes.py` "
                    f"(Z = {base.z_dim}, batch {base.batch_size}, real MNIST batches; "
                    f"{time.strftime('%Y-%m-%d')}; load average "
                    f"{os.getloadavg()[0]:.1f} at the end).\n\n{table}\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
