"""A corpus vocabulary: the GPT-2 ids the training split uses, plus one "other" class shared by all the rest.

"other" spreads its probability evenly over the n_other ids not modelled (log p(u) = log p(other) - log(n_other)),
so the loss stays a full-vocabulary cross-entropy. CorpusVocabModel wraps a model trained on these ids so that
everything outside it speaks GPT-2 ids. Used by load_corpus and build_model (01_embeddings.ipynb on)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from pico_helpers.data.tokenizer import VOCAB_SIZE

__all__ = ["CorpusVocab", "CorpusVocabModel", "spread_other"]


class CorpusVocab:
    """GPT-2 ids <-> model ids: model id i is GPT-2 id ``ids[i]`` (sorted), every other GPT-2 id is ``other_id``
    = len(ids). ``n_vocab`` = len(ids) + 1 is the model's output size, ``other_correction`` = log(n_other)."""

    def __init__(self, gpt2_ids, base_size: int = VOCAB_SIZE):
        self.ids = sorted({int(i) for i in gpt2_ids})
        self.base_size, self.other_id, self.n_vocab, self.n_other = (base_size, len(self.ids), len(self.ids) + 1,
                                                                      base_size - len(self.ids))
        if self.ids and not 0 <= self.ids[0] <= self.ids[-1] < base_size:
            raise ValueError(f"GPT-2 ids must be in 0..{base_size - 1}, got {self.ids[0]}..{self.ids[-1]}")
        if self.n_other < 1:
            raise ValueError("the training data uses every id of the vocabulary: train with vocab='full'")
        self.other_correction = math.log(self.n_other)
        self.index = torch.full((base_size,), self.other_id, dtype=torch.long)  # (base_size,) GPT-2 id -> model id
        self.index[self.ids] = torch.arange(len(self.ids))
        self._lookup = self.index.tolist()
        # (base_size,) GPT-2 id -> column of [logits, other's logit - log(n_other)]: full_logits is one index_select
        self.columns = torch.where(self.index == self.other_id, self.n_vocab, self.index)

    @classmethod
    def from_sequences(cls, train_seqs, base_size: int = VOCAB_SIZE) -> "CorpusVocab":
        """The vocabulary of the ids in ``train_seqs`` (GPT-2 id lists of the TRAINING split only)."""
        return cls({t for s in train_seqs for t in s}, base_size)

    def to_model(self, ids):
        """GPT-2 ids -> model ids (a list, or a long tensor of any shape); ids not modelled become ``other_id``."""
        if isinstance(ids, torch.Tensor):
            return self.index.to(ids.device)[ids]
        return [self._lookup[i] for i in ids]

    def to_gpt2(self, model_ids) -> list[int]:
        """Model ids -> GPT-2 ids; ``other_id`` stands for n_other ids, so it has none (ValueError)."""
        model_ids = [int(i) for i in model_ids]
        if self.other_id in model_ids:
            raise ValueError(f"model id {self.other_id} is the 'other' class of {self.n_other:,} GPT-2 ids, not one "
                             "id: map log-probabilities with full_logits and draw a GPT-2 id instead")
        return [self.ids[i] for i in model_ids]

    def full_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., n_vocab) logits -> (..., base_size) log-probabilities up to a constant: a modelled id's own logit,
        any other id ``logits[..., other_id] - log(n_other)``; so their softmax sums to 1 over all base_size ids."""
        return spread_other(logits, self.columns.to(logits.device), self.other_correction)


def spread_other(logits: torch.Tensor, columns: torch.Tensor, correction: float) -> torch.Tensor:
    """(..., n_vocab) -> (..., base_size): "other"'s logit minus ``correction`` appended as one more column, then
    every GPT-2 id takes its column. One index_select, exact in any dtype, and on a CPU about 3x faster per generated
    token than ``logits[..., index] + offset`` (which reads and adds a second 50,257-wide vector)."""
    return torch.cat([logits, logits[..., -1:] - correction], dim=-1).index_select(-1, columns)


# --- the one place ids are mapped ---

class CorpusVocabModel(nn.Module):
    """A model trained on a corpus vocabulary, seen from outside in GPT-2 ids: every id mapping happens here.

    Inside, ``model`` reads and predicts model ids (``vocab.n_vocab`` of them, "other" last). Outside, the wrapper
    follows the course contract over all of GPT-2's ids: ``forward`` (T, B) GPT-2 ids -> (T, B, 50,257) logits, in
    which an id the model never saw gets "other"'s logit minus log(n_other), so the softmax is a distribution over
    every GPT-2 id. Generation, evaluation, attention maps and the inspector never see a model id.
    Built by ``build_model(name, config, corpus.vocab)`` or ``corpus.wrap(model)``."""

    def __init__(self, model: nn.Module, vocab: CorpusVocab):
        super().__init__()
        self.model, self.vocab, self.vocab_size = model, vocab, vocab.base_size
        self.block_size = getattr(model, "block_size", None)  # None: no context limit (LSTM, K-gram)
        self.register_buffer("index", vocab.index, persistent=False)  # (base_size,) GPT-2 id -> model id
        self.register_buffer("columns", vocab.columns, persistent=False)  # (base_size,) see CorpusVocab.columns
        self.register_buffer("known", vocab.index != vocab.other_id, persistent=False)  # (base_size,) has its own row

    def full_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., n_vocab) model logits -> (..., base_size) logits over every GPT-2 id (``CorpusVocab.full_logits``)."""
        return spread_other(logits, self.columns, self.vocab.other_correction)

    def forward(self, idx: torch.Tensor, **kwargs):
        """(T, B) GPT-2 ids -> (T, B, base_size) logits. Other outputs of the model (attention weights) pass through."""
        out = self.model(self.index[idx], **kwargs)
        return (self.full_logits(out[0]), *out[1:]) if isinstance(out, tuple) else self.full_logits(out)

    def next_logits(self, idx_new: torch.Tensor, state=None):
        """The model's ``next_logits`` in GPT-2 ids: (T_new, B) ids after ``state`` -> ((B, base_size), state)."""
        logits, state = self.model.next_logits(self.index[idx_new], state)
        return self.full_logits(logits), state

    def next_token_loss(self, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None,
                        chunk_size: int | None = None) -> torch.Tensor:
        """The loss over all GPT-2 ids: the inner model's (fused) loss on model ids, plus log(n_other) for each
        target in "other", whose probability its n_other ids share (log p(u) = log p(other) - log(n_other))."""
        from pico_helpers.training.losses import next_token_loss  # training imports data, not the other way round

        ids = self.index[tokens]  # (T, B) model ids
        targets = ids[1:] if pad_mask is None else ids[1:][pad_mask[1:]]  # the real targets
        loss = next_token_loss(self.model, ids, pad_mask, chunk_size)
        n_other = (targets == self.vocab.other_id).sum().to(loss.dtype)
        return loss + n_other * self.vocab.other_correction / max(targets.numel(), 1)

    def embedding_table(self) -> torch.Tensor:
        """(base_size, d) one row per GPT-2 id: the model's row, or zeros for an id without one (see ``known``)."""
        table = self.model.embedding_table()  # (n_vocab, d)
        return table[self.index] * self.known[:, None].to(table.dtype)
