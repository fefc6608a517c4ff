"""The K-gram row: the course starter's one-hot loop against the vectorised K-gram MLP, one training step each."""
from __future__ import annotations

import torch

from benchmarks.baselines import starter_loop_kgram_forward
from benchmarks.harness import LEARNING_RATE, Row, alternate, make_step, plain_adam, random_ids, speed_row
from pico_helpers.models import KGramMLPSeqModel
from pico_helpers.training import compute_next_token_loss, make_optimizer, next_token_loss

__all__ = ["kgram_rows"]


def _about(sizes, n_calls: int, diff: float) -> str:
    return ("One training step (loss, zero_grad, backward, Adam step) of a `KGramMLPSeqModel` (one-hot input, "
            f"1 inner layer) on a random ({sizes.kgram_seq}, {sizes.kgram_batch}) batch. Baseline: the course "
            "starter's formulation, `starter_loop_kgram_forward` in benchmarks/baselines.py: for every time step "
            "and batch element, the concatenated one-hot vector of the k-token window (k x vocab wide) goes through "
            "the model's own layers, one MLP call each; then the plain cross-entropy over the full logits and "
            "`torch.optim.Adam(fused=False, foreach=False)`. Fast: what `train()` runs: `next_token_loss` on the "
            "vectorised model, which gathers the k columns of the first weight matrix instead of multiplying by "
            "one-hot vectors, for all positions at once, and `make_optimizer` (fused Adam). Two models with the "
            "same initial weights compute the same function (tests/test_bench.py checks it; here the largest "
            f"logit difference on two time steps was {diff:.1e}). Each of the loop's {n_calls:,} MLP calls "
            f"multiplies a {sizes.kgram_k * sizes.vocab:,}-wide row by the whole first weight matrix "
            f"({sizes.kgram_k * sizes.vocab * sizes.kgram_hidden * 4 / 1e6:.0f} MB), and its backward writes a "
            "gradient of that size per call; the gather reads k columns and scatters k columns back.")


def kgram_rows(sizes, device) -> list[Row]:
    """One training step of the one-hot K-gram MLP: the starter's loop against the vectorised model (target 50x)."""
    def build():
        torch.manual_seed(0)
        return KGramMLPSeqModel(sizes.vocab, k=sizes.kgram_k, embed_size=sizes.kgram_hidden, num_inner_layers=1,
                                chunk_size=0, input_mode="one_hot").to(device)

    loop_model, fast_model = build(), build()  # the same initial weights, one model per side
    idx = random_ids(sizes.kgram_seq, sizes.kgram_batch, sizes.vocab, device)  # (T, B)
    with torch.no_grad():
        diff = (starter_loop_kgram_forward(loop_model, idx[:2]) - fast_model(idx[:2])).abs().max().item()
    loop_step = make_step(loop_model, plain_adam(loop_model),
                          lambda: compute_next_token_loss(starter_loop_kgram_forward(loop_model, idx), idx))
    fast_step = make_step(fast_model, make_optimizer(fast_model, LEARNING_RATE),
                          lambda: next_token_loss(fast_model, idx))
    fast_step()  # warm-up of the fast side; the loop's warm-up was the two-position check above
    times = alternate({"loop": loop_step, "fast": fast_step}, device, sizes.repeats, sizes.budget_s, warmup=0)
    what = (f"K-gram MLP one-hot training step (k={sizes.kgram_k}, hidden {sizes.kgram_hidden}, seq "
            f"{sizes.kgram_seq}, batch {sizes.kgram_batch}, vocab {sizes.vocab:,})")
    return [speed_row("kgram", what, "starter loop (one-hot per token) + plain CE + unfused Adam",
                      "vectorised (column gather) + fused loss + fused Adam",
                      idx.numel(), times["loop"], times["fast"], 50, _about(sizes, idx.numel(), diff),
                      note=f"max |loop - fast| logits = {diff:.1e}")]
