"""Text generation for every model: greedy or nucleus (top-p), through ``model.next_logits`` (the model's cache) or
by re-running the whole context. Used in 03_lstm, 04_transformer and 05_sampling (and for the samples printed during
training)."""
from __future__ import annotations

import numbers
import operator

import torch

from pico_helpers.data.tokenizer import VOCAB_SIZE
from pico_helpers.sample.nucleus import nucleus_sampling

__all__ = ["generate_tokens", "generate_text", "MAX_NEW_TOKENS"]

MAX_NEW_TOKENS = 100_000  # a request beyond this is a typo, not a sample (pico.py's --new_tokens too)


def _checked_request(model, prompt_ids, max_new_tokens, seed) -> list[int]:
    """The prompt as a list of ints, once every argument is checked; else a ValueError naming the way out."""
    if isinstance(prompt_ids, (str, bytes)):
        raise ValueError("prompt_ids must be token ids, got text: encode it first (corpus.enc.encode_ordinary(text)) "
                         "or call generate_text(model, corpus.enc, text)")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
            or not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be an integer in 0..{MAX_NEW_TOKENS:,}, got {max_new_tokens!r} "
                         "(for example max_new_tokens=20)")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an integer in 0..2**63-1, got {seed!r} (for example seed=0)")
    try:
        ids = [operator.index(i) for i in prompt_ids]  # ints, numpy ints or one-element integer tensors
    except TypeError:
        raise ValueError(f"prompt_ids must be a list of integer token ids, got {prompt_ids!r:.80} "
                         "(for example corpus.enc.encode_ordinary('Once upon a'))") from None
    if not ids:
        raise ValueError("the prompt is empty: give at least one token (for example 'Once upon a')")
    n_ids = getattr(model, "vocab_size", None)  # VOCAB_SIZE for GPT-2 ids (a wrapped model); a raw model's own size
    bad = next((i for i in ids if i < 0 or (isinstance(n_ids, int) and i >= n_ids)), None)
    if bad is not None:
        if not isinstance(n_ids, int):
            raise ValueError(f"prompt id {bad} is negative: token ids are integers >= 0")
        raise ValueError(f"prompt id {bad} is outside the model's vocabulary: " + (
            f"GPT-2 ids are 0..{n_ids - 1} (encode text with corpus.enc)" if n_ids == VOCAB_SIZE else
            f"this raw model has ids 0..{n_ids - 1} (wrap it with corpus.wrap(model) to feed it GPT-2 ids)"))
    return ids


@torch.inference_mode()
def generate_tokens(model, prompt_ids: list[int], max_new_tokens: int = 20, top_p: float | None = None,
                    temperature: float = 1.0, seed: int = 0, use_cache: bool = True) -> list[int]:
    """Generate ``max_new_tokens`` GPT-2 ids after ``prompt_ids`` (a batch of one); returns only the new ids.
    Args: model: the course contract. prompt_ids: >= 1 id, each below ``model.vocab_size`` (50,257 for GPT-2
        ids). max_new_tokens: 0..MAX_NEW_TOKENS. top_p: None -> greedy; else nucleus sampling.
        temperature: before the top-p cut. seed: the sampler's own Generator (the global one is untouched).
        use_cache: True feeds ``model.next_logits`` one new id at a time; False re-runs the whole (cropped) context
            with a fresh state every step (``next_logits(context, None)``: still only the last position's logits)."""
    prompt_ids = _checked_request(model, prompt_ids, max_new_tokens, seed)
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    generator = torch.Generator().manual_seed(seed)  # on the CPU, where the logits are sampled
    block_size = getattr(model, "block_size", None)  # None: no context limit (LSTM, K-gram)
    context = torch.tensor(prompt_ids, device=device)[:, None]  # (T, 1)
    new_ids, state, fresh = [], None, context  # the cache takes the prompt once, then one id at a time
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                logits, state = model.next_logits(fresh, state)  # (1, V)
            else:
                # the whole (cropped) context through the model afresh, the head on its last position only
                logits, _ = model.next_logits(context if block_size is None else context[-block_size:], None)
            logits = logits[0].float().cpu()  # (V,)
            if top_p is None:
                if logits.isnan().any() or logits.isposinf().any():  # argmax would pick NaN as the maximum
                    raise ValueError("the model's logits contain NaN or +inf: it diverged in training; retrain it "
                                     "with a lower learning rate")
                next_id = int(torch.argmax(logits))  # the first maximum, as greedy decoding is defined
            else:
                next_id = int(nucleus_sampling(logits, top_p, temperature, generator))
            new_ids.append(next_id)
            fresh = torch.tensor([[next_id]], device=device)  # (1, 1)
            context = torch.cat([context, fresh])
    finally:
        model.train(was_training)
    return new_ids


def generate_text(model, enc, prompt: str, max_new_tokens: int = 20, top_p: float | None = None,
                  temperature: float = 1.0, seed: int = 0, monosemantic: bool = False, sae=None) -> tuple[str, str]:
    """Continue ``prompt``; return (text, annotated_text) as the starter does.
    ``annotated_text`` equals ``text`` unless ``monosemantic``: then each new token is marked with its strongest
    features of ``sae`` (an SAERun from trained_sae or load_sae: ``token[F12:' dog' F7:'.']``, 07_monosemanticity),
    or, without one, with its embedding neighbours (``token[NN=[...]]``).
    Args as in ``generate_tokens``; ``enc``: GPT-2's tokenizer (``corpus.enc``)."""
    prompt_ids = enc.encode_ordinary(prompt)
    new_ids = generate_tokens(model, prompt_ids, max_new_tokens, top_p, temperature, seed)
    text = enc.decode(prompt_ids + new_ids)
    if not monosemantic:
        return text, text
    decode = lambda i: enc.decode([int(i)])  # noqa: E731
    if sae is not None:
        from pico_helpers.analysis.sae_stories import annotate_features  # only here, as below

        return text, prompt + annotate_features(model, sae, prompt_ids + new_ids, len(prompt_ids), decode)
    from pico_helpers.analysis import annotate_tokens, embedding_table  # only here: generation alone never needs it
    return text, prompt + annotate_tokens(new_ids, embedding_table(model), decode, k=3)
