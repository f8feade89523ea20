"""The explorer: a Bokeh server app to move through X (npVAE) or a 2-D Z (VAE) and watch
what it generates.

The map is the training reference set's X (or E[z] for a VAE with Z = 2), coloured by label
with a legend (WebGL). Moving the mouse decodes the location with the rules the SavedModel
serves (``TrainedRun.generate_from_x``: the VAE's decoder at z~, or ``decode`` for the VAE);
two clicks give an interpolation strip between them; a button draws ancestral samples
(``TrainedRun.sample``) shown as images and as points on the map; a test image (random or by
index) is placed as the run serves it (``TrainedRun.locate``: from its 15 nearest training
images for the neighbour schemes, f(y) otherwise) and shown with the sharp image there, its
reconstruction through X by the X path's decoder (``reconstruct_through_x``) and at E[z].
Every function is traced once before the page is offered (:meth:`ExplorerState.warm_up`).
Nothing is written into the run folder.

:class:`ExplorerState` holds what the page shows last (``last_location``, ``last_image``,
``strip``, ...) so a test can read it back.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from npvae_tf.data.pictures import pictures, rgb

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
STRIP_STEPS = 8
MAX_POINTS = 20000


class ExplorerError(ValueError):
    """The run cannot be explored (not a finished run, no 2-D space)."""


def image_rgba(values: np.ndarray, shape) -> np.ndarray:
    """One example ``[P]`` (as :func:`npvae_tf.data.pictures.pictures` draws it) as ``[h, w]``
    uint32 RGBA, flipped for Bokeh's bottom-up image rows."""
    picture = rgb(pictures(np.asarray(values)[None], shape)[0], shape)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=-1)
    c = (np.clip(picture, 0, 1) * 255).round().astype(np.uint32)
    rgba = c[..., 0] | (c[..., 1] << 8) | (c[..., 2] << 16) | (np.uint32(255) << 24)
    return rgba[::-1].copy()


class ExplorerState:
    """The run and what the app last showed (shared by every session)."""

    def __init__(self, run):
        self.run = run
        self.lock = threading.Lock()
        if run.has_x:
            if run.config.x_dim != 2:
                raise ExplorerError(f"{run.path}: X is {run.config.x_dim}-D; the map needs 2-D")
            self.points = np.asarray(run.reference.x, np.float32)
        else:
            if run.config.z_dim != 2:
                raise ExplorerError(f"{run.path}: a VAE with Z = {run.config.z_dim}; the map "
                                    "needs a 2-D space (an npVAE, or a VAE with Z = 2)")
            self.points = np.asarray(run.reference.z_mean, np.float32)
        self.labels = np.asarray(run.reference.labels)
        self.last_location: Optional[np.ndarray] = None
        self.last_image: Optional[np.ndarray] = None
        self.decoded = 0
        self.clicks = []
        self.strip: Optional[np.ndarray] = None
        self.samples: Optional[np.ndarray] = None
        self.test = None

    def generate(self, locations) -> np.ndarray:
        locations = np.asarray(locations, np.float32).reshape(-1, 2)
        if self.run.has_x:
            return self.run.generate_from_x(locations)
        return self.run.decode(locations)

    def locate(self, images) -> np.ndarray:
        if self.run.has_x:
            return self.run.locate(images)
        return self.run.encode(images)[0]

    def through_x(self, images) -> np.ndarray:
        """The images through their served place in X, by the X path's decoder (npVAE)."""
        return self.run.reconstruct_through_x(images)[0]

    @property
    def decoders(self):
        """What the page says it shows: (hover / samples, through X)."""
        if not self.run.has_x:
            return "the decoder at z", None
        own = self.run.model.x_path_decoder_net is not None
        return ("the VAE's decoder at z̃(x) (sharp)",
                "the X path's own decoder (its likelihood)" if own else "the VAE's decoder")

    def class_names(self):
        """A legend entry per label of the map (``-1``: unlabelled)."""
        names = self.run.data.get("class_names")
        return [("unlabelled" if c < 0 else str(names[c]) if names and c < len(names)
                 else str(c)) for c in self.labels]

    def warm_up(self, test_images: Optional[np.ndarray] = None) -> None:
        """Traces every function the page calls (the first call of each takes seconds), so
        the first hover answers as fast as the next; records nothing."""
        centre = self.points.mean(0, keepdims=True)
        self.generate(centre)
        self.generate(np.repeat(centre, STRIP_STEPS, 0))
        self.run.sample(8, seed=0)
        if test_images is not None and len(test_images):
            self.locate(test_images[:1])
            self.run.reconstruct(test_images[:1])
            if self.run.has_x:
                self.through_x(test_images[:1])

    def hover(self, x: float, y: float) -> np.ndarray:
        image = self.generate([[x, y]])[0]
        with self.lock:
            self.last_location, self.last_image = np.array([x, y], np.float32), image
            self.decoded += 1
        return image

    def click(self, x: float, y: float):
        """Returns the strip ``[STRIP_STEPS, P]`` once two points are clicked, else None."""
        self.clicks = (self.clicks + [(x, y)])[-2:]
        if len(self.clicks) < 2:
            return None
        a, b = np.array(self.clicks, np.float32)
        t = np.linspace(0, 1, STRIP_STEPS, dtype=np.float32)[:, None]
        self.strip = self.generate(a + t * (b - a))
        self.clicks = []
        return self.strip


