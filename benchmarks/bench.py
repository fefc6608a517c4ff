"""The benchmark: every fast path timed against a plain baseline written here, in one run; writes BENCHMARKS.md.

Run it with ``make bench`` or ``python -m benchmarks.bench`` (``--quick`` for a seconds-long smoke run,
``--device cuda`` on a GPU, ``--out PATH`` for the report). Each row runs the baseline and the fast
path in turn (A B A B ...) in one process, after an untimed warm-up round, takes the median of each,
and compares the medians. Each family of rows runs in its own fresh process (``--family NAME``), so no
row depends on which rows ran before it (what earlier rows left behind in the process moved the starter's
generation speed by up to 40% in our runs). Peak memory is measured in a fresh subprocess per variant
(``--one NAME``), see ``measure_peak_memory``. The time-to-loss row (benchmarks/time_to_loss.py) instead
trains the old and the new default training path for the same wall-clock budget and compares validation losses.
Tests never look at the numbers: tests/test_bench.py only checks that a quick run produces every row, and that
each baseline computes the same function as its fast path.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
import types
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.report import busy_warning, cpu_seconds, format_table, machine_info, others_share, write_report

__all__ = ["BenchSizes", "Row", "starter_loop_kgram_forward", "alternate", "build_step", "measure_peak_memory",
           "machine_info", "run_benchmark", "format_table", "write_report", "main", "ROW_KEYS"]

ROOT = Path(__file__).resolve().parents[1]
GPT2_VOCAB = 50257
LEARNING_RATE = 1e-3  # the starter's Adam learning rate
ONE_PREFIX = "BENCH_ONE "  # how a --one subprocess marks its JSON result line

# Row keys in table order, and the families that produce them (--only takes family names).
ROW_KEYS = ("time_to_loss", "kgram", "transformer_speed", "transformer_memory", "lstm", "gen_recompute",
            "gen_starter", "gen_corpus", "topp", "compact", "bf16", "compile")
FAMILIES = {"time_to_loss": ("time_to_loss",), "kgram": ("kgram",),
            "transformer": ("transformer_speed", "transformer_memory"), "lstm": ("lstm",),
            "generation": ("gen_recompute", "gen_starter", "gen_corpus"), "topp": ("topp",), "compact": ("compact",),
            "bf16": ("bf16",), "compile": ("compile",)}


# --- sizes ---

@dataclass(frozen=True)
class BenchSizes:
    """Every size of the benchmark; ``BenchSizes.quick()`` is the smoke-test variant."""

    vocab: int = GPT2_VOCAB
    # K-gram MLP, one-hot input
    kgram_k: int = 3
    kgram_hidden: int = 128
    kgram_seq: int = 32
    kgram_batch: int = 16
    # Transformer training step (also the bf16, compact-vocabulary and compile rows)
    tf_layers: int = 4
    tf_heads: int = 4
    tf_d: int = 128
    tf_block: int = 128
    tf_batch: int = 16
    # LSTM training step
    lstm_size: int = 1024  # embed = hidden
    lstm_seq: int = 32
    lstm_batch: int = 16
    # generation
    gen_prompt: int = 16
    gen_new: int = 200
    gen_block: int = 256  # >= gen_prompt + gen_new: no cropping, the cache is never recomputed
    # top-p
    top_p: float = 0.95
    topp_calls: int = 100  # tokens drawn per timed run
    topp_scale: float = 8.0  # logits ~ N(0, scale^2): peaked, nucleus of a few dozen tokens
    # compact vocabulary
    compact_batches: int = 4  # 3seqs batches per timed run
    # time to loss (benchmarks/time_to_loss.py), on the Transformer's shape above
    ttl_budget_s: float = 180.0  # training seconds per side, on each side's own clock
    ttl_points: int = 10  # validation points per side, one every tenth of the budget (and one at 0 s)
    ttl_val_stories: int = 160  # held-out stories scored at each point
    ttl_stories: int = 100_000  # training stories to load (all of the shared sample)
    # timing
    repeats: int = 5  # alternating rounds (at most)
    budget_s: float = 40.0  # per family: no new round starts once this is spent (at least one round runs)
    compile_timeout_s: float = 180.0  # the torch.compile subprocess; 0 skips the row
    quick_mode: bool = False

    @classmethod
    def quick(cls) -> "BenchSizes":
        """Tiny sizes and 2 rounds: every row runs in a fraction of a second (the test uses this)."""
        return cls(vocab=1000, kgram_hidden=16, kgram_seq=4, kgram_batch=2, tf_layers=1, tf_heads=2, tf_d=16,
                   tf_block=16, tf_batch=2, lstm_size=32, lstm_seq=8, lstm_batch=2, gen_prompt=4, gen_new=8,
                   gen_block=16, topp_calls=5, compact_batches=1, repeats=2, budget_s=5.0, compile_timeout_s=0.0,
                   ttl_budget_s=2.0, ttl_val_stories=4, ttl_stories=120, quick_mode=True)


# --- rows ---

@dataclass
class Row:
    """One line of the table: a baseline and a fast path, their medians, the ratio and the target."""

    key: str
    what: str
    baseline: str
    fast: str
    unit: str
    base_value: float | None = None
    fast_value: float | None = None
    ratio: float | None = None
    target: str = "report"
    met: str = "n/a"  # "yes" / "no"; "n/a" for report-only rows, "n/a: why" for a row that could not run
    memory: str = ""  # "baseline MB -> fast MB" where measured
    note: str = ""
    about: str = ""  # the paragraph for BENCHMARKS.md
    runs: str = ""  # how many timed runs and their spread


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def _spread(times: list[float]) -> str:
    return f"{len(times)} runs, {min(times) * 1e3:,.1f}-{max(times) * 1e3:,.1f} ms"


# --- timing ---

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def alternate(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int, budget_s: float,
              warmup: int = 1) -> dict[str, list[float]]:
    """Time each callable in turn, A B A B ..., after ``warmup`` untimed rounds; seconds per call.

    Alternating spreads slow drifts of the machine (other processes, clocks, caches) over both sides.
    Stops after ``repeats`` rounds, or earlier once ``budget_s`` seconds of timed rounds are spent
    (one round always runs). On a GPU the device is synchronised around each call.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return times


def _median(times: list[float]) -> float:
    return statistics.median(times)


# --- the starter's K-gram loop (the baseline) ---

