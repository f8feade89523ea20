"""Own data end to end, with the command lines as a user types them: examples of shape 8x8
(uint8 .npz), 20x28 (IDX, no test split, no labels), 32x32x3 (a folder of colour PNGs) and
[N, 50] (a real-valued .csv, Gaussian likelihood) train -> evaluate -> export -> the
session-style SavedModel loader -> the Python API; bad input is one line, non-zero, and leaves
no run folder."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import npvae_tf
from tests.helpers import ROOT, synthetic_digits, write_idx

TINY = ["--z_dim", "3", "--hidden", "16", "--epochs", "1", "--batch_size", "16"]
EVAL = ["--iw_samples", "2", "--generated", "20", "--trust_subset", "40", "--pairs", "2",
        "--classifier_epochs", "1"]


def write_sources(root):
    """Four tiny data sets of different shapes; ``(name, extra train flags, shape)``."""
    rng = np.random.default_rng(0)
    digits, labels = synthetic_digits(160, 0, size=8)
    np.savez(root / "digits.npz", x_train=digits.astype(np.uint8), y_train=labels)
    faces = os.path.join(root, "faces")  # 20x28 like Frey Face: IDX, no labels, no test file
    os.makedirs(faces)
    write_idx(os.path.join(faces, "train-images-idx3-ubyte"),
              (rng.random((150, 20, 28)) * 255).astype(np.uint8))
    for c in ("red", "blue"):
        os.makedirs(root / "colour" / c)
        for i in range(60):
            image = (rng.random((32, 32, 3)) * 80).astype(np.uint8)
            image[..., 0 if c == "red" else 2] += 150
            Image.fromarray(image).save(root / "colour" / c / f"{i}.png")
    table = rng.normal(size=(200, 50)) * 3.0 + 10.0
    with open(root / "table.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(50)] + ["kind"])
        writer.writerows([list(row) + ["ab"[int(row[0] > 10)]] for row in table])
    return [("digits.npz", [], (8, 8)),
            ("faces", ["--likelihood", "continuous_bernoulli"], (20, 28)),
            ("colour", [], (32, 32, 3)),
            ("table.csv", ["--label_column", "kind", "--likelihood", "gaussian"], (50,))]


def run_main(module, args):
    """``main(args)`` of a command; its exit code (0 when it returns)."""
    import importlib

    try:
        importlib.import_module(f"npvae_tf.cli.{module}").main(args)
    except SystemExit as e:
        return e.code
    return 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    os.environ.setdefault("NPVAE_CACHE_DIR", str(root / "cache"))
    out = {}
    for name, flags, shape in write_sources(root):
        run = str(root / f"run-{name}")
        assert run_main("train", ["--data", str(root / name), *flags, *TINY, "--out", run,
                                  "--quiet"]) == 0, name
        out[name] = (run, shape, root)
    return out


@pytest.mark.parametrize("name", ["digits.npz", "faces", "colour", "table.csv"])
def test_a_run_records_its_data_and_serves_the_datas_own_shape_and_units(trained, name,
                                                                         tmp_path):
    run_dir, shape, root = trained[name]
    config = npvae_tf.Config.load(run_dir)
    assert config.image_shape == shape
    data = json.load(open(os.path.join(run_dir, "data.json")))
    assert data["shape"] == list(shape) and data["spec"]["path"] == str(root / name)
    if name == "faces":  # no test file: a seeded 15% was carved off
        assert data["test_split"] == {"fraction": 0.15, "seed": 0}
    assert run_main("evaluate", [run_dir, "--plots", *EVAL]) == 0
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics.json")))
    assert np.isfinite(metrics["elbo"]) and metrics["trustworthiness"] is not None
    assert (metrics["knn_accuracy_5"] is None) == (name == "faces")  # unlabelled: blank
    assert os.path.isfile(os.path.join(run_dir, "eval", "samples.png"))
    export = str(tmp_path / "served")
    assert run_main("export", [run_dir, "--out", export]) == 0
    run = npvae_tf.load_run(run_dir)
    p = int(np.prod(shape))
    sample = run.sample(4, seed=1)
    assert sample.shape == (4, p) and np.all(np.isfinite(sample))
    images = sample.reshape((4,) + shape)  # the data's own shape is accepted too
    np.testing.assert_allclose(run.reconstruct(images), run.reconstruct(sample), atol=1e-6)
    if name == "table.csv":  # raw units back: near the data's mean of 10, not standardised
        assert 5.0 < float(np.mean(run.reconstruct(sample))) < 15.0
    feed = str(tmp_path / "feed.npy")
    np.save(feed, images.astype(np.float32))  # the SavedModel takes the data's shape too
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, numpy as np\n"
         "from tensorflow.python.tools import saved_model_cli as c\n"
         "c.run_saved_model_with_feed_dict(sys.argv[1], 'serve', 'reconstruct',\n"
         "    {'images': np.load(sys.argv[2])}, sys.argv[3], True)\n",
         export, feed, str(tmp_path / "cli_out")], capture_output=True, text=True, cwd=ROOT,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    served = np.load(str(tmp_path / "cli_out" / "images.npy"))
    np.testing.assert_allclose(served, run.reconstruct(sample), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make, message", [
    (lambda r: np.savez(r / "bad.npz", x_train=-np.ones((30, 4, 4))),
     "outside \\[0, 1\\] .* use --likelihood gaussian"),
    (lambda r: np.savez(r / "bad.npz", x_train=np.full((30, 4, 4), np.nan)), "NaN"),
    (lambda r: (r / "bad.csv").write_text("a,b\n1,2\n3,x\n"), "bad.csv"),
    (lambda r: [os.makedirs(r / "bad"), *(Image.fromarray(np.zeros(s, np.uint8)).save(
        r / "bad" / f"{i}.png") for i, s in enumerate([(8, 8)] * 5 + [(9, 8)]))],
     "mixed sizes"),
    (lambda r: (np.save(r / "bad.npy", np.zeros((30, 5))), np.save(r / "labels.npy",
                                                                   np.zeros(29, int))),
     "29 labels for the 30"),
])
def test_bad_data_is_one_line_and_leaves_no_run_folder(tmp_path, make, message, capsys):
    make(tmp_path)
    path = next(p for p in tmp_path.iterdir() if p.name.startswith("bad"))
    labels = ["--labels", str(tmp_path / "labels.npy")] if (tmp_path / "labels.npy").exists() \
        else []
    code = run_main("train", ["--data", str(path), *labels, *TINY, "--out",
                              str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert err[0].startswith("train.py: error: ") and str(tmp_path) in err[0]
    import re

    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["faces", "colour"])
def test_the_explorer_shows_non_square_and_colour_examples_as_they_are(trained, name):
    """A real headless Chromium: the hover frame has the example's aspect, and a colour run's
    decoded image reaches the page in colour."""
    import threading
    import time

    from npvae_tf.serving.explorer import image_rgba, make_server
    from tests.browser import free_port, headless_chromium, wait_for

    run_dir, shape, _ = trained[name]
    run = npvae_tf.load_run(run_dir)
    port = free_port()
    server, state = make_server(run, port, run.sample(4, seed=2))
    threading.Thread(target=server.io_loop.start, daemon=True).start()
    driver = headless_chromium()
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{port}/")
        frame = wait_for(lambda: driver.execute_script("""
            const doc = Bokeh.documents[0]; if (!doc) return null;
            const f = doc.get_model_by_name('hover_image'); const m = doc.get_model_by_name('map');
            const v = Bokeh.index.get_one(f), mv = Bokeh.index.get_one(m);
            if (!v || !v.frame || !mv || !mv.frame) return null;
            const r = mv.el.getBoundingClientRect();
            return {w: v.frame.bbox.width, h: v.frame.bbox.height, left: r.left + mv.frame.bbox.left,
                    top: r.top + mv.frame.bbox.top, fw: mv.frame.bbox.width,
                    fh: mv.frame.bbox.height};"""), 30)
        assert frame["w"] / frame["h"] == pytest.approx(shape[1] / shape[0], rel=0.1)
        read = ("const f = Bokeh.documents[0].get_model_by_name('hover_image');"
                "const d = f.renderers[0].data_source.data.image[0];"
                "return d && d.length > 1 ? Array.from(d) : null;")
        blank = wait_for(lambda: driver.execute_script(read), 30)
        before = state.decoded
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {
            "type": "mouseMoved", "x": frame["left"] + 0.5 * frame["fw"],
            "y": frame["top"] + 0.5 * frame["fh"]})
        wait_for(lambda: state.decoded > before, 30)
        shown = wait_for(lambda: (lambda d: d if d and d != blank else None)(
            driver.execute_script(read)), 30)  # the decoded image, not the blank one
        pixels = np.array(shown, np.int64) & 0xFFFFFF
        assert pixels.size == shape[0] * shape[1]
        # The page shows the very image decoded at the mouse, drawn as image_rgba draws it.
        expected = image_rgba(state.last_image, shape).astype(np.int64).ravel() & 0xFFFFFF
        np.testing.assert_array_equal(pixels, expected)
        if name == "colour":  # ... in colour: a red example is drawn red, not grey
            red = np.zeros(shape, np.float32)
            red[..., 0] = 1.0
            drawn = image_rgba(red.ravel(), shape).astype(np.int64) & 0xFFFFFF
            assert np.all(drawn == 0x0000FF)
        time.sleep(0.3)
        driver.save_screenshot(f"/tmp/npvae_explorer_{name}.png")
    finally:
        driver.quit()
        server.io_loop.add_callback(server.io_loop.stop)


def test_one_class_data_trains_and_evaluates_with_the_label_rows_blank(tmp_path):
    digits, _ = synthetic_digits(120, 0, size=8)
    np.savez(tmp_path / "one.npz", x_train=digits.astype(np.uint8), y_train=np.zeros(120, int))
    run = str(tmp_path / "run")
    assert run_main("train", ["--data", str(tmp_path / "one.npz"), *TINY, "--out", run,
                              "--quiet"]) == 0
    assert run_main("evaluate", [run, *EVAL]) == 0
    metrics = json.load(open(os.path.join(run, "eval", "metrics.json")))
    assert metrics["knn_accuracy_5"] is None and metrics["frechet_prior"] is None
    assert np.isfinite(metrics["trustworthiness"]) and np.isfinite(metrics["elbo"])


def test_scikit_learn_digits_with_the_recommended_scheme_from_the_command_line(tmp_path):
    """``--data sklearn:digits --scheme neighbour``: no file, no Python. Evaluation's served
    column is what the exported SavedModel serves: its reconstruct_through_x log_prob over
    the test images averages to the served X-path row."""
    from npvae_tf.core.backend import tf
    from npvae_tf.runs.load import load_run, training_data

    os.environ.setdefault("NPVAE_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = str(tmp_path / "digits")
    flags = ["--data", "sklearn:digits", "--scheme", "neighbour", *TINY, "--epochs", "2",
             "--out", run_dir, "--quiet"]
    assert run_main("train", flags) == 0
    data = json.load(open(os.path.join(run_dir, "data.json")))
    assert data["source"] == "sklearn:digits" and data["shape"] == [8, 8]
    assert npvae_tf.Config.load(run_dir).scheme_name == "neighbour"
    assert run_main("evaluate", [run_dir, *EVAL]) == 0
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics.json")))
    served = metrics["served"]
    assert served["placement"] == "neighbours" and 0 <= served["knn_accuracy_5"] <= 1
    export = str(tmp_path / "served")
    assert run_main("export", [run_dir, "--out", export]) == 0
    test = training_data(load_run(run_dir)).test.images
    signatures = tf.saved_model.load(export).signatures
    log_prob = signatures["reconstruct_through_x"](images=tf.constant(test))["log_prob"]
    assert float(np.mean(log_prob)) == pytest.approx(served["x_path_log_likelihood"],
                                                     rel=1e-5, abs=1e-3)
