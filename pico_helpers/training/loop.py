"""The training loop, top to bottom: one step, evaluation, one epoch, the epochs of a run, and train().

train() is the function every notebook and pico.py calls. It keeps each run in a RunStore (runs/store.py), so a run
resumes where it stopped, and returns its History. Used in every notebook."""
from __future__ import annotations

import itertools
import math
import time

import torch

from pico_helpers.config import TrainConfig
from pico_helpers.data import Corpus, iterate_batches
from pico_helpers.runs.interrupts import hold_interrupts, stops_save
from pico_helpers.runs.prepare import check_arguments, prepare_run, run_hooks, store_saver
from pico_helpers.runs.store import RunStore
from pico_helpers.analysis.plots import in_notebook
from pico_helpers.training.history import History
from pico_helpers.training.losses import next_token_loss
from pico_helpers.training.setup import lr_at, steps_per_epoch

__all__ = ["train_step", "evaluate", "train_epoch", "fit", "is_complete", "train", "Diverged", "VAL_SAMPLE",
           "TIME_POINTS"]

VAL_SAMPLE = 256  # held-out sequences scored at every validation point (epoch ends also score all of them)
TIME_POINTS = 12  # mid-epoch validation points over a time budget (time_budget_s)
DIVERGED_STEPS = 20  # steps in a row with a loss above twice a uniform guess's: the run has diverged


class Diverged(ValueError):
    """The training loss became non-finite: the update that caused it was not applied."""


# --- one step, one evaluation ---

