"""Nucleus (top-p) sampling: sort the probabilities, cut where their cumulative sum reaches p, renormalise, draw.
The nucleus is the smallest most-probable set reaching p (within ``REACH_TOL``), plus all ties of its last
token, so ties never depend on sort order. ``nucleus_probs_topk`` finds the same cut among the ``TOP_K`` largest
first, a fast path for GPT-2's 50,257 ids that generation uses. Used in 05_sampling.ipynb and by generate.py."""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["nucleus_probs", "nucleus_probs_topk", "nucleus_sampling", "cut_to_nucleus", "REACH_TOL", "TOP_K"]

REACH_TOL = 1e-6  # cumulative sums this close below p count as reaching it (float32 rounding)
TOP_K = 128  # the fast path's candidates (torch.topk), before it falls back to sorting the whole vocabulary


def _softmax(logits: torch.Tensor, p: float, temperature: float) -> torch.Tensor:
    """Check the arguments; (V,) or (B, V) logits -> (B, V) float32 probabilities at this temperature."""
    if not isinstance(logits, torch.Tensor) or logits.dim() not in (1, 2) or logits.shape[-1] == 0:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor of shape (V,) or (B, V) with V >= 1, got {shape}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}; p=1.0 keeps the full distribution, "
                         "a small p approaches greedy decoding")
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; 1.0 leaves the "
                         "logits unchanged, below 1 sharpens, above 1 flattens")
    z = logits.detach().float().reshape(-1, logits.shape[-1])  # (B, V)
    probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)
    # A NaN (or +inf, or all -inf) logit makes the whole softmax row NaN, so its first entry tells.
    if torch.isnan(probs[:, 0]).any():
        raise ValueError("logits contain NaN or +inf (or a row is all -inf); check the model's output")
    return probs


def cut_to_nucleus(probs: torch.Tensor, largest: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) probabilities cut to the nucleus and renormalised, given ``largest`` (B, m): the m largest of each
    row in descending order (m = V: all of them). Keeps every probability at or above the threshold: the one at
    which the cumulative sum first reaches p (the last of the m if it never does)."""
    csum = largest.double().cumsum(dim=-1)  # (B, m), in float64 so that 50,257 additions do not drift
    first = (csum < p - REACH_TOL).sum(dim=-1, keepdim=True)  # (B, 1): sums below p come first, as csum grows
    threshold = largest.gather(-1, first.clamp(max=largest.shape[-1] - 1))  # (B, 1)
    kept = torch.where(probs >= threshold, probs, 0.0)  # (B, V): the ties of the threshold stay too
    return kept / kept.sum(dim=-1, keepdim=True, dtype=torch.float64).float()


# --- public API ---

def nucleus_probs(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0) -> torch.Tensor:
    """The distribution nucleus sampling draws from: softmax(logits / temperature) cut to the nucleus.
    Args: logits (V,) or (B, V); p: nucleus mass in (0, 1]; temperature: > 0, divides the logits first.
    Returns float32 probabilities shaped like ``logits``, exactly 0 outside the nucleus."""
    probs = _softmax(logits, p, temperature)  # (B, V)
    if p < 1.0:
        probs = cut_to_nucleus(probs, probs.sort(dim=-1, descending=True).values, p)
    return probs.reshape(logits.shape)


def _top_cut(probs: torch.Tensor, p: float, k: int):
    """(cut (B, k) and ids (B, k) of the k largest) if every row's nucleus ends inside its k largest, else None."""
    top, ids = probs.topk(min(k, probs.shape[-1]), dim=-1)  # (B, k) descending
    cut = cut_to_nucleus(top, top, p)  # (B, k): zero where a candidate falls below its row's threshold
    # a row whose candidates all stay may go on beyond them (p not reached, or ties of the threshold): not final
    return (cut, ids) if (cut == 0).any(dim=-1).all() else None


def nucleus_probs_topk(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0, k: int = TOP_K
                       ) -> torch.Tensor:
    """``nucleus_probs`` without sorting all V probabilities when the nucleus lies within the k largest: the fast
    path. If some row keeps all k (p not reached, or the threshold's ties may go on), it sorts everything instead."""
    probs = _softmax(logits, p, temperature)  # (B, V)
    if p >= 1.0 or (top := _top_cut(probs, p, k)) is None:
        return nucleus_probs(logits, p, temperature)
    cut, ids = top
    return torch.zeros_like(probs).scatter_(-1, ids, cut).reshape(logits.shape)  # every other id is below the cut


def nucleus_sampling(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row from ``nucleus_probs(logits, p, temperature)``. The fast path: when every row's
    nucleus lies within its TOP_K largest, the draw is among those k (a draw over all 50,257 ids costs more than
    the whole cut), else over the plain nucleus.
    Args: logits (V,) or (B, V); p in (0, 1]; temperature > 0; generator: seeded (global RNG if None).
    Returns ids of shape () for (V,) logits, (B,) for (B, V)."""
    probs = _softmax(logits, p, temperature)  # (B, V)
    device = generator.device if generator is not None else probs.device
    top = _top_cut(probs, p, TOP_K) if p < 1.0 else None
    if top is None:  # p = 1, or a nucleus wider than the top k: draw over the whole (cut) distribution
        cut, ids = nucleus_probs(logits, p, temperature).reshape(probs.shape), None
    else:
        cut, ids = top
    col = torch.multinomial(cut.to(device), 1, generator=generator).to(probs.device)  # (B, 1)
    drawn = col if ids is None else ids.gather(-1, col)
    return drawn[:, 0].reshape(logits.shape[:-1])
