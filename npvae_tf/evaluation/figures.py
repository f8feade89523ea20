"""The paper's figures, drawn from arrays. Every function returns a ``matplotlib`` Figure.

Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas (no ``pyplot``, no global
backend switch, no display needed); the caller saves them with ``fig.savefig(path)``.
Examples come flattened, ``[..., P]``, with ``image_shape`` the shape of one: ``(H, W)``
grayscale images in [0, 1] are drawn dark on light (``gray_r``), ``(H, W, 3)`` in colour, at
their own aspect; feature vectors ``(D,)`` (standardised values) as heat strips, one cell per
feature, on a diverging map (:func:`pictures`). Classes are coloured with ``tab10``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from npvae_tf.data.pictures import VECTOR_CMAP, VECTOR_RANGE, mosaic, pictures

IMAGE_CMAP = "gray_r"
CLASS_CMAP = colormaps["tab10"]


def new_figure(**kwargs) -> Figure:
    """A constrained-layout Figure drawn by the Agg canvas."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def class_color(c: int):
    return CLASS_CMAP(int(c) % 10)


def style(image_shape: Sequence[int]) -> dict:
    """``imshow`` keywords for :func:`pictures` of this shape."""
    if len(image_shape) == 1:
        return dict(cmap=VECTOR_CMAP, vmin=-VECTOR_RANGE, vmax=VECTOR_RANGE)
    if len(image_shape) == 3 and image_shape[2] == 3:
        return {}
    return dict(cmap=IMAGE_CMAP, vmin=0, vmax=1)


def show(ax, images: np.ndarray, image_shape: Sequence[int], **kwargs) -> None:
    """Draws one example ``[P]``, or a mosaic from :func:`mosaic`, with the shape's style."""
    ax.imshow(images, interpolation="nearest", **style(image_shape), **kwargs)


def axis_labels(ax, space: str) -> None:
    """Labels a 2-D space's axes ``x_1``/``x_2`` (space "X") or ``z_1``/``z_2`` (space "Z")."""
    s = space.lower()
    ax.set_xlabel(f"${s}_1$")
    ax.set_ylabel(f"${s}_2$")


def class_legend(ax_or_fig, labels: np.ndarray, class_word: str = "digit", **kwargs):
    classes = np.unique(labels)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=6, color=class_color(c),
                      label=str(c)) for c in classes]
    return ax_or_fig.legend(handles=handles, title=class_word, **kwargs)


def scatter_by_class(ax, points: np.ndarray, labels: np.ndarray, title: str, space: str,
                     size: float = 1.0, alpha: float = 0.5, legend: bool = True,
                     class_word: str = "digit") -> None:
    """Scatter of 2-D points ``[N, 2]`` coloured by integer labels ``[N]``; the legend
    calls a label a ``class_word`` ("digit" on MNIST, "class" on other data)."""
    points, labels = np.asarray(points), np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(points))  # no class drawn on top of all
    ax.scatter(points[order, 0], points[order, 1], s=size, alpha=alpha, linewidths=0,
               c=[class_color(c) for c in labels[order]], rasterized=True)
    ax.set_title(title)
    axis_labels(ax, space)
    if legend and labels.size and labels.min() >= 0:  # unlabelled data (-1): no legend
        class_legend(ax, labels, class_word, loc="best", fontsize="small", title_fontsize="small",
                     framealpha=0.8, ncols=2)


