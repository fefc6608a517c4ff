"""What every row shares: the Row of the table, the alternating timer, and the models, batches and steps it times."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from pico_helpers.models import TransformerModel

__all__ = ["LEARNING_RATE", "Row", "met", "spread", "median", "sync", "alternate", "speed_row", "error_rows",
           "transformer", "random_ids", "plain_adam", "make_step", "bf16_autocast", "bf16_reason"]

LEARNING_RATE = 1e-3  # the starter's Adam learning rate


# --- the table ---

@dataclass
class Row:
    """One line of the table: a baseline and a fast path, their medians, the ratio and the target."""

    key: str
    what: str
    baseline: str
    fast: str
    unit: str
    base_value: float | None = None
    fast_value: float | None = None
    ratio: float | None = None
    target: str = "report"
    met: str = "n/a"  # "yes" / "no"; "n/a" for report-only rows, "n/a: why" for a row that could not run
    memory: str = ""  # "baseline MB -> fast MB" where measured
    note: str = ""
    about: str = ""  # the paragraph for BENCHMARKS.md
    runs: str = ""  # how many timed runs and their spread


def met(ok: bool) -> str:
    """The table's word for a target met or missed."""
    return "yes" if ok else "no"


def spread(times: list[float]) -> str:
    """How many timed runs, and their range in ms."""
    return f"{len(times)} runs, {min(times) * 1e3:,.1f}-{max(times) * 1e3:,.1f} ms"


def median(times: list[float]) -> float:
    """The median of the timed runs (seconds)."""
    return statistics.median(times)


def speed_row(key, what, baseline, fast, tokens, times_base, times_fast, target_min, about, target=None,
              **extra) -> Row:
    """A tokens/s row: ratio = fast tokens/s over baseline tokens/s; met if ratio >= target_min (0: report only)."""
    base = tokens / median(times_base)
    quick = tokens / median(times_fast)
    ratio = quick / base
    return Row(key, what, baseline, fast, "tokens/s", base, quick, ratio,
               target or (f">= {target_min:g}x" if target_min else "report"),
               met(ratio >= target_min) if target_min else "n/a",
               runs=f"baseline {spread(times_base)}; fast {spread(times_fast)}", about=about, **extra)


def error_rows(keys, err: BaseException) -> list[Row]:
    """Rows that say a family failed, and why, instead of numbers."""
    why = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return [Row(k, k, "", "", "", met="error", note=why) for k in keys]


# --- timing ---

def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer sees it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def alternate(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, budget_s: float,
              warmup: int = 1) -> dict[str, list[float]]:
    """Time each callable in turn, A B A B ..., after ``warmup`` untimed rounds; seconds per call.

    Alternating spreads slow drifts of the machine (other processes, clocks, caches) over both sides.
    Stops after ``repeats`` rounds, or earlier once ``budget_s`` seconds of timed rounds are spent
    (one round always runs). On a GPU the device is synchronised around each call.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return times


# --- models, batches and steps ---

def transformer(sizes, vocab: int, device, block_size: int | None = None, seed: int = 0) -> TransformerModel:
    """A fresh ``TransformerModel`` of the benchmark's shape over ``vocab`` ids, seeded."""
    torch.manual_seed(seed)
    return TransformerModel(vocab, d_model=sizes.tf_d, n_heads=sizes.tf_heads, n_blocks=sizes.tf_layers,
                            block_size=block_size or sizes.tf_block).to(device)


def random_ids(T: int, B: int, vocab: int, device, seed: int = 1) -> torch.Tensor:
    """A fixed (T, B) batch of random ids below ``vocab``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (T, B), generator=g).to(device)  # (T, B)


def plain_adam(model) -> torch.optim.Optimizer:
    """The unfused baseline: one small kernel per operation and parameter."""
    return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=False, foreach=False)


def make_step(model, optimizer, loss_fn) -> Callable[[], torch.Tensor]:
    """The training loop's step, in its order: loss, zero_grad (set to None), backward, optimizer step."""
    def step():
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def bf16_autocast(device):
    """bfloat16 autocast on ``device``."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_reason(config, device) -> str:
    """Why ``use_bf16(config, device)`` chose what it did, in the table's words."""
    if config.bf16 is not None:
        return f"{'bf16 autocast' if config.bf16 else 'fp32'}: bf16={config.bf16}"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16 autocast: auto, the GPU supports it"
    return f"fp32: auto on {'a CPU' if device.type == 'cpu' else device.type + ' without bf16 support'}"
