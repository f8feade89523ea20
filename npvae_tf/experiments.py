"""Reproducing the paper: the grid of schemes over Z, its evaluation and ``docs/results.md``.

``run_grid`` trains every (scheme, z_dim) pair with the paper's settings into
``RUNS/<run name>`` (finished runs are kept, interrupted ones resume),
``npvae_tf.evaluation.evaluate`` compares them, and ``write_results`` turns the comparison
into a Markdown page (and ``results.json``) with the figures and a verdict on each of the
paper's claims for each scheme (:func:`npvae_tf.report.write_results`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

from npvae_tf.config import Config


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A training objective of the grid: its run-name prefix, Config changes, default Z."""

    prefix: str
    changes: Dict[str, object]
    z_dims: Tuple[int, ...]
    about: str


# The paper's scheme and the VAE stay the reference; "xpath" is the improvement measured
# against them (docs/results.md, README "Schemes").
SCHEMES = {
    "vae": Scheme("vae", dict(model="vae"), (2, 20, 500),
                  "the standard VAE (Kingma & Welling 2014)"),
    "paper": Scheme("npvae", dict(model="npvae"), (2, 20, 500),
                    "the paper's objective, eq. 5: ELBO − ||E[z_i] − z̃_i||²"),
    "xpath": Scheme("npvae-xpath", dict(model="npvae", match_weight=0.0, x_path_weight=1.0,
                                        x_path_decoder="separate", x_path_stop_gradient=True),
                    (20, 500),
                    "ELBO + log p_X(y_i | z̃_i): the X path trained as it is used, with its own "
                    "decoder and no match term; the X-path term does not reach the VAE's "
                    "encoder, so the VAE trains exactly as a plain VAE"),
    "umap": Scheme("npvae-umap", dict(model="npvae", match_weight=0.0, neighbour_weight=1.0),
                   (20, 500),
                   "ELBO − UMAP's cross-entropy between the fuzzy 15-nearest-neighbour graph of "
                   "the training images and X (the neighbour term, McInnes et al. 2018, in "
                   "parametric form): it trains the X encoder only, so the VAE trains exactly "
                   "as a plain VAE, and X is decoded through the kernel by the VAE's decoder"),
    "umap-landmark": Scheme("npvae-umap-landmark",
                            dict(model="npvae", match_weight=0.0, neighbour_weight=1.0,
                                 landmark_weight=1.0), (500,),
                            "the umap scheme, with the X encoder also regressing the training "
                            "images' nonparametric UMAP layout (umap-learn, computed once from "
                            "the same graph; ParametricUMAP's landmark loss)"),
    "umap-landmark-own": Scheme("npvae-umap-landmark-own",
                                dict(model="npvae", match_weight=0.0, neighbour_weight=1.0,
                                     landmark_weight=1.0, x_path_decoder="separate"), (500,),
                                "umap-landmark with an X-path decoder of its own fitted after "
                                "training, as in umap-own"),
    "umap-own": Scheme("npvae-umap-own", dict(model="npvae", match_weight=0.0,
                                              neighbour_weight=1.0, x_path_decoder="separate"),
                       (500,),
                       "the umap scheme, with an X-path decoder of its own fitted after training "
                       "(10 epochs) on leave-one-out kernel averages of the training codes at "
                       "the serving lengthscale"),
}


def run_name(scheme: str, z_dim: int) -> str:
    return f"{SCHEMES[scheme].prefix}-z{z_dim}"


def grid(schemes: Sequence[str], z_dims: Optional[Sequence[int]] = None) -> List[Tuple[str, int]]:
    """``(scheme, z_dim)`` pairs, by Z: each scheme's own Z values, or ``z_dims`` for all."""
    pairs = [(name, z) for name in schemes for z in (z_dims or SCHEMES[name].z_dims)]
    return sorted(pairs, key=lambda p: (p[1], list(SCHEMES).index(p[0])))


def run_grid(base: Config, pairs: Sequence[Tuple[str, int]], runs_dir: str,
             data_dir: Optional[str] = None, verbose: int = 0, log=print,
             started: Optional[float] = None) -> List[str]:
    """Trains (or resumes, or keeps) one run per (scheme, z_dim); returns the run folders.

    Logs which run of how many starts, with the time since ``started`` (default: now);
    ``verbose`` 1 adds training's line per epoch.
    """
    import time

    from npvae_tf.evaluation import clock
    from npvae_tf.training import format_metrics, train

    started = time.time() if started is None else started
    paths = []
    for scheme, z_dim in pairs:
        path = os.path.join(runs_dir, run_name(scheme, z_dim))
        config = base.replace(z_dim=z_dim, **SCHEMES[scheme].changes)
        log(f"{clock(started)} training run {len(paths) + 1}/{len(pairs)}: {path}")
        metrics = train(config, path, data_dir=data_dir, verbose=verbose)
        log(format_metrics(metrics))
        paths.append(path)
    return paths