def image_scatter(ax, points: np.ndarray, images: np.ndarray, image_shape: Tuple[int, int],
                  cells: int = 16, labels: Optional[np.ndarray] = None) -> None:
    """Draws images at their 2-D locations, at most one per cell of a ``cells x cells`` grid
    over the points' 1-99 percentile box (so they do not pile up); ``labels`` frame them."""
    points, images = np.asarray(points), np.asarray(images)
    low, high = np.percentile(points, [1, 99], axis=0)
    size = (high - low) / cells
    cell = np.floor((points - low) / size).astype(np.int64)
    inside = np.all((cell >= 0) & (cell < cells), axis=1)
    _, first = np.unique(cell[inside, 0] * cells + cell[inside, 1], return_index=True)
    chosen = np.flatnonzero(inside)[first]
    tiles = pictures(images[chosen], image_shape)
    h, w = tiles.shape[1:3]
    for i, tile in zip(chosen, tiles):
        cx, cy = points[i]
        half = 0.48 * size * np.array([min(1.0, w / h), min(1.0, h / w)])  # the tile's aspect
        extent = (cx - half[0], cx + half[0], cy - half[1], cy + half[1])
        show(ax, tile, image_shape, extent=extent, zorder=2)
        if labels is not None:
            ax.add_patch(Rectangle(
                (extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2],
                fill=False, edgecolor=class_color(labels[i]), linewidth=1.2, zorder=3))
    ax.set_xlim(low[0] - size[0], high[0] + size[0])
    ax.set_ylim(low[1] - size[1], high[1] + size[1])
    ax.set_aspect("auto")


def embedding_figure(train_points, train_labels, test_points, test_labels, test_images,
                     image_shape, space: str = "X", title: str = "",
                     class_word: str = "digit") -> Figure:
    """Paper Fig. 2: training and test embeddings by class, and images generated at test
    locations (framed in the colour of the test image's true class).

    Args:
      train_points, test_points: ``[M, 2]`` and ``[N, 2]`` embeddings (X, or Z of a 2-D VAE).
      train_labels, test_labels: ``[M]``, ``[N]``.
      test_images: ``[N, H*W]`` images decoded at the test locations.
    """
    fig = new_figure(figsize=(18, 6))
    axes = fig.subplots(1, 3)
    scatter_by_class(axes[0], train_points, train_labels,
                     f"training {space} ({len(train_points):,} images)", space, size=1.0, alpha=0.6,
                     class_word=class_word)
    scatter_by_class(axes[1], test_points, test_labels,
                     f"test {space} ({len(test_points):,} images)", space, size=2.5, alpha=0.7,
                     legend=False)
    axes[1].set_xlim(axes[0].get_xlim())
    axes[1].set_ylim(axes[0].get_ylim())
    image_scatter(axes[2], test_points, test_images, image_shape, labels=test_labels)
    axes[2].set_title(f"images generated at test {space} locations (frame: true class)")
    axis_labels(axes[2], space)
    if title:
        fig.suptitle(title, fontsize="x-large")
    return fig


def spaces_figure(panels: Sequence[Tuple[str, np.ndarray, np.ndarray, str]],
                  class_word: str = "digit") -> Figure:
    """Paper Fig. 3: several 2-D spaces side by side.

    ``panels``: ``(title, points [N, 2], labels [N], space "X" or "Z")`` per run.
    """
    n = len(panels)
    fig = new_figure(figsize=(5.2 * n + 1.2, 5.4))
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, (title, points, labels, space) in zip(axes, panels):
        scatter_by_class(ax, points, labels, title, space, size=2.5, alpha=0.7, legend=False)
    class_legend(fig, np.concatenate([p[2] for p in panels]), class_word,
                 loc="outside right center", markerscale=1.3)
    fig.suptitle(f"test set in each run's 2-D space, coloured by {class_word}",
                 fontsize="x-large")
    return fig


