"""The starter's LSTM language model (question 1), in the course's sequence-first contract.
Used in 01_embeddings.ipynb and 03_lstm.ipynb."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LSTMSeqModel"]


class LSTMSeqModel(nn.Module):
    """The starter's LSTM: embedding -> one-layer LSTM -> linear to the vocabulary.
    Args: vocab_size (50,257 for GPT-2, fewer in a corpus vocabulary), embed_size, hidden_size (LSTM state)."""

    block_size = None  # no context limit: the recurrent state carries everything seen so far

    def __init__(self, vocab_size: int = 50257, embed_size: int = 1024, hidden_size: int = 1024):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, batch_first=False)
        self.head = nn.Linear(hidden_size, vocab_size)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, hidden_size) LSTM outputs."""
        self.lstm.flatten_parameters()
        return self.lstm(self.embedding(idx))[0]  # (T, B, H)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, vocab) logits."""
        return self.head(self.hidden(idx))

    def next_logits(self, idx_new: torch.Tensor, state=None):
        """Feed (T_new, B) new ids after the recurrent ``state``; return last logits (B, vocab) and the state."""
        out, state = self.lstm(self.embedding(idx_new), state)  # out: (T_new, B, H)
        return self.head(out[-1]), state

    def embedding_table(self) -> torch.Tensor:
        """(vocab, embed_size) input embedding vectors."""
        return self.embedding.weight
