"""The training steps that the speed rows time and the --one memory subprocesses measure, built by name."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from benchmarks.harness import (LEARNING_RATE, bf16_autocast, make_step, plain_adam, random_ids,
                                transformer)
from pico_helpers.models import LSTMSeqModel
from pico_helpers.training import compute_next_token_loss, make_optimizer, next_token_loss

__all__ = ["STEP_NAMES", "build_step", "default_adam_impl"]

STEP_NAMES = ("transformer:plain", "transformer:fast", "transformer:bf16", "lstm:default", "lstm:fused")


def _transformer_step(variant: str, sizes, device) -> tuple[Callable[[], object], int, dict]:
    model = transformer(sizes, sizes.vocab, device)
    idx = random_ids(sizes.tf_block, sizes.tf_batch, sizes.vocab, device)  # (T, B)
    if variant == "plain":
        optimizer = plain_adam(model)
        loss_fn = lambda: compute_next_token_loss(model(idx), idx)  # noqa: E731  (T, B, V) logits
    else:
        optimizer = make_optimizer(model, LEARNING_RATE)
        cast = (lambda: bf16_autocast(device)) if variant == "bf16" else nullcontext

        def loss_fn():
            with cast():
                return next_token_loss(model, idx)
    info = {"fused": bool(optimizer.defaults.get("fused")), "model": model, "idx": idx}
    return make_step(model, optimizer, loss_fn), idx.numel(), info


def _lstm_step(variant: str, sizes, device) -> tuple[Callable[[], object], int, dict]:
    torch.manual_seed(0)
    model = LSTMSeqModel(sizes.vocab, sizes.lstm_size, sizes.lstm_size).to(device)
    idx = random_ids(sizes.lstm_seq, sizes.lstm_batch, sizes.vocab, device)  # (T, B)
    if variant == "default":
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    else:
        optimizer = make_optimizer(model, LEARNING_RATE)
    info = {"fused": bool(optimizer.defaults.get("fused")), "model": model, "idx": idx, "optimizer": optimizer}
    return make_step(model, optimizer, lambda: next_token_loss(model, idx)), idx.numel(), info


def build_step(name: str, sizes, device) -> tuple[Callable[[], object], int, dict]:
    """One training step of ``name`` ("family:variant") on a fresh model and fixed batch.

    Returns (step, tokens per step, info). Families and variants:
      transformer:plain  model(idx) full logits + compute_next_token_loss + Adam(fused=False, foreach=False)
      transformer:fast   next_token_loss (fused head + cross-entropy, chunked) + make_optimizer (fused Adam)
      transformer:bf16   the fast step under torch.autocast(bfloat16)
      lstm:default       next_token_loss + torch.optim.Adam with torch's default implementation
      lstm:fused         next_token_loss + make_optimizer (fused Adam)
    """
    if name not in STEP_NAMES:
        raise ValueError(f"unknown step {name!r}; use one of {', '.join(STEP_NAMES)}")
    family, _, variant = name.partition(":")
    return (_transformer_step if family == "transformer" else _lstm_step)(variant, sizes, device)


def default_adam_impl(device) -> str:
    """Which Adam implementation torch picks when neither fused nor foreach is given, on ``device``."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach  # private: only to name the choice

        p = torch.zeros(1, device=device, requires_grad=True)
        _, foreach = _default_to_fused_or_foreach([p], differentiable=False, use_fused=False)
        return "foreach (multi-tensor)" if foreach else "single-tensor for-loop"
    except Exception:  # the private helper moved: say so instead of guessing
        return "unknown (this torch does not expose its default)"
