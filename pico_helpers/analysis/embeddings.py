"""Embedding tables as tensors: neighbours, the monosemantic view, k-means, PCA (01_embeddings, 06_experiments)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["embedding_table", "has_row", "nearest_neighbours", "nearest_to_vector", "annotate_tokens", "describe_neighbours",
           "number_words", "kmeans", "pca_2d"]


# --- checks and small helpers shared by the analysis modules ---

def _token(enc, token_id: int) -> str:
    """One id as text, with the model's tokenizer (GPT-2's tiktoken encoding)."""
    return enc.decode([int(token_id)])


def _check_table(table: torch.Tensor, what: str = "an embedding table (get one with embedding_table(model))") -> None:
    if not isinstance(table, torch.Tensor) or table.dim() != 2 or table.shape[0] == 0:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"{what} must be a non-empty (N, D) tensor, got {shape}")


def _check_id(table: torch.Tensor, token_id) -> int:
    _check_table(table)
    if isinstance(token_id, torch.Tensor) and token_id.numel() == 1:
        token_id = token_id.item()
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        raise ValueError(f"token_id must be an int, got {token_id!r}; for a vector query use nearest_to_vector")
    if not 0 <= token_id < table.shape[0]:
        raise ValueError(f"token_id {token_id} is out of range for a table of {table.shape[0]} tokens "
                         f"(valid ids: 0..{table.shape[0] - 1})")
    return token_id


def has_row(table: torch.Tensor) -> torch.Tensor:
    """(V,) bool: the ids with a row of their own. A corpus-vocabulary model's table (``embedding_table``) has zero
    rows for the ids its training data never held; they all share the "other" class, so they have no vector."""
    return table.detach().abs().sum(dim=-1) > 0


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (N, D); an all-zero row stays zero (cosine 0 with everything)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# --- neighbours ---

def embedding_table(model) -> torch.Tensor:
    """``model.embedding_table()`` (vocab, dim) as detached float32. A corpus-vocabulary model gives one row per
    GPT-2 id, zeros for the ids it has no row of (cosine 0 with everything; its ``known`` says which)."""
    table = model.embedding_table()
    _check_table(table)
    return table.detach().float()


def nearest_to_vector(table: torch.Tensor, vector: torch.Tensor, k: int = 10,
                      exclude: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (k,), cosine scores (k,)) of the k tokens most similar to ``vector``, best first, ties by ascending id.
    Args: table (V, D); vector (D,), e.g. ``table[a] - table[b] + table[c]``; k; exclude: ids never returned."""
    _check_table(table)
    if not isinstance(vector, torch.Tensor) or vector.shape != (table.shape[1],):
        shape = tuple(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"vector must have shape ({table.shape[1]},) to match the table's width, got {shape}")
    excluded = sorted({_check_id(table, int(i)) for i in exclude})
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= table.shape[0] - len(excluded):
        raise ValueError(f"k must be an int in 1..{table.shape[0] - len(excluded)} (the table has {table.shape[0]} "
                         f"tokens, {len(excluded)} excluded), got {k!r}")
    scores = _unit_rows(table.float()) @ _unit_rows(vector.float()[None].to(table.device))[0]  # (V,)
    scores[excluded] = float("-inf")
    scores[~has_row(table)] = float("-inf")  # ids without a row (never in the training data) are nobody's neighbour
    values, ids = torch.sort(scores, descending=True, stable=True)  # equal scores: ascending id
    return ids[:k], values[:k]


def nearest_neighbours(table: torch.Tensor, token_id: int, k: int = 10,
                       exclude_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (k,), cosine scores (k,)) of the k tokens closest to ``token_id``, as nearest_to_vector.
    Args: table (V, D); token_id in 0..V-1; k; exclude_self: leave the token itself out."""
    token_id = _check_id(table, token_id)
    return nearest_to_vector(table, table[token_id], k, exclude=(token_id,) if exclude_self else ())


def annotate_tokens(token_ids: Sequence[int], table: torch.Tensor, decode: Callable[[int], str], k: int = 3) -> str:
    """The starter's "monosemantic" view: each token as ``token[NN=['a','b','c']]`` (neighbours as repr), joined.
    Args: token_ids; table (V, D); decode: id -> string, e.g. ``lambda i: enc.decode([i])``; k: neighbours per token."""
    neighbours = [(int(t), nearest_neighbours(table, int(t), k)[0].tolist()) for t in token_ids]
    return "".join(f"{decode(t)}[NN=[{','.join(repr(decode(j)) for j in nn)}]]" for t, nn in neighbours)


def number_words(start: int = 0, stop: int = 100) -> list[str]:
    """The words " start" .. " stop" (inclusive), space-prefixed as numbers appear mid-line in 3seqs.txt."""
    return [f" {i}" for i in range(start, stop + 1)]


def describe_neighbours(table: torch.Tensor, enc, query: str, k: int = 8) -> dict:
    """The embedding inspector's answer as a dict: token_id, note, ids, scores, tokens and a text table.
    Args: table (V, D); enc; k; query: a word (its first token is used) or a token id as digits, e.g. "262"."""
    if query.strip().isdigit() and query == query.strip():  # a token id
        token_id = _check_id(table, int(query))
        note = f"token id {token_id} = {_token(enc, token_id)!r}"
    else:  # a word: its first token
        ids = enc.encode_ordinary(query)
        if not ids:
            raise ValueError("type a word (e.g. ' the', with its leading space) or a token id (e.g. 262)")
        token_id, pieces = _check_id(table, ids[0]), [_token(enc, i) for i in ids]
        note = (f"{query!r} is {len(pieces)} tokens {pieces!r}; using the first, {pieces[0]!r} (id {token_id})"
                if len(pieces) > 1 else f"{query!r} is token id {token_id}")
    if not has_row(table[token_id:token_id + 1])[0]:
        raise ValueError(f"{_token(enc, token_id)!r} (id {token_id}) has no embedding row: the model never saw this "
                         "token in training, so its corpus vocabulary folds it into the shared 'other' class and there "
                         "are no neighbours to show. Try a token from its training data (e.g. ' the').")
    k = min(k, int(has_row(table).sum()) - 1)  # a small vocabulary has fewer neighbours than asked for
    ids, scores = (x.tolist() for x in nearest_neighbours(table, token_id, k))
    tokens = [_token(enc, i) for i in ids]
    rows = [f"{r:>4}  {i:>6}  {s:>7.4f}  {t!r}" for r, (i, s, t) in enumerate(zip(ids, scores, tokens), start=1)]
    text = "\n".join([note, f"{'rank':>4}  {'id':>6}  {'cosine':>7}  token", *rows])
    return {"token_id": token_id, "note": note, "ids": ids, "scores": scores, "tokens": tokens, "text": text}


# --- k-means ---

def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances (N, C) between rows of x (N, D) and c (C, D)."""
    return ((x * x).sum(-1, keepdim=True) - 2.0 * x @ c.T + (c * c).sum(-1)[None, :]).clamp_min(0.0)


