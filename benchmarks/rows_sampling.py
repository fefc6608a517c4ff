"""The top-p row: a draw through the fast path, nucleus_probs_topk, against the plain full sort, nucleus_probs."""
from __future__ import annotations

import time

import torch

from benchmarks.harness import Row, alternate, median, met, spread
from pico_helpers.sample.nucleus import TOP_K, nucleus_probs, nucleus_probs_topk, nucleus_sampling

__all__ = ["topp_rows", "plain_nucleus_sampling"]

N_ROWS = 16  # logit rows the timed draws cycle through


def plain_nucleus_sampling(logits: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``nucleus_sampling`` through the plain path: ``nucleus_probs`` (a sort of the whole vocabulary), then the
    same ``torch.multinomial`` draw. Args: logits (V,) or (B, V). Returns ids shaped ``logits.shape[:-1]``."""
    probs = nucleus_probs(logits, p).reshape(-1, logits.shape[-1])  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0].reshape(logits.shape[:-1])


def _ms_per_draw(sample, row: torch.Tensor, n: int = 5) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        sample(row)
    return (time.perf_counter() - t0) / n * 1e3


def _wider_rows_note(sizes, samplers, g: torch.Generator) -> str:
    """A flatter row, like our small trained models' (a nucleus of thousands), and a flat one (untrained), timed."""
    p = sizes.top_p
    wide = torch.randn(sizes.vocab, generator=g) * 3.0
    flat = torch.randn(sizes.vocab, generator=g)
    n_wide, n_flat = (int((nucleus_probs(row, p) > 0).sum()) for row in (wide, flat))
    wide_fast, wide_sort = _ms_per_draw(samplers["fast"], wide), _ms_per_draw(samplers["sort"], wide)
    flat_fast = _ms_per_draw(samplers["fast"], flat)
    beyond = f", beyond the top {TOP_K}: the full sort" if n_wide >= TOP_K else ""
    return (f"a wider row (N(0, 3^2) logits, nucleus {n_wide:,}{beyond}): {wide_fast:.2f} ms against "
            f"{wide_sort:.2f} ms for the baseline; a flat row (N(0, 1), nucleus {n_flat:,}): {flat_fast:.2f} ms")


def _about(sizes, kept: list[int]) -> str:
    return (f"One draw of `nucleus_sampling(logits, p={sizes.top_p})` over {sizes.vocab:,} logits (a single (V,) "
            f"row, on the CPU, where generation samples), cycling through {N_ROWS} rows of "
            f"N(0, {sizes.topp_scale:g}^2) logits, peaked like a confident model's (nucleus of {min(kept)}-"
            f"{max(kept)} tokens). Baseline: the plain path, `nucleus_probs` (a descending sort of the whole "
            "vocabulary and a cumulative sum), then a `torch.multinomial` draw over all V ids "
            "(`plain_nucleus_sampling` in benchmarks/rows_sampling.py). Fast: the library's sampler, which finds "
            f"the cut among `torch.topk` of {TOP_K} candidates and, when that settles every row (its nucleus ends "
            f"before the {TOP_K}th candidate), draws among those {TOP_K} only (else it sorts and draws over the whole "
            "vocabulary too). Ratio = sort time / fast time; the "
            "target is on the fast path's time per token, and `nucleus_probs_topk` must give bit-identical "
            "distributions to `nucleus_probs` on these rows (checked here, and in tests/test_sampling.py). Wider "
            "and flat rows are timed in the note.")


def topp_rows(sizes, device) -> list[Row]:
    """Top-p draws on the CPU, the plain full sort against the top-k fast path (target <= 0.3 ms/token, identical)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(N_ROWS, sizes.vocab, generator=g) * sizes.topp_scale  # (N_ROWS, V), on the CPU
    p = sizes.top_p
    identical = all(torch.equal(nucleus_probs_topk(row, p), nucleus_probs(row, p)) for row in logits)
    kept = [int((nucleus_probs(row, p) > 0).sum()) for row in logits]
    gen = torch.Generator().manual_seed(4)
    samplers = {"sort": lambda row: plain_nucleus_sampling(row, p, generator=gen),
                "fast": lambda row: nucleus_sampling(row, p, generator=gen)}

    def draws(name: str):
        return lambda: [samplers[name](logits[i % N_ROWS]) for i in range(sizes.topp_calls)]

    times = alternate({"sort": draws("sort"), "fast": draws("fast")}, torch.device("cpu"),
                      sizes.repeats, sizes.budget_s / 2)
    note = (f"identical distribution on all {N_ROWS} rows: {'yes' if identical else 'no'}; nucleus {min(kept)}-"
            f"{max(kept)} tokens; " + _wider_rows_note(sizes, samplers, g))
    sort_ms = median(times["sort"]) / sizes.topp_calls * 1e3
    fast_ms = median(times["fast"]) / sizes.topp_calls * 1e3
    return [Row("topp", f"Top-p sampling (p={p}) over {sizes.vocab:,} logits", "full sort (nucleus_probs)",
                f"top-{TOP_K} pre-cut, else full sort (nucleus_probs_topk)", "ms/token", sort_ms, fast_ms,
                sort_ms / fast_ms, "<= 0.3 ms/token, identical", met(fast_ms <= 0.3 and identical), note=note,
                about=_about(sizes, kept),
                runs=f"baseline {spread(times['sort'])}; fast {spread(times['fast'])} ({sizes.topp_calls} draws each)")]
