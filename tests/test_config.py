"""Config validation: defaults filled, one-line errors naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench import config
from attnbench.backends import registry as backends
from attnbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_valid_and_describes_the_seed_study():
    cfg = config.load_file(ROOT / "config.yaml")
    train = cfg["train"]
    assert (train["epochs"], train["batch"], train["optimizer"], train["lr0"]) == (
        20,
        8,
        "AdamW",
        0.001,
    )
    assert train["model"] == "yolo12n.yaml"
    assert len(cfg["seeds"]) >= 3
    rf = cfg["dataset"]["roboflow"]
    assert (rf["workspace"], rf["project"], rf["version"], rf["format"]) == (
        "augmented-startups", "weeds-nxe1w", 3, "yolov11",
    )  # fmt: skip


def test_defaults_are_filled_for_an_empty_config():
    cfg = config.validate({})
    assert cfg["dataset"]["source"] == "auto"
    assert cfg["analysis"]["baseline"] == "eager"
    assert cfg["analysis"]["tost_margin"] == 0.01


def test_schema_backends_match_the_registry():
    enum = config.load_schema()["properties"]["backends"]["items"]["enum"]
    assert enum == list(backends.REGISTRY)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"backends": ["eager", "nope"]}, "backends.1"),
        ({"backends": []}, "backends"),
        ({"seeds": ["a"]}, "seeds.0"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"batch": -1}}, "train.batch"),
        ({"train": {"imgsz": 100}}, "train.imgsz"),
        ({"dataset": {"source": "ftp"}}, "dataset.source"),
        ({"train": {"epoch": 3}}, "train.epoch"),
    ],
)
def test_invalid_values_name_the_key_in_one_line(patch, expected):
    with pytest.raises(ConfigError) as info:
        config.validate(patch)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_backend_lists_the_allowed_values():
    with pytest.raises(ConfigError, match="allowed: eager, sdpa"):
        config.validate({"backends": ["fast"]})


def test_missing_local_path_is_rejected(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="dataset.local.*does not exist"):
        config.validate({"dataset": {"source": "local", "local": str(missing)}})


def test_baseline_must_be_a_configured_backend():
    with pytest.raises(ConfigError, match="analysis.baseline"):
        config.validate({"backends": ["sdpa"], "analysis": {"baseline": "eager"}})


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("backends: [eager\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        config.load_file(path)


def test_auto_source_falls_back_to_demo_without_a_key():
    cfg = config.validate({})
    choice = config.resolve_dataset(cfg, environ={})
    assert (choice.source, choice.name) == ("demo", "demo")
    assert "ROBOFLOW_API_KEY is not set" in choice.reason
    with_key = config.resolve_dataset(cfg, environ={"ROBOFLOW_API_KEY": "k"})
    assert with_key.source == "roboflow"
    assert with_key.name == "roboflow-augmented-startups-weeds-nxe1w-v3"


def test_demo_overrides_training_scale_only_on_the_demo():
    cfg = config.validate({})
    demo = config.effective_train(cfg, config.resolve_dataset(cfg, environ={}))
    assert demo["epochs"] == cfg["dataset"]["demo"]["train"]["epochs"]
    real = config.effective_train(
        cfg, config.resolve_dataset(cfg, environ={"ROBOFLOW_API_KEY": "k"})
    )
    assert real["epochs"] == 20


def test_canonical_params_are_stable():
    assert config.canonical({"b": 1, "a": [2, 3]}) == config.canonical({"a": [2, 3], "b": 1})


# --------------------------------------------------------------------------- #
# `--config` overrides: Snakemake hands list items and nested values over as strings.


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ({"seeds": ["0", "1", "2", "3", "4"]}, ("seeds",), [0, 1, 2, 3, 4]),
        ({"seeds": "[0, 1]"}, ("seeds",), [0, 1]),
        ({"train": {"epochs": "3"}}, ("train", "epochs"), 3),
        ({"train": "{epochs: 3, amp: false}"}, ("train", "amp"), False),
        ({"train": {"amp": "False"}}, ("train", "amp"), False),
        ({"train": {"amp": "true"}}, ("train", "amp"), True),
        ({"train": {"lr0": "1e-3"}}, ("train", "lr0"), 0.001),
        ({"train": {"lr0": "2"}}, ("train", "lr0"), 2),
        ({"train": {"cache": "false"}}, ("train", "cache"), False),
        ({"train": {"cache": "ram"}}, ("train", "cache"), "ram"),
        ({"train": {"device": "0"}}, ("train", "device"), "0"),  # a string in the schema
        ({"flash_attn": {"max_jobs": "8"}}, ("flash_attn", "max_jobs"), 8),
        ({"flash_attn": {"max_jobs": "auto"}}, ("flash_attn", "max_jobs"), "auto"),
        ({"flash_attn": {"version": "2.8.3"}}, ("flash_attn", "version"), "2.8.3"),
        (
            {"dataset": {"demo": {"train": {"imgsz": "64"}}}},
            ("dataset", "demo", "train", "imgsz"),
            64,
        ),
        ({"kernels": {"seq_lens": ["64", "256"]}}, ("kernels", "seq_lens"), [64, 256]),
        ({"report": {"title": "2026"}}, ("report", "title"), "2026"),
    ],
)
def test_command_line_strings_are_coerced_to_the_schema_type(override, path, expected):
    value = config.validate(override)
    for key in path:
        value = value[key]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"seeds": ["0", "a"]}, 'config value seeds.1 = "a" is invalid'),
        ({"seeds": ["1.0"]}, 'config value seeds.0 = "1.0" is invalid'),  # not an integer
        ({"seeds": "0"}, 'config value seeds = "0" is invalid'),  # a list is written [0]
        ({"train": {"epochs": "3.5"}}, 'config value train.epochs = "3.5" is invalid'),
        ({"train": {"epochs": "0"}}, "config value train.epochs = 0 is invalid"),  # minimum
        ({"train": {"amp": "yes"}}, 'config value train.amp = "yes" is invalid'),
        ({"train": {"cache": "true"}}, "config value train.cache = "),
        ({"train": "{epochs: 3"}, 'config value train = "{epochs: 3" is invalid'),
        ({"train": {"optimizer": "adamw"}}, "allowed: SGD, Adam, AdamW"),
    ],
)
def test_uncoercible_strings_fail_in_one_line_naming_key_and_value(override, message):
    with pytest.raises(ConfigError) as info:
        config.validate(override)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_file_value_of_the_right_type_is_left_alone():
    assert config.coerce({"seeds": [0, 1]}, config.load_schema()) == {"seeds": [0, 1]}
    assert config.coerce({"unknown": "3"}, config.load_schema()) == {"unknown": "3"}


# --------------------------------------------------------------------------- #
# --use-conda without conda


def test_use_conda_without_conda_names_what_is_missing_and_the_pip_way():
    def which(_name):
        return None

    message = config.missing_conda({"conda"}, which=which)
    assert message is not None and "\n" not in message
    assert "`conda` command, which is not on PATH" in message
    assert config.PIP_ALTERNATIVE in message


def test_mamba_alone_is_named_as_not_enough():
    message = config.missing_conda({"conda"}, which=lambda n: "/x/mamba" if n == "mamba" else None)
    assert "mamba is, but Snakemake 9 calls conda itself" in message


def test_conda_check_passes_with_conda_or_without_use_conda():
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    assert config.missing_conda({DeploymentMethod.CONDA}, which=lambda n: f"/x/{n}") is None
    assert config.missing_conda(frozenset(), which=lambda n: None) is None
    assert config.missing_conda({DeploymentMethod.APPTAINER}, which=lambda n: None) is None
    assert config.missing_conda({DeploymentMethod.CONDA}, which=lambda n: None) is not None


def test_keyed_params_name_each_setting_and_come_back_whole():
    """One param per setting keeps a dry run's reason line to what changed; each value
    carries its key, so Snakemake (which compares params as a set of values) still sees
    a swap of two settings."""
    from types import SimpleNamespace

    from snakemake.iocontainers import Namedlist

    from attnbench.env.scriptutil import settings_param

    before = config.keyed("train", {"imgsz": 64, "batch": 32, "amp": True})
    assert before == {
        "train__imgsz": '{"imgsz":64}',
        "train__batch": '{"batch":32}',
        "train__amp": '{"amp":true}',
    }
    swapped = config.keyed("train", {"imgsz": 32, "batch": 64, "amp": True})
    assert set(before.values()) != set(swapped.values())
    params = Namedlist(fromdict={**before, "device": "cpu"})
    assert settings_param(SimpleNamespace(params=params), "train") == {
        "imgsz": 64, "batch": 32, "amp": True,
    }  # fmt: skip
    whole = Namedlist(fromdict={"train": config.canonical({"epochs": 3})})
    assert settings_param(SimpleNamespace(params=whole), "train") == {"epochs": 3}
    assert len(config.digest({"a": 1})) == 16
    assert config.digest({"a": 1, "b": 2}) == config.digest({"b": 2, "a": 1})
