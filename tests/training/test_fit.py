"""train.py end to end, as a user runs it (subprocesses), on small data."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import npvae_tf.model.vae  # noqa: F401  registers the classes model.keras names
from npvae_tf.core.config import Config
from npvae_tf.runs.reference import ReferenceSet
from tests.helpers import ROOT


def run_train(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **(env or {})})


def is_real_mnist(folder):
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    return os.path.isfile(path) and os.path.getsize(path) > 1_000_000


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, real_or_synthetic_data_dir):
    out = str(tmp_path_factory.mktemp("runs") / "npvae")
    args = ["--z_dim", "8", "--hidden", "64", "64", "--epochs", "1", "--batch_size", "64",
            "--out", out, "--quiet"]
    if is_real_mnist(real_or_synthetic_data_dir):
        args += ["--train_examples", "3000"]          # real MNIST: a few thousand examples
    else:
        args += ["--validation_examples", "100"]      # generated: 600 training images in all
    result = run_train(*args, "--data_dir", real_or_synthetic_data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result, args + ["--data_dir", real_or_synthetic_data_dir]


def test_run_folder_contents(smoke_run):
    out, result, _ = smoke_run
    for name in ("config.json", "model.keras", "best.keras", "reference_set.npz",
                 "test_metrics.json", "training_log.csv"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.isdir(os.path.join(out, "logs"))
    assert not os.path.exists(os.path.join(out, "backup"))  # removed once training finished
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    metrics = json.load(open(os.path.join(out, "test_metrics.json")))
    for key in ("elbo", "reconstruction", "reconstruction_at_mean", "kl", "match", "lengthscale"):
        assert np.isfinite(metrics[key]), key
    assert metrics["elbo"] < 0 and metrics["kl"] >= 0
    assert "test ELBO" in result.stdout


def test_run_folder_alone_rebuilds_the_model(smoke_run):
    out, _, _ = smoke_run
    config = Config.load(out)
    assert config.z_dim == 8 and config.hidden == (64, 64) and config.epochs == 1
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    reference = ReferenceSet.load(out)
    assert reference.x.shape[1] == 2 and reference.z_mean.shape[1] == 8
    assert len(reference.x) == len(reference.labels) == len(reference.z_mean)
    probs = model.decode_from_x(reference.x[:5], reference.x, reference.z_mean).numpy()
    assert probs.shape == (5, 784) and np.all(np.isfinite(probs))


def test_rerun_of_a_finished_run_does_nothing_and_keeps_files(smoke_run):
    out, _, args = smoke_run
    before = os.path.getmtime(os.path.join(out, "model.keras"))
    args = args[:args.index("--data_dir")]  # a finished run needs no data
    result = run_train(*args, env={"NPVAE_DATA_DIR": "/nonexistent"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already trained" in result.stdout
    assert os.path.getmtime(os.path.join(out, "model.keras")) == before


def test_rerun_after_fitting_finishes_the_last_steps_without_refitting(smoke_run, tmp_path):
    out, _, args = smoke_run
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    for name in ("test_metrics.json", "reference_set.npz"):
        os.remove(os.path.join(copy, name))
    log_before = open(os.path.join(copy, "training_log.csv")).read()
    out_flag = args.index("--out") + 1
    result = run_train(*args[:out_flag], copy, *args[out_flag + 1:])
    assert result.returncode == 0, result.stderr[-2000:]
    assert open(os.path.join(copy, "training_log.csv")).read() == log_before
    assert os.path.isfile(os.path.join(copy, "reference_set.npz"))
    assert json.load(open(os.path.join(copy, "test_metrics.json")))["elbo"] == \
        pytest.approx(json.load(open(os.path.join(out, "test_metrics.json")))["elbo"], abs=2.0)


def test_a_different_config_never_overwrites_a_run(smoke_run):
    out, _, _ = smoke_run
    result = run_train("--z_dim", "9", "--out", out)
    assert result.returncode == 1
    assert "different config (differs in: " in result.stderr and "z_dim" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--z_dim", "0"], "z_dim must be >= 1"),
    (["--batch_size", "1"], "batch_size must be >= 2"),
    (["--model", "gan"], "invalid choice"),
    (["--hidden", "-5"], "hidden"),
    (["--epochs", "-1"], "epochs"),
    (["--train_examples", "0"], "train_examples"),
])
def test_invalid_flags_exit_with_a_usage_error(args, message, tmp_path):
    result = run_train(*args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not os.path.exists(tmp_path / "x")


def test_bad_data_gives_one_line_error(tmp_path):
    result = run_train("--data_dir", str(tmp_path), "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: ") and "no IDX files, .npz or images" in last
    assert "Traceback" not in result.stderr


def test_same_seed_same_run(tmp_path, mnist_like_dir):
    from npvae_tf.training.fit import MODEL_FILE, fit_run

    config = Config(z_dim=4, hidden=(32,), epochs=2, batch_size=32, validation_examples=100,
                    seed=7)
    metrics = [fit_run(config, str(tmp_path / name), data=mnist_like_dir, verbose=0)
               for name in ("a", "b")]
    assert metrics[0]["elbo"] == metrics[1]["elbo"]
    models = [keras.saving.load_model(str(tmp_path / name / MODEL_FILE)) for name in ("a", "b")]
    for wa, wb in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(wa, wb)
    other = fit_run(config.replace(seed=8), str(tmp_path / "c"), data=mnist_like_dir, verbose=0)
    assert other["elbo"] != metrics[0]["elbo"]


# --- a fast quiet CLI, output checks, the lock, progress -------------------------------------

@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "export.py"])
def test_help_does_not_import_tensorflow(script):
    code = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = [{script!r}, "--help"]
        try:
            runpy.run_path({os.path.join(ROOT, script)!r}, run_name="__main__")
        except SystemExit as e:
            assert e.code == 0, e.code
        print("TF" if "tensorflow" in sys.modules else "no TF")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no TF"
    assert "usage:" in result.stdout and result.stderr == ""


def test_training_prints_no_tensorflow_start_up_noise(smoke_run):
    from npvae_tf.core.quiet import NO_GPU_NOISE, STARTUP_NOISE

    _, result, _ = smoke_run
    noise = STARTUP_NOISE + NO_GPU_NOISE
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in noise)]


def test_quiet_prints_one_plain_short_line_per_epoch(smoke_run):
    out, result, args = smoke_run
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("epoch ")] == [["epoch", "1/1"]]
    # Paths aside (the folders' own length is not the program's): pytest-xdist's are longer.
    short = result.stdout.replace(out, "OUT").replace(args[-1], "DATA")
    assert all(len(line) <= 100 for line in short.splitlines()), short
    assert "\r" not in result.stdout and "\x1b" not in result.stdout


def test_live_progress_never_exceeds_the_width():
    import io

    from npvae_tf.training.callbacks import Progress

    stream = io.StringIO()
    progress = Progress(epochs=50, steps=430, live=True, stream=stream, width=100)
    huge = {k: -123456789.123456 for k in ("loss", "val_loss", "kl", "match", "val_match",
                                           "val_x_path", "lengthscale", "lengthscale_over_x_std")}
    progress.on_epoch_begin(0)
    progress.on_train_batch_end(3, huge)
    progress.on_epoch_end(0, huge)
    pieces = [p for line in stream.getvalue().split("\n") for p in line.split("\r")]
    assert pieces and all(len(p) <= 100 for p in pieces)
    assert stream.getvalue().count("\n") == 1  # one line kept per epoch


def test_epoch_line_shows_the_kernel_diagnostics_within_the_width():
    import io

    from npvae_tf.training.callbacks import Progress

    stream = io.StringIO()
    progress = Progress(epochs=50, steps=430, live=False, stream=stream, width=100)
    progress.on_epoch_begin(49)
    progress.on_train_begin()
    progress.on_epoch_end(49, {"loss": 247.62, "val_loss": 250.11, "elbo": -240.72,
                               "val_elbo": -243.2, "kl": 18.69, "match": 6.897,
                               "val_x_path": 141.44, "lengthscale": 2.476,
                               "lengthscale_over_x_std": 0.27})
    line = stream.getvalue().rstrip("\n")
    for part in ("epoch 50/50", "ELBO -240.72/-243.20", "KL 18.69", "match 6.897",
                 "X path 141.44"):
        assert part in line, line
    # The lengthscale diagnostics (in the CSV and TensorBoard) give way first to stay in 100.
    assert len(line) <= 100 and line.endswith(" ETA 0:00:00"), line  # nothing cut off


def test_a_second_run_into_a_locked_folder_stops_at_once(tmp_path):
    from tests.helpers import start_holder

    out = str(tmp_path / "run")
    holder = start_holder(out)
    try:
        result = run_train("--z_dim", "4", "--out", out, "--data_dir", str(tmp_path / "none"))
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"train.py: error: {out} is in use by another training process "
                    f"(pid {holder.pid}); wait for it to end, or choose another --out")
    assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(out, "config.json"))


@pytest.mark.parametrize("flag", ["--out", "--export"])
def test_an_unwritable_output_stops_before_any_work(tmp_path, flag):
    from tests.helpers import unwritable_folder

    target = os.path.join(unwritable_folder(tmp_path), "x")
    args = ["--out", str(tmp_path / "run"), flag, target] if flag == "--export" else \
        ["--out", target]
    # A missing data folder would be reported if training got as far as loading data.
    result = run_train(*args, "--data_dir", str(tmp_path / "no-data"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"train.py: error: {target}: cannot write")
    assert not os.path.exists(tmp_path / "run")


def test_two_configs_into_one_folder_refused_even_when_one_is_finished(smoke_run):
    out, _, args = smoke_run
    args = list(args)
    args[args.index("--z_dim") + 1] = "10"
    result = run_train(*args)
    assert result.returncode == 1
    assert "different config (differs in: z_dim)" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "--lr must be > 0, got -1.0"),
    (["--z_dim", "0"], "--z_dim must be >= 1, got 0"),
])
def test_config_errors_name_the_flag(args, message, tmp_path):
    result = run_train(*args, "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and message in result.stderr


def test_more_training_examples_than_the_data_holds_is_refused(tmp_path, mnist_like_dir):
    result = run_train("--train_examples", "100000", "--validation_examples", "100",
                       "--data_dir", mnist_like_dir, "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "train_examples 100000 is more than the 500 training examples" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_data_dir_variable_is_named(tmp_path):
    result = run_train("--out", str(tmp_path / "x"), env={"NPVAE_DATA_DIR": "/no/such/mnist"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "train.py: error: /no/such/mnist: no such data folder (from $NPVAE_DATA_DIR)"


# --- a folder is the project's only if it says so ------------------------------------------

def user_files(folder):
    """A folder of a user's own: notes, a log and a backup folder of theirs."""
    files = {"notes.txt": b"my notes\n", "logs/mylog.txt": b"my log\n",
             "backup/important.txt": b"do not lose me\n"}
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(folder, name)) or folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    return files


