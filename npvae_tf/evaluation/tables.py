"""Metric tables and the figures of an evaluation: numbers in, Markdown and figures out.

:func:`run_table` and :func:`comparison_markdown` format evaluation metrics
(``metrics.json``); :func:`run_figures` and :func:`comparison_figures` draw an evaluation's
arrays (:class:`npvae_tf.evaluation.steps.RunEvaluation`). The published and measured anchors
the tables compare with are defined here, once. Importing this module does not import
TensorFlow.
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from npvae_tf.core.files import atomic_write
from npvae_tf.evaluation import figures as plots
from npvae_tf.evaluation.settings import Settings

if TYPE_CHECKING:  # the steps import TensorFlow; the tables need only the type
    from npvae_tf.evaluation.steps import RunEvaluation

# --- anchors --------------------------------------------------------------------------------

# 2-D maps of MNIST measured or published outside this project's grid: test 5-NN accuracy and
# trustworthiness with 5 neighbours; UMAP measured on this project's machine and protocol.
UMAP_KNN5, UMAP_TRUST = 0.953, 0.952
PUBLISHED_KNN5 = (("parametric UMAP", 0.961), ("UMAP", 0.954), ("t-SNE", 0.950),
                  ("a VAE", 0.765), ("PCA", 0.420))
PARAMETRIC_UMAP_KNN5 = dict(PUBLISHED_KNN5)["parametric UMAP"]
LITTLE_NATS = 2.0  # an ELBO cost we call little

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


# The rows a run's served column replaces (``metrics["served"]``, the neighbour schemes as
# the SavedModel serves them: placed from the nearest training images, sharp images from the
# VAE's decoder, the X path with its own decoder); its other rows are the run's own.
SERVED_KEYS = ("knn_accuracy_5", "trustworthiness", "x_path_log_likelihood",
               "two_d_reconstruction_ll", "frechet_test_locations",
               "confidence_test_locations", "accuracy_test_locations")
SERVED_BLANK = ("knn_accuracy_1", "knn_accuracy_10", "silhouette", "effective_neighbours",
                "effective_neighbours_learned")


def served_column(metrics: Dict) -> Optional[Dict]:
    """The metrics of a run's served column (None for a run without one): its own, with the
    served rows replaced and the rows that were not measured at the served placement blank."""
    served = metrics.get("served")
    if not served:
        return None
    column = {**metrics, **{k: served.get(k) for k in SERVED_KEYS},
              **{k: None for k in SERVED_BLANK}}
    column["served_of"] = metrics.get("run")
    return column


SERVED_NOTE = (
    "*As served*: the run as its SavedModel serves it. Each test image is placed at the "
    "median X of its 15 nearest training images (`place`), not at f(y); the images at that "
    "place are the VAE decoder's (`generate_from_x`: Fréchet distance, confidence, accuracy) "
    "and the X path's likelihood there is its own decoder's (`reconstruct_through_x`). The "
    "1-/10-NN, silhouette and neighbour-count rows were not measured there (—); the others "
    "are the run's own.")


def scheme_title(metrics: Dict) -> str:
    """A run's scheme as a table names it: its name in :data:`~npvae_tf.core.objective.SCHEMES`
    (``paper``, ``neighbour``, ...), else the objective's label (``npVAE: match 0.5``)."""
    from npvae_tf.core.config import Config

    try:
        name = Config.from_dict(metrics["config"]).scheme_name if metrics.get("config") else None
    except ValueError:  # a configuration this version refuses: its recorded label
        name = None
    return name or metrics.get("scheme") or metrics["model"]


def format_value(value, fmt: str) -> str:
    """A table cell: "—" for a missing value, ``fmt`` ("": an integer) otherwise."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—" if value is None else str(value)
    return f"{value:{fmt}}" if fmt else str(int(value))


def table_rows(settings: Settings, test_images: Optional[int] = None):
    """``(key, description, format)`` of :data:`TABLE_ROWS` with the settings filled in; the
    counts are those used (trustworthiness takes at most ``test_images``)."""
    trusted = min(settings.trust_subset, test_images or settings.trust_subset)
    for key, text, fmt in TABLE_ROWS:
        yield key, text.format(k=settings.iw_samples, t=f"{trusted:,}"), fmt


def run_table(metrics: Dict, settings: Settings) -> str:
    """A short text table of one run's metrics (and, where it has them, its served ones)."""
    served = metrics.get("served") or {}
    rows = []
    for key, text, fmt in table_rows(settings, metrics.get("test_images")):
        if metrics.get(key) is None and served.get(key) is None:
            continue
        rows.append((text, format_value(metrics.get(key), fmt),
                     format_value(served.get(key), fmt) if key in served else ""))
    width = max(len(t) for t, _, _ in rows)
    head = [f"  {'':<{width}}  {'own':>9}  {'served':>9}"] if served else []
    return "\n".join(head + [f"  {t:<{width}}  {v:>9}  {s:>9}".rstrip() for t, v, s in rows])


def anchors_sentence() -> str:
    """The 2-D maps of MNIST a reader compares the 5-NN rows with."""
    published = ", ".join(f"{name} {knn:.3f}" for name, knn in PUBLISHED_KNN5)
    return (f"2-D maps of MNIST for scale: UMAP on this project's machine and protocol 5-NN "
            f"{UMAP_KNN5:.3f}, trustworthiness {UMAP_TRUST:.3f}; published 5-NN accuracies: "
            f"{published}.")


