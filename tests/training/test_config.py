"""TrainConfig: one source of defaults, YAML presets, unknown keys rejected, flags win."""
import argparse

import pytest
import yaml

from gluon_face.training.config import (
    ConfigError,
    TrainConfig,
    add_arguments,
    config_from_args,
    list_presets,
    preset_path,
)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_default_preset_equals_dataclass_defaults():
    assert "default" in list_presets()
    with open(preset_path("default")) as f:
        data = yaml.safe_load(f)
    assert data == TrainConfig().to_dict()
    assert TrainConfig.from_yaml("default") == TrainConfig()


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads(name):
    cfg = TrainConfig.from_yaml(name)
    assert isinstance(cfg, TrainConfig)


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(loss="arcface", margin_m=0.3, lr_steps=[2, 4], model_kwargs={"a": 1})
    path = tmp_path / "c.yaml"
    cfg.to_yaml(str(path))
    assert TrainConfig.from_yaml(str(path)) == cfg


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("lr_step: [3, 5]\n")
    with pytest.raises(ConfigError, match=r"unknown config key.*'lr_step'.*did you mean"):
        TrainConfig.from_yaml(str(path))
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig().replace(batchsize=3)


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": "many"}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"lr_mode": "exp"}, "lr_mode"),
    ({"kvstore": "nccl2"}, "kvstore"),
    ({"image_size": 50}, "multiple of 16"),
    ({"hybridize": "maybe"}, "hybridize"),
    ({"warmup_epochs": 9.0, "epochs": 3}, "warmup_epochs"),
    ({"lr": float("inf")}, "lr must be a finite number"),
    ({"wd": "nan"}, "wd must be a finite number"),
    ({"margin_m": float("-inf")}, "margin_m must be a finite number"),
    ({"lr_steps": [1.0, float("inf")]}, "lr_steps: items must be finite"),
    ({"clip_gradient": -1.0}, "clip_gradient must be > 0"),
    ({"clip_gradient": 0.0}, "clip_gradient must be > 0"),
])
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


def test_yaml_values_are_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1\nlr_steps: 3,5\nhybridize: 'false'\n")
    cfg = TrainConfig.from_yaml(str(path))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.lr_steps == [3.0, 5.0]
    assert cfg.hybridize is False


def test_flags_override_config_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: arcface\nepochs: 9\nlr: 0.5\n")
    cfg = _parse(["--config", str(path), "--lr", "0.2", "--no-hybridize", "--margin-m", "0.4",
                  "--val-targets", "lfw,cfp_fp", "--model-kwargs", "channels=[8,8,8,8,8]"])
    assert cfg.loss == "arcface" and cfg.epochs == 9  # from the file
    assert cfg.lr == 0.2 and cfg.hybridize is False and cfg.margin_m == 0.4  # flags
    assert cfg.val_targets == ["lfw", "cfp_fp"]
    assert cfg.model_kwargs == {"channels": [8, 8, 8, 8, 8]}
    assert cfg.batch_size == TrainConfig().batch_size  # untouched default
    assert _parse([]) == TrainConfig()


def test_network_flag_alone_gives_the_full_width_network():
    # the default job's narrow widths come with its network name, not with model_kwargs,
    # so choosing another network does not silently keep the demo's widths
    cfg = _parse(["--network", "faceresnet50"])
    assert cfg.network == "faceresnet50" and cfg.model_kwargs == {}
    assert TrainConfig().network == "faceresnet10-demo"


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="default"):
        preset_path("no-such-preset")
