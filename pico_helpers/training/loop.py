"""The training loop in small parts: device, optimizer, one step, evaluation, one epoch, and train() around them.

Used in every notebook and by pico.py. train() keeps each run in a RunStore (store.py) and returns a History.
"""
from __future__ import annotations

import itertools
import math
import signal
import threading
import time
from contextlib import contextmanager

import torch

from pico_helpers.config import TrainConfig
from pico_helpers.data import Corpus, iterate_batches
from pico_helpers.models import count_parameters
from pico_helpers.training import distributed
from pico_helpers.training.callbacks import LossPlot, TextSamples
from pico_helpers.training.history import History
from pico_helpers.training.losses import next_token_loss
from pico_helpers.training.precision import CompiledView, autocast, bf16_choice
from pico_helpers.training.store import RunStore, load_checkpoint, run_identity

__all__ = ["pick_device", "make_optimizer", "lr_at", "train_step", "evaluate", "train_epoch", "train",
           "load_checkpoint"]

VAL_SAMPLE = 256  # held-out sequences scored at a mid-epoch validation point (epoch ends score all of them)
TIME_POINTS = 12  # validation points over a time budget (time_budget_s)


# --- device and optimizer ---

def pick_device(device_id: str | None = None, verbose: bool = True) -> torch.device:
    """``device_id`` if it is usable, else cuda > mps > cpu. A missing requested device says so and falls back."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    auto = torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if device_id in (None, "", "auto"):
        return auto
    try:
        device = torch.device(device_id)
    except RuntimeError as err:
        raise ValueError(f"device_id {device_id!r} is not a torch device; use cpu, cuda, cuda:0, mps or auto") from err
    no_gpu = device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count()
    if no_gpu or (device.type == "mps" and not has_mps):
        fallback = auto if device.type == "cuda" else torch.device("cpu")
        if verbose:
            print(f"Requested device {device_id} is not available (CUDA GPUs: {torch.cuda.device_count()}); "
                  f"using {fallback} instead.")
        return fallback
    return device


def lr_at(step: int, config: TrainConfig, total_steps: int, elapsed_s: float = 0.0) -> float:
    """Learning rate of update ``step`` (0-based): a pure function of the step (and, with a time budget, of the
    training seconds so far), so a resumed run gets the same rates. "cosine": linear warm-up over warmup_steps,
    then cosine decay to 10% of learning_rate at the last of ``total_steps``, or at the end of time_budget_s."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (elapsed_s / config.time_budget_s if config.time_budget_s
                else (step - config.warmup_steps) / max(1, total_steps - 1 - config.warmup_steps))
    return config.learning_rate * (0.1 + 0.9 * (1 + math.cos(math.pi * min(1.0, progress))) / 2)  # 100% to 10%


