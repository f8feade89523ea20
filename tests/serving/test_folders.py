"""SavedModel folders (npvae_tf/serving/folders.py): what may be replaced, decided without
TensorFlow."""

import os
import subprocess
import sys

import pytest

from npvae_tf.serving.folders import INFO_FILE, ExportError, atomic_write_dir, check_target
from tests.helpers import ROOT


def test_only_an_empty_folder_or_an_earlier_export_may_be_replaced(tmp_path):
    check_target(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    check_target(str(tmp_path / "empty"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    with pytest.raises(ExportError, match="is not a SavedModel; refusing to replace it"):
        check_target(str(other))
    (other / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ExportError, match="export.py did not write"):
        check_target(str(other))
    os.makedirs(other / os.path.dirname(INFO_FILE))
    (other / INFO_FILE).write_text("{}")
    with pytest.raises(ExportError, match=r"files an export does not write \(data.csv"):
        check_target(str(other))
    os.remove(other / "data.csv")
    check_target(str(other))


def test_a_failed_write_leaves_the_earlier_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")

    def fail(tmp):
        open(os.path.join(tmp, "saved_model.pb"), "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_dir(str(target), fail)
    assert (target / "saved_model.pb").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_checking_a_target_does_not_load_tensorflow():
    code = ("import sys; from npvae_tf.serving import folders; folders.check_target('/nonexistent/x'); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
