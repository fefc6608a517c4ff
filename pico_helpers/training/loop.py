"""One training engine for every model: device choice, the loop, validation, loss history, checkpoints.

Used in every notebook and by pico.py.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from pico_helpers.config import TrainConfig
from pico_helpers.models import count_parameters
from pico_helpers.data import Corpus, iterate_batches
from pico_helpers.training.losses import next_token_loss
from pico_helpers.analysis.plots import LiveLossPlot

__all__ = ["pick_device", "make_optimizer", "evaluate", "train", "load_checkpoint", "run_dir"]

# Fields that do not change what a checkpoint means: a run may resume with different values.
_RESUMABLE_FIELDS = {"epochs", "max_steps_per_epoch", "log_every", "sample_every_s", "prompt", "device_id",
                     "output_dir", "compile", "tinystories_path"}


# --- device ---

def pick_device(device_id: str | None = None, verbose: bool = True) -> torch.device:
    """``device_id`` if it is usable, else cuda > mps > cpu. A missing requested device says so and falls back."""
    def auto():
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    if device_id in (None, "", "auto"):
        return auto()
    try:
        device = torch.device(device_id)
    except RuntimeError as err:
        raise ValueError(f"device_id {device_id!r} is not a torch device; use cpu, cuda, cuda:0, mps or auto") from err
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        fallback = auto()
        if verbose:
            print(f"Requested device {device_id} is not available (CUDA GPUs: {torch.cuda.device_count()}); "
                  f"using {fallback} instead.")
        return fallback
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        if verbose:
            print(f"Requested device {device_id} is not available; using cpu instead.")
        return torch.device("cpu")
    return device


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.bf16 is not None:
        return bool(config.bf16)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# --- optimizer ---

def make_optimizer(model: torch.nn.Module, learning_rate: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam (the starter's optimizer), fused into one kernel per step where this torch supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=learning_rate)


class _CompiledView:
    """hidden() compiled with torch.compile, head shared: the state dict keeps its plain keys."""

    def __init__(self, model):
        self.hidden = torch.compile(model.hidden)
        self.head = model.head


# --- evaluation ---

@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 16, device=None, bf16: bool = False,
             loss_chunk_size: int | None = None) -> float | None:
    """Mean next-token cross-entropy (nats per real target token) over ``dataset``; None if it is empty."""
    if dataset is None or len(dataset) == 0:
        return None
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    kwargs = {"chunk_size": loss_chunk_size} if loss_chunk_size else {}
    for tokens, mask in iterate_batches(dataset, batch_size, shuffle=False):
        tokens, mask = tokens.to(device), mask.to(device)
        n = int(mask[1:].sum())
        if n == 0:
            continue
        with _autocast(device, bf16):
            loss = next_token_loss(model, tokens, mask, **kwargs)
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count if count else None


# --- checkpoints ---

def run_dir(config: TrainConfig, name: str) -> Path:
    """Folder of a named run: <output_dir>/<name>/ (checkpoint.pt, history.json, loss.png)."""
    return Path(config.output_dir) / name


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(obj, (dict, list)) and path.suffix == ".json":
        tmp.write_text(json.dumps(obj, indent=1))
    else:
        torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by train() (tensors and plain data only: ``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _meaning(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k not in _RESUMABLE_FIELDS}


def _set_aside(folder: Path, reason: str) -> None:
    k = 1
    while folder.with_name(f"{folder.name}.prev-{k}").exists():
        k += 1
    target = folder.with_name(f"{folder.name}.prev-{k}")
    os.replace(folder, target)
    print(f"{reason}: the earlier run in {folder} was moved to {target} (nothing deleted).")


# --- the training loop ---

def _new_history(name: str, corpus: Corpus, config: TrainConfig, model, device, bf16: bool) -> dict:
    return {"model": name, "data": corpus.description, "config": config.to_dict(), "device": str(device),
            "bf16": bf16, "n_params": count_parameters(model), "vocab_size": corpus.vocab_size,
            "step_loss": [], "epoch_end_step": [], "epoch_train_loss": [], "epoch_val_loss": [],
            "epoch_tokens_per_s": [], "tokens_seen": 0, "train_time_s": 0.0, "wall_time_s": 0.0,
            "samples": [], "finished": False}


def _print_samples(model, enc, config: TrainConfig, history: dict, step: int, write) -> None:
    from pico_helpers.sample.generate import generate_text

    try:
        greedy, _ = generate_text(model, enc, config.prompt, max_new_tokens=20)
        top_p, _ = generate_text(model, enc, config.prompt, max_new_tokens=20, top_p=0.95, seed=step)
    except ValueError as err:  # e.g. a prompt outside a compact vocabulary
        write(f"  (no sample: {err})")
        return
    write(f"  [{history['model']}] sample at step {step}, greedy: {greedy!r}")
    write(f"  [{history['model']}] sample at step {step}, top-p 0.95: {top_p!r}")
    history["samples"].append({"step": step, "greedy": greedy, "top_p_0.95": top_p})


def _print_saved_epochs(name: str, history: dict) -> None:
    """Repeat the end-of-epoch lines of a loaded run, so its losses show as they did when it trained."""
    speeds = history.get("epoch_tokens_per_s") or []
    for i, (train_loss, val) in enumerate(zip(history["epoch_train_loss"], history["epoch_val_loss"])):
        speed = speeds[i] if i < len(speeds) else None
        val_text = f"{val:.4f}" if val is not None else "n/a (no validation split)"
        speed_text = f", {speed:,.0f} tokens/s" if speed else ""
        print(f"[{name}] (saved) end of epoch {i + 1}: train loss {train_loss:.4f}, validation loss {val_text}"
              f"{speed_text}")


def train(model: torch.nn.Module, corpus: Corpus, config: TrainConfig, name: str = "model",
          resume: bool = True, live: bool | None = None, progress: bool = True) -> dict:
    """Train ``model`` on ``corpus`` with ``config``; return the loss history (also saved as JSON).

    Writes <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}. With ``resume`` (default) a
    matching earlier run continues where it stopped (a finished one returns at once); a run whose
    config differs, or any run when ``resume=False``, is moved aside to <name>.prev-N, never deleted.
    Ctrl-C (or Jupyter's interrupt) saves a checkpoint first, so running again continues from there.

    Args:
        model: any model with the course contract, (seq_len, batch) ids -> (seq_len, batch, vocab) logits.
        corpus: from load_corpus(config): train/val datasets, tokenizer, description.
        config: batch_size, epochs, learning_rate, max_steps_per_epoch, seed, device_id, bf16, ...
        name: the run's name (a folder under output_dir, the plot's legend).
        live: redraw the loss figure in place during training (default: only inside Jupyter).
        progress: show a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    device = pick_device(config.device_id)
    bf16 = _use_bf16(config, device)
    folder = run_dir(config, name)
    ckpt_path, hist_path = folder / "checkpoint.pt", folder / "history.json"
    model.to(device)
    optimizer = make_optimizer(model, config.learning_rate, device)
    history = _new_history(name, corpus, config, model, device, bf16)
    start_epoch, skip_steps, epoch_sum, epoch_n = 0, 0, 0.0, 0

    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        same = (_meaning(ckpt["config"]) == _meaning(config.to_dict()) and ckpt["history"]["model"] == name
                and ckpt["history"]["data"] == corpus.description)
        if resume and same:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history = ckpt["history"]
            history["config"] = config.to_dict()
            start_epoch, skip_steps = ckpt["epoch"], ckpt["step_in_epoch"]
            epoch_sum, epoch_n = ckpt["epoch_loss_sum"], ckpt["epoch_loss_n"]
            if start_epoch >= config.epochs:
                print(f"[{name}] already trained ({len(history['step_loss'])} steps): loaded {ckpt_path}")
            else:
                print(f"[{name}] resuming from {ckpt_path}: epoch {start_epoch + 1}, step {skip_steps} "
                      f"({len(history['step_loss'])} steps done)")
            _print_saved_epochs(name, history)
        else:
            _set_aside(folder, "config or data changed" if resume else "resume=False")
    elif folder.exists() and any(folder.iterdir()):
        _set_aside(folder, "a folder without checkpoint is in the way")
    folder.mkdir(parents=True, exist_ok=True)

    def save(epoch: int, step_in_epoch: int) -> None:
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
                      "history": history, "epoch": epoch, "step_in_epoch": step_in_epoch,
                      "epoch_loss_sum": epoch_sum, "epoch_loss_n": epoch_n}, ckpt_path)
        _atomic_save(history, hist_path)

    plot = LiveLossPlot(folder / "loss.png", live=live, title=f"{name} on {corpus.description}")
    loss_fn_model = _CompiledView(model) if config.compile else model
    loss_kwargs = {"chunk_size": config.loss_chunk_size} if config.loss_chunk_size else {}
    write = tqdm.write if progress else print
    if start_epoch == 0 and skip_steps == 0:
        print(f"[{name}] {history['n_params']:,} parameters on {device}{' (bf16 autocast)' if bf16 else ''}; "
              f"data: {corpus.description}")
    wall0, last_sample = time.perf_counter(), time.perf_counter()
    wall_before = history["wall_time_s"]
    steps_per_epoch = math.ceil(len(corpus.train) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    model.train()
    epoch, step_in_epoch = start_epoch, skip_steps
    try:
        for epoch in range(start_epoch, config.epochs):
            corpus.train.set_epoch(epoch)
            if epoch > start_epoch or skip_steps == 0:
                step_in_epoch, epoch_sum, epoch_n = 0, 0.0, 0
            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"{name} epoch {epoch + 1}/{config.epochs}",
                       disable=not progress, leave=True, file=sys.stdout, mininterval=1.0)
            epoch_tokens, epoch_time = 0, 0.0
            batches = iterate_batches(corpus.train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
            for i, (tokens, mask) in enumerate(batches):
                if i >= steps_per_epoch:
                    break
                if i < step_in_epoch:  # resuming mid-epoch: the batch order is deterministic, skip done ones
                    continue
                t0 = time.perf_counter()
                tokens, mask = tokens.to(device, non_blocking=True), mask.to(device, non_blocking=True)
                with _autocast(device, bf16):
                    try:
                        loss = next_token_loss(loss_fn_model, tokens, mask, **loss_kwargs)
                    except Exception as err:  # torch.compile fails lazily, at the first call
                        if loss_fn_model is model:
                            raise
                        print(f"[{name}] torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                              "continuing in eager mode.")
                        loss_fn_model = model
                        loss = next_token_loss(model, tokens, mask, **loss_kwargs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_value = float(loss.detach())  # syncs the device, so the timing below is honest
                epoch_time += time.perf_counter() - t0
                n_tok = int(mask.sum())
                epoch_tokens += n_tok
                history["tokens_seen"] += n_tok
                history["step_loss"].append(loss_value)
                epoch_sum, epoch_n, step_in_epoch = epoch_sum + loss_value, epoch_n + 1, i + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                if config.log_every and step_in_epoch % config.log_every == 0:
                    write(f"[{name}] epoch {epoch + 1}, step {step_in_epoch}/{steps_per_epoch}: "
                          f"partial average loss {epoch_sum / epoch_n:.4f}")
                    plot.update(history)
                if config.sample_every_s and time.perf_counter() - last_sample > config.sample_every_s:
                    _print_samples(model, corpus.enc, config, history, len(history["step_loss"]), write)
                    model.train()
                    last_sample = time.perf_counter()
            bar.close()
            history["train_time_s"] += epoch_time
            val = evaluate(model, corpus.val, config.batch_size, device, bf16, config.loss_chunk_size)
            history["epoch_end_step"].append(len(history["step_loss"]))
            history["epoch_train_loss"].append(epoch_sum / max(epoch_n, 1))
            history["epoch_val_loss"].append(val)
            history["epoch_tokens_per_s"].append(epoch_tokens / epoch_time if epoch_time else None)
            history["wall_time_s"] = wall_before + time.perf_counter() - wall0
            val_text = f"{val:.4f}" if val is not None else "n/a (no validation split)"
            print(f"[{name}] *** end of epoch {epoch + 1}: train loss {epoch_sum / max(epoch_n, 1):.4f}, "
                  f"validation loss {val_text}, {epoch_tokens / max(epoch_time, 1e-9):,.0f} tokens/s")
            step_in_epoch, epoch_sum, epoch_n = 0, 0.0, 0
            save(epoch + 1, 0)
            plot.update(history)
    except KeyboardInterrupt:
        history["wall_time_s"] = wall_before + time.perf_counter() - wall0
        save(epoch, step_in_epoch)
        print(f"[{name}] interrupted: checkpoint saved at epoch {epoch + 1}, step {step_in_epoch}; "
              "run the same call again to continue.")
        raise
    history["finished"] = True
    history["tokens_per_s"] = history["tokens_seen"] / history["train_time_s"] if history["train_time_s"] else None
    history["wall_time_s"] = wall_before + time.perf_counter() - wall0
    save(config.epochs, 0)
    figure = plot.finish(history)
    history["figure"] = str(figure) if figure else None
    _atomic_save(history, hist_path)
    return history
