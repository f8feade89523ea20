"""Command-line plumbing shared by train.py, evaluate.py and export.py."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Callable, Dict, List, NoReturn, Optional, Sequence

from npvae_tf.core.config import Config, ConfigError
from npvae_tf.core.objective import OBJECTIVE_FIELDS, SCHEMES


# The commands, by their script name in a checkout and their console-script name (pip).
COMMANDS = {"train.py": "npvae-train", "evaluate.py": "npvae-evaluate",
            "export.py": "npvae-export", "reproduce.py": "npvae-reproduce"}


def prog(script: str) -> str:
    """The command's name as it was invoked: ``npvae-train`` when run as the console script,
    ``train.py`` as the script (also ``python -m npvae_tf.cli.train``); ``script`` when
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
    # allow_abbrev=False: a mistyped flag (--plot for --plots) is an error, not a guess.
    return argparse.ArgumentParser(prog=prog(script), description=description,
                                   formatter_class=HelpFormatter, allow_abbrev=False)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _field_type(name: str):
    """The scalar type of a Config field (``Optional[int]`` and ``Tuple[int, ...]``: int)."""
    hint = typing.get_type_hints(Config)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def flag_name(field: dataclasses.Field) -> str:
    """``--name`` of a Config field's flag (its ``flag`` metadata, else the field's name)."""
    return "--" + (field.metadata.get("flag") or field.name)


def config_flag_fields(names: Optional[Sequence[str]] = None) -> List[dataclasses.Field]:
    """The Config fields that have a flag (``names``: only those): the model and training
    settings, then the objective's knobs."""
    fields = [f for f in dataclasses.fields(Config) if f.metadata.get("flag", True)
              and (names is None or f.name in names)]
    return sorted(fields, key=lambda f: f.name in OBJECTIVE_FIELDS)


def add_config_flags(parser: argparse.ArgumentParser, names: Optional[Sequence[str]] = None,
                     types: Optional[Dict[str, Callable]] = None,
                     helps: Optional[Dict[str, str]] = None) -> None:
    """One flag per :class:`Config` field, generated from the dataclass: name, type, choices,
    default and help from it (``helps`` overrides the help) with the
    default shown. ``names``: only these fields; ``types``: a flag's type instead of the
    field's (e.g. :func:`positive_int`)."""
    defaults, types, helps = Config(), types or {}, helps or {}
    for field in config_flag_fields(names):
        default = getattr(defaults, field.name)
        kind = _field_type(field.name)
        text = helps.get(field.name, field.metadata["help"])
        flag = flag_name(field)
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
        if "choices" in field.metadata:
            options.update(choices=field.metadata["choices"])
            del options["type"], options["metavar"]
        parser.add_argument(flag, **options)


def add_scheme_flag(parser: argparse.ArgumentParser) -> None:
    """``--scheme NAME``: a named objective (:data:`~npvae_tf.core.objective.SCHEMES`) whose
    settings become the flags' defaults; a flag given explicitly still wins. Call before
    parsing with :func:`parse_with_scheme`."""
    parser.add_argument("--scheme", choices=list(SCHEMES), default=None,
                        help="a named objective (docs/schemes.md): its settings become the "
                             "defaults of the flags below, and a flag given explicitly still "
                             "wins (default: the paper's objective)")


def parse_with_scheme(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parses ``argv`` twice: once for ``--scheme``, then with its settings as defaults."""
    known, _ = parser.parse_known_args(argv)
    if known.scheme:
        parser.set_defaults(**SCHEMES[known.scheme].changes)
    return parser.parse_args(argv)


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
    name = message.split(" ", 1)[0]
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if name in fields:
        return f"{flag_name(fields[name])}{message[len(name):]}"
    return message


def fail(script: str, message: str, code: int = 1) -> NoReturn:
    """``PROG: error: message`` on stderr (PROG as invoked, see :func:`prog`), then exit."""
    print(f"{prog(script)}: error: {message}", file=sys.stderr)
    sys.exit(code)


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation settings (:class:`npvae_tf.evaluation.settings.Settings`) as flags; the
    defaults are ``Settings()``'s."""
    from npvae_tf.evaluation.settings import Settings

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


def add_data_flags(parser: argparse.ArgumentParser, what: str = "data to train on") -> None:
    """``--data`` (alias ``--data_dir``), ``--labels`` and ``--label_column``."""
    parser.add_argument("--data", "--data_dir", dest="data", metavar="PATH", default=None,
                        help=f"{what}: a folder of MNIST-layout IDX files or of images (one "
                             "subfolder per class, or none), a .npz (x_train, y_train, x_test, "
                             "y_test), a .npy or a .csv (default: MNIST from $NPVAE_DATA_DIR, "
                             "the Keras cache, then a download); see docs/data.md")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="labels of a .npy: a .npy or a text file with one per line")
    parser.add_argument("--label_column", metavar="NAME", default=None,
                        help="the column of a .csv that holds the labels")


def data_spec_from_args(args: argparse.Namespace):
    from npvae_tf.data.datasets import DataSpec

    return DataSpec(args.data, args.labels, args.label_column)


def settings_from_args(args: argparse.Namespace, plots: bool):
    from npvae_tf.evaluation.settings import Settings

    return Settings(iw_samples=args.iw_samples, seed=args.eval_seed,
                    trust_subset=args.trust_subset, generated=args.generated, pairs=args.pairs,
                    plots=plots, classifier_cache=args.classifier_cache,
                    classifier_epochs=args.classifier_epochs)
