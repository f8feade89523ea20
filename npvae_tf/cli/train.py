"""Train a VAE or nonparametric VAE on MNIST or your own data: ``python train.py --z_dim 500``.

Rerunning the same command resumes an interrupted run exactly where its last finished epoch
left it (and does nothing for a finished one): without --out, the run folder's name is made
from the configuration, so the same flags find the same folder.
"""

import sys

from npvae_tf.cli import common as cli
from npvae_tf.core.config import STRATEGIES
from npvae_tf.runs.layout import default_run_dir


def parse_args(argv=None):
    parser = cli.parser("train.py", __doc__)
    cli.add_scheme_flag(parser)
    cli.add_config_flags(parser)
    cli.add_data_flags(parser)
    parser.add_argument("--out", default=None,
                        help="run folder (default: runs/MODEL-zZ-<8 hex digits of the config>, "
                             "the same for the same flags); rerun to resume")
    parser.add_argument("--strategy", default="auto",
                        choices=STRATEGIES,
                        help="tf.distribute strategy; auto: multi_worker if TF_CONFIG is set, "
                             "mirrored with several GPUs (or --cpu_replicas > 1), one_device "
                             "on one GPU, default on CPU (default: %(default)s)")
    parser.add_argument("--cpu_replicas", type=cli.positive_int, default=1,
                        help="split the CPU into N logical devices (try multi-replica "
                             "training without GPUs)")
    parser.add_argument("--export", default=None, metavar="EXPORT_DIR",
                        help="after training, also write a SavedModel for serving here "
                             "(same as: python export.py RUN_DIR --out EXPORT_DIR)")
    parser.add_argument("--quiet", action="store_true",
                        help="no live progress line: one plain line per epoch only (what is "
                             "printed anyway when the output is not a terminal)")
    args = cli.parse_with_scheme(parser, argv)
    config = cli.config_from_args(parser, args)
    if args.cpu_replicas > 1 and config.batch_size % args.cpu_replicas:
        parser.error(f"batch_size {config.batch_size} does not split evenly over "
                     f"--cpu_replicas {args.cpu_replicas}")
    return args, config


def main(argv=None):
    args, config = parse_args(argv)
    from npvae_tf.data.datasets import DataError, read_raw

    spec = cli.data_spec_from_args(args)
    if args.out:  # a busy or unwritable folder is refused before the data is read
        _check_outputs(args, args.out)
    try:  # the data decides the shape of an example (and the run's name): read it first
        config = config.replace(image_shape=read_raw(spec).train_x.shape[1:])
    except DataError as e:
        from npvae_tf.runs.layout import is_finished, read_config

        finished = args.out or default_run_dir(config)
        if not is_finished(finished):
            cli.fail("train.py", str(e))
        # A finished run needs no data: rerunning its command says so, wherever the data is.
        config = config.replace(image_shape=read_config(finished).image_shape)
    # One line at a time even into a file or pipe (nohup, tee): a kill loses no finished line.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    run_dir = args.out or default_run_dir(config)
    try:
        _main(args, config, run_dir, spec)
    except KeyboardInterrupt:  # Ctrl-C: the backup of the last finished epoch is intact
        print(f"\ninterrupted: rerun the same command to resume {run_dir}", file=sys.stderr)
        sys.exit(130)


def _check_outputs(args, run_dir, config=None) -> bool:
    """Every output location, before TensorFlow starts (and, with ``--out``, before the data
    is read): a folder that is not this run's (given ``config``), a busy one, one that cannot
    be written, an export folder that is not an earlier export. Whether the run is finished."""
    from npvae_tf.runs.layout import RunError, check_for_training, is_finished
    from npvae_tf.runs.lock import RunLock
    from npvae_tf.runs.outputs import check_writable
    from npvae_tf.serving.folders import ExportError, check_target

    try:
        finished = check_for_training(config, run_dir) if config else is_finished(run_dir)
        RunLock(run_dir).check_free()
        if not finished:
            check_writable(run_dir, "run folder")
        if args.export:  # an existing folder that is not an earlier export: fail now
            check_writable(args.export, "export folder")
            check_target(args.export)
    except (RunError, ExportError) as e:
        cli.fail("train.py", str(e))
    return finished


def _main(args, config, run_dir, spec):
    from npvae_tf.runs.layout import RunError
    from npvae_tf.serving.folders import ExportError

    finished = _check_outputs(args, run_dir, config)
    from npvae_tf.core.config import ConfigError
    from npvae_tf.data.datasets import DataError
    from npvae_tf.training.distribute import make_strategy
    from npvae_tf.training.fit import TrainingError, fit_run, format_metrics

    # The strategy comes first: it configures devices before anything else touches them.
    strategy = make_strategy(args.strategy, args.cpu_replicas)
    if finished:
        print(f"{run_dir}: already trained; nothing to do.")
    try:
        metrics = fit_run(config, run_dir, data=spec, verbose=1 if args.quiet else 2,
                          strategy=strategy)
    except (DataError, ConfigError, RunError, TrainingError) as e:
        cli.fail("train.py", str(e))
    if not metrics:  # a worker other than the chief: the chief reports
        return
    print(f"run folder: {run_dir}")
    print(format_metrics(metrics))
    if args.export:
        from npvae_tf.serving.export import export_run

        try:
            print(f"SavedModel: {export_run(run_dir, args.export)}")
        except (ExportError, ConfigError, RunError, OSError) as e:
            cli.fail("train.py", str(e))


if __name__ == "__main__":
    main()
