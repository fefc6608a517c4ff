"""Looking inside trained models: embedding neighbours, clusters, 2-D maps, attention heatmaps and widgets.

Everything here is a plain function on tensors; the ipywidgets at the end only wire them to controls.
matplotlib and ipywidgets are imported inside the functions that need them.

Used in 01_embeddings.ipynb, 04_transformer.ipynb (attention maps) and 06_experiments.ipynb.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

__all__ = [
    "embedding_table", "nearest_neighbours", "nearest_to_vector", "kmeans", "pca_2d", "annotate_tokens",
    "attention_maps", "plot_attention", "plot_embedding_scatter", "token_structure_plot", "number_words",
    "describe_neighbours", "embedding_inspector", "attention_viewer", "EmbeddingInspector", "AttentionViewer",
]


# --- small helpers ---

def _encode(enc, text: str) -> list[int]:
    """Text -> ids with GPT-2's tiktoken encoding or a CompactVocab (special tokens are plain text)."""
    return list(enc.encode_ordinary(text)) if hasattr(enc, "encode_ordinary") else list(enc.encode(text))


def _decode_one(enc, token_id: int) -> str:
    return enc.decode([int(token_id)])


def _label(s: str) -> str:
    """A token as a tick label: newlines and tabs made visible, everything else as is."""
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _check_table(table: torch.Tensor) -> None:
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"an embedding table must be a (vocab, dim) tensor, got {shape}; "
                         "get one with embedding_table(model)")


def _check_id(table: torch.Tensor, token_id) -> int:
    if isinstance(token_id, torch.Tensor) and token_id.numel() == 1:
        token_id = token_id.item()
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ValueError(f"token_id must be an int, got {token_id!r}; for a vector query use nearest_to_vector")
    vocab = table.shape[0]
    if not 0 <= token_id < vocab:
        raise ValueError(f"token_id {token_id} is out of range for a table of {vocab} tokens "
                         f"(valid ids: 0..{vocab - 1})")
    return token_id


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (N, D); an all-zero row stays zero (cosine 0 with everything)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k best (ids, scores) per row of (n, V) scores; equal scores rank by ascending id (stable sort)."""
    values, ids = torch.sort(scores, dim=-1, descending=True, stable=True)
    return ids[..., :k], values[..., :k]


def _check_k(k: int, table: torch.Tensor, n_excluded: int) -> None:
    available = table.shape[0] - n_excluded
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(f"k must be an int in 1..{available} (the table has {table.shape[0]} tokens, "
                         f"{n_excluded} excluded), got {k!r}")


# --- embeddings and neighbours ---

def embedding_table(model) -> torch.Tensor:
    """The model's (vocab, dim) token vectors as a detached float32 tensor on the model's device.

    Calls ``model.embedding_table()`` (every model in the workbook has it). For float32 weights this is a
    view of the live weights, not a copy: ``.clone()`` it to keep a snapshot while training goes on.
    """
    table = model.embedding_table()
    _check_table(table)
    return table.detach().float()


def nearest_to_vector(table: torch.Tensor, vector: torch.Tensor, k: int = 10,
                      exclude: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The k tokens whose vectors have the highest cosine similarity with ``vector``.

    Args:
        table: (V, D) embedding table.
        vector: (D,) query, e.g. ``table[a] - table[b] + table[c]``.
        k: number of neighbours.
        exclude: token ids never returned (e.g. the query's own tokens).
    Returns (ids LongTensor (k,), cosine scores FloatTensor (k,)), best first; ties rank by ascending id.
    """
    _check_table(table)
    if not isinstance(vector, torch.Tensor) or vector.shape != (table.shape[1],):
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"vector must have shape ({table.shape[1]},) to match the table's width, got {shape}")
    excluded = sorted({_check_id(table, int(i)) for i in exclude})
    _check_k(k, table, len(excluded))
    scores = _unit_rows(table.float()) @ _unit_rows(vector.float()[None].to(table.device))[0]  # (V,)
    scores[excluded] = float("-inf")
    ids, values = _top(scores, k)
    return ids, values


