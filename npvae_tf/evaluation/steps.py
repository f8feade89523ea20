"""The steps that evaluate one run on the test set, each filling a :class:`RunEvaluation`:
likelihoods, the 2-D space, samples, placement from pixel neighbours, interpolations.

Shapes: ``N`` test images, ``M`` reference (training) points, ``P`` pixels.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from npvae_tf.core.backend import tf
from npvae_tf.core.seeds import stream_seed
from npvae_tf.data.datasets import Dataset
from npvae_tf.evaluation.classifier import load_or_train_classifier
from npvae_tf.evaluation.metrics import (active_units, class_silhouette,
                                         embedding_trustworthiness, frechet_distance,
                                         knn_accuracy, mean_confidence)
from npvae_tf.evaluation.settings import Settings
from npvae_tf.model.estimates import evaluation_terms, neighbour_average_log_likelihood
from npvae_tf.runs import x_density as sampling
from npvae_tf.runs.layout import FIT_FILE
from npvae_tf.runs.load import Run

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



def decoder_for(run: Run, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """``locations [N, D] -> images [N, P]``: npVAE from X locations (kernel over the
    reference set, chunked), VAE from latent locations. Batched, one traced function."""
    model = run.model
    if run.has_x:
        from npvae_tf.runs.reference import indexed_mean_function, serving_lengthscale

        # The grid-indexed kernel the SavedModel serves with (exact where it cannot help).
        z_tilde = indexed_mean_function(model, run.reference,
                                        serving_lengthscale(run.reference, model))
        # The images served from X: the VAE's decoder (sharp) at z~.
        fn = tf.function(lambda x: model.decode(z_tilde(x)), reduce_retracing=True)
    else:
        fn = tf.function(lambda z: model.decode(z), reduce_retracing=True)

    def decode(locations: np.ndarray) -> np.ndarray:
        out = [fn(tf.constant(locations[s:s + batch_size], tf.float32)).numpy()
               for s in range(0, len(locations), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, run.config.image_dim), np.float32)

    return decode


def x_path_log_likelihood_at(run: Run, x: np.ndarray, images: np.ndarray,
                             batch_size: int) -> np.ndarray:
    """``[N]``: ``log p_X(y | z~(x))`` of each image decoded from a given location ``x``."""
    model, reference = run.model, run.reference
    x_ref = tf.constant(reference.x, tf.float32)
    z_ref = tf.constant(reference.z_mean, tf.float32)
    fn = tf.function(lambda xq, y: model.x_path_likelihood(model.predictive_mean(
        xq, x_ref, z_ref, lengthscale=reference.lengthscale)).log_prob(y), reduce_retracing=True)
    return np.concatenate([fn(tf.constant(x[s:s + batch_size], tf.float32),
                              tf.constant(images[s:s + batch_size], tf.float32)).numpy()
                           for s in range(0, len(x), batch_size)])


def decode_latents(run: Run, z: np.ndarray, batch_size: int) -> np.ndarray:
    fn = tf.function(lambda t: run.model.decode(t), reduce_retracing=True)
    return np.concatenate([fn(tf.constant(z[s:s + batch_size], tf.float32)).numpy()
                           for s in range(0, len(z), batch_size)])


# --- one run --------------------------------------------------------------------------------

@dataclasses.dataclass
class ClassifierBaseline:
    """What every run is compared with: the judging classifier and its numbers on real
    images (not the run's reference set, ``Run.reference``)."""

    classifier: object
    test_features: np.ndarray
    test_labels: np.ndarray
    summary: Dict[str, float]


def make_classifier_baseline(data: Dataset, settings: Settings,
                             log=print) -> Optional[ClassifierBaseline]:
    """Loads (or trains once) the classifier; real-image baselines of the sample metrics.

    None without labels (or with one class): the rows that need a classifier stay blank."""
    if not data.has_labels:
        log("no labels of two classes or more: the k-NN, silhouette and classifier rows are "
            "left blank")
        return None
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
    return ClassifierBaseline(classifier, test_features, data.test.labels, summary)


def sample_metrics(name: str, images: np.ndarray, baseline: Optional[ClassifierBaseline],
                   true_labels: Optional[np.ndarray] = None) -> Dict[str, float]:
    if baseline is None:  # unlabelled data: no classifier to judge the images
        return {f"frechet_{name}": None, f"confidence_{name}": None,
                **({f"accuracy_{name}": None} if true_labels is not None else {})}
    features, probs = baseline.classifier.predict(images)
    out = {f"frechet_{name}": frechet_distance(features, baseline.test_features),
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


@dataclasses.dataclass
class Interpolation:
    """The first of the fixed test pairs: its end images ``[2, P]`` and labels, and its path
    as a row of :func:`npvae_tf.evaluation.figures.interpolation_figure` (title, images, predicted,
    confidence)."""

    pair_images: np.ndarray
    pair_labels: List[int]
    row: Dict[str, object]


@dataclasses.dataclass
class RunEvaluation:
    """One run evaluated: ``metrics`` (its ``metrics.json``) and the arrays its figures, the
    comparison figures and the Embedding Projector draw; filled by the steps of
    :func:`evaluate_run` in turn.

    Shapes: ``N`` test images, ``M`` reference (training) points, ``P`` pixels.
    """

    run: Run
    metrics: Dict[str, object]
    images: np.ndarray                       # [N, P] the test images as training evaluated
    labels: np.ndarray                       # [N]
    terms: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # evaluation_terms
    train_emb: Optional[np.ndarray] = None   # [M, 2] the 2-D space (None without one)
    test_emb: Optional[np.ndarray] = None    # [N, 2]
    generated: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # source -> [n, P]
    interpolation: Optional[Interpolation] = None
    grid: Optional[Tuple[np.ndarray, Tuple]] = None  # images decoded on the grid, its extent
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def train_labels(self) -> np.ndarray:
        return self.run.reference.labels

    @property
    def labelled(self) -> bool:
        """Whether the test set has labels of two classes or more (for the label rows)."""
        return bool(len(self.labels)) and self.labels.min() >= 0 and \
            len(np.unique(self.labels)) > 1

    @property
    def projector(self) -> Dict[str, np.ndarray]:
        """The embeddings shown in TensorBoard's Embedding Projector."""
        keys = ("x", "z_mean") if self.run.has_x else ("z_mean",)
        return {k: self.terms[k] for k in keys}

    def for_comparison(self) -> "RunEvaluation":
        """Only what the comparison figures need (the rest is let go between runs)."""
        return dataclasses.replace(self, images=self.images[:0], terms={}, train_emb=None,
                                   generated={}, grid=None)


def run_description(run: Run, n_images: int) -> Dict[str, object]:
    """The metrics that describe the run rather than measure it."""
    cfg = run.config
    metrics: Dict[str, object] = {
        "run": os.path.abspath(run.path), "model": cfg.model, "z_dim": cfg.z_dim,
        "x_dim": cfg.x_dim if run.has_x else None, "epochs": cfg.epochs,
        "epochs_run": int(len(run.log["epoch"])) if run.log else None,
        "space": run.space, "test_images": int(n_images),
        "reference_size": len(run.reference.labels),
        "scheme": cfg.scheme, "config": cfg.to_dict(),
        "train_minutes": _train_minutes(run.path),
    }
    if run.has_x:
        metrics["lengthscale"] = float(run.model.kernel.lengthscale.numpy())
        # None: trained before serving lengthscales were chosen; the learned one is used.
        metrics["serving_lengthscale"] = run.reference.lengthscale
    return metrics


def likelihoods_step(e: RunEvaluation, settings: Settings, seeds: Dict[str, int]) -> None:
    """Likelihoods, X path, active units: one batched pass over the test set."""
    run = e.run
    e.terms = terms = evaluation_terms(run.model, e.images, settings.iw_samples,
                                       seeds["importance_weights"],
                                       reference=run.reference if run.has_x else None)
    e.metrics.update(
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
        ks = [k for k in NEIGHBOUR_KS if k <= len(run.reference.z_mean)]  # small data: fewer
        ceiling = neighbour_average_log_likelihood(run.model, e.images, terms["z_mean"],
                                                   run.reference.z_mean, ks)
        best_k = max(ceiling, key=ceiling.get)
        e.metrics.update(neighbour_average_ll=ceiling[best_k], neighbour_average_k=best_k,
                         neighbour_average_ll_by_k={str(k): v for k, v in ceiling.items()})
    # The central claim in one row: how well a 2-D code reconstructs the test images.
    e.metrics["two_d_reconstruction_ll"] = (
        e.metrics["x_path_log_likelihood"] if run.has_x and run.config.x_dim == 2 else
        e.metrics["reconstruction_ll_mean"] if not run.has_x and run.config.z_dim == 2 else None)


def embedding_step(e: RunEvaluation, settings: Settings, seeds: Dict[str, int]) -> None:
    """The 2-D space: k-NN accuracy, trustworthiness, silhouette (None without one)."""
    run = e.run
    if run.space is None:
        for key in [f"knn_accuracy_{k}" for k in KNN_KS] + ["trustworthiness", "silhouette"]:
            e.metrics[key] = None
        return
    e.train_emb = run.reference.x if run.has_x else run.reference.z_mean
    e.test_emb = e.terms["x"] if run.has_x else e.terms["z_mean"]
    labelled = e.labelled
    knn = knn_accuracy(e.train_emb, e.train_labels, e.test_emb, e.labels, KNN_KS) if labelled \
        else {}
    for k in KNN_KS:
        e.metrics[f"knn_accuracy_{k}"] = knn.get(k)
    e.metrics["trustworthiness"] = embedding_trustworthiness(
        e.images, e.test_emb, TRUST_NEIGHBOURS, settings.trust_subset,
        seeds["trustworthiness_subset"])
    e.metrics["silhouette"] = class_silhouette(e.test_emb, e.labels) if labelled else None


def samples_step(e: RunEvaluation, baseline: Optional[ClassifierBaseline], settings: Settings,
                 seeds: Dict[str, int], decode_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """Generated images (prior, X density, test locations) and their sample metrics."""
    run = e.run
    z_prior = run.model.prior.sample(settings.generated,
                                     seed=tf.constant([seeds["prior_samples"], 0])).numpy()
    generated = {"prior": decode_latents(run, z_prior, settings.batch_size)}
    if run.has_x:
        # The density training stored in the run folder (the one the export samples too).
        density = sampling.x_density_for(run.path, run.reference.x, run.config.seed)
        generated["x_density"] = decode_at(density.sample(settings.generated,
                                                          seeds["x_density_samples"]))
        generated["test_locations"] = e.terms["x_images"]
    else:
        generated["test_locations"] = decode_latents(run, e.terms["z_mean"], settings.batch_size)
    for name in ("prior", "x_density", "test_locations"):
        if name in generated:
            e.metrics.update(sample_metrics(name, generated[name], baseline,
                                            e.labels if name == "test_locations" else None))
        else:
            e.metrics.update({f"frechet_{name}": None, f"confidence_{name}": None})
    e.generated = generated


def served_step(e: RunEvaluation, data: Dataset, baseline: Optional[ClassifierBaseline],
                settings: Settings, seeds: Dict[str, int],
                decode_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """The run as its SavedModel serves it, for the neighbour schemes: each test image placed
    at the median X of its 15 nearest training images (the ``place`` signature, on the same
    stored images), measured as the encoder's placement is (5-NN accuracy, trustworthiness),
    the sharp images decoded there (``generate_from_x``) and the X path's likelihood there
    with the X path's decoder (``reconstruct_through_x``). Fills ``metrics["served"]``."""
    from npvae_tf.model.placement import PLACEMENT_NEIGHBOURS, place

    run = e.run
    stored, scale = run.placement_set(dataset=data)
    placed = place(stored, run.reference.x, e.images, scale=scale)
    served: Dict[str, object] = {"placement": "neighbours",
                                 "placement_neighbours": PLACEMENT_NEIGHBOURS}
    served["knn_accuracy_5"] = (knn_accuracy(e.train_emb, e.train_labels, placed, e.labels,
                                             (5,))[5] if e.labelled else None)
    served["trustworthiness"] = embedding_trustworthiness(
        e.images, placed, TRUST_NEIGHBOURS, settings.trust_subset,
        seeds["trustworthiness_subset"])
    served["x_path_log_likelihood"] = float(np.mean(
        x_path_log_likelihood_at(run, placed, e.images, settings.batch_size)))
    served["two_d_reconstruction_ll"] = (served["x_path_log_likelihood"]
                                         if run.config.x_dim == 2 else None)
    served.update(sample_metrics("test_locations", decode_at(placed), baseline, e.labels))
    e.metrics["served"] = served


def interpolation_step(e: RunEvaluation, baseline: Optional[ClassifierBaseline], settings: Settings,
                       seeds: Dict[str, int],
                       decode_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """Interpolations between fixed test pairs of different classes, in X (npVAE) or Z (VAE),
    judged by the classifier (unlabelled data: none)."""
    run, labels = e.run, e.labels
    e.metrics["interpolation_space"] = "X" if run.has_x else "Z"
    if baseline is None:
        e.metrics["interpolation_confidence"] = None
        return
    pairs = sampling.interpolation_pairs(labels, settings.pairs, seeds["interpolation_pairs"])
    ends = e.terms["x"] if run.has_x else e.terms["z_mean"]
    paths = sampling.interpolation_paths(ends[pairs[:, 0]], ends[pairs[:, 1]], settings.steps)
    path_images = decode_at(paths.reshape(-1, paths.shape[-1]))
    _, path_probs = baseline.classifier.predict(path_images)
    path_probs = path_probs.reshape(len(pairs), settings.steps, -1)
    e.metrics["interpolation_confidence"] = mean_confidence(path_probs[:, 1:-1])
    e.interpolation = Interpolation(
        pair_images=e.images[pairs[0]], pair_labels=[int(c) for c in labels[pairs[0]]],
        row={"title": f"{run.label}\nin {e.metrics['interpolation_space']}",
             "images": path_images[:settings.steps],
             "predicted": np.argmax(path_probs[0], -1),
             "confidence": np.max(path_probs[0], -1)})
