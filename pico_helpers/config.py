"""One configuration dataclass for data, models and training, named after the course's flags.

Used in every notebook (the `parameters` cell) and by pico.py.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TrainConfig", "quick_mode", "find_repo_root", "MODEL_NAMES"]

# The starter's model names (pico.py --models); the notebooks use the same keys.
MODEL_NAMES = ("kgram_mlp_seq", "lstm_seq", "kvcache_transformer")


def find_repo_root(start: str | os.PathLike | None = None) -> Path:
    """The workbook's folder (the one holding pico.py and input_files/), searched upwards from ``start`` (cwd).

    Notebooks call ``os.chdir(find_repo_root())`` first, so paths read the same as in pico.py and the README.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pico.py").is_file() and (folder / "pico_helpers").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def quick_mode(default: bool | None = None) -> bool:
    """Read the quick switch: PICO_QUICK=1/0; unset -> ``default``, or quick unless CUDA is available."""
    value = os.environ.get("PICO_QUICK", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value not in ("", "auto"):
        raise ValueError(f"PICO_QUICK must be 1, 0 or auto, got {value!r}")
    if default is not None:
        return default
    import torch

    return not torch.cuda.is_available()


@dataclass
class TrainConfig:
    """Every size and switch of a run. Field names and defaults follow the course starter's flags.

    ``TrainConfig.quick()`` gives a small variant for smoke runs and CI.
    """

    # --- data ---
    input_files: list[str] = field(default_factory=list)
    tinystories_weight: float = 0.5
    tinystories_path: str | None = None  # local raw file; None -> $PICO_TINYSTORIES, then the HF hub
    tinystories_stories: int = 20000  # the starter keeps the first 20,000 training stories
    block_size: int = 1024
    test_fraction: float = 0.1
    compact_vocab: bool = False  # train over the corpus's own token ids only (see README)

    # --- models ---
    embed_size: int = 1024
    kgram_k: int = 3
    kgram_chunk_size: int = 1
    kgram_input_mode: str = "one_hot"  # or "embedding"
    num_inner_mlp_layers: int = 1
    n_heads: int = 4
    n_blocks: int = 4
    positional: str = "learned"  # learned | sinusoidal | rope | none
    norm: str = "pre"  # pre | post
    tie_weights: bool = False

    # --- training ---
    batch_size: int = 16
    epochs: int = 3
    learning_rate: float = 1e-3
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device_id: str | None = None  # None: cuda > mps > cpu
    bf16: bool | None = None  # None: on for CUDA GPUs that support it, off on CPU
    compile: bool = False
    loss_chunk_size: int | None = None  # rows per chunk of the fused loss; None: max(128, D // 2) (losses.chunk_rows)
    log_every: int = 100  # steps between "partial average loss" lines
    sample_every_s: float = 30.0  # seconds between text samples during training; 0 disables
    prompt: str = "Once upon a"
    output_dir: str = "runs"

    def __post_init__(self):
        if isinstance(self.input_files, (str, os.PathLike)):
            self.input_files = [str(self.input_files)]
        self.input_files = [str(f) for f in self.input_files]
        if not 0.0 <= self.tinystories_weight <= 1.0:
            raise ValueError(f"tinystories_weight must be in [0, 1], got {self.tinystories_weight}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        for name in ("block_size", "embed_size", "batch_size", "kgram_k", "n_heads", "n_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1 or None, got {self.max_steps_per_epoch}")
        if self.tinystories_weight == 0.0 and not self.input_files:
            raise ValueError("tinystories_weight is 0 but no input_files were given: "
                             "pass input_files=['input_files/3seqs.txt'] or a tinystories_weight > 0")

    @classmethod
    def quick(cls, **overrides) -> "TrainConfig":
        """A small configuration that trains in seconds on a laptop CPU (3seqs, short blocks)."""
        base = dict(input_files=["input_files/3seqs.txt"], tinystories_weight=0.0, block_size=32,
                    embed_size=64, n_heads=2, n_blocks=2, epochs=2, max_steps_per_epoch=50,
                    batch_size=16, kgram_chunk_size=0, log_every=25, sample_every_s=0.0,
                    prompt="0 1 2 3 4", tinystories_stories=500)
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)
