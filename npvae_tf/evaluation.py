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
``comparison.md``, ``comparison.json`` and the comparison figures. Each run is evaluated in
steps (:func:`evaluate_run`: likelihoods, the 2-D space, samples, interpolations) that fill one
:class:`RunEvaluation`; its tables and figures are drawn by :mod:`npvae_tf.report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from npvae_tf.quiet import quiet_tensorflow

quiet_tensorflow()  # before TensorFlow loads: none of its start-up lines (npvae_tf/quiet.py)
import tensorflow as tf

from npvae_tf import sampling
from npvae_tf.classifier import load_or_train_classifier
from npvae_tf.config import Config
from npvae_tf.data import DataError, Dataset, evaluation_images, load_mnist
from npvae_tf.metrics import (active_units, class_silhouette, embedding_trustworthiness,
                              frechet_distance, knn_accuracy, mean_confidence, evaluation_terms,
                              neighbour_average_log_likelihood)
from npvae_tf.summaries import PROJECTOR_DIR, write_projector
from npvae_tf.files import write_json, write_text
from npvae_tf.model import VAE  # noqa: F401  registers the model classes for loading
from npvae_tf.report import (comparison_figures, comparison_markdown, run_figures, run_table,
                             save_figures)
from npvae_tf.seeds import stream_seed
from npvae_tf.runs import DATA_FILE, EVAL_MARKER, check_output_folder, mark_output_folder  # noqa: F401,E501
from npvae_tf.settings import Settings
from npvae_tf.runs import (EVAL_DIR, EVAL_METRICS_FILE, FIT_FILE, Run, RunError, check_data,
                           check_run_dir, check_writable, load_run, recorded_data)

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


# --- run folders: npvae_tf.runs owns their layout, check and loading ---------------------------


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
    try:
        check_data(run.path, data.sha256, data.source)
    except RunError as e:
        raise EvaluationError(str(e)) from None
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


def make_classifier_baseline(data: Dataset, settings: Settings, log=print) -> ClassifierBaseline:
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
    return ClassifierBaseline(classifier, test_features, data.test.labels, summary)


def sample_metrics(name: str, images: np.ndarray, baseline: ClassifierBaseline,
                   true_labels: Optional[np.ndarray] = None) -> Dict[str, float]:
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


def clock(started: float) -> str:
    """``[h:mm:ss]`` since ``started`` (``time.time()``): the prefix of progress lines."""
    seconds = int(time.time() - started)
    return f"[{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}]"


@dataclasses.dataclass
class Interpolation:
    """The first of the fixed test pairs: its end images ``[2, P]`` and labels, and its path
    as a row of :func:`npvae_tf.plots.interpolation_figure` (title, images, predicted,
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
        ceiling = neighbour_average_log_likelihood(run.model, e.images, terms["z_mean"],
                                                   run.reference.z_mean, NEIGHBOUR_KS)
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
    for k, acc in knn_accuracy(e.train_emb, e.train_labels, e.test_emb, e.labels,
                               KNN_KS).items():
        e.metrics[f"knn_accuracy_{k}"] = acc
    e.metrics["trustworthiness"] = embedding_trustworthiness(
        e.images, e.test_emb, TRUST_NEIGHBOURS, settings.trust_subset,
        seeds["trustworthiness_subset"])
    e.metrics["silhouette"] = class_silhouette(e.test_emb, e.labels)


def samples_step(e: RunEvaluation, baseline: ClassifierBaseline, settings: Settings,
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
        generated["test_locations"] = e.terms["x_path_images"]
    else:
        generated["test_locations"] = decode_latents(run, e.terms["z_mean"], settings.batch_size)
    for name in ("prior", "x_density", "test_locations"):
        if name in generated:
            e.metrics.update(sample_metrics(name, generated[name], baseline,
                                            e.labels if name == "test_locations" else None))
        else:
            e.metrics.update({f"frechet_{name}": None, f"confidence_{name}": None})
    e.generated = generated


def placement_step(e: RunEvaluation, data: Dataset, baseline: ClassifierBaseline,
                   settings: Settings, seeds: Dict[str, int],
                   decode_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """Neighbour schemes: the test images placed in X from their nearest training images
    (:mod:`npvae_tf.placement`) instead of by the X encoder, measured as the encoder's
    placement is: k-NN accuracy, trustworthiness, the X path and the images decoded there.
    Keys end in ``_placed``."""
    from npvae_tf.placement import PLACEMENT_NEIGHBOURS, neighbour_placement

    run = e.run
    train_images = evaluation_images(data.train.images, run.config.binarize, run.config.seed,
                                     "train")
    placed = neighbour_placement(train_images, run.reference.x, e.images, PLACEMENT_NEIGHBOURS)
    e.metrics["placement_neighbours"] = PLACEMENT_NEIGHBOURS
    e.metrics["knn_accuracy_5_placed"] = knn_accuracy(e.train_emb, e.train_labels, placed,
                                                      e.labels, (5,))[5]
    e.metrics["trustworthiness_placed"] = embedding_trustworthiness(
        e.images, placed, TRUST_NEIGHBOURS, settings.trust_subset,
        seeds["trustworthiness_subset"])
    decoded = decode_at(placed)
    e.metrics["x_path_log_likelihood_placed"] = float(np.mean(
        x_path_log_likelihood_at(run, placed, e.images, settings.batch_size)))
    placed_metrics = sample_metrics("test_locations", decoded, baseline, e.labels)
    e.metrics.update({f"{k}_placed": v for k, v in placed_metrics.items()})


def interpolation_step(e: RunEvaluation, baseline: ClassifierBaseline, settings: Settings,
                       seeds: Dict[str, int],
                       decode_at: Callable[[np.ndarray], np.ndarray]) -> None:
    """Interpolations between fixed test pairs, in X (npVAE) or Z (VAE)."""
    run, labels = e.run, e.labels
    pairs = sampling.interpolation_pairs(labels, settings.pairs, seeds["interpolation_pairs"])
    ends = e.terms["x"] if run.has_x else e.terms["z_mean"]
    paths = sampling.interpolation_paths(ends[pairs[:, 0]], ends[pairs[:, 1]], settings.steps)
    path_images = decode_at(paths.reshape(-1, paths.shape[-1]))
    _, path_probs = baseline.classifier.predict(path_images)
    path_probs = path_probs.reshape(len(pairs), settings.steps, -1)
    e.metrics["interpolation_space"] = "X" if run.has_x else "Z"
    e.metrics["interpolation_confidence"] = mean_confidence(path_probs[:, 1:-1])
    e.interpolation = Interpolation(
        pair_images=e.images[pairs[0]], pair_labels=[int(c) for c in labels[pairs[0]]],
        row={"title": f"{run.label}\nin {e.metrics['interpolation_space']}",
             "images": path_images[:settings.steps],
             "predicted": np.argmax(path_probs[0], -1),
             "confidence": np.max(path_probs[0], -1)})


def evaluate_run(run: Run, data: Dataset, baseline: ClassifierBaseline, settings: Settings,
                 progress: Callable[[str], None] = lambda text: None) -> RunEvaluation:
    """All metrics of one run, step by step, with the arrays for its figures."""
    started = time.time()
    seeds = evaluation_seeds(settings.seed)
    images = test_images_for(run.config, data)
    e = RunEvaluation(run, run_description(run, len(images)), images, data.test.labels)

    def timed(name: str, step: Callable[[], None]) -> None:
        t = time.time()
        step()
        e.timings[name] = time.time() - t

    progress(f"likelihoods ({settings.iw_samples} importance samples per test image)")
    timed("likelihoods", lambda: likelihoods_step(e, settings, seeds))
    progress("the 2-D space" if run.space else "the embeddings")
    timed("embedding", lambda: embedding_step(e, settings, seeds))
    progress(f"generated images ({settings.generated:,} per source)")
    decode_at = decoder_for(run, settings.batch_size)
    timed("samples", lambda: samples_step(e, baseline, settings, seeds, decode_at))
    if run.has_x and run.config.uses_neighbour_graph and run.space is not None:
        progress("placement from the nearest training images")
        timed("placement", lambda: placement_step(e, data, baseline, settings, seeds,
                                                  decode_at))
    progress(f"interpolations ({settings.pairs} test pairs)")
    timed("interpolation", lambda: interpolation_step(e, baseline, settings, seeds, decode_at))
    if run.space is not None:
        grid, extent = sampling.occupied_grid(e.train_emb, settings.grid_size)
        e.grid = (decode_at(grid), extent)
    e.timings["total"] = time.time() - started
    e.metrics["seconds"] = {k: round(v, 2) for k, v in e.timings.items()}
    return e


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
    # Never a file evaluate.py did not write: outputs go only into a new or empty folder,
    # one marked as evaluate.py's (it leaves its marker in each), or a run's own eval/.
    for path, folder in zip(paths, run_dirs):
        own = os.path.abspath(folder) == os.path.abspath(os.path.join(path, EVAL_DIR))
        check_output_folder(folder, EVAL_MARKER, "evaluate.py", owned=own)
    if comparison_dir is not None:
        check_output_folder(comparison_dir, EVAL_MARKER, "evaluate.py")
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
    baseline = make_classifier_baseline(datasets[0], settings, log)
    results: List[Dict] = []
    evaluations: List[RunEvaluation] = []
    for i, (run, data, run_dir) in enumerate(zip(runs, datasets, run_dirs)):
        def progress(text, run=run, i=i):
            log(f"{clock(started)} run {i + 1}/{len(runs)} {run.name}: {text}")

        evaluation = evaluate_run(run, data, baseline, settings, progress)
        metrics = evaluation.metrics
        metrics["classifier_test_accuracy"] = baseline.summary["classifier_test_accuracy"]
        mark_output_folder(run_dir, EVAL_MARKER, "evaluate.py")
        if settings.plots:
            progress("figures")
            t = time.time()
            save_figures(run_figures(evaluation, settings, class_word), run_dir)
            metrics["seconds"]["figures"] = round(time.time() - t, 2)
        if settings.projector_images:
            n = min(settings.projector_images, len(evaluation.images))
            write_projector(os.path.join(run_dir, PROJECTOR_DIR), evaluation.images[:n],
                            evaluation.labels[:n],
                            {k: v[:n] for k, v in evaluation.projector.items()},
                            run.config.image_shape)
        write_json(os.path.join(run_dir, EVAL_METRICS_FILE),
                   {**metrics, "settings": dataclasses.asdict(settings),
                    "reference": baseline.summary})
        seconds = metrics["seconds"]["total"] + metrics["seconds"].get("figures", 0.0)
        log(f"\n{run.path} ({run.label}): evaluated in {seconds:.0f} s -> {run_dir}")
        log(run_table(metrics, settings))
        log(f"  (sample-quality rows judged by a classifier with test accuracy "
            f"{baseline.summary['classifier_test_accuracy']:.4f} on this data)")
        results.append(metrics)
        evaluations.append(evaluation.for_comparison())
    summary = {"runs": results, "reference": baseline.summary,
               "settings": dataclasses.asdict(settings)}
    if comparison_dir is not None:
        mark_output_folder(comparison_dir, EVAL_MARKER, "evaluate.py")
        table = comparison_markdown(results, baseline.summary, settings)
        write_text(os.path.join(comparison_dir, "comparison.md"), table)
        write_json(os.path.join(comparison_dir, "comparison.json"), summary)
        if settings.plots:
            save_figures(comparison_figures(evaluations, class_word), comparison_dir)
        log(f"\ncomparison -> {comparison_dir}\n\n{table}")
        summary["comparison_dir"] = comparison_dir
    summary["run_dirs"] = run_dirs
    return summary