def starter_loop_kgram_forward(model, idx: torch.Tensor) -> torch.Tensor:
    """The course starter's K-gram forward: one MLP call per time step and batch element, on real one-hot vectors.

    For every position t and sequence b it builds the k one-hot vectors of the window (left-padded with
    id 0), concatenates them into one (1, k * vocab) row and runs ``model``'s layers on that row alone.
    Same weights and window rule as ``model`` (a ``KGramMLPSeqModel`` with ``input_mode="one_hot"``), so
    the result equals ``model(idx)``; only the formulation differs.

    Args:
        model: KGramMLPSeqModel, input_mode "one_hot", window "aligned" (t-k+1 .. t) or "starter" (t-k .. t-1).
        idx: (T, B) token ids.
    Returns (T, B, vocab) logits.
    """
    if getattr(model, "input_mode", None) != "one_hot":
        raise ValueError(f"the starter's loop feeds one-hot vectors; build the model with input_mode='one_hot', "
                         f"got {getattr(model, 'input_mode', None)!r}")
    T, B = idx.shape
    k, V = model.k, model.vocab_size
    padded = torch.cat([idx.new_zeros(k, B), idx], dim=0)  # (k + T, B): position t is row k + t
    first_row = 1 if model.window == "aligned" else 0  # aligned window ends at t, the starter's at t - 1
    dtype = model.first.weight.dtype
    steps = []
    for t in range(T):
        per_sequence = []
        for b in range(B):
            window = padded[t + first_row: t + first_row + k, b]  # (k,) ids, oldest first
            x = F.one_hot(window, V).to(dtype).reshape(1, k * V)  # (1, k*V): the concatenated one-hot vectors
            h = model.inner(F.silu(model.first(x)))  # (1, E)
            per_sequence.append(model.head(h))  # (1, V)
        steps.append(torch.cat(per_sequence, dim=0))  # (B, V)
    return torch.stack(steps)  # (T, B, V)


# --- training steps shared by the timing rows and the --one memory subprocesses ---

def _transformer(sizes: BenchSizes, vocab: int, device, block_size: int | None = None, seed: int = 0):
    from pico_helpers.models.transformer import TransformerModel

    torch.manual_seed(seed)
    return TransformerModel(vocab, d_model=sizes.tf_d, n_heads=sizes.tf_heads, n_blocks=sizes.tf_layers,
                            block_size=block_size or sizes.tf_block).to(device)


def _random_ids(T: int, B: int, vocab: int, device, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (T, B), generator=g).to(device)  # (T, B)


def _plain_adam(model) -> torch.optim.Optimizer:
    """The unfused baseline: one small kernel per operation and parameter."""
    return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=False, foreach=False)


