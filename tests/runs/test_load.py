"""Loading a run folder (npvae_tf/runs/load.py): its parts checked against each other."""

import os

import pytest

from npvae_tf.core.config import Config
from npvae_tf.core.files import write_json
from npvae_tf.runs.layout import MODEL_FILE, TEST_METRICS_FILE, RunError
from npvae_tf.runs.load import load_run

def test_load_run_refuses_a_folder_whose_parts_disagree(tmp_path):
    """config.json of one run with model.keras of another (what two concurrent runs into one
    folder used to leave) is refused, naming each disagreement."""
    from npvae_tf.model.vae import build_model
    from npvae_tf.runs.reference import build_reference_set
    from tests.helpers import synthetic_digits

    images, labels = synthetic_digits(40)
    images = images.reshape(40, -1).astype("float32") / 255
    folder = str(tmp_path / "mixed")
    trained = Config(z_dim=3, hidden=(8,), validation_examples=2)
    model = build_model(trained)
    os.makedirs(folder)
    model.save(os.path.join(folder, MODEL_FILE))
    build_reference_set(model, images, labels).save(folder)
    write_json(os.path.join(folder, TEST_METRICS_FILE), {})
    trained.save(folder)
    assert load_run(folder).config == trained  # consistent: loads
    trained.replace(z_dim=5, seed=2).save(folder)
    with pytest.raises(RunError, match=r"inconsistent run folder: z_dim: config 5, model 3; "
                                       r"seed: config 2, model 0; z_dim: config 5, reference "
                                       r"set 3"):
        load_run(folder)
    trained.replace(model="vae").save(folder)
    with pytest.raises(RunError, match="config says 'vae', model.keras holds NonparametricVAE"):
        load_run(folder)
    trained.save(folder)
    with open(os.path.join(folder, MODEL_FILE), "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(RunError, match="model.keras: cannot load"):
        load_run(folder)
