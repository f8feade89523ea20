"""The training objective's knobs, declared once, and the named schemes that set them.

Per training example ``i`` the npVAE minimises (:mod:`npvae_tf.model.vae`)::

    -ELBO_i + match_weight * ||E[z_i] - z~_i||^2           (the paper's eq. 5 at weight 1)
            + x_path_weight * (-log p_X(y_i | z~_i))        (the X path, trained as used)
            + neighbour_weight * neighbour_i                (UMAP's cross-entropy on X)
            + landmark_weight * ||x_i - u_i||^2             (X regresses UMAP's layout u)

Every reader of a knob reads it here: :class:`npvae_tf.core.config.Config` inherits the
fields, the model takes them as one :class:`Objective`, the command lines make their flags
from the field metadata, and :data:`SCHEMES` names the combinations worth training.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

X_PATH_DECODERS = ("shared", "separate")
# Knobs that existed once and were retired, with the value a run folder may still hold.
RETIRED = {"x_path_hold_decoder": False}


def knob(default, help: str, **metadata):
    """A dataclass field with its command-line help (``--flag`` text) in the metadata; also
    ``choices``, ``flag`` (the flag's name, or False for none) and ``model`` (False: a knob
    of the training around the model, not recorded in ``model.keras``)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True)
class Objective:
    """The weights and options of the objective's terms (defaults: the paper's eq. 5)."""

    match_weight: float = knob(
        1.0, "weight of ||E[z_i] - z~_i||^2 (1: paper; 0: plain VAE objective)")
    x_path_weight: float = knob(
        0.0, "weight of the X-path term -log p(y_i | z~_i), each image decoded from its kernel "
             "prediction (0: paper; see docs/schemes.md)")
    x_path_decoder: str = knob(
        "shared", "decode z~ with the model's decoder or with a decoder of its own",
        choices=X_PATH_DECODERS)
    x_path_stop_gradient: bool = knob(
        False, "the X-path term does not train the VAE's encoder (E[z_j] held constant)")
    x_path_decoder_epochs: int = knob(
        10, "epochs of the fit of a separate X-path decoder after training (with "
            "--x_path_weight 0: fitted on leave-one-out kernel averages)", model=False)
    neighbour_weight: float = knob(
        0.0, "weight of the neighbour term: UMAP's cross-entropy between the training images' "
             "k-NN graph and X (0: off)")
    n_neighbors: int = knob(15, "neighbours per image in that graph", model=False)
    min_dist: float = knob(0.1, "UMAP's min_dist: how tightly X packs neighbours")
    landmark_weight: float = knob(
        0.0, "weight of the landmark term ||x - u||^2: X regresses the training images' UMAP "
             "layout u (0: off)")

    def model_knobs(self) -> Dict[str, object]:
        """The knobs the model itself reads (its ``get_config`` records them); the others
        (``model=False``) shape the training around it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Objective)
                if f.metadata.get("model", True)}

    def objective(self) -> "Objective":
        """The knobs alone (of a Config too)."""
        return Objective(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Objective)})

    def objective_problems(self, npvae: bool):
        """``(ok, message)`` pairs: each knob's range, and that the X knobs need an npVAE."""
        return [
            (self.match_weight >= 0, f"match_weight must be >= 0, got {self.match_weight}"),
            (self.x_path_weight >= 0, f"x_path_weight must be >= 0, got {self.x_path_weight}"),
            (self.x_path_decoder in X_PATH_DECODERS,
             f"x_path_decoder must be one of {X_PATH_DECODERS}, got {self.x_path_decoder!r}"),
            (npvae or (self.x_path_weight == 0 and self.match_weight == 1.0
                       and self.x_path_decoder == "shared" and not self.x_path_stop_gradient),
             "match_weight and the x_path_* settings apply to model 'npvae' only"),
            (self.neighbour_weight >= 0,
             f"neighbour_weight must be >= 0, got {self.neighbour_weight}"),
            (npvae or self.neighbour_weight == 0,
             "neighbour_weight (the neighbour term trains X) applies to model 'npvae' only"),
            (self.x_path_decoder_epochs >= 1,
             f"x_path_decoder_epochs must be >= 1, got {self.x_path_decoder_epochs}"),
            (self.landmark_weight >= 0,
             f"landmark_weight must be >= 0, got {self.landmark_weight}"),
            (npvae or self.landmark_weight == 0,
             "landmark_weight (the landmark term trains X) applies to model 'npvae' only"),
            (self.n_neighbors >= 2, f"n_neighbors must be >= 2, got {self.n_neighbors}"),
            (self.min_dist >= 0, f"min_dist must be >= 0, got {self.min_dist}"),
        ]

    @property
    def uses_neighbour_graph(self) -> bool:
        """Training draws from the k-NN graph of the training images (neighbours, landmarks)."""
        return self.neighbour_weight > 0 or self.landmark_weight > 0

    @property
    def placement(self) -> str:
        """How a new example is placed in X when served: ``"neighbours"``, the median location
        of its nearest training examples (:mod:`npvae_tf.model.placement`), where X is a
        neighbour embedding (the neighbour and landmark terms train it); ``"encoder"``,
        ``f(y)``, otherwise."""
        return "neighbours" if self.uses_neighbour_graph else "encoder"

    def objective_label(self) -> str:
        """What differs from the paper's objective, e.g. ``"match 0, X path 1, own decoder"``
        (empty for the paper's)."""
        parts = []
        if self.neighbour_weight > 0:
            parts.append(f"neighbour {self.neighbour_weight:g}")
        if self.landmark_weight > 0:
            parts.append(f"landmarks {self.landmark_weight:g}")
        if self.match_weight != 1.0:
            parts.append(f"match {self.match_weight:g}")
        if self.x_path_weight > 0:
            parts.append(f"X path {self.x_path_weight:g}")
            if self.x_path_decoder == "separate":
                parts.append("own decoder")
            if self.x_path_stop_gradient:
                parts.append("E[z] held")
        elif self.x_path_decoder == "separate":
            parts.append("own decoder fitted after")
        return ", ".join(parts)