def interpolation_figure(rows: Sequence[Dict], start_image: np.ndarray, end_image: np.ndarray,
                         image_shape: Tuple[int, int], start_label: int, end_label: int) -> Figure:
    """Paper Fig. 4: interpolations between the same two test images, one row per run.

    ``rows``: dicts with ``title`` (e.g. "VAE z_dim 2, in Z"), ``images`` ``[S, H*W]``
    (decoded along the path, end points included), ``predicted`` ``[S]`` (classifier
    label) and ``confidence`` ``[S]`` (its probability). The real test images frame each row.
    """
    steps = len(rows[0]["images"])
    fig = new_figure(figsize=(1.05 * (steps + 2) + 1.8, 1.35 * len(rows) + 0.6))
    axes = np.atleast_2d(fig.subplots(len(rows), steps + 2))
    for r, row in enumerate(rows):
        cells = [(start_image, f"test: {start_label}", "black")]
        cells += [(img, f"{p} ({c:.2f})", "black" if c >= 0.5 else "tab:red")
                  for img, p, c in zip(row["images"], row["predicted"], row["confidence"])]
        cells += [(end_image, f"test: {end_label}", "black")]
        for c, (image, caption, color) in enumerate(cells):
            ax = axes[r, c]
            show(ax, pictures(np.asarray(image)[None], image_shape)[0], image_shape)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize="small", color=color, labelpad=2)
            if c in (0, len(cells) - 1):
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:blue")
                    spine.set_linewidth(2)
        axes[r, 0].set_ylabel(row["title"], rotation=0, ha="right", va="center", fontsize="medium")
    fig.suptitle("interpolation between two test images (blue frames); under each decoded image: "
                 "classifier label (confidence, red if < 0.5)", fontsize="medium")
    return fig


def grid_figure(images: np.ndarray, n: int, image_shape: Tuple[int, int],
                extent: Tuple[float, float, float, float], space: str = "X",
                title: str = "") -> Figure:
    """The "manifold" picture: images ``[n * n, H*W]`` decoded on a regular grid (row-major,
    first row at the top, as :func:`npvae_tf.runs.x_density.occupied_grid` makes it) drawn over the
    grid's ``extent = (u_min, u_max, v_min, v_max)`` so the axes read in the space's units."""
    fig = new_figure(figsize=(9, 9))
    ax = fig.subplots()
    du = (extent[1] - extent[0]) / max(n - 1, 1) / 2
    dv = (extent[3] - extent[2]) / max(n - 1, 1) / 2
    show(ax, mosaic(images, n, n, image_shape, pad=0), image_shape,
         extent=(extent[0] - du, extent[1] + du, extent[2] - dv, extent[3] + dv), aspect="auto")
    axis_labels(ax, space)
    ax.set_title(title or f"images decoded on a {n}x{n} grid over the occupied part of {space}")
    return fig


def training_curves_figure(log: Dict[str, np.ndarray], title: str = "") -> Figure:
    """Training curves from a run's ``training_log.csv`` (columns -> ``[E]`` arrays).

    Panels: the negative ELBO (train and validation), its reconstruction and KL terms, and
    for the npVAE the match term ``||E[z] - z~||^2``; x axis: epoch (from 1).
    """
    epochs = np.asarray(log["epoch"]) + 1
    panels = [("negative ELBO (nats)", ["elbo"], -1.0),
              ("reconstruction -log p(y|z) (nats)", ["reconstruction"], 1.0),
              ("KL(q(z|y) || p(z)) (nats)", ["kl"], 1.0)]
    if "match" in log:
        panels.append(("match ||E[z] - z̃||²", ["match"], 1.0))
    fig = new_figure(figsize=(4.6 * len(panels), 4))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, keys, sign) in zip(axes, panels):
        for key in keys:
            for prefix, style in (("", "-"), ("val_", "--")):
                if prefix + key in log:
                    ax.plot(epochs, sign * np.asarray(log[prefix + key]), style, marker="o",
                            markersize=3, label="validation" if prefix else "training")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(name.split(" (")[0])
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize="x-large")
    return fig


def samples_figure(sets: Sequence[Tuple[str, np.ndarray]], image_shape: Tuple[int, int],
                   n: int = 8, title: str = "") -> Figure:
    """One ``n x n`` mosaic per image source: ``sets`` of ``(title, images [N, H*W])``."""
    fig = new_figure(figsize=(4.2 * len(sets), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(sets)))
    for ax, (name, images) in zip(axes, sets):
        show(ax, mosaic(images, n, n, image_shape), image_shape)
        ax.set_title(name, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize="large")
    return fig
