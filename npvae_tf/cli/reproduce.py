"""Reproduce the paper: train each scheme at several Z, evaluate them, write docs/results.md.

    python reproduce.py                       # vae, paper and neighbour at Z = 2, 20, 500
    python reproduce.py --schemes vae paper --z_dims 2 500 --epochs 20
    python reproduce.py --runs vae:2 vae:500 umap:500       # exactly these runs

Schemes (npvae_tf/core/objective.py, docs/schemes.md): vae, paper and the recommended
neighbour by default; the superseded steps to it (xpath, umap, umap-landmark, umap-own) by name.

Finished runs are kept and interrupted ones resume, so rerunning the command continues.
"""

import argparse
import json
import shlex
import sys
import time

from npvae_tf.cli import common as cli
from npvae_tf.core.objective import DEFAULT_SCHEMES, SCHEMES

BASE_FIELDS = ("epochs", "hidden", "seed", "train_examples", "validation_examples", "likelihood",
               "test_fraction")


def run_spec(text: str):
    """``SCHEME:Z`` -> ``(scheme, z_dim)``."""
    scheme, _, z = text.partition(":")
    if scheme not in SCHEMES or not z.isdigit() or int(z) < 1:
        raise argparse.ArgumentTypeError(
            f"expected SCHEME:Z with SCHEME one of {', '.join(SCHEMES)} and Z >= 1, got {text!r}")
    return scheme, int(z)


def parse_args(argv=None):
    parser = cli.parser("reproduce.py", __doc__)
    parser.add_argument("--schemes", choices=list(SCHEMES), nargs="+",
                        default=list(DEFAULT_SCHEMES),
                        help="training schemes to run (default: %(default)s)")
    parser.add_argument("--z_dims", type=cli.positive_int, nargs="+", default=None,
                        help="latent sizes Z for every scheme (default: each scheme's own: "
                             + "; ".join(f"{k} {' '.join(map(str, v.z_dims))}"
                                         for k, v in SCHEMES.items()) + ")")
    parser.add_argument("--runs", type=run_spec, nargs="+", default=None, metavar="SCHEME:Z",
                        help="exactly these runs, e.g. vae:2 xpath:500 (instead of --schemes "
                             "and --z_dims)")
    # The Config fields reproduce.py sets for every run (the rest: each scheme's, or defaults).
    cli.add_config_flags(parser, BASE_FIELDS,
                         types={"epochs": cli.positive_int, "hidden": cli.positive_int},
                         helps={"epochs": "training epochs of every run", "seed": "training seed"})
    parser.add_argument("--runs_dir", default="runs/reproduce",
                        help="where the run folders go (default: runs/reproduce)")
    parser.add_argument("--docs", default="docs",
                        help="where results.md and its figures go (default: docs)")
    parser.add_argument("--earlier_results", default=None, metavar="RESULTS_JSON",
                        help="keep the runs of this earlier results.json that are not in this "
                             "grid's run folders (marked † in the table; default: none)")
    cli.add_data_flags(parser, "the data of every run")
    cli.add_evaluation_flags(parser)
    args = parser.parse_args(argv)
    return args, cli.config_from_args(parser, args, BASE_FIELDS)


def main(argv=None):
    args, base = parse_args(argv)
    from npvae_tf.core.config import ConfigError
    from npvae_tf.data.datasets import DataError, read_raw
    from npvae_tf.evaluation.evaluate import EvaluationError, evaluate
    from npvae_tf.reproduce.grid import grid, run_grid
    from npvae_tf.reproduce.results_page import write_results
    from npvae_tf.training.fit import TrainingError

    spec = cli.data_spec_from_args(args)
    try:  # the data decides the shape of an example
        base = base.replace(image_shape=read_raw(spec).train_x.shape[1:])
    except DataError as e:
        cli.fail("reproduce.py", str(e))
    started = time.time()
    earlier = None
    if args.earlier_results:
        try:
            with open(args.earlier_results) as f:
                earlier = json.load(f)
            if not isinstance(earlier.get("runs"), list):
                raise ValueError("it has no list of runs")
        except (OSError, ValueError) as e:
            cli.fail("reproduce.py", f"--earlier_results {args.earlier_results}: {e}")
    command = "python " + " ".join(shlex.quote(a) for a in ["reproduce.py", *sys.argv[1:]])
    try:
        pairs = args.runs or grid(args.schemes, args.z_dims)
        # Progress: a line per run and per epoch, then per evaluation stage, with the time
        # since the start (an hour of training is otherwise silent).
        paths = run_grid(base, pairs, args.runs_dir, spec, verbose=1, started=started)
        summary = evaluate(paths, out=None, data=args.data,
                           settings=cli.settings_from_args(args, plots=True), started=started)
        path = write_results(summary, paths, args.docs, command, time.time() - started,
                             earlier=earlier)
    except (DataError, ConfigError, TrainingError, EvaluationError) as e:
        cli.fail("reproduce.py", str(e))
    except KeyboardInterrupt:  # Ctrl-C: finished runs are kept, the interrupted one resumes
        print("\ninterrupted: rerun the same command to continue (finished runs are kept, "
              "the interrupted one resumes)", file=sys.stderr)
        sys.exit(130)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
