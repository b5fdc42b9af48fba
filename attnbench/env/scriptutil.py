"""What every Snakemake script shares: logging into the rule's log, one-line errors,
and for GPU rules one entry (`gpu_job`) that sets up the job in the right order.

Light scripts import this module: torch and the GPU modules are imported lazily.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.errors import UserError

if TYPE_CHECKING:
    import torch

    from attnbench.env.gpuslots import Slot

LOG = logging.getLogger("attnbench")


@contextlib.contextmanager
def rule_logging(snakemake: Any) -> Iterator[logging.Logger]:
    """Send attnbench's log to the rule's `log:` file and stderr; log any traceback.

    A UserError ends the job with its one-line message; anything else keeps its
    full traceback in the log, then fails the job.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_files = list(getattr(snakemake, "log", []) or [])
    if log_files:
        Path(log_files[0]).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_files[0], mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield LOG
    except UserError as exc:
        LOG.error("%s", exc)
        raise SystemExit(f"Error: {exc}") from None
    except BaseException:
        LOG.error("job failed:\n%s", traceback.format_exc())
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()


def json_params(snakemake: Any, *names: str) -> list[Any]:
    """The rule's params `names`, decoded: rules pass config sections as JSON text."""
    return [json.loads(getattr(snakemake.params, name)) for name in names]


def settings_param(snakemake: Any, name: str) -> dict[str, Any]:
    """A settings mapping from the rule's params: one JSON param `name`, or one param per
    key (`**cfg.keyed(name, settings)`, named `<name>__<key>`) gathered into one again."""
    whole = snakemake.params.get(name)
    if whole is not None:
        return json.loads(whole)
    prefix = f"{name}__"
    out: dict[str, Any] = {}
    for param, value in snakemake.params.items():
        if param.startswith(prefix):
            out.update(json.loads(value))
    return out


@dataclass(frozen=True)
class GpuJob:
    """What `gpu_job` set up: the log, the device, the GPU slot, the flash-attn status."""

    log: logging.Logger
    device: torch.device
    slot: Slot
    flash: dict[str, Any] | None  # flashbuild.activate's status; None without a flash_attn input


@contextlib.contextmanager
def gpu_job(snakemake: Any) -> Iterator[GpuJob]:
    """Set up a GPU rule's job: rule logging, then a GPU slot, then flash-attn, then the device.

    The order matters: the slot sets CUDA_VISIBLE_DEVICES before CUDA starts, and the
    built flash-attn goes on sys.path before any availability check imports it.
    The device comes from the rule's `params.device` (config train.device).
    """
    with rule_logging(snakemake) as log:
        from attnbench.env import gpuslots

        # resources gpu (whole devices) or gpu_slots (train.jobs_per_gpu > 1: shared)
        with gpuslots.for_job(snakemake.resources) as slot:
            flash = None
            status = snakemake.input.get("flash_attn")
            if status:
                from attnbench.env import flashbuild

                flash = flashbuild.activate(status)
            from attnbench import host

            device = host.select_device(snakemake.params.device)
            yield GpuJob(log=log, device=device, slot=slot, flash=flash)
