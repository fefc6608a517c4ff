"""Nucleus (top-p) sampling over the vocabulary: fast paths (top-k, then a sorted superset) and the full sort.

Three ways to find the nucleus give the same distribution, bit for bit: the top 128 candidates (most
rows of a confident model), a sort of only the tokens above a threshold whose mass reaches p (larger
nuclei, on the CPU), and the reference, a full sort of the vocabulary (everything else, or fast=False).

The nucleus for a probability mass ``p`` is the smallest set of most probable tokens whose cumulative
probability reaches ``p``, widened by one rule that makes it independent of how ties are sorted:
every token whose probability equals that of the last token kept is kept too. In other words, with
``t`` the probability of the token at which the descending cumulative sum first reaches ``p``, the
nucleus is ``{tokens with probability >= t}``. Two more conventions:

- A cumulative sum within ``REACH_TOL`` (1e-6) of ``p`` counts as reaching it, so ``p`` equal to a
  cumulative sum (``p=0.8`` with probabilities 0.5, 0.3, 0.2) keeps two tokens whatever float32
  rounding did to the probabilities.
- ``p = 1.0`` is the full softmax distribution (nothing is cut); ``p -> 0`` keeps only the most
  probable token (all of them, uniformly, if several tie for the maximum), i.e. greedy decoding.

Used in 05_sampling.ipynb and by generation.py.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["nucleus_sampling", "nucleus_probs", "REACH_TOL", "FAST_K"]

REACH_TOL = 1e-6  # cumulative sums this close below p count as reaching it (float32 rounding)
FAST_K = 128  # candidates taken (the top k) before falling back to a full sort
_SUBSAMPLE = 64  # every 64th probability estimates the top-k threshold (_topk_cpu)
_MAX_SUPERSET = 4096  # a larger superset is sorted more slowly than torch.topk runs
_MAX_SORTED = 16384  # the large-nucleus path sorts at most this many candidates (the full sort: all V)


# --- argument checks ---

def _check_args(logits: torch.Tensor, p: float, temperature: float) -> None:
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


def _softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) logits -> (B, V) float32 probabilities at this temperature."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return torch.softmax(z, dim=-1)


def _check_finite(top: torch.Tensor) -> None:
    # A NaN (or +inf, or all -inf) logit makes the whole softmax row NaN, and topk/sort put NaN first.
    if torch.isnan(top).any():
        raise ValueError("logits contain NaN or +inf (or a row is all -inf); check the model's output")


# --- the cut ---

def _cut(sorted_vals: torch.Tensor, p: float):
    """Find the nucleus from descending probabilities (B, m).

    Returns (reached (B,) bool, thresh (B,) float32, csum (B, m) float64): ``reached`` says whether the
    cumulative sum reaches p within these m values; ``thresh`` is the probability of the token where it
    first does (the last value if it never does).
    """
    # (B, m). On the CPU cumsum adds in order, so the first k sums of a top-k and of a full sort agree
    # bit for bit: both paths cut at the same place and divide by the same mass.
    csum = sorted_vals.double().cumsum(dim=-1)
    hits = (csum >= p - REACH_TOL).sum(dim=-1)  # csum never decreases: the hits are a suffix
    m = sorted_vals.shape[-1]
    first = (m - hits).clamp(max=m - 1)  # (B,) index of the first hit
    thresh = sorted_vals.gather(-1, first[:, None])[:, 0]  # (B,)
    return hits > 0, thresh, csum


def _normaliser(csum: torch.Tensor, n_kept: torch.Tensor) -> torch.Tensor:
    """Mass of the n_kept largest probabilities (B,), float32: the same number on every path."""
    return csum.gather(-1, (n_kept - 1)[:, None])[:, 0].float()


def _cpu_rows(probs: torch.Tensor) -> bool:
    """Whether the numpy paths apply: float32 rows on the CPU, a handful of them (generation samples one)."""
    return probs.device.type == "cpu" and probs.dtype == torch.float32 and probs.shape[0] <= 8


def _sorted_above(a: np.ndarray, threshold: float) -> np.ndarray:
    """Ids of the values >= threshold in ``a`` (V,), ordered by descending value, ties by id."""
    idx = np.flatnonzero(a >= threshold)  # (m,) ascending ids
    return idx[np.argsort(-a[idx], kind="stable")]


def _topk_cpu(row: torch.Tensor, k: int):
    """The k largest of a CPU float32 row (V,), descending, as (vals (k,), idx (k,)); None if not found cheaply.

    torch.topk over 50,257 values costs ~0.1 ms on a laptop core. Instead, a threshold estimated from
    every 64th value picks a superset of a few times k candidates (every value >= the threshold) in
    one pass, and only that superset is sorted. Equal values may come out in another order than
    torch.topk's, which changes nothing downstream (see ``_fast_candidates``).
    """
    a = row.detach().numpy()  # values only: the distribution itself is computed from ``probs`` in torch
    sub = a[::_SUBSAMPLE]  # (V / 64,)
    for j in (2 * k // _SUBSAMPLE + 2, 8 * k // _SUBSAMPLE + 8):  # expect ~3x, then ~10x k candidates
        if j >= sub.size:
            return None
        threshold = np.partition(sub, sub.size - j)[sub.size - j]  # the j-th largest of the subsample
        m = np.count_nonzero(a >= threshold)  # candidates
        if m >= k:
            break
    else:
        return None
    if m > _MAX_SUPERSET or not np.isfinite(threshold):
        return None  # many equal values, or NaN: torch.topk (and the checks after it) take over
    idx = _sorted_above(a, threshold)[:k]
    return torch.from_numpy(a[idx]), torch.from_numpy(idx)


def _topk(probs: torch.Tensor, k: int):
    """(B, V) probabilities -> their k largest, descending, (vals (B, k), idx (B, k) long)."""
    if _cpu_rows(probs):
        found = [_topk_cpu(row, k) for row in probs]
        if all(f is not None for f in found):
            return torch.stack([v for v, _ in found]), torch.stack([i for _, i in found]).long()
    return torch.topk(probs, k, dim=-1)


def _fast_candidates(probs: torch.Tensor, p: float, k: int):
    """Top-k attempt. Returns (ok (B,) bool, vals (B, k), idx (B, k), thresh (B,), n_kept (B,), csum)."""
    vals, idx = _topk(probs, k)  # (B, k) descending
    _check_finite(vals[:, 0])
    reached, thresh, csum = _cut(vals, p)
    n_kept = (vals >= thresh[:, None]).sum(dim=-1)  # (B,) kept among the candidates
    # If the last candidate ties the threshold, equal probabilities may sit outside the top k:
    # count them over the whole vocabulary (cheap) and fall back if the nucleus is larger than k.
    edge = reached & (vals[:, -1] == thresh)
    if bool(edge.any()):
        n_full = (probs >= thresh[:, None]).sum(dim=-1)
        reached = reached & (n_full <= k)
    return reached, vals, idx, thresh, n_kept, csum


def _full_sort(probs: torch.Tensor, p: float):
    """Reference path. Returns (vals (B, V), idx (B, V), thresh (B,), n_kept (B,), csum)."""
    vals, idx = torch.sort(probs, dim=-1, descending=True)  # (B, V)
    _check_finite(vals[:, 0])
    _, thresh, csum = _cut(vals, p)
    n_kept = (vals >= thresh[:, None]).sum(dim=-1)
    return vals, idx, thresh, n_kept, csum


def _nucleus_superset_cpu(row: torch.Tensor, p: float):
    """A superset of the nucleus of a CPU float32 row (V,), sorted: (vals (m,), idx (m,)) descending, or None.

    For nuclei too large for the top-k path (a trained model's distribution at p = 0.9 often keeps
    hundreds or thousands of tokens). The candidates are every probability >= c, for the largest c of
    the form max * 10^-x (x in steps of 1, then halved three times) whose candidates hold mass >= p.
    A threshold set of mass >= p contains the whole nucleus, ties included, so only the candidates
    need sorting. None when there are more than ``_MAX_SORTED`` of them, or the row holds NaN.
    """
    a = row.detach().numpy()
    top = float(a.max())
    if not math.isfinite(top) or top <= 0.0:
        return None

    def enough(log_ratio: float) -> bool | None:
        """Do the candidates at this ratio hold mass p? None: too many to sort (a lower ratio has more)."""
        keep = a >= top * 10.0 ** log_ratio
        if np.count_nonzero(keep) > _MAX_SORTED:
            return None
        return float(a[keep].sum(dtype=np.float64)) >= p

    hi = 0.0  # log10 of a ratio whose candidates are known to fall short (at first: only the maximum)
    if enough(hi):
        lo = hi
    else:
        lo = -1.0
        while not (found := enough(lo)):  # decades down until the candidates hold mass p
            if found is None or lo < -30.0:
                return None  # a flat row (or a mass that never reaches p): the full sort handles it
            hi, lo = lo, lo - 1.0
        for _ in range(3):  # narrow the last decade: fewer candidates to sort
            mid = (hi + lo) / 2
            if enough(mid):
                lo = mid
            else:
                hi = mid
    idx = _sorted_above(a, top * 10.0 ** lo)  # at most _MAX_SORTED: enough(lo) counted them
    return torch.from_numpy(a[idx]), torch.from_numpy(idx)


def _large_nucleus(probs: torch.Tensor, p: float):
    """Rows the top-k path could not settle. Same returns as ``_full_sort``, with m <= V columns.

    On the CPU, each row's nucleus superset (``_nucleus_superset_cpu``) is sorted instead of the whole
    vocabulary; rows it cannot settle, and other devices, take the full sort.
    """
    if _cpu_rows(probs):
        found = [_nucleus_superset_cpu(row, p) for row in probs]
        if all(f is not None for f in found):
            m = max(v.numel() for v, _ in found)
            vals = probs.new_zeros(probs.shape[0], m)  # zeros after a row's candidates never reach the cut
            idx = torch.zeros(probs.shape[0], m, dtype=torch.long)
            for r, (v, i) in enumerate(found):
                vals[r, :v.numel()], idx[r, :i.numel()] = v, i
            reached, thresh, csum = _cut(vals, p)
            if bool(reached.all()):
                n_kept = (vals >= thresh[:, None]).sum(dim=-1)
                return vals, idx, thresh, n_kept, csum
    return _full_sort(probs, p)


def _as_batch(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dim() == 2 else logits[None]


def _renormalise(probs, thresh, n_kept, csum) -> torch.Tensor:
    """(B, V) probabilities -> the nucleus distribution: kept ones divided by their mass, the rest 0."""
    norm = _normaliser(csum, n_kept)  # (B,)
    return torch.where(probs >= thresh[:, None], probs / norm[:, None], 0.0)


# --- public API ---

def nucleus_probs(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0,
                  fast: bool = True) -> torch.Tensor:
    """The distribution nucleus sampling draws from: softmax(logits / temperature) cut to the nucleus.

    Args:
        logits: (V,) or (B, V) scores for one or a batch of positions (any float dtype, any device).
        p: probability mass of the nucleus, in (0, 1] (see the module docstring for ties and rounding).
        temperature: > 0, divides the logits before the softmax and before the cut.
        fast: try the top-k path first (identical result); False always sorts the whole vocabulary.
    Returns a float32 tensor shaped like ``logits``: renormalised probabilities inside the nucleus,
    exactly 0 outside it.
    """
    _check_args(logits, p, temperature)
    probs = _softmax(_as_batch(logits), temperature)  # (B, V)
    if p >= 1.0:
        _check_finite(probs.max(dim=-1).values)
        return probs.reshape(logits.shape)
    out = torch.zeros_like(probs)
    todo = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    if fast and probs.shape[-1] > FAST_K:
        ok, _, _, thresh, n_kept, csum = _fast_candidates(probs, p, FAST_K)
        if bool(ok.all()):  # the usual case: no row needs the full sort
            return _renormalise(probs, thresh, n_kept, csum).reshape(logits.shape)
        if bool(ok.any()):
            out[ok] = _renormalise(probs[ok], thresh[ok], n_kept[ok], csum[ok])
        todo = ~ok
    rows = probs[todo]
    _, _, thresh, n_kept, csum = (_large_nucleus if fast else _full_sort)(rows, p)
    out[todo] = _renormalise(rows, thresh, n_kept, csum)
    return out.reshape(logits.shape)


def nucleus_sampling(logits: torch.Tensor, p: float = 0.95, temperature: float = 1.0,
                     generator: torch.Generator | None = None, fast: bool = True) -> torch.Tensor:
    """Draw one token id per row from ``nucleus_probs(logits, p, temperature)``.

    Args:
        logits: (V,) or (B, V) scores.
        p: nucleus mass in (0, 1]; 1.0 samples the full distribution, a tiny p is greedy.
        temperature: > 0, applied to the logits before the top-p cut.
        generator: a seeded torch.Generator for reproducible draws (the global RNG is used if None).
            The draw runs on the generator's device; the result comes back on the logits' device.
        fast: try the top-k path first (same distribution); False always sorts the whole vocabulary.
    Returns a LongTensor of ids: shape () for (V,) logits, (B,) for (B, V).

    Only the kept candidates go to torch.multinomial: over all 50,257 tokens it alone costs ~0.9 ms.
    """
    _check_args(logits, p, temperature)
    probs = _softmax(_as_batch(logits), temperature)  # (B, V)
    device = generator.device if generator is not None else probs.device
    if p >= 1.0:
        _check_finite(probs.max(dim=-1).values)
        ids = torch.multinomial(probs.to(device), 1, generator=generator)[:, 0].to(probs.device)
        return ids.reshape(logits.shape[:-1])
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    todo = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    if fast and probs.shape[-1] > FAST_K:
        ok, vals, idx, _, n_kept, _ = _fast_candidates(probs, p, FAST_K)
        if bool(ok.all()):  # the usual case: no row needs the full sort
            return _draw(vals, idx, n_kept, generator, device).reshape(logits.shape[:-1])
        if bool(ok.any()):
            out[ok] = _draw(vals[ok], idx[ok], n_kept[ok], generator, device)
        todo = ~ok
    vals, idx, _, n_kept, _ = (_large_nucleus if fast else _full_sort)(probs[todo], p)
    width = int(n_kept.max())  # only the kept prefix of the sorted rows matters
    out[todo] = _draw(vals[:, :width], idx[:, :width], n_kept, generator, device)
    return out.reshape(logits.shape[:-1])


def _draw(vals: torch.Tensor, idx: torch.Tensor, n_kept: torch.Tensor, generator, device) -> torch.Tensor:
    """Sample a column per row among the first n_kept of descending (vals, idx) (B, m); return ids (B,)."""
    pos = torch.arange(vals.shape[-1], device=vals.device)
    weights = torch.where(pos[None, :] < n_kept[:, None], vals, 0.0)  # (B, m)
    col = torch.multinomial(weights.to(device), 1, generator=generator).to(vals.device)  # (B, 1)
    return idx.gather(-1, col)[:, 0]
