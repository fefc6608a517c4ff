"""The runs that several notebooks share, defined once: ``preset("compare_tinystories", quick)``.
A later notebook gets the same config, so it loads the finished run instead of retraining. Used in 01, 03-06."""
from __future__ import annotations

import os
from pathlib import Path

from pico_helpers.config import MODEL_NAMES, TrainConfig, quick_mode

__all__ = ["preset", "PRESETS", "COMPARE_MODELS", "runs_root", "tinystories_source"]

COMPARE_MODELS = MODEL_NAMES  # the three models of the comparison, in the course's order
SAMPLE_STORIES = "input_files/tinystories_sample.txt"  # the repository's offline sample (quick mode)


def runs_root(quick: bool) -> Path:
    """Where this mode's runs are saved: $PICO_RUNS_DIR (default runs/) / quick or full."""
    return Path(os.environ.get("PICO_RUNS_DIR", "runs")) / ("quick" if quick else "full")


def tinystories_source(quick: bool) -> str | None:
    """The TinyStories file to read: $PICO_TINYSTORIES, else the repository's sample in quick mode, else None (the hub)."""
    return os.environ.get("PICO_TINYSTORIES") or (SAMPLE_STORIES if quick else None)


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
    """The same LSTM on TinyStories, prompt "Once upon a" (01 trains it, 03 reuses it)."""
    if quick:
        return TrainConfig.quick(input_files=[], tinystories_weight=1.0, tinystories_path=tiny,
                                 tinystories_stories=200, block_size=64, embed_size=32, epochs=1,
                                 max_steps_per_epoch=20, log_every=20, prompt="Once upon a",
                                 output_dir=str(runs / "lstm"))
    return TrainConfig(input_files=[], tinystories_weight=1.0, tinystories_path=tiny, block_size=128,
                       embed_size=128, epochs=2, max_steps_per_epoch=80, test_fraction=0.05,
                       sample_every_s=0.0, prompt="Once upon a", output_dir=str(runs / "lstm"))


def _compare_tinystories(quick: bool, runs: Path, tiny: str | None) -> TrainConfig:
    """The three models (COMPARE_MODELS) on TinyStories with one config (04 trains them; 05 and 06 reuse them)."""
    if quick:
        return TrainConfig.quick(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=200,
                                 block_size=32, embed_size=32, n_heads=2, n_blocks=1,
                                 kgram_input_mode="embedding", epochs=1, max_steps_per_epoch=15,
                                 output_dir=str(runs / "compare"))
    return TrainConfig(tinystories_weight=1.0, tinystories_path=tiny, tinystories_stories=20000,
                       block_size=128, embed_size=128, n_heads=4, n_blocks=4, kgram_chunk_size=0,
                       kgram_input_mode="embedding", batch_size=16, epochs=2, max_steps_per_epoch=120,
                       learning_rate=1e-3, sample_every_s=0, log_every=50, output_dir=str(runs / "compare"))


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