def nearest_neighbours(table: torch.Tensor, token_id: int, k: int = 10,
                       exclude_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The k tokens closest to ``token_id`` by cosine similarity of their embedding vectors.

    Args:
        table: (V, D) embedding table (see embedding_table).
        token_id: an id in 0..V-1.
        k: number of neighbours.
        exclude_self: leave the token itself out of the answer (it is always its own best match).
    Returns (ids LongTensor (k,), cosine scores FloatTensor (k,)), best first; ties rank by ascending id.
    """
    _check_table(table)
    token_id = _check_id(table, token_id)
    return nearest_to_vector(table, table[token_id], k, exclude=(token_id,) if exclude_self else ())


def annotate_tokens(token_ids: Sequence[int], table: torch.Tensor, decode: Callable[[int], str], k: int = 3) -> str:
    """The starter's "monosemantic" view: each token followed by its k nearest neighbours.

    Every token is rendered as ``token[NN=['a','b','c']]`` (neighbours by cosine similarity in ``table``,
    the token itself excluded, each neighbour shown with repr so spaces and newlines are visible) and the
    pieces are joined with no separator, so the text still reads in order.

    Args:
        token_ids: the ids to annotate (e.g. the generated ones).
        table: (V, D) embedding table.
        decode: id -> string, e.g. ``lambda i: enc.decode([i])``.
        k: neighbours per token.
    """
    _check_table(table)
    ids = [_check_id(table, int(i)) for i in token_ids]
    if not ids:
        return ""
    _check_k(k, table, 1)
    unit = _unit_rows(table.float())  # (V, D)
    parts = []
    for start in range(0, len(ids), 64):  # chunks keep the (n, V) score matrix small
        chunk = ids[start:start + 64]
        rows = torch.tensor(chunk, device=unit.device)
        scores = unit[rows] @ unit.T  # (n, V)
        scores[torch.arange(len(chunk)), rows] = float("-inf")
        nn_ids, _ = _top(scores, k)  # (n, k)
        for tid, neighbours in zip(chunk, nn_ids.tolist()):
            names = ",".join(repr(decode(j)) for j in neighbours)
            parts.append(f"{decode(tid)}[NN=[{names}]]")
    return "".join(parts)


# --- clusters and 2-D maps ---

def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances (N, C) between rows of x (N, D) and c (C, D)."""
    d = (x * x).sum(-1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(-1)[None, :]
    return d.clamp_min(0.0)


def _kmeans_pp(x: torch.Tensor, n_clusters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: the first centre uniformly, each next one with probability ~ squared distance."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = _sq_dists(x, x[chosen]).min(dim=1).values.double()  # (N,)
    for _ in range(1, n_clusters):
        if float(d2.sum()) > 0:
            nxt = int(torch.multinomial(d2.cpu(), 1, generator=gen))
        else:  # every point sits on a centre already (duplicates): take the first unused index
            nxt = next(i for i in range(n) if i not in chosen)
        chosen.append(nxt)
        d2 = torch.minimum(d2, _sq_dists(x, x[nxt:nxt + 1])[:, 0].double())
    return x[chosen].clone()


def _fill_empty(labels: torch.Tensor, d2: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Give each empty cluster (in increasing order) the point farthest from its own centre.

    Only points from clusters with two or more members are moved, so no new cluster empties.
    """
    counts = torch.bincount(labels, minlength=n_clusters)
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return labels
    labels = labels.clone()
    own = d2.gather(1, labels[:, None])[:, 0].clone()  # (N,) distance to the assigned centre
    for c in empty:
        own[counts[labels] <= 1] = -1.0
        i = int(own.argmax())  # the first index on ties: deterministic
        counts[labels[i]] -= 1
        labels[i] = c
        counts[c] = 1
        own[i] = -1.0
    return labels


def kmeans(vectors: torch.Tensor, n_clusters: int, iters: int = 50, seed: int = 0,
           metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding, in plain torch.

    Args:
        vectors: (N, D) points, e.g. rows of an embedding table.
        n_clusters: C, between 1 and N.
        iters: maximum Lloyd iterations (stops earlier once no label changes).
        seed: seeds the torch.Generator of the k-means++ draws (the global RNG is untouched).
        metric: "euclidean", or "cosine" (spherical k-means: points and centres are unit vectors).
    Returns (labels LongTensor (N,), centroids FloatTensor (C, D)). A cluster left empty takes the point
    farthest from its own centre (lowest index on ties), so the result is deterministic for a seed.
    """
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (N, D) tensor, got "
                         f"{tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__}")
    n = vectors.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be an int in 1..{n} (the number of vectors), got {n_clusters!r}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    x = vectors.detach().float()
    if metric == "cosine":
        x = _unit_rows(x)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centroids = _kmeans_pp(x, n_clusters, gen)  # (C, D)
    labels = None
    for _ in range(max(1, iters)):
        d2 = _sq_dists(x, centroids)  # (N, C)
        new = _fill_empty(d2.argmin(dim=1), d2, n_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, new, x)  # (C, D)
        centroids = sums / torch.bincount(new, minlength=n_clusters)[:, None].to(x.dtype)
        if metric == "cosine":
            centroids = _unit_rows(centroids)
        converged = labels is not None and torch.equal(new, labels)
        labels = new
        if converged:
            break
    return labels, centroids


def pca_2d(vectors: torch.Tensor) -> torch.Tensor:
    """Project (N, D) vectors on their first two principal axes -> (N, 2) float32.

    The data are centred; each axis's sign is chosen so that its largest-magnitude loading is positive
    (a deterministic convention: the same data always give the same picture). With fewer than two
    usable axes (N < 3 or D < 2) the missing columns are zeros.
    """
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must be a non-empty (N, D) tensor, got "
                         f"{tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__}")
    x = vectors.detach().double().cpu()
    x = x - x.mean(dim=0, keepdim=True)  # (N, D)
    n, d = x.shape
    # Eigenvectors of the smaller of the (D, D) scatter matrix and the (N, N) Gram matrix (both exact).
    if n > d:
        lam, vecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
        axes = vecs[:, -2:].flip(-1).T  # (<=2, D) largest first
    else:
        lam, u = torch.linalg.eigh(x @ x.T)  # (N,), (N, N)
        u = u[:, -2:].flip(-1)  # (N, <=2)
        axes = (x.T @ u / lam[-2:].flip(-1).clamp_min(1e-300).sqrt()).T  # (<=2, D) unit principal axes
    lam = lam[-2:].flip(-1)  # (<=2,) the variances along the axes (times N)
    axes = axes * (lam > 1e-12 * lam[0].clamp_min(1e-300))[:, None]  # an axis with no variance: zeros
    biggest = axes.abs().argmax(dim=1, keepdim=True)  # (<=2, 1)
    axes = axes * torch.where(axes.gather(1, biggest) < 0, -1.0, 1.0)  # largest loading made positive
    out = torch.zeros(n, 2, dtype=torch.float64)
    out[:, :axes.shape[0]] = x @ axes.T  # (N, <=2)
    return out.float()


# --- plots ---

def _new_axes(ax, figsize):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_embedding_scatter(table: torch.Tensor, token_ids: Sequence[int], labels: Sequence[str], ax=None,
                           highlight: Sequence[int] = (), title: str | None = None):
    """2-D PCA scatter of the chosen tokens' embedding vectors, each point annotated with its label.

    Args:
        table: (V, D) embedding table.
        token_ids: the N tokens to show (the PCA is fitted on these N vectors only).
        labels: N strings, one per token.
        ax: matplotlib Axes to draw on; a new figure if None.
        highlight: ids drawn larger and in red (e.g. the query of a neighbour search).
        title: defaults to "PCA of N token embeddings".
    Returns the Axes.
    """
    _check_table(table)
    ids = [_check_id(table, int(i)) for i in token_ids]
    if len(labels) != len(ids):
        raise ValueError(f"got {len(ids)} token ids but {len(labels)} labels; give one label per token")
    ax = _new_axes(ax, (6.5, 5))
    xy = pca_2d(table[ids].cpu()) if ids else torch.zeros(0, 2)  # (N, 2)
    marked = [i in set(int(h) for h in highlight) for i in ids]
    plain = [j for j, m in enumerate(marked) if not m]
    special = [j for j, m in enumerate(marked) if m]
    ax.scatter(xy[plain, 0].tolist(), xy[plain, 1].tolist(), s=18, color="tab:blue")
    if special:
        ax.scatter(xy[special, 0].tolist(), xy[special, 1].tolist(), s=60, color="tab:red", zorder=3)
    for (px, py), text in zip(xy.tolist(), labels):
        ax.annotate(_label(text), (px, py), textcoords="offset points", xytext=(3, 3), fontsize=8)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title or f"PCA of {len(ids)} token embeddings", fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def number_words(start: int = 0, stop: int = 100) -> list[str]:
    """The words " start" .. " stop" (inclusive), space-prefixed as numbers appear mid-line in 3seqs.txt."""
    return [f" {i}" for i in range(start, stop + 1)]


def token_structure_plot(table: torch.Tensor, enc, words: Sequence[str], ax=None, connect: bool = True,
                         title: str | None = None):
    """PCA map of chosen tokens, coloured by their position in ``words`` and joined in that order.

    Ordered lists such as ``number_words(0, 100)`` show whether the model learned their order (a smooth
    path) or not (a tangle). A word that is several tokens is shown by its first token, with a warning.

    Args:
        table: (V, D) embedding table of a model that uses ``enc``.
        enc: the model's tokenizer (GPT-2's or a CompactVocab).
        words: the strings to place, in order.
        ax: matplotlib Axes; a new figure if None.
        connect: draw a thin line through the points in order.
    Returns the Axes.
    """
    _check_table(table)
    if len(words) < 2:
        raise ValueError(f"give at least two words to compare, got {list(words)!r}")
    ids, split = [], []
    for w in words:
        toks = _encode(enc, w)
        if not toks:
            raise ValueError(f"word {w!r} encodes to no tokens; remove it from the list")
        if len(toks) > 1:
            split.append(w)
        ids.append(_check_id(table, toks[0]))
    if split:
        warnings.warn(f"{len(split)} word(s) are several tokens, shown by their first token: {split[:5]!r}",
                      stacklevel=2)
    ax = _new_axes(ax, (7, 5.5))
    xy = pca_2d(table[ids].cpu())  # (N, 2)
    if connect:
        ax.plot(xy[:, 0].tolist(), xy[:, 1].tolist(), color="0.75", lw=0.8, zorder=1)
    points = ax.scatter(xy[:, 0].tolist(), xy[:, 1].tolist(), c=list(range(len(ids))), cmap="viridis", s=22,
                        zorder=2)
    ax.figure.colorbar(points, ax=ax, label="position in the list")
    for (px, py), tid in zip(xy.tolist(), ids):
        ax.annotate(_label(_decode_one(enc, tid)), (px, py), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title or f"PCA of {len(ids)} token embeddings, {words[0]!r} .. {words[-1]!r} in order",
                 fontsize=10)
    ax.grid(alpha=0.3)
    return ax


# --- attention ---

def attention_maps(model, enc, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Attention weights of every layer and head for one prompt.

    Runs ``model(idx, return_attention=True)`` (idx (T, 1)) in eval mode without gradients, restoring the
    model's mode afterwards. The model returns (logits, attn) with attn (n_layers, 1, n_heads, T, T).
    Returns (attn (n_layers, n_heads, T, T) float32 on the CPU, rows = queries, columns = keys;
    the T token strings).
    """
    ids = _encode(enc, prompt)
    if not ids:
        raise ValueError("the prompt is empty: give at least one token, e.g. 'Once upon a time'")
    block = getattr(model, "block_size", None)
    if block is not None and len(ids) > block:
        raise ValueError(f"the prompt is {len(ids)} tokens but the model's block_size is {block}; shorten it")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    idx = torch.tensor(ids, dtype=torch.long, device=device)[:, None]  # (T, 1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(idx, return_attention=True)
    finally:
        model.train(was_training)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError("model(idx, return_attention=True) must return (logits, attn); "
                         f"{type(model).__name__} returned {type(out).__name__}")
    attn = out[1]
    if isinstance(attn, (list, tuple)):
        attn = torch.stack(list(attn))
    T = len(ids)
    if attn.dim() != 5 or attn.shape[1] != 1 or attn.shape[-2:] != (T, T):
        raise ValueError(f"expected attention of shape (n_layers, 1, n_heads, {T}, {T}), got {tuple(attn.shape)}")
    tokens = [_decode_one(enc, i) for i in ids]
    return attn[:, 0].detach().float().cpu(), tokens


def plot_attention(attn: torch.Tensor, tokens: Sequence[str], layer: int, head: int, ax=None):
    """Heatmap of one head's attention: query tokens down the rows, key tokens along the columns.

    Args:
        attn: (n_layers, n_heads, T, T) from attention_maps.
        tokens: the T token strings (tick labels on both axes).
        layer, head: which map to draw (0-based).
        ax: matplotlib Axes; a new figure if None.
    Returns the Axes (titled "layer L, head H", with a colorbar of the weights).
    """
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2] or attn.shape[-1] != len(tokens):
        raise ValueError(f"attn must be (n_layers, n_heads, T, T) with T = len(tokens) = {len(tokens)}, "
                         f"got {tuple(attn.shape)}")
    n_layers, n_heads = attn.shape[:2]
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer must be in 0..{n_layers - 1}, got {layer}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head must be in 0..{n_heads - 1}, got {head}")
    T = len(tokens)
    side = min(14.0, 3.0 + 0.32 * T)
    ax = _new_axes(ax, (side + 1.0, side))
    image = ax.imshow(attn[layer, head].float().cpu().numpy(), cmap="viridis", vmin=0.0, aspect="equal")
    ax.figure.colorbar(image, ax=ax, label="attention weight")
    labels = [_label(t) for t in tokens]
    ax.set_xticks(range(T))
    ax.set_xticklabels(labels, rotation=90, fontsize=8)
    ax.set_yticks(range(T))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("key (token attended to)")
    ax.set_ylabel("query (token attending)")
    ax.set_title(f"layer {layer}, head {head}")
    return ax


# --- widgets (their callbacks are plain methods, callable without a browser) ---

def _parse_query(enc, table: torch.Tensor, query: str) -> tuple[int, str]:
    """A word (first token used) or a bare integer token id -> (id, a note for the reader)."""
    if query.strip().isdigit() and query == query.strip():
        token_id = _check_id(table, int(query))
        return token_id, f"token id {token_id} = {_decode_one(enc, token_id)!r}"
    ids = _encode(enc, query)
    if not ids:
        raise ValueError("type a word (e.g. ' the', with its leading space) or a token id (e.g. 262)")
    token_id = _check_id(table, ids[0])
    if len(ids) > 1:
        pieces = [_decode_one(enc, i) for i in ids]
        return token_id, f"{query!r} is {len(ids)} tokens {pieces!r}; using the first, {pieces[0]!r} (id {token_id})"
    return token_id, f"{query!r} is token id {token_id}"


def describe_neighbours(table: torch.Tensor, enc, query: str, k: int = 8) -> dict:
    """The embedding inspector's answer as data: query token, note, neighbour ids, scores and a text table.

    Args:
        table: (V, D) embedding table.
        enc: the model's tokenizer.
        query: a word (its first token is used) or a token id written as digits, e.g. "262".
        k: number of neighbours.
    Returns a dict with keys token_id, note, ids, scores, tokens and text.
    """
    token_id, note = _parse_query(enc, table, query)
    ids, scores = nearest_neighbours(table, token_id, k)
    tokens = [_decode_one(enc, i) for i in ids.tolist()]
    lines = [note, f"{'rank':>4}  {'id':>6}  {'cosine':>7}  token"]
    for rank, (i, s, t) in enumerate(zip(ids.tolist(), scores.tolist(), tokens), start=1):
        lines.append(f"{rank:>4}  {i:>6}  {s:>7.4f}  {t!r}")
    return {"token_id": token_id, "note": note, "ids": ids.tolist(), "scores": scores.tolist(),
            "tokens": tokens, "text": "\n".join(lines)}


class _View:
    """Holds an Output area and the last text and figure shown in it (what the tests look at)."""

    def __init__(self):
        import ipywidgets as widgets

        self.out = widgets.Output()
        self.last_text = ""
        self.last_figure = None

    def _show(self, text: str, fig=None) -> None:
        self.last_text, self.last_figure = text, fig
        from pico_helpers.analysis.plots import in_notebook

        if not in_notebook():  # headless (tests, scripts): keep the results, draw nothing
            return
        self.out.clear_output(wait=True)
        with self.out:
            if text:
                print(text)
            if fig is not None:
                import io

                from IPython.display import Image, display

                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
                display(Image(data=buf.getvalue(), format="png"))


def _figure(figsize):
    # A bare Figure: no pyplot state, so nothing is shown twice or kept alive by the callbacks.
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot(111)


STRUCTURE_PRESETS = {
    "numbers 0..100": number_words(0, 100),
    "numbers 0..20": number_words(0, 20),
    "colours, animals, family": [" red", " blue", " green", " yellow", " cat", " dog", " bird", " fish",
                                 " mom", " dad", " sister", " brother"],
    "custom (below, separated by |)": None,
}


class EmbeddingInspector(_View):
    """Neighbours of a word in a chosen model's embedding table, and a map of chosen tokens.

    ``show_neighbours`` and ``show_structure`` are the widget callbacks; call them directly to test.
    """

    def __init__(self, models: dict, enc, default_word: str = " the", k: int = 8):
        import ipywidgets as widgets

        super().__init__()
        if not models:
            raise ValueError("give at least one model, e.g. {'LSTM': lstm_model}")
        self.models, self.enc, self._tables = dict(models), enc, {}
        self.model = widgets.Dropdown(options=list(self.models), description="model")
        self.word = widgets.Text(value=default_word, description="word or id", continuous_update=False,
                                 placeholder="' the' (leading space matters) or 262")
        self.k = widgets.IntSlider(value=k, min=1, max=50, description="k")
        self.preset = widgets.Dropdown(options=list(STRUCTURE_PRESETS), description="tokens")
        self.custom = widgets.Text(value=" Monday| Tuesday| Wednesday| Thursday| Friday", description="custom",
                                   continuous_update=False)
        self.structure = _View()  # the second tab's output area
        tabs = widgets.Tab(children=[widgets.VBox([widgets.HBox([self.word, self.k]), self.out]),
                                     widgets.VBox([widgets.HBox([self.preset, self.custom]), self.structure.out])])
        tabs.set_title(0, "nearest neighbours")
        tabs.set_title(1, "token structure")
        self.widget = widgets.VBox([self.model, tabs])
        self.widget.view = self
        for control in (self.model, self.word, self.k):
            control.observe(self.show_neighbours, names="value")
        for control in (self.model, self.preset, self.custom):
            control.observe(self.show_structure, names="value")
        self.show_neighbours()
        self.show_structure()

    def table(self) -> torch.Tensor:
        """The selected model's embedding table (cached per model name, on the CPU)."""
        name = self.model.value
        if name not in self._tables:
            self._tables[name] = embedding_table(self.models[name]).cpu()
        return self._tables[name]

    def show_neighbours(self, change=None) -> None:
        """Callback: list the k nearest tokens to the query and plot them with PCA."""
        try:
            info = describe_neighbours(self.table(), self.enc, self.word.value, self.k.value)
        except ValueError as err:
            self._show(f"{err}")
            return
        fig, ax = _figure((6.5, 5))
        ids = [info["token_id"]] + info["ids"]
        labels = [_decode_one(self.enc, info["token_id"])] + info["tokens"]
        plot_embedding_scatter(self.table(), ids, labels, ax=ax, highlight=[info["token_id"]],
                               title=f"{self.model.value}: {labels[0]!r} and its {len(info['ids'])} nearest tokens")
        fig.tight_layout()
        self._show(info["text"], fig)

    def show_structure(self, change=None) -> None:
        """Callback: PCA map of the preset (or custom) token list in the selected model."""
        words = STRUCTURE_PRESETS[self.preset.value] or [w for w in self.custom.value.split("|") if w]
        fig, ax = _figure((7, 5.5))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                token_structure_plot(self.table(), self.enc, words, ax=ax,
                                     title=f"{self.model.value}: {len(words)} tokens in order")
        except ValueError as err:
            self.structure._show(f"{err}")
            return
        fig.tight_layout()
        self.structure._show("\n".join(str(w.message) for w in caught), fig)


def embedding_inspector(models: dict, enc, default_word: str = " the", k: int = 8):
    """An ipywidgets panel: nearest neighbours of a word in a chosen model, and a token-structure map.

    Args:
        models: {name: model} with the course contract (each has embedding_table()).
        enc: their tokenizer (all models must share it).
        default_word: the first query (a word, or a token id as digits).
        k: initial number of neighbours.
    Returns the widget (display it as a cell's last expression). ``widget.view`` is the EmbeddingInspector
    whose ``show_neighbours`` / ``show_structure`` callbacks, ``last_text`` and ``last_figure`` tests use.
    """
    return EmbeddingInspector(models, enc, default_word, k).widget


class AttentionViewer(_View):
    """Layer and head sliders over the attention maps of one prompt; ``show`` is the callback."""

    def __init__(self, model, enc, prompt: str):
        import ipywidgets as widgets

        super().__init__()
        self.model, self.enc = model, enc
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False)
        self.layer = widgets.IntSlider(value=0, min=0, max=0, description="layer")
        self.head = widgets.IntSlider(value=0, min=0, max=0, description="head")
        self.widget = widgets.VBox([self.prompt, widgets.HBox([self.layer, self.head]), self.out])
        self.widget.view = self
        self._compute()
        self.prompt.observe(self._on_prompt, names="value")
        self.layer.observe(self.show, names="value")
        self.head.observe(self.show, names="value")
        self.show()

    def _compute(self) -> None:
        self.attn, self.tokens = attention_maps(self.model, self.enc, self.prompt.value)
        self.layer.max, self.head.max = self.attn.shape[0] - 1, self.attn.shape[1] - 1

    def _on_prompt(self, change=None) -> None:
        try:
            self._compute()
        except ValueError as err:
            self._show(f"{err}")
            return
        self.show()

    def show(self, change=None) -> None:
        """Callback: draw the selected layer and head."""
        T = len(self.tokens)
        side = min(12.0, 3.0 + 0.32 * T)
        fig, ax = _figure((side + 1.0, side))
        plot_attention(self.attn, self.tokens, self.layer.value, self.head.value, ax=ax)
        fig.tight_layout()
        self._show("", fig)


def attention_viewer(model, enc, prompt: str):
    """An ipywidgets panel with layer and head sliders showing plot_attention for ``prompt``.

    The model must accept ``model(idx, return_attention=True)`` (the TransformerModel does).
    Returns the widget; ``widget.view`` is the AttentionViewer (its ``show`` callback, ``last_figure``).
    """
    return AttentionViewer(model, enc, prompt).widget
