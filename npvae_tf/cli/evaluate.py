"""Evaluate run folders on the test set: python evaluate.py --plots RUN_DIR [RUN_DIR ...]

Writes metrics.json (and with --plots the paper's figures) into RUN_DIR/eval/ (or --out);
several runs also get comparison.md, comparison.json and comparison figures.
"""

import time

from npvae_tf.cli import common as cli


def parse_args(argv=None):
    parser = cli.parser("evaluate.py", __doc__)
    add = parser.add_argument
    add("runs", nargs="*", metavar="RUN_DIR",
        help="run folders made by train.py (default: the most recent under --runs_root)")
    add("--plots", action="store_true",
        help="also draw the figures (PNG); without it only metrics are computed")
    add("--out", metavar="DIR", default=None,
        help="output folder (default RUN_DIR/eval); with several runs: one subfolder per run "
             "and the comparison in DIR (default comparison folder: <parent of the "
             "runs>/comparison)")
    add("--runs_root", metavar="DIR", default="runs",
        help="where to look for the most recent run (default: %(default)s)")
    add("--data", "--data_dir", dest="data", metavar="PATH", default=None,
        help="the data the runs were trained on, if it moved (default: where data.json says)")
    cli.add_evaluation_flags(parser)  # --iw_samples, --eval_seed, ... (shared with reproduce.py)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from npvae_tf.evaluation.outputs import EvaluationError, check_outputs
    from npvae_tf.runs.layout import RunError, find_latest_run

    try:  # the run folders and the output folders, before TensorFlow starts
        runs = args.runs or [find_latest_run(args.runs_root)]
        check_outputs(runs, args.out)
    except (RunError, EvaluationError) as e:
        cli.fail("evaluate.py", str(e))
    from npvae_tf.core.config import ConfigError
    from npvae_tf.data.datasets import DataError
    from npvae_tf.evaluation.evaluate import evaluate

    started = time.time()
    settings = cli.settings_from_args(args, plots=args.plots)
    try:
        evaluate(runs, out=args.out, data=args.data, settings=settings)
    except (EvaluationError, DataError, ConfigError, RunError) as e:
        cli.fail("evaluate.py", str(e))
    print(f"\nevaluated {len(runs)} run(s) in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
