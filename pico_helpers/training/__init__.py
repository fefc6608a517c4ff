"""Training: the next-token loss (plain and fused), the loop, evaluation and checkpoints."""
from __future__ import annotations

from pico_helpers.training.losses import compute_next_token_loss, fused_linear_cross_entropy, next_token_loss
from pico_helpers.training.loop import evaluate, load_checkpoint, make_optimizer, pick_device, train

__all__ = ["compute_next_token_loss", "fused_linear_cross_entropy", "next_token_loss", "evaluate", "load_checkpoint", "make_optimizer", "pick_device", "train"]
