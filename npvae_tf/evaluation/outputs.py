"""Where evaluate.py writes, checked before TensorFlow loads: a folder per run and one for the
comparison, never a folder holding files evaluate.py did not write."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from npvae_tf.core.config import Config
from npvae_tf.runs.layout import EVAL_DIR, EVAL_MARKER, check_run_dir
from npvae_tf.runs.outputs import check_output_folder, check_writable


class EvaluationError(ValueError):
    """A run folder cannot be evaluated; the message names the folder and the problem."""


def output_dirs(paths: Sequence[str], out: Optional[str]):
    """Per-run output folders and the comparison folder (None for a single run).

    One run: ``out`` or ``RUN/eval``. Several: ``out/<run name>`` (or ``RUN/eval``) and the
    comparison in ``out`` (or ``<common parent>/comparison``).
    """
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(paths) == 1:
        return [out or os.path.join(paths[0], EVAL_DIR)], None
    if out:
        if len(set(names)) < len(names):
            raise EvaluationError("run folders with the same name cannot share --out; "
                                  "evaluate them without --out or separately")
        return [os.path.join(out, n) for n in names], out
    parent = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.join(p, EVAL_DIR) for p in paths], os.path.join(parent, "comparison")


def check_outputs(paths: Sequence[str], out: Optional[str]
                  ) -> Tuple[List[Config], List[str], Optional[str]]:
    """Checks the run folders and every output folder (fast, no TensorFlow); returns the runs'
    configs, their output folders and the comparison folder (see :func:`output_dirs`).

    Never a file evaluate.py did not write: outputs go only into a new or empty folder, one
    marked as evaluate.py's (it leaves its marker in each), or a run's own ``eval/``.
    """
    if len(set(os.path.abspath(p) for p in paths)) < len(paths):
        raise EvaluationError("the same run folder is given twice")
    configs = [check_run_dir(p) for p in paths]
    shapes = {c.image_shape for c in configs}
    if len(shapes) > 1:
        raise EvaluationError(f"the runs were trained on different image sizes {sorted(shapes)}; "
                              "evaluate them separately")
    run_dirs, comparison_dir = output_dirs(paths, out)
    for path, folder in zip(paths, run_dirs):
        own = os.path.abspath(folder) == os.path.abspath(os.path.join(path, EVAL_DIR))
        check_output_folder(folder, EVAL_MARKER, "evaluate.py", owned=own)
    if comparison_dir is not None:
        check_output_folder(comparison_dir, EVAL_MARKER, "evaluate.py")
    for folder in run_dirs + ([comparison_dir] if comparison_dir else []):
        check_writable(folder)  # a read-only output fails now, not after the metrics
    return configs, run_dirs, comparison_dir
