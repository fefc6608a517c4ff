"""The equal-budget comparison's learning-rate sweep (a grid that grows past an edge until the chosen rate lies inside
it) and its tables: the sweep, and the final runs over paired seeds. Used by presets.compare() and 04_transformer."""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

__all__ = ["MAX_EXTEND", "next_rate", "best_rate", "bracketed", "sweep", "sweep_cell", "sweep_table",
           "comparison_table"]

MAX_EXTEND = 2  # rates a sweep may add beyond the edges of its grid


# --- the sweep ---

def next_rate(rate: float, up: bool) -> float:
    """The next rate of the 1-2-5 ladder (..., 1e-3, 2e-3, 5e-3, 1e-2, ...) strictly above ``rate`` (or below)."""
    if not rate > 0:
        raise ValueError(f"a learning rate must be > 0, got {rate}")
    e = math.floor(math.log10(rate))
    ladder = [float(f"{m}e{k}") for k in (e - 1, e, e + 1) for m in (1, 2, 5)]
    return min(r for r in ladder if r > rate * (1 + 1e-9)) if up else max(r for r in ladder if r < rate * (1 - 1e-9))


def best_rate(losses: dict) -> float | None:
    """The rate of the lowest loss in ``losses`` (rate -> loss, None = diverged); None if every try diverged."""
    finite = {r: v for r, v in losses.items() if v is not None and math.isfinite(v)}
    return min(finite, key=finite.get) if finite else None


def bracketed(losses: dict, rate: float | None = None) -> bool:
    """True if ``rate`` (default: the best) has a tried rate below and above it, each worse (a diverged try
    counts as worse): the optimum of the grid is inside it, not at an edge."""
    rate = best_rate(losses) if rate is None else rate
    return rate is not None and min(losses) < rate < max(losses)


def sweep(try_rate: Callable[[float], float | None], grid, extend: int = MAX_EXTEND) -> dict:
    """Try every rate of ``grid``; while the best rate is at an edge of the rates tried (or every try diverged),
    try the next 1-2-5 rate beyond that edge (below the lowest if all diverged), at most ``extend`` more times.
    Args: try_rate(rate) -> validation loss after a short run, or None if it diverged; grid: rates to try first.
    Returns {rate: loss or None} for the rates tried, sorted by rate: a rate missing from it was not tried."""
    if not grid:
        raise ValueError("grid is empty: give the rates to try first, e.g. (1e-3, 2e-3, 5e-3)")
    losses = {rate: try_rate(rate) for rate in grid}
    for _ in range(extend):
        if bracketed(losses):
            break
        up = best_rate(losses) == max(losses)  # best at the top edge: go higher; at the bottom or none: lower
        rate = next_rate(max(losses) if up else min(losses), up)
        losses[rate] = try_rate(rate)
    return dict(sorted(losses.items()))


# --- tables ---

def sweep_cell(losses: dict, rate: float, chosen: float | None = None) -> str:
    """One cell of the sweep table: the loss (bold if ``chosen``), "diverged", or "not tried" (a distinct mark)."""
    if rate not in losses:
        return "not tried"
    if losses[rate] is None or not math.isfinite(losses[rate]):
        return "diverged"
    return f"**{losses[rate]:.3f}**" if rate == chosen else f"{losses[rate]:.3f}"


def sweep_table(sweeps: dict) -> str:
    """A markdown table of sweeps: label -> (losses, chosen rate); a column per rate tried by any model, and
    whether the chosen rate is inside the rates its model tried."""
    from pico_helpers.workbook.display import md_table

    rates = sorted({r for losses, _ in sweeps.values() for r in losses})
    rows = [[label] + [sweep_cell(losses, r, chosen) for r in rates]
            + ["yes" if bracketed(losses, chosen) else "no: at an edge"] for label, (losses, chosen) in sweeps.items()]
    return md_table(["model"] + [f"lr {r:g}" for r in rates] + ["chosen rate inside the grid"], rows)


def _mean_sd(scores: dict) -> str:
    done = [v for v in scores.values() if v is not None and math.isfinite(v)]
    spread = f" ± {statistics.stdev(done):.3f}" if len(done) > 1 else ""
    lost = f" ({len(scores) - len(done)} diverged)" if len(done) < len(scores) else ""
    return (f"{statistics.fmean(done):.3f}{spread}" if done else "none finished") + lost


def _minus(scores: dict, base: dict) -> str:
    from pico_helpers.analysis.seeds import paired_difference

    try:
        d = paired_difference(base, scores)
    except ValueError:  # under 2 seeds that both finished: no interval
        return "too few paired seeds"
    p = "p < 0.001" if d.p < 0.001 else f"p = {d.p:.3f}"
    return f"{d.mean:+.3f} ({d.low:+.3f} to {d.high:+.3f}), {p}"


def comparison_table(header: list, rows: dict, baseline: str) -> str:
    """The comparison over paired seeds as a markdown table. Args: header: names of the leading cells;
    rows: label -> (leading cells, {seed: validation loss}, {seed: test loss} or None without a test set);
    baseline: the label the others are paired with (mean difference, 95 % interval, t-test p)."""
    from pico_helpers.workbook.display import md_table

    _, base_val, base_test = rows[baseline]
    out = []
    for label, (cells, val, test) in rows.items():
        if test is None or base_test is None:
            test_cells = ["no test set", ""]
        else:
            test_cells = [_mean_sd(test), "baseline" if label == baseline else _minus(test, base_test)]
        out.append([label, *cells, _mean_sd(val), "baseline" if label == baseline else _minus(val, base_val),
                    *test_cells])
    return md_table(["model", *header, "validation loss: mean ± sd", f"minus {baseline} (95 % CI, p)",
                     "test loss (once): mean ± sd", f"minus {baseline} (95 % CI, p)"], out)
