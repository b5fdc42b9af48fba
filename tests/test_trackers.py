"""attnbench.train.trackers: Ultralytics' TensorBoard/MLflow integrations for one run only.

Ultralytics switches its TensorBoard callbacks off whenever it thinks tests are running
(PYTEST_CURRENT_TEST, `pytest` imported), so the runs below happen in a child process
without those markers, through Ultralytics' real integration code
(`add_integration_callbacks` and its callback modules) on a small stand-in trainer.
MLflow is a stub module that records its calls (the real package is not installed here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attnbench.errors import UserError
from attnbench.train import trackers

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    out = Path(sys.argv[1])
    loggers = json.loads(sys.argv[2])
    os.environ["YOLO_CONFIG_DIR"] = str(out / "yolo-config")
    os.environ["YOLO_OFFLINE"] = "1"
    import torch
    from ultralytics.utils import SETTINGS, TESTS_RUNNING, IterableSimpleNamespace
    from ultralytics.utils.callbacks import base
    from attnbench.train import trackers

    assert not TESTS_RUNNING
    settings_file = Path(SETTINGS.file)
    before = settings_file.read_bytes()
    flags = {k: SETTINGS[k] for k in trackers.INTEGRATIONS}


    class Model:  # what tracking() uses of ultralytics.YOLO
        def __init__(self):
            self.callbacks = base.get_default_callbacks()

        def add_callback(self, event, func):
            self.callbacks[event].append(func)


    class DetectionTrainer:  # the attributes Ultralytics' integrations read
        def __init__(self, callbacks):
            self.callbacks = base.get_default_callbacks()
            for event, funcs in callbacks.items():
                self.callbacks[event] = list(funcs)
            base.add_integration_callbacks(self)
            self.save_dir = out / "run"
            (self.save_dir / "weights").mkdir(parents=True, exist_ok=True)
            self.best = self.save_dir / "weights" / "best.pt"
            self.args = IterableSimpleNamespace(imgsz=32, project=str(out), name="ultralytics")
            self.data = {"channels": 3}
            self.device = torch.device("cpu")
            self.model = torch.nn.Conv2d(3, 4, 3)
            self.epoch = 0
            self.tloss = torch.tensor([0.5, 0.25, 0.125])
            self.lr = {"lr/pg0": 0.01}
            self.metrics = {"metrics/mAP50(B)": 0.5}

        def label_loss_items(self, loss, prefix="train"):
            names = ("box_loss", "cls_loss", "dfl_loss")
            return {f"{prefix}/{n}": float(v) for n, v in zip(names, loss)}

        def run(self, event):
            for func in self.callbacks[event]:
                func(self)


    model = Model()
    state = {"kernel": None}
    tags = {"backend": "sdpa_cudnn", "seed": 3, "kernel_seen": lambda: state["kernel"]}
    with trackers.tracking(loggers, model, tags):
        during = {k: SETTINGS[k] for k in trackers.INTEGRATIONS}
        env = {k: os.environ.get(k) for k in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN")}
        trainer = DetectionTrainer(model.callbacks)
        for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"):
            trainer.run(event)
        state["kernel"] = "cudnn"  # known only after the provenance check
        for epoch in range(2):
            trainer.epoch = epoch
            trainer.run("on_train_epoch_end")
            trainer.run("on_fit_epoch_end")
        trainer.run("on_train_end")
        trainer.run("teardown")
    report = {
        "settings_file_unchanged": settings_file.read_bytes() == before,
        "restored": {k: SETTINGS[k] for k in trackers.INTEGRATIONS} == flags,
        "during": during,
        "env": env,
        "env_after": {k: os.environ.get(k) for k in ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN")},
        "model_callbacks_clean": all(
            not isinstance(f, trackers._TagWriter) for fs in model.callbacks.values() for f in fs
        ),
        "modules": sorted(
            {f.__module__ for fs in trainer.callbacks.values() for f in fs if hasattr(f, "__module__")}
        ),
    }
    (out / "report.json").write_text(json.dumps(report))
    """
)

MLFLOW_STUB = textwrap.dedent(
    """
    # A stand-in for the mlflow package: records every call the integration makes.
    import json, os
    from types import SimpleNamespace

    __version__ = "0.0-stub"
    _active = None


    def _log(*call):
        with open(os.environ["MLFLOW_STUB_LOG"], "a") as fh:
            fh.write(json.dumps(call, default=str) + "\\n")


    def set_experiment(name):
        _log("set_experiment", name)


    def autolog(*a, **k):
        _log("autolog")


    def active_run():
        return _active


    def start_run(run_name=None):
        global _active
        _active = SimpleNamespace(info=SimpleNamespace(run_id="stub-run"))
        _log("start_run", run_name)
        return _active


    def end_run(status="FINISHED"):
        global _active
        _active = None
        _log("end_run", status)


    def log_params(params):
        _log("log_params", sorted(params))


    def log_metrics(metrics, step=None):
        _log("log_metrics", metrics, step)


    def set_tags(tags):
        _log("set_tags", tags)


    def log_artifact(path):
        _log("log_artifact", path)


    def get_tracking_uri():
        return "stub://"
    """
)


