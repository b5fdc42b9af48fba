"""Experiment trackers for one training run: Ultralytics' own TensorBoard and MLflow
integrations, switched on for that run only (config `train.loggers`).

Ultralytics decides which integrations a trainer gets from its SETTINGS when the trainer
is built, and `SETTINGS.update()` writes settings.json (the user's, unless
YOLO_CONFIG_DIR points elsewhere). `tracking()` instead changes the in-memory values only,
for the duration of one `model.train()`, and puts them back on exit: the settings file is
never written. Integrations not listed (including MLflow, which Ultralytics turns on by
default whenever the package is importable) are off for the run, so `loggers: []` logs
nowhere. Each run is tagged with its backend, seed and the attention kernel seen.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from attnbench.errors import UserError

LOG = logging.getLogger(__name__)

#: train.loggers value -> the Python package its Ultralytics integration imports.
LOGGERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
#: Every integration flag in Ultralytics' SETTINGS (ultralytics/utils/callbacks/base.py).
INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
#: Where tags go: the TensorBoard text panel's tag prefix.
TB_PREFIX = "attnbench"


def check_loggers(loggers: Sequence[str]) -> None:
    """Fail in one line, before training, if a listed tracker's package is missing."""
    for name in loggers:
        if name not in LOGGERS:
            raise UserError(
                f"train.loggers lists {name!r}, which is not supported "
                f"(allowed: {', '.join(LOGGERS)})"
            )
        package = LOGGERS[name]
        if importlib.util.find_spec(package) is None:
            raise UserError(
                f"train.loggers lists {name} but the {package} package is not installed: "
                f"pip install {package} (or remove {name} from train.loggers)"
            )


def _value(value: Any) -> Any:
    return value() if callable(value) else value


def _resolved(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tag values as strings; a callable (e.g. the kernel seen, known after profiling)
    is asked each time the tags are written; None is left out."""
    values = {key: _value(value) for key, value in tags.items()}
    return {key: str(value) for key, value in values.items() if value is not None}


class _TagWriter:
    """Model callbacks that write the run's tags into each active tracker."""

    def __init__(self, loggers: Sequence[str], tags: Mapping[str, Any]) -> None:
        self.loggers = list(loggers)
        self.tags = tags

    def __call__(self, trainer: Any) -> None:
        tags = _resolved(self.tags)
        if not tags:
            return
        if "tensorboard" in self.loggers:
            self._tensorboard(trainer, tags)
        if "mlflow" in self.loggers:
            self._mlflow(tags)

    @staticmethod
    def _tensorboard(trainer: Any, tags: dict[str, str]) -> None:
        from ultralytics.utils.callbacks import tensorboard

        writer = getattr(tensorboard, "WRITER", None)
        if writer is None:
            return
        step = int(getattr(trainer, "epoch", 0) or 0)
        table = "| tag | value |\n|---|---|\n" + "".join(
            f"| {key} | {value} |\n" for key, value in tags.items()
        )
        writer.add_text(f"{TB_PREFIX}/tags", table, step)
        for key, value in tags.items():
            writer.add_text(f"{TB_PREFIX}/{key}", value, step)
        writer.flush()

    @staticmethod
    def _mlflow(tags: dict[str, str]) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.set_tags(tags)


@contextlib.contextmanager
def _environ(defaults: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set; restore them on exit."""
    added = [key for key in defaults if key not in os.environ]
    for key in added:
        os.environ[key] = defaults[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def integrations_off() -> Iterator[None]:
    """Within the block, trainers are built with no tracker integration (as `loggers: []`):
    for trainers built directly, not through `model.train()` (attnbench.timing.paired)."""
    from ultralytics.utils import SETTINGS

    saved = {key: SETTINGS[key] for key in INTEGRATIONS if key in SETTINGS}
    dict.update(SETTINGS, dict.fromkeys(saved, False))  # in memory: settings.json is not written
    try:
        yield
    finally:
        dict.update(SETTINGS, saved)


@contextlib.contextmanager
def tracking(
    loggers: Sequence[str],
    model: Any,
    tags: Mapping[str, Any | Callable[[], Any]],
    *,
    experiment: str = "attnbench",
) -> Iterator[None]:
    """Within the block, trainers built by `model.train()` log to exactly `loggers`.

    `model` is the Ultralytics YOLO object (enter before `model.train()`: the trainer
    reads the settings when it is built). `tags` such as backend, seed and kernel seen
    are written when training starts and again when it ends, so a callable value
    computed after the provenance check is there too. MLflow runs go to experiment
    `experiment` and are named `<backend>-seed<seed>` unless MLFLOW_EXPERIMENT_NAME /
    MLFLOW_RUN are set. Everything is restored on exit, also after an error.
    """
    loggers = list(loggers)
    check_loggers(loggers)
    from ultralytics.utils import SETTINGS

    saved = {key: SETTINGS[key] for key in INTEGRATIONS if key in SETTINGS}
    writer = _TagWriter(loggers, tags)
    events = ("on_train_start", "on_train_end")
    names = _resolved({k: tags.get(k) for k in ("backend", "seed")})
    run_name = "-seed".join(names[k] for k in ("backend", "seed") if k in names) or None
    env = {"MLFLOW_EXPERIMENT_NAME": experiment} if "mlflow" in loggers else {}
    if "mlflow" in loggers and run_name:
        env["MLFLOW_RUN"] = run_name
    # dict.update, not SETTINGS.update(): the latter saves settings.json.
    dict.update(SETTINGS, {key: key in loggers for key in saved})
    try:
        _warn_if_switched_off(loggers)
        for event in events:
            model.add_callback(event, writer)
        with _environ(env):
            yield
    finally:
        for event in events:
            with contextlib.suppress(ValueError):
                model.callbacks[event].remove(writer)
        dict.update(SETTINGS, saved)


def _warn_if_switched_off(loggers: Sequence[str]) -> None:
    """Ultralytics drops its TensorBoard callbacks under pytest and in GitHub Actions
    (TESTS_RUNNING): say so instead of logging nowhere in silence."""
    for name in loggers:
        module = importlib.import_module(f"ultralytics.utils.callbacks.{name}")
        if not getattr(module, "callbacks", None):
            LOG.warning(
                "train.loggers: Ultralytics' %s integration is inactive in this process "
                "(its package failed to import, or Ultralytics thinks tests are running: "
                "PYTEST_CURRENT_TEST or GITHUB_ACTIONS is set); this run is not logged there",
                name,
            )
