"""The time-to-loss row: the old and the new default training path raced on TinyStories (benchmarks/time_to_loss.py)."""
from __future__ import annotations

from benchmarks.harness import Row, met
from benchmarks.time_to_loss import race

__all__ = ["time_to_loss_rows"]


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


def _note(result) -> str:
    base, fast = result["sides"]["baseline"], result["sides"]["fast"]
    target, reached = result["final"]["baseline"], result["reached_s"]
    return (f"validation loss at the budget: baseline {target:.3f}, fast {result['final']['fast']:.3f}; the fast side "
            + ("never reached the baseline's final loss" if reached is None else
               "was below it at its first validation point, before training" if reached == 0 else
               f"reached {target:.3f} at {reached:.1f} s ({reached / base.clock:.2f}x the baseline's time)")
            + "; " + "; ".join(f"{s.name}: {s.steps:,} steps, {s.tokens / s.clock:,.0f} tokens/s, {s.bf16_why}"
                               for s in (base, fast))
            + (f"; the fast side's cosine schedule ran over {fast.total_steps:,} steps, those its budget held"
               if fast.config.lr_schedule == "cosine" else ""))


def _about(result) -> str:
    base, fast = result["sides"]["baseline"], result["sides"]["fast"]
    return ("What a student feels: how low the TinyStories validation loss gets in the minutes they have. "
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


def time_to_loss_rows(sizes, device) -> list[Row]:
    """Seconds of training the new default path needs to reach the old path's final validation loss (target 2.5x)."""
    result = race(sizes, device)
    base, fast = result["sides"]["baseline"], result["sides"]["fast"]
    reached = result["reached_s"]
    cfg = (f"Transformer, {sizes.tf_layers} layers, {sizes.tf_heads} heads, d {sizes.tf_d}, block {sizes.tf_block}, "
           f"batch {sizes.tf_batch}, {sizes.ttl_budget_s:.0f} s of training per side")
    ratio = base.clock / reached if reached else None  # None: never reached, or below it from the start
    return [Row("time_to_loss", f"Time to the baseline's validation loss, TinyStories ({cfg})",
                _path_words(base.config, base.bf16), _path_words(fast.config, fast.bf16), "s to loss",
                base.clock, reached, ratio, ">= 2.5x (<= 0.4x the time)",
                met(reached is not None and (reached == 0 or ratio >= 2.5)), note=_note(result), about=_about(result))]