def train_step(model, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, mask: torch.Tensor | None,
               config: TrainConfig) -> float:
    """One optimizer step on one batch: next-token loss, backward, Adam update. Returns the loss before the update;
    a non-finite loss is returned without applying its update, so the weights stay as they were.
    Args: tokens: (T, B) long ids on the model's device; mask: (T, B) bool, True = real token;
        config: bf16 (autocast, as train() resolved it) and loss_chunk_size (rows per chunk of the fused loss)."""
    with torch.autocast(tokens.device.type, torch.bfloat16, enabled=bool(config.bf16)):
        loss = next_token_loss(model, tokens, mask, config.loss_chunk_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = float(loss.detach())  # syncs the device, so step timings are honest
    if math.isfinite(value):
        optimizer.step()
    return value


@torch.no_grad()
def evaluate(model, dataset, config: TrainConfig | None = None) -> float | None:
    """Mean next-token cross-entropy (nats per real target token) over ``dataset``; None if it is empty.
    ``config``: batch_size, bf16 and loss_chunk_size (default: batches of 16 in float32)."""
    if dataset is None or len(dataset) == 0:
        return None
    config = config or TrainConfig.quick()  # its batch_size 16, float32, the default chunks
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    total, count = 0.0, 0
    for tokens, mask in iterate_batches(dataset, config.batch_size, shuffle=False, bucket=True):  # similar lengths
        tokens, mask = tokens.to(device), mask.to(device)
        n = int(mask[1:].sum())
        with torch.autocast(device.type, torch.bfloat16, enabled=bool(config.bf16)):
            total += float(next_token_loss(model, tokens, mask, config.loss_chunk_size)) * n
        count += n
    model.train(was_training)
    return total / count if count else None


# --- one epoch ---

class EvalClock:
    """When the next mid-epoch validation point is due: every ``every`` steps, or with a time budget every
    budget / TIME_POINTS seconds of training steps. eval_every 0 means epoch ends only."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int, history: History):
        self.in_seconds = bool(config.time_budget_s)
        self.every = (config.time_budget_s / TIME_POINTS if self.in_seconds else config.eval_every
                      if config.eval_every is not None else max(1, config.epochs * steps_per_epoch // 10))
        self.next = self._after(history)

    def _after(self, history: History) -> float:
        now = history.train_time_s if self.in_seconds else history.step
        return (math.floor(now / self.every) + 1) * self.every if self.every else math.inf

    def due(self, history: History) -> bool:
        """True once the clock has passed the next point; the point after it is then set."""
        if (history.train_time_s if self.in_seconds else history.step) < self.next:
            return False
        self.next = self._after(history)
        return True


def out_of_time(history: History, config: TrainConfig) -> bool:
    """True once the run has spent its time budget (never without one)."""
    return bool(config.time_budget_s) and history.train_time_s >= config.time_budget_s


def train_epoch(model, optimizer, corpus: Corpus, config: TrainConfig, history: History, hooks=()) -> None:
    """Train epoch ``history.epoch`` to its end (or the time budget's), from step ``history.step_in_epoch``.
    Each step's loss enters the History with its update, the epoch's means with its end (a Ctrl-C waits for
    both), so a checkpoint taken at any interrupt resumes exactly; a validation point a Ctrl-C interrupted is done
    again first. hooks: callbacks (on_step, on_eval), which also do all the printing."""
    epoch, done, n_steps = history.epoch, history.step_in_epoch, steps_per_epoch(corpus, config)
    clock, val_sample = EvalClock(config, n_steps, history), fixed_sample(corpus.val)
    history.val_size, history.val_sample_size = (len(corpus.val), len(val_sample)) if corpus.val else (0, 0)
    if history.eval_pending:
        validation_point(model, val_sample, config, history, hooks)
    corpus.train.set_epoch(epoch)
    batches = iterate_batches(corpus.train, config.batch_size, seed=config.seed, epoch=epoch,
                              bucket=config.bucket_by_length)
    loss_sum, tokens_done, time_done = sum(history.step_loss[history.step - done:]), 0, 0.0
    for i, (tokens, mask) in enumerate(itertools.islice(batches, n_steps)):
        if i < done:  # resuming mid-epoch: the batch order is fixed, skip the batches already trained on
            continue
        due = lambda h: (clock.due(h) and i + 1 < n_steps and not out_of_time(h, config)  # noqa: E731
                         and val_sample is not None)  # a mid-epoch point: the epoch's end scores everything anyway
        loss, n_tokens, dt = step(model, optimizer, tokens, mask, config, history, n_steps, due)
        loss_sum, tokens_done, time_done = loss_sum + loss, tokens_done + n_tokens, time_done + dt
        if history.eval_pending:
            validation_point(model, val_sample, config, history, hooks)
        call(hooks, "on_step", history, model)
        if out_of_time(history, config):
            break
    val = evaluate(model, corpus.val, config)  # the whole held-out set; the curve's point scores its sample
    point = val if val_sample is corpus.val else evaluate(model, val_sample, config)
    with hold_interrupts():
        history.record_epoch(loss_sum, val, point, tokens_done / time_done if time_done else None)


def step(model, optimizer, tokens, mask, config: TrainConfig, history: History, n_steps: int, due
         ) -> tuple[float, int, float]:
    """train_step at the schedule's learning rate, recorded in the History together with its update and whether a
    validation point is ``due`` (a Ctrl-C waits for all three). Returns (loss, real tokens, seconds).
    Raises Diverged at a non-finite loss (its update not applied) or a loss stuck far above a uniform guess."""
    t0, device = time.perf_counter(), next(model.parameters()).device
    tokens, mask = tokens.to(device, non_blocking=True), mask.to(device, non_blocking=True)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(history.step, config, config.epochs * n_steps, history.train_time_s)
    with hold_interrupts():
        loss = train_step(model, optimizer, tokens, mask, config)
        if not math.isfinite(loss):
            raise Diverged(f"[{history.model}] the training loss is {loss} at step {history.step + 1}: learning_rate "
                           f"{config.learning_rate:g} is probably too high, try {config.learning_rate / 10:g}. "
                           "Training stopped before that update; the last checkpoint was left as it was.")
        dt, n_tokens = time.perf_counter() - t0, int(mask.sum())
        history.record_step(loss, n_tokens, dt)
        history.eval_pending = due(history)
    uniform, recent = math.log(max(history.vocab_size, 2)), history.step_loss[-DIVERGED_STEPS:]
    if len(recent) == DIVERGED_STEPS and min(recent) > 2 * uniform:
        raise Diverged(f"[{history.model}] the training loss stayed above 2 x ln(vocab) = {2 * uniform:.2f} for "
                       f"{DIVERGED_STEPS} steps (now {loss:.4g}): training diverged; learning_rate "
                       f"{config.learning_rate:g} is too high, try {config.learning_rate / 10:g}. The run is kept "
                       "unfinished: its last checkpoint is from before.")
    return loss, n_tokens, dt


def validation_point(model, val_sample, config: TrainConfig, history: History, hooks=()) -> None:
    """A mid-epoch validation point on the fixed sample (the one every point of the curve scores), recorded (and
    the pending mark cleared) at once."""
    val = evaluate(model, val_sample, config)
    with hold_interrupts():
        history.val_points.append((history.step, val))
        history.eval_pending = False
    call(hooks, "on_eval", history, model)


def fixed_sample(val):
    """A fixed, evenly spaced sample of at most VAL_SAMPLE held-out sequences, for every point of the curve."""
    if val is None or len(val) <= VAL_SAMPLE:
        return val
    return torch.utils.data.Subset(val, [i * len(val) // VAL_SAMPLE for i in range(VAL_SAMPLE)])


def call(hooks, event: str, history: History, model) -> None:
    """Call ``event`` (on_step, on_eval, ...) on every hook that has it."""
    for hook in hooks:
        if hasattr(hook, event):
            getattr(hook, event)(history, model)


# --- a whole run ---

def fit(model, optimizer, corpus: Corpus, config: TrainConfig, history: History, hooks=(), save=lambda: None,
        say=print) -> History:
    """Train epoch after epoch until config.epochs (or the time budget) are done, calling ``save()`` after each
    epoch, at the end and at a Ctrl-C (then re-raised). train() and the data-parallel runner both call this."""
    history.finished = False  # until its last epoch is done (a finished run may get more epochs)
    model.train()
    try:
        while history.epoch < config.epochs and not out_of_time(history, config):
            train_epoch(model, optimizer, corpus, config, history, hooks)
            save()
            call(hooks, "on_epoch_end", history, model)
        history.finished = True
        call(hooks, "on_train_end", history, model)
        save()
    except KeyboardInterrupt:
        with hold_interrupts():  # a second Ctrl-C waits for the checkpoint
            save()
        # the message travels with the interrupt (pico.py prints it once, a notebook shows it under the cell)
        raise KeyboardInterrupt(f"[{history.model}] checkpoint saved at epoch {history.epoch + 1}, step "
                                f"{history.step_in_epoch}: run it again to continue") from None
    return history


def is_complete(history: History, config: TrainConfig) -> bool:
    """True if the run finished all that ``config`` asks (its epochs, or its time budget)."""
    return history.finished and (history.epoch >= config.epochs or out_of_time(history, config))


def train(model: torch.nn.Module, corpus: Corpus, config: TrainConfig, name: str = "model", resume: bool = True,
          verbose: bool = True, callbacks=()) -> History:
    """Train ``model`` on ``corpus`` with ``config``; return its History (also saved as history.json).

    Keeps <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}. An earlier run with the same run id (config,
    data, model: runs.store.run_identity) resumes where it stopped, or returns at once if finished; any other, or any
    with ``resume=False``, is moved aside unread to <name>.prev-N. Ctrl-C saves first; the same call continues.
    Args: model: any model of the course contract (build_model(name, config, corpus.vocab));
        name: a plain folder name under output_dir, and the plots' label;
        verbose: the progress lines and the live plot in Jupyter; False prints nothing (errors raise);
        callbacks: more hooks (training.callbacks.Callback), called after the loss plot's and the samples'."""
    check_arguments(model, corpus, config)
    say = print if verbose else (lambda *args, **kwargs: None)
    live, store = verbose and in_notebook(), RunStore(config.output_dir, name)  # Jupyter: a live plot and a bar
    with store.writer(), stops_save():  # one process per run; SIGTERM saves as Ctrl-C does
        config, optimizer, history = prepare_run(model, corpus, config, name, store, resume, verbose, say)
        for i in range(0 if live else history.epoch):
            say(history.epoch_line(i, "(saved)"))
        if is_complete(history, config):
            return history  # nothing written: a finished run loads from a read-only folder too
        store.check_writable()  # before the first step, not after an epoch
        return fit(model, optimizer, corpus, config, history, run_hooks(store, corpus, config, live, say, callbacks),
                   store_saver(store, model, optimizer, config, history), say)