def _run_child(tmp_path: Path, loggers: list[str], with_mlflow: bool = False) -> dict:
    """Run CHILD in a process that Ultralytics does not take for a test run."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS")
    }
    env.pop("MLFLOW_RUN", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    if with_mlflow:
        stub = tmp_path / "stub"
        stub.mkdir()
        (stub / "mlflow.py").write_text(MLFLOW_STUB)
        env["PYTHONPATH"] = os.pathsep.join([str(stub), env.get("PYTHONPATH", "")])
        env["MLFLOW_STUB_LOG"] = str(tmp_path / "mlflow.log")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), json.dumps(loggers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((tmp_path / "report.json").read_text())


def _mlflow_calls(tmp_path: Path) -> list[list]:
    log = tmp_path / "mlflow.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_tensorboard_gets_scalars_and_tags_and_settings_are_untouched(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = _run_child(tmp_path, ["tensorboard"])
    assert report["settings_file_unchanged"] and report["restored"]
    assert report["during"]["tensorboard"] is True
    assert not any(v for k, v in report["during"].items() if k != "tensorboard")
    assert report["model_callbacks_clean"]
    assert "ultralytics.utils.callbacks.tensorboard" in report["modules"]

    events = list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert events, list((tmp_path / "run").iterdir())
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    assert {"train/box_loss", "lr/pg0", "metrics/mAP50(B)"} <= set(acc.Tags()["scalars"])
    texts = {
        tag.removesuffix("/text_summary"): acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
        for tag in acc.Tags()["tensors"]
    }
    assert texts["attnbench/backend"] == "sdpa_cudnn"
    assert texts["attnbench/seed"] == "3"
    assert texts["attnbench/kernel_seen"] == "cudnn"  # written at train end
    assert "| kernel_seen | cudnn |" in texts["attnbench/tags"]


def test_mlflow_run_is_named_and_tagged(tmp_path: Path) -> None:
    report = _run_child(tmp_path, ["mlflow"], with_mlflow=True)
    assert report["settings_file_unchanged"] and report["restored"]
    assert report["env"] == {
        "MLFLOW_EXPERIMENT_NAME": "attnbench",
        "MLFLOW_RUN": "sdpa_cudnn-seed3",
    }
    assert report["env_after"] == {"MLFLOW_EXPERIMENT_NAME": None, "MLFLOW_RUN": None}
    calls = _mlflow_calls(tmp_path)
    names = [c[0] for c in calls]
    assert ["set_experiment", "attnbench"] in calls
    assert ["start_run", "sdpa_cudnn-seed3"] in calls
    tags = [c[1] for c in calls if c[0] == "set_tags"]
    assert tags[0] == {"backend": "sdpa_cudnn", "seed": "3"}  # at train start
    assert tags[-1] == {"backend": "sdpa_cudnn", "seed": "3", "kernel_seen": "cudnn"}
    assert "log_metrics" in names and names[-1] == "end_run"
    assert names.index("set_tags", names.index("log_metrics")) < names.index("end_run")


def test_no_loggers_means_no_tracker_even_where_ultralytics_defaults_one_on(tmp_path: Path) -> None:
    """Ultralytics enables MLflow by default whenever mlflow imports; `loggers: []` does not."""
    report = _run_child(tmp_path, [], with_mlflow=True)
    assert report["restored"] and report["settings_file_unchanged"]
    assert not any(report["during"].values())
    assert not any("mlflow" in m or "tensorboard" in m for m in report["modules"])
    assert _mlflow_calls(tmp_path) == []
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_missing_tracker_package_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real(name, *a),
    )
    with pytest.raises(UserError) as info:
        trackers.check_loggers(["mlflow"])
    assert str(info.value) == (
        "train.loggers lists mlflow but the mlflow package is not installed: "
        "pip install mlflow (or remove mlflow from train.loggers)"
    )
    with pytest.raises(UserError, match="not supported"):
        trackers.check_loggers(["wandb"])


def test_settings_are_restored_after_an_error_and_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from ultralytics.utils import SETTINGS

    before = {k: SETTINGS[k] for k in trackers.INTEGRATIONS}
    saved_file = Path(SETTINGS.file).read_bytes() if Path(SETTINGS.file).exists() else None

    class Model:
        def __init__(self):
            self.callbacks = {"on_train_start": [], "on_train_end": []}

        def add_callback(self, event, func):
            self.callbacks[event].append(func)

    model = Model()
    with pytest.raises(RuntimeError, match="boom"), trackers.tracking(["tensorboard"], model, {}):
        assert SETTINGS["tensorboard"] is True
        raise RuntimeError("boom")
    assert {k: SETTINGS[k] for k in trackers.INTEGRATIONS} == before
    assert model.callbacks == {"on_train_start": [], "on_train_end": []}
    after = Path(SETTINGS.file).read_bytes() if Path(SETTINGS.file).exists() else None
    assert after == saved_file


def test_schema_offers_the_loggers_the_module_supports() -> None:
    from attnbench import config

    schema = config.load_schema()["properties"]["train"]["properties"]["loggers"]
    assert schema["items"]["enum"] == list(trackers.LOGGERS)
    assert config.validate({})["train"]["loggers"] == []
