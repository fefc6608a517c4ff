"""The K-gram MLP language model (question 2): a fixed window of the last k tokens through an MLP.

Used in 02_kgram_mlp.ipynb."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["KGramMLPSeqModel"]


KGRAM_INPUT_MODES = ("one_hot", "embedding")
KGRAM_WINDOWS = ("aligned", "starter")


class KGramMLPSeqModel(nn.Module):
    """An MLP that predicts the next token from a window of the last ``k`` tokens (question 2).

    Both input modes feed the window, oldest token first, to
    ``first`` -> SiLU -> ``num_inner_layers`` x (Linear -> SiLU) -> ``head``:

    - ``input_mode="one_hot"``: the course's formulation. ``first`` is ``nn.Linear(k * vocab, embed)``
      applied to the concatenation of the k one-hot vectors. We never build those vectors: ``W1 @
      concat(onehot)`` is the sum of k columns of W1 (one per slot), so ``hidden`` gathers the columns
      (an ``F.embedding`` lookup in W1 seen as (k * vocab, embed)) and adds the bias. Same numbers,
      without the k * vocab-wide input or its matmul.
    - ``input_mode="embedding"``: an ``nn.Embedding(vocab, embed)`` per token, the k vectors
      concatenated (k * embed) -> ``first = nn.Linear(k * embed, embed)``.

    Windows (logits at t always predict token t+1):

    - ``window="aligned"`` (default, correct): position t sees tokens t-k+1 .. t.
    - ``window="starter"``: the course starter's off-by-one, tokens t-k .. t-1; it never sees token t,
      the one right before the token it must predict. Kept so 02_kgram_mlp.ipynb can measure the cost.

    Before the start of the sequence the window is left-padded with token id 0 (as in the starter).
    In GPT-2's vocabulary id 0 is the real token "!", but padding on the left is harmless here: every
    position before the start gets the same id in the same slot, so "0 in the oldest slots" simply
    means "near the start of the sequence" and the model learns what to make of it. (The right-padding
    of short sequences in a batch is a different matter, handled by the loss mask.)

    Args:
        vocab_size: number of token ids.
        k: window length (the course's ``--kgram_k``).
        embed_size: hidden width (and embedding width in "embedding" mode).
        num_inner_layers: number of (Linear(embed, embed) -> SiLU) blocks after the first layer.
        chunk_size: time steps per slice in ``hidden`` (the course's ``--kgram_chunk_size``), a memory
            knob only: the outputs do not depend on it. ``None`` or <= 0 means all steps at once. The
            starter's default 1 loops over every position in the inner layers; the
            first layer (the column gather) always runs over all positions at once.
        input_mode: "one_hot" or "embedding" (see above).
        window: "aligned" or "starter" (see above).

    Used in 02_kgram_mlp.ipynb.
    """

    block_size = None  # any length: each position only ever looks at its own window of k tokens

    def __init__(self, vocab_size: int = 50257, k: int = 3, embed_size: int = 1024, num_inner_layers: int = 1,
                 chunk_size: int | None = 1, input_mode: str = "one_hot", window: str = "aligned"):
        super().__init__()
        if input_mode not in KGRAM_INPUT_MODES:
            raise ValueError(f"input_mode must be one of {KGRAM_INPUT_MODES}, got {input_mode!r}")
        if window not in KGRAM_WINDOWS:
            raise ValueError(f"window must be one of {KGRAM_WINDOWS}, got {window!r} "
                             "('aligned' is the correct k-gram window, 'starter' the course starter's)")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the window length) must be an integer >= 1, got {k!r}")
        if not isinstance(num_inner_layers, int) or num_inner_layers < 0:
            raise ValueError(f"num_inner_layers must be an integer >= 0, got {num_inner_layers!r}")
        self.vocab_size = vocab_size
        self.k = k
        self.embed_size = embed_size
        self.chunk_size = chunk_size
        self.input_mode = input_mode
        self.window = window
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

        ``context`` must hold k tokens (or left padding) of history before those positions.
        """
        k = self.k
        win = context.unfold(0, k, 1)  # (T_ctx - k + 1, B, k): win[i] = context[i : i + k]
        if self.window == "aligned":
            return win[win.size(0) - n_new:]  # ends at the position itself
        return win[win.size(0) - n_new - 1: win.size(0) - 1]  # ends one position earlier

    def first_layer(self, win: torch.Tensor) -> torch.Tensor:
        """(n, B, k) window ids -> (n, B, E) first-layer pre-activations."""
        k, V = self.k, self.vocab_size
        if self.input_mode == "one_hot":
            # W1 @ concat(onehot(w_0), ..., onehot(w_{k-1})) = sum_j W1[:, j*V + w_j]: gather k columns.
            flat = win + torch.arange(k, device=win.device) * V  # (n, B, k) column numbers in W1
            cols = F.embedding(flat, self.first.weight.t())  # (n, B, k, E)
            return cols.sum(dim=2) + self.first.bias  # (n, B, E)
        emb = self.embedding(win)  # (n, B, k, E)
        return self.first(emb.flatten(2))  # (n, B, E), from (n, B, k*E)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, embed_size) last hidden activations, ``chunk_size`` time steps at a time.

        The first layer (a gather) runs over all positions at once, so its backward fills W1's
        gradient once; the inner layers run slice by slice.
        """
        T, B = idx.shape
        pad = idx.new_zeros(self.k, B)  # token id 0 before the start of every sequence
        x = self.first_layer(self.windows(torch.cat([pad, idx], dim=0), T))  # (T, B, E)
        chunk = T if not self.chunk_size or self.chunk_size <= 0 else self.chunk_size
        if chunk >= T:
            return self.inner(F.silu(x))
        return torch.cat([self.inner(F.silu(x[s:s + chunk])) for s in range(0, T, chunk)], dim=0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(T, B) ids -> (T, B, vocab) logits."""
        return self.head(self.hidden(idx))

    def step(self, idx_new: torch.Tensor, state=None):
        """Feed (T_new, B) new ids; return the last position's logits (B, vocab) and the new state.

        The state is the last k tokens seen, (k, B), left-padded with 0 at the start (``None`` = nothing
        seen yet). Only the last position's window goes through the MLP.
        """
        if state is None:
            state = idx_new.new_zeros(self.k, idx_new.size(1))
        context = torch.cat([state, idx_new], dim=0)  # (k + T_new, B)
        h = self.inner(F.silu(self.first_layer(self.windows(context, 1))))  # (1, B, E)
        return self.head(h[-1]), context[-self.k:]

    def embedding_table(self) -> torch.Tensor:
        """(vocab, embed_size) one vector per token.

        "embedding" mode: the embedding weight. "one_hot" mode: the columns of W1 that read the most
        recent slot of the window (token t for "aligned", t-1 for "starter"), i.e. what the first layer
        adds for that token there; one_hot(v) @ W1_slot^T is exactly a lookup of row v.
        """
        if self.input_mode == "embedding":
            return self.embedding.weight
        E, k, V = self.embed_size, self.k, self.vocab_size
        return self.first.weight.view(E, k, V)[:, k - 1, :].t()
