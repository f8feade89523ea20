"""Command-line plumbing shared by train.py, evaluate.py and export.py."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Callable, Dict, List, NoReturn, Optional, Sequence

from npvae_tf.config import MODELS, X_PATH_DECODERS, Config, ConfigError


# TensorFlow's start-up lines that say nothing a user must act on. They are printed by C++
# code while TensorFlow loads, before its logging is configured, so TF_CPP_MIN_LOG_LEVEL
# does not reach them: they are filtered out of what the import writes to stderr instead.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory", "computation placer already registered",
    "TensorRT",
)
# Said when the machine has no GPU; filtered only when TensorFlow indeed finds none.
NO_GPU_NOISE = ("failed call to cuInit",)


def quiet_tensorflow() -> None:
    """Imports TensorFlow without its start-up chatter (keeps every other line it prints).

    Must run before anything imports TensorFlow: sets ``TF_CPP_MIN_LOG_LEVEL=2`` (no INFO
    or WARNING lines from its C++ logging once configured; errors stay), then imports it and
    lists the GPUs (where CUDA reports a machine without one) with stderr sent to a file,
    and writes back every line that is not in :data:`STARTUP_NOISE` (or, on a machine
    without GPUs, :data:`NO_GPU_NOISE`). Listing GPUs does not initialise devices, so
    ``tf.distribute`` can still configure them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        except BaseException:
            gpus = None
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            noise = STARTUP_NOISE + (NO_GPU_NOISE if gpus == [] else ())
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(marker in line for marker in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# The command-line flag of each Config field: its help (the default is added), and the
# fields whose flag has another name or none. A Config field without help here still gets a
# flag, named after it.
CONFIG_FLAG_HELP = {
    "model": "npvae: nonparametric VAE (paper eq. 5); vae: standard VAE",
    "z_dim": "latent dimension Z",
    "x_dim": "dimension of the kernel's embedding X (npVAE)",
    "hidden": "hidden layer widths of every MLP",
    "dropout": "dropout rate (the paper's keep-probability 0.9 = rate 0.1)",
    "batch_size": "global mini-batch size (>= 2)",
    "learning_rate": "Adam learning rate",
    "epochs": "training epochs",
    "match_weight": "weight of ||E[z_i] - z~_i||^2 (1: paper; 0: plain VAE objective)",
    "x_path_weight": "weight of the X-path term -log p(y_i | z~_i), each image decoded from its "
                     "kernel prediction (0: paper; see README 'Schemes')",
    "x_path_decoder": "decode z~ with the model's decoder or with a decoder of its own",
    "x_path_stop_gradient": "the X-path term does not train the VAE's encoder (E[z_j] held "
                            "constant)",
    "x_path_hold_decoder": "with the shared decoder, the X-path term holds the decoder's "
                           "weights too: it trains only X and the lengthscale",
    "x_path_decoder_epochs": "epochs of the fit of a separate X-path decoder after training "
                             "(with --x_path_weight 0: the umap-own scheme)",
    "neighbour_weight": "weight of the neighbour term: UMAP's cross-entropy between the "
                        "training images' k-NN graph and X (0: off; the umap schemes: 1)",
    "n_neighbors": "neighbours per image in that graph",
    "min_dist": "UMAP's min_dist: how tightly X packs neighbours",
    "landmark_weight": "weight of the landmark term ||x - u||^2: X regresses the training "
                       "images' UMAP layout u (0: off)",
    "initial_lengthscale": "initial kernel lengthscale l (learned)",
    "seed": "random seed",
    "binarize": "dynamically binarise training images",
    "train_examples": "use only the first N training examples (quick runs)",
    "validation_examples": "validation images taken from the end of the training file",
    "jit_compile": "compile steps with XLA",
}
# Config fields whose command-line flag has another name.
FLAGS = {"learning_rate": "lr"}
NO_FLAG = ("image_shape",)  # set by the data, not on the command line
CHOICES = {"model": MODELS, "x_path_decoder": X_PATH_DECODERS}


def _field_type(name: str):
    """The scalar type of a Config field (``Optional[int]`` and ``Tuple[int, ...]``: int)."""
    hint = typing.get_type_hints(Config)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def config_flag_fields(names: Optional[Sequence[str]] = None) -> List[dataclasses.Field]:
    """The Config fields that have a flag (``names``: only those), in the dataclass's order."""
    return [f for f in dataclasses.fields(Config)
            if f.name not in NO_FLAG and (names is None or f.name in names)]


def add_config_flags(parser: argparse.ArgumentParser, names: Optional[Sequence[str]] = None,
                     types: Optional[Dict[str, Callable]] = None,
                     helps: Optional[Dict[str, str]] = None) -> None:
    """One flag per :class:`Config` field, generated from the dataclass: name, type, choices
    and default from it, help from :data:`CONFIG_FLAG_HELP` (``helps`` overrides) with the
    default shown. ``names``: only these fields; ``types``: a flag's type instead of the
    field's (e.g. :func:`positive_int`)."""
    defaults, types, helps = Config(), types or {}, helps or {}
    for field in config_flag_fields(names):
        default = getattr(defaults, field.name)
        kind = _field_type(field.name)
        text = helps.get(field.name, CONFIG_FLAG_HELP.get(field.name, field.name))
        flag = f"--{FLAGS.get(field.name, field.name)}"
        if kind is bool:
            if default:
                raise TypeError(f"Config.{field.name}: a flag can only switch a False default on")
            parser.add_argument(flag, dest=field.name, action="store_true", help=text)
            continue
        options = dict(dest=field.name, type=types.get(field.name, kind),
                       metavar=flag[2:].upper(), help=text + " (default: %(default)s)")
        if isinstance(default, tuple):
            options.update(nargs="+", default=list(default))
        else:
            options.update(default=default)
        if field.name in CHOICES:
            options.update(choices=CHOICES[field.name])
            del options["type"], options["metavar"]
        parser.add_argument(flag, **options)


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     names: Optional[Sequence[str]] = None) -> Config:
    """The Config of the flags :func:`add_config_flags` added (other fields: defaults)."""
    try:
        return Config(**{f.name: getattr(args, f.name) for f in config_flag_fields(names)})
    except ConfigError as e:
        parser.error(flag_message(str(e)))


