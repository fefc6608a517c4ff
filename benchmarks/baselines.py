"""Baselines that exist only for the benchmark: the course starter's generation loop and a full-sort nucleus.

tests/test_sampling.py checks that each computes what its counterpart in pico_helpers computes.
"""
from __future__ import annotations

import torch

from pico_helpers.sample.nucleus import REACH_TOL

__all__ = ["starter_generate_tokens", "full_sort_nucleus_probs", "full_sort_nucleus_sampling"]


@torch.inference_mode()
def starter_generate_tokens(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """The course starter's greedy generation: for every new token, the whole (cropped) context through the
    model with logits at every position, of which only the last is used. Returns the new ids."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block_size = getattr(model, "block_size", None)
    context = torch.tensor(list(prompt_ids), dtype=torch.long, device=device)[:, None]  # (T, 1)
    new_ids: list[int] = []
    try:
        for _ in range(max_new_tokens):
            window = context if block_size is None else context[-block_size:]
            logits = model(window)  # (T, 1, V): a new (T, V) logits tensor for every token
            next_id = int(torch.argmax(logits[-1, 0].float().cpu()))
            new_ids.append(next_id)
            context = torch.cat([context, torch.tensor([[next_id]], device=device)])
    finally:
        model.train(was_training)
    return new_ids


def _full_sort_cut(logits: torch.Tensor, p: float, temperature: float):
    """Sort the whole vocabulary: (probs (B, V), vals (B, V) descending, ids (B, V), t (B, 1), n_kept (B, 1), mass)."""
    z = logits.detach().float().reshape(-1, logits.shape[-1])
    probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # (B, V)
    vals, ids = torch.sort(probs, dim=-1, descending=True)
    csum = vals.double().cumsum(dim=-1)
    first = (csum < p - REACH_TOL).sum(dim=-1, keepdim=True).clamp(max=vals.shape[-1] - 1)
    t = vals.gather(-1, first)  # the probability where the cumulative sum first reaches p
    n_kept = (vals >= t).sum(dim=-1, keepdim=True)  # its ties included
    mass = csum.gather(-1, n_kept - 1).float()
    return probs, vals, ids, t, n_kept, mass


def full_sort_nucleus_probs(logits: torch.Tensor, p: float, temperature: float = 1.0) -> torch.Tensor:
    """``nucleus_probs`` without its top-k pre-cut: always a sort of the whole vocabulary."""
    probs, _, _, t, _, mass = _full_sort_cut(logits, p, temperature)
    if p < 1.0:
        probs = torch.where(probs >= t, probs / mass, 0.0)
    return probs.reshape(logits.shape)


def full_sort_nucleus_sampling(logits: torch.Tensor, p: float, generator: torch.Generator | None = None):
    """``nucleus_sampling`` without its top-k pre-cut: sort everything, draw among the kept prefix."""
    _, vals, ids, _, n_kept, _ = _full_sort_cut(logits, p, 1.0)
    width = int(n_kept.max())
    weights = torch.where(torch.arange(width) < n_kept, vals[:, :width], 0.0)  # (B, width)
    col = torch.multinomial(weights, 1, generator=generator)  # (B, 1)
    return ids[:, :width].gather(-1, col)[:, 0].reshape(logits.shape[:-1])
