"""What an SAE reads: one site's activations over whole stories (GPT-2 ids, through a CorpusVocabModel), the loss
recovered over many held-out stories, and the starter's annotation made from features. Used by sae_runs.py, the
feature browser, generate_text(..., monosemantic=True) and 07_monosemanticity.ipynb."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import torch

from pico_helpers.analysis.sae import collect_activations, loss_recovered

__all__ = ["raw_transformer", "StoryActivations", "story_activations", "held_out_loss_recovered", "sae_features",
           "annotate_features"]


# --- activations of whole stories ---

def raw_transformer(model):
    """(the TransformerModel to hook, GPT-2 ids -> its ids): a CorpusVocabModel's inner model and its mapping."""
    from pico_helpers.data.vocab import CorpusVocabModel

    if isinstance(model, CorpusVocabModel):
        return model.model, lambda ids: model.index[ids]
    if not hasattr(model, "blocks"):
        raise ValueError(f"an SAE reads a Transformer's blocks; {type(model).__name__} has none "
                         "(train the kvcache_transformer)")
    return model, lambda ids: ids


@dataclass
class StoryActivations:
    """The activations at one site for every token of ``seqs``, sequence after sequence.
    acts (N, D_site) float32 on the CPU; seqs: the GPT-2 id lists included; row starts[i] is seqs[i][0]."""

    acts: torch.Tensor
    seqs: list
    starts: list = field(default_factory=list)

    @property
    def ids(self) -> torch.Tensor:
        """(N,) the token at each row."""
        return torch.tensor([t for s in self.seqs for t in s], dtype=torch.long)

    @property
    def next_ids(self) -> torch.Tensor:
        """(N,) the token after each row in its sequence, -1 at a sequence's end."""
        return torch.tensor([t for s in self.seqs for t in list(s[1:]) + [-1]], dtype=torch.long)

    def where(self, row: int) -> tuple[int, int]:
        """(sequence index, position) of a row."""
        i = bisect.bisect_right(self.starts, row) - 1
        return i, row - self.starts[i]


def story_activations(model, seqs: list, layer: int, site: str = "resid", max_tokens: int | None = None,
                      batch_size: int = 16) -> StoryActivations:
    """Run ``model`` over GPT-2 id sequences (each <= its block_size) and keep one site's activations per token.
    Args: model: a CorpusVocabModel or a TransformerModel. seqs: the sequences, in the order wanted; the first ones
        up to ``max_tokens`` tokens (at least one) are used. layer, site: as collect_activations. batch_size:
        sequences per forward pass (similar lengths batched together, rows put back in order)."""
    from pico_helpers.data.corpus import collate

    if not seqs:
        raise ValueError("seqs is empty: give at least one sequence of GPT-2 ids")
    raw, to_model = raw_transformer(model)
    device = next(raw.parameters()).device
    kept, total = [], 0
    for s in seqs:
        if kept and max_tokens is not None and total + len(s) > max_tokens:
            break
        kept.append(list(s))
        total += len(s)
    starts = [0]
    for s in kept:
        starts.append(starts[-1] + len(s))
    out = None
    order = sorted(range(len(kept)), key=lambda i: len(kept[i]))
    for b0 in range(0, len(order), batch_size):
        rows = order[b0:b0 + batch_size]
        tokens, mask = collate([kept[i] for i in rows])  # (T, b) each
        h = collect_activations(raw, [(to_model(tokens.to(device)), mask)], layer, site)  # (n_real, D) t-major
        t, b = mask.nonzero(as_tuple=True)  # the (position, sequence) of each row of h
        if out is None:
            out = torch.empty(total, h.shape[1])
        out[torch.tensor(starts)[torch.tensor(rows)][b] + t] = h
    return StoryActivations(out, kept, starts)


def held_out_loss_recovered(model, sae, seqs: list, layer: int, site: str = "resid", batch_size: int = 16) -> dict:
    """loss_recovered over many sequences: each loss (over all 50,257 GPT-2 ids) is the mean over every real target,
    so longer batches weigh more. Returns dict(clean, zero_ablated, spliced, fraction) as loss_recovered."""
    from pico_helpers.data.corpus import collate
    from pico_helpers.training.losses import next_token_loss

    raw, _ = raw_transformer(model)
    device = next(raw.parameters()).device
    sums, n = {"clean": 0.0, "zero_ablated": 0.0, "spliced": 0.0}, 0
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b0 in range(0, len(order), batch_size):
        tokens, mask = collate([seqs[i] for i in order[b0:b0 + batch_size]])
        if tokens.shape[0] < 2:
            continue
        targets = int(mask[1:].sum())
        part = loss_recovered(raw, sae, tokens.to(device), mask.to(device), layer, site,
                              loss_fn=lambda m, t, k: next_token_loss(model, t, k))  # hooks raw, runs model
        for key in sums:
            sums[key] += part[key] * targets
        n += targets
    if n == 0:
        raise ValueError("no sequence has two or more tokens: nothing to predict")
    losses = {key: value / n for key, value in sums.items()}
    gap = losses["zero_ablated"] - losses["clean"]
    losses["fraction"] = (losses["zero_ablated"] - losses["spliced"]) / gap if gap != 0 else float("nan")
    return losses


# --- the starter's annotation, from features ---

@torch.no_grad()
def sae_features(model, sae_run, ids: list, start: int = 0) -> torch.Tensor:
    """The SAE's feature activations (len(ids) - start, F) at every token from ``start`` on, each read with its
    context (the last block_size tokens up to it, as generation sees them)."""
    raw, _ = raw_transformer(model)
    block = getattr(raw, "block_size", None) or len(ids)
    sae, rows = sae_run.sae, []
    first = story_activations(model, [ids[:block]], sae_run.layer, sae_run.site).acts  # one pass for the first block
    rows += [first[p] for p in range(start, min(len(ids), block))]
    for p in range(max(start, block), len(ids)):  # past block_size: the window that ends at p
        rows.append(story_activations(model, [ids[p - block + 1:p + 1]], sae_run.layer, sae_run.site).acts[-1])
    if not rows:
        return torch.zeros(0, sae.n_features)
    return sae.encode(torch.stack(rows).to(sae.W_dec.device)).cpu()  # the rows come back on the CPU


def annotate_features(model, sae_run, ids: list, start: int, decode, k: int = 3) -> str:
    """Each token from ``start`` on as ``token[F12:' dog' F7:'.' F3:' the']``: its k strongest SAE features, each with
    its label (the token it fires on most in held-out stories), strongest first; ``token[-]`` if none fires.
    Args: ids: the GPT-2 ids (prompt and generated); decode: id -> text, e.g. ``lambda i: enc.decode([i])``."""
    feats = sae_features(model, sae_run, [int(i) for i in ids], start)  # (n, F)
    parts = []
    for token, f in zip(ids[start:], feats):
        top = f.topk(min(k, len(f)))
        names = [f"F{i}" + (f":{sae_run.labels[i]!r}" if sae_run.labels and sae_run.labels[i] else "")
                 for v, i in zip(top.values.tolist(), top.indices.tolist()) if v > 0]
        parts.append(f"{decode(int(token))}[{' '.join(names) or '-'}]")
    return "".join(parts)