def _kmeans_pp(x: torch.Tensor, n_clusters: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: the first centre uniformly, each next one with probability ~ squared distance."""
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    d2 = _sq_dists(x, x[chosen]).min(dim=1).values.double()  # (N,)
    for _ in range(1, n_clusters):
        # If every point sits on a centre already (duplicates), take the first unused index.
        nxt = (int(torch.multinomial(d2.cpu(), 1, generator=gen)) if float(d2.sum()) > 0
               else next(i for i in range(n) if i not in chosen))
        chosen.append(nxt)
        d2 = torch.minimum(d2, _sq_dists(x, x[nxt:nxt + 1])[:, 0].double())
    return x[chosen].clone()


def _fill_empty(labels: torch.Tensor, d2: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Give each empty cluster the point farthest from its centre, taken only from clusters of two or more."""
    counts = torch.bincount(labels, minlength=n_clusters)  # (C,)
    labels, own = labels.clone(), d2.gather(1, labels[:, None])[:, 0].clone()  # own: (N,) distance to its centre
    for c in (counts == 0).nonzero().flatten().tolist():
        own[counts[labels] <= 1] = -1.0
        i = int(own.argmax())  # the first index on ties: deterministic
        counts[labels[i]] -= 1
        labels[i], counts[c], own[i] = c, 1, -1.0
    return labels


def kmeans(vectors: torch.Tensor, n_clusters: int, iters: int = 50, seed: int = 0,
           metric: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding -> (labels (N,), centroids (C, D)), deterministic for a seed.
    Args: vectors: (N, D) points. n_clusters: C in 1..N. iters: maximum Lloyd iterations.
        seed: seeds the k-means++ draws (the global RNG is untouched). metric: "euclidean" or "cosine" (spherical)."""
    _check_table(vectors, "vectors")
    n = vectors.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be an int in 1..{n} (the number of vectors), got {n_clusters!r}")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    x = _unit_rows(vectors.detach().float()) if metric == "cosine" else vectors.detach().float()  # (N, D)
    centroids = _kmeans_pp(x, n_clusters, torch.Generator(device="cpu").manual_seed(seed))  # (C, D)
    labels = None
    for _ in range(max(1, iters)):
        d2 = _sq_dists(x, centroids)  # (N, C)
        new = _fill_empty(d2.argmin(dim=1), d2, n_clusters)  # (N,)
        if labels is not None and torch.equal(new, labels):
            break  # converged: the centroids are already the means of these labels
        labels = new
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (C, D)
        centroids = sums / torch.bincount(labels, minlength=n_clusters)[:, None].to(x.dtype)
        if metric == "cosine":
            centroids = _unit_rows(centroids)
    return labels, centroids


def pca_2d(vectors: torch.Tensor) -> torch.Tensor:
    """Project (N, D) vectors on their first two principal axes -> (N, 2) float32, each largest loading positive."""
    _check_table(vectors, "vectors")
    x = vectors.detach().double().cpu()
    x = x - x.mean(dim=0, keepdim=True)  # (N, D)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)  # s (K,) descending, vh (K, D), K = min(N, D)
    axes = vh[:2] * (s[:2] > 1e-6 * s[0].clamp_min(1e-300))[:, None]  # an axis without variance: zeros
    biggest = axes.abs().argmax(dim=1, keepdim=True)  # (<=2, 1)
    axes = axes * torch.where(axes.gather(1, biggest) < 0, -1.0, 1.0)  # largest loading made positive
    out = torch.zeros(x.shape[0], 2, dtype=torch.float64)
    out[:, :axes.shape[0]] = x @ axes.T  # (N, <=2)
    return out.float()
