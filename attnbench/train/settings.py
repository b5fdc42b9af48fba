"""The training settings as frozen objects, one per consumer, each holding only its fields.

The config's `train` section is one flat mapping; the code that uses it is not one
consumer. A rule passes its script only the keys of the object that script builds
(`pick`), and each function down the chain gets the object, or the fields, it reads:

- `LoopArgs`: the Ultralytics train() arguments every run here shares
  (`ultralytics_run.train_args`);
- `StepSettings`: what one training step depends on, as a sweep point or a paired-timing
  block runs it: the loop's arguments, the cast and the provenance steps;
- `ProbeSettings`: the largest-batch search's: the loop's arguments and the cast;
- `TrainSettings`: a study run (`training.train_one`): the step, the model, its length and
  size, what to do when the backend cannot run, the trackers and the timing window;
- `TimingWindow`: the recorder's warm-up and profiled iterations.

The section's other keys are scheduling (`jobs_per_gpu`: a resource, never a param) and
the device (each GPU rule's own `device` param). tests/test_train_settings.py checks that
every key of the schema's train section has a consumer here or is one of those two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# The train keys no settings object holds: scheduling and the device (see the docstring).
NOT_SETTINGS = ("jobs_per_gpu", "device")


def pick(section: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """`section` cut to `keys`, for a rule's params; a missing key is named."""
    if missing := [k for k in keys if k not in section]:
        raise KeyError(f"the train settings lack {', '.join(missing)}")
    return {k: section[k] for k in keys}


def _exactly(section: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    """A settings object is built from its keys, no more: a wider mapping is a wide param."""
    missing = [k for k in keys if k not in section]
    extra = sorted(set(section) - set(keys))
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"not used by it: {', '.join(extra)}"] if extra else []
        raise ValueError(
            f"{what} takes exactly {', '.join(keys)} ({'; '.join(parts)}): "
            f"pass settings.pick(train, {what}.KEYS)"
        )


@dataclass(frozen=True)
class TimingWindow:
    """Iterations left out at each epoch's start, and iterations profiled."""

    warmup_iters: int
    profile_iters: int

    @classmethod
    def from_mapping(cls, timing: Mapping[str, Any]) -> TimingWindow:
        _exactly(timing, ("warmup_iters", "profile_iters"), "TimingWindow")
        return cls(int(timing["warmup_iters"]), int(timing["profile_iters"]))


@dataclass(frozen=True)
class LoopArgs:
    """The Ultralytics train() arguments every run shares (ultralytics_run.train_args)."""

    optimizer: str
    lr0: float
    amp: bool
    workers: int
    cache: bool | str

    KEYS: ClassVar[tuple[str, ...]] = ("optimizer", "lr0", "amp", "workers", "cache")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> LoopArgs:
        _exactly(section, cls.KEYS, "LoopArgs")
        return cls(**pick(section, cls.KEYS))

    def args(self) -> dict[str, Any]:
        """As train() keyword arguments."""
        return {k: getattr(self, k) for k in self.KEYS}


@dataclass(frozen=True)
class StepSettings:
    """What one training step depends on: a sweep point's and a paired timing's train."""

    loop: LoopArgs
    cast: str
    provenance_steps: int

    KEYS: ClassVar[tuple[str, ...]] = (*LoopArgs.KEYS, "cast", "provenance_steps")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> StepSettings:
        _exactly(section, cls.KEYS, "StepSettings")
        loop = LoopArgs.from_mapping(pick(section, LoopArgs.KEYS))
        return cls(loop, str(section["cast"]), int(section["provenance_steps"]))


@dataclass(frozen=True)
class ProbeSettings:
    """The largest-batch search's train (attnbench.sweep.max_batch): the loop's arguments
    and the cast; it proves no kernel, so it takes no provenance steps."""

    loop: LoopArgs
    cast: str

    KEYS: ClassVar[tuple[str, ...]] = (*LoopArgs.KEYS, "cast")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> ProbeSettings:
        _exactly(section, cls.KEYS, "ProbeSettings")
        return cls(LoopArgs.from_mapping(pick(section, LoopArgs.KEYS)), str(section["cast"]))


@dataclass(frozen=True)
class TrainSettings:
    """One study run's settings (training.train_one)."""

    step: StepSettings
    model: str
    epochs: int
    batch: int
    imgsz: int
    on_unavailable: str
    loggers: tuple[str, ...]
    timing: TimingWindow

    KEYS: ClassVar[tuple[str, ...]] = (
        *StepSettings.KEYS, "model", "epochs", "batch", "imgsz", "on_unavailable", "loggers",
        "timing",
    )  # fmt: skip

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> TrainSettings:
        _exactly(section, cls.KEYS, "TrainSettings")
        return cls(
            step=StepSettings.from_mapping(pick(section, StepSettings.KEYS)),
            model=str(section["model"]),
            epochs=int(section["epochs"]),
            batch=int(section["batch"]),
            imgsz=int(section["imgsz"]),
            on_unavailable=str(section["on_unavailable"]),
            loggers=tuple(section["loggers"]),
            timing=TimingWindow.from_mapping(section["timing"]),
        )

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> TrainSettings:
        """From a whole effective train section (benchmarks, tests): its keys cut first."""
        return cls.from_mapping(pick(section, cls.KEYS))
