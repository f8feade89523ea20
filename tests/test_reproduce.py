"""reproduce.py end to end on a tiny configuration (generated data, 1 epoch)."""

import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_reproduce_end_to_end(tmp_path, mnist_like_dir):
    docs = tmp_path / "docs"
    args = ["--z_dims", "2", "3", "--epochs", "1", "--hidden", "32",
            "--validation_examples", "100", "--data_dir", mnist_like_dir,
            "--runs_dir", str(tmp_path / "runs"), "--docs", str(docs),
            "--iw_samples", "2", "--generated", "200", "--pairs", "3", "--trust_subset", "100",
            "--classifier_epochs", "1", "--classifier_cache", str(tmp_path / "cache")]
    cmd = [sys.executable, os.path.join(ROOT, "reproduce.py"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    # Progress with the time since the start: each run's training, each evaluation stage.
    for line in ("training run 1/4: ", "training run 4/4: ", "run 4/4 npvae-z3: interpolations"):
        assert re.search(rf"^\[0:\d\d:\d\d\] {re.escape(line)}", result.stdout, re.M), line
    for name in ("vae-z2", "npvae-z2", "vae-z3", "npvae-z3"):
        assert os.path.isfile(tmp_path / "runs" / name / "model.keras"), name
    text = (docs / "results.md").read_text()
    for heading in ("## Settings", "## Comparison", "## The paper's claims", "## Figures"):
        assert heading in text
    assert "npVAE z3" in text and "VAE z2" in text and "1 epochs" in text
    assert "**supported**" in text or "**not supported**" in text
    figures = sorted(os.listdir(docs / "figures"))
    assert {"fig3_spaces.png", "fig4_interpolations.png", "fig2_npvae-z2.png"} <= set(figures)
    for name in figures:
        assert f"figures/{name}" in text

    # Running the grid again keeps every finished run folder instead of retraining.
    from npvae_tf.config import Config
    from npvae_tf.experiments import run_grid

    before = os.path.getmtime(tmp_path / "runs" / "vae-z2" / "model.keras")
    base = Config(epochs=1, hidden=(32,), validation_examples=100)
    paths = run_grid(base, ["vae"], [2], str(tmp_path / "runs"), "/nonexistent", log=lambda *a: None)
    assert paths == [str(tmp_path / "runs" / "vae-z2")]
    assert os.path.getmtime(tmp_path / "runs" / "vae-z2" / "model.keras") == before


def test_results_say_whether_the_nats_are_of_grayscale_or_binarised_pixels():
    from npvae_tf.config import Config
    from npvae_tf.experiments import pixel_likelihood

    assert "grayscale" in pixel_likelihood(Config()) and "not comparable" in \
        pixel_likelihood(Config())
    assert "binarised pixels" in pixel_likelihood(Config(binarize=True))
