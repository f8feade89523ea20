"""Reproducing the paper: the VAE / npVAE grid over Z, its evaluation and ``docs/results.md``.

``run_grid`` trains every (model, z_dim) pair with the paper's settings into
``RUNS/<model>-z<z_dim>`` (finished runs are kept, interrupted ones resume),
``npvae_tf.evaluation.evaluate`` compares them, and ``write_results`` turns the comparison
into a Markdown page with the figures and a verdict on each of the paper's claims.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from typing import Dict, List, Optional, Sequence

from npvae_tf.config import Config
from npvae_tf.files import write_text

FIGURES = ("fig3_spaces.png", "fig4_interpolations.png")


def run_name(model: str, z_dim: int) -> str:
    return f"{model}-z{z_dim}"


def run_grid(base: Config, models: Sequence[str], z_dims: Sequence[int], runs_dir: str,
             data_dir: Optional[str] = None, verbose: int = 0, log=print,
             started: Optional[float] = None) -> List[str]:
    """Trains (or resumes, or keeps) one run per (model, z_dim); returns the run folders.

    Logs which run of how many starts, with the time since ``started`` (default: now);
    ``verbose`` 1 adds training's line per epoch.
    """
    import time

    from npvae_tf.evaluation import clock
    from npvae_tf.training import format_metrics, train

    started = time.time() if started is None else started
    paths = []
    total = len(z_dims) * len(models)
    for z_dim in z_dims:
        for model in models:
            path = os.path.join(runs_dir, run_name(model, z_dim))
            config = base.replace(model=model, z_dim=z_dim)
            log(f"{clock(started)} training run {len(paths) + 1}/{total}: {path}")
            metrics = train(config, path, data_dir=data_dir, verbose=verbose)
            log(format_metrics(metrics))
            paths.append(path)
    return paths


def _by_run(results: Sequence[Dict]) -> Dict[tuple, Dict]:
    return {(m["model"], m["z_dim"]): m for m in results}


def claims(results: Sequence[Dict]) -> List[str]:
    """The paper's claims, each with the numbers that support or contradict it."""
    runs = _by_run(results)
    vaes = {z: m for (model, z), m in runs.items() if model == "vae"}
    npvaes = {z: m for (model, z), m in runs.items() if model == "npvae"}
    lines = []

    def verdict(ok: bool) -> str:
        return "**supported**" if ok else "**not supported**"

    if 2 in vaes and npvaes:
        z_big = max(npvaes)
        x_path, vae2 = npvaes[z_big].get("x_path_log_likelihood"), vaes[2].get("reconstruction_ll_mean")
        if x_path is not None and vae2 is not None:
            lines.append(
                f"- *A 2-D space with the representative power of a {z_big}-D model.* "
                f"{verdict(x_path > vae2)}: reconstructing each test image through its 2-D "
                f"location (y → x → z̃ → decoder) gives log p(y|z̃) = {x_path:.2f} nats for the "
                f"npVAE (Z = {z_big}), against {vae2:.2f} nats for a VAE whose code is 2-D "
                f"(decoded at E[z]); the npVAE's own {z_big}-D code gives "
                f"{npvaes[z_big]['reconstruction_ll_mean']:.2f} nats.")
        knn_x = npvaes[z_big].get("knn_accuracy_5")
        knn_z = vaes[2].get("knn_accuracy_5")
        if knn_x is not None and knn_z is not None:
            lines.append(
                f"- *X organises the data better than a 2-D VAE latent space.* "
                f"{verdict(knn_x > knn_z)}: 5-NN test accuracy in X {knn_x:.3f} vs {knn_z:.3f} "
                f"in the 2-D VAE's Z (published: VAE 0.765, t-SNE 0.950, UMAP 0.954).")
    for z in sorted(set(vaes) & set(npvaes)):
        gap = npvaes[z]["elbo"] - vaes[z]["elbo"]
        lines.append(
            f"- *The kernel term costs little likelihood* (Z = {z}). "
            f"{verdict(gap > -2.0)}: test ELBO npVAE {npvaes[z]['elbo']:.2f} vs "
            f"VAE {vaes[z]['elbo']:.2f}, a difference of {gap:+.2f} nats (we call 2 nats little).")
    if 2 in vaes and npvaes:
        z_big = max(npvaes)
        c_x, c_prior = npvaes[z_big].get("confidence_x_density"), vaes[2].get("confidence_prior")
        if c_x is not None and c_prior is not None:
            lines.append(
                f"- *Sampling in X generates credible digits.* {verdict(c_x >= c_prior)} "
                f"(compared with a 2-D VAE's prior samples): classifier confidence {c_x:.3f} "
                f"(npVAE Z = {z_big}, ancestral in X) vs {c_prior:.3f}; Fréchet distance "
                f"{npvaes[z_big].get('frechet_x_density', float('nan')):.2f} vs "
                f"{vaes[2].get('frechet_prior', float('nan')):.2f}.")
        i_x, i_z = npvaes[z_big].get("interpolation_confidence"), vaes[2].get("interpolation_confidence")
        if i_x is not None and i_z is not None:
            lines.append(
                f"- *Interpolating in X stays on the data manifold.* {verdict(i_x >= i_z)}: mean "
                f"classifier confidence along the paths {i_x:.3f} (npVAE, X) vs {i_z:.3f} "
                f"(2-D VAE, Z).")
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
    times = []
    for path in run_paths:
        fit = os.path.join(path, "fit_summary.json")
        name = os.path.basename(path.rstrip("/"))
        if os.path.isfile(fit):
            with open(fit) as f:
                t = json.load(f)
            times.append(f"`{name}` {t['train_seconds'] / 60:.1f} min "
                         f"({t['seconds_per_epoch']:.1f} s/epoch over {t['epochs_timed']} epochs)")
        else:
            times.append(f"`{name}` not recorded")
    lines = [
        "# Results: VAE and nonparametric VAE on MNIST",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}. Every number below comes from "
        "that command; rerunning it reproduces them. It keeps run folders that are already "
        f"finished, so its own wall-clock time ({seconds / 60:.0f} min) covers only what was "
        "left to do; each run's training time is listed under Settings.",
        "",
        "## Settings",
        "",
        f"- Data: MNIST, {config.validation_examples:,} validation images held out of the 60,000; "
        f"{'the first ' + format(config.train_examples, ',') if config.train_examples else 'all remaining'} "
        "training images; the 10,000 test images for every number.",
        f"- Models: MLPs {list(config.hidden)} (ReLU), dropout rate {config.dropout}, X of "
        f"dimension {config.x_dim}, {pixel_likelihood(config)}, match weight "
        f"{config.match_weight}.",
        f"- Training: Adam {config.learning_rate}, batch {config.batch_size}, "
        f"{config.epochs} epochs, seed {config.seed}.",
        f"- Machine: {machine()}.",
        "- Training time: " + ("; ".join(times) if times else "not recorded") + ".",
        "",
        "## Comparison",
        "",
        table,
        "## The paper's claims",
        "",
        *claims(results),
        "",
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
    return path
