"""Train a VAE or nonparametric VAE on MNIST: ``python train.py --z_dim 500``."""

import argparse

from npvae_tf import cli
from npvae_tf.config import STRATEGIES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    cli.add_config_flags(parser)
    parser.add_argument("--data_dir", default=None,
                        help="folder with the MNIST IDX files or mnist.npz "
                             "(default: $NPVAE_DATA_DIR, the Keras cache, then a download)")
    parser.add_argument("--out", default=None,
                        help="run folder (default: runs/MODEL-zZ-TIMESTAMP); rerun to resume")
    parser.add_argument("--strategy", default="auto",
                        choices=STRATEGIES,
                        help="tf.distribute strategy; auto: multi_worker if TF_CONFIG is set, "
                             "mirrored with several GPUs (or --cpu_replicas > 1), one_device "
                             "on one GPU, default on CPU")
    parser.add_argument("--cpu_replicas", type=cli.positive_int, default=1,
                        help="split the CPU into N logical devices (try multi-replica "
                             "training without GPUs)")
    parser.add_argument("--export", default=None, metavar="EXPORT_DIR",
                        help="after training, also write a SavedModel for serving here "
                             "(same as: python export.py RUN_DIR --out EXPORT_DIR)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = cli.config_from_args(parser, args)
    if args.cpu_replicas > 1 and config.batch_size % args.cpu_replicas:
        parser.error(f"batch_size {config.batch_size} does not split evenly over "
                     f"--cpu_replicas {args.cpu_replicas}")
    return args, config


def main(argv=None):
    args, config = parse_args(argv)
    cli.quiet_tensorflow()
    from npvae_tf.config import ConfigError
    from npvae_tf.runs import RunError
    from npvae_tf.data import DataError
    from npvae_tf.distribute import make_strategy
    from npvae_tf.training import TrainingError, check_run_dir, format_metrics, train

    # The strategy comes first: it configures devices before anything else touches them.
    strategy = make_strategy(args.strategy, args.cpu_replicas)
    run_dir = args.out or cli.default_run_dir(config)
    if args.export:  # fail before training, not after
        from npvae_tf.export import ExportError, check_target, export_run

        try:
            check_target(args.export)
        except ExportError as e:
            cli.fail("train.py", str(e))
    try:
        if check_run_dir(config, run_dir):
            print(f"{run_dir}: already trained; nothing to do.")
        metrics = train(config, run_dir, data_dir=args.data_dir, verbose=0 if args.quiet else 1,
                        strategy=strategy)
    except (DataError, ConfigError, RunError, TrainingError) as e:
        cli.fail("train.py", str(e))
    if not metrics:  # a worker other than the chief: the chief reports
        return
    print(f"run folder: {run_dir}")
    print(format_metrics(metrics))
    if args.export:
        try:
            print(f"SavedModel: {export_run(run_dir, args.export)}")
        except (ExportError, ConfigError, OSError) as e:
            cli.fail("train.py", str(e))


if __name__ == "__main__":
    main()
