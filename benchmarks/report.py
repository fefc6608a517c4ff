"""The benchmark's report: the machine it ran on, whether others used the CPU meanwhile, the table, BENCHMARKS.md."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import torch

from pico_helpers.analysis.timings import cpu_model

__all__ = ["machine_info", "cpu_seconds", "others_share", "busy_warning", "format_table", "write_report",
           "BUSY_SHARE"]

BUSY_SHARE = 0.05  # warn when other processes used more than this share of the CPU during the run


# --- the machine ---

def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    return ", ".join(x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in flags)


def machine_info(device) -> dict:
    """What the numbers depend on: CPU model and cores, GPU, torch version and threads, date, load."""
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children), or None.

    The machine's figure comes from /proc/stat (Linux): user + nice + system + irq + softirq + steal.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    t = os.times()
    return (user + nice + system + irq + softirq + steal) / ticks, t.user + t.system + t.children_user + t.children_system


def others_share(start, end, wall_s: float, cores: int) -> float | None:
    """Share of the machine's CPU capacity that other processes used between two ``cpu_seconds`` readings."""
    if start is None or end is None or wall_s <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(others, 0.0) / (wall_s * cores)


def busy_warning(info: dict) -> str:
    """A warning when other processes used a noticeable share of the CPU during the run, else ""."""
    share = info.get("others_cpu_share")
    if share is None or share <= BUSY_SHARE:
        return ""
    return (f"Other processes used {share:.0%} of the machine's CPU time during this run: timings are noisy, and "
            "with as many torch threads as cores the threads wait for each other at every operation (small "
            "operations suffer most). Re-run on a quiet machine, or compare with --threads 1.")


# --- the report ---

def _ratio_text(row) -> str:
    return "n/a" if row.ratio is None else f"{row.ratio:.2f}x"


def format_table(rows: list) -> str:
    """The rows as a markdown table (also what is printed)."""
    head = ("| what | baseline | fast | unit | baseline value | fast value | ratio | target | met | peak memory |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | --- | --- | --- |")
    lines = list(head)
    for r in rows:
        lines.append(f"| {r.what} | {r.baseline} | {r.fast} | {r.unit} | {_fmt(r.base_value, r.unit)} | "
                     f"{_fmt(r.fast_value, r.unit)} | {_ratio_text(r)} | {r.target} | {r.met} | {r.memory} |")
    return "\n".join(lines)


MEMORY_PARAGRAPH = """\
Each variant's peak is measured in a fresh process (`python -m benchmarks.bench --one NAME`), so no row
inherits another's allocations. The process builds the model, its optimizer and the batch, runs one
training step as a warm-up (this creates Adam's state), then measures a second step. On the CPU (Linux)
it first hands freed memory back to the OS (`malloc_trim`) and resets the kernel's peak resident-set
mark (`/proc/self/clear_refs`), then reports VmHWM after the step minus VmRSS before it: the most
memory the step itself added, in pages actually touched, over what was already resident (the model,
the previous step's gradients, Adam's state, the batch). Where that reset is not available it falls back
to `ru_maxrss` around the first step of a fresh process (which then also counts Adam's state). On CUDA
it is `torch.cuda.max_memory_allocated()` during the second step minus `memory_allocated()` before it.
RSS counts what the allocator holds, not only live tensors, so it is an upper bound on the tensors a
step needs; both sides are measured the same way, which is what the ratio compares."""


def write_report(path: Path, rows: list, info: dict, total_s: float, sizes, argv: list[str]) -> None:
    """Write the markdown report: machine, how to reproduce, the table, one paragraph per row, memory method.

    ``rows`` are ``harness.Row`` objects and ``sizes`` the run's ``sizes.BenchSizes`` (repeats, budget_s, quick_mode).
    """
    lines = ["# Benchmarks", "",
             "Each fast path of the workbook against a plain baseline written beside it, the two alternating "
             "in one process; each family of rows gets a fresh process, so no row depends on the rows before "
             "it (written by `benchmarks/bench.py`; do not edit by hand).", "",
             "## How to reproduce", "", "```", "make bench            # = .venv/bin/python -m benchmarks.bench",
             "python -m benchmarks.bench --device cuda   # on a GPU; --quick for a smoke run", "```", "",
             f"This run: `{' '.join(['python -m benchmarks.bench', *argv])}`, {total_s:.0f} s in all"
             + (" (quick sizes: the numbers mean nothing)" if sizes.quick_mode else "") + ".", "",
             "## Machine", ""]
    for key in ("date", "cpu", "cpu_flags", "cpu_capability", "cores", "threads", "torch", "python", "platform",
                "device", "gpu", "load_start", "load_end", "other_processes_cpu"):
        if key in info:
            lines.append(f"- {key.replace('_', ' ')}: {info[key]}")
    lines += ["", "Load average is 1, 5 and 15 minutes, at the start and at the end of the run (the end includes "
              "the benchmark's own threads). Other processes' CPU share is the machine's busy CPU time during the "
              "run (/proc/stat) minus this process's and its children's, over wall time x cores.", ""]
    if busy_warning(info):
        lines += [f"**{busy_warning(info)}**", ""]
    lines += ["## Results", "",
              f"Baseline and fast path alternate (A B A B ...) after one untimed warm-up round, up to "
              f"{sizes.repeats} rounds or until a family has used {sizes.budget_s:.0f} s; the values are medians. "
              "Ratio: fast over baseline for tokens/s, baseline over fast for times (so above 1 means faster), "
              "fast over baseline for memory (below 1 means smaller). Met: yes/no against the target; n/a for "
              "report-only rows.", "", format_table(rows), "", "## What each row compares", ""]
    for r in rows:
        lines.append(f"**{r.what}.** {r.about}")
        extra = "; ".join(x for x in (r.note, r.runs) if x)
        if extra:
            lines.append(f"({extra}.)")
        lines.append("")
    lines += ["## Peak memory", "", MEMORY_PARAGRAPH, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if unit == "MB" or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"
