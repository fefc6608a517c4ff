"""What the notebooks show: markdown tables (cells, runs, epochs, samples) and a median wall-clock timer."""
from __future__ import annotations

import re
import statistics
import time
from typing import Callable, Sequence

import torch

from pico_helpers.sample.generate import generate_text

__all__ = ["md_table", "cell_text", "median_seconds", "epoch_table", "sample_table", "continues_count"]


# --- markdown tables ---

def md_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A markdown table from a header and rows, ``|`` escaped, newlines as " ⏎ " (02_kgram_mlp.ipynb on)."""
    def cell(x) -> str:
        return re.sub(r"(?<!\\)\|", r"\\|", str(x)).replace("\n", " ⏎ ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows])


def cell_text(token: str) -> str:
    """A token as a table cell: its repr (spaces and newlines visible), pipes escaped (01_embeddings.ipynb)."""
    return repr(token).replace("|", "\\|")


def _field(history, name: str):
    """``history.name`` for a History, ``history[name]`` for its dict form (a loaded history.json)."""
    return history[name] if isinstance(history, dict) else getattr(history, name)


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)  # None: no validation split, or no training time


def epoch_table(history) -> str:
    """One run (a History or its dict form) in markdown: name, size, tokens, time, epoch losses (01_embeddings)."""
    epochs = zip(*(_field(history, k) for k in ("epoch_end_step", "epoch_train_loss", "epoch_val_loss")))
    rows = [[e, step, _num(tr, ".3f"), _num(va, ".3f")] for e, (step, tr, va) in enumerate(epochs, start=1)]
    name, n_params, tokens, seconds = (_field(history, k) for k in ("model", "n_params", "tokens_seen", "train_time_s"))
    return (f"**{name}**: {n_params:,} parameters, {tokens:,} training tokens, {seconds:.0f} s of training\n\n"
            + md_table(["epoch", "steps so far", "train loss (epoch mean)", "validation loss"], rows))


# --- samples ---

def continues_count(prompt: str, text: str) -> int:
    """How many numbers after ``prompt`` in ``text`` (prompt included) continue its count: last + 1, + 2, ..."""
    last, n = int(prompt.split()[-1]), 0
    for word in text[len(prompt):].split():
        if word != str(last + n + 1):
            break
        n += 1
    return n


SAMPLE_DECODINGS = (("greedy", None), ("top-p 0.95", 0.95), ("top-p 1.0", 1.0))  # the starter's three samples


def sample_table(model, enc, prompt: str, max_new_tokens: int = 20, count: bool = False, seed: int = 0) -> str:
    """The starter's three continuations of ``prompt`` as a markdown table: greedy, top-p 0.95 and top-p 1.0.

    Args: model, enc; prompt; max_new_tokens; seed: for the top-p samples;
        count: add a column of continues_count, for prompts such as "0 1 2 3 4". Used in 01_embeddings.ipynb."""
    rows = []
    for label, top_p in SAMPLE_DECODINGS:
        text, _ = generate_text(model, enc, prompt, max_new_tokens=max_new_tokens, top_p=top_p, seed=seed)
        rows.append([label, text] + ([continues_count(prompt, text)] if count else []))
    return md_table(["decoding", "sample"] + (["numbers continuing the count"] if count else []), rows)


# --- timing ---

def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1, device=None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` timed calls, after ``warmup`` untimed ones.

    Args: fn: called with no arguments; repeats: >= 1; warmup: untimed calls first;
        device: on CUDA each call is bracketed by torch.cuda.synchronize(). Used in 01_embeddings to 04_transformer."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else lambda: None
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
