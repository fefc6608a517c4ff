"""The three language models and ``build_model``: K-gram MLP (kgram.py), LSTM (lstm.py), Transformer (transformer.py).

Every model follows one contract (used by training, generation, evaluation and inspection alike):
- ``model(idx)``: (seq_len, batch) token ids -> (seq_len, batch, vocab) logits; logits at t predict token t+1.
- ``model.next_logits(idx_new, state)`` -> ((batch, vocab) logits of the next token, new state); ``state=None``
  starts afresh. Generation feeds one new id at a time through it (the Transformer's state is its KV cache).
- ``model.embedding_table()`` -> (vocab, d), for the inspector.
A fast path a model may offer, and the three do: ``hidden(idx)`` -> (seq_len, batch, d) and an ``nn.Linear``
``head`` with ``model(idx) == head(hidden(idx))``; training then computes the loss without (T, B, V) logits.
Used in 01_embeddings.ipynb, 02_kgram_mlp.ipynb, 03_lstm.ipynb and 04_transformer.ipynb."""
from __future__ import annotations

import numbers

import torch

from pico_helpers.config import MODEL_NAMES, TrainConfig
from pico_helpers.data.tokenizer import VOCAB_SIZE
from pico_helpers.data.vocab import CorpusVocabModel
from pico_helpers.runs.memory import check_fits
from pico_helpers.models.kgram import KGramMLPSeqModel
from pico_helpers.models.lstm import LSTMSeqModel
from pico_helpers.models.transformer import RMSNorm, TransformerModel

__all__ = ["KGramMLPSeqModel", "LSTMSeqModel", "RMSNorm", "TransformerModel", "build_model", "count_parameters"]


def build_model(name: str, config: TrainConfig, vocab=None) -> torch.nn.Module:
    """Build one of MODEL_NAMES from ``config``, its weights seeded by ``config.seed``. Sizes whose weights,
    gradients and Adam state cannot fit in the training device's memory are refused first (``check_fits``).
    Args: vocab: ``corpus.vocab`` (a CorpusVocab: the model predicts its ids and is returned wrapped, so that it
        reads and predicts GPT-2 ids), None for all 50,257 GPT-2 ids, or an int: a plain model over that many ids."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__} (for example TrainConfig.quick(), "
                         "or TrainConfig(**d) from a dict)")
    n_ids = _n_ids(vocab)
    check_fits(name, config, n_ids, _construct)
    torch.manual_seed(config.seed)
    model = _construct(name, config, n_ids)
    return model if vocab is None or isinstance(vocab, numbers.Integral) else CorpusVocabModel(model, vocab)


def _n_ids(vocab) -> int:
    """The number of ids the raw model predicts, or a ValueError naming what ``vocab`` may be."""
    if vocab is None:
        return VOCAB_SIZE
    if isinstance(vocab, numbers.Integral) and not isinstance(vocab, bool) and vocab >= 1:
        return int(vocab)
    if not isinstance(vocab, (numbers.Number, str)) and isinstance(getattr(vocab, "n_vocab", None), int):
        return vocab.n_vocab  # a CorpusVocab
    raise ValueError(f"vocab must be corpus.vocab (a CorpusVocab), None (all {VOCAB_SIZE:,} GPT-2 ids) or a number "
                     f"of ids >= 1, got {vocab!r} (for example build_model(name, config, corpus.vocab))")


def _construct(name: str, config: TrainConfig, n_ids: int) -> torch.nn.Module:
    """The raw model ``name`` over ``n_ids`` ids, on the current default device."""
    if name == "lstm_seq":
        return LSTMSeqModel(n_ids, config.embed_size, config.embed_size)
    if name == "kgram_mlp_seq":
        return KGramMLPSeqModel(n_ids, k=config.kgram_k, embed_size=config.embed_size,
                                num_inner_layers=config.num_inner_mlp_layers, chunk_size=config.kgram_chunk_size,
                                input_mode=config.kgram_input_mode)
    return TransformerModel(n_ids, d_model=config.embed_size, n_heads=config.n_heads, n_blocks=config.n_blocks,
                            block_size=config.block_size, positional=config.positional, norm=config.norm,
                            tie_weights=config.tie_weights, dropout=config.dropout)


def count_parameters(model: torch.nn.Module, non_embedding: bool = False) -> int:
    """Number of distinct trainable parameters (a tied weight counts once). ``non_embedding``: without the layers
    whose inputs or outputs are the vocabulary (embedding tables, the head, the one-hot K-gram's first layer)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}
    model = model.model if isinstance(model, CorpusVocabModel) else model  # the model inside the id mapping
    if non_embedding:
        vocab_layers = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)] + [model.head]
        vocab_layers += [model.first] if getattr(model, "input_mode", None) == "one_hot" else []
        for m in vocab_layers:
            for p in m.parameters():
                params.pop(id(p), None)
    return sum(p.numel() for p in params.values())
