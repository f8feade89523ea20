"""Command-line plumbing (npvae_tf/cli/common.py) and what every command checks before
TensorFlow loads."""

import subprocess
import sys

import pytest

from npvae_tf.cli import common as cli
from npvae_tf.core.config import Config
from npvae_tf.runs.layout import FINISHED_FILES
from tests.helpers import ROOT

# Runs a command's main() and says on stderr, last, whether TensorFlow was imported.
WRAPPER = """
import atexit, sys
atexit.register(lambda: print("TF loaded" if "tensorflow" in sys.modules else "TF not loaded",
                              file=sys.stderr))
from importlib import import_module
module = sys.argv[1]
sys.argv = [module + ".py", *sys.argv[2:]]
import_module("npvae_tf.cli." + module).main()
"""


def test_a_flag_is_never_guessed_from_its_prefix():
    parser = cli.parser("evaluate.py", "")
    parser.add_argument("--plots", action="store_true")
    with pytest.raises(SystemExit):
        parser.parse_args(["--plot"])
    assert parser.parse_args(["--plots"]).plots


def test_a_named_scheme_sets_the_defaults_and_explicit_flags_win():
    from npvae_tf.cli.train import parse_args

    _, config = parse_args(["--scheme", "umap-landmark", "--z_dim", "7"])
    assert (config.match_weight, config.neighbour_weight, config.landmark_weight) == (0, 1, 1)
    assert config.z_dim == 7 and config.scheme_name == "umap-landmark"
    _, config = parse_args(["--scheme", "umap-landmark", "--landmark_weight", "0"])
    assert config.landmark_weight == 0 and config.scheme_name == "umap"
    _, config = parse_args(["--match_weight", "0.5"])
    assert config.scheme_name is None and parse_args([])[1].scheme_name == "paper"


def test_config_errors_name_the_flag_the_user_typed():
    assert cli.flag_message("learning_rate must be > 0") == "--lr must be > 0"
    assert cli.flag_message("z_dim must be >= 1") == "--z_dim must be >= 1"
    assert cli.flag_message("something else") == "something else"


@pytest.fixture
def finished_looking_run(tmp_path):
    """A folder with a finished run's files (empty: the checks before TensorFlow only look)."""
    run = tmp_path / "run"
    Config(z_dim=4, epochs=1).save(str(run))
    for name in FINISHED_FILES[1:]:
        (run / name).write_bytes(b"")
    return run


def run_command(*args):
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    return out.returncode, out.stderr.strip().splitlines()


@pytest.mark.parametrize("command, flag", [("evaluate", "--out"), ("export", "--out")])
def test_a_foreign_output_folder_is_refused_before_tensorflow_loads(finished_looking_run,
                                                                    tmp_path, command, flag):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep")
    code, lines = run_command(command, str(finished_looking_run), flag, str(foreign))
    assert code != 0
    assert lines[-1] == "TF not loaded"
    assert len(lines) == 2 and "thesis.tex" in lines[0], lines
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]


def test_train_refuses_a_foreign_export_folder_before_tensorflow_loads(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1")
    code, lines = run_command("train", "--z_dim", "4", "--out", str(tmp_path / "run"),
                              "--export", str(foreign))
    assert code != 0 and lines[-1] == "TF not loaded"
    assert "is not a SavedModel" in lines[0] and len(lines) == 2, lines
    assert not (tmp_path / "run").exists()
