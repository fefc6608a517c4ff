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

import torch

from pico_helpers.config import MODEL_NAMES
from pico_helpers.data.tokenizer import VOCAB_SIZE
from pico_helpers.data.vocab import CorpusVocabModel
from pico_helpers.models.kgram import KGramMLPSeqModel
from pico_helpers.models.lstm import LSTMSeqModel
from pico_helpers.models.transformer import RMSNorm, TransformerModel

__all__ = ["KGramMLPSeqModel", "LSTMSeqModel", "RMSNorm", "TransformerModel", "build_model", "count_parameters"]


def build_model(name: str, config, vocab=None) -> torch.nn.Module:
    """Build one of MODEL_NAMES from ``config``, its weights seeded by ``config.seed``.
    Args: vocab: ``corpus.vocab`` (a CorpusVocab: the model predicts its ids and is returned wrapped, so that it
        reads and predicts GPT-2 ids), None for all 50,257 GPT-2 ids, or an int: a plain model over that many ids."""
    n_ids = VOCAB_SIZE if vocab is None else vocab if isinstance(vocab, int) else vocab.n_vocab
    torch.manual_seed(config.seed)
    if name == "lstm_seq":
        model = LSTMSeqModel(n_ids, config.embed_size, config.embed_size)
    elif name == "kgram_mlp_seq":
        model = KGramMLPSeqModel(n_ids, k=config.kgram_k, embed_size=config.embed_size,
                                 num_inner_layers=config.num_inner_mlp_layers, chunk_size=config.kgram_chunk_size,
                                 input_mode=config.kgram_input_mode)
    elif name == "kvcache_transformer":
        model = TransformerModel(n_ids, d_model=config.embed_size, n_heads=config.n_heads,
                                 n_blocks=config.n_blocks, block_size=config.block_size,
                                 positional=config.positional, norm=config.norm, tie_weights=config.tie_weights,
                                 dropout=config.dropout)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return model if vocab is None or isinstance(vocab, int) else CorpusVocabModel(model, vocab)


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
