"""Data-parallel training (DDP) under torchrun: each process trains on its share of every global batch.
Used by train() once pico.py has joined torchrun's process group; in one process (the notebooks) all are no-ops."""
from __future__ import annotations

import io
import signal

import torch
import torch.distributed as dist
import torch.nn as nn

from pico_helpers.training.history import History
from pico_helpers.training.losses import next_token_loss

__all__ = ["is_main", "share_run", "shard", "all_sum", "LossModule", "wrap", "release"]

_STOP = {"local": False, "all": False}  # a SIGINT/SIGTERM seen by this rank; by any rank (known after each step)


def is_main() -> bool:
    """True on rank 0 and in a single process: the process that prints and writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def share_run(history: History | None, model: nn.Module, optimizer) -> History | None:
    """Rank 0's History (None: a new run), weights and Adam state on every rank; only rank 0 opens the run's folder."""
    if not dist.is_initialized():
        return history
    buf = io.BytesIO()
    if is_main() and history is not None:
        torch.save({"history": history.to_dict(), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict()}, buf)
    box = [buf.getvalue()]
    dist.broadcast_object_list(box, src=0)
    if is_main() or not box[0]:
        return history
    state = torch.load(io.BytesIO(box[0]), map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return History.from_dict(state["history"])


def shard(tokens: torch.Tensor, mask: torch.Tensor):
    """This rank's sequences of a (T, B) batch, every WORLD_SIZE-th from its rank on; in one process all of them."""
    if not dist.is_initialized():
        return tokens, mask
    rank, world = dist.get_rank(), dist.get_world_size()
    return tokens[:, rank::world], mask[:, rank::world]  # (T, B / world)


def all_sum(device, *values: float) -> tuple:
    """Each value summed over all ranks in float64 (the same result on every rank); unchanged in one process."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return tuple(t.tolist())


class LossModule(nn.Module):
    """next_token_loss as a module's forward. DDP averages the gradients only of what runs through its wrapper's
    forward, and next_token_loss calls ``model.hidden`` and ``model.head`` directly; so DDP wraps this module."""

    def __init__(self, model: nn.Module, view=None):
        super().__init__()
        self.model, self.view = model, view  # view: the compiled view (not a module), or None

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, **loss_args):
        """(this rank's loss to backward, the global batch's mean loss) of a global (T, B) batch and mask. Rank r's
        mean over its n_r targets weighs world * n_r / N (N: all targets), so DDP's average of the gradients is the
        gradient of the global mean: 2 ranks x 8 sequences train as 1 process x 16. Once a step has found a Ctrl-C
        on any rank, the next one raises KeyboardInterrupt on every rank before it changes anything."""
        if _STOP["all"]:
            raise KeyboardInterrupt
        mine, keep = shard(tokens, mask)
        if mine.shape[1] == 0:  # a last batch smaller than the world: a stand-in sequence that counts for nothing
            mine, keep = tokens[:, :1], torch.zeros_like(mask[:, :1])
        loss, n = next_token_loss(self.view or self.model, mine, keep, **loss_args), int(keep[1:].sum())
        total, count, stops = all_sum(tokens.device, float(loss.detach()) * n, n, _STOP["local"])
        _STOP["all"] = stops > 0
        return loss * (dist.get_world_size() * n / max(count, 1)), total / max(count, 1)


def wrap(model: nn.Module, step_model):
    """Under torchrun: DDP around a LossModule, for train_step; until ``release``, SIGINT and SIGTERM only set a flag
    that the next step shares, so that all ranks stop after the same step. In one process: ``step_model`` unchanged."""
    if not dist.is_initialized():
        return step_model
    previous = [signal.signal(s, lambda *_: _STOP.update(local=True)) for s in (signal.SIGINT, signal.SIGTERM)]
    _STOP.update(local=False, all=False, previous=previous)
    device = next(model.parameters()).device
    loss = LossModule(model, None if step_model is model else step_model)
    return nn.parallel.DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None)


def release() -> None:
    """Put back the signal handlers that ``wrap`` replaced."""
    for s, handler in zip((signal.SIGINT, signal.SIGTERM), _STOP.pop("previous", ())):
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)
