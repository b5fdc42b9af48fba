"""Config validation: defaults filled, one-line errors naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench import backends, config

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
    with pytest.raises(config.ConfigError) as info:
        config.validate(patch)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_backend_lists_the_allowed_values():
    with pytest.raises(config.ConfigError, match="allowed: eager, sdpa"):
        config.validate({"backends": ["fast"]})


def test_missing_local_path_is_rejected(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(config.ConfigError, match="dataset.local.*does not exist"):
        config.validate({"dataset": {"source": "local", "local": str(missing)}})


def test_baseline_must_be_a_configured_backend():
    with pytest.raises(config.ConfigError, match="analysis.baseline"):
        config.validate({"backends": ["sdpa"], "analysis": {"baseline": "eager"}})


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("backends: [eager\nseeds: [0]\n")
    with pytest.raises(config.ConfigError, match=r"not valid YAML at line \d+"):
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