def baseline_sentence(baseline: Dict) -> str:
    """The test set and the judging classifier's numbers on real images."""
    if baseline.get("classifier_test_accuracy") is None:
        return (f"Test set: {baseline['test_images']:,} examples; no labels of two classes or "
                "more, so no classifier judges the images (those rows are blank).")
    return (f"Test set: {baseline['test_images']:,} images. Classifier test accuracy "
            f"{baseline['classifier_test_accuracy']:.4f}; its confidence on real test images "
            f"{baseline['confidence_test_images']:.3f}; Fréchet distance between real "
            f"training and test images {baseline['frechet_train_vs_test_images']:.2f} "
            "(the floor).")


def comparison_markdown(results: Sequence[Dict], baseline: Dict, settings: Settings,
                        mnist: bool = True) -> str:
    """One Markdown table: a row per metric, a column per run (sorted by z_dim); ``mnist``:
    also the published MNIST maps to compare with."""
    results = sorted(results, key=lambda m: (m["z_dim"], m["model"] == "npvae",
                                             m.get("scheme", "") != "npVAE"))
    # A run with a served column (the neighbour schemes) gets it right after its own.
    results = [c for m in results for c in (m, served_column(m)) if c is not None]
    heads = [f"{scheme_title(m)} z{m['z_dim']}".replace(": ", ":<br>")
             + ("<br>**as served**" if m.get("served_of") else "") for m in results]
    lines = ["| metric | " + " | ".join(heads) + " |",
             "|---|" + "---:|" * len(results)]
    lines.append("| run | " + " | ".join(f"`{os.path.basename(m['run'])}`"
                                         + (" †" if m.get("earlier") else "")
                                         for m in results) + " |")
    epochs = [str(m.get("epochs_run") or m["epochs"]) for m in results]
    lines.append("| epochs | " + " | ".join(epochs) + " |")
    for key, text, fmt in table_rows(settings, baseline.get("test_images")):
        text = text.replace("|", "\\|")  # a literal bar inside a Markdown table cell
        lines.append(f"| {text} | " + " | ".join(format_value(m.get(key), fmt)
                                                 for m in results) + " |")
    lines += ["", f"{baseline_sentence(baseline)} {anchors_sentence()}" if mnist
              else baseline_sentence(baseline)]
    if any(m.get("served_of") for m in results):
        lines += ["", SERVED_NOTE]
    return "\n".join(lines) + "\n"


# --- figures --------------------------------------------------------------------------------

def run_figures(evaluation: "RunEvaluation", settings: Settings,
                class_word: str = "digit") -> Dict[str, object]:
    """File name -> Figure for one evaluated run."""
    run, e = evaluation.run, evaluation
    shape = run.config.image_shape
    view = functools.partial(run.scaling.for_display, image_shape=shape)
    figures = {}
    if run.space is not None:
        figures["fig2_embedding.png"] = plots.embedding_figure(
            e.train_emb, e.train_labels, e.test_emb, e.labels,
            view(e.generated["test_locations"]), shape, run.space,
            title=f"{run.label} ({run.name})",
            class_word=class_word)
        grid_images, extent = e.grid
        figures["manifold_grid.png"] = plots.grid_figure(
            view(grid_images), settings.grid_size, shape, extent, run.space,
            title=f"{run.label}: images decoded on a {settings.grid_size}x{settings.grid_size} "
                  f"grid over the occupied part of {run.space}")
    if e.interpolation is not None:  # None: no labels, no classifier to judge a path
        figures["interpolation.png"] = plots.interpolation_figure(
            [{**e.interpolation.row, "images": view(e.interpolation.row["images"])}],
            *view(e.interpolation.pair_images), shape, *e.interpolation.pair_labels)
    names = {"prior": "from the prior N(0, I) in Z", "x_density": "ancestral samples in X",
             "test_locations": ("decoded at test X (X path)" if run.has_x else
                                "decoded at test E[z|y] (reconstructions)")}
    sets = [("real test images", view(e.images))] + [(names[k], view(v))
                                                      for k, v in e.generated.items()]
    figures["samples.png"] = plots.samples_figure(sets, shape,
                                                  title=f"{run.label}: generated images")
    if run.log is not None:
        figures["training_curves.png"] = plots.training_curves_figure(
            run.log, title=f"{run.label}: training curves ({run.name})")
    return figures


def comparison_figures(evaluations: Sequence["RunEvaluation"],
                       class_word: str = "digit") -> Dict[str, object]:
    """Fig. 3 (every 2-D space, by z_dim) and Fig. 4 (one interpolation row per run)."""
    order = sorted(evaluations, key=lambda e: (e.run.config.z_dim, e.run.has_x))
    figures = {}
    panels = [(f"{e.run.label}: {e.run.space}\n5-NN accuracy "
               f"{format_value(e.metrics['knn_accuracy_5'], '.3f')}", e.test_emb, e.labels,
               e.run.space) for e in order if e.run.space]
    if panels:
        figures["fig3_spaces.png"] = plots.spaces_figure(panels, class_word)
    first = order[0]
    if first.interpolation is not None:
        shape = first.run.config.image_shape
        rows = [{**e.interpolation.row,
                 "images": e.run.scaling.for_display(e.interpolation.row["images"], shape)}
                for e in order]
        figures["fig4_interpolations.png"] = plots.interpolation_figure(
            rows, *first.run.scaling.for_display(first.interpolation.pair_images, shape), shape,
            *first.interpolation.pair_labels)
    return figures


def save_figures(figures: Dict[str, object], out_dir: str) -> List[str]:
    paths = []
    for name, fig in figures.items():
        path = os.path.join(out_dir, name)
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        paths.append(path)
    return paths


# --- docs/results.md ------------------------------------------------------------------------