def tree(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_a_folder_of_ones_own_is_refused_before_any_work_and_left_byte_identical(tmp_path,
                                                                                 mnist_like_dir):
    out = str(tmp_path / "mine")
    user_files(out)
    before = tree(out)
    result = run_train("--z_dim", "4", "--epochs", "1", "--out", out,
                       "--data_dir", mnist_like_dir)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [f"train.py: error: {out} is not a run folder and not empty (holds "
                     "backup/, logs/, notes.txt); training writes only into a new or empty "
                     "folder or its own run folder: choose another --out"], lines
    assert tree(out) == before  # nothing added, nothing changed, nothing deleted


def test_a_users_model_keras_is_not_taken_for_a_run(tmp_path, mnist_like_dir):
    out = tmp_path / "models"
    out.mkdir()
    (out / "model.keras").write_bytes(b"my own model")
    result = run_train("--z_dim", "4", "--out", str(out), "--data_dir", mnist_like_dir)
    assert result.returncode == 1
    assert "is not a run folder and not empty (holds model.keras)" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(str(out)) == {"model.keras": b"my own model"}


def test_a_data_error_leaves_no_run_folder(tmp_path):
    out = tmp_path / "runs" / "nodata"
    result = run_train("--z_dim", "4", "--out", str(out), "--data_dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("no such file or folder (check --data)")
    assert not os.path.exists(out)


def test_a_busy_run_folder_is_refused_before_tensorflow_is_imported(tmp_path):
    from tests.helpers import start_holder

    out = str(tmp_path / "run")
    holder = start_holder(out)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        started = time.time()
        import train
        try:
            train.main(["--z_dim", "4", "--out", {out!r}])
        except SystemExit as e:
            print(e.code, "tensorflow" in sys.modules, round(time.time() - started, 2))
    """)
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                cwd=ROOT, timeout=120)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    code, tensorflow_loaded, seconds = result.stdout.split()
    assert (code, tensorflow_loaded) == ("1", "False"), result.stderr
    assert "is in use by another training process" in result.stderr
    assert float(seconds) < 1.0 or os.getloadavg()[0] > 4, seconds  # < 1 s on an idle machine


def test_help_shows_defaults_and_the_program_name_as_invoked(tmp_path):
    result = run_train("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: train.py ")
    for text in ("latent dimension Z (default: 500)", "Adam learning rate (default: 0.001)",
                 "(default: auto)"):
        assert text in " ".join(result.stdout.split()), text
    # Under another name (as the console script npvae-train is), --help and errors say it.
    script = tmp_path / "npvae-train"
    script.write_text(f"import sys\nsys.path.insert(0, {ROOT!r})\n"
                      "from npvae_tf.cli.train import main\nmain()\n")
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.startswith("usage: npvae-train "), result.stdout[:200]
    result = subprocess.run([sys.executable, str(script), "--z_dim", "0"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "npvae-train: error: --z_dim must be >= 1" in result.stderr
