"""The runs that several notebooks share, defined once: ``preset("compare_tinystories", quick)``.
A later notebook gets the same config, so it loads the finished run instead of retraining. Used in 01, 03-06."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pico_helpers.config import MODEL_NAMES, TrainConfig, quick_mode

__all__ = ["preset", "PRESETS", "COMPARE_MODELS", "SWEEP_RATES", "LONG_RUN", "runs_root", "tinystories_source",
           "tinystories_valid_source", "Compared", "compare", "Trained", "long_config",
           "trained_transformer"]

COMPARE_MODELS = MODEL_NAMES  # the three models of the comparison, in the course's order
SAMPLE_STORIES = "input_files/tinystories_sample.txt"  # the repository's offline sample (quick mode)


def runs_root(quick: bool) -> Path:
    """Where this mode's runs are saved: $PICO_RUNS_DIR (default runs/) / quick or full."""
    return Path(os.environ.get("PICO_RUNS_DIR", "runs")) / ("quick" if quick else "full")


def tinystories_source(quick: bool) -> str | None:
    """The TinyStories file to read: $PICO_TINYSTORIES, else the repository's sample in quick mode, else None (the hub)."""
    return os.environ.get("PICO_TINYSTORIES") or (SAMPLE_STORIES if quick else None)


def tinystories_valid_source(quick: bool) -> str | None:
    """A separate validation file ($PICO_TINYSTORIES_VALID, full runs only), or None: hold out 10 % of the stories."""
    return None if quick else os.environ.get("PICO_TINYSTORIES_VALID") or None


# --- the shared runs: each returns the config for (quick, runs folder, TinyStories source) ---

