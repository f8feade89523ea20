"""Train a VAE or nonparametric VAE on MNIST: ``python train.py --z_dim 500``."""

import argparse

from npvae_tf import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_config_flags(parser)
    parser.add_argument("--data_dir", default=None,
                        help="folder with the MNIST IDX files or mnist.npz "
                             "(default: $NPVAE_DATA_DIR, the Keras cache, then a download)")
    parser.add_argument("--out", default=None,
                        help="run folder (default: runs/MODEL-zZ-TIMESTAMP); rerun to resume")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    return args, cli.config_from_args(parser, args)


def main(argv=None):
    args, config = parse_args(argv)
    cli.quiet_tensorflow()
    from npvae_tf.config import ConfigError
    from npvae_tf.data import DataError
    from npvae_tf.training import TrainingError, check_run_dir, format_metrics, train

    run_dir = args.out or cli.default_run_dir(config)
    try:
        if check_run_dir(config, run_dir):
            print(f"{run_dir}: already trained; nothing to do.")
        metrics = train(config, run_dir, data_dir=args.data_dir, verbose=0 if args.quiet else 1)
    except (DataError, ConfigError, TrainingError) as e:
        cli.fail("train.py", str(e))
    print(f"run folder: {run_dir}")
    print(format_metrics(metrics))


if __name__ == "__main__":
    main()
