"""Loading a finished run folder: its config, final model, reference set and training log,
checked against each other (:func:`load_run`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

import numpy as np

from npvae_tf.core.config import Config
from npvae_tf.runs.layout import (LOG_FILE, MODEL_FILE, REFERENCE_FILE, RunError, check_data,
                                  check_run_dir, read_training_log, recorded_data)


# --- loading -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """A finished run loaded from its folder: config, final model, reference set, log."""

    path: str
    config: Config
    model: object                      # keras.Model (VAE or NonparametricVAE)
    reference: object                  # npvae_tf.runs.reference.ReferenceSet
    log: Optional[Dict] = None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def has_x(self) -> bool:
        return self.config.has_x

    @property
    def data(self) -> Dict:
        """The run's ``data.json``: what it was trained on and how it was scaled (``{}`` for
        runs from before it was recorded)."""
        return recorded_data(self.path) or {}

    @property
    def scaling(self):
        """The data's :class:`~npvae_tf.data.datasets.Scaling` (clients' units <-> the model's)."""
        from npvae_tf.data.datasets import Scaling

        return Scaling.from_dict(self.data.get("scaling"))

    @property
    def space(self) -> Optional[str]:
        """The run's 2-D space: "X" (npVAE with 2-D X), "Z" (2-D VAE), or None."""
        if self.has_x:
            return "X" if self.config.x_dim == 2 else None
        return "Z" if self.config.z_dim == 2 else None

    @property
    def label(self) -> str:
        """``"neighbour z_dim 500"``: the scheme's name, or its objective for an unnamed one."""
        return f"{self.config.scheme_name or self.config.scheme} z_dim {self.config.z_dim}"

    @property
    def placement(self) -> Optional[str]:
        """How the served run places a new example in X (``"neighbours"`` or ``"encoder"``,
        :attr:`~npvae_tf.core.objective.Objective.placement`); None for a VAE."""
        return self.config.placement if self.has_x else None

    def placement_set(self, data: Optional[str] = None, dataset=None):
        """``(images [M, P] as stored, scale)``: the training examples new ones are placed
        from (their model values are ``scale`` times them). Kept in the reference set by
        training; for runs from before it was kept, read again from the run's data
        (``dataset``: the loaded one; ``data``: another path to it), checked against the
        recorded fingerprint."""
        if self.reference.images is not None:
            return self.reference.images, self.reference.images_scale
        from npvae_tf.data.pipeline import evaluation_images
        from npvae_tf.runs.reference import compact_images

        dataset = dataset if dataset is not None else training_data(self, data)
        train = dataset.train.images[:len(self.reference.labels)]
        return compact_images(evaluation_images(train, self.config.binarize, self.config.seed,
                                                "train"))


def training_data(run: Run, data: Optional[str] = None, cache: Optional[Dict] = None):
    """The :class:`~npvae_tf.data.datasets.Dataset` the run was trained on (its training split
    without ``train_examples`` truncation), found where ``data.json`` says (``data``: another
    path to it) and checked: the recorded SHA-256 and the reference set's labels.

    ``cache``: a dict to reuse data sets between runs. Raises :class:`RunError` (one line).
    """
    from npvae_tf.data.datasets import DataError, DataSpec, load_for_config

    c = run.config
    recorded = run.data
    spec = DataSpec(**recorded["spec"]) if "spec" in recorded else DataSpec(
        recorded.get("source") if os.path.exists(recorded.get("source", "")) else None)
    if data is not None:
        spec = dataclasses.replace(spec, path=data)
    cache = {} if cache is None else cache
    key = (spec, c.validation_examples, c.image_shape, c.likelihood, c.test_fraction, c.seed)
    if key not in cache:
        try:
            cache[key] = load_for_config(spec, c, truncate=False)
        except DataError as e:
            raise RunError(f"{run.path}: trained on examples of shape "
                           f"{'x'.join(map(str, c.image_shape))}, but the data does not "
                           f"fit: {e}") from None
    dataset = cache[key]
    check_data(run.path, dataset.sha256, dataset.source)
    n = len(run.reference.labels)
    if n > len(dataset.train) or not np.array_equal(run.reference.labels,
                                                    dataset.train.labels[:n]):
        raise RunError(f"{run.path}: its reference set does not match the training split "
                       f"of {dataset.source} (trained on other data?)")
    return dataset


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def consistency_problems(config: Config, model, reference) -> List[str]:
    """Where the model or reference set disagree with ``config.json`` (empty if none).

    Compares every setting the saved model records, so a folder holding one run's config
    and another run's weights is refused rather than used.
    """
    problems = []
    try:
        saved = model.get_config()  # the settings model.keras was built with
    except Exception:  # noqa: BLE001 - a foreign model: compare what can be compared
        saved = {}
    wanted = {"image_dim": config.image_dim, **config.to_dict()}
    if not config.has_x:  # a VAE has no X settings
        wanted = {k: v for k, v in wanted.items()
                  if k not in ("x_dim", "match_weight", "initial_lengthscale")
                  and not k.startswith("x_path")}
    for key, want in wanted.items():
        if key not in saved:
            continue
        got = tuple(saved[key]) if isinstance(saved[key], list) else saved[key]
        if got != want:
            problems.append(f"{key}: config {want}, model {got}")
    if config.has_x != getattr(model, "has_x", False):  # False too for a foreign model
        problems.append(f"config says {config.model!r}, model.keras holds "
                        f"{type(model).__name__}")
    if reference is not None:
        if reference.z_mean.shape[1:] != (config.z_dim,):
            problems.append(f"z_dim: config {config.z_dim}, reference set "
                            f"{reference.z_mean.shape[1]}")
        if config.has_x != (reference.x is not None):
            problems.append(f"config says {config.model!r} but the reference set "
                            f"{'has' if reference.x is not None else 'has no'} x")
        elif reference.x is not None and reference.x.shape[1:] != (config.x_dim,):
            problems.append(f"x_dim: config {config.x_dim}, reference set "
                            f"{reference.x.shape[1]}")
        if config.train_examples is not None and len(reference.labels) != config.train_examples:
            problems.append(f"train_examples: config {config.train_examples}, reference set "
                            f"{len(reference.labels)}")
    return problems


def load_run(path: str, compile: bool = False) -> Run:
    """Loads a finished run from its folder alone and checks that its parts agree.

    Raises :class:`RunError` with a one-line message for a missing, unfinished, unreadable
    or inconsistent folder.
    """
    config = check_run_dir(path)
    import zipfile

    from npvae_tf.core.backend import keras

    import npvae_tf.model.vae  # noqa: F401  registers the classes model.keras names
    from npvae_tf.runs.reference import ReferenceSet

    model_path = os.path.join(path, MODEL_FILE)
    try:
        model = keras.saving.load_model(model_path, compile=compile)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: Keras raises many types
        raise RunError(f"{model_path}: cannot load ({_first_line(e)})") from None
    try:
        reference = ReferenceSet.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{os.path.join(path, REFERENCE_FILE)}: cannot load the reference "
                       f"set ({_first_line(e)})") from None
    problems = consistency_problems(config, model, reference)
    if problems:
        raise RunError(f"{path}: inconsistent run folder: {'; '.join(problems)}")
    return Run(path, config, model, reference, read_training_log(os.path.join(path, LOG_FILE)))
