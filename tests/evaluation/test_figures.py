"""Figures: built from arrays, labelled, and written as PNG without a display."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from npvae_tf.evaluation import figures as plots

SHAPE = (6, 5)


def rand_images(n, seed=0):
    return np.random.default_rng(seed).random((n, SHAPE[0] * SHAPE[1])).astype(np.float32)


def points_and_labels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    return rng.normal(size=(n, 2)) + 5 * labels[:, None], labels


def png_bytes(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def labelled(ax):
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel())


def test_mosaic_places_images_row_by_row():
    images = np.arange(3 * 30, dtype=np.float32).reshape(3, 30)
    m = plots.mosaic(images, rows=2, cols=2, image_shape=SHAPE, pad=1)
    assert m.shape == (2 * 7 - 1, 2 * 6 - 1)
    np.testing.assert_array_equal(m[:6, :5], images[0].reshape(SHAPE))
    np.testing.assert_array_equal(m[:6, 6:], images[1].reshape(SHAPE))
    np.testing.assert_array_equal(m[7:, :5], images[2].reshape(SHAPE))
    assert np.all(m[7:, 6:] == 0) and np.all(m[6, :] == 0)      # missing tile, padding


def test_embedding_figure():
    train, train_labels = points_and_labels(500)
    test, test_labels = points_and_labels(200, seed=1)
    fig = plots.embedding_figure(train, train_labels, test, test_labels, rand_images(200),
                                 SHAPE, "X", title="npVAE")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert all(labelled(ax) for ax in fig.axes)
    assert fig.axes[0].get_xlabel() == "$x_1$"
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in range(10)]
    # At most one image per cell of the 16 x 16 grid, at least a few.
    assert 5 <= len(fig.axes[2].images) <= 256
    png_bytes(fig)


def test_spaces_figure_one_panel_per_run_with_a_shared_legend():
    panels = [(f"run {i}", *points_and_labels(100, i), space)
              for i, space in enumerate(["Z", "X", "X"])]
    fig = plots.spaces_figure(panels)
    assert len(fig.axes) == 3 and fig.legends
    assert fig.axes[0].get_xlabel() == "$z_1$" and fig.axes[1].get_ylabel() == "$x_2$"
    assert [ax.get_title() for ax in fig.axes] == ["run 0", "run 1", "run 2"]
    png_bytes(fig)


def test_interpolation_figure_captions_every_image():
    steps = 6
    rows = [{"title": f"row {r}", "images": rand_images(steps, r),
             "predicted": np.arange(steps), "confidence": np.linspace(0.2, 1.0, steps)}
            for r in range(2)]
    fig = plots.interpolation_figure(rows, rand_images(1)[0], rand_images(1, 1)[0], SHAPE, 3, 8)
    assert len(fig.axes) == 2 * (steps + 2)
    captions = [ax.get_xlabel() for ax in fig.axes[:steps + 2]]
    assert captions[0] == "test: 3" and captions[-1] == "test: 8"
    assert captions[1] == "0 (0.20)" and captions[steps] == f"{steps - 1} (1.00)"
    assert fig.axes[0].get_ylabel() == "row 0"
    png_bytes(fig)


def test_grid_figure_reads_in_the_space_units():
    n = 4
    fig = plots.grid_figure(rand_images(n * n), n, SHAPE, (-1.0, 3.0, 10.0, 12.0), "X")
    ax = fig.axes[0]
    assert labelled(ax) and "4x4" in ax.get_title()
    left, right, bottom, top = ax.images[0].get_extent()
    assert left < -1.0 < 3.0 < right and bottom < 10.0 < 12.0 < top
    assert ax.images[0].get_array().shape == (n * SHAPE[0], n * SHAPE[1])
    png_bytes(fig)


@pytest.mark.parametrize("with_match", [False, True])
def test_training_curves(with_match):
    log = {"epoch": np.arange(5), "elbo": -np.linspace(200, 100, 5),
           "val_elbo": -np.linspace(190, 105, 5), "reconstruction": np.linspace(190, 90, 5),
           "kl": np.linspace(5, 10, 5), "val_reconstruction": np.linspace(180, 95, 5),
           "val_kl": np.linspace(5, 10, 5)}
    if with_match:
        log.update(match=np.linspace(1, 0.1, 5), val_match=np.linspace(1, 0.2, 5))
    fig = plots.training_curves_figure(log, title="t")
    assert len(fig.axes) == (4 if with_match else 3)
    for ax in fig.axes:
        assert labelled(ax) and ax.get_legend() is not None
    # The ELBO panel shows the negative ELBO, epochs from 1.
    x, y = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(x, np.arange(1, 6))
    np.testing.assert_allclose(y, np.linspace(200, 100, 5))
    png_bytes(fig)


def test_samples_figure():
    fig = plots.samples_figure([("a", rand_images(64)), ("b", rand_images(10))], SHAPE, n=8)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert fig.axes[0].images[0].get_array().shape == (8 * 7 - 1, 8 * 6 - 1)
    png_bytes(fig)


def test_figures_say_class_unless_the_data_is_mnist():
    panels = [("run", *points_and_labels(50, 0), "X")]
    assert plots.spaces_figure(panels).legends[0].get_title().get_text() == "digit"
    fig = plots.spaces_figure(panels, class_word="class")
    assert fig.legends[0].get_title().get_text() == "class"
    assert fig._suptitle.get_text().endswith("coloured by class")
    train, labels = points_and_labels(50, 1)
    fig = plots.embedding_figure(train, labels, train, labels, np.zeros((50, 16)), (4, 4),
                                 class_word="class")
    assert fig.axes[0].get_legend().get_title().get_text() == "class"
