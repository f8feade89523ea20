import json

import pytest

from npvae_tf.core.config import Config, ConfigError


def test_json_round_trip(tmp_path):
    config = Config(model="vae", z_dim=20, hidden=(64, 32), train_examples=100, binarize=True)
    config.save(str(tmp_path))
    assert Config.load(str(tmp_path)) == config
    assert json.loads((tmp_path / "config.json").read_text())["hidden"] == [64, 32]


def test_config_json_names_the_scheme_and_the_knobs_decide_it(tmp_path):
    from npvae_tf.core.objective import SCHEMES

    Config(**SCHEMES["neighbour"].changes).save(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["scheme_name"] == "neighbour"
    assert Config.load(str(tmp_path)).scheme_name == "neighbour"
    Config(match_weight=0.5).save(str(tmp_path))  # a combination no scheme names
    assert "scheme_name" not in json.loads((tmp_path / "config.json").read_text())
    # A hand-edited name does not override the knobs.
    values = {**Config(model="vae").to_dict(), "scheme_name": "paper"}
    assert Config.from_dict(values).scheme_name == "vae"


def test_frozen():
    with pytest.raises(Exception):
        Config().z_dim = 3


def test_defaults_are_the_papers():
    c = Config()
    assert (c.hidden, c.batch_size, c.learning_rate, c.dropout, c.x_dim) == ((500, 500), 128, 1e-3, 0.1, 2)
    assert c.match_weight == 1.0 and c.validation_examples == 5000 and c.image_dim == 784


@pytest.mark.parametrize("changes,message", [
    (dict(model="gan"), "model"), (dict(z_dim=0), "z_dim"), (dict(x_dim=-1), "x_dim"),
    (dict(batch_size=1), "batch_size"), (dict(hidden=()), "hidden"), (dict(hidden=(5, 0)), "hidden"),
    (dict(dropout=1.0), "dropout"), (dict(learning_rate=0), "learning_rate"),
    (dict(epochs=0), "epochs"), (dict(match_weight=-1), "match_weight"),
    (dict(train_examples=1), "train_examples"), (dict(initial_lengthscale=0), "initial_lengthscale"),
])
def test_invalid_values_are_rejected(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**changes)


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        Config.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.load(str(tmp_path))
    (tmp_path / "config.json").write_text('{"z_dim": 3, "colour": "red"}')
    with pytest.raises(ConfigError, match="unknown config keys"):
        Config.load(str(tmp_path))


def test_every_config_field_has_a_documented_flag_with_its_default():
    import argparse
    import dataclasses

    from npvae_tf.cli import common as cli

    parser = argparse.ArgumentParser()
    cli.add_config_flags(parser)
    actions = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(Config):
        if field.metadata.get("flag") is False:
            assert field.name not in actions
            continue
        assert field.metadata["help"], f"Config.{field.name}: no help for its flag"
        flag = field.metadata.get("flag") or field.name
        assert actions[field.name].option_strings == [f"--{flag}"]
    assert actions["learning_rate"].option_strings == ["--lr"]
    assert cli.config_from_args(parser, parser.parse_args([])) == Config()
    args = parser.parse_args(["--lr", "0.01", "--hidden", "4", "5", "--binarize"])
    assert cli.config_from_args(parser, args) == Config(learning_rate=0.01, hidden=(4, 5),
                                                        binarize=True)


def test_a_retired_option_at_its_default_loads_and_one_that_was_used_is_refused(tmp_path):
    """config.json files written before ``x_path_hold_decoder`` was retired hold it."""
    import json

    values = {**Config(z_dim=4).to_dict(), "x_path_hold_decoder": False}
    assert Config.from_dict(values) == Config(z_dim=4)
    (tmp_path / "config.json").write_text(json.dumps({**values, "x_path_hold_decoder": True}))
    with pytest.raises(ConfigError, match="x_path_hold_decoder is an option this version no "
                                          "longer has") as info:
        Config.load(str(tmp_path))
    assert "\n" not in str(info.value)