OBJECTIVE_FIELDS = tuple(f.name for f in dataclasses.fields(Objective))


def objective_from(values: Dict[str, object], where: str) -> Tuple[Objective, Dict]:
    """Splits ``values`` into an :class:`Objective` and the rest; drops retired knobs that
    hold their old default and refuses (``ValueError``, one line naming ``where``) those that
    do not."""
    rest = dict(values)
    for name, default in RETIRED.items():
        if name in rest and rest.pop(name) != default:
            raise ValueError(f"{where}: uses {name}, an option this version no longer has "
                             "(it was measured not to help); train a new run")
    knobs = {name: rest.pop(name) for name in OBJECTIVE_FIELDS if name in rest}
    return Objective(**knobs), rest


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A named objective: its run-name prefix, the Config changes, its Z grid, a sentence."""

    prefix: str
    changes: Dict[str, object]
    z_dims: Tuple[int, ...]
    about: str
    superseded: bool = False  # a step towards the recommended scheme, kept by name


# The paper's scheme and the VAE are the reference, ``neighbour`` the recommended scheme; the
# others are the steps that led to it, measured in docs/results.md and kept as flags.
SCHEMES = {
    "vae": Scheme("vae", dict(model="vae"), (2, 20, 500),
                  "the standard VAE (Kingma & Welling 2014)"),
    "paper": Scheme("npvae", dict(model="npvae"), (2, 20, 500),
                    "the paper's objective, eq. 5: ELBO − ||E[z_i] − z̃_i||²"),
    "neighbour": Scheme("npvae-neighbour",
                        dict(model="npvae", match_weight=0.0, neighbour_weight=1.0,
                             landmark_weight=1.0, x_path_decoder="separate"), (2, 20, 500),
                        "the recommended scheme: X is trained as a parametric UMAP of the "
                        "training images' 15-nearest-neighbour graph (the neighbour term) that "
                        "also regresses their UMAP layout (the landmark term), the VAE trains "
                        "exactly as a plain VAE, and the X path gets a decoder of its own fitted "
                        "after training; served with new images placed from their 15 nearest "
                        "training images, sharp images from the VAE's decoder and likelihoods "
                        "from the X path's"),
    "xpath": Scheme("npvae-xpath", dict(model="npvae", match_weight=0.0, x_path_weight=1.0,
                                        x_path_decoder="separate", x_path_stop_gradient=True),
                    (20, 500),
                    "ELBO + log p_X(y_i | z̃_i): the X path trained as it is used, with its own "
                    "decoder and no match term; the X-path term does not reach the VAE's "
                    "encoder, so the VAE trains exactly as a plain VAE", superseded=True),
    "umap": Scheme("npvae-umap", dict(model="npvae", match_weight=0.0, neighbour_weight=1.0),
                   (20, 500),
                   "ELBO − UMAP's cross-entropy between the fuzzy 15-nearest-neighbour graph of "
                   "the training images and X (the neighbour term, McInnes et al. 2018, in "
                   "parametric form): it trains the X encoder only, so the VAE trains exactly "
                   "as a plain VAE, and X is decoded through the kernel by the VAE's decoder", superseded=True),
    "umap-landmark": Scheme("npvae-umap-landmark",
                            dict(model="npvae", match_weight=0.0, neighbour_weight=1.0,
                                 landmark_weight=1.0), (500,),
                            "the umap scheme, with the X encoder also regressing the training "
                            "images' nonparametric UMAP layout (umap-learn, computed once from "
                            "the same graph; ParametricUMAP's landmark loss)", superseded=True),
    "umap-own": Scheme("npvae-umap-own", dict(model="npvae", match_weight=0.0,
                                              neighbour_weight=1.0, x_path_decoder="separate"),
                       (500,),
                       "the umap scheme, with an X-path decoder of its own fitted after training "
                       "(10 epochs) on leave-one-out kernel averages of the training codes at "
                       "the serving lengthscale", superseded=True),
}

# What ``reproduce.py`` trains by default (each at its Z values); the recommended scheme.
DEFAULT_SCHEMES = ("vae", "paper", "neighbour")
RECOMMENDED = "neighbour"
