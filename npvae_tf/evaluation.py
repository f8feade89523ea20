"""Evaluating run folders: every metric of issue 3, the paper's figures, comparison tables.

For each run folder (``config.json``, ``model.keras``, ``reference_set.npz``; made by
``train.py``) :func:`evaluate` loads the model and reference set, loads the data split the
run was trained on, and computes on the test set (seeded by ``Settings.seed``):

* likelihoods (nats per image): test ELBO (one posterior draw, analytic KL), ``log p(y|z)``
  at that draw and at ``E[z]``, KL, the importance-weighted estimate with ``k`` draws
  (``Settings.iw_samples``; costs ``k`` decoder passes over the test set), active units;
* npVAE only, the *X path* ``y -> x = f(y) -> z~ = sum_j W(x, x_j) E[z_j] -> log p(y | z~)``
  (kernel over the training reference set);
* for the 2-D space (X of an npVAE, Z of a VAE with ``z_dim`` 2): 1/5/10-NN test accuracy
  with the training embedding as reference, trustworthiness (5 neighbours, on a seeded subset
  of ``Settings.trust_subset`` test images, pixels as the original space) and the class
  silhouette;
* sample quality with a cached MNIST classifier (:mod:`npvae_tf.classifier`): Fréchet
  distance of its penultimate features between generated and test images, and its mean
  top-class probability on generated images, for images from the prior N(0, I) (both
  models), from ancestral sampling in X (npVAE, :mod:`npvae_tf.sampling`) and at the test
  locations (npVAE: decoded at test X, the X path; VAE: decoded at ``E[z|y]``);
* interpolation credibility: the classifier's mean confidence at the interior points of
  straight paths between fixed pairs of test images of different classes (VAE in Z, npVAE
  in X).

Outputs: ``metrics.json`` (and with ``plots``, PNG figures) per run; for several runs also
``comparison.md``, ``comparison.json`` and the comparison figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from npvae_tf import plots, sampling
from npvae_tf.classifier import CLASSIFIER_EPOCHS, load_or_train_classifier
from npvae_tf.config import Config
from npvae_tf.data import DataError, Dataset, evaluation_images, load_mnist
from npvae_tf.metrics import (active_units, class_silhouette, embedding_trustworthiness,
                              frechet_distance, knn_accuracy, mean_confidence, evaluation_terms,
                              neighbour_average_log_likelihood)
from npvae_tf.summaries import PROJECTOR_DIR, write_projector
from npvae_tf.files import atomic_write, write_json, write_text
from npvae_tf.model import VAE  # noqa: F401  registers the model classes for loading
from npvae_tf.seeds import stream_seed
from npvae_tf.runs import DATA_FILE
from npvae_tf.runs import (EVAL_DIR, FIT_FILE, Run, check_run_dir, check_writable,  # noqa: F401
                           find_latest_run, load_run, read_training_log)

METRICS_FILE = "metrics.json"
# Each random consumer of an evaluation draws from its own stream of the evaluation seed
# (``Settings.seed``), so no two share raw bits (the prior sample used to reuse the
# importance-weighting seed of batch 1; the mixture was fitted and sampled with one seed).
# The mixture over X is fitted once by training (sampling.XDensity), so it has no stream here.
EVALUATION_STREAMS = ("importance_weights", "prior_samples", "x_density_samples",
                      "trustworthiness_subset", "interpolation_pairs")
KNN_KS = (1, 5, 10)
NEIGHBOUR_KS = (1, 10, 100)
TRUST_NEIGHBOURS = 5


def evaluation_seeds(seed: int) -> Dict[str, int]:
    """The seed of every stream in :data:`EVALUATION_STREAMS`, split from ``seed``."""
    return {name: stream_seed(seed, f"evaluation/{name}") for name in EVALUATION_STREAMS}


class EvaluationError(ValueError):
    """A run folder cannot be evaluated; the message names the folder and the problem."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Evaluation settings (all seeded by ``seed``).

    Attributes:
      iw_samples: draws k per image of the importance-weighted log-likelihood (cost: k
        decoder passes over the test set; k = 1 is the ELBO estimate).
      trust_subset: test images used for trustworthiness (O(n^2) memory).
      generated: images generated per source (prior, X density) for the sample metrics.
      pairs: test-image pairs for the interpolation metric; steps: points per path.
      grid_size: the decoded grid over X (or a 2-D Z) is grid_size x grid_size.
      batch_size: images per prediction batch.
      plots: also draw the figures.
      projector_images: test images in the TensorBoard Embedding Projector (0: none).
    """

    iw_samples: int = 100
    seed: int = 0
    trust_subset: int = 2000
    generated: int = 10000
    pairs: int = 100
    steps: int = 10
    grid_size: int = 20
    batch_size: int = 1000
    plots: bool = False
    projector_images: int = 2000
    classifier_cache: Optional[str] = None
    classifier_epochs: int = CLASSIFIER_EPOCHS


# --- run folders: npvae_tf.runs owns their layout, check and loading ---------------------------


def recorded_data(run_dir: str) -> Optional[Dict]:
    """The run's ``data.json`` (source, sha256, name), or None for runs from before it."""
    import json

    path = os.path.join(run_dir, DATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_data_for(run: Run, data_dir: Optional[str], cache: Dict) -> Dataset:
    """The data split the run was trained on (training split without ``train_examples``
    truncation: the classifier uses all of it); checks it matches the reference set.

    Without ``data_dir``, the data is found where the run's ``data.json`` says it was
    trained (then as in training), and must have the recorded SHA-256.
    """
    c = run.config
    recorded = recorded_data(run.path)
    if data_dir is None and recorded and os.path.exists(recorded.get("source", "")):
        source = recorded["source"]
        data_dir = source if os.path.isdir(source) else os.path.dirname(source)
    key = (c.validation_examples, c.image_shape, data_dir)
    if key not in cache:
        try:
            cache[key] = load_mnist(data_dir, c.validation_examples, None, c.image_shape)
        except DataError as e:
            raise EvaluationError(f"{run.path}: trained on {c.image_shape[0]}x{c.image_shape[1]} "
                                  f"images, but the data does not fit: {e}") from None
    data = cache[key]
    if recorded and recorded.get("sha256") and recorded["sha256"] != data.sha256:
        raise EvaluationError(f"{run.path}: trained on other data ({recorded.get('source')}, "
                              f"sha256 {recorded['sha256'][:12]}...) than {data.source} "
                              f"(sha256 {data.sha256[:12]}...); pass that data's --data_dir")
    n = len(run.reference.labels)
    if n > len(data.train) or not np.array_equal(run.reference.labels, data.train.labels[:n]):
        raise EvaluationError(f"{run.path}: its reference set does not match the training split "
                              f"of {data.source} (trained on other data?)")
    return data


def test_images_for(config: Config, data: Dataset) -> np.ndarray:
    """Test images as training evaluated them (see ``npvae_tf.data.evaluation_images``)."""
    return evaluation_images(data.test.images, config.binarize, config.seed)


# --- decoding -------------------------------------------------------------------------------

def decoder_for(run: Run, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """``locations [N, D] -> images [N, P]``: npVAE from X locations (kernel over the
    reference set, chunked), VAE from latent locations. Batched, one traced function."""
    model = run.model
    if run.has_x:
        from npvae_tf.export import indexed_mean_function, serving_lengthscale

        # The grid-indexed kernel the SavedModel serves with (exact where it cannot help).
        z_tilde = indexed_mean_function(model, run.reference,
                                        serving_lengthscale(run.reference, model))
        fn = tf.function(lambda x: model.x_path_likelihood(z_tilde(x)).mean(),
                         reduce_retracing=True)
    else:
        fn = tf.function(lambda z: model.decode(z), reduce_retracing=True)

    def decode(locations: np.ndarray) -> np.ndarray:
        out = [fn(tf.constant(locations[s:s + batch_size], tf.float32)).numpy()
               for s in range(0, len(locations), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, run.config.image_dim), np.float32)

    return decode


def decode_latents(run: Run, z: np.ndarray, batch_size: int) -> np.ndarray:
    fn = tf.function(lambda t: run.model.decode(t), reduce_retracing=True)
    return np.concatenate([fn(tf.constant(z[s:s + batch_size], tf.float32)).numpy()
                           for s in range(0, len(z), batch_size)])


# --- one run --------------------------------------------------------------------------------

@dataclasses.dataclass
class Reference:
    """What every run is compared with: the classifier on real images."""

    classifier: object
    test_features: np.ndarray
    test_labels: np.ndarray
    summary: Dict[str, float]


def make_reference(data: Dataset, settings: Settings, log=print) -> Reference:
    """Loads (or trains once) the classifier; real-image baselines of the sample metrics."""
    classifier = load_or_train_classifier(
        data.train.images, data.train.labels, data.test.images, data.test.labels,
        data.image_shape, settings.classifier_cache, settings.classifier_epochs,
        settings.seed, log=log)
    test_features, test_probs = classifier.predict(data.test.images)
    n = min(len(data.train), len(data.test))
    train_features, _ = classifier.predict(data.train.images[:n])
    summary = {
        "classifier_test_accuracy": classifier.test_accuracy,
        "classifier_path": classifier.path,
        "confidence_test_images": mean_confidence(test_probs),
        "frechet_train_vs_test_images": frechet_distance(train_features, test_features),
        "test_images": int(len(data.test)),
    }
    return Reference(classifier, test_features, data.test.labels, summary)


def sample_metrics(name: str, images: np.ndarray, reference: Reference,
                   true_labels: Optional[np.ndarray] = None) -> Dict[str, float]:
    features, probs = reference.classifier.predict(images)
    out = {f"frechet_{name}": frechet_distance(features, reference.test_features),
           f"confidence_{name}": mean_confidence(probs)}
    if true_labels is not None:
        out[f"accuracy_{name}"] = float(np.mean(np.argmax(probs, -1) == true_labels))
    return out


def _train_minutes(run_dir: str) -> Optional[float]:
    """Training time recorded by ``train``, summed over every finished epoch (None for runs
    trained before it was recorded)."""
    path = os.path.join(run_dir, FIT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return float(json.load(f)["train_seconds"]) / 60


def clock(started: float) -> str:
    """``[h:mm:ss]`` since ``started`` (``time.time()``): the prefix of progress lines."""
    seconds = int(time.time() - started)
    return f"[{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}]"


def evaluate_run(run: Run, data: Dataset, reference: Reference, settings: Settings,
                 progress: Callable[[str], None] = lambda text: None):
    """All metrics of one run; returns ``(metrics, artifacts)`` (arrays for the figures)."""
    started = time.time()
    timings = {}
    cfg, seeds = run.config, evaluation_seeds(settings.seed)
    images, labels = test_images_for(cfg, data), data.test.labels
    n_ref = len(run.reference.labels)
    train_labels = run.reference.labels
    metrics: Dict[str, object] = {
        "run": os.path.abspath(run.path), "model": cfg.model, "z_dim": cfg.z_dim,
        "x_dim": cfg.x_dim if run.has_x else None, "epochs": cfg.epochs,
        "epochs_run": int(len(run.log["epoch"])) if run.log else None,
        "space": run.space, "test_images": int(len(images)), "reference_size": n_ref,
        "scheme": cfg.scheme, "config": cfg.to_dict(),
        "train_minutes": _train_minutes(run.path),
    }
    if run.has_x:
        metrics["lengthscale"] = float(run.model.kernel.lengthscale.numpy())
        # None: trained before serving lengthscales were chosen; the learned one is used.
        metrics["serving_lengthscale"] = run.reference.lengthscale

    # Likelihoods, X path, active units: one batched pass over the test set.
    progress(f"likelihoods ({settings.iw_samples} importance samples per test image)")
    t = time.time()
    terms = evaluation_terms(run.model, images, settings.iw_samples, seeds["importance_weights"],
                             reference=run.reference if run.has_x else None)
    metrics.update(
        elbo=float(np.mean(terms["elbo"])),
        iw_log_likelihood=float(np.mean(terms["iw_ll"])),
        iw_samples=settings.iw_samples,
        reconstruction_ll_sample=float(np.mean(terms["reconstruction_ll_sample"])),
        reconstruction_ll_mean=float(np.mean(terms["reconstruction_ll_mean"])),
        kl=float(np.mean(terms["kl"])),
        active_units=active_units(terms["z_mean"])[0],
        x_path_log_likelihood=float(np.mean(terms["x_path_ll"])) if run.has_x else None,
        effective_neighbours=(float(np.median(terms["effective_neighbours"]))
                              if run.has_x else None),
        effective_neighbours_learned=(float(np.median(terms["effective_neighbours_learned"]))
                                      if run.has_x else None),
    )
    if run.has_x:
        # What the X path could reach if X kept Z's own neighbourhoods (see the function).
        ceiling = neighbour_average_log_likelihood(run.model, images, terms["z_mean"],
                                                   run.reference.z_mean, NEIGHBOUR_KS)
        best_k = max(ceiling, key=ceiling.get)
        metrics.update(neighbour_average_ll=ceiling[best_k], neighbour_average_k=best_k,
                       neighbour_average_ll_by_k={str(k): v for k, v in ceiling.items()})
    # The central claim in one row: how well a 2-D code reconstructs the test images.
    metrics["two_d_reconstruction_ll"] = (
        metrics["x_path_log_likelihood"] if run.has_x and cfg.x_dim == 2 else
        metrics["reconstruction_ll_mean"] if not run.has_x and cfg.z_dim == 2 else None)
    timings["likelihoods"] = time.time() - t

    # The 2-D space.
    progress("the 2-D space" if run.space else "the embeddings")
    t = time.time()
    if run.space is not None:
        train_emb = run.reference.x if run.has_x else run.reference.z_mean
        test_emb = terms["x"] if run.has_x else terms["z_mean"]
        for k, acc in knn_accuracy(train_emb, train_labels, test_emb, labels, KNN_KS).items():
            metrics[f"knn_accuracy_{k}"] = acc
        metrics["trustworthiness"] = embedding_trustworthiness(
            images, test_emb, TRUST_NEIGHBOURS, settings.trust_subset,
            seeds["trustworthiness_subset"])
        metrics["silhouette"] = class_silhouette(test_emb, labels)
    else:
        train_emb = test_emb = None
        for key in [f"knn_accuracy_{k}" for k in KNN_KS] + ["trustworthiness", "silhouette"]:
            metrics[key] = None
    timings["embedding"] = time.time() - t

    # Generated images.
    progress(f"generated images ({settings.generated:,} per source)")
    t = time.time()
    z_prior = run.model.prior.sample(settings.generated,
                                     seed=tf.constant([seeds["prior_samples"], 0])).numpy()
    generated = {"prior": decode_latents(run, z_prior, settings.batch_size)}
    decode_at = decoder_for(run, settings.batch_size)
    if run.has_x:
        # The density training stored in the run folder (the one the export samples too).
        density = sampling.x_density_for(run.path, run.reference.x, cfg.seed)
        generated["x_density"] = decode_at(density.sample(settings.generated,
                                                          seeds["x_density_samples"]))
        generated["test_locations"] = terms["x_path_images"]
    else:
        generated["test_locations"] = decode_latents(run, terms["z_mean"], settings.batch_size)
    for name in ("prior", "x_density", "test_locations"):
        if name in generated:
            metrics.update(sample_metrics(name, generated[name], reference,
                                          labels if name == "test_locations" else None))
        else:
            metrics.update({f"frechet_{name}": None, f"confidence_{name}": None})
    timings["samples"] = time.time() - t

    # Interpolations between fixed test pairs, in X (npVAE) or Z (VAE).
    progress(f"interpolations ({settings.pairs} test pairs)")
    t = time.time()
    pairs = sampling.interpolation_pairs(labels, settings.pairs, seeds["interpolation_pairs"])
    ends = terms["x"] if run.has_x else terms["z_mean"]
    paths = sampling.interpolation_paths(ends[pairs[:, 0]], ends[pairs[:, 1]], settings.steps)
    path_images = decode_at(paths.reshape(-1, paths.shape[-1]))
    _, path_probs = reference.classifier.predict(path_images)
    path_probs = path_probs.reshape(len(pairs), settings.steps, -1)
    metrics["interpolation_space"] = "X" if run.has_x else "Z"
    metrics["interpolation_confidence"] = mean_confidence(path_probs[:, 1:-1])
    timings["interpolation"] = time.time() - t

    artifacts = {
        "images": images, "labels": labels, "train_emb": train_emb, "train_labels": train_labels,
        "test_emb": test_emb, "generated": generated,
        "projector": {"x": terms["x"], "z_mean": terms["z_mean"]} if run.has_x else
                     {"z_mean": terms["z_mean"]},
        "pair_images": images[pairs[0]], "pair_labels": [int(c) for c in labels[pairs[0]]],
        "pair_row": {"title": f"{run.label}\nin {metrics['interpolation_space']}",
                     "images": path_images[:settings.steps],
                     "predicted": np.argmax(path_probs[0], -1),
                     "confidence": np.max(path_probs[0], -1)},
    }
    if run.space is not None:
        grid, extent = sampling.occupied_grid(train_emb, settings.grid_size)
        artifacts["grid"] = (decode_at(grid), extent)
    timings["total"] = time.time() - started
    metrics["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return metrics, artifacts


# --- figures --------------------------------------------------------------------------------

def run_figures(run: Run, artifacts: Dict, settings: Settings,
                class_word: str = "digit") -> Dict[str, object]:
    """File name -> Figure for one run."""
    shape = run.config.image_shape
    a = artifacts
    figures = {}
    if run.space is not None:
        figures["fig2_embedding.png"] = plots.embedding_figure(
            a["train_emb"], a["train_labels"], a["test_emb"], a["labels"],
            a["generated"]["test_locations"], shape, run.space, title=f"{run.label} ({run.name})",
            class_word=class_word)
        grid_images, extent = a["grid"]
        figures["manifold_grid.png"] = plots.grid_figure(
            grid_images, settings.grid_size, shape, extent, run.space,
            title=f"{run.label}: images decoded on a {settings.grid_size}x{settings.grid_size} "
                  f"grid over the occupied part of {run.space}")
    figures["interpolation.png"] = plots.interpolation_figure(
        [a["pair_row"]], *a["pair_images"], shape, *a["pair_labels"])
    names = {"prior": "from the prior N(0, I) in Z", "x_density": "ancestral samples in X",
             "test_locations": ("decoded at test X (X path)" if run.has_x else
                                "decoded at test E[z|y] (reconstructions)")}
    sets = [("real test images", a["images"])] + [(names[k], v) for k, v in a["generated"].items()]
    figures["samples.png"] = plots.samples_figure(sets, shape,
                                                  title=f"{run.label}: generated images")
    if run.log is not None:
        figures["training_curves.png"] = plots.training_curves_figure(
            run.log, title=f"{run.label}: training curves ({run.name})")
    return figures


def comparison_figures(runs: Sequence[Run], artifacts: Sequence[Dict],
                       results: Sequence[Dict], class_word: str = "digit") -> Dict[str, object]:
    """Fig. 3 (every 2-D space, by z_dim) and Fig. 4 (one interpolation row per run)."""
    order = sorted(range(len(runs)), key=lambda r: (runs[r].config.z_dim, runs[r].has_x))
    figures = {}
    panels = [(f"{runs[r].label}: {runs[r].space}\n5-NN accuracy "
               f"{results[r]['knn_accuracy_5']:.3f}", artifacts[r]["test_emb"],
               artifacts[r]["labels"], runs[r].space) for r in order if runs[r].space]
    if panels:
        figures["fig3_spaces.png"] = plots.spaces_figure(panels, class_word)
    a = artifacts[order[0]]
    figures["fig4_interpolations.png"] = plots.interpolation_figure(
        [artifacts[r]["pair_row"] for r in order], *a["pair_images"],
        runs[order[0]].config.image_shape, *a["pair_labels"])
    return figures


def save_figures(figures: Dict[str, object], out_dir: str) -> List[str]:
    paths = []
    for name, fig in figures.items():
        path = os.path.join(out_dir, name)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        paths.append(path)
    return paths


# --- tables ---------------------------------------------------------------------------------

# (key, description, format); "" format: integer.
TABLE_ROWS = [
    ("elbo", "test ELBO (nats)", ".2f"),
    ("iw_log_likelihood", "log p(y), importance-weighted, k = {k} (nats)", ".2f"),
    ("reconstruction_ll_sample", "log p(y|z), z ~ q(z|y) (nats)", ".2f"),
    ("reconstruction_ll_mean", "log p(y|E[z]) (nats)", ".2f"),
    ("kl", "KL(q(z|y) || p(z)) (nats)", ".2f"),
    ("active_units", "active units (Var E[z_u] > 0.01)", ""),
    ("x_path_log_likelihood", "X path log p(y|z~(f(y))) (nats)", ".2f"),
    ("neighbour_average_ll", "decoding the mean of the k nearest training E[z] in Z, "
     "best k of 1/10/100 (nats)", ".2f"),
    ("effective_neighbours", "reference points per query, median 1/Σ W² (serving l)", ".0f"),
    ("effective_neighbours_learned", "reference points per query at the learned l", ".0f"),
    ("serving_lengthscale", "serving lengthscale (chosen on validation)", ".4g"),
    ("lengthscale", "learned lengthscale", ".4g"),
    ("two_d_reconstruction_ll", "2-D code reconstruction: X path / 2-D VAE at E[z] (nats)", ".2f"),
    ("knn_accuracy_1", "1-NN accuracy in 2-D", ".3f"),
    ("knn_accuracy_5", "5-NN accuracy in 2-D", ".3f"),
    ("knn_accuracy_10", "10-NN accuracy in 2-D", ".3f"),
    ("trustworthiness", "trustworthiness (5 neighbours, {t} test images)", ".3f"),
    ("silhouette", "class silhouette in 2-D", ".3f"),
    ("frechet_prior", "Fréchet distance, prior samples", ".2f"),
    ("confidence_prior", "classifier confidence, prior samples", ".3f"),
    ("frechet_x_density", "Fréchet distance, ancestral samples in X", ".2f"),
    ("confidence_x_density", "classifier confidence, ancestral samples in X", ".3f"),
    ("frechet_test_locations", "Fréchet distance, at test locations (X / E[z])", ".2f"),
    ("confidence_test_locations", "classifier confidence, at test locations", ".3f"),
    ("accuracy_test_locations", "classifier accuracy, at test locations", ".3f"),
    ("interpolation_confidence", "interpolation confidence (VAE in Z, npVAE in X)", ".3f"),
    ("train_minutes", "training time (min)", ".1f"),
]


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—" if value is None else str(value)
    return f"{value:{fmt}}" if fmt else str(int(value))


def _rows(settings: Settings):
    for key, text, fmt in TABLE_ROWS:
        yield key, text.format(k=settings.iw_samples, t=f"{settings.trust_subset:,}"), fmt


def run_table(metrics: Dict, settings: Settings) -> str:
    """A short two-column text table of one run's metrics."""
    rows = [(text, _fmt(metrics.get(key), fmt)) for key, text, fmt in _rows(settings)
            if metrics.get(key) is not None]
    width = max(len(t) for t, _ in rows)
    return "\n".join(f"  {t:<{width}}  {v:>9}" for t, v in rows)


def comparison_markdown(results: Sequence[Dict], reference: Dict, settings: Settings) -> str:
    """One Markdown table: a row per metric, a column per run (sorted by z_dim)."""
    results = sorted(results, key=lambda m: (m["z_dim"], m["model"] == "npvae",
                                             m.get("scheme", "") != "npVAE"))
    heads = [f"{m.get('scheme') or m['model']} z{m['z_dim']}".replace(": ", ":<br>")
             for m in results]
    lines = ["| metric | " + " | ".join(heads) + " |",
             "|---|" + "---:|" * len(results)]
    lines.append("| run | " + " | ".join(f"`{os.path.basename(m['run'])}`" for m in results) + " |")
    epochs = [str(m.get("epochs_run") or m["epochs"]) for m in results]
    lines.append("| epochs | " + " | ".join(epochs) + " |")
    for key, text, fmt in _rows(settings):
        text = text.replace("|", "\\|")  # a literal bar inside a Markdown table cell
        lines.append(f"| {text} | " + " | ".join(_fmt(m.get(key), fmt) for m in results) + " |")
    lines += ["", f"Test set: {reference['test_images']:,} images. Classifier test accuracy "
              f"{reference['classifier_test_accuracy']:.4f}; its confidence on real test images "
              f"{reference['confidence_test_images']:.3f}; Fréchet distance between real "
              f"training and test images {reference['frechet_train_vs_test_images']:.2f} "
              "(the floor). 2-D maps of MNIST for scale: UMAP on this project's machine and "
              "protocol 5-NN 0.953, trustworthiness 0.952; published 5-NN accuracies: "
              "parametric UMAP 0.961, UMAP 0.954, t-SNE 0.950, a VAE 0.765, PCA 0.420."]
    return "\n".join(lines) + "\n"


# --- the whole evaluation -------------------------------------------------------------------

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


def evaluate(paths: Sequence[str], out: Optional[str] = None, data_dir: Optional[str] = None,
             settings: Settings = Settings(), log=print,
             started: Optional[float] = None) -> Dict:
    """Evaluates run folders and writes every output; returns ``{"runs": [...], ...}``.

    Logs a progress line per stage, prefixed with the time since ``started`` (default: now).
    """
    started = time.time() if started is None else started
    if len(set(os.path.abspath(p) for p in paths)) < len(paths):
        raise EvaluationError("the same run folder is given twice")
    configs = [check_run_dir(p) for p in paths]  # fail fast, before loading anything
    shapes = {c.image_shape for c in configs}
    if len(shapes) > 1:
        raise EvaluationError(f"the runs were trained on different image sizes {sorted(shapes)}; "
                              "evaluate them separately")
    run_dirs, comparison_dir = output_dirs(paths, out)
    for folder in run_dirs + ([comparison_dir] if comparison_dir else []):
        check_writable(folder)  # a read-only output fails now, not after the metrics
    # Load every run and its data before evaluating any: a bad folder fails in seconds.
    log(f"{clock(started)} loading {len(paths)} run(s) and their data")
    runs = [load_run(p) for p in paths]
    data_cache: Dict = {}
    datasets = [load_data_for(run, data_dir, data_cache) for run in runs]
    # Figures and tables say "digit" on MNIST, "class" on any other data.
    class_word = "digit" if datasets[0].is_mnist else "class"
    log(f"{clock(started)} the judging classifier")
    reference = make_reference(datasets[0], settings, log)
    results, all_artifacts = [], []
    for i, (run, data, run_dir) in enumerate(zip(runs, datasets, run_dirs)):
        def progress(text, run=run, i=i):
            log(f"{clock(started)} run {i + 1}/{len(runs)} {run.name}: {text}")

        metrics, artifacts = evaluate_run(run, data, reference, settings, progress)
        metrics["classifier_test_accuracy"] = reference.summary["classifier_test_accuracy"]
        os.makedirs(run_dir, exist_ok=True)
        if settings.plots:
            progress("figures")
            t = time.time()
            save_figures(run_figures(run, artifacts, settings, class_word), run_dir)
            metrics["seconds"]["figures"] = round(time.time() - t, 2)
        if settings.projector_images:
            n = min(settings.projector_images, len(artifacts["images"]))
            write_projector(os.path.join(run_dir, PROJECTOR_DIR), artifacts["images"][:n],
                            artifacts["labels"][:n],
                            {k: v[:n] for k, v in artifacts["projector"].items()},
                            run.config.image_shape)
        write_json(os.path.join(run_dir, METRICS_FILE),
                   {**metrics, "settings": dataclasses.asdict(settings),
                    "reference": reference.summary})
        seconds = metrics["seconds"]["total"] + metrics["seconds"].get("figures", 0.0)
        log(f"\n{run.path} ({run.label}): evaluated in {seconds:.0f} s -> {run_dir}")
        log(run_table(metrics, settings))
        log(f"  (sample-quality rows judged by a classifier with test accuracy "
            f"{reference.summary['classifier_test_accuracy']:.4f} on this data)")
        results.append(metrics)
        # Keep only what the comparison figures need.
        all_artifacts.append({k: artifacts[k] for k in ("test_emb", "labels", "pair_images",
                                                        "pair_labels", "pair_row")})
    summary = {"runs": results, "reference": reference.summary,
               "settings": dataclasses.asdict(settings)}
    if comparison_dir is not None:
        os.makedirs(comparison_dir, exist_ok=True)
        table = comparison_markdown(results, reference.summary, settings)
        write_text(os.path.join(comparison_dir, "comparison.md"), table)
        write_json(os.path.join(comparison_dir, "comparison.json"), summary)
        if settings.plots:
            save_figures(comparison_figures(runs, all_artifacts, results, class_word),
                         comparison_dir)
        log(f"\ncomparison -> {comparison_dir}\n\n{table}")
        summary["comparison_dir"] = comparison_dir
    summary["run_dirs"] = run_dirs
    return summary
