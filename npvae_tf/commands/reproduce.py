"""Reproduce the paper: train VAE and npVAE at several Z, evaluate them, write docs/results.md.

    python reproduce.py                       # Z = 2, 20, 500 with the default epochs
    python reproduce.py --z_dims 2 500 --epochs 20

Finished runs are kept and interrupted ones resume, so rerunning the command continues.
"""

import argparse
import shlex
import sys
import time

from npvae_tf import cli
from npvae_tf.config import MODELS, Config


def parse_args(argv=None):
    d = Config()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--z_dims", type=cli.positive_int, nargs="+", default=[2, 20, 500],
                        help="latent sizes Z to train (default: 2 20 500)")
    parser.add_argument("--models", choices=MODELS, nargs="+", default=["vae", "npvae"],
                        help="models to train at each Z (default: vae npvae)")
    parser.add_argument("--epochs", type=cli.positive_int, default=d.epochs,
                        help="training epochs of every run")
    parser.add_argument("--hidden", type=cli.positive_int, nargs="+", default=list(d.hidden),
                        help="hidden layer widths of every MLP")
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed")
    parser.add_argument("--train_examples", type=int, default=None,
                        help="use only the first N training examples (quick runs)")
    parser.add_argument("--validation_examples", type=int, default=d.validation_examples,
                        help="validation images taken from the end of the training file")
    parser.add_argument("--runs_dir", default="runs/reproduce",
                        help="where the run folders go (default: runs/reproduce)")
    parser.add_argument("--docs", default="docs",
                        help="where results.md and its figures go (default: docs)")
    parser.add_argument("--data_dir", default=None,
                        help="MNIST folder (default: $NPVAE_DATA_DIR, the Keras cache, a download)")
    cli.add_evaluation_flags(parser)
    args = parser.parse_args(argv)
    try:
        base = Config(epochs=args.epochs, hidden=tuple(args.hidden), seed=args.seed,
                      train_examples=args.train_examples,
                      validation_examples=args.validation_examples)
    except ValueError as e:
        parser.error(str(e))
    return args, base


def main(argv=None):
    args, base = parse_args(argv)
    cli.quiet_tensorflow()
    from npvae_tf.config import ConfigError
    from npvae_tf.data import DataError
    from npvae_tf.evaluation import EvaluationError, evaluate
    from npvae_tf.experiments import run_grid, write_results
    from npvae_tf.training import TrainingError

    started = time.time()
    command = "python " + " ".join(shlex.quote(a) for a in ["reproduce.py", *sys.argv[1:]])
    try:
        # Progress: a line per run and per epoch, then per evaluation stage, with the time
        # since the start (an hour of training is otherwise silent).
        paths = run_grid(base, args.models, args.z_dims, args.runs_dir, args.data_dir,
                         verbose=1, started=started)
        summary = evaluate(paths, out=None, data_dir=args.data_dir,
                           settings=cli.settings_from_args(args, plots=True), started=started)
        path = write_results(summary, paths, args.docs, command, time.time() - started)
    except (DataError, ConfigError, TrainingError, EvaluationError) as e:
        cli.fail("reproduce.py", str(e))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
