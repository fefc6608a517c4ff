"""Attention weights of every layer and head of a Transformer for one prompt, as a tensor (06, E5)."""
from __future__ import annotations

import torch

from pico_helpers.analysis.embeddings import _token

__all__ = ["attention_maps"]


def attention_maps(model, enc, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Attention weights of every layer and head for one prompt (drawn by plot_attention; 06_experiments E5).

    Runs ``model(idx, return_attention=True)`` (idx (T, 1)) in eval mode without gradients, restoring the
    model's mode afterwards. The model returns (logits, attn) with attn (n_layers, 1, n_heads, T, T).

    Args:
        model: a model accepting ``return_attention=True`` (the TransformerModel does).
        enc: its tokenizer (GPT-2's or a CompactVocab).
        prompt: the text whose T tokens are the queries and keys.
    Returns (attn (n_layers, n_heads, T, T) float32 on the CPU, rows = queries, columns = keys;
    the T token strings).
    """
    ids = enc.encode_ordinary(prompt)
    if not ids:
        raise ValueError("the prompt is empty: give at least one token, e.g. 'Once upon a time'")
    block = getattr(model, "block_size", None)
    if block is not None and len(ids) > block:
        raise ValueError(f"the prompt is {len(ids)} tokens but the model's block_size is {block}; shorten it")
    idx = torch.tensor(ids, dtype=torch.long, device=next(model.parameters()).device)[:, None]  # (T, 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(idx, return_attention=True)
    finally:
        model.train(was_training)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError("model(idx, return_attention=True) must return (logits, attn); "
                         f"{type(model).__name__} returned {type(out).__name__}")
    attn = torch.stack(list(out[1])) if isinstance(out[1], (list, tuple)) else out[1]  # (L, 1, H, T, T)
    T = len(ids)
    if attn.dim() != 5 or attn.shape[1] != 1 or attn.shape[-2:] != (T, T):
        raise ValueError(f"expected attention of shape (n_layers, 1, n_heads, {T}, {T}), got {tuple(attn.shape)}")
    return attn[:, 0].detach().float().cpu(), [_token(enc, i) for i in ids]
