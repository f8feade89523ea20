"""Run folders' layout (npvae_tf/runs/layout.py): names, the one check, the latest run."""

import os
import subprocess
import sys

import pytest

from npvae_tf.core.config import Config
from npvae_tf.runs.layout import (FINISHED_FILES, LOCK_FILE, RunError, check_run_dir,
                                  default_run_dir, find_latest_run)
from tests.helpers import ROOT


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


def test_a_missing_run_folder_is_named_with_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunError) as e:
        check_run_dir("runs/quick")
    assert str(e.value) == f"runs/quick ({tmp_path}/runs/quick): no such run folder"
