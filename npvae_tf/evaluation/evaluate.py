"""Evaluating run folders: the likelihoods, the 2-D space, samples, the paper's figures, tables.

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
* sample quality with a cached MNIST classifier (:mod:`npvae_tf.evaluation.classifier`): Fréchet
  distance of its penultimate features between generated and test images, and its mean
  top-class probability on generated images, for images from the prior N(0, I) (both
  models), from ancestral sampling in X (npVAE, :mod:`npvae_tf.runs.x_density`) and at the test
  locations (npVAE: decoded at test X, the X path; VAE: decoded at ``E[z|y]``);
* interpolation credibility: the classifier's mean confidence at the interior points of
  straight paths between fixed pairs of test images of different classes (VAE in Z, npVAE
  in X).

Outputs: ``metrics.json`` (and with ``plots``, PNG figures) per run; for several runs also
``comparison.md``, ``comparison.json`` and the comparison figures. Each run is evaluated in
steps (:func:`evaluate_run`: likelihoods, the 2-D space, samples, interpolations) that fill one
:class:`RunEvaluation`; its tables and figures are drawn by :mod:`npvae_tf.evaluation.tables`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from npvae_tf.core.clock import clock
from npvae_tf.core.config import Config
from npvae_tf.core.files import write_json, write_text
from npvae_tf.data.datasets import Dataset
from npvae_tf.data.pipeline import evaluation_images
from npvae_tf.evaluation.outputs import EvaluationError, check_outputs
from npvae_tf.evaluation.projector import PROJECTOR_DIR, write_projector
from npvae_tf.evaluation.settings import Settings
from npvae_tf.evaluation.steps import (ClassifierBaseline, RunEvaluation, decoder_for,
                                       embedding_step, evaluation_seeds, interpolation_step, likelihoods_step,
                                       make_classifier_baseline, served_step,
                                       run_description, samples_step)
from npvae_tf.evaluation.tables import (comparison_figures, comparison_markdown, run_figures,
                                        run_table, save_figures)
from npvae_tf.runs.layout import EVAL_MARKER, EVAL_METRICS_FILE, RunError
from npvae_tf.runs import x_density as sampling
from npvae_tf.runs.load import Run, load_run, training_data
from npvae_tf.runs.outputs import mark_output_folder


# --- run folders: npvae_tf.runs owns their layout, check and loading ---------------------------


def load_data_for(run: Run, data: Optional[str], cache: Dict) -> Dataset:
    """The data split the run was trained on (:func:`npvae_tf.runs.load.training_data`)."""
    try:
        return training_data(run, data, cache)
    except RunError as e:
        raise EvaluationError(str(e)) from None


def test_images_for(config: Config, data: Dataset) -> np.ndarray:
    """Test images as training evaluated them (see ``npvae_tf.data.pipeline.evaluation_images``)."""
    return evaluation_images(data.test.images, config.binarize, config.seed)


def evaluate_run(run: Run, data: Dataset, baseline: Optional[ClassifierBaseline],
                 settings: Settings,
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
    if run.placement == "neighbours" and run.space is not None:
        progress("as served: placed from the nearest training images")
        timed("served", lambda: served_step(e, data, baseline, settings, seeds, decode_at))
    progress(f"interpolations ({settings.pairs} test pairs)")
    timed("interpolation", lambda: interpolation_step(e, baseline, settings, seeds, decode_at))
    if run.space is not None:
        grid, extent = sampling.occupied_grid(e.train_emb, settings.grid_size)
        e.grid = (decode_at(grid), extent)
    e.timings["total"] = time.time() - started
    e.metrics["seconds"] = {k: round(v, 2) for k, v in e.timings.items()}
    return e


# --- the whole evaluation -------------------------------------------------------------------

def evaluate(paths: Sequence[str], out: Optional[str] = None, data: Optional[str] = None,
             settings: Settings = Settings(), log=print,
             started: Optional[float] = None) -> Dict:
    """Evaluates run folders and writes every output; returns ``{"runs": [...], ...}``.

    Logs a progress line per stage, prefixed with the time since ``started`` (default: now).
    """
    started = time.time() if started is None else started
    _, run_dirs, comparison_dir = check_outputs(paths, out)  # fail fast, before loading
    # Load every run and its data before evaluating any: a bad folder fails in seconds.
    log(f"{clock(started)} loading {len(paths)} run(s) and their data")
    runs = [load_run(p) for p in paths]
    data_cache: Dict = {}
    datasets = [load_data_for(run, data, data_cache) for run in runs]
    # Figures and tables say "digit" on MNIST, "class" on any other data.
    class_word = "digit" if datasets[0].is_mnist else "class"
    log(f"{clock(started)} the judging classifier")
    baseline = make_classifier_baseline(datasets[0], settings, log)
    reference = baseline.summary if baseline else {"test_images": len(datasets[0].test),
                                                   "classifier_test_accuracy": None}
    results: List[Dict] = []
    evaluations: List[RunEvaluation] = []
    for i, (run, data, run_dir) in enumerate(zip(runs, datasets, run_dirs)):
        def progress(text, run=run, i=i):
            log(f"{clock(started)} run {i + 1}/{len(runs)} {run.name}: {text}")

        evaluation = evaluate_run(run, data, baseline, settings, progress)
        metrics = evaluation.metrics
        metrics["classifier_test_accuracy"] = reference["classifier_test_accuracy"]
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
                    "reference": reference})
        seconds = metrics["seconds"]["total"] + metrics["seconds"].get("figures", 0.0)
        log(f"\n{run.path} ({run.label}): evaluated in {seconds:.0f} s -> {run_dir}")
        log(run_table(metrics, settings))
        if baseline:
            log(f"  (sample-quality rows judged by a classifier with test accuracy "
                f"{reference['classifier_test_accuracy']:.4f} on this data)")
        results.append(metrics)
        evaluations.append(evaluation.for_comparison())
    summary = {"runs": results, "reference": reference,
               "settings": dataclasses.asdict(settings)}
    if comparison_dir is not None:
        mark_output_folder(comparison_dir, EVAL_MARKER, "evaluate.py")
        table = comparison_markdown(results, reference, settings, datasets[0].is_mnist)
        write_text(os.path.join(comparison_dir, "comparison.md"), table)
        write_json(os.path.join(comparison_dir, "comparison.json"), summary)
        if settings.plots:
            save_figures(comparison_figures(evaluations, class_word), comparison_dir)
        log(f"\ncomparison -> {comparison_dir}\n\n{table}")
        summary["comparison_dir"] = comparison_dir
    summary["run_dirs"] = run_dirs
    return summary
