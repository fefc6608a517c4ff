"""Text generation for every model: greedy or nucleus (top-p), with a KV cache / recurrent state.

Used in 04_transformer.ipynb and 05_sampling.ipynb (and for the samples printed during training).
"""
from __future__ import annotations

import torch

from pico_helpers.sample.nucleus import nucleus_sampling

__all__ = ["generate_tokens", "generate_text", "GENERATION_METHODS"]

# "cache": model.step() (KV cache / recurrent state), logits for the last position only.
# "recompute": re-run the (cropped) context each token, head on the last position only.
# "recompute_all_logits": the starter's way: re-run the context and compute logits for every position.
GENERATION_METHODS = ("cache", "recompute", "recompute_all_logits")


def _crop(context: torch.Tensor, block_size: int | None) -> torch.Tensor:
    return context if block_size is None else context[-block_size:]


@torch.inference_mode()
def generate_tokens(model, prompt_ids: list[int], max_new_tokens: int = 20, top_p: float | None = None,
                    temperature: float = 1.0, seed: int = 0, method: str = "cache") -> list[int]:
    """Generate ``max_new_tokens`` ids after ``prompt_ids`` (batch of one); returns only the new ids.

    Args:
        model: any model with the course contract (see models.py).
        prompt_ids: at least one token id.
        top_p: None -> greedy (argmax); otherwise nucleus sampling with this p.
        temperature: applied before the top-p cut (ignored by greedy).
        seed: seeds the sampler's own torch.Generator (the global RNG is untouched).
        method: one of GENERATION_METHODS. Past ``model.block_size`` the context is cropped to its
            last block_size tokens in every method, so all three give the same tokens.
    """
    if method not in GENERATION_METHODS:
        raise ValueError(f"method must be one of {GENERATION_METHODS}, got {method!r}")
    if not len(prompt_ids):
        raise ValueError("the prompt is empty: give at least one token (for example 'Once upon a')")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    block_size = getattr(model, "block_size", None)
    context = torch.tensor(list(prompt_ids), dtype=torch.long, device=device).unsqueeze(1)  # (T, 1)
    new_ids: list[int] = []
    state = None
    step_in = context  # the cache method feeds the prompt once, then one new id at a time
    try:
        for i in range(max_new_tokens):
            if method == "cache":
                logits, state = model.step(step_in, state)  # (1, V)
                logits = logits[0]
            elif method == "recompute":
                h = model.hidden(_crop(context, block_size))  # (T, 1, D)
                logits = model.head(h[-1, 0])  # (V,)
            else:
                logits = model(_crop(context, block_size))[-1, 0]  # all (T, 1, V) logits, keep the last
            logits = logits.float().cpu()
            if top_p is None:  # numpy's argmax: the same first-maximum rule, ~20x faster than torch's on one row
                next_id = int(logits.numpy().argmax())
            else:
                next_id = int(nucleus_sampling(logits, top_p, temperature=temperature, generator=generator))
            new_ids.append(next_id)
            step_in = torch.tensor([[next_id]], device=device)  # (1, 1)
            if method != "cache":  # the recompute methods re-read the whole context
                context = torch.cat([context, step_in], dim=0)
    finally:
        model.train(was_training)
    return new_ids


def generate_text(model, enc, prompt: str, max_new_tokens: int = 20, top_p: float | None = None,
                  temperature: float = 1.0, seed: int = 0, monosemantic: bool = False,
                  method: str = "cache") -> tuple[str, str]:
    """Continue ``prompt``; return (text, annotated_text) as the starter does.

    ``annotated_text`` marks each new token with its nearest neighbours in the model's embedding table
    (``token[NN=[...]]``) when ``monosemantic`` is true, else equals ``text``.
    Args as in ``generate_tokens``; ``enc`` is the tokenizer (GPT-2's or a CompactVocab).
    """
    prompt_ids = enc.encode_ordinary(prompt)
    new_ids = generate_tokens(model, prompt_ids, max_new_tokens, top_p, temperature, seed, method)
    text = enc.decode(prompt_ids + new_ids)
    if not monosemantic:
        return text, text
    from pico_helpers.analysis.inspection import annotate_tokens, embedding_table

    table = embedding_table(model)
    annotated = prompt + annotate_tokens(new_ids, table, lambda i: enc.decode([int(i)]), k=3)
    return text, annotated
