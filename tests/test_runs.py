"""Run folders (npvae_tf/runs/): names, the one check, the loader, the lock, output checks."""

import os
import signal
import subprocess
import sys

import pytest

from npvae_tf.core.config import Config
from npvae_tf.core.files import write_json
from npvae_tf.runs.layout import (FINISHED_FILES, LOCK_FILE, TEST_METRICS_FILE, MODEL_FILE, RunError, RunLockedError, check_run_dir, default_run_dir, find_latest_run)
from npvae_tf.runs.lock import RunLock
from npvae_tf.runs.outputs import check_writable
from npvae_tf.runs.load import load_run
from tests.helpers import ROOT, start_holder, unwritable_folder


def test_the_same_config_names_the_same_default_folder():
    a, b = Config(z_dim=20), Config(z_dim=20)
    assert default_run_dir(a) == default_run_dir(b)
    assert default_run_dir(a).startswith(os.path.join("runs", "npvae-z20-"))
    assert default_run_dir(a) != default_run_dir(a.replace(seed=1))
    assert default_run_dir(a) != default_run_dir(a.replace(binarize=True))
    assert default_run_dir(a, "elsewhere").startswith("elsewhere" + os.sep)


def fake_run(folder, config=Config(z_dim=4, hidden=(8,)), files=FINISHED_FILES):
    os.makedirs(folder, exist_ok=True)
    config.save(folder)
    for name in files:
        if name != "config.json":
            with open(os.path.join(folder, name), "w") as f:
                f.write("{}")
    return folder


