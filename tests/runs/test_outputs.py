"""Output folders (npvae_tf/runs/outputs.py): refused in one line before any work, and never
written into by the check itself."""

import os

import pytest

from npvae_tf.runs.layout import RunError
from npvae_tf.runs.outputs import check_output_folder, check_writable, mark_output_folder
from tests.helpers import unwritable_folder


def test_the_writable_check_writes_nothing_into_a_users_folder(tmp_path):
    ours = tmp_path / "mine"
    ours.mkdir()
    (ours / "notes.txt").write_text("keep")
    os.utime(ours, (1_000_000, 1_000_000))
    check_writable(str(ours))
    check_writable(str(ours / "new" / "deeper"))  # created later, under ours
    assert sorted(os.listdir(ours)) == ["notes.txt"]
    assert os.stat(ours).st_mtime == 1_000_000


@pytest.mark.parametrize("path, problem", [
    ("/proc/npvae-out", "not a file system that stores files"),
    ("/sys/npvae-out", "not a file system that stores files"),
])
def test_pseudo_file_systems_are_refused(path, problem):
    with pytest.raises(RunError, match=problem):
        check_writable(path)


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


def test_an_output_folder_is_written_only_when_new_empty_marked_or_owned(tmp_path):
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
