"""``docs/results.md``: the comparison of the reproduced runs, their settings, a verdict on each
of the paper's claims, and the figures (:func:`write_results`, called by ``reproduce.py``)."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Dict, List, Optional, Sequence

from npvae_tf.core.config import Config
from npvae_tf.core.files import write_json, write_text
from npvae_tf.core.objective import RECOMMENDED, SCHEMES
from npvae_tf.evaluation.settings import Settings
from npvae_tf.evaluation.tables import (LITTLE_NATS, PARAMETRIC_UMAP_KNN5, UMAP_KNN5,
                                        UMAP_TRUST, comparison_markdown, scheme_title)
from npvae_tf.runs.layout import recorded_data

# Figures of the comparison folder the page shows, with their captions.
FIGURES = ("fig3_spaces.png", "fig4_interpolations.png")
CAPTIONS = {
    "fig3_spaces.png": "Fig. 3: the 2-D space of each run (Z of the 2-D VAE, X of each npVAE).",
    "fig4_interpolations.png": "Fig. 4: interpolations between the same two test images, "
                               "VAE in Z and npVAE in X, with the classifier's label and "
                               "confidence.",
}
# How to read the X rows of the comparison table.
READING_X_ROWS = [
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
]
SERVING_NOTE = '- The X path and every image generated in X use the serving lengthscale: the factor in 2, 1, 1/2, …, 1/256 of an anchor that gives the best X path on 2,000 validation images, the grid extended past its edge when the best factor lies there, never below a quarter of the median nearest-neighbour distance in X (chosen once after training). The anchor is the learned lengthscale, or for the neighbour schemes (whose lengthscale no term trains) the median nearest-neighbour distance in the training X. Images generated in X are the VAE decoder\'s; the X path\'s likelihood is its own decoder\'s where the run has one.'


def _verdict(ok: bool) -> str:
    return "**supported**" if ok else "**not supported**"


def _claim_representative_power(big: Dict, z_big: int, vae2: Dict) -> List[str]:
    x_path = big.get("x_path_log_likelihood")
    if vae2 is None or x_path is None:
        return []
    ref = vae2["reconstruction_ll_mean"]
    return [f"- *A 2-D space with the representative power of a {z_big}-D model.* "
            f"{_verdict(x_path >= ref)}: reconstructing each test image through its 2-D "
            f"location (y → x → z̃ → decoder) gives log p(y|z̃) = {x_path:.2f} nats "
            f"(Z = {z_big}), against {ref:.2f} for a VAE whose code is 2-D (decoded at "
            f"E[z]), a difference of {x_path - ref:+.2f}; the model's own {z_big}-D code "
            f"gives {big['reconstruction_ll_mean']:.2f} nats."]


def _claim_organisation(runs: Dict[int, Dict], vae2: Dict) -> List[str]:
    lines = []
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
    return lines


def _claim_little_cost(runs: Dict[int, Dict], vaes: Dict[int, Dict]) -> List[str]:
    lines = []
    for z, m in sorted(runs.items()):
        if z not in vaes:
            continue
        gap = m["elbo"] - vaes[z]["elbo"]
        lines.append(
            f"- *The kernel term costs little likelihood* (Z = {z}). "
            f"{_verdict(gap > -LITTLE_NATS)}: test ELBO {m['elbo']:.2f} vs VAE "
            f"{vaes[z]['elbo']:.2f}, a difference of {gap:+.2f} nats (we call "
            f"{LITTLE_NATS:g} nats little).")
    return lines


def _claim_sampling(big: Dict, z_big: int, vae2: Dict) -> List[str]:
    c_x = big.get("confidence_x_density")
    if vae2 is None or c_x is None:
        return []
    return [f"- *Sampling in X generates credible digits* (Z = {z_big}). "
            f"{_verdict(c_x >= vae2['confidence_prior'])} (against a 2-D VAE's prior "
            f"samples): classifier confidence {c_x:.3f} vs {vae2['confidence_prior']:.3f}; "
            f"Fréchet distance {big['frechet_x_density']:.2f} vs "
            f"{vae2['frechet_prior']:.2f}."]


def _claim_interpolation(big: Dict, z_big: int, vae2: Dict) -> List[str]:
    i_x = big.get("interpolation_confidence")
    if vae2 is None or i_x is None:
        return []
    return [f"- *Interpolating in X stays on the data manifold* (Z = {z_big}). "
            f"{_verdict(i_x >= vae2['interpolation_confidence'])}: mean classifier "
            f"confidence along the paths {i_x:.3f} (X) vs "
            f"{vae2['interpolation_confidence']:.3f} (2-D VAE, Z)."]


# What the recommended scheme is to reach as served (key, target, higher is better, what).
SERVED_TARGETS = (("knn_accuracy_5", 0.95, True, "5-NN accuracy", ".3f"),
                  ("trustworthiness", 0.95, True, "trustworthiness", ".3f"),
                  ("frechet_test_locations", 10.0, False, "Fréchet distance of the sharp images",
                   ".2f"),
                  ("accuracy_test_locations", 0.95, True, "their class accuracy", ".3f"),
                  ("x_path_log_likelihood", -130.0, True, "X path log p(y|z̃)", ".2f"))


def _claim_served(big: Dict, z_big: int, vae2: Dict, mnist: bool) -> List[str]:
    served = big.get("served")
    if not served:
        return []
    parts = []
    for key, target, higher, what, fmt in SERVED_TARGETS:
        value = served.get(key)
        if value is None:
            continue
        ok = value >= target if higher else value <= target
        verdict = (f" (target {'≥' if higher else '≤'} {target:g}: {'met' if ok else 'missed'})"
                   if mnist else "")  # the targets are MNIST's
        parts.append(f"{what} {value:{fmt}}{verdict}")
    against = (f" The 2-D VAE's log p(y|E[z]) is {vae2['reconstruction_ll_mean']:.2f}."
               if vae2 is not None else "")
    return [f"- *As served* (Z = {z_big}: test images placed from their 15 nearest training "
            f"images, the VAE's decoder for images, the X path's for likelihoods): "
            + "; ".join(parts) + f".{against}"]


def claims(results: Sequence[Dict], mnist: bool = True) -> List[str]:
    """The paper's claims for each npVAE scheme, each with the numbers for or against it
    (``mnist``: also the served numbers against the MNIST targets)."""
    vaes = {m["z_dim"]: m for m in results if m["model"] == "vae"}
    by_scheme: Dict[str, Dict[int, Dict]] = {}
    for m in results:
        if m["model"] == "npvae":
            by_scheme.setdefault(scheme_title(m), {})[m["z_dim"]] = m
    vae2 = vaes.get(2)
    lines = []
    for scheme, runs in by_scheme.items():
        z_big = max(runs)
        big = runs[z_big]
        lines += [f"### {scheme}", ""]
        lines += _claim_representative_power(big, z_big, vae2)
        lines += _claim_organisation(runs, vae2)
        lines += _claim_little_cost(runs, vaes)
        lines += _claim_sampling(big, z_big, vae2)
        lines += _claim_interpolation(big, z_big, vae2)
        lines += _claim_served(big, z_big, vae2, mnist)
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
    """What the nats in results.md are likelihoods of: grayscale or binarised pixels, or
    standardised values."""
    if config.likelihood == "gaussian":
        return ("Gaussian decoder (a mean and a variance per value) on values standardised "
                "with the training split's mean and deviation per dimension (the nats are of "
                "the standardised values)")
    if config.likelihood == "continuous_bernoulli":
        return "continuous Bernoulli decoder (a normalised density) on values in [0, 1]"
    if config.binarize:
        return ("Bernoulli decoder on binarised pixels (training images binarised anew each "
                "epoch, evaluation images once with a fixed seed; the nats are of the kind "
                "reported on binarised MNIST)")
    return ("Bernoulli decoder on grayscale pixels in [0, 1], not binarised (the nats are "
            "therefore not comparable with log-likelihoods reported on binarised MNIST)")


def machine() -> str:
    from npvae_tf.core.backend import tf

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}")


def copy_figures(summary: Dict, run_paths: Sequence[str], figures_dir: str) -> List[str]:
    """Copies the comparison figures and each npVAE's Fig. 2 into ``figures_dir``; the names
    of those that exist."""
    os.makedirs(figures_dir, exist_ok=True)
    comparison = summary.get("comparison_dir")
    sources = [(os.path.join(comparison, f), f) for f in FIGURES] if comparison else []
    for path, run_dir in zip(run_paths, summary["run_dirs"]):
        name = os.path.basename(path.rstrip("/"))
        if name.startswith("npvae"):
            sources.append((os.path.join(run_dir, "fig2_embedding.png"), f"fig2_{name}.png"))
    shown = []
    for source, name in sources:
        if os.path.isfile(source):
            small_png(source, os.path.join(figures_dir, name))
            shown.append(name)
    return shown


def scheme_lines(config: Config, configs: Sequence[Config]) -> List[str]:
    """A line per scheme of :data:`npvae_tf.core.objective.SCHEMES` that the runs use."""
    lines = []
    for name, scheme in SCHEMES.items():
        label = Config(**scheme.changes).scheme  # the scheme alone names it
        used = sorted({c.z_dim for c in configs if c.scheme == label})
        if used:
            lines.append(f"- `{name}` ({label}; run names `{scheme.prefix}-zZ`, Z = "
                         f"{', '.join(map(str, used))}): {scheme.about}"
                         + (f" (superseded by `{RECOMMENDED}`)." if scheme.superseded else "."))
    return lines


def intro_lines(command: str, seconds: float, data_name: str = "MNIST") -> List[str]:
    return [
        f"# Results: VAE and nonparametric VAE on {data_name}",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}. Every number below comes from "
        "that command; rerunning it reproduces them. It keeps run folders that are already "
        f"finished, so its own wall-clock time ({seconds / 60:.0f} min) covers only what was "
        "left to do; each run's training time is in the table. The same numbers, with every "
        "run's configuration, are in [results.json](results.json).",
        "",
    ]


def data_line(data: Dict) -> str:
    """The data of a run that is not MNIST, from its ``data.json``."""
    n = data.get("examples", {})
    split = (f"a seeded test split of {data['test_split']['fraction']:g} of the examples"
             if data.get("test_split") else "its own test split")
    labels = (f"labels {', '.join(map(str, data['class_names']))}" if data.get("class_names")
              else "integer labels")
    return (f"- Data: `{os.path.basename(str(data.get('source', '?')).rstrip('/'))}` "
            f"({data.get('kind')}), examples of shape "
            f"{'x'.join(map(str, data.get('shape', [])))}: {n.get('train', 0):,} training, "
            f"{n.get('validation', 0):,} validation and {n.get('test', 0):,} test examples "
            f"({split}); {labels}; scaling: {data.get('scaling', {}).get('kind')}.")


def settings_lines(config: Config, configs: Sequence[Config],
                   data: Optional[Dict] = None) -> List[str]:
    training_images = (f"the first {config.train_examples:,}" if config.train_examples
                       else "all remaining")
    mnist = not data or data.get("name") == "MNIST"
    return [
        "## Settings",
        "",
        f"- Data: MNIST, {config.validation_examples:,} validation images held out of the "
        f"60,000; {training_images} training images; the 10,000 test images for every number."
        if mnist else data_line(data),
        f"- Models: MLPs {list(config.hidden)} (ReLU), dropout rate {config.dropout}, X of "
        f"dimension {config.x_dim}, {pixel_likelihood(config)}.",
        f"- Training: Adam {config.learning_rate}, batch {config.batch_size}, "
        f"{config.epochs} epochs, seed {config.seed}.",
        f"- Machine: {machine()}.",
        "- Schemes:",
        *["  " + line for line in scheme_lines(config, configs)],
        SERVING_NOTE,
        "",
    ]


def figure_lines(shown: Sequence[str], earlier: Sequence[str] = ()) -> List[str]:
    """The figures made now (``shown``), then those of the runs kept from the earlier
    results (``earlier``: figure names already in the figures folder), marked †."""
    lines = ["## Figures", ""]
    for name in list(shown) + list(earlier):
        caption = CAPTIONS.get(name) or (f"Fig. 2 ({name[5:-4]}): training and test X by "
                                         "class, and images generated at test X locations"
                                         + (" († from the earlier results)." if name in earlier
                                            else "."))
        lines += [f"![{caption}](figures/{name})", "", caption, ""]
    return lines


def settings_of(summary: Dict) -> Settings:
    """The evaluation :class:`Settings` an evaluation summary records."""
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in summary["settings"].items() if k in known})


def earlier_runs(earlier: Optional[Dict], run_paths: Sequence[str]) -> List[Dict]:
    """The runs of an earlier ``results.json`` that this evaluation did not redo (by name, or
    by configuration: a run of a renamed scheme is superseded by its new run), each marked
    with where it comes from."""
    present = {os.path.basename(p.rstrip("/")) for p in run_paths}
    configs = {Config.load(p) for p in run_paths}
    source = {"date": (earlier or {}).get("date"), "command": (earlier or {}).get("command")}
    return [{**r, "earlier": r.get("earlier") or source}
            for r in (earlier or {}).get("runs", [])
            if r["name"] not in present and Config.from_dict(r["config"]) not in configs]


def write_results(summary: Dict, run_paths: Sequence[str], docs_dir: str,
                  command: str, seconds: float, earlier: Optional[Dict] = None) -> str:
    """Writes ``docs_dir/results.md`` and ``results.json`` from an evaluation ``summary``
    (:func:`npvae_tf.evaluation.evaluate.evaluate`) and copies the figures to ``docs_dir/figures/``.

    ``earlier``: a ``results.json`` written before; its runs that were not evaluated now
    (their folders are elsewhere) stay in the table and the record, marked † with the date
    and command that made them."""
    shown = copy_figures(summary, run_paths, os.path.join(docs_dir, "figures"))
    kept = earlier_runs(earlier, run_paths)
    results = list(summary["runs"]) + [{**r["metrics"], "config": r["config"],
                                        "earlier": r["earlier"]} for r in kept]
    config = Config.load(run_paths[0])
    configs = [Config.load(p) for p in run_paths] + [Config.from_dict(r["config"])
                                                      for r in kept]
    data = recorded_data(run_paths[0]) or {}
    mnist = not data or data.get("name") == "MNIST"
    name = "MNIST" if mnist else os.path.basename(str(data.get("source", "?")).rstrip("/"))
    lines = [
        *intro_lines(portable(command), seconds, name),
        *settings_lines(config, configs, data),
        "## Comparison",
        "",
        comparison_markdown(results, summary["reference"], settings_of(summary), mnist),
        *earlier_lines(kept),
        "How to read the X rows:",
        "",
        *READING_X_ROWS,
        "",
        "## The paper's claims",
        "",
        *claims(results, mnist),
        *figure_lines(shown, [f"fig2_{r['name']}.png" for r in kept if os.path.isfile(
            os.path.join(docs_dir, "figures", f"fig2_{r['name']}.png"))]),
    ]
    path = os.path.join(docs_dir, "results.md")
    write_text(path, "\n".join(lines) + "\n")
    write_json(os.path.join(docs_dir, "results.json"), {
        "command": portable(command), "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "reference": _portable_metrics(summary["reference"]), "settings": summary["settings"],
        "runs": [{"name": os.path.basename(p.rstrip("/")), "config": c.to_dict(),
                  "metrics": _portable_metrics({k: v for k, v in m.items() if k != "config"})}
                 for p, c, m in zip(run_paths, configs, results)]
        + [{"name": r["name"], "config": r["config"],
            "metrics": _portable_metrics(r["metrics"]),
            "earlier": {**r["earlier"], "command": portable(r["earlier"].get("command", ""))}}
           for r in kept]})
    return path


def portable(text: str) -> str:
    """``text`` with each absolute path in it (a word starting with ``/``) made relative to
    the working folder where it lies inside it, else reduced to ``.../<last part>``: a page
    and its record name no folder of the machine that made them."""
    def one(word: str) -> str:
        if not word.startswith("/"):
            return word
        inside = os.path.relpath(word, os.getcwd())
        return inside if not inside.startswith("..") else f".../{os.path.basename(word)}"

    return " ".join(one(word) for word in str(text).split(" "))


def _portable_metrics(metrics: Dict) -> Dict:
    return {k: (portable(v) if k in ("run", "classifier_path") and isinstance(v, str) else v)
            for k, v in metrics.items()}


def earlier_lines(kept: Sequence[Dict]) -> List[str]:
    if not kept:
        return []
    sources = sorted({(r["earlier"].get("date") or "?",
                       portable(r["earlier"].get("command") or "?")) for r in kept})
    made = "; ".join(f"`{c}` on {d}" for d, c in sources)
    return [f"† Copied from an earlier results.json ({made}): these runs' folders were not on "
            "the machine that made this page, so their numbers are those of that evaluation, "
            "with the code of its date (rows added since are blank).", ""]