def test_check_run_dir_names_the_problem(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        check_run_dir(str(tmp_path / "none"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not a folder"):
        check_run_dir(str(tmp_path / "file"))
    with pytest.raises(RunError, match=r"not a run folder \(no config.json\)"):
        check_run_dir(str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="unusable config.json"):
        check_run_dir(str(tmp_path / "bad"))
    unfinished = fake_run(str(tmp_path / "unfinished"), files=["config.json"])
    with pytest.raises(RunError, match="unfinished run, missing model.keras, reference_set.npz, "
                                       "test_metrics.json.*rerun the same train.py command"):
        check_run_dir(unfinished)
    assert check_run_dir(unfinished, finished=False).z_dim == 4
    finished = fake_run(str(tmp_path / "finished"))
    assert check_run_dir(finished) == Config(z_dim=4, hidden=(8,))
    with pytest.raises(RunError, match=r"different config \(differs in: seed, z_dim\)"):
        check_run_dir(finished, Config(z_dim=5, hidden=(8,), seed=3))


def test_find_latest_run_skips_unfinished_runs(tmp_path):
    with pytest.raises(RunError, match="no finished run found"):
        find_latest_run(str(tmp_path / "none"))
    fake_run(str(tmp_path / "a"), files=["config.json"])
    with pytest.raises(RunError, match=r"no finished run found under .* \(1 unfinished\)"):
        find_latest_run(str(tmp_path))
    fake_run(str(tmp_path / "b"))
    os.utime(tmp_path / "b" / "config.json", (1000, 1000))  # older than the unfinished "a"
    assert find_latest_run(str(tmp_path)) == str(tmp_path / "b")


def test_load_run_refuses_a_folder_whose_parts_disagree(tmp_path):
    """config.json of one run with model.keras of another (what two concurrent runs into one
    folder used to leave) is refused, naming each disagreement."""
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import build_reference_set
    from tests.helpers import synthetic_digits

    images, labels = synthetic_digits(40)
    images = images.reshape(40, -1).astype("float32") / 255
    folder = str(tmp_path / "mixed")
    trained = Config(z_dim=3, hidden=(8,), validation_examples=2)
    model = build_model(trained)
    os.makedirs(folder)
    model.save(os.path.join(folder, MODEL_FILE))
    build_reference_set(model, images, labels).save(folder)
    write_json(os.path.join(folder, TEST_METRICS_FILE), {})
    trained.save(folder)
    assert load_run(folder).config == trained  # consistent: loads
    trained.replace(z_dim=5, seed=2).save(folder)
    with pytest.raises(RunError, match=r"inconsistent run folder: z_dim: config 5, model 3; "
                                       r"seed: config 2, model 0; z_dim: config 5, reference "
                                       r"set 3"):
        load_run(folder)
    trained.replace(model="vae").save(folder)
    with pytest.raises(RunError, match="config says 'vae', model.keras holds NonparametricVAE"):
        load_run(folder)
    trained.save(folder)
    with open(os.path.join(folder, MODEL_FILE), "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(RunError, match="model.keras: cannot load"):
        load_run(folder)


# --- the lock --------------------------------------------------------------------------------

@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_a_held_lock_refuses_at_once_and_a_dead_holder_frees_it(tmp_path, kill):
    folder = str(tmp_path / "run")
    holder = start_holder(folder)
    try:
        with pytest.raises(RunLockedError, match=rf"{folder} is in use by another training "
                                                 rf"process \(pid {holder.pid}\)"):
            RunLock(folder).acquire()
    finally:
        holder.send_signal(kill)
        holder.wait(timeout=60)
    with RunLock(folder) as lock:  # the dead holder's lock is gone; its file stays
        assert lock.holder() == os.getpid()
    assert os.path.isfile(os.path.join(folder, LOCK_FILE))


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    folder = str(tmp_path / "run")
    with RunLock(folder):
        with pytest.raises(RunLockedError):
            RunLock(folder).acquire()
    RunLock(folder).acquire().release()


# --- output locations ------------------------------------------------------------------------

def test_check_writable(tmp_path):
    check_writable(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing created
    assert not os.path.exists(tmp_path / "new")
    check_writable(str(tmp_path))
    with pytest.raises(RunError, match="cannot write the output folder"):
        check_writable(os.path.join(unwritable_folder(tmp_path), "run"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="exists and is not a folder"):
        check_writable(str(tmp_path / "file"))
    with pytest.raises(RunError, match="is not a folder"):
        check_writable(str(tmp_path / "file" / "run"))
    assert sorted(os.listdir(tmp_path)) == ["file", "readonly"]  # no probe left behind


def test_importing_the_package_and_runs_does_not_import_tensorflow():
    code = ("import sys, npvae_tf, npvae_tf.runs, npvae_tf.cli; "
            "assert npvae_tf.Config().z_dim == 500; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_training_writes_only_into_a_new_empty_or_own_folder(tmp_path):
    from npvae_tf.runs.layout import check_for_training

    config = Config(z_dim=4, hidden=(8,))
    assert check_for_training(config, str(tmp_path / "new")) is False
    assert check_for_training(config, str(tmp_path)) is False  # empty
    (tmp_path / LOCK_FILE).write_text("123\n")  # left by an earlier try: the project's
    (tmp_path / "worker-1").mkdir()
    (tmp_path / "worker-1" / LOCK_FILE).write_text("124\n")
    assert check_for_training(config, str(tmp_path)) is False
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "worker-2").mkdir()  # no lock in it: not a worker's folder of ours
    with pytest.raises(RunError, match=r"not a run folder and not empty \(holds notes.txt, "
                                       r"worker-2/\)"):
        check_for_training(config, str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="exists and is not a folder"):
        check_for_training(config, str(tmp_path / "file"))
    run = fake_run(str(tmp_path / "run"), config)
    assert check_for_training(config, run) is True


def test_an_output_folder_is_written_only_when_new_empty_marked_or_owned(tmp_path):
    from npvae_tf.runs.outputs import check_output_folder, mark_output_folder

    check_output_folder(str(tmp_path / "new"), ".mark", "prog")
    check_output_folder(str(tmp_path), ".mark", "prog")
    (tmp_path / "metrics.json").write_text("mine")
    with pytest.raises(RunError, match=r"holds files prog did not write \(metrics.json; no "
                                       r"\.mark\); choose a new or empty --out"):
        check_output_folder(str(tmp_path), ".mark", "prog")
    check_output_folder(str(tmp_path), ".mark", "prog", owned=True)
    mark_output_folder(str(tmp_path / "ours"), ".mark", "prog")
    (tmp_path / "ours" / "metrics.json").write_text("ours")
    check_output_folder(str(tmp_path / "ours"), ".mark", "prog")


def test_a_missing_run_folder_is_named_with_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError) as e:
        check_run_dir("runs/quick")
    assert str(e.value) == f"runs/quick ({tmp_path}/runs/quick): no such run folder"
