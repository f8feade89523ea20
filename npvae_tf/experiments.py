"""Reproducing the paper: the grid of schemes over Z, its evaluation and ``docs/results.md``.

``run_grid`` trains every (scheme, z_dim) pair with the paper's settings into
``RUNS/<run name>`` (finished runs are kept, interrupted ones resume),
``npvae_tf.evaluation.evaluate`` compares them, and ``write_results`` turns the comparison
into a Markdown page (and ``results.json``) with the figures and a verdict on each of the
paper's claims for each scheme.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Dict, List, Optional, Sequence, Tuple

from npvae_tf.config import Config
from npvae_tf.files import write_json, write_text

FIGURES = ("fig3_spaces.png", "fig4_interpolations.png")


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


# Anchors measured or published outside this grid (2-D maps of MNIST, test 5-NN accuracy and
# trustworthiness with 5 neighbours; UMAP measured on this project's machine and protocol).
UMAP_KNN5, UMAP_TRUST, PARAMETRIC_UMAP_KNN5 = 0.953, 0.952, 0.961
LITTLE_NATS = 2.0  # an ELBO cost we call little


def _verdict(ok: bool) -> str:
    return "**supported**" if ok else "**not supported**"


def claims(results: Sequence[Dict]) -> List[str]:
    """The paper's claims for each npVAE scheme, each with the numbers for or against it."""
    vaes = {m["z_dim"]: m for m in results if m["model"] == "vae"}
    by_scheme: Dict[str, Dict[int, Dict]] = {}
    for m in results:
        if m["model"] == "npvae":
            by_scheme.setdefault(m.get("scheme", "npVAE"), {})[m["z_dim"]] = m
    vae2 = vaes.get(2)
    lines = []
    for scheme, runs in by_scheme.items():
        z_big = max(runs)
        big = runs[z_big]
        lines += [f"### {scheme}", ""]
        x_path = big.get("x_path_log_likelihood")
        if vae2 is not None and x_path is not None:
            ref = vae2["reconstruction_ll_mean"]
            lines.append(
                f"- *A 2-D space with the representative power of a {z_big}-D model.* "
                f"{_verdict(x_path >= ref)}: reconstructing each test image through its 2-D "
                f"location (y → x → z̃ → decoder) gives log p(y|z̃) = {x_path:.2f} nats "
                f"(Z = {z_big}), against {ref:.2f} for a VAE whose code is 2-D (decoded at "
                f"E[z]), a difference of {x_path - ref:+.2f}; the model's own {z_big}-D code "
                f"gives {big['reconstruction_ll_mean']:.2f} nats.")
        for z, m in sorted(runs.items()):
            knn, trust = m.get("knn_accuracy_5"), m.get("trustworthiness")
            if knn is None:
                continue
            against = (f"{vae2['knn_accuracy_5']:.3f} in the 2-D VAE's Z; "
                       if vae2 is not None and vae2.get("knn_accuracy_5") is not None else "")
            lines.append(
                f"- *X organises the data better than a 2-D VAE latent space* (Z = {z}). "
                f"{_verdict(vae2 is not None and knn > vae2.get('knn_accuracy_5', 1.0))}: "
                f"5-NN test accuracy in X {knn:.3f} vs {against}trustworthiness {trust:.3f}. "
                f"Anchors: UMAP on this machine {UMAP_KNN5} / {UMAP_TRUST}, parametric UMAP "
                f"{PARAMETRIC_UMAP_KNN5} (published).")
        for z, m in sorted(runs.items()):
            if z not in vaes:
                continue
            gap = m["elbo"] - vaes[z]["elbo"]
            lines.append(
                f"- *The kernel term costs little likelihood* (Z = {z}). "
                f"{_verdict(gap > -LITTLE_NATS)}: test ELBO {m['elbo']:.2f} vs VAE "
                f"{vaes[z]['elbo']:.2f}, a difference of {gap:+.2f} nats (we call "
                f"{LITTLE_NATS:g} nats little).")
        c_x = big.get("confidence_x_density")
        if vae2 is not None and c_x is not None:
            lines.append(
                f"- *Sampling in X generates credible digits* (Z = {z_big}). "
                f"{_verdict(c_x >= vae2['confidence_prior'])} (against a 2-D VAE's prior "
                f"samples): classifier confidence {c_x:.3f} vs {vae2['confidence_prior']:.3f}; "
                f"Fréchet distance {big['frechet_x_density']:.2f} vs "
                f"{vae2['frechet_prior']:.2f}.")
        i_x = big.get("interpolation_confidence")
        if vae2 is not None and i_x is not None:
            lines.append(
                f"- *Interpolating in X stays on the data manifold* (Z = {z_big}). "
                f"{_verdict(i_x >= vae2['interpolation_confidence'])}: mean classifier "
                f"confidence along the paths {i_x:.3f} (X) vs "
                f"{vae2['interpolation_confidence']:.3f} (2-D VAE, Z).")
        lines.append("")
    return lines