def flag_message(message: str) -> str:
    """A Config error as the command line says it: ``learning_rate must be > 0`` becomes
    ``--lr must be > 0`` (the user typed --lr), ``z_dim must ...`` ``--z_dim must ...``."""
    field = message.split(" ", 1)[0]
    if field in {f.name for f in dataclasses.fields(Config)}:
        return f"--{FLAGS.get(field, field)}{message[len(field):]}"
    return message


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation settings (:class:`npvae_tf.evaluation.Settings`) as flags; the
    defaults are ``Settings()``'s."""
    from npvae_tf.settings import Settings

    d = Settings()
    parser.add_argument("--iw_samples", type=positive_int, default=d.iw_samples,
                        help="draws k of the importance-weighted log-likelihood; costs k decoder "
                             "passes over the test set (default %(default)s; k=1 is the ELBO)")
    parser.add_argument("--eval_seed", type=int, default=d.seed,
                        help="seed of every evaluation draw")
    parser.add_argument("--trust_subset", type=positive_int, default=d.trust_subset,
                        help="test images used for trustworthiness (O(n^2) memory; "
                             "default %(default)s)")
    parser.add_argument("--generated", type=positive_int, default=d.generated,
                        help="images generated per source for the sample metrics "
                             "(default %(default)s)")
    parser.add_argument("--pairs", type=positive_int, default=d.pairs,
                        help="test-image pairs for the interpolation metric (default %(default)s)")
    parser.add_argument("--classifier_cache", default=d.classifier_cache,
                        help="folder of the cached evaluation classifier (default: "
                             "$NPVAE_CACHE_DIR, else ~/.cache/npvae_tf)")
    parser.add_argument("--classifier_epochs", type=positive_int, default=d.classifier_epochs,
                        help="epochs of the evaluation classifier when it must be trained "
                             "(default %(default)s)")


def settings_from_args(args: argparse.Namespace, plots: bool):
    from npvae_tf.settings import Settings

    return Settings(iw_samples=args.iw_samples, seed=args.eval_seed,
                    trust_subset=args.trust_subset, generated=args.generated, pairs=args.pairs,
                    plots=plots, classifier_cache=args.classifier_cache,
                    classifier_epochs=args.classifier_epochs)
