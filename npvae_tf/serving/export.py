"""Writing a run's SavedModel (:class:`~npvae_tf.serving.module.ServingModule`) atomically.

``export_run(RUN, DIR)`` loads a finished run, builds its serving module and writes the
SavedModel into ``DIR``: into a temporary sibling first, renamed onto ``DIR`` once complete,
so an interrupted export leaves the earlier one (or nothing), never half a SavedModel; a
folder that is not an earlier export is never replaced.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from npvae_tf.runs.reference import DEFAULT_CHUNK_SIZE, ReferenceSet
from npvae_tf.runs.x_density import XDensity, x_density_for
from npvae_tf.serving.folders import INFO_FILE, ExportError, atomic_write_dir, check_target
from npvae_tf.serving.module import ServingModule


def export_model(model, export_dir: str, reference: Optional[ReferenceSet] = None, *,
                 density: Optional[XDensity] = None, lengthscale: Optional[float] = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, jit_compile: bool = False,
                 extra_info: Optional[dict] = None, indexed: bool = True, scaling=None,
                 placement=None, image_shape=None) -> str:
    """Writes the SavedModel of ``model`` to ``export_dir`` atomically; returns its path.

    ``density``, ``lengthscale``, ``chunk_size``, ``jit_compile``, ``scaling``,
    ``placement``, ``image_shape``: see :class:`ServingModule`.
    """
    check_target(export_dir)
    module = ServingModule(model, reference, density=density, lengthscale=lengthscale,
                           chunk_size=chunk_size, jit_compile=jit_compile, indexed=indexed,
                           scaling=scaling, placement=placement, image_shape=image_shape)
    info = {**module.info(), **(extra_info or {})}
    archive = module.archive()

    def write(tmp):
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, os.path.dirname(INFO_FILE)), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")

    atomic_write_dir(export_dir, write)
    return os.path.abspath(export_dir)


def export_run(run_dir: str, export_dir: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
               jit_compile: bool = False, data: Optional[str] = None) -> str:
    """Exports the final model (``model.keras``) of ``run_dir`` with its reference set, the
    density over X training stored, the serving lengthscale and, for neighbour placement,
    the training examples (``data``: where to read them for a run from before its reference
    set kept them, if not where ``data.json`` says).

    Raises :class:`ExportError` or :class:`~npvae_tf.config.ConfigError` with a one-line
    message for a folder that is not a finished run, or an unsafe ``export_dir``.
    """
    from npvae_tf.runs.layout import RunError
    from npvae_tf.runs.load import load_run

    check_target(export_dir)
    try:
        run = load_run(run_dir)
    except RunError as e:
        raise ExportError(str(e)) from None
    config, model, reference, density, placement = run.config, run.model, None, None, None
    if run.has_x:
        reference = run.reference
        try:
            density = x_density_for(run_dir, reference.x, config.seed)
            if run.placement == "neighbours":
                placement = run.placement_set(data)
        except (ValueError, RunError) as e:
            raise ExportError(str(e)) from None
    return export_model(model, export_dir, reference, density=density, scaling=run.scaling,
                        chunk_size=chunk_size, jit_compile=jit_compile, placement=placement,
                        image_shape=config.image_shape,
                        extra_info={"run_dir": os.path.abspath(run_dir),
                                    "config": config.to_dict()})
