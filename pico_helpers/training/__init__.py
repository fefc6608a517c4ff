"""Training: the next-token loss (plain and fused), one step, one epoch, train(), its History, run store and hooks."""
from __future__ import annotations

from pico_helpers.training.callbacks import Callback, LossPlot, TextSamples
from pico_helpers.training.history import History
from pico_helpers.training.losses import compute_next_token_loss, fused_linear_cross_entropy, next_token_loss
from pico_helpers.training.loop import (evaluate, make_optimizer, pick_device, train, train_epoch,
                                        train_step)
from pico_helpers.training.store import RunStore, check_run_name, data_fingerprint, load_checkpoint, run_identity

__all__ = ["Callback", "LossPlot", "TextSamples", "History", "compute_next_token_loss", "fused_linear_cross_entropy",
           "next_token_loss", "evaluate", "make_optimizer", "pick_device", "train", "train_epoch",
           "train_step", "RunStore", "check_run_name", "data_fingerprint", "load_checkpoint", "run_identity"]
