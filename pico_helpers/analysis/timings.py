"""Timings with spreads: repeated wall times, their median and range, paired speed-ups, and the machine they ran on.
Used in 01_embeddings to 04_transformer (and the benchmarks' figures belong in BENCHMARKS.md, not here)."""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Timing", "timing", "time_repeats", "speedup", "cpu_model", "machine"]


def _decimals(x: float, digits: int) -> int:
    """Decimals that show ``x`` to ``digits`` significant digits (none past the point for large x)."""
    return max(0, digits - 1 - math.floor(math.log10(abs(x)))) if x and math.isfinite(x) else digits - 1


@dataclass(frozen=True)
class Timing:
    """Repeated timings: the median and the range (low, high) over ``n`` repeats, in ``unit``."""

    median: float
    low: float
    high: float
    n: int
    unit: str = "s"

    def __str__(self) -> str:
        d = _decimals(self.median, 3)  # the median to 3 significant digits, the range to the same decimals
        return f"{self.median:.{d}f} {self.unit} ({self.low:.{d}f}-{self.high:.{d}f}, {self.n} repeats)"


def timing(values, unit: str = "s") -> Timing:
    """The median and range of repeated timings ``values`` (already in ``unit``), e.g. from time_repeats."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("timing needs at least one value, got none (for example timing(time_repeats(fn)))")
    return Timing(median=statistics.median(values), low=min(values), high=max(values), n=len(values), unit=unit)


def time_repeats(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device=None) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()`` in seconds (perf_counter), after ``warmup`` untimed calls.
    ``device``: on a CUDA device each call is bracketed by torch.cuda.synchronize(), so queued kernels count."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def speedup(base: list, fast: list) -> str:
    """How many times faster ``fast`` is than ``base``: the median of the paired ratios base_i / fast_i and their
    range, e.g. "7.2x (6.9-7.5x over 5 paired repeats)". Pair repeats taken in turns, so drifts affect both."""
    if len(base) != len(fast) or not base:
        raise ValueError(f"speedup pairs repeat i of base with repeat i of fast: give equally many (at least 1), "
                         f"got {len(base)} and {len(fast)}")
    if min(fast) <= 0:
        raise ValueError(f"fast timings must be positive, got {min(fast)}")
    ratios = [b / f for b, f in zip(base, fast)]
    mid = statistics.median(ratios)
    d = _decimals(mid, 2)
    return f"{mid:.{d}f}x ({min(ratios):.{d}f}-{max(ratios):.{d}f}x over {len(ratios)} paired repeats)"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo's "model name", as lscpu shows it), else what platform reports."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())


def machine(device=None) -> str:
    """The machine a timing ran on, for a table's caption: the GPU's name on CUDA, else the CPU's model (Linux:
    /proc/cpuinfo), its cores, torch's threads and the load average, e.g. "Intel(R) Xeon(R) Processor, 2 cores, 2
    torch threads, load 1.3"."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{load}"
