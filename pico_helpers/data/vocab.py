"""A corpus vocabulary: the GPT-2 ids the training split uses, plus one "other" class shared by all the rest.

"other" spreads its probability evenly over the n_other ids not modelled (log p(u) = log p(other) - log(n_other)),
so the loss stays a full-vocabulary cross-entropy. Only an id mapping; used by load_corpus."""
from __future__ import annotations

import math

import torch

from pico_helpers.data.tokenizer import VOCAB_SIZE

__all__ = ["CorpusVocab"]


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
        self.offset = (self.index == self.other_id).double() * -self.other_correction  # (base_size,) float64

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
        return logits[..., self.index.to(logits.device)] + self.offset.to(logits.device, logits.dtype)