def _lstm_3seqs(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The course's sanity check: the starter's LSTM on 3seqs at block 32 (01 trains it, 03 reuses it)."""
    if quick:
        return TrainConfig.quick(embed_size=32, epochs=2, max_steps_per_epoch=15, log_every=15,
                                 test_fraction=0.02, output_dir=str(runs / "lstm"))
    return TrainConfig(input_files=["input_files/3seqs.txt"], tinystories_weight=0.0, block_size=32,
                       embed_size=128, epochs=2, max_steps_per_epoch=200, sample_every_s=0.0,
                       prompt="0 1 2 3 4", output_dir=str(runs / "lstm"))


def _lstm_tinystories(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The same LSTM on TinyStories for 3 minutes, prompt "Once upon a" (01 trains it, 03 reuses it)."""
    if quick:
        return TrainConfig.quick(input_files=[], tinystories_weight=1.0, tinystories_path=tiny,
                                 tinystories_stories=200, block_size=64, embed_size=32, epochs=1,
                                 max_steps_per_epoch=20, log_every=20, prompt="Once upon a",
                                 output_dir=str(runs / "lstm"))
    return TrainConfig(input_files=[], tinystories_weight=1.0, tinystories_path=tiny, block_size=128,
                       tinystories_valid_path=tinystories_valid_source(quick), embed_size=128, epochs=100,
                       time_budget_s=180.0, sample_every_s=0.0, log_every=0, prompt="Once upon a",
                       output_dir=str(runs / "lstm"))


def _compare_tinystories(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The three models (COMPARE_MODELS) on TinyStories with one config and BUDGET_S seconds each; see compare()."""
    if quick:
        return TrainConfig.quick(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=200,
                                 block_size=32, embed_size=32, n_heads=2, n_blocks=1,
                                 kgram_input_mode="embedding", epochs=3, max_steps_per_epoch=5,
                                 output_dir=str(runs / "compare"))
    return TrainConfig(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=20000,
                       tinystories_valid_path=tinystories_valid_source(quick), block_size=128, embed_size=128,
                       n_heads=4, n_blocks=4, kgram_chunk_size=0, kgram_input_mode="embedding", batch_size=16,
                       epochs=100, time_budget_s=BUDGET_S, lr_schedule="cosine", warmup_steps=WARMUP_STEPS,
                       sample_every_s=0, log_every=0, output_dir=str(runs / "compare"))


PRESETS = {"lstm_3seqs": _lstm_3seqs, "lstm_tinystories": _lstm_tinystories,
           "compare_tinystories": _compare_tinystories}


def preset(name: str, quick: bool | None = None) -> TrainConfig:
    """The config of a shared run.

    Args: name: one of PRESETS (the LSTM presets are also run names; "compare_tinystories" runs per COMPARE_MODELS);
        quick: small sizes for smoke runs; None reads ``quick_mode()``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    quick = quick_mode() if quick is None else quick
    return PRESETS[name](quick, runs_root(quick), tinystories_source(quick))


# --- the equal-time comparison (04 trains it; 05 and 06 load it) ---

BUDGET_S, SWEEP_S = 480.0, 30.0  # seconds of training steps: each final run, each try of the sweep
WARMUP_STEPS = 50  # then cosine decay to the end of the budget (a try decays over its own SWEEP_S)
SWEEP_RATES = {"kgram_mlp_seq": (1e-3, 3e-3, 1e-2), "lstm_seq": (1e-3, 3e-3, 1e-2),
               "kvcache_transformer": (5e-4, 1e-3, 2e-3)}


@dataclass
class Compared:
    """One model of the comparison: the trained model, its History, the rate chosen and the sweep behind it."""

    model: object
    history: object
    learning_rate: float
    sweep: dict  # learning rate -> validation loss after the short try (None: its loss became non-finite)


def compare(corpus, quick: bool | None = None, names=COMPARE_MODELS, verbose: bool = True) -> dict:
    """Each model of ``names``: a SWEEP_S-second try per rate of SWEEP_RATES (warm-up, then cosine decay over the
    try), then a BUDGET_S-second run at the best rate (the same schedule over the budget). Returns {name: Compared};
    runs are saved and load at once the next time. Quick mode: a 5-step try of two rates, then 15 steps.

    Args: corpus: load_corpus(preset("compare_tinystories", quick)); verbose: the live plots and progress lines."""
    from pico_helpers.models import build_model
    from pico_helpers.training import train

    quick = quick_mode() if quick is None else quick
    base = preset("compare_tinystories", quick)
    short = base.replace(epochs=1) if quick else base.replace(time_budget_s=SWEEP_S)
    results, rates = {}, {name: SWEEP_RATES[name][:2] if quick else SWEEP_RATES[name] for name in names}
    runs, total = iter(range(1, 10**6)), sum(len(r) + 1 for r in rates.values())
    say = print if verbose else (lambda *args: None)
    for name in names:
        sweep = {}
        for rate in rates[name]:
            say(f"compare(): run {next(runs)} of {total}, {name}: a short try at learning rate {rate:g}")
            model = build_model(name, short.replace(learning_rate=rate), corpus.vocab)
            try:
                tried = train(model, corpus, short.replace(learning_rate=rate), f"{name}_try_lr{rate:g}", verbose=verbose)
                sweep[rate] = tried.val_points[-1][1]
            except ValueError:  # the loss became non-finite: the rate is too high
                sweep[rate] = None
        rate = min((loss, r) for r, loss in sweep.items() if loss is not None)[1]
        say(f"compare(): run {next(runs)} of {total}, {name}: the whole budget at the best rate, {rate:g}")
        model = build_model(name, base.replace(learning_rate=rate), corpus.vocab)
        history = train(model, corpus, base.replace(learning_rate=rate), f"{name}_lr{rate:g}", verbose=verbose)
        results[name] = Compared(model, history, rate, sweep)
    return results


# --- the trained Transformer (04 trains it; 04-06 show its samples, attention and embeddings) ---

# The comparison's Transformer stops improving after about 5 passes over the 7,038 training stories (1.44M tokens),
# so the model shown is not that one trained for longer: it is wider and reads whole stories (block 256 holds 92 % of
# the held-out stories in one window, so a token sees its story from its start), for a fixed number of passes rather
# than seconds (on a small sample the passes, not the seconds, decide when it overfits). One probe run per setting
# chose these (block 256: width 128 for 6 passes, 192 for 5 and 7, 192 x 6 blocks, 256; README.md, "The full run").
LONG_RUN = {"embed_size": 192, "block_size": 256, "learning_rate": 1.5e-3, "epochs": 7, "time_budget_s": None}


@dataclass
class Trained:
    """The trained Transformer: the model, its History and the corpus it was trained on (block LONG_RUN's)."""

    model: object
    history: object
    corpus: object


def long_config(quick: bool | None = None) -> TrainConfig:
    """The trained Transformer's config: the comparison's with LONG_RUN's changes (quick mode: twice its epochs)."""
    quick = quick_mode() if quick is None else quick
    base = preset("compare_tinystories", quick)
    return base.replace(epochs=2 * base.epochs) if quick else base.replace(**LONG_RUN)


def trained_transformer(quick: bool | None = None, verbose: bool = True,
                        config: TrainConfig | None = None) -> Trained:
    """The Transformer of long_config(quick), trained once (warm-up, then cosine decay over its epochs) and loaded
    afterwards: the model whose samples, attention and embeddings 04-06 show. ``config``: another config to train
    the same way instead (tools/probe_long_run.py)."""
    from pico_helpers.data import load_corpus
    from pico_helpers.models import build_model
    from pico_helpers.training import train

    config = config or long_config(quick)
    corpus = load_corpus(config)
    model = build_model("kvcache_transformer", config, corpus.vocab)
    history = train(model, corpus, config, "kvcache_transformer_long", verbose=verbose)
    return Trained(model, history, corpus)
