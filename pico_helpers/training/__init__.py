"""Training: the next-token loss (plain and fused), one step, one epoch, train(), its History and hooks."""
from __future__ import annotations

from pico_helpers.training.callbacks import Callback, LossPlot, ProgressBar, ProgressLog, TextSamples
from pico_helpers.training.history import History
from pico_helpers.training.losses import compute_next_token_loss, fused_linear_cross_entropy, next_token_loss
from pico_helpers.training.loop import Diverged, evaluate, fit, train, train_epoch, train_step
from pico_helpers.training.setup import lr_at, make_optimizer, pick_device, use_bf16

__all__ = ["Callback", "LossPlot", "ProgressBar", "ProgressLog", "TextSamples", "History", "compute_next_token_loss", "fused_linear_cross_entropy",
           "next_token_loss", "Diverged", "evaluate", "fit", "train", "train_epoch", "train_step",
           "lr_at", "make_optimizer", "pick_device", "use_bf16"]
