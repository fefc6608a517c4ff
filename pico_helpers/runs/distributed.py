"""Data-parallel training under torchrun (the workbook's machinery): each process trains on its share of every
global batch, through the same fit() as train(). The course loop never sees it: DataParallelLoss is a model whose
next_token_loss splits the batch and averages across the processes. Used by pico.py under torchrun."""
from __future__ import annotations

import io
import signal
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
import torch.nn as nn

from pico_helpers.training.history import History
from pico_helpers.training.losses import next_token_loss

__all__ = ["is_main", "share_run", "shard", "all_sum", "DataParallelLoss", "train_data_parallel"]

_STOP = {"local": False, "all": False}  # a SIGINT/SIGTERM seen by this rank; by any rank (known after each step)


def is_main() -> bool:
    """True on rank 0 and in a single process: the process that prints and writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def share_run(history: History, model: nn.Module, optimizer) -> History:
    """Rank 0's History, weights and Adam state on every rank (only rank 0 opened the run's folder)."""
    buf = io.BytesIO()
    if is_main():
        torch.save({"history": history.to_dict(), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict()}, buf)
    box = [buf.getvalue()]
    dist.broadcast_object_list(box, src=0)
    if is_main():
        return history
    state = torch.load(io.BytesIO(box[0]), map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return History.from_dict(state["history"])


def shard(tokens: torch.Tensor, mask: torch.Tensor):
    """This rank's sequences of a (T, B) batch: every WORLD_SIZE-th, from its rank on."""
    rank, world = dist.get_rank(), dist.get_world_size()
    return tokens[:, rank::world], mask[:, rank::world]  # (T, B / world)


def all_sum(device, *values: float) -> tuple:
    """Each value summed over all ranks in float64 (the same result on every rank)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return tuple(t.tolist())


class _Loss(nn.Module):
    """next_token_loss as a module's forward: DDP averages the gradients only of what runs through its forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, mask, chunk_size=None):
        return next_token_loss(self.model, tokens, mask, chunk_size)


class DataParallelLoss(nn.Module):
    """``model`` under DistributedDataParallel, as the training loop sees a model. Its ``next_token_loss`` takes the
    GLOBAL (T, B) batch, runs this rank's share through DDP and returns a loss whose value is the global batch's mean
    (so every rank records the same History) and whose gradient, once DDP has averaged it, is the gradient of that
    mean: 2 ranks x 8 sequences train as 1 process x 16. Its state dict is the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        device = next(model.parameters()).device
        self.model = model
        self.ddp = nn.parallel.DistributedDataParallel(_Loss(model),
                                                       device_ids=[device.index] if device.type == "cuda" else None)

    def next_token_loss(self, tokens, pad_mask=None, chunk_size=None):
        """The mean loss of a global batch; after a Ctrl-C on any rank, KeyboardInterrupt on every rank at once."""
        if _STOP["all"]:
            raise KeyboardInterrupt
        pad_mask = torch.ones_like(tokens, dtype=torch.bool) if pad_mask is None else pad_mask
        mine, keep = shard(tokens, pad_mask)
        if mine.shape[1] == 0:  # a last batch smaller than the world: a stand-in sequence that counts for nothing
            mine, keep = tokens[:, :1], torch.zeros_like(pad_mask[:, :1])
        loss, n = self.ddp(mine, keep, chunk_size), int(keep[1:].sum())
        total, count, stops = all_sum(tokens.device, float(loss.detach()) * n, n, _STOP["local"])
        _STOP["all"] = stops > 0
        share = loss * (dist.get_world_size() * n / max(count, 1))  # this rank's part of the global mean's gradient
        return share + (total / max(count, 1) - share.detach())  # value: the global mean; gradient: the share's

    def forward(self, idx, **kwargs):
        """The model's logits (rank 0's text samples); training goes through ``next_token_loss``."""
        return self.model(idx, **kwargs)

    def next_logits(self, idx_new, state=None):
        return self.model.next_logits(idx_new, state)

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state, strict, assign)


@contextmanager
def _stop_flags():
    """SIGINT and SIGTERM only set a flag, shared at the next step, so that all ranks stop after the same step."""
    previous = [signal.signal(s, lambda *_: _STOP.update(local=True)) for s in (signal.SIGINT, signal.SIGTERM)]
    _STOP.update(local=False, all=False)
    try:
        yield
    finally:
        for s, handler in zip((signal.SIGINT, signal.SIGTERM), previous):
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def train_data_parallel(model: nn.Module, corpus, config, name: str = "model", resume: bool = True) -> History:
    """train() under torchrun: every rank trains the same run on its share of each global batch (config.batch_size
    is the global batch); rank 0 alone opens, prints and writes the run's files."""
    from pico_helpers.runs.store import RunStore
    from pico_helpers.training.callbacks import LossPlot, ProgressLog, TextSamples
    from pico_helpers.runs.prepare import prepare_run
    from pico_helpers.training.loop import fit, is_complete
    from pico_helpers.training.setup import steps_per_epoch

    main = is_main()
    say = print if main else (lambda *args, **kwargs: None)
    store = RunStore(config.output_dir, name)
    with store.writer() if main else nullcontext():  # rank 0 holds the run's lock: one torchrun per run
        config, optimizer, history = prepare_run(model, corpus, config, name, store if main else None, resume, main,
                                                 say)
        history = share_run(history, model, optimizer)
        for i in range(history.epoch):
            say(history.epoch_line(i, "(saved)"))
        if is_complete(history, config):
            return history
        if main:
            store.check_writable()
        hooks = [LossPlot(store, live=False), ProgressLog(config.log_every, steps_per_epoch(corpus, config)),
                 TextSamples(corpus.enc, config.prompt, config.sample_every_s)] if main else []
        save = (lambda: store.save(model, optimizer, config, history)) if main else (lambda: None)
        with _stop_flags():
            return fit(DataParallelLoss(model), optimizer, corpus, config, history, hooks, save, say)
