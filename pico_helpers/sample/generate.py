"""Text generation for every model: greedy or nucleus (top-p), with the model's cache (``step``) or without.
Used in 03_lstm.ipynb, 04_transformer.ipynb and 05_sampling.ipynb (and for the samples printed during training)."""
from __future__ import annotations

import torch

from pico_helpers.sample.nucleus import nucleus_sampling

__all__ = ["generate_tokens", "generate_text"]


@torch.inference_mode()
def generate_tokens(model, prompt_ids: list[int], max_new_tokens: int = 20, top_p: float | None = None,
                    temperature: float = 1.0, seed: int = 0, use_cache: bool = True) -> list[int]:
    """Generate ``max_new_tokens`` ids after ``prompt_ids`` (batch of one); returns only the new ids.
    Args: model: the course contract; ids are GPT-2's even for a corpus-vocabulary model. prompt_ids: >= 1 id.
        top_p: None -> greedy; otherwise nucleus sampling. temperature: before the top-p cut. seed: own Generator.
        use_cache: True feeds ``model.step`` one new id at a time; False re-runs the whole context (same tokens)."""
    if not len(prompt_ids):
        raise ValueError("the prompt is empty: give at least one token (for example 'Once upon a')")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)  # on the CPU, where the logits are sampled
    block_size = getattr(model, "block_size", None)  # None: no context limit (LSTM, K-gram)
    vocab = getattr(model, "vocab", None)
    to_model = list if vocab is None else vocab.to_model
    context = torch.tensor(to_model([int(i) for i in prompt_ids]), device=device)[:, None]  # (T, 1) model ids
    new_ids, state, step_in = [], None, context  # the cache takes the prompt once, then one id at a time
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                logits, state = model.step(step_in, state)  # (1, V)
            else:
                window = context if block_size is None else context[-block_size:]
                logits = model.head(model.hidden(window)[-1])  # (1, V): the head on the last position only
            logits = logits[0].float().cpu()  # (V,)
            if vocab is not None:
                logits = vocab.full_logits(logits)  # (50,257,): "other"'s share for each id it stands for
            if top_p is None:
                if logits.isnan().any() or logits.isposinf().any():  # argmax would pick NaN as the maximum
                    raise ValueError("the model's logits contain NaN or +inf: it diverged in training; retrain it "
                                     "with a lower learning rate")
                next_id = int(torch.argmax(logits))  # the first maximum, as greedy decoding is defined
            else:
                next_id = int(nucleus_sampling(logits, top_p, temperature, generator))
            new_ids.append(next_id)
            step_in = torch.tensor([to_model([next_id])], device=device)  # (1, 1)
            context = torch.cat([context, step_in])
    finally:
        model.train(was_training)
    return new_ids


def generate_text(model, enc, prompt: str, max_new_tokens: int = 20, top_p: float | None = None,
                  temperature: float = 1.0, seed: int = 0, monosemantic: bool = False) -> tuple[str, str]:
    """Continue ``prompt``; return (text, annotated_text) as the starter does.
    ``annotated_text`` marks new tokens with their embedding neighbours if ``monosemantic``, else equals ``text``.
    Args as in ``generate_tokens``; ``enc``: GPT-2's tokenizer (``corpus.enc``)."""
    prompt_ids = enc.encode_ordinary(prompt)
    new_ids = generate_tokens(model, prompt_ids, max_new_tokens, top_p, temperature, seed)
    text = enc.decode(prompt_ids + new_ids)
    if not monosemantic:
        return text, text
    from pico_helpers.analysis import annotate_tokens, embedding_table  # only here: generation alone never needs it
    return text, prompt + annotate_tokens(new_ids, embedding_table(model), lambda i: enc.decode([int(i)]), k=3)
