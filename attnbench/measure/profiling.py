"""Background samplers for what torch cannot see: device-level GPU memory and
utilisation (NVML), and host RSS of a process and its data-loader children."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from typing import Any

import psutil


class Sampler:
    """Calls `sample()` every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed read must not kill training
                self.sample()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.sample()  # one last reading at the end


class HostRSS(Sampler):
    """Peak resident memory of this process plus its children (data-loader workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.process = psutil.Process()
        self.peak_bytes = 0

    def sample(self) -> None:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)


class NvmlDevice(Sampler):
    """Device memory used (all processes) and SM utilisation of one GPU, via NVML."""

    def __init__(self, pci_bus_id: str | None, index: int = 0, interval: float = 0.1) -> None:
        super().__init__(interval)
        from attnbench import host

        pynvml = host.nvml()
        if pynvml is None:
            raise RuntimeError("NVML is not available here")
        self._nvml = pynvml
        if pci_bus_id:
            self.handle = pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id.encode())
        else:
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.peak_used_bytes = 0
        self.utilisation: list[int] = []

    def sample(self) -> None:
        mem = self._nvml.nvmlDeviceGetMemoryInfo(self.handle)
        self.peak_used_bytes = max(self.peak_used_bytes, mem.used)
        self.utilisation.append(self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def summary(self) -> dict[str, Any]:
        util = self.utilisation
        return {
            "peak_device_used_mb": self.peak_used_bytes / 2**20,
            "gpu_util_mean": statistics.fmean(util) if util else None,
            "gpu_util_median": statistics.median(util) if util else None,
            "gpu_util_samples": len(util),
        }


def nvml_for(device) -> NvmlDevice | None:
    """An NVML sampler for a torch CUDA device, or None where NVML is unusable."""
    import torch

    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    pci = None
    with contextlib.suppress(Exception):
        pci = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    try:
        return NvmlDevice(pci, index=device.index or 0)
    except Exception:
        return None


class StepClock:
    """Splits wall time per batch into waiting for data and everything else."""

    def __init__(self) -> None:
        self.last_end: float | None = None
        self.data_wait_s = 0.0
        self.step_s = 0.0
        self.batches = 0

    def batch_start(self) -> None:
        now = time.perf_counter()
        if self.last_end is not None:
            self.data_wait_s += now - self.last_end
        self._start = now

    def batch_end(self) -> None:
        now = time.perf_counter()
        self.step_s += now - getattr(self, "_start", now)
        self.batches += 1
        self.last_end = now

    def epoch_start(self) -> None:
        self.last_end = None  # the first batch's wait includes loader start-up; keep it apart

    def fraction(self) -> float | None:
        total = self.data_wait_s + self.step_s
        return self.data_wait_s / total if total else None