def _train_step(model, optimizer, loss_fn) -> Callable[[], torch.Tensor]:
    """The training loop's step, in its order: loss, zero_grad (set to None), backward, optimizer step."""
    def step():
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def _bf16(device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_step(name: str, sizes: BenchSizes, device) -> tuple[Callable[[], object], int, dict]:
    """One training step of ``name`` ("family:variant") on a fresh model and fixed batch.

    Returns (step, tokens per step, info). Families and variants:
      transformer:plain  model(idx) full logits + compute_next_token_loss + Adam(fused=False, foreach=False)
      transformer:fast   next_token_loss (fused head + cross-entropy, chunked) + make_optimizer (fused Adam)
      transformer:bf16   the fast step under torch.autocast(bfloat16)
      lstm:default       next_token_loss + torch.optim.Adam with torch's default implementation
      lstm:fused         next_token_loss + make_optimizer (fused Adam)
    """
    from pico_helpers.training.losses import compute_next_token_loss, next_token_loss
    from pico_helpers.models import LSTMSeqModel
    from pico_helpers.training.loop import make_optimizer

    family, _, variant = name.partition(":")
    if family == "transformer" and variant in ("plain", "fast", "bf16"):
        model = _transformer(sizes, sizes.vocab, device)
        idx = _random_ids(sizes.tf_block, sizes.tf_batch, sizes.vocab, device)  # (T, B)
        if variant == "plain":
            optimizer = _plain_adam(model)
            loss_fn = lambda: compute_next_token_loss(model(idx), idx)  # noqa: E731  (T, B, V) logits
        else:
            optimizer = make_optimizer(model, LEARNING_RATE, device)
            cast = (lambda: _bf16(device)) if variant == "bf16" else nullcontext

            def loss_fn():
                with cast():
                    return next_token_loss(model, idx)
        info = {"fused": bool(optimizer.defaults.get("fused")), "model": model, "idx": idx}
        return _train_step(model, optimizer, loss_fn), idx.numel(), info
    if family == "lstm" and variant in ("default", "fused"):
        torch.manual_seed(0)
        model = LSTMSeqModel(sizes.vocab, sizes.lstm_size, sizes.lstm_size).to(device)
        idx = _random_ids(sizes.lstm_seq, sizes.lstm_batch, sizes.vocab, device)
        if variant == "default":
            optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        else:
            optimizer = make_optimizer(model, LEARNING_RATE, device)
        info = {"fused": bool(optimizer.defaults.get("fused")), "model": model, "idx": idx, "optimizer": optimizer}
        return _train_step(model, optimizer, lambda: next_token_loss(model, idx)), idx.numel(), info
    raise ValueError(f"unknown step {name!r}; use transformer:plain|fast|bf16 or lstm:default|fused")


def _default_adam_impl(device) -> str:
    """Which Adam implementation torch picks when neither fused nor foreach is given, on ``device``."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach  # private: only to name the choice

        p = torch.zeros(1, device=device, requires_grad=True)
        _, foreach = _default_to_fused_or_foreach([p], differentiable=False, use_fused=False)
        return "foreach (multi-tensor)" if foreach else "single-tensor for-loop"
    except Exception:  # the private helper moved: say so instead of guessing
        return "unknown (this torch does not expose its default)"


# --- peak memory ---

def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give memory freed by the warm-up back to the OS (glibc), so it is not counted as in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak_memory(name: str, sizes: BenchSizes, device) -> dict:
    """Peak extra memory of one training step ``name`` (see build_step), measured in THIS process.

    Call it in a fresh process (``python -m benchmarks.bench --one NAME``). The step runs once to
    warm up (Adam's state, lazy initialisations), then its peak is measured during a second step, over
    what was in use just before it (model, gradients from step 1, Adam's state, the batch):
      - CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated.
      - CPU on Linux: freed memory is returned to the OS (malloc_trim), the kernel's peak-RSS mark is
        reset (/proc/self/clear_refs), then VmHWM after the step minus VmRSS before it.
      - elsewhere: the first step from a fresh process, ru_maxrss after minus before (so it also counts
        Adam's state being created).
    Returns {"peak_bytes", "method", "before_bytes"}.
    """
    step, _, _ = build_step(name, sizes, device)
    if device.type == "cuda":
        step()
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "before_bytes": before,
                "method": "cuda max_memory_allocated"}
    if _proc_status_kb("VmRSS") is not None:
        step()
        gc.collect()
        _malloc_trim()
        if _reset_peak_rss():
            before = _proc_status_kb("VmRSS") * 1024
            step()
            return {"peak_bytes": _proc_status_kb("VmHWM") * 1024 - before, "before_bytes": before,
                    "method": "VmHWM - VmRSS, second step"}
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"peak_bytes": after - before, "before_bytes": before, "method": "ru_maxrss delta, first step"}


def _child_command(one: str, args, flag: str = "--one") -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.bench", flag, one, "--device", str(args.device_name)]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.compile_timeout is not None:
        cmd += ["--compile-timeout", str(args.compile_timeout)]
    return cmd


def _run_children(names: list[str], args, timeout_s: float, workers: int = 2, flag: str = "--one") -> dict:
    """Run ``--one NAME`` (or ``flag NAME``) subprocesses, ``workers`` at a time; {name: result or {"error": why}}."""
    results: dict[str, dict] = {}
    pending = list(names)
    running: list[tuple[str, subprocess.Popen, float]] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    while pending or running:
        while pending and len(running) < workers:
            name = pending.pop(0)
            proc = subprocess.Popen(_child_command(name, args, flag), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            running.append((name, proc, time.perf_counter()))
        name, proc, t0 = running.pop(0)
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results[name] = {"error": f"did not finish within {timeout_s:.0f} s"}
            continue
        lines = [line for line in out.splitlines() if line.startswith(ONE_PREFIX)]
        if proc.returncode == 0 and lines:
            results[name] = json.loads(lines[-1][len(ONE_PREFIX):])
        else:
            last = (err.strip().splitlines() or ["no output"])[-1]
            results[name] = {"error": f"exit code {proc.returncode}: {last[:200]}"}
    return results


# --- torch.compile (run in a subprocess: it may take minutes, or fail) ---

def _compile_child(sizes: BenchSizes, device) -> dict:
    """Fast Transformer step, eager against ``torch.compile(model.hidden)`` (what TrainConfig(compile=True) does)."""
    from pico_helpers.training.losses import next_token_loss
    from pico_helpers.training.loop import make_optimizer

    eager = _transformer(sizes, sizes.vocab, device)
    compiled = _transformer(sizes, sizes.vocab, device)
    idx = _random_ids(sizes.tf_block, sizes.tf_batch, sizes.vocab, device)
    view = types.SimpleNamespace(hidden=torch.compile(compiled.hidden), head=compiled.head)
    eager_step = _train_step(eager, make_optimizer(eager, LEARNING_RATE, device), lambda: next_token_loss(eager, idx))
    compiled_step = _train_step(compiled, make_optimizer(compiled, LEARNING_RATE, device),
                                lambda: next_token_loss(view, idx))
    t0 = time.perf_counter()
    compiled_step()  # compiles forward and backward
    _sync(device)
    compile_s = time.perf_counter() - t0
    times = alternate({"eager": eager_step, "compiled": compiled_step}, device, sizes.repeats,
                      sizes.budget_s / 2, warmup=1)
    return {"eager_s": times["eager"], "compiled_s": times["compiled"], "compile_s": compile_s,
            "tokens": idx.numel()}


# --- the rows ---

def _speed_row(key, what, baseline, fast, tokens, times_base, times_fast, target_min, about, target=None,
               **extra) -> Row:
    """A tokens/s row: ratio = fast tokens/s over baseline tokens/s; met if ratio >= target_min (0: report only)."""
    base = tokens / _median(times_base)
    quick = tokens / _median(times_fast)
    ratio = quick / base
    return Row(key, what, baseline, fast, "tokens/s", base, quick, ratio,
               target or (f">= {target_min:g}x" if target_min else "report"),
               _met(ratio >= target_min) if target_min else "n/a",
               runs=f"baseline {_spread(times_base)}; fast {_spread(times_fast)}", about=about, **extra)


def _path_words(config, bf16: bool) -> str:
    """The training path a time-to-loss side runs, in the table's words."""
    vocab = getattr(config, "vocab", "full")
    parts = ["corpus vocabulary + other" if vocab == "corpus" else "full vocabulary",
             "bf16 autocast" if bf16 else "fp32",
             "stories in windows" if getattr(config, "long_examples", "truncate") == "windows" else "stories truncated",
             "bucketed by length" if getattr(config, "bucket_by_length", False) else "no bucketing",
             f"cosine lr {config.learning_rate:g} (warm-up {config.warmup_steps})" if config.lr_schedule == "cosine"
             else f"constant lr {config.learning_rate:g}"]
    return ", ".join(parts)


def _curve(points) -> str:
    return ", ".join(f"{t:.0f} s {loss:.2f}" for t, loss in points)


def _row_time_to_loss(sizes: BenchSizes, device) -> list[Row]:
    from benchmarks.time_to_loss import race

    result = race(sizes, device)
    base, fast = result["sides"]["baseline"], result["sides"]["fast"]
    target, reached = result["final"]["baseline"], result["reached_s"]
    cfg = (f"Transformer, {sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, block {sizes.tf_block}, "
           f"batch {sizes.tf_batch}, {sizes.ttl_budget_s:.0f} s of training per side")
    ratio = base.clock / reached if reached else None  # None: never reached, or below it from the start
    note = (f"validation loss at the budget: baseline {target:.3f}, fast {result['final']['fast']:.3f}; the fast side "
            + ("never reached the baseline's final loss" if reached is None else
               "was below it at its first validation point, before training" if reached == 0 else
               f"reached {target:.3f} at {reached:.1f} s ({reached / base.clock:.2f}x the baseline's time)")
            + "; " + "; ".join(f"{s.name}: {s.steps:,} steps, {s.tokens / s.clock:,.0f} tokens/s, {s.bf16_why}"
                               for s in (base, fast))
            + (f"; the fast side's cosine schedule ran over {fast.total_steps:,} steps, those its budget held"
               if fast.config.lr_schedule == "cosine" else ""))
    about = ("What a student feels: how low the TinyStories validation loss gets in the minutes they have. "
             "benchmarks/time_to_loss.py trains both sides from the same seed on " + result["data"] + ". "
             "They take turns, one step at a time, each on its own clock (the side whose clock is behind steps "
             "next), until each has trained for the budget; scoring is off the clock. Validation points every tenth "
             "of the budget, in float32, as a cross-entropy over all 50,257 GPT-2 ids for both sides (the corpus "
             "vocabulary's \"other\" class shares its probability among the ids it stands for), on the same "
             "token windows. Baseline: the training path before issue 11, set explicitly (`OLD_DEFAULTS`). Fast: "
             "`TrainConfig`'s defaults for this shape. Value = seconds of training to the baseline's final "
             "validation loss (the fast side's time interpolated between its validation points); ratio = baseline "
             "time / fast time. Curves (clock, validation loss): baseline " + _curve(base.points)
             + "; fast " + _curve(fast.points) + ".")
    return [Row("time_to_loss", f"Time to the baseline's validation loss, TinyStories ({cfg})",
                _path_words(base.config, base.bf16), _path_words(fast.config, fast.bf16), "s to loss",
                base.clock, reached, ratio, ">= 2.5x (<= 0.4x the time)", _met(reached is not None and (
                    reached == 0 or ratio >= 2.5)),
                note=note, about=about)]


def _row_kgram(sizes: BenchSizes, device) -> list[Row]:
    from pico_helpers.training.losses import compute_next_token_loss, next_token_loss
    from pico_helpers.models import KGramMLPSeqModel
    from pico_helpers.training.loop import make_optimizer

    def build():
        torch.manual_seed(0)
        return KGramMLPSeqModel(sizes.vocab, k=sizes.kgram_k, embed_size=sizes.kgram_hidden, num_inner_layers=1,
                                chunk_size=0, input_mode="one_hot").to(device)

    loop_model, fast_model = build(), build()  # the same initial weights, one model per side
    idx = _random_ids(sizes.kgram_seq, sizes.kgram_batch, sizes.vocab, device)  # (T, B)
    with torch.no_grad():
        diff = (starter_loop_kgram_forward(loop_model, idx[:2]) - fast_model(idx[:2])).abs().max().item()
    loop_step = _train_step(loop_model, _plain_adam(loop_model),
                            lambda: compute_next_token_loss(starter_loop_kgram_forward(loop_model, idx), idx))
    fast_step = _train_step(fast_model, make_optimizer(fast_model, LEARNING_RATE, device),
                            lambda: next_token_loss(fast_model, idx))
    fast_step()  # warm-up of the fast side; the loop's warm-up was the two-position check above
    times = alternate({"loop": loop_step, "fast": fast_step}, device, sizes.repeats, sizes.budget_s, warmup=0)
    what = (f"K-gram MLP one-hot training step (k={sizes.kgram_k}, hidden {sizes.kgram_hidden}, seq "
            f"{sizes.kgram_seq}, batch {sizes.kgram_batch}, vocab {sizes.vocab:,})")
    about = ("One training step (loss, zero_grad, backward, Adam step) of a `KGramMLPSeqModel` (one-hot input, "
             f"1 inner layer) on a random ({sizes.kgram_seq}, {sizes.kgram_batch}) batch. Baseline: the course "
             "starter's formulation, `starter_loop_kgram_forward` in bench.py: for every time step and batch "
             "element, the concatenated one-hot vector of the k-token window (k x vocab wide) goes through the "
             "model's own layers, one MLP call each; then the plain cross-entropy over the full logits and "
             "`torch.optim.Adam(fused=False, foreach=False)`. Fast: what `train()` runs: `next_token_loss` on the "
             "vectorised model, which gathers the k columns of the first weight matrix instead of multiplying by "
             "one-hot vectors, for all positions at once, and `make_optimizer` (fused Adam). Two models with the "
             "same initial weights compute the same function (tests/test_bench.py checks it; here the largest "
             f"logit difference on two time steps was {diff:.1e}). Each of the loop's {idx.numel():,} MLP calls "
             f"multiplies a {sizes.kgram_k * sizes.vocab:,}-wide row by the whole first weight matrix "
             f"({sizes.kgram_k * sizes.vocab * sizes.kgram_hidden * 4 / 1e6:.0f} MB), and its backward writes a "
             "gradient of that size per call; the gather reads k columns and scatters k columns back.")
    return [_speed_row("kgram", what, "starter loop (one-hot per token) + plain CE + unfused Adam",
                       "vectorised (column gather) + fused loss + fused Adam",
                       idx.numel(), times["loop"], times["fast"], 50, about,
                       note=f"max |loop - fast| logits = {diff:.1e}")]


def _row_transformer(sizes: BenchSizes, device) -> list[Row]:
    plain, tokens, _ = build_step("transformer:plain", sizes, device)
    fast, _, info = build_step("transformer:fast", sizes, device)
    times = alternate({"plain": plain, "fast": fast}, device, sizes.repeats, sizes.budget_s)
    cfg = (f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, block {sizes.tf_block}, "
           f"batch {sizes.tf_batch}, vocab {sizes.vocab:,}, fp32")
    fused_note = "" if info["fused"] else " (this torch refused fused=True: make_optimizer fell back to the default)"
    about = (f"One training step of a `TransformerModel` ({cfg}) on a random full-length batch: loss, "
             "zero_grad, backward, Adam step. Baseline: `model(idx)` builds the full (T, B, vocab) logits, "
             "`compute_next_token_loss` takes the cross-entropy, and `torch.optim.Adam(fused=False, "
             "foreach=False)` updates one parameter at a time. Fast: what training does, `next_token_loss` (the "
             "head and the cross-entropy fused, in row chunks, never holding all logits) and `make_optimizer` "
             f"(fused Adam){fused_note}. Two models with the same initial weights, one per side.")
    speed = _speed_row("transformer_speed", f"Transformer training step ({cfg})", "full logits + CE + unfused Adam",
                       "fused head+CE (chunked) + fused Adam", tokens, times["plain"], times["fast"], 1.5, about)
    memory = Row("transformer_memory", f"Transformer training step: peak memory ({cfg})",
                 "full logits + CE + unfused Adam", "fused head+CE (chunked) + fused Adam", "MB",
                 target="<= 0.5x", about=("Peak extra memory of the same two steps, each measured in its own fresh "
                                          "process (see \"Peak memory\" below). Ratio = fast / baseline."))
    return [speed, memory]


def _row_lstm(sizes: BenchSizes, device) -> list[Row]:
    default, tokens, info_default = build_step("lstm:default", sizes, device)
    fused, _, info = build_step("lstm:fused", sizes, device)
    model = info["model"]
    n_params = sum(p.numel() for p in model.parameters())
    n_vocab_side = model.embedding.weight.numel() + model.head.weight.numel()
    times = alternate({"default": default, "fused": fused}, device, sizes.repeats, sizes.budget_s)
    # The optimizer step alone, on the gradients the last step left behind: what fusing changes.
    opt_times = alternate({"default": info_default["optimizer"].step, "fused": info["optimizer"].step}, device,
                          sizes.repeats, sizes.budget_s / 4, warmup=0)
    opt_default, opt_fused = _median(opt_times["default"]) * 1e3, _median(opt_times["fused"]) * 1e3
    impl = _default_adam_impl(device)
    cfg = (f"embed = hidden = {sizes.lstm_size}, seq {sizes.lstm_seq}, batch {sizes.lstm_batch}, "
           f"vocab {sizes.vocab:,}")
    about = (f"One training step of `LSTMSeqModel` ({cfg}), the same loss on both sides (`next_token_loss`, the "
             "training loss); only the optimizer differs. Baseline: `torch.optim.Adam(params, lr)` with no "
             f"implementation flag; on {device.type} this torch picks the {impl} implementation. Fast: "
             "`make_optimizer`, Adam with `fused=True`"
             + ("" if info["fused"] else " (refused here: it fell back to the default)") + ". The embedding and "
             f"the head hold {n_vocab_side / 1e6:.1f}M of the {n_params / 1e6:.1f}M parameters, and their "
             "gradients are dense, so every step updates all of them.")
    note = (f"optimizer.step() alone: default {opt_default:.3g} ms, fused {opt_fused:.3g} ms "
            f"({opt_default / opt_fused:.1f}x); the rest of the step is the same on both sides")
    return [_speed_row("lstm", f"LSTM training step ({cfg})", f"Adam default ({impl})", "Adam fused=True",
                       tokens, times["default"], times["fused"], 1.5, about, note=note)]


def _row_generation(sizes: BenchSizes, device) -> list[Row]:
    from benchmarks.baselines import starter_generate_tokens
    from pico_helpers.sample.generate import generate_tokens

    model = _transformer(sizes, sizes.vocab, device, block_size=sizes.gen_block)
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, sizes.vocab, (sizes.gen_prompt,), generator=g).tolist()
    fns = {"cache": lambda: generate_tokens(model, prompt, sizes.gen_new),
           "recompute": lambda: generate_tokens(model, prompt, sizes.gen_new, use_cache=False),
           "starter": lambda: starter_generate_tokens(model, prompt, sizes.gen_new)}
    same = len({tuple(fn()) for fn in fns.values()}) == 1
    times = alternate(fns, device, sizes.repeats, sizes.budget_s, warmup=0)  # the line above was the warm-up
    cfg = (f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, vocab {sizes.vocab:,}, untrained; "
           f"prompt {sizes.gen_prompt} tokens, {sizes.gen_new} new, greedy, batch 1")
    x = torch.randn(1, sizes.tf_d, device=device)
    with torch.inference_mode():  # the head for one position, as every method runs it once per new token
        head_times = alternate({"head": lambda: [model.head(x) for _ in range(sizes.gen_new)]}, device,
                               sizes.repeats, sizes.budget_s / 8)["head"]
    head_ms = _median(head_times) / sizes.gen_new * 1e3
    cache_ms = _median(times["cache"]) / sizes.gen_new * 1e3
    note = (f"all three gave the same tokens: {'yes' if same else 'no'}; per new token the cache takes "
            f"{cache_ms:.2f} ms, of which {head_ms:.2f} ms is the {sizes.tf_d} x {sizes.vocab:,} head for one "
            "position (every method pays it), so no method can beat the starter's by more than "
            f"{_median(times['starter']) / sizes.gen_new * 1e3 / head_ms:.1f}x here")
    common = (f"`generate_tokens` on one `TransformerModel` ({cfg}, block_size {sizes.gen_block} so the context "
              "is never cropped). Fast: `use_cache=True`, the KV cache: after the prompt, each token is the model's "
              "one forward pass with T = 1 and the `KVCache` (`model.step`), its own position through the blocks "
              "and the head. The starter's speed depends on what ran before it in the process (it allocates a new "
              "(T, vocab) logits tensor for every token): run after the K-gram and Transformer rows in one process "
              "it measured faster, by an amount that varied from run to run, which is why each family here gets a "
              "fresh process. ")
    rows = [_speed_row("gen_recompute", f"Generation of {sizes.gen_new} tokens ({cfg})", "recompute, last logits only",
                       "KV cache", sizes.gen_new, times["recompute"], times["cache"], 1.9,
                       common + "Baseline: `use_cache=False`, the whole context through the blocks for every "
                       "new token, but the head on the last position only.", note=note),
            _speed_row("gen_starter", f"Generation of {sizes.gen_new} tokens ({cfg})",
                       "starter: recompute, all logits", "KV cache", sizes.gen_new, times["starter"],
                       times["cache"], 7, common + "Baseline: `starter_generate_tokens` in benchmarks/baselines.py, "
                       "the starter's way: the whole context through the model with logits for every position, "
                       "keeping the last.", note=note)]
    return rows


def _row_gen_corpus(sizes: BenchSizes, device) -> list[Row]:
    from benchmarks.time_to_loss import side_configs, tinystories_files
    from pico_helpers.data import load_corpus
    from pico_helpers.sample.generate import generate_tokens

    train_path, val_path = tinystories_files(sizes.quick_mode)
    vocab = load_corpus(side_configs(sizes, train_path, val_path, device)["fast"]).vocab  # the time-to-loss row's
    full_model = _transformer(sizes, GPT2_VOCAB, device, block_size=sizes.gen_block)
    corpus_model = _transformer(sizes, vocab.n_vocab, device, block_size=sizes.gen_block)
    corpus_model.vocab = vocab  # as build_model and train() set it: ids in and out stay GPT-2's
    g = torch.Generator().manual_seed(2)
    prompt = [vocab.ids[i] for i in torch.randint(0, len(vocab.ids), (sizes.gen_prompt,), generator=g).tolist()]
    fns = {"full": lambda: generate_tokens(full_model, prompt, sizes.gen_new),
           "corpus": lambda: generate_tokens(corpus_model, prompt, sizes.gen_new)}
    times = alternate(fns, device, sizes.repeats, sizes.budget_s)
    cfg = (f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, untrained; prompt {sizes.gen_prompt} "
           f"tokens, {sizes.gen_new} new, greedy, batch 1, KV cache")
    about = (f"`generate_tokens` with the KV cache ({cfg}), on two `TransformerModel`s that differ only in their "
             f"vocabulary. Baseline: GPT-2's {GPT2_VOCAB:,} ids. Fast: the corpus vocabulary of the time-to-loss "
             f"row's training data ({train_path.name}: {len(vocab.ids):,} ids plus \"other\"), set as `model.vocab`, "
             "so each step's logits are mapped to all of GPT-2's ids (`vocab.full_logits`) before the choice: the "
             "ids in and out are GPT-2's on both sides. The head for one position is most of a cached token's "
             "cost, and it shrinks with the vocabulary. Report only.")
    return [_speed_row("gen_corpus", f"Generation with the corpus vocabulary ({vocab.n_vocab:,} vs {GPT2_VOCAB:,} ids)",
                       f"full vocabulary ({GPT2_VOCAB:,})", f"corpus vocabulary ({vocab.n_vocab:,})", sizes.gen_new,
                       times["full"], times["corpus"], 0, about)]


def _row_topp(sizes: BenchSizes, device) -> list[Row]:
    from benchmarks.baselines import full_sort_nucleus_probs, full_sort_nucleus_sampling
    from pico_helpers.sample.nucleus import TOP_K, nucleus_probs, nucleus_sampling

    g = torch.Generator().manual_seed(3)
    n_rows = 16
    logits = torch.randn(n_rows, sizes.vocab, generator=g) * sizes.topp_scale  # (n_rows, V), on the CPU
    p = sizes.top_p
    identical = all(torch.equal(nucleus_probs(row, p), full_sort_nucleus_probs(row, p)) for row in logits)
    kept = [int((nucleus_probs(row, p) > 0).sum()) for row in logits]
    gen = torch.Generator().manual_seed(4)
    samplers = {"sort": lambda row: full_sort_nucleus_sampling(row, p, generator=gen),
                "fast": lambda row: nucleus_sampling(row, p, generator=gen)}

    def draw(name: str):
        for i in range(sizes.topp_calls):
            samplers[name](logits[i % n_rows])

    times = alternate({"sort": lambda: draw("sort"), "fast": lambda: draw("fast")}, torch.device("cpu"),
                      sizes.repeats, sizes.budget_s / 2)

    def ms_per_draw(row, name: str, n: int = 5) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            samplers[name](row)
        return (time.perf_counter() - t0) / n * 1e3

    # A flatter row, like our small trained models' (a nucleus of thousands), and a flat one (untrained).
    wide = torch.randn(sizes.vocab, generator=g) * 3.0
    flat = torch.randn(sizes.vocab, generator=g)
    n_wide, n_flat = (int((nucleus_probs(row, p) > 0).sum()) for row in (wide, flat))
    wide_fast, wide_sort, flat_fast = ms_per_draw(wide, "fast"), ms_per_draw(wide, "sort"), ms_per_draw(flat, "fast")
    sort_ms = _median(times["sort"]) / sizes.topp_calls * 1e3
    fast_ms = _median(times["fast"]) / sizes.topp_calls * 1e3
    ratio = sort_ms / fast_ms
    note = (f"identical distribution on all {n_rows} rows: {'yes' if identical else 'no'}; nucleus {min(kept)}-"
            f"{max(kept)} tokens; a wider row (N(0, 3^2) logits, nucleus {n_wide:,}"
            f"{f', beyond the top {TOP_K}: the full sort' if n_wide >= TOP_K else ''}): {wide_fast:.2f} ms against {wide_sort:.2f} ms for the baseline; a flat row (N(0, 1), "
            f"nucleus {n_flat:,}): {flat_fast:.2f} ms")
    about = (f"One draw of `nucleus_sampling(logits, p={p})` over {sizes.vocab:,} logits (a single (V,) row, on the "
             f"CPU, where generation samples), cycling through {n_rows} rows of N(0, {sizes.topp_scale:g}^2) logits, "
             f"peaked like a confident model's (nucleus of {min(kept)}-{max(kept)} tokens). Baseline: "
             "`full_sort_nucleus_sampling` in benchmarks/baselines.py, the same cut after a full descending sort of "
             f"the vocabulary. Fast: the library's one pre-cut, `torch.topk` of {TOP_K} candidates, which settles "
             f"every row whose nucleus ends before the {TOP_K}th candidate (else the library sorts the whole "
             "vocabulary too). Ratio = sort time / fast time; the target is on the fast path's time per token, and "
             "`nucleus_probs` must give bit-identical distributions to `full_sort_nucleus_probs` on these rows "
             "(checked here, and in tests/test_sampling.py). Wider and flat rows are timed in the note.")
    ok = fast_ms <= 0.3 and identical
    return [Row("topp", f"Top-p sampling (p={p}) over {sizes.vocab:,} logits", "full sort",
                f"top-{TOP_K} pre-cut, else full sort", "ms/token", sort_ms, fast_ms, ratio,
                "<= 0.3 ms/token, identical", _met(ok), note=note, about=about,
                runs=f"baseline {_spread(times['sort'])}; fast {_spread(times['fast'])} ({sizes.topp_calls} draws each)")]


def _compact_batches(sizes: BenchSizes, compact: bool, device):
    from pico_helpers.config import TrainConfig
    from pico_helpers.data import iterate_batches, load_corpus

    path = ROOT / "input_files" / "3seqs.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; create it with `python -c \"from pico_helpers import "
                                "write_3seqs; write_3seqs()\"` from the repository root")
    config = TrainConfig(input_files=[str(path)], tinystories_weight=0.0, block_size=sizes.tf_block,
                         vocab="corpus" if compact else "full")
    corpus = load_corpus(config)
    batches = []
    for tokens, mask in iterate_batches(corpus.train, sizes.tf_batch, shuffle=True, seed=0):  # the same batches
        batches.append((tokens.to(device), mask.to(device)))
        if len(batches) == sizes.compact_batches:
            break
    return corpus.vocab_size, batches, corpus.vocab


def _row_compact(sizes: BenchSizes, device) -> list[Row]:
    from pico_helpers.training.losses import next_token_loss
    from pico_helpers.training.loop import make_optimizer

    steps, vocab_sizes, n_tokens = {}, {}, 0
    for compact in (False, True):
        vocab, batches, corpus_vocab = _compact_batches(sizes, compact, device)
        model = _transformer(sizes, vocab, device)
        optimizer = make_optimizer(model, LEARNING_RATE, device)

        def run(model=model, optimizer=optimizer, batches=batches, corpus_vocab=corpus_vocab):
            for tokens, mask in batches:
                _train_step(model, optimizer, lambda: next_token_loss(model, tokens, mask, vocab=corpus_vocab))()

        steps["compact" if compact else "full"] = run
        vocab_sizes[compact] = vocab
        n_tokens = sum(int(mask.sum()) for _, mask in batches)  # the same sequences in both vocabularies
    compact_model = model  # the last one built

    def blocks_only(batches=batches):  # the floor of the compact step: the blocks, forward and backward
        for tokens, _ in batches:
            compact_model.hidden(tokens).sum().backward()
        compact_model.zero_grad(set_to_none=True)

    steps["blocks"] = blocks_only
    times = alternate(steps, device, sizes.repeats, sizes.budget_s)
    positions = sum(tokens.numel() for tokens, _ in batches)
    full_ms, compact_ms, blocks_ms = (_median(times[k]) * 1e3 for k in ("full", "compact", "blocks"))
    note = (f"the blocks alone (forward + backward over all {positions:,} positions, "
            f"{1 - n_tokens / positions:.0%} of them padding) take {blocks_ms:,.0f} ms of the compact run's "
            f"{compact_ms:,.0f} ms; the full-vocabulary run takes {full_ms:,.0f} ms, so no vocabulary could make "
            f"it more than {full_ms / blocks_ms:.1f}x faster here")
    cfg = f"{sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, block {sizes.tf_block}, batch {sizes.tf_batch}"
    about = (f"Training steps of the same `TransformerModel` ({cfg}) on the same {sizes.compact_batches} batches of "
             f"3seqs ({n_tokens:,} real tokens), with the fast loss and fused Adam on both sides. Baseline: GPT-2's "
             f"{vocab_sizes[False]:,}-token vocabulary (`TrainConfig(vocab=\"full\")`). Fast: the corpus vocabulary "
             f"(`vocab=\"corpus\"`, the default), the {vocab_sizes[True] - 1:,} ids 3seqs's training split uses plus "
             "one \"other\" class, the loss still over all GPT-2 ids: the embedding, the head and their optimizer "
             "state shrink by "
             "that factor; the blocks do not change. Tokens/s counts real (non-padding) tokens. A third timing, "
             "the compact model's blocks alone (`hidden(tokens).sum().backward()`, no head, loss or optimizer), "
             "shows the floor that a smaller vocabulary cannot go below (in the note): at this width the blocks, "
             "which also run over the padding of each batch, cost more than the vocabulary layers.")
    return [_speed_row("compact", f"Corpus vocabulary on 3seqs ({vocab_sizes[True]:,} vs {vocab_sizes[False]:,} ids)",
                       f"full vocabulary ({vocab_sizes[False]:,})", f"corpus vocabulary ({vocab_sizes[True]:,})",
                       n_tokens, times["full"], times["compact"], 10, about, target=">= 10x (expected)", note=note)]


def _row_bf16(sizes: BenchSizes, device) -> list[Row]:
    from pico_helpers.config import TrainConfig
    from pico_helpers.training.losses import next_token_loss
    from pico_helpers.training.precision import bf16_choice

    fp32, tokens, info32 = build_step("transformer:fast", sizes, device)
    bf16, _, info16 = build_step("transformer:bf16", sizes, device)
    with torch.no_grad():  # same weights (same seed), same batch, before any step
        loss32 = float(next_token_loss(info32["model"], info32["idx"]))
        with _bf16(device):
            loss16 = float(next_token_loss(info16["model"], info16["idx"]))
    auto, why = bf16_choice(TrainConfig(), device)  # what training picks here with bf16=None, the default
    times = alternate({"fp32": fp32, "bf16": bf16}, device, sizes.repeats, sizes.budget_s)
    diff = abs(loss16 - loss32)
    forced = _median(times["fp32"]) / _median(times["bf16"])
    note = (f"auto chose {why}; bf16 against fp32 for this step: {forced:.2f}x; loss fp32 {loss32:.5f}, bf16 "
            f"{loss16:.5f}, |difference| {diff:.2e} ({diff / loss32:.1e} relative)")
    about = ("The fast Transformer step of the Transformer row, in float32 against what `TrainConfig(bf16=None)` "
             "(auto, the default) picks on this machine: on a CUDA GPU with bf16, the same step under "
             "`torch.autocast(bfloat16)` (matmuls in bf16, softmax and sums in float32); on a CPU float32 again "
             "(ratio ~1; `training/precision.py` says why). Report only. The note gives the bf16 step "
             "against float32 whatever auto chose, and compares the loss of both on the same batch with the same "
             "initial weights.")
    return [_speed_row("bf16", f"bf16 autocast, Transformer step ({device.type})", "fp32 (fast path)",
                       f"auto: {'bf16 autocast' if auto else 'fp32'} (fast path)", tokens, times["fp32"],
                       times["bf16" if auto else "fp32"], 0, about, note=note)]


def _row_compile(sizes: BenchSizes, device, args) -> list[Row]:
    row = Row("compile", "torch.compile, Transformer step", "eager (fast path)", "torch.compile(model.hidden)",
              "tokens/s", about=("The fast Transformer step, eager against `torch.compile` of `model.hidden` (what "
                                 "`TrainConfig(compile=True)` does; the fused loss stays eager). Report only. It runs "
                                 "in a subprocess with a time limit, because compiling may take minutes or fail on "
                                 "a machine without a working C compiler; then the row says why."))
    if sizes.compile_timeout_s <= 0:
        row.met = "n/a: skipped (--quick or --compile-timeout 0)"
        row.note = "compiling takes a minute or more on 2 cores"
        return [row]
    result = _run_children(["compile"], args, sizes.compile_timeout_s, workers=1)["compile"]
    if "error" in result:
        row.met = row.note = f"n/a: {result['error']}"
        return [row]
    done = _speed_row("compile", row.what, row.baseline, row.fast, result["tokens"], result["eager_s"],
                      result["compiled_s"], 0, row.about)
    done.note = f"the first step, which compiles, took {result['compile_s']:.0f} s"
    return [done]


# --- the run ---

def _error_rows(keys, err: BaseException) -> list[Row]:
    why = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return [Row(k, k, "", "", "", met="error", note=why) for k in keys]


def run_family(family: str, sizes: BenchSizes, device, args) -> list[Row]:
    """The rows of one family, measured in this process (error rows if it fails)."""
    runners = {"time_to_loss": _row_time_to_loss, "kgram": _row_kgram, "transformer": _row_transformer,
               "lstm": _row_lstm, "generation": lambda s, d: _row_generation(s, d) + _row_gen_corpus(s, d),
               "topp": _row_topp, "compact": _row_compact, "bf16": _row_bf16,
               "compile": lambda s, d: _row_compile(s, d, args)}
    try:
        return runners[family](sizes, device)
    except Exception as err:  # one broken row must not hide the others
        traceback.print_exc()
        return _error_rows(FAMILIES[family], err)


def run_benchmark(sizes: BenchSizes, device, args, families=None, log=print) -> list[Row]:
    """Run the chosen families (default all), each in a fresh subprocess, then the memory subprocesses.

    Returns the rows in table order. One family at a time: two at once would share the cores.
    """
    families = families or list(FAMILIES)
    # a family's rounds stop after budget_s; compile waits longer, time to loss trains two sides for its budget
    timeout_s = 300.0 + sizes.compile_timeout_s + 3 * sizes.ttl_budget_s
    rows: list[Row] = []
    for family in families:
        t0 = time.perf_counter()
        log(f"[bench] {family} (a fresh process) ...", flush=True)
        result = _run_children([family], args, timeout_s, workers=1, flag="--family")[family]
        if "rows" in result:
            rows += [Row(**r) for r in result["rows"]]
        else:
            rows += _error_rows(FAMILIES[family], RuntimeError(result.get("error", "no result")))
        log(f"[bench] {family} done in {time.perf_counter() - t0:.1f} s", flush=True)
    _add_memory(rows, args, sizes, log)
    return sorted(rows, key=lambda r: ROW_KEYS.index(r.key))


def _add_memory(rows: list[Row], args, sizes: BenchSizes, log) -> None:
    by_key = {r.key: r for r in rows}
    wanted = []
    if "transformer_memory" in by_key and by_key["transformer_memory"].met != "error":
        wanted += ["transformer:plain", "transformer:fast"]
    if not sizes.quick_mode:  # the quick run only checks the mechanism, on the row with a memory target
        if "lstm" in by_key and by_key["lstm"].met != "error":
            wanted += ["lstm:default", "lstm:fused"]
        if "bf16" in by_key and by_key["bf16"].met != "error":
            wanted += ["transformer:fast", "transformer:bf16"]
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return
    t0 = time.perf_counter()
    log(f"[bench] peak memory: {len(wanted)} subprocesses ...", flush=True)
    mem = _run_children(wanted, args, timeout_s=300.0)
    log(f"[bench] peak memory done in {time.perf_counter() - t0:.1f} s", flush=True)

    def mb(name):
        r = mem.get(name, {})
        return r["peak_bytes"] / 2**20 if "peak_bytes" in r else None

    def pair(base, fast):
        a, b = mb(base), mb(fast)
        if a is None or b is None:
            errs = "; ".join(mem[n]["error"] for n in (base, fast) if "error" in mem.get(n, {}))
            return f"n/a ({errs})"
        return f"{a:,.0f} MB -> {b:,.0f} MB"

    methods = sorted({r["method"] for r in mem.values() if "method" in r})
    for key, base, fast in (("transformer_speed", "transformer:plain", "transformer:fast"),
                            ("lstm", "lstm:default", "lstm:fused"), ("bf16", "transformer:fast", "transformer:bf16")):
        if key in by_key and base in mem and fast in mem:
            by_key[key].memory = pair(base, fast)
    row = by_key.get("transformer_memory")
    if row is not None and row.met != "error":
        a, b = mb("transformer:plain"), mb("transformer:fast")
        row.memory = pair("transformer:plain", "transformer:fast")
        row.runs = f"one step per fresh process ({', '.join(methods)})"
        if a is not None and b is not None and a > 0:
            row.base_value, row.fast_value, row.ratio = a, b, b / a
            row.met = _met(b / a <= 0.5)
        else:
            row.note = row.memory


# --- command line ---

def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.bench``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds: a smoke run of a few seconds")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda[:N]")
    parser.add_argument("--out", type=Path, default=None,
                        help="report to write (default: BENCHMARKS.md at the repository root; "
                             "build/BENCHMARKS.quick.md with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated families to run, of: {', '.join(FAMILIES)} (default: all)")
    parser.add_argument("--compile-timeout", type=float, default=None,
                        help="seconds allowed for the torch.compile row's subprocess (0 skips it)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one subprocess measurement
    parser.add_argument("--family", default=None, help=argparse.SUPPRESS)  # internal: one family's rows
    return parser


def _pick_device(name: str) -> torch.device:
    if name in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return device


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --one, one subprocess measurement); print the table, write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _pick_device(args.device)
    args.device_name = str(device)
    sizes = BenchSizes.quick() if args.quick else BenchSizes()
    if args.compile_timeout is not None:
        sizes = replace(sizes, compile_timeout_s=args.compile_timeout)
    if args.one:
        result = _compile_child(sizes, device) if args.one == "compile" else measure_peak_memory(args.one, sizes, device)
        print(ONE_PREFIX + json.dumps(result), flush=True)
        return 0
    if args.family:
        if args.family not in FAMILIES:
            raise SystemExit(f"--family: unknown family {args.family!r}; choose from {', '.join(FAMILIES)}")
        rows = run_family(args.family, sizes, device, args)
        print(ONE_PREFIX + json.dumps({"rows": [asdict(r) for r in rows]}), flush=True)
        return 0
    families = None
    if args.only:
        families = [f.strip() for f in args.only.split(",") if f.strip()]
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise SystemExit(f"--only: unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    info = machine_info(device)
    print(f"[bench] {'quick' if args.quick else 'full'} run on {device} ({info['cpu']}, {info['cores']} cores, "
          f"{info['threads']} torch threads, torch {info['torch']}, load {info.get('load_start', 'n/a')})", flush=True)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    rows = run_benchmark(sizes, device, args, families)
    total = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):
        info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    share = others_share(cpu0, cpu_seconds(), total, info.get("cores") or 1)
    if share is not None:
        info["others_cpu_share"] = share
        info["other_processes_cpu"] = f"{share:.1%} of the machine's CPU time during the run"
    print()
    print(format_table(rows))
    for r in rows:
        if r.note:
            print(f"  {r.key}: {r.note}")
    out = args.out or (ROOT / "build" / "BENCHMARKS.quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    write_report(out, rows, info, total, sizes, argv)
    if busy_warning(info):
        print(f"\n[bench] warning: {busy_warning(info)}")
    print(f"\n[bench] {total:.0f} s in all; report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
