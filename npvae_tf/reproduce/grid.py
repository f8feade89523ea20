"""Reproducing the paper: the grid of schemes over Z, its evaluation and ``docs/results.md``.

``run_grid`` trains every (scheme, z_dim) pair of :data:`npvae_tf.core.objective.SCHEMES`
with the paper's settings into ``RUNS/<run name>`` (finished runs are kept, interrupted ones
resume); ``npvae_tf.evaluation.evaluate.evaluate`` compares them, and
:func:`npvae_tf.reproduce.results_page.write_results` turns the comparison into
``docs/results.md``.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from npvae_tf.core.config import Config
from npvae_tf.core.objective import SCHEMES


def run_name(scheme: str, z_dim: int) -> str:
    return f"{SCHEMES[scheme].prefix}-z{z_dim}"


def grid(schemes: Sequence[str], z_dims: Optional[Sequence[int]] = None) -> List[Tuple[str, int]]:
    """``(scheme, z_dim)`` pairs, by Z: each scheme's own Z values, or ``z_dims`` for all."""
    pairs = [(name, z) for name in schemes for z in (z_dims or SCHEMES[name].z_dims)]
    return sorted(pairs, key=lambda p: (p[1], list(SCHEMES).index(p[0])))


def run_grid(base: Config, pairs: Sequence[Tuple[str, int]], runs_dir: str,
             data=None, verbose: int = 0, log=print,
             started: Optional[float] = None) -> List[str]:
    """Trains (or resumes, or keeps) one run per (scheme, z_dim); returns the run folders.

    Logs which run of how many starts, with the time since ``started`` (default: now);
    ``verbose`` 1 adds training's line per epoch.
    """
    import time

    from npvae_tf.core.clock import clock
    from npvae_tf.training.fit import fit_run, format_metrics

    started = time.time() if started is None else started
    paths = []
    for scheme, z_dim in pairs:
        path = os.path.join(runs_dir, run_name(scheme, z_dim))
        config = base.replace(z_dim=z_dim, **SCHEMES[scheme].changes)
        log(f"{clock(started)} training run {len(paths) + 1}/{len(pairs)}: {path}")
        metrics = fit_run(config, path, data=data, verbose=verbose)
        log(format_metrics(metrics))
        paths.append(path)
    return paths
