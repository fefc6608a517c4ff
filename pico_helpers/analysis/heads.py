"""What each attention head does, measured over many held-out windows rather than read off one map: where its
weight goes (previous token, first token, itself, the token after an earlier copy of the current one), how peaked it
is, and a name from those numbers with stated thresholds. Used in 06_experiments (E5)."""
from __future__ import annotations

import math

import torch

from pico_helpers.analysis.attention import attention_weights

__all__ = ["story_windows", "scores_from_weights", "head_scores", "head_type", "heads_table",
           "MIN_QUERY", "PREVIOUS_MIN", "FIRST_MIN", "SELF_MIN", "COPY_MIN", "COPY_OVER_CHANCE", "FOCUSED_MIN",
           "BROAD_MIN"]

MIN_QUERY = 2  # queries t >= 2, where the previous (t-1), first (0) and self (t) keys are three different keys
# head_type's thresholds, tried in this order (the first that holds names the head):
PREVIOUS_MIN = 0.5  # "previous-token": mean weight on key t-1 at least this
FIRST_MIN = 0.5  # "first-token / sink": mean weight on key 0
SELF_MIN = 0.5  # "self": mean weight on key t
COPY_MIN, COPY_OVER_CHANCE = 0.3, 3.0  # "copy / induction": copy weight >= 0.3 and >= 3x a uniform head's
FOCUSED_MIN = 0.5  # "focused (one key, content-based)": the largest weight on one key, averaged, at least this
BROAD_MIN = 0.7  # "broad": entropy at least 70 % of a uniform head's (log(t+1)); otherwise "mixed"


# --- the weights ---

def story_windows(stories: list, n: int, length: int) -> list[list[int]]:
    """The first ``length`` ids of each of the first ``n`` stories that have that many (``corpus.val.tinystories``);
    a ValueError if fewer than n do."""
    windows = [list(s[:length]) for s in stories if len(s) >= length][:n]
    if len(windows) < n:
        raise ValueError(f"only {len(windows)} of {len(stories)} stories have {length} ids; ask for shorter windows")
    return windows


# --- the scores ---

def _window_sums(weights: torch.Tensor, ids) -> dict:
    """Per (layer, head), the SUMS over queries t >= MIN_QUERY of one window's measures, and the query counts."""
    T = weights.shape[-1]
    q = torch.arange(MIN_QUERY, T)  # (nq,) the queries scored
    w = weights[:, :, q].double()  # (L, H, nq, T), zero above the diagonal
    tok = torch.as_tensor(list(ids))
    same = (tok[:, None] == tok[None, :]).tril(-1)  # (T, T): same[t, j] = ids[j] == ids[t] for j < t
    copy_keys = torch.zeros(T, T, dtype=torch.bool)
    copy_keys[:, 1:] = same[:, :-1]  # key j+1 follows an earlier occurrence j of the current token
    has_copy = copy_keys[q].any(-1)  # (nq,) queries whose token occurred before
    n_keys = (q + 1).double()  # (nq,) keys 0..t a query may attend to
    return dict(
        max_weight=w.amax(-1).sum(-1), entropy=-(w * w.clamp_min(1e-30).log()).sum(-1).sum(-1),
        previous=w[:, :, torch.arange(len(q)), q - 1].sum(-1), first=w[..., 0].sum(-1),
        self=w[:, :, torch.arange(len(q)), q].sum(-1),
        copy=(w * copy_keys[q].double())[:, :, has_copy].sum((-1, -2)),
        copy_chance=(copy_keys[q].sum(-1) / n_keys)[has_copy].sum(), uniform_entropy=n_keys.log().sum(),
        queries=len(q), copy_queries=int(has_copy.sum()))


def scores_from_weights(weights, windows) -> list[dict]:
    """Each head's measures from given attention weights, averaged over every query t >= MIN_QUERY of every window.
    Args: weights: one (L, H, T, T) tensor (rows = queries, each a distribution over keys 0..t) or a list of them;
        windows: the matching id list, or a list of them.
    Returns one dict per (layer, head), layer-major: layer, head, max_weight (largest weight on one key), entropy
    (nats), previous (weight on key t-1), first (key 0), self (key t), copy (total weight on the keys j+1 after each
    earlier j < t with ids[j] == ids[t], averaged over the copy_queries queries that have one), copy_chance (what
    a uniform head scores there: the share of such keys), uniform_entropy (a uniform head's: mean log(t+1)),
    queries, copy_queries."""
    if isinstance(weights, torch.Tensor):
        weights, windows = [weights], [windows]
    parts = [_window_sums(w, ids) for w, ids in zip(weights, windows, strict=True)]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    nq, nc = total["queries"], total["copy_queries"]
    if nq == 0:
        raise ValueError(f"no query to score: windows need more than {MIN_QUERY} tokens")
    L, H = weights[0].shape[:2]
    rows = []
    for layer in range(L):
        for head in range(H):
            row = {"layer": layer, "head": head}
            row.update({k: float(total[k][layer, head]) / nq for k in ("max_weight", "entropy", "previous", "first",
                                                                      "self")})
            row["copy"] = float(total["copy"][layer, head]) / nc if nc else math.nan
            row["copy_chance"] = float(total["copy_chance"]) / nc if nc else math.nan
            row.update(uniform_entropy=float(total["uniform_entropy"]) / nq, queries=nq, copy_queries=nc)
            rows.append(row)
    return rows


def head_scores(model, windows: list[list[int]]) -> list[dict]:
    """scores_from_weights of ``model``'s own attention on ``windows`` (GPT-2 id lists, each <= block_size; use 20
    or more held-out windows, e.g. story_windows(corpus.val.tinystories, 20, 128))."""
    return scores_from_weights([attention_weights(model, ids) for ids in windows], windows)


# --- naming and showing heads ---

def head_type(scores: dict) -> str:
    """A name for one head from its scores, by the thresholds above, tried in order: previous-token, first-token /
    sink, self, copy / induction, focused (one key, content-based), broad; "mixed" when none holds."""
    if scores["previous"] >= PREVIOUS_MIN:
        return "previous-token"
    if scores["first"] >= FIRST_MIN:
        return "first-token / sink"
    if scores["self"] >= SELF_MIN:
        return "self"
    copy, chance = scores["copy"], scores["copy_chance"]
    if not math.isnan(copy) and copy >= COPY_MIN and copy >= COPY_OVER_CHANCE * chance:
        return "copy / induction"
    if scores["max_weight"] >= FOCUSED_MIN:
        return "focused (one key, content-based)"
    if scores["entropy"] >= BROAD_MIN * scores["uniform_entropy"]:
        return "broad"
    return "mixed"


def heads_table(scores: list[dict]) -> str:
    """head_scores' rows as a markdown table, one line per head with its measures and head_type."""
    from pico_helpers.workbook.display import md_table

    header = ["layer", "head", "largest weight", "entropy (nats; uniform)", "previous", "first", "self",
              "copy (chance)", "type"]
    rows = [[s["layer"], s["head"], f"{s['max_weight']:.2f}", f"{s['entropy']:.2f} ({s['uniform_entropy']:.2f})",
             f"{s['previous']:.2f}", f"{s['first']:.2f}", f"{s['self']:.2f}",
             f"{s['copy']:.2f} ({s['copy_chance']:.2f})", head_type(s)] for s in scores]
    n = scores[0]
    return (md_table(header, rows) + f"\n\nAveraged over {n['queries']:,} queries (t >= {MIN_QUERY}); copy over the "
            f"{n['copy_queries']:,} of them whose token occurred earlier in its window.")
