"""reproduce.py end to end on a tiny configuration (generated data, 1 epoch)."""

import json
import os
import re
import subprocess
import sys

from npvae_tf.core.config import Config
from npvae_tf.reproduce.grid import grid, run_grid
from tests.helpers import ROOT


def test_grid_keeps_each_schemes_z_values_unless_given():
    assert grid(["vae", "xpath"]) == [("vae", 2), ("vae", 20), ("xpath", 20), ("vae", 500),
                                      ("xpath", 500)]
    assert grid(["paper", "vae"], [3]) == [("vae", 3), ("paper", 3)]


def test_reproduce_end_to_end(tmp_path, mnist_like_dir):
    docs = tmp_path / "docs"
    args = ["--schemes", "vae", "paper", "xpath", "--z_dims", "2", "--epochs", "1", "--hidden", "32",
            "--validation_examples", "100", "--data_dir", mnist_like_dir,
            "--runs_dir", str(tmp_path / "runs"), "--docs", str(docs),
            "--iw_samples", "2", "--generated", "200", "--pairs", "3", "--trust_subset", "100",
            "--classifier_epochs", "1", "--classifier_cache", str(tmp_path / "cache")]
    cmd = [sys.executable, os.path.join(ROOT, "reproduce.py"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    # Progress with the time since the start: each run's training, each evaluation stage.
    for line in ("training run 1/3: ", "training run 3/3: ",
                 "run 3/3 npvae-xpath-z2: interpolations"):
        assert re.search(rf"^\[0:\d\d:\d\d\] {re.escape(line)}", result.stdout, re.M), line
    names = ("vae-z2", "npvae-z2", "npvae-xpath-z2")
    for name in names:
        assert os.path.isfile(tmp_path / "runs" / name / "model.keras"), name
    text = (docs / "results.md").read_text()
    for heading in ("## Settings", "## Comparison", "## The paper's claims", "## Figures"):
        assert heading in text
    assert "| paper z2 |" in text and "| vae z2 |" in text and "1 epochs" in text
    assert "### xpath" in text  # the X-path scheme's verdicts, under its name
    assert "**supported**" in text or "**not supported**" in text

    # results.json: every run's metrics with its config, machine-readable.
    with open(docs / "results.json") as f:
        results = json.load(f)
    assert sorted(r["name"] for r in results["runs"]) == sorted(names)
    for run in results["runs"]:
        config = Config.from_dict(run["config"])
        assert run["name"].endswith(f"-z{config.z_dim}")
        assert run["metrics"]["model"] == config.model and run["metrics"]["epochs"] == 1
        if config.has_x:
            assert run["metrics"]["x_path_log_likelihood"] < 0
            assert run["metrics"]["effective_neighbours"] >= 1
        if run["name"].startswith("npvae-xpath"):
            assert config.x_path_weight == 1.0 and config.x_path_stop_gradient
    figures = sorted(os.listdir(docs / "figures"))
    assert {"fig3_spaces.png", "fig4_interpolations.png", "fig2_npvae-z2.png"} <= set(figures)
    for name in figures:
        assert f"figures/{name}" in text

    # A umap run in another runs folder; the three kept from that results.json (their folders
    # could be on another machine) and marked.
    later = [a for a in args if a not in ("vae", "paper", "xpath")]
    later[later.index("--schemes"):later.index("--schemes") + 1] = []
    later[later.index("--z_dims"):later.index("--z_dims") + 2] = []
    later[later.index("--runs_dir") + 1] = str(tmp_path / "runs2")
    later += ["--runs", "umap:2", "--earlier_results", str(docs / "results.json")]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "reproduce.py"), *later],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    text = (docs / "results.md").read_text()
    assert "`npvae-umap-z2`" in text and "`vae-z2` †" in text and "`npvae-z2` †" in text
    assert "† Copied from an earlier results.json" in text
    assert "**as served**" in text and "*As served*: the run as its SavedModel" in text
    with open(docs / "results.json") as f:
        again = json.load(f)
    assert sorted(r["name"] for r in again["runs"]) == sorted(names + ("npvae-umap-z2",))
    assert all(r.get("earlier") for r in again["runs"] if r["name"] in names)
    umap = next(r for r in again["runs"] if r["name"] == "npvae-umap-z2")
    assert umap["metrics"]["served"]["trustworthiness"] > 0 and "earlier" not in umap

    # Running the grid again keeps every finished run folder instead of retraining.
    before = os.path.getmtime(tmp_path / "runs" / "vae-z2" / "model.keras")
    base = Config(epochs=1, hidden=(32,), validation_examples=100)
    paths = run_grid(base, [("vae", 2)], str(tmp_path / "runs"), "/nonexistent",
                     log=lambda *a: None)
    assert paths == [str(tmp_path / "runs" / "vae-z2")]
    assert os.path.getmtime(tmp_path / "runs" / "vae-z2" / "model.keras") == before


def test_results_say_whether_the_nats_are_of_grayscale_or_binarised_pixels():
    from npvae_tf.core.config import Config
    from npvae_tf.reproduce.results_page import pixel_likelihood

    assert "grayscale" in pixel_likelihood(Config()) and "not comparable" in \
        pixel_likelihood(Config())
    assert "binarised pixels" in pixel_likelihood(Config(binarize=True))


def test_runs_flag_picks_exact_runs_and_rejects_bad_ones(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_cli", os.path.join(ROOT, "reproduce.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args, _ = cli.parse_args(["--runs", "vae:2", "xpath:500"])
    assert args.runs == [("vae", 2), ("xpath", 500)]
    for bad in ("vae", "nope:2", "vae:0", "vae:x"):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "reproduce.py"), "--runs", bad],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "SCHEME:Z" in result.stderr, bad