def make_optimizer(model: torch.nn.Module, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam (the starter's optimizer), fused into one kernel per step where this torch supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=learning_rate)


# --- one step, one evaluation ---

def train_step(model, optimizer: torch.optim.Optimizer, tokens: torch.Tensor, mask: torch.Tensor | None = None,
               bf16: bool = False, loss_chunk_size: int | None = None, vocab=None) -> float:
    """One optimizer step on one batch: next-token loss, backward, Adam update. Returns the loss before the update;
    a non-finite loss is returned without applying its update, so the weights stay as they were.

    Args:
        model: follows the model contract (``hidden``, ``head``): the model, its compiled view, or distributed.wrap's.
        tokens: (T, B) long token ids on the model's device; mask: (T, B) bool, True = real token.
        bf16: the forward under bfloat16 autocast; loss_chunk_size: rows per chunk of the fused loss.
        vocab: the CorpusVocab the ids are in (``corpus.vocab``), so the loss is over all GPT-2 ids; None: GPT-2 ids.
    """
    with autocast(tokens.device, bf16):
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            loss, mean = model(tokens, mask, chunk_size=loss_chunk_size, vocab=vocab)  # mean: over all ranks
        else:
            loss = next_token_loss(model, tokens, mask, chunk_size=loss_chunk_size, vocab=vocab)
            mean = loss.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = float(mean)  # syncs the device, so step timings are honest
    if math.isfinite(value):
        optimizer.step()
    return value


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 16, device=None, bf16: bool = False,
             loss_chunk_size: int | None = None, vocab=None) -> float | None:
    """Mean next-token cross-entropy (nats per real target token) over ``dataset``; None if it is empty.

    ``vocab``: the CorpusVocab of the dataset's ids (default ``model.vocab``): every GPT-2 id is scored, those
    training never saw as a share of "other"."""
    if dataset is None or len(dataset) == 0:
        return None
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    vocab = getattr(model, "vocab", None) if vocab is None else vocab
    for tokens, mask in iterate_batches(dataset, batch_size, shuffle=False, bucket=True):  # similar lengths
        tokens, mask = distributed.shard(tokens.to(device), mask.to(device))  # torchrun: this rank's sequences
        n = int(mask[1:].sum())
        if n == 0:
            continue
        with autocast(device, bf16):
            loss = next_token_loss(model, tokens, mask, chunk_size=loss_chunk_size, vocab=vocab)
        total += float(loss) * n
        count += n
    total, count = distributed.all_sum(device, total, count)  # torchrun: summed over the ranks, the same on each
    model.train(was_training)
    return total / count if count else None


# --- one epoch ---

@contextmanager
def _hold_interrupts():
    """Hold a Ctrl-C (SIGINT) until the block is done: an update and its record happen together or not at all."""
    if threading.current_thread() is not threading.main_thread() or torch.distributed.is_initialized():
        yield  # under torchrun distributed.wrap notes a Ctrl-C instead, so that every rank stops at the same step
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def _val_sample(val):
    """A fixed, evenly spaced sample of at most VAL_SAMPLE held-out sequences, for the mid-epoch points."""
    if len(val) <= VAL_SAMPLE:
        return val
    return torch.utils.data.Subset(val, [i * len(val) // VAL_SAMPLE for i in range(VAL_SAMPLE)])


def _call(hooks, event: str, history: History, model) -> None:
    for hook in hooks:
        if hasattr(hook, event):
            getattr(hook, event)(history, model)


def _out_of_time(history: History, config: TrainConfig, ticks: int = 1, back_s: float = 0.0) -> int:
    """Whole ticks of the time budget (budget / ``ticks`` each) spent ``back_s`` seconds ago; 0 without a budget."""
    return int((history.train_time_s - back_s) * ticks / config.time_budget_s) if config.time_budget_s else 0


def _complete(history: History, config: TrainConfig) -> bool:
    return history.finished and (history.epoch >= config.epochs or _out_of_time(history, config) > 0)


def _epoch_line(history: History, i: int, mark: str) -> str:
    train_loss, val, speed = history.epoch_train_loss[i], history.epoch_val_loss[i], history.epoch_tokens_per_s[i]
    uniform = math.log(max(history.vocab_size, 2))  # the loss of a uniform guess
    return (f"[{history.model}] {mark} end of epoch {i + 1}: train loss {train_loss:.4f}, validation loss "
            + (f"{val:.4f}" if val is not None else "n/a (no validation split)")
            + (f", {speed:,.0f} tokens/s" if speed else "")
            + (f" (far above ln(vocab) = {uniform:.2f}: lower the learning rate)" if train_loss > 2 * uniform else ""))


def train_epoch(model, optimizer, corpus: Corpus, config: TrainConfig, history: History, step_model=None,
                bf16: bool = False, hooks=(), say=print) -> None:
    """Train epoch ``history.epoch`` to its end (or the time budget's), from step ``history.step_in_epoch``.

    The History is the run's position: each step's loss enters it together with that update, and the epoch's
    means together with its end (a Ctrl-C waits for both), so a checkpoint taken at any interrupt resumes exactly.
    Args:
        model, optimizer: the model (on its device) and its optimizer; step_model: what the training loss runs
            through (the compiled view), default ``model``.
        corpus, config: the data and the sizes (batch_size, max_steps_per_epoch, log_every, eval_every, ...).
        history: updated in place; hooks: callbacks (on_step, on_eval); say: print, or a silent function.
    Raises ValueError at a non-finite loss; that step's update is not applied.
    """
    device, step_model = next(model.parameters()).device, step_model or model
    epoch, done = history.epoch, history.step_in_epoch
    n_steps = math.ceil(len(corpus.train) / config.batch_size)
    n_steps = min(n_steps, config.max_steps_per_epoch or n_steps)
    every = config.eval_every if config.eval_every is not None else max(1, config.epochs * n_steps // 10)
    corpus.train.set_epoch(epoch)
    batches = iterate_batches(corpus.train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                              bucket=config.bucket_by_length)
    loss_sum, tokens_done, time_done = sum(history.step_loss[history.step - done:]), 0, 0.0
    for i, (tokens, mask) in enumerate(itertools.islice(batches, n_steps)):
        if i < done:  # resuming mid-epoch: the batch order is fixed, skip the batches already trained on
            continue
        t0 = time.perf_counter()
        tokens, mask = tokens.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(history.step, config, config.epochs * n_steps, history.train_time_s)
        with _hold_interrupts():
            loss = train_step(step_model, optimizer, tokens, mask, bf16, config.loss_chunk_size, corpus.vocab)
            if not math.isfinite(loss):
                raise ValueError(
                    f"[{history.model}] the training loss is {loss} at step {history.step + 1} (epoch {epoch + 1}): "
                    f"learning_rate {config.learning_rate:g} is probably too high, try a lower one (e.g. "
                    f"{config.learning_rate / 10:g}). Training stopped before that update; the last checkpoint "
                    "was left as it was.")
            dt, n_tok = time.perf_counter() - t0, int(mask.sum())
            history.step_loss.append(loss)
            history.tokens_seen, history.train_time_s = history.tokens_seen + n_tok, history.train_time_s + dt
        loss_sum, tokens_done, time_done = loss_sum + loss, tokens_done + n_tok, time_done + dt
        if config.log_every and (i + 1) % config.log_every == 0:
            say(f"[{history.model}] epoch {epoch + 1}, step {i + 1}/{n_steps}: partial average loss "
                f"{loss_sum / (i + 1):.4f}")
        over = _out_of_time(history, config)
        due = (_out_of_time(history, config, TIME_POINTS) > _out_of_time(history, config, TIME_POINTS, dt)
               if config.time_budget_s else every and history.step % every == 0)
        if due and i + 1 < n_steps and not over and corpus.val is not None:
            val = evaluate(model, _val_sample(corpus.val), config.batch_size, device, bf16, config.loss_chunk_size,
                           corpus.vocab)
            history.val_points.append((history.step, val))
            _call(hooks, "on_eval", history, model)
        _call(hooks, "on_step", history, model)
        if over:
            break
    val = evaluate(model, corpus.val, config.batch_size, device, bf16, config.loss_chunk_size, corpus.vocab)
    with _hold_interrupts():
        history.epoch_train_loss.append(loss_sum / max(history.step_in_epoch, 1))
        history.epoch_val_loss.append(val)
        history.epoch_tokens_per_s.append(tokens_done / time_done if time_done else None)
        history.val_points += [(history.step, val)] if val is not None else []
        history.epoch_end_step.append(history.step)  # last: this moves the run to the next epoch
    say(_epoch_line(history, epoch, "***"))


# --- a whole run ---

def _open_run(store: RunStore, run_id: str, model, optimizer, config: TrainConfig, resume: bool, say):
    """The History of the matching earlier run, loaded into model and optimizer; else None, after moving what is
    in the run's folder aside to <name>.prev-N."""
    ckpt = store.load() if resume else None
    if ckpt is not None and ckpt.get("run_id") == run_id:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history = History.from_dict(ckpt["history"])
        if _complete(history, config):
            say(f"[{store.name}] already trained ({history.step} steps): loaded {store.checkpoint}")
        else:
            say(f"[{store.name}] resuming from {store.checkpoint}: epoch {history.epoch + 1}, step "
                f"{history.step_in_epoch} ({history.step} steps done)")
        for i in range(history.epoch):
            say(_epoch_line(history, i, "(saved)"))
        return history
    if store.in_use():
        changed = [k for k, v in config.run_fields().items() if ckpt and ckpt["config"].get(k) != v]
        reason = ("resume=False" if not resume else "no checkpoint in the run's folder" if ckpt is None
                  else f"config changed ({', '.join(changed)})" if changed else "data or model changed")
        say(f"{reason}: the earlier run in {store.folder} was moved to {store.set_aside()} (nothing deleted).")
    return None


def train(model: torch.nn.Module, corpus: Corpus, config: TrainConfig, name: str = "model", resume: bool = True,
          verbose: bool = True, callbacks=()) -> History:
    """Train ``model`` on ``corpus`` with ``config``; return its History (also saved as history.json).

    Keeps <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}. An earlier run with the same run id (config,
    data, model: store.run_identity) resumes where it stopped, or returns at once if finished; any other, or any
    with ``resume=False``, is moved aside unread to <name>.prev-N. Ctrl-C saves first; the same call continues.

    Args:
        model: any model with the course contract, (seq_len, batch) ids -> (seq_len, batch, vocab) logits.
        corpus: from load_corpus(config); config: batch_size, epochs, learning_rate, device_id, bf16, compile, ...
        name: the run's name: a plain folder name under output_dir, and the plots' label.
        verbose: print the progress lines and draw the live plot in Jupyter; False prints nothing (errors raise).
        callbacks: more hooks (training.callbacks.Callback), called after the loss plot's and the samples'.
    """
    say = print if verbose and distributed.is_main() else (lambda *args, **kwargs: None)
    store = RunStore(config.output_dir, name)
    device = pick_device(config.device_id, verbose=verbose)
    bf16, why = bf16_choice(config, device)
    model.to(device)
    model.vocab = corpus.vocab  # its ids are the corpus's: generation and inspection map them to GPT-2's
    optimizer = make_optimizer(model, config.learning_rate, device)
    run_id = run_identity(config, corpus, model)
    history = _open_run(store, run_id, model, optimizer, config, resume, say) if distributed.is_main() else None
    history = distributed.share_run(history, model, optimizer)  # torchrun: rank 0's run on every rank
    if history is None:
        history = History(model=name, data=corpus.description, run_id=run_id, n_params=count_parameters(model),
                          vocab_size=corpus.vocab_size)
        say(f"[{name}] {history.n_params:,} parameters on {device} ({why}); "
            f"data: {corpus.description}")
    elif _complete(history, config):
        return history  # nothing written: a finished run loads from a read-only folder too
    history.config, history.device, history.bf16 = config.to_dict(), str(device), bf16
    history.finished = False  # until its last epoch is done (a finished run may get more epochs)
    hooks = [LossPlot(store, live=None if verbose else False), TextSamples(corpus.enc, config.prompt,
             config.sample_every_s, say), *callbacks] if distributed.is_main() else []  # torchrun: rank 0's
    step_model = distributed.wrap(model, CompiledView(model, say) if config.compile else model)
    wall0, wall_before = time.perf_counter(), history.wall_time_s

    def save() -> None:
        if not distributed.is_main():  # torchrun: rank 0 alone writes
            return
        history.wall_time_s = wall_before + time.perf_counter() - wall0
        store.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
                    "run_id": run_id, "history": history.to_dict(), "epoch": history.epoch,
                    "step_in_epoch": history.step_in_epoch}, history)

    model.train()
    try:
        while history.epoch < config.epochs and not _out_of_time(history, config):
            train_epoch(model, optimizer, corpus, config, history, step_model, bf16, hooks, say)
            save()
            _call(hooks, "on_epoch_end", history, model)
        history.finished = True
        save()
        _call(hooks, "on_train_end", history, model)
        if distributed.is_main():
            history.to_json(store.history)  # again, now with the figure's path
    except KeyboardInterrupt:
        save()
        say(f"[{name}] interrupted: checkpoint saved at epoch {history.epoch + 1}, step {history.step_in_epoch}; "
            "run the same call again to continue.")
        raise
    finally:
        distributed.release()
    return history
