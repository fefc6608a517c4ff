"""The loss at each position of a sequence: the one per-position loss of the workbook (02, 03 and 06 use it).

A position's loss is the next-token cross-entropy over all 50,257 GPT-2 ids. For a corpus-vocabulary model it is
computed over the model's own ids, with log(n_other) added where the target is "other": the same number as over
all 50,257 logits (the ids "other" stands for share its probability evenly), charged exactly as in evaluate() and
training, without holding (T, B, 50,257) logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pico_helpers.data.corpus import collate
from pico_helpers.data.vocab import CorpusVocabModel

__all__ = ["position_losses", "sequence_losses"]


def _logits(model, tokens: torch.Tensor, window: int | None) -> torch.Tensor:
    """(T, B) ids -> (T-1, B, V) logits of positions 0..T-2; with ``window``, position t's logits come from the
    model run afresh on tokens t-window+1 .. t only (a fresh state: what the model can do with that context)."""
    logits = model(tokens)[:-1]  # (T-1, B, V): position t predicts token t+1
    T, B = tokens.shape
    if window is not None and window < T:
        wins = tokens.unfold(0, window, 1)  # (n, B, window), wins[i] = tokens[i : i + window], n = T - window + 1
        n = wins.size(0)
        last = model(wins.reshape(n * B, window).T)[-1]  # (n*B, V): the last position of each window
        logits = logits.clone()
        logits[window - 1:] = last.view(n, B, -1)[:n - 1]  # position t ends window t - window + 1
    return logits


def _nll(model, part: torch.Tensor, window: int | None) -> torch.Tensor:
    """(T, b) GPT-2 ids -> (T-1, b) nats: each next-token cross-entropy over all GPT-2 ids."""
    inner, vocab = (model.model, model.vocab) if isinstance(model, CorpusVocabModel) else (model, None)
    ids = part if vocab is None else model.index[part]  # (T, b) the ids the model reads and predicts
    logits = _logits(inner, ids, window).float()  # (T-1, b, V) over the model's own ids
    nll = F.cross_entropy(logits.flatten(0, 1), ids[1:].flatten(), reduction="none").view_as(ids[1:])
    return nll if vocab is None else nll + (ids[1:] == vocab.other_id) * vocab.other_correction


@torch.no_grad()
def position_losses(model, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None, window: int | None = None,
                    batch_size: int = 8) -> torch.Tensor:
    """The loss of every next-token prediction: (T, B) ids -> (T-1, B) nats, NaN where the target is padding.
    Row t is the loss of predicting tokens[t+1] from tokens[:t+1] (or from the last ``window`` of them); the mean
    over real targets is next_token_loss's. Args: model: any model of the contract (GPT-2 ids in);
    batch_size: sequences per forward pass (their (T, b, V) float32 logits are held at once)."""
    was_training = model.training
    model.eval()
    try:
        parts = []
        for s in range(0, tokens.shape[1], batch_size):
            parts.append(_nll(model, tokens[:, s:s + batch_size], window))  # (T-1, b)
    finally:
        model.train(was_training)
    losses = torch.cat(parts, dim=1)  # (T-1, B)
    return losses if pad_mask is None else losses.masked_fill(~pad_mask[1:].to(losses.device), float("nan"))


def sequence_losses(model, seqs: list, window: int | None = None, batch_size: int = 8) -> torch.Tensor:
    """``position_losses`` of a list of GPT-2 id sequences: (N, T_max - 1) float32 on the CPU, row i for seqs[i],
    NaN past each sequence's end. Sequences of similar length share a batch, so little is padding.
    ``losses.nanmean()`` is then the mean loss per token, ``losses.nanmean(0)`` the mean at each position."""
    device = next(model.parameters()).device
    out = torch.full((len(seqs), max(map(len, seqs)) - 1), float("nan"))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for start in range(0, len(seqs), batch_size):
        rows = order[start:start + batch_size]
        tokens, mask = collate([seqs[i] for i in rows])  # (T, b) each
        losses = position_losses(model, tokens.to(device), mask.to(device), window, batch_size)  # (T-1, b)
        out[rows, :losses.shape[0]] = losses.T.cpu()
    return out
