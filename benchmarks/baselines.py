"""The course starter's K-gram forward loop and greedy generation loop: baselines that exist only for the benchmark."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["starter_loop_kgram_forward", "starter_generate_tokens"]


def starter_loop_kgram_forward(model, idx: torch.Tensor) -> torch.Tensor:
    """The course starter's K-gram forward: one MLP call per time step and batch element, on real one-hot vectors.

    For every position t and sequence b it builds the k one-hot vectors of the window (left-padded with
    id 0), concatenates them into one (1, k * vocab) row and runs ``model``'s layers on that row alone.
    Same weights and window rule as ``model`` (a ``KGramMLPSeqModel`` with ``input_mode="one_hot"``), so
    the result equals ``model(idx)``; only the formulation differs (tests/test_bench.py checks it).

    Args:
        model: KGramMLPSeqModel, input_mode "one_hot", window "aligned" (t-k+1 .. t) or "starter" (t-k .. t-1).
        idx: (T, B) token ids.
    Returns (T, B, vocab) logits.
    """
    if getattr(model, "input_mode", None) != "one_hot":
        raise ValueError(f"the starter's loop feeds one-hot vectors; build the model with input_mode='one_hot', "
                         f"got {getattr(model, 'input_mode', None)!r}")
    T, B = idx.shape
    k, V = model.k, model.vocab_size
    padded = torch.cat([idx.new_zeros(k, B), idx], dim=0)  # (k + T, B): position t is row k + t
    first_row = 1 if model.window == "aligned" else 0  # aligned window ends at t, the starter's at t - 1
    dtype = model.first.weight.dtype
    steps = []
    for t in range(T):
        per_sequence = []
        for b in range(B):
            window = padded[t + first_row: t + first_row + k, b]  # (k,) ids, oldest first
            x = F.one_hot(window, V).to(dtype).reshape(1, k * V)  # (1, k*V): the concatenated one-hot vectors
            h = model.inner(F.silu(model.first(x)))  # (1, E)
            per_sequence.append(model.head(h))  # (1, V)
        steps.append(torch.cat(per_sequence, dim=0))  # (B, V)
    return torch.stack(steps)  # (T, B, V)


@torch.inference_mode()
def starter_generate_tokens(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """The course starter's greedy generation: for every new token, the whole (cropped) context through the
    model with logits at every position, of which only the last is used. Returns the new ids
    (tests/test_sampling.py checks they are ``generate_tokens``'s)."""
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
