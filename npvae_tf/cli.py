"""Command-line plumbing shared by train.py, evaluate.py and export.py."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import NoReturn

from npvae_tf.config import MODELS, X_PATH_DECODERS, Config, ConfigError


from npvae_tf.quiet import NO_GPU_NOISE, STARTUP_NOISE, quiet_tensorflow  # noqa: F401


# The commands, by their script name in a checkout and their console-script name (pip).
COMMANDS = {"train.py": "npvae-train", "evaluate.py": "npvae-evaluate",
            "export.py": "npvae-export", "reproduce.py": "npvae-reproduce"}


def prog(script: str) -> str:
    """The command's name as it was invoked: ``npvae-train`` when run as the console script,
    ``train.py`` as the script (also ``python -m npvae_tf.commands.train``); ``script`` when
    run some other way (a test calling ``main``)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked in (script, COMMANDS.get(script)) else script


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and adds each flag's default to its help
    (``(default: 500)``), unless the help already says what the default is or there is none
    to show (a switch that is off, a value that is unset)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


def parser(script: str, description: str) -> argparse.ArgumentParser:
    """An argument parser named as the command was invoked, showing defaults in --help."""
    return argparse.ArgumentParser(prog=prog(script), description=description,
                                   formatter_class=HelpFormatter)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`Config` field; defaults come from the dataclass."""
    d = Config()
    parser.add_argument("--model", choices=MODELS, default=d.model,
                        help="npvae: nonparametric VAE (paper eq. 5); vae: standard VAE")
    parser.add_argument("--z_dim", type=int, default=d.z_dim, help="latent dimension Z")
    parser.add_argument("--x_dim", type=int, default=d.x_dim,
                        help="dimension of the kernel's embedding X (npVAE)")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden),
                        help="hidden layer widths of every MLP")
    parser.add_argument("--dropout", type=float, default=d.dropout,
                        help="dropout rate (the paper's keep-probability 0.9 = rate 0.1)")
    parser.add_argument("--batch_size", type=int, default=d.batch_size,
                        help="global mini-batch size (>= 2)")
    parser.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    parser.add_argument("--match_weight", type=float, default=d.match_weight,
                        help="weight of ||E[z_i] - z~_i||^2 (1: paper; 0: plain VAE objective)")
    parser.add_argument("--x_path_weight", type=float, default=d.x_path_weight,
                        help="weight of the X-path term -log p(y_i | z~_i), each image decoded "
                             "from its kernel prediction (0: paper; see README 'Schemes')")
    parser.add_argument("--x_path_decoder", choices=X_PATH_DECODERS, default=d.x_path_decoder,
                        help="decode z~ with the model's decoder or with a decoder of its own")
    parser.add_argument("--x_path_stop_gradient", action="store_true",
                        help="the X-path term does not train the VAE's encoder (E[z_j] held "
                             "constant)")
    parser.add_argument("--initial_lengthscale", type=float, default=d.initial_lengthscale,
                        help="initial kernel lengthscale l (learned)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--binarize", action="store_true",
                        help="dynamically binarise training images")
    parser.add_argument("--train_examples", type=int, default=None,
                        help="use only the first N training examples (quick runs; default: all)")
    parser.add_argument("--validation_examples", type=int, default=d.validation_examples,
                        help="validation images taken from the end of the training file")
    parser.add_argument("--jit_compile", action="store_true", help="compile steps with XLA")


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    try:
        return Config(model=args.model, z_dim=args.z_dim, x_dim=args.x_dim,
                      hidden=tuple(args.hidden), dropout=args.dropout,
                      batch_size=args.batch_size, learning_rate=args.lr, epochs=args.epochs,
                      match_weight=args.match_weight, x_path_weight=args.x_path_weight,
                      x_path_decoder=args.x_path_decoder,
                      x_path_stop_gradient=args.x_path_stop_gradient,
                      initial_lengthscale=args.initial_lengthscale, seed=args.seed,
                      binarize=args.binarize, train_examples=args.train_examples,
                      validation_examples=args.validation_examples,
                      jit_compile=args.jit_compile)
    except ConfigError as e:
        parser.error(flag_message(str(e)))


# Config fields whose command-line flag has another name.
FLAGS = {"learning_rate": "lr"}


def flag_message(message: str) -> str:
    """A Config error as the command line says it: ``learning_rate must be > 0`` becomes
    ``--lr must be > 0`` (the user typed --lr), ``z_dim must ...`` ``--z_dim must ...``."""
    field = message.split(" ", 1)[0]
    if field in {f.name for f in dataclasses.fields(Config)}:
        return f"--{FLAGS.get(field, field)}{message[len(field):]}"
    return message


def fail(script: str, message: str, code: int = 1) -> NoReturn:
    """``PROG: error: message`` on stderr (PROG as invoked, see :func:`prog`), then exit."""
    print(f"{prog(script)}: error: {message}", file=sys.stderr)
    sys.exit(code)


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation settings (:class:`npvae_tf.evaluation.Settings`) as flags."""
    parser.add_argument("--iw_samples", type=positive_int, default=100,
                        help="draws k of the importance-weighted log-likelihood; costs k decoder "
                             "passes over the test set (default %(default)s; k=1 is the ELBO)")
    parser.add_argument("--eval_seed", type=int, default=0, help="seed of every evaluation draw")
    parser.add_argument("--trust_subset", type=positive_int, default=2000,
                        help="test images used for trustworthiness (O(n^2) memory; "
                             "default %(default)s)")
    parser.add_argument("--generated", type=positive_int, default=10000,
                        help="images generated per source for the sample metrics "
                             "(default %(default)s)")
    parser.add_argument("--pairs", type=positive_int, default=100,
                        help="test-image pairs for the interpolation metric (default %(default)s)")
    parser.add_argument("--classifier_cache", default=None,
                        help="folder of the cached evaluation classifier (default: "
                             "$NPVAE_CACHE_DIR, else ~/.cache/npvae_tf)")
    parser.add_argument("--classifier_epochs", type=positive_int, default=None,
                        help="epochs of the evaluation classifier when it must be trained "
                             "(default 3)")


def settings_from_args(args: argparse.Namespace, plots: bool):
    from npvae_tf.evaluation import Settings

    defaults = Settings()
    return Settings(iw_samples=args.iw_samples, seed=args.eval_seed,
                    trust_subset=args.trust_subset, generated=args.generated, pairs=args.pairs,
                    plots=plots, classifier_cache=args.classifier_cache,
                    classifier_epochs=args.classifier_epochs or defaults.classifier_epochs)
