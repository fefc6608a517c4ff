"""Peak memory of one training step, measured in a fresh process per variant, and its place in the table's rows."""
from __future__ import annotations

import gc
import sys
import time

import torch

from benchmarks.children import run_children
from benchmarks.harness import Row, met
from benchmarks.steps import build_step

__all__ = ["measure_peak_memory", "add_memory"]

# (row key, baseline step, fast step) of the rows whose memory column compares two steps
MEMORY_PAIRS = (("transformer_speed", "transformer:plain", "transformer:fast"),
                ("lstm", "lstm:default", "lstm:fused"), ("bf16", "transformer:fast", "transformer:bf16"))


# --- one process, one step ---

def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give memory freed by the warm-up back to the OS (glibc), so it is not counted as in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cuda_peak(step, device) -> dict:
    step()
    torch.cuda.synchronize(device)
    gc.collect()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "before_bytes": before,
            "method": "cuda max_memory_allocated"}


def measure_peak_memory(name: str, sizes, device) -> dict:
    """Peak extra memory of one training step ``name`` (see build_step), measured in THIS process.

    Call it in a fresh process (``python -m benchmarks.bench --one NAME``). The step runs once to
    warm up (Adam's state, lazy initialisations), then its peak is measured during a second step, over
    what was in use just before it (model, gradients from step 1, Adam's state, the batch):
      - CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated.
      - CPU on Linux: freed memory is returned to the OS (malloc_trim), the kernel's peak-RSS mark is
        reset (/proc/self/clear_refs), then VmHWM after the step minus VmRSS before it.
      - elsewhere: the first step from a fresh process, ru_maxrss after minus before (so it also counts
        Adam's state being created).
    Returns {"peak_bytes", "method", "before_bytes"}.
    """
    step, _, _ = build_step(name, sizes, device)
    if device.type == "cuda":
        return _cuda_peak(step, device)
    if _proc_status_kb("VmRSS") is not None:
        step()
        gc.collect()
        _malloc_trim()
        if _reset_peak_rss():
            before = _proc_status_kb("VmRSS") * 1024
            step()
            return {"peak_bytes": _proc_status_kb("VmHWM") * 1024 - before, "before_bytes": before,
                    "method": "VmHWM - VmRSS, second step"}
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"peak_bytes": after - before, "before_bytes": before, "method": "ru_maxrss delta, first step"}


# --- the rows' memory column ---

def _wanted(by_key: dict[str, Row], quick_mode: bool) -> list[str]:
    """The steps to measure: those of the rows that ran (the quick run: only the row with a memory target)."""
    ran = {key for key, row in by_key.items() if row.met != "error"}
    wanted = ["transformer:plain", "transformer:fast"] if "transformer_memory" in ran else []
    if not quick_mode:  # the quick run only checks the mechanism
        wanted += [name for key, base, fast in MEMORY_PAIRS[1:] if key in ran for name in (base, fast)]
    return list(dict.fromkeys(wanted))


def _mb(mem: dict, name: str) -> float | None:
    r = mem.get(name, {})
    return r["peak_bytes"] / 2**20 if "peak_bytes" in r else None


def _pair(mem: dict, base: str, fast: str) -> str:
    """"baseline MB -> fast MB", or n/a with the subprocesses' errors."""
    a, b = _mb(mem, base), _mb(mem, fast)
    if a is None or b is None:
        errs = "; ".join(mem[n]["error"] for n in (base, fast) if "error" in mem.get(n, {}))
        return f"n/a ({errs})"
    return f"{a:,.0f} MB -> {b:,.0f} MB"


def add_memory(rows: list[Row], args, sizes, log=print) -> None:
    """Measure the peaks the rows need, each step in its own subprocess, and fill in the rows' memory columns;
    the Transformer memory row gets its values, ratio (fast / baseline) and target (<= 0.5x)."""
    by_key = {r.key: r for r in rows}
    wanted = _wanted(by_key, sizes.quick_mode)
    if not wanted:
        return
    t0 = time.perf_counter()
    log(f"[bench] peak memory: {len(wanted)} subprocesses ...", flush=True)
    mem = run_children(wanted, args, timeout_s=300.0)
    log(f"[bench] peak memory done in {time.perf_counter() - t0:.1f} s", flush=True)
    for key, base, fast in MEMORY_PAIRS:
        if key in by_key and base in mem and fast in mem:
            by_key[key].memory = _pair(mem, base, fast)
    row = by_key.get("transformer_memory")
    if row is None or row.met == "error":
        return
    a, b = _mb(mem, "transformer:plain"), _mb(mem, "transformer:fast")
    row.memory = _pair(mem, "transformer:plain", "transformer:fast")
    row.runs = f"one step per fresh process ({', '.join(sorted({r['method'] for r in mem.values() if 'method' in r}))})"
    if a is not None and b is not None and a > 0:
        row.base_value, row.fast_value, row.ratio = a, b, b / a
        row.met = met(b / a <= 0.5)
    else:
        row.note = row.memory