def small_png(source: str, target: str, max_width: int = 1400) -> None:
    """Copies a figure for the repository: at most ``max_width`` pixels wide, 256 colours."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)),
                                 Image.LANCZOS)
        image.quantize(colors=256).save(target, optimize=True)


def pixel_likelihood(config: Config) -> str:
    """What the nats in results.md are likelihoods of: grayscale or binarised pixels."""
    if config.binarize:
        return ("Bernoulli decoder on binarised pixels (training images binarised anew each "
                "epoch, evaluation images once with a fixed seed; the nats are of the kind "
                "reported on binarised MNIST)")
    return ("Bernoulli decoder on grayscale pixels in [0, 1], not binarised (the nats are "
            "therefore not comparable with log-likelihoods reported on binarised MNIST)")


def machine() -> str:
    import tensorflow as tf

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def write_results(summary: Dict, run_paths: Sequence[str], docs_dir: str,
                  command: str, seconds: float) -> str:
    """Writes ``docs_dir/results.md`` and copies the figures to ``docs_dir/figures/``."""
    figures_dir = os.path.join(docs_dir, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    shown = []
    comparison = summary.get("comparison_dir")
    sources = [(os.path.join(comparison, f), f) for f in FIGURES] if comparison else []
    for path, run_dir in zip(run_paths, summary["run_dirs"]):
        name = os.path.basename(path.rstrip("/"))
        if name.startswith("npvae"):
            sources.append((os.path.join(run_dir, "fig2_embedding.png"), f"fig2_{name}.png"))
    for source, name in sources:
        if os.path.isfile(source):
            small_png(source, os.path.join(figures_dir, name))
            shown.append(name)

    results = summary["runs"]
    from npvae_tf.evaluation import Settings, comparison_markdown

    settings = Settings(**{k: v for k, v in summary["settings"].items()
                           if k in {f.name for f in dataclasses.fields(Settings)}})
    table = comparison_markdown(results, summary["reference"], settings)
    config = Config.load(run_paths[0])
    configs = [Config.load(p) for p in run_paths]
    schemes = []
    for name, scheme in SCHEMES.items():
        used = sorted({c.z_dim for c in configs
                       if c.scheme == config.replace(**scheme.changes).scheme})
        if used:
            schemes.append(f"- `{name}` ({config.replace(**scheme.changes).scheme}; run names "
                           f"`{scheme.prefix}-zZ`, Z = {', '.join(map(str, used))}): "
                           f"{scheme.about}.")
    lines = [
        "# Results: VAE and nonparametric VAE on MNIST",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}. Every number below comes from "
        "that command; rerunning it reproduces them. It keeps run folders that are already "
        f"finished, so its own wall-clock time ({seconds / 60:.0f} min) covers only what was "
        "left to do; each run's training time is in the table. The same numbers, with every "
        "run's configuration, are in [results.json](results.json).",
        "",
        "## Settings",
        "",
        f"- Data: MNIST, {config.validation_examples:,} validation images held out of the 60,000; "
        f"{'the first ' + format(config.train_examples, ',') if config.train_examples else 'all remaining'} "
        "training images; the 10,000 test images for every number.",
        f"- Models: MLPs {list(config.hidden)} (ReLU), dropout rate {config.dropout}, X of "
        f"dimension {config.x_dim}, {pixel_likelihood(config)}.",
        f"- Training: Adam {config.learning_rate}, batch {config.batch_size}, "
        f"{config.epochs} epochs, seed {config.seed}.",
        f"- Machine: {machine()}.",
        "- Schemes:",
        *["  " + line for line in schemes],
        "- The X path and every image generated in X use the serving lengthscale: the learned "
        "one times the factor in 2, 1, 1/2, …, 1/256 that gives the best X path on 2,000 "
        "validation images (chosen once after training).",
        "",
        "## Comparison",
        "",
        table,
        "How to read the X rows:",
        "",
        "- *X path*: each test image through its 2-D location, y → x = f(y) → z̃ = Σ_j W(x, x_j) "
        "E[z_j] over the training set (serving lengthscale) → log p(y|z̃), decoded by the X "
        "path's decoder. This is the paper's \"500-D power from a 2-D space\"; the 2-D VAE's "
        "log p(y|E[z]) is the row to beat.",
        "- *Decoding the mean of the k nearest training E[z] in Z*: the same kind of "
        "prediction (an average of other images' codes, the same decoder), but with the "
        "neighbours found in the 500-D Z from the image's own E[z|y]. It is what the X path "
        "would give if the 2-D X kept Z's neighbourhoods; the gap between the two rows is "
        "what the 2-D map loses, the rest is what averaging codes loses.",
        "- A scheme whose X-path term never reaches the VAE (`E[z] held`) trains the VAE "
        "inside it exactly as the plain VAE (same seed, data, noise and dropout streams): "
        "its likelihood rows equal the VAE's by construction, not by chance.",
        "",
        "## The paper's claims",
        "",
        *claims(results),
        "## Figures",
        "",
    ]
    captions = {
        "fig3_spaces.png": "Fig. 3: the 2-D space of each run (Z of the 2-D VAE, X of each npVAE).",
        "fig4_interpolations.png": "Fig. 4: interpolations between the same two test images, "
                                   "VAE in Z and npVAE in X, with the classifier's label and "
                                   "confidence.",
    }
    for name in shown:
        caption = captions.get(name) or (f"Fig. 2 ({name[5:-4]}): training and test X by class, "
                                          "and images generated at test X locations.")
        lines += [f"![{caption}](figures/{name})", "", caption, ""]
    path = os.path.join(docs_dir, "results.md")
    write_text(path, "\n".join(lines) + "\n")
    write_json(os.path.join(docs_dir, "results.json"), {
        "command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "reference": summary["reference"], "settings": summary["settings"],
        "runs": [{"name": os.path.basename(p.rstrip("/")), "config": c.to_dict(),
                  "metrics": {k: v for k, v in m.items() if k != "config"}}
                 for p, c, m in zip(run_paths, configs, results)]})
    return path
