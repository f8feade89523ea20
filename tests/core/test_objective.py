"""The objective's knobs (npvae_tf/core/objective.py): one declaration that Config, the model,
the flags and the scheme names all read."""

import dataclasses

import pytest

from npvae_tf.core.config import Config, ConfigError
from npvae_tf.core.objective import (OBJECTIVE_FIELDS, SCHEMES, Objective, objective_from)


def test_config_inherits_every_knob_with_its_help_and_default():
    config_fields = {f.name: f for f in dataclasses.fields(Config)}
    for field in dataclasses.fields(Objective):
        assert config_fields[field.name].default == field.default
        assert field.metadata["help"], field.name
    assert Config().objective() == Objective()


@pytest.mark.parametrize("changes, label", [
    ({}, ""),
    (dict(match_weight=0.0, x_path_weight=1.0, x_path_decoder="separate",
          x_path_stop_gradient=True), "match 0, X path 1, own decoder, E[z] held"),
    (dict(match_weight=0.0, neighbour_weight=1.0, landmark_weight=1.0,
          x_path_decoder="separate"), "neighbour 1, landmarks 1, match 0, own decoder fitted after"),
])
def test_the_label_says_what_differs_from_the_paper(changes, label):
    assert Objective(**changes).objective_label() == label
    assert Config(**changes).scheme == (f"npVAE: {label}" if label else "npVAE")


def test_every_named_scheme_is_a_valid_config_with_a_distinct_label():
    labels = {name: Config(**s.changes).scheme for name, s in SCHEMES.items()}
    assert labels["vae"] == "VAE" and labels["paper"] == "npVAE"
    assert len(set(labels.values())) == len(labels)


def test_the_model_records_only_the_knobs_it_reads():
    knobs = Objective().model_knobs()
    assert "x_path_decoder_epochs" not in knobs and "n_neighbors" not in knobs
    assert set(knobs) < set(OBJECTIVE_FIELDS) and "match_weight" in knobs


def test_objective_from_splits_knobs_and_handles_retired_ones():
    objective, rest = objective_from({"match_weight": 0.5, "z_dim": 3,
                                      "x_path_hold_decoder": False}, "model.keras")
    assert objective == Objective(match_weight=0.5) and rest == {"z_dim": 3}
    with pytest.raises(ValueError, match="model.keras: uses x_path_hold_decoder"):
        objective_from({"x_path_hold_decoder": True}, "model.keras")


@pytest.mark.parametrize("changes, message", [
    (dict(match_weight=-1.0), "match_weight must be >= 0"),
    (dict(x_path_decoder="mine"), "x_path_decoder must be one of"),
    (dict(model="vae", match_weight=0.0), "apply to model 'npvae' only"),
    (dict(model="vae", landmark_weight=1.0), "landmark_weight .* applies to model 'npvae' only"),
])
def test_bad_knobs_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        Config(**changes)
    assert "\n" not in str(info.value)


def test_the_default_grid_is_vae_paper_and_the_recommended_scheme():
    from npvae_tf.core.config import Config
    from npvae_tf.core.objective import DEFAULT_SCHEMES, RECOMMENDED

    assert DEFAULT_SCHEMES == ("vae", "paper", RECOMMENDED) and RECOMMENDED == "neighbour"
    assert not any(SCHEMES[name].superseded for name in DEFAULT_SCHEMES)
    assert all(SCHEMES[name].z_dims == (2, 20, 500) for name in DEFAULT_SCHEMES)
    assert {name for name, s in SCHEMES.items() if s.superseded} == \
        {"xpath", "umap", "umap-landmark", "umap-own"}
    # What the recommended scheme serves: neighbour placement and a decoder of its own,
    # fitted after training (the formerly named umap-landmark-own).
    neighbour = Config(**SCHEMES[RECOMMENDED].changes)
    assert neighbour.placement == "neighbours" and neighbour.fits_x_path_decoder
    assert Config(**SCHEMES["paper"].changes).placement == "encoder"
    assert Config(model="npvae", match_weight=0.0, neighbour_weight=1.0, landmark_weight=1.0,
                  x_path_decoder="separate").scheme_name == RECOMMENDED
