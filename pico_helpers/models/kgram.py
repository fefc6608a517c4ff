"""The K-gram MLP language model (question 2, 02_kgram_mlp.ipynb): the last k tokens through an MLP."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["KGramMLPSeqModel"]


class KGramMLPSeqModel(nn.Module):
    """An MLP that predicts the next token from a window of the last ``k`` tokens (question 2).
    ``input_mode="one_hot"`` is the course's ``nn.Linear(k * vocab, embed)`` on k concatenated one-hot vectors,
    computed as a gather of k columns of W1; "embedding" concatenates k ``nn.Embedding`` vectors. The window is
    left-padded with id 0 before the start, so "0 in the oldest slots" means "near the start".
    Args: vocab_size; k: window length (``--kgram_k``); embed_size: hidden (and embedding) width.
        num_inner_layers: (Linear(embed, embed) -> SiLU) blocks after the first layer.
        chunk_size: time steps per slice of the inner layers, a memory knob only; None or <= 0: all at once.
        window: "aligned" (position t sees t-k+1 .. t) or "starter" (the starter's off-by-one, t-k .. t-1)."""

    block_size = None  # any length: each position only ever looks at its own window of k tokens

    def __init__(self, vocab_size: int = 50257, k: int = 3, embed_size: int = 1024, num_inner_layers: int = 1,
                 chunk_size: int | None = 1, input_mode: str = "one_hot", window: str = "aligned"):
        super().__init__()
        if input_mode not in ("one_hot", "embedding"):
            raise ValueError(f"input_mode must be 'one_hot' or 'embedding', got {input_mode!r}")
        if window not in ("aligned", "starter"):
            raise ValueError(f"window must be 'aligned' (the correct k-gram window) or 'starter' (the course "
                             f"starter's off-by-one), got {window!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the window length) must be an integer >= 1, got {k!r}")
        self.vocab_size, self.k, self.embed_size = vocab_size, k, embed_size
        self.chunk_size, self.input_mode, self.window = chunk_size, input_mode, window
        if input_mode == "one_hot":
            self.first = nn.Linear(k * vocab_size, embed_size)  # weight (E, k*V): slot j, token v -> col j*V+v
        else:
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.first = nn.Linear(k * embed_size, embed_size)
        self.inner = nn.Sequential(*[nn.Sequential(nn.Linear(embed_size, embed_size), nn.SiLU())
                                     for _ in range(num_inner_layers)])
        self.head = nn.Linear(embed_size, vocab_size)

    def windows(self, context: torch.Tensor, n_new: int) -> torch.Tensor:
        """The k-token window of each of the last ``n_new`` positions: (T_ctx, B) ids -> (n_new, B, k), oldest first.
        ``context`` must hold k tokens (or left padding) of history before those positions."""
        win = context.unfold(0, self.k, 1)  # (T_ctx - k + 1, B, k): win[i] = context[i : i + k]
        if self.window == "aligned":
            return win[win.size(0) - n_new:]  # ends at the position itself
        return win[win.size(0) - n_new - 1: win.size(0) - 1]  # ends one position earlier

    def first_layer(self, win: torch.Tensor) -> torch.Tensor:
        """(n, B, k) window ids -> (n, B, E) first-layer pre-activations."""
        if self.input_mode == "one_hot":
            # W1 @ concat(onehot(w_0), ..., onehot(w_{k-1})) = sum_j W1[:, j*V + w_j]: gather k columns.
            flat = win + torch.arange(self.k, device=win.device) * self.vocab_size  # (n, B, k) columns of W1
            cols = F.embedding(flat, self.first.weight.t())  # (n, B, k, E)
            return cols.sum(dim=2) + self.first.bias  # (n, B, E)
        return self.first(self.embedding(win).flatten(2))  # (n, B, k, E) -> (n, B, k*E) -> (n, B, E)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, embed_size) last hidden activations, ``chunk_size`` time steps at a time.
        The first layer (a gather) runs over all positions at once, so its backward fills W1's gradient once."""
        T, B = idx.shape
        pad = idx.new_zeros(self.k, B)  # token id 0 before the start of every sequence
        x = self.first_layer(self.windows(torch.cat([pad, idx], dim=0), T))  # (T, B, E)
        chunk = T if not self.chunk_size or self.chunk_size <= 0 else self.chunk_size
        slices = [self.inner(F.silu(x[s:s + chunk])) for s in range(0, T, chunk)]
        return slices[0] if len(slices) == 1 else torch.cat(slices, dim=0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, vocab) logits."""
        return self.head(self.hidden(idx))

    def next_logits(self, idx_new: torch.Tensor, state=None):
        """Feed (T_new, B) new ids; return the last position's logits (B, vocab) and the new state.
        The state is the last k tokens seen, (k, B), left-padded with 0 (``None`` = nothing seen yet)."""
        if state is None:
            state = idx_new.new_zeros(self.k, idx_new.size(1))
        context = torch.cat([state, idx_new], dim=0)  # (k + T_new, B)
        h = self.inner(F.silu(self.first_layer(self.windows(context, 1))))  # (1, B, E)
        return self.head(h[-1]), context[-self.k:]

    def embedding_table(self) -> torch.Tensor:
        """(vocab, embed_size): the embedding weight, or ("one_hot") the W1 columns reading the newest slot."""
        if self.input_mode == "embedding":
            return self.embedding.weight
        return self.first.weight.view(self.embed_size, self.k, self.vocab_size)[:, -1, :].t()
