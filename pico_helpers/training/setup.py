"""What a run is set up with: its device, bf16 or not, the optimizer, its steps per epoch and the learning rate of
each step.
Used by train() (training/loop.py); pick_device also in 04_transformer.ipynb."""
from __future__ import annotations

import math

import torch

from pico_helpers.config import TrainConfig

__all__ = ["pick_device", "check_device_id", "use_bf16", "make_optimizer", "lr_at"]


DEVICE_TYPES = ("cpu", "cuda", "mps")  # the devices a run can train on; "auto" picks among them


def check_device_id(device_id: str | None) -> torch.device | None:
    """``device_id`` as a torch.device (None for auto), or a ValueError listing the devices a run can use."""
    if device_id in (None, "", "auto"):
        return None
    usable = "cpu, cuda, cuda:N, mps or auto"
    if not isinstance(device_id, str):
        raise ValueError(f"device_id must be a string, got {device_id!r}; use {usable}")
    try:
        device = torch.device(device_id)
    except RuntimeError:
        raise ValueError(f"device_id {device_id!r} is not a torch device; use {usable}") from None
    if device.type not in DEVICE_TYPES or (device.type == "cpu" and device.index):
        raise ValueError(f"device_id {device_id!r} is not a device this workbook trains on; use {usable}")
    return device


def pick_device(device_id: str | None = None, verbose: bool = True) -> torch.device:
    """``device_id`` if it is usable, else cuda > mps > cpu. A missing requested device says so and falls back;
    a device other than cpu, cuda or mps (meta, xpu, ...) is refused with a ValueError that lists them."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    auto = torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    device = check_device_id(device_id)
    if device is None:
        return auto
    if (device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count()) or (
            device.type == "mps" and not has_mps):
        fallback = auto if device.type == "cuda" else torch.device("cpu")
        if verbose:
            print(f"Requested device {device_id} is not available (CUDA GPUs: {torch.cuda.device_count()}); "
                  f"using {fallback} instead.")
        return fallback
    return device


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast as ``config.bf16`` says; auto (None): on for CUDA GPUs that support it, off on CPUs, where it
    trained no faster (BENCHMARKS.md's bf16 row) and, in an earlier probe, to a worse loss per step (README, Speed)."""
    if config.bf16 is not None:
        return config.bf16
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def make_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """Adam (the starter's optimizer), fused into one kernel per step where this torch supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=learning_rate)


def lr_at(step: int, config: TrainConfig, total_steps: int, elapsed_s: float = 0.0) -> float:
    """Learning rate of update ``step`` (0-based), a pure function of the step (and, with a time budget, of the
    training seconds so far), so a resumed run gets the same rates. "cosine": linear warm-up over warmup_steps,
    then cosine decay to 10% of learning_rate at the last of ``total_steps``, or at the end of time_budget_s."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (elapsed_s / config.time_budget_s if config.time_budget_s
                else (step - config.warmup_steps) / max(1, total_steps - 1 - config.warmup_steps))
    return config.learning_rate * (0.1 + 0.9 * (1 + math.cos(math.pi * min(1.0, progress))) / 2)  # 100% to 10%


def steps_per_epoch(corpus, config: TrainConfig) -> int:
    """Batches in an epoch: the training set's, or max_steps_per_epoch if fewer."""
    return min(math.ceil(len(corpus.train) / config.batch_size), config.max_steps_per_epoch or math.inf)
