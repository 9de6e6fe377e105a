"""Measuring tools: interleaved repeated timings, a network-evaluation clock, peak memory, the machine.

On a shared machine absolute timings drift; the candidates of one comparison are therefore
run in turns (A B C, B C A, ...) and compared by the median of their per-turn ratios.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Callable

import torch


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (s) of each call, ``repeats`` times, the calls taking turns in a rotating order."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over turns of ``numerator[i] / denominator[i]`` (robust to slow drifts of the machine)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


class NetworkClock:
    """Counts the forward passes of ``module``, the images they processed, and the time inside them (hooks)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls, self.items, self.seconds, self._start = 0, 0, 0.0, 0.0
        self._handles = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                         module.register_forward_hook(self._post)]

    def _pre(self, module, args, kwargs) -> None:
        self.items += len(args[0] if args else kwargs["sample"])  # images in this forward pass's batch
        self._start = time.perf_counter()

    def _post(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.calls, self.items, self.seconds = 0, 0, 0.0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> "NetworkClock":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_during(call: Callable[[], object]) -> dict:
    """Peak resident memory of one ``call`` above the RSS before it (MiB), in this process.

    Meant for a fresh process per configuration: freed memory that the allocator keeps would
    otherwise hide part of the next configuration's peak. Uses ``VmHWM`` after resetting it
    where Linux allows, else the ``getrusage`` max-RSS delta (which misses peaks lower than
    any earlier one of the process).
    """
    before = _status_kib("VmRSS")
    if before is not None and reset_peak_rss():
        call()
        peak, method = _status_kib("VmHWM"), "VmHWM reset via /proc/self/clear_refs"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        call()
        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "getrusage ru_maxrss delta"
    return {"peak_rss_mib": peak / 1024, "delta_mib": max(0, peak - before) / 1024, "method": method}


def machine_info(threads: int) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import diffusers

    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "torch_threads": threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
