"""Matplotlib figures of what a model learned: PCA maps of token embeddings, attention heatmaps (01, 06)."""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from pico_helpers.analysis.embeddings import _check_id, _token, has_row, pca_2d
from pico_helpers.analysis.plots import new_axes

__all__ = ["plot_embedding_scatter", "token_structure_plot", "plot_attention"]


def _label(s: str) -> str:
    """A token as a tick label: newlines and tabs made visible, everything else as is."""
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _pca_axes(ax, title: str) -> None:
    ax.set(xlabel="principal component 1", ylabel="principal component 2")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


def plot_embedding_scatter(table: torch.Tensor, token_ids: Sequence[int], labels: Sequence[str], ax=None,
                           highlight: Sequence[int] = (), title: str | None = None):
    """2-D PCA scatter of the chosen tokens' embedding vectors, each point annotated with its label.
    Args: table (V, D); token_ids, labels: N tokens (PCA fitted on these) and N strings; ax (new if None);
        highlight: ids drawn larger and in red. Returns the Axes."""
    ids = [_check_id(table, int(i)) for i in token_ids]
    if len(labels) != len(ids):
        raise ValueError(f"got {len(ids)} token ids but {len(labels)} labels; give one label per token")
    ax = new_axes(ax, (6.5, 5))
    xy = pca_2d(table[ids].cpu()) if ids else torch.zeros(0, 2)  # (N, 2)
    marked = [i in {int(h) for h in highlight} for i in ids]  # highlighted points: larger, red
    ax.scatter(xy[:, 0].tolist(), xy[:, 1].tolist(), s=[60 if m else 18 for m in marked],
               c=["tab:red" if m else "tab:blue" for m in marked])
    for (px, py), text in zip(xy.tolist(), labels):
        ax.annotate(_label(text), (px, py), textcoords="offset points", xytext=(3, 3), fontsize=8)
    _pca_axes(ax, title or f"PCA of {len(ids)} token embeddings")
    return ax


def token_structure_plot(table: torch.Tensor, enc, words: Sequence[str], ax=None, title: str | None = None):
    """PCA map of chosen tokens, coloured by their position in ``words`` and joined in that order; a smooth path
    over ``number_words(0, 100)`` means the model learned the order. Returns the Axes.
    Args: table (V, D) for tokenizer ``enc``; words, in order (a multi-token word uses its first token); ax; title."""
    if len(words) < 2:
        raise ValueError(f"give at least two words to compare, got {list(words)!r}")
    ids, split = [], []
    for w in words:
        toks = enc.encode_ordinary(w)
        if not toks:
            raise ValueError(f"word {w!r} encodes to no tokens; remove it from the list")
        if len(toks) > 1:
            split.append(w)
        ids.append(_check_id(table, toks[0]))
    if split:
        warnings.warn(f"{len(split)} word(s) are several tokens, shown by their first token: {split[:5]!r}", stacklevel=2)
    rows = has_row(table)
    missing = [w for w, i in zip(words, ids) if not rows[i]]
    if len(words) - len(missing) < 2:
        raise ValueError(f"{len(missing)} of the {len(words)} tokens have no embedding row (the model never saw them "
                         "in training; its corpus vocabulary folds them into 'other'): choose tokens from its data")
    if missing:
        warnings.warn(f"{len(missing)} of {len(words)} tokens have no embedding row (never in the model's training "
                      f"data, so they share the 'other' class) and are left out: {missing[:5]!r}", stacklevel=2)
        words, ids = [w for w, i in zip(words, ids) if rows[i]], [i for i in ids if rows[i]]
    ax = new_axes(ax, (7, 5.5))
    x, y = pca_2d(table[ids].cpu()).T.tolist()  # N coordinates each
    ax.plot(x, y, color="0.75", lw=0.8, zorder=1)
    points = ax.scatter(x, y, c=list(range(len(ids))), cmap="viridis", s=22, zorder=2)
    ax.figure.colorbar(points, ax=ax, label="position in the list")
    label_every = 1 if len(ids) <= 30 else 5 if len(ids) <= 60 else 10  # every word, or every 5th or 10th
    for i, (px, py, tid) in enumerate(zip(x, y, ids)):
        if i % label_every == 0 or i == len(ids) - 1:
            ax.annotate(_label(_token(enc, tid)), (px, py), textcoords="offset points", xytext=(3, 3), fontsize=7)
    _pca_axes(ax, title or f"PCA of {len(ids)} token embeddings, {words[0]!r} .. {words[-1]!r} in order")
    return ax


def plot_attention(attn: torch.Tensor, tokens: Sequence[str], layer: int, head: int, ax=None):
    """Heatmap of one head's attention: query tokens down the rows, key tokens along the columns.
    Args: attn (n_layers, n_heads, T, T) from attention_maps; tokens: T strings; layer, head: 0-based; ax."""
    T = len(tokens)
    if attn.dim() != 4 or attn.shape[-2:] != (T, T):
        raise ValueError(f"attn must be (n_layers, n_heads, T, T) with T = len(tokens) = {T}, got {tuple(attn.shape)}")
    for name, value, n in (("layer", layer, attn.shape[0]), ("head", head, attn.shape[1])):
        if not 0 <= value < n:
            raise ValueError(f"{name} must be in 0..{n - 1}, got {value}")
    side = min(14.0, 3.0 + 0.32 * T)
    ax = new_axes(ax, (side + 1.0, side))
    image = ax.imshow(attn[layer, head].float().cpu().numpy(), cmap="viridis", vmin=0.0, aspect="equal")
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    labels = [_label(t) for t in tokens]
    fontsize = 8 if T <= 40 else max(4.0, 8 * 40 / T)  # long prompts: smaller labels rather than overlapping ones
    ax.set_xticks(range(T), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(T), labels, fontsize=fontsize)
    ax.set(xlabel="key (token attended to)", ylabel="query (token attending)", title=f"layer {layer}, head {head}")
    return ax
