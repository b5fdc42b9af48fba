"""Narrow params: each consumer of the train section gets a frozen object of its own keys.

The rule scripts build these objects with `from_mapping`, which refuses a wider mapping, so
a rule that passed its script more than it uses fails its job (tests/test_workflow.py and
tests/test_sweep_workflow.py run every such rule); the sweep workflow test also shows
that a study-only setting reruns no sweep job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from attnbench import config as cfg
from attnbench.timing import plan as timing_plan
from attnbench.train import ultralytics_run
from attnbench.train.settings import (
    NOT_SETTINGS,
    LoopArgs,
    ProbeSettings,
    StepSettings,
    TimingWindow,
    TrainSettings,
    pick,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "attnbench" / "schemas" / "config.schema.yaml"


def _train() -> dict:
    config = cfg.load_file(REPO / "config.yaml")
    return cfg.effective_train(config, cfg.DatasetChoice("local", "x", "test"))


def _schema_train() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]


def test_every_train_key_has_a_consumer_or_is_scheduling_or_the_device():
    """Narrowing drops nothing silently: a new train key needs a home here first."""
    keys = set(_schema_train())
    assert keys == set(TrainSettings.KEYS) | set(NOT_SETTINGS)
    assert not set(TrainSettings.KEYS) & set(NOT_SETTINGS)
    assert set(_schema_train()["timing"]["properties"]) == {
        f.name for f in dataclasses.fields(TimingWindow)
    }


def test_the_objects_nest_from_narrow_to_wide():
    assert set(LoopArgs.KEYS) < set(ProbeSettings.KEYS) < set(StepSettings.KEYS)
    assert set(StepSettings.KEYS) < set(TrainSettings.KEYS)
    assert "provenance_steps" not in ProbeSettings.KEYS  # the search proves no kernel
    assert "epochs" not in StepSettings.KEYS and "timing" not in StepSettings.KEYS


def test_the_default_section_round_trips():
    train = _train()
    settings = TrainSettings.from_section(train)
    assert settings.step.loop.args() == {k: train[k] for k in LoopArgs.KEYS}
    assert (settings.step.cast, settings.step.provenance_steps) == (
        train["cast"],
        train["provenance_steps"],
    )
    assert (settings.model, settings.epochs, settings.batch, settings.imgsz) == (
        train["model"],
        train["epochs"],
        train["batch"],
        train["imgsz"],
    )
    assert settings.timing == TimingWindow(**train["timing"])
    assert settings.loggers == tuple(train["loggers"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", [LoopArgs, ProbeSettings, StepSettings, TrainSettings])
def test_a_wider_mapping_is_refused_naming_the_extra_key(cls):
    wide = {**pick(_train(), cls.KEYS), "device": "cpu"}
    with pytest.raises(ValueError, match=rf"{cls.__name__} takes exactly .*not used by it: device"):
        cls.from_mapping(wide)


def test_a_missing_key_is_named():
    section = pick(_train(), StepSettings.KEYS)
    del section["cast"]
    with pytest.raises(ValueError, match=r"StepSettings .*missing cast"):
        StepSettings.from_mapping(section)
    with pytest.raises(KeyError, match="the train settings lack lr0"):
        pick({"amp": True}, ("amp", "lr0"))


def test_the_paired_timing_params_are_the_step_settings():
    train = _train()
    assert timing_plan.step_train(train) == pick(train, StepSettings.KEYS)
    StepSettings.from_mapping(timing_plan.step_train(train))


def test_train_args_take_the_loop_arguments_only():
    loop = LoopArgs.from_mapping(pick(_train(), LoopArgs.KEYS))
    args = ultralytics_run.train_args("d.yaml", loop, torch.device("cpu"), "/w", epochs=3)
    assert {k: args[k] for k in LoopArgs.KEYS} == loop.args()
    assert args["device"] == "cpu" and args["epochs"] == 3 and args["data"] == "d.yaml"
