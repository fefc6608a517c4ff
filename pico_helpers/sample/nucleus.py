"""Nucleus (top-p) sampling: sort the probabilities, cut where their cumulative sum reaches p, renormalise, draw.
The nucleus is the smallest most-probable set reaching p (within ``REACH_TOL``), plus all ties of its last
token, so ties never depend on sort order. The ``TOP_K`` largest are tried first; only if the cut is not
inside them is the whole vocabulary sorted. Used in 05_sampling.ipynb and by generate.py."""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["nucleus_sampling", "nucleus_probs", "REACH_TOL", "TOP_K"]

REACH_TOL = 1e-6  # cumulative sums this close below p count as reaching it (float32 rounding)
TOP_K = 128  # candidates taken first (torch.topk), before falling back to a sort of the whole vocabulary


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


def _cut(vals: torch.Tensor, p: float):
    """Where the nucleus ends in descending probabilities (B, m): (threshold t (B, 1), n_kept (B,), cumsum (B, m)).
    If the cumulative sum never reaches p within these m values, t is the last value and all m are kept."""
    csum = vals.double().cumsum(dim=-1)  # (B, m), in float64 so that 50,257 additions do not drift
    # csum never decreases, so the number of sums below p is the index of the first one that reaches it
    first = (csum < p - REACH_TOL).sum(dim=-1, keepdim=True)  # (B, 1)
    t = vals.gather(-1, first.clamp(max=vals.shape[-1] - 1))  # (B, 1), the threshold probability
    n_kept = (vals >= t).sum(dim=-1)  # (B,): the ties of t are kept too
    return t, n_kept, csum


def _nucleus(probs: torch.Tensor, p: float):
    """(B, V) probabilities -> (vals (B, m) descending, their ids (B, m), t, n_kept, csum) as in ``_cut``."""
    k = min(TOP_K, probs.shape[-1])
    vals, ids = torch.topk(probs, k, dim=-1)  # (B, k) descending
    t, n_kept, csum = _cut(vals, p)
    # If a row keeps fewer than k, its last candidate is below t, and so is every token outside the top k:
    # the cut is final. Keeping all k means p was not reached, or t's ties may go on: sort everything.
    if not (n_kept < k).all():
        vals, ids = torch.sort(probs, dim=-1, descending=True)  # (B, V)
        t, n_kept, csum = _cut(vals, p)  # if p is never reached (rounding), all V are kept
    return vals, ids, t, n_kept, csum


# --- public API ---

def nucleus_probs(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0) -> torch.Tensor:
    """The distribution nucleus sampling draws from: softmax(logits / temperature) cut to the nucleus.
    Args: logits (V,) or (B, V); p: nucleus mass in (0, 1]; temperature: > 0, divides the logits first.
    Returns float32 probabilities shaped like ``logits``, exactly 0 outside the nucleus."""
    probs = _softmax(logits, p, temperature)  # (B, V)
    if p < 1.0:
        _, _, t, n_kept, csum = _nucleus(probs, p)
        mass = csum.gather(-1, n_kept[:, None] - 1).float()  # (B, 1), the kept probability
        probs = torch.where(probs >= t, probs / mass, 0.0)  # (B, V)
    return probs.reshape(logits.shape)


def nucleus_sampling(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row from ``nucleus_probs(logits, p, temperature)``.
    Args: logits (V,) or (B, V); p in (0, 1]; temperature > 0; generator: seeded (global RNG if None).
    Returns ids of shape () for (V,) logits, (B,) for (B, V)."""
    probs = _softmax(logits, p, temperature)  # (B, V)
    device = generator.device if generator is not None else probs.device
    if p >= 1.0:
        ids = torch.multinomial(probs.to(device), 1, generator=generator)[:, 0].to(probs.device)
        return ids.reshape(logits.shape[:-1])
    vals, ids, t, n_kept, _ = _nucleus(probs, p)
    vals = vals[:, :int(n_kept.max())]  # (B, width): draw among the kept columns only, not among all V
    weights = torch.where(vals >= t, vals, 0.0)  # a row's first n_kept; multinomial renormalises them itself
    col = torch.multinomial(weights.to(device), 1, generator=generator).to(vals.device)  # (B, 1)
    return ids.gather(-1, col)[:, 0].reshape(logits.shape[:-1])
