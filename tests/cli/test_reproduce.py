"""reproduce.py's command line: Ctrl-C is one line and exit 130, not a traceback."""

import numpy as np
import pytest

from npvae_tf.cli import reproduce


def test_ctrl_c_is_one_line_that_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import npvae_tf.reproduce.grid as grid

    np.savez(tmp_path / "d.npz", x_train=np.zeros((40, 4, 4), np.uint8))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "run_grid", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["--data", str(tmp_path / "d.npz"), "--runs", "vae:2",
                        "--runs_dir", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: rerun the same command") and "\n" not in err