def make_document(state: ExplorerState, test_images: Optional[np.ndarray], doc) -> None:
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, Div, Spinner
    from bokeh.plotting import figure

    run, shape = state.run, tuple(state.run.config.image_shape)
    h, w = pictures(np.zeros((1, run.config.image_dim)), shape).shape[1:3]

    def shown(values):
        """Client values as pictures draw them (as the figures do: standardised images back
        in their display range, feature vectors' heat strips standardised)."""
        return run.scaling.for_display(run.scaling.to_model(values), shape)

    def framed(width, count=1):
        """A frame's height for ``count`` examples side by side at their own aspect."""
        return int(min(400, max(60, width * h / (w * count)))) + 30
    space = "X" if run.has_x else "Z"
    rng = np.random.default_rng(0)
    keep = (rng.choice(len(state.points), MAX_POINTS, replace=False)
            if len(state.points) > MAX_POINTS else np.arange(len(state.points)))
    names = state.class_names()
    plot = figure(title=f"{run.path}: training {space} by label", width=720, height=640,
                  tools="pan,wheel_zoom,box_zoom,reset", output_backend="webgl",
                  match_aspect=True, name="map")
    # One renderer per class: a legend entry each, in label order (click one to hide it).
    for c in np.unique(state.labels[keep]):
        mine = keep[state.labels[keep] == c]
        plot.scatter(state.points[mine, 0], state.points[mine, 1], size=3, alpha=0.5,
                     color=PALETTE[int(c) % 10], legend_label=names[mine[0]])
    plot.add_layout(plot.legend[0], "right")
    plot.legend[0].name = "legend"
    plot.legend[0].click_policy = "hide"
    marks = ColumnDataSource(dict(x=[], y=[]))
    plot.scatter("x", "y", source=marks, size=9, color="black", marker="x")
    samples_src = ColumnDataSource(dict(x=[], y=[]))
    plot.scatter("x", "y", source=samples_src, size=8, color="black", marker="triangle")
    test_src = ColumnDataSource(dict(x=[], y=[]))
    plot.scatter("x", "y", source=test_src, size=14, color="red", marker="star")

    def image_figure(title, width=200, name=None):
        f = figure(title=title, width=width, height=framed(width, max(1, width // 200)),
                   x_range=(0, w * (width // 200 if width > 200 else 1)), y_range=(0, h),
                   tools="", toolbar_location=None, name=name)
        f.axis.visible = False
        f.grid.visible = False
        return f

    blank = image_rgba(np.zeros(run.config.image_dim), shape)
    hover_src = ColumnDataSource(dict(image=[blank]))
    sharp, through_decoder = state.decoders
    hover_fig = image_figure("decoded at the mouse", name="hover_image")
    hover_fig.image_rgba("image", x=0, y=0, dw=w, dh=h, source=hover_src)
    where = Div(text="move the mouse over the map", name="where")
    decoder_note = Div(text=f"images at the mouse, in the strip and the samples: {sharp}",
                       name="decoders", width=400)

    strip_fig = figure(title="interpolation (click two points)", width=8 * 90,
                       height=framed(8 * 90, STRIP_STEPS),
                       x_range=(0, w * STRIP_STEPS), y_range=(0, h), tools="",
                       toolbar_location=None, name="strip")
    strip_fig.axis.visible = False
    strip_fig.grid.visible = False
    strip_src = ColumnDataSource(dict(image=[], x=[]))
    strip_fig.image_rgba("image", x="x", y=0, dw=w, dh=h, source=strip_src)

    samples_fig = figure(title="ancestral samples", width=8 * 90, height=framed(8 * 90, 8),
                         x_range=(0, w * 8), y_range=(0, h), tools="", toolbar_location=None)
    samples_fig.axis.visible = False
    samples_fig.grid.visible = False
    samples_img = ColumnDataSource(dict(image=[], x=[]))
    samples_fig.image_rgba("image", x="x", y=0, dw=w, dh=h, source=samples_img)
    sample_button = Button(label="draw 8 samples", name="sample_button")

    panels = (["test image", "at its place", "through X"] if run.has_x else ["test image"]) + \
        ["at E[z]"]
    placed_by = (("placed at the median X of its 15 nearest training images"
                  if run.placement == "neighbours" else "placed at f(y)") if run.has_x else
                 "at its E[z|y]")
    test_note = Div(text=f"test image {placed_by}" + (
        f"; at its place: {sharp}; through X: {through_decoder}" if run.has_x else ""),
        name="test_note", width=len(panels) * 150)
    test_fig = figure(title=" | ".join(panels), width=len(panels) * 150,
                      height=framed(len(panels) * 150, len(panels)),
                      x_range=(0, len(panels) * w), y_range=(0, h), tools="",
                      toolbar_location=None, name="test_image")
    test_fig.axis.visible = False
    test_fig.grid.visible = False
    test_img = ColumnDataSource(dict(image=[], x=[]))
    test_fig.image_rgba("image", x="x", y=0, dw=w, dh=h, source=test_img)
    index = Spinner(title="test image index", low=0, step=1, value=0, width=140,
                    high=max(len(test_images) - 1, 0) if test_images is not None else 0)
    show_button = Button(label="show test image", name="test_button")
    random_button = Button(label="random test image", name="random_button")
    draws = {"n": 0}

    def on_move(event):
        if event.x is None or event.y is None:
            return
        image = state.hover(float(event.x), float(event.y))
        hover_src.data = dict(image=[image_rgba(shown(image), shape)])
        where.text = f"{space} = ({event.x:.3f}, {event.y:.3f})"

    def on_tap(event):
        marks.stream(dict(x=[event.x], y=[event.y]), rollover=2)
        strip = state.click(float(event.x), float(event.y))
        if strip is not None:
            strip_src.data = dict(image=[image_rgba(shown(s), shape) for s in strip],
                                  x=[i * w for i in range(len(strip))])

    def on_sample():
        images = run.sample(8, seed=draws["n"])
        draws["n"] += 1
        loc = state.locate(images)
        state.samples = images
        samples_img.data = dict(image=[image_rgba(shown(s), shape) for s in images],
                                x=[i * w for i in range(len(images))])
        samples_src.data = dict(x=loc[:, 0], y=loc[:, 1])

    def show_test(i):
        if test_images is None or not len(test_images):
            return
        i = int(i) % len(test_images)
        image = test_images[i:i + 1]
        loc = state.locate(image)[0]
        at_mean = run.reconstruct(image)[0]
        state.test = dict(index=i, location=loc, image=image[0], at_mean=at_mean)
        shown_images = [image[0]]
        if run.has_x:
            state.test.update(sharp=state.generate(loc[None])[0],
                              through_x=state.through_x(image)[0])
            shown_images += [state.test["sharp"], state.test["through_x"]]
        shown_images.append(at_mean)
        test_img.data = dict(image=[image_rgba(shown(a), shape) for a in shown_images],
                             x=[k * w for k in range(len(shown_images))])
        test_src.data = dict(x=[loc[0]], y=[loc[1]])
        index.value = i

    from bokeh import events

    plot.on_event(events.MouseMove, on_move)
    plot.on_event(events.Tap, on_tap)
    sample_button.on_click(on_sample)
    show_button.on_click(lambda: show_test(index.value))
    random_button.on_click(lambda: show_test(np.random.default_rng().integers(1 << 30)))
    doc.title = f"npVAE explorer: {run.path}"
    doc.add_root(row(plot, column(hover_fig, where, decoder_note, strip_fig, sample_button,
                                  samples_fig, row(index, column(show_button, random_button)),
                                  test_fig, test_note)))


def make_server(run, port: int = 5006, test_images: Optional[np.ndarray] = None,
                address: str = "127.0.0.1"):
    """``(server, state)``: a started-but-not-looping Bokeh ``Server`` with the app at ``/``."""
    from bokeh.application import Application
    from bokeh.application.handlers import FunctionHandler
    from bokeh.server.server import Server

    state = ExplorerState(run)
    state.warm_up(test_images)
    app = Application(FunctionHandler(lambda doc: make_document(state, test_images, doc)))
    server = Server({"/": app}, port=port, address=address, allow_websocket_origin=[
        f"{address}:{port}", f"localhost:{port}"], num_procs=1)
    server.start()
    return server, state
