"""evaluate.py end to end on tiny trained runs, its errors, and the orchestration helpers."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, write_mnist_like

TINY_TRAIN = ["--hidden", "32", "32", "--epochs", "1", "--batch_size", "64",
              "--validation_examples", "100", "--quiet"]
TINY_EVAL = ["--iw_samples", "5", "--generated", "200", "--pairs", "10", "--trust_subset", "100",
             "--classifier_epochs", "1"]
RUN_FILES = {"metrics.json", "fig2_embedding.png", "manifold_grid.png", "interpolation.png",
             "samples.png", "training_curves.png", "projector",
             ".npvae-evaluate"}  # its mark: evaluate.py writes there again


def run_script(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_like_dir):
    """A tiny npVAE (z_dim 4, 2-D X) and a tiny VAE with z_dim 2, trained by train.py."""
    root = str(tmp_path_factory.mktemp("runs"))
    paths = {}
    for name, model, z in (("vae-z2", "vae", "2"), ("npvae-z4", "npvae", "4")):
        paths[name] = os.path.join(root, name)
        result = run_script("train.py", "--model", model, "--z_dim", z, *TINY_TRAIN,
                            "--data_dir", mnist_like_dir, "--out", paths[name])
        assert result.returncode == 0, result.stderr[-3000:]
        time.sleep(0.05)  # distinct config.json times: npvae-z4 is the most recent run
    return root, paths


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("classifier_cache"))


@pytest.fixture(scope="module")
def evaluated(runs, mnist_like_dir, cache_dir, tmp_path_factory):
    _, paths = runs
    out = str(tmp_path_factory.mktemp("eval"))
    result = run_script("evaluate.py", "--plots", paths["vae-z2"], paths["npvae-z4"],
                        "--out", out, "--data_dir", mnist_like_dir,
                        "--classifier_cache", cache_dir, *TINY_EVAL)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def assert_finite_numbers(metrics, keys):
    for key in keys:
        value = metrics[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)


LIKELIHOOD_KEYS = ["elbo", "iw_log_likelihood", "reconstruction_ll_sample",
                   "reconstruction_ll_mean", "kl", "active_units"]
EMBEDDING_KEYS = ["knn_accuracy_1", "knn_accuracy_5", "knn_accuracy_10", "trustworthiness",
                  "silhouette", "two_d_reconstruction_ll"]
SAMPLE_KEYS = ["frechet_prior", "confidence_prior", "frechet_test_locations",
               "confidence_test_locations", "accuracy_test_locations", "interpolation_confidence"]


def test_plots_writes_every_file_and_every_metric_is_finite(evaluated, cache_dir):
    out, result = evaluated
    assert set(os.listdir(os.path.join(out, "vae-z2"))) == RUN_FILES
    assert set(os.listdir(os.path.join(out, "npvae-z4"))) == RUN_FILES
    assert {"comparison.md", "comparison.json", "fig3_spaces.png",
            "fig4_interpolations.png"} <= set(os.listdir(out))
    for folder in ("vae-z2", "npvae-z4", "."):
        for name in os.listdir(os.path.join(out, folder)):
            path = os.path.join(out, folder, name)
            if name.endswith(".png"):
                with open(path, "rb") as f:
                    assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]

    vae = json.load(open(os.path.join(out, "vae-z2", "metrics.json")))
    npvae = json.load(open(os.path.join(out, "npvae-z4", "metrics.json")))
    for metrics in (vae, npvae):
        assert_finite_numbers(metrics, LIKELIHOOD_KEYS + EMBEDDING_KEYS + SAMPLE_KEYS)
        assert metrics["test_images"] == 200 and metrics["iw_samples"] == 5
        assert metrics["elbo"] < 0 < metrics["kl"]
        assert metrics["iw_log_likelihood"] >= metrics["elbo"] - 1.0
        assert 0 <= metrics["knn_accuracy_5"] <= 1 and 0 <= metrics["trustworthiness"] <= 1
        assert_finite_numbers(metrics["reference"], ["classifier_test_accuracy",
                                                     "frechet_train_vs_test_images"])
    assert_finite_numbers(npvae, ["x_path_log_likelihood", "frechet_x_density",
                                  "confidence_x_density", "lengthscale"])
    assert npvae["two_d_reconstruction_ll"] == npvae["x_path_log_likelihood"]
    assert npvae["space"] == "X" and npvae["interpolation_space"] == "X"
    assert vae["space"] == "Z" and vae["interpolation_space"] == "Z"
    assert vae["x_path_log_likelihood"] is None and vae["frechet_x_density"] is None
    assert vae["two_d_reconstruction_ll"] == vae["reconstruction_ll_mean"]

    comparison = json.load(open(os.path.join(out, "comparison.json")))
    assert [r["model"] for r in comparison["runs"]] == ["vae", "npvae"]
    table = open(os.path.join(out, "comparison.md")).read()
    assert table.startswith("| metric | vae z2 | paper z4 |")  # runs named by their scheme
    assert "| 5-NN accuracy in 2-D |" in table and "log p(y\\|E[z])" in table
    assert table in result.stdout                           # the table is printed too
    assert "test ELBO (nats)" in result.stdout
    # Progress: a line per stage of each run, with the time since the start.
    for stage in ("likelihoods", "the 2-D space", "generated images", "interpolations",
                  "figures"):
        assert re.search(rf"^\[\d+:\d\d:\d\d\] run 2/2 npvae-z4: {stage}", result.stdout,
                         re.M), stage
    # The Embedding Projector of each run: X and E[z] for the npVAE, E[z] for the VAE.
    for name, tensors in (("npvae-z4", {"x.tsv", "z_mean.tsv"}), ("vae-z2", {"z_mean.tsv"})):
        files = set(os.listdir(os.path.join(out, name, "projector")))
        assert tensors | {"projector_config.pbtxt", "metadata.tsv", "sprite.png"} <= files
        assert not {"x.tsv", "z_mean.tsv"} - tensors & files
    # The classifier was trained once and cached.
    assert "training the evaluation classifier" in result.stdout
    assert [n for n in os.listdir(cache_dir) if n.endswith(".keras")]


def run_in_process(capsys, *args):
    """``evaluate.main`` in this process (TensorFlow is loaded once): (exit code, out, err)."""
    import evaluate

    try:
        evaluate.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_metrics_only_on_the_most_recent_run_reuses_the_classifier(runs, evaluated, capsys,
                                                                   mnist_like_dir, cache_dir):
    root, paths = runs
    code, out, err = run_in_process(capsys, "--runs_root", root, "--data_dir", mnist_like_dir,
                                    "--classifier_cache", cache_dir, *TINY_EVAL)
    assert code == 0, err[-3000:]
    eval_dir = os.path.join(paths["npvae-z4"], "eval")
    # No figures without --plots; the metrics and the TensorBoard projector.
    assert sorted(os.listdir(eval_dir)) == [".npvae-evaluate", "metrics.json", "projector"]
    assert not os.path.exists(os.path.join(paths["vae-z2"], "eval"))
    assert "training the evaluation classifier" not in out
    # Seeded: the same numbers as the first evaluation (another process).
    first = json.load(open(os.path.join(evaluated[0], "npvae-z4", "metrics.json")))
    again = json.load(open(os.path.join(eval_dir, "metrics.json")))
    for key in LIKELIHOOD_KEYS + EMBEDDING_KEYS + SAMPLE_KEYS:
        assert again[key] == pytest.approx(first[key], rel=1e-4, abs=1e-5), key


def assert_one_line_error(code, err, *fragments):
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("evaluate.py: error: "), last
    for fragment in fragments:
        assert fragment in last, last


def test_bad_run_folders_give_one_line_errors(runs, tmp_path, mnist_like_dir, capsys):
    _, paths = runs
    assert_one_line_error(*run_in_process(capsys, str(tmp_path / "nope"))[::2],
                          "no such run folder")

    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(os.path.join(paths["npvae-z4"], "config.json"), incomplete)
    assert_one_line_error(*run_in_process(capsys, str(incomplete))[::2], "unfinished run, missing",
                          "model.keras", "reference_set.npz", "rerun the same train.py")

    assert_one_line_error(*run_in_process(capsys, "--runs_root", str(tmp_path / "empty"))[::2],
                          "no run folder given and no finished run found")

    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    assert_one_line_error(*run_in_process(capsys, str(not_a_run))[::2],
                          "not a run folder (no config.json)")

    from tests.helpers import unwritable_folder
    readonly = os.path.join(unwritable_folder(tmp_path), "eval")
    assert_one_line_error(*run_in_process(capsys, paths["vae-z2"], "--out", readonly)[::2],
                          f"{readonly}: cannot write the output folder")

    broken = tmp_path / "broken"
    shutil.copytree(paths["vae-z2"], broken)
    (broken / "model.keras").write_bytes(b"not a zip")
    assert_one_line_error(*run_in_process(capsys, str(broken))[::2], "model.keras: cannot load")

    small = write_mnist_like(str(tmp_path / "mnist20"), n_train=300, n_test=50, size=20)
    assert_one_line_error(*run_in_process(capsys, paths["vae-z2"], "--data_dir", small,
                                          "--out", str(tmp_path / "o"))[::2],
                          "trained on examples of shape 28x28", "20x20")


def test_invalid_flags_are_usage_errors(tmp_path, capsys):
    code, _, err = run_in_process(capsys, "--iw_samples", "0", str(tmp_path))
    assert code == 2 and "must be a positive integer" in err


# --- helpers, in process -----------------------------------------------------------------------

def test_output_dirs(tmp_path):
    from npvae_tf.evaluation.outputs import EvaluationError, output_dirs

    a, b = str(tmp_path / "r" / "a"), str(tmp_path / "r" / "b")
    assert output_dirs([a], None) == ([os.path.join(a, "eval")], None)
    assert output_dirs([a], "o") == (["o"], None)
    assert output_dirs([a, b], "o") == ([os.path.join("o", "a"), os.path.join("o", "b")], "o")
    assert output_dirs([a, b], None) == ([os.path.join(a, "eval"), os.path.join(b, "eval")],
                                         str(tmp_path / "r" / "comparison"))
    with pytest.raises(EvaluationError, match="same name"):
        output_dirs([a, str(tmp_path / "s" / "a")], "o")


def test_find_latest_run_takes_the_newest_finished_run(tmp_path):
    from npvae_tf.runs.layout import find_latest_run
    from npvae_tf.runs.layout import FINISHED_FILES

    for i, name in enumerate(["old", "new", "unfinished", "comparison"]):
        (tmp_path / name).mkdir()
        files = {"comparison": [], "unfinished": ["config.json"]}.get(name, FINISHED_FILES)
        for f in files:
            (tmp_path / name / f).write_text("{}")
        if files:
            os.utime(tmp_path / name / "config.json", (1000 + i, 1000 + i))
    assert find_latest_run(str(tmp_path)) == str(tmp_path / "new")


def test_read_training_log_keeps_the_last_row_of_each_epoch(tmp_path):
    from npvae_tf.runs.layout import read_training_log

    path = tmp_path / "training_log.csv"
    path.write_text("epoch,elbo,val_elbo\n0,-200,-190\n1,-150,-140\n1,-149,-139\n2,-120,-110\n")
    log = read_training_log(str(path))
    assert list(log["epoch"]) == [0, 1, 2] and list(log["elbo"]) == [-200, -149, -120]
    assert read_training_log(str(tmp_path / "missing.csv")) is None


def test_classifier_is_cached_and_an_unreadable_cache_is_rebuilt(tmp_path):
    import numpy as np

    from npvae_tf.evaluation.classifier import cache_key, load_or_train_classifier

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    images = (rng.random((120, 64)) < 0.1 + 0.3 * (labels[:, None] == np.arange(64) % 3))
    images = images.astype(np.float32)
    messages = []
    args = (images[:90], labels[:90], images[90:], labels[90:], (8, 8), str(tmp_path), 1, 0)
    first = load_or_train_classifier(*args, log=messages.append)
    assert len(messages) == 1 and "training the evaluation classifier" in messages[0]
    assert "(1,000 steps on 90 images" in messages[0]  # 1 epoch of 90 would be 1 step
    assert os.path.isfile(first.path) and 0.0 <= first.test_accuracy <= 1.0
    features, probs = first.predict(images[90:])
    assert features.shape == (30, 128) and probs.shape == (30, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)

    again = load_or_train_classifier(*args, log=messages.append)
    assert len(messages) == 1 and again.path == first.path          # loaded, not retrained
    np.testing.assert_allclose(again.predict(images[90:])[1], probs, rtol=1e-5, atol=1e-6)

    with open(first.path, "wb") as f:
        f.write(b"garbage")
    load_or_train_classifier(*args, log=messages.append)
    assert "unreadable cached classifier" in messages[1] and len(messages) == 3

    # The key follows the data and the settings.
    key = cache_key(images, labels, (8, 8), 1, 0)
    assert key != cache_key(images, (labels + 1) % 3, (8, 8), 1, 0)
    assert key != cache_key(images, labels, (8, 8), 2, 0)


def test_the_data_a_run_recorded_is_found_and_checked(tmp_path, monkeypatch, mnist_like_dir):
    from npvae_tf.core.config import Config
    from npvae_tf.data.datasets import load_data
    from npvae_tf.evaluation.evaluate import EvaluationError, load_data_for
    from npvae_tf.core.files import write_json
    from npvae_tf.runs.reference import ReferenceSet
    from npvae_tf.runs.layout import DATA_FILE
    from npvae_tf.runs.load import Run

    config = Config(validation_examples=100)
    trained_on = load_data(mnist_like_dir, validation_examples=100)
    reference = ReferenceSet(z_mean=np.zeros((len(trained_on.train), 2)),
                             labels=trained_on.train.labels)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(str(run_dir / DATA_FILE), {**trained_on.provenance,
                                          "source": os.path.abspath(mnist_like_dir)})
    run = Run(str(run_dir), config, None, reference)
    # Other data where training looked by default: the recorded folder is used instead.
    other = write_mnist_like(str(tmp_path / "other"), 650, 30)
    monkeypatch.setenv("NPVAE_DATA_DIR", other)
    data = load_data_for(run, None, {})
    assert data.sha256 == trained_on.sha256 and len(data.test) == len(trained_on.test)
    # Data given explicitly must be the recorded data.
    with pytest.raises(EvaluationError, match="trained on other data"):
        load_data_for(run, other, {})


def test_evaluation_never_overwrites_a_file_it_did_not_write(runs, tmp_path, capsys):
    _, paths = runs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_bytes(b'{"mine": true}')
    code, _, err = run_in_process(capsys, paths["vae-z2"], "--out", str(mine))
    assert_one_line_error(code, err, f"{mine} holds files evaluate.py did not write "
                                     "(metrics.json; no .npvae-evaluate); choose a new or empty "
                                     "--out")
    assert os.listdir(mine) == ["metrics.json"]
    assert (mine / "metrics.json").read_bytes() == b'{"mine": true}'


def test_evaluation_marks_the_folders_it_writes(evaluated):
    out, _ = evaluated
    from npvae_tf.runs.layout import EVAL_MARKER

    assert os.path.isfile(os.path.join(out, EVAL_MARKER))  # the comparison folder
    for name in ("vae-z2", "npvae-z4"):
        assert os.path.isfile(os.path.join(out, name, EVAL_MARKER))


# --- the TensorBoard projector in a real browser -------------------------------------------

# TensorFlow.js (inside the projector) asks for a WebGL context with
# failIfMajorPerformanceCaveat, which a software renderer (SwiftShader: headless Chromium on a
# machine without a GPU) refuses; a user's browser on a GPU is not asked. The test lifts only
# that flag, before any page script runs.
SOFTWARE_WEBGL = """
(function () {
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, attributes) {
    if (attributes && attributes.failIfMajorPerformanceCaveat)
      attributes = Object.assign({}, attributes, {failIfMajorPerformanceCaveat: false});
    return getContext.call(this, type, attributes);
  };
})();
"""
# document.querySelector through the projector's nested shadow roots.
DEEP_QUERY = """
function deep(root, selector) {
  let found = root.querySelector(selector);
  if (found) return found;
  for (const el of root.querySelectorAll('*'))
    if (el.shadowRoot && (found = deep(el.shadowRoot, selector))) return found;
  return null;
}
"""


def test_the_projector_draws_x_coloured_by_label_in_a_real_browser(evaluated):
    import urllib.request

    from PIL import Image

    from tests.browser import free_port, headless_chromium, wait_for

    driver = headless_chromium()  # skips (fails under CI) without Chromium
    out, _ = evaluated
    logdir = os.path.join(out, "npvae-z4")
    with open(os.path.join(logdir, "projector", "x.tsv")) as f:
        points = len(f.read().splitlines())
    port = free_port()
    board = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "tensorboard"),
                              "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"

    def serving():
        try:
            return urllib.request.urlopen(url + "data/plugin/projector/runs", timeout=5).read()
        except OSError:
            return None

    try:
        assert b"projector" in wait_for(serving, 120, "TensorBoard")
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": SOFTWARE_WEBGL})
        driver.get(url + "#projector")
        # The plugin is an iframe holding the projector's own iframe.
        driver.switch_to.frame(wait_for(lambda: driver.find_elements("css selector", "iframe"),
                                        60, "the plugin frame")[0])
        inner = wait_for(lambda: driver.execute_script(DEEP_QUERY + "return deep(document, "
                                                       "'iframe')"), 60, "the projector frame")
        driver.switch_to.frame(inner)

        def text(selector):
            return driver.execute_script(
                DEEP_QUERY + f"const e = deep(document, {selector!r}); "
                "return e ? e.shadowRoot.textContent.replace(/\\s+/g, ' ') : null") or ""

        status = wait_for(lambda: f"Points: {points} " in text("vz-projector")
                          and text("vz-projector"), 120, "the points")
        assert "Dimension: 3" in status  # X, 2-D, with its flat third column
        variance = wait_for(lambda: "Total variance described" in text(
            "vz-projector-projections-panel") and text("vz-projector-projections-panel"), 60,
            "the PCA view")
        assert "NaN" not in variance and "Total variance described: 100.0%" in variance, variance
        # The tensor shown first is the config's first: X (evaluate.py lists it first).
        with open(os.path.join(logdir, "projector", "projector_config.pbtxt")) as f:
            assert f.read().split("tensor_name:")[1].split()[0] == '"x"'
        # Colour by label, as the user picks it under "Color by".
        options = driver.execute_script(
            DEEP_QUERY + "const p = deep(document, 'vz-projector-data-panel'); "
            "p.selectedColorOptionName = 'label'; return p.colorOptions.map(o => o.name)")
        assert "label" in options, options
        time.sleep(3)  # a redraw
        driver.switch_to.default_content()
        shot = "/tmp/npvae-projector-test.png"  # kept out of the repository
        driver.save_screenshot(shot)
    finally:
        driver.quit()
        board.kill()
        board.wait(timeout=60)
    image = Image.open(shot).convert("HSV")
    width, height = image.size
    # The plot: right of the data panel, left of the inspector, below the toolbar.
    plot = np.asarray(image.crop((int(width * 0.25), 130, int(width * 0.76), height)))
    saturated = plot[(plot[..., 1] > 100) & (plot[..., 2] > 60)]
    hues = np.bincount(saturated[:, 0] // 16, minlength=16)
    assert len(saturated) > 2000, f"only {len(saturated)} coloured pixels: no points drawn"
    assert (hues > 100).sum() >= 4, f"points not coloured by label (hue histogram {hues})"
