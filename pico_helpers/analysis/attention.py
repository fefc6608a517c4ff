"""Attention weights of every layer and head of a Transformer, for one prompt or one window of ids (06, E5)."""
from __future__ import annotations

import torch

from pico_helpers.analysis.embeddings import _token

__all__ = ["attention_maps", "attention_weights"]


def attention_maps(model, enc, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Attention weights of every layer and head for one prompt (drawn by plot_attention; 06_experiments E5).
    Args: model with ``model(idx, return_attention=True)`` -> (logits, attn (L, 1, H, T, T)); enc; prompt.
    Returns (attn (n_layers, n_heads, T, T) float32 on the CPU, rows = queries; the T token strings)."""
    ids = enc.encode_ordinary(prompt)
    if not ids:
        raise ValueError("the prompt is empty: give at least one token, e.g. 'Once upon a time'")
    block = getattr(model, "block_size", None)
    if block is not None and len(ids) > block:
        raise ValueError(f"the prompt is {len(ids)} tokens but the model's block_size is {block}; shorten it")
    return attention_weights(model, ids), [_token(enc, i) for i in ids]


def attention_weights(model, ids: list[int]) -> torch.Tensor:
    """Attention weights of every layer and head for one window of GPT-2 ids: (L, H, T, T) float32 on the CPU,
    rows = queries (as attention_maps gives for a prompt). Args: model with ``model(idx, return_attention=True)``,
    a TransformerModel or a CorpusVocabModel around one; ids: 1..block_size GPT-2 ids."""
    block = getattr(model, "block_size", None)
    if not ids or (block is not None and len(ids) > block):
        raise ValueError(f"a window must have 1..{block} ids (the model's block_size), got {len(ids)}")
    idx = torch.tensor(list(ids), device=next(model.parameters()).device)[:, None]  # (T, 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, attn = model(idx, return_attention=True)  # (L, 1, H, T, T)
    finally:
        model.train(was_training)
    return attn[:, 0].float().cpu()
