"""One configuration dataclass for data, models and training, named after the course's flags.
Used in every notebook (the `parameters` cell) and by pico.py, whose flags are built from these fields."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import os
import typing
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TrainConfig", "quick_mode", "find_repo_root", "field_kind", "MODEL_NAMES"]

# The starter's model names (pico.py --models); the notebooks use the same keys.
MODEL_NAMES = ("kgram_mlp_seq", "lstm_seq", "kvcache_transformer")


def find_repo_root(start: str | os.PathLike | None = None) -> Path:
    """The workbook's folder (the one holding pico.py and input_files/), searched upwards from ``start`` (cwd).
    Notebooks call ``os.chdir(find_repo_root())`` first, so paths read the same as in pico.py and the README."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pico.py").is_file() and (folder / "pico_helpers").is_dir():
            return folder
    return Path(__file__).resolve().parents[1]


def quick_mode() -> bool:
    """Read the quick switch: PICO_QUICK=1/0; unset or auto: quick unless CUDA is available."""
    value = os.environ.get("PICO_QUICK", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value not in ("", "auto"):
        raise ValueError(f"PICO_QUICK must be 1, 0 or auto, got {value!r}")
    import torch

    return not torch.cuda.is_available()


# --- field helpers: help text, allowed values, run identity ---

def _field(default, help: str, check=None, example=None, choices=None, run_id: bool = True, **extra):
    """A field whose metadata pico.py (help, choices) and the checks read: ``check`` = (words, test) of the range,
    ``example`` a valid value for errors (default: the default), ``run_id=False`` for fields that do not change
    what a checkpoint means, ``extra`` e.g. ``cli_default`` where the starter's flag default differs."""
    meta = dict(help=help, check=check, choices=choices, run_id=run_id, example=default if example is None else example,
                **extra)
    if isinstance(default, list):
        return dataclasses.field(default_factory=list, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _at_least(low):
    return f">= {low}", lambda v: v >= low  # False for NaN


def _between(low, high, high_open=False):
    return f"in [{low}, {high}{')' if high_open else ']'}", lambda v: low <= v < high or (v == high and not high_open)


_POSITIVE = ("> 0 and finite", lambda v: 0 < v < math.inf)
_SEED = ("in 0..2**63-1", lambda v: 0 <= v < 2 ** 63)  # what torch.manual_seed and every Generator take
_FOLDER = ("naming a folder (not empty)", lambda v: bool(v.strip()))
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "True or False", str: "a string"}


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(TrainConfig)


def field_kind(f: dataclasses.Field) -> tuple[type, bool]:
    """(base type, None allowed) of a TrainConfig field, read from its annotation: ``int | None`` -> (int, True)."""
    tp = _hints()[f.name]
    optional = type(None) in typing.get_args(tp)
    base = next(a for a in typing.get_args(tp) if a is not type(None)) if optional else tp
    return typing.get_origin(base) or base, optional


# --- the configuration ---

@dataclass(frozen=True)
class TrainConfig:
    """Every size and switch of a run. Field names and defaults follow the course starter's flags.
    ``TrainConfig.quick()`` gives a small variant for smoke runs and CI. Each field is checked for type and range
    when the config is made, with an error that names the field and a valid value. A config is frozen (so a checked
    value stays checked): ``cfg.replace(batch_size=32)`` makes a changed copy."""

    # --- data ---
    input_files: list[str] = _field([], "local text files, one example per non-empty line", run_id=False,
                                    example=["input_files/3seqs.txt"])  # the data fingerprint covers their content
    tinystories_weight: float = _field(0.5, "probability of an example from TinyStories; 0 skips it", _between(0, 1))
    tinystories_path: str | None = _field(None, "local raw TinyStories file (else $PICO_TINYSTORIES, else the "
                                          "HuggingFace hub)", run_id=False, example="tinystories.txt")
    tinystories_stories: int = _field(20000, "TinyStories stories to load (the starter's 20,000)", _at_least(1))
    tinystories_valid_path: str | None = _field(None, "separate TinyStories validation file: its first 1,000 "
                                                "stories are held out, every loaded story trains", run_id=False,
                                                example="TinyStories-valid.txt")  # the fingerprint covers them
    block_size: int = _field(1024, "maximum tokens per example", _at_least(2))  # 2 tokens make one next-token pair
    test_fraction: float = _field(0.1, "held-out validation fraction", _between(0, 1, high_open=True))
    test_split: float = _field(0.0, "share of the training source's stories and lines held out, before anything "
                               "else, as a test set (corpus.test): the same for every seed, scored once for the "
                               "final numbers, never used to choose a setting", _between(0, 1, high_open=True))
    long_examples: str = _field("windows", "examples over block_size tokens: split into windows (every token used) "
                                "or truncate as the starter does", choices=("windows", "truncate"))
    bucket_by_length: bool = _field(True, "batch sequences of similar length together (less padding)")
    vocab: str = _field("corpus", "corpus: the training split's GPT-2 ids plus one 'other' class shared by the rest "
                        "(losses stay over all 50,257 ids); full: all 50,257", choices=("corpus", "full"))

    # --- models ---
    embed_size: int = _field(1024, "embedding / hidden width of the models", _at_least(1))
    kgram_k: int = _field(3, "context window of the K-gram MLP", _at_least(1))
    kgram_chunk_size: int = _field(1, "time steps per K-gram forward slice (0 = all at once)", _at_least(0))
    kgram_input_mode: str = _field("one_hot", "K-gram input vectors", choices=("one_hot", "embedding"))
    num_inner_mlp_layers: int = _field(1, "(Linear -> SiLU) blocks inside the K-gram MLP", _at_least(0))
    n_heads: int = _field(4, "attention heads per Transformer block", _at_least(1))
    n_blocks: int = _field(4, "Transformer blocks", _at_least(1))
    positional: str = _field("learned", "Transformer positions", choices=("learned", "sinusoidal", "rope", "none"))
    norm: str = _field("pre", "RMSNorm before (pre) or after (post) each residual branch", choices=("pre", "post"))
    tie_weights: bool = _field(False, "share the Transformer's embedding and unembedding")
    dropout: float = _field(0.0, "Transformer dropout probability (embeddings, attention weights, residual branches) "
                            "while training", _between(0, 1, high_open=True))

    # --- training ---
    batch_size: int = _field(16, "sequences per batch", _at_least(1))
    epochs: int = _field(3, "passes over the training data", _at_least(1), run_id=False)
    learning_rate: float = _field(1e-3, "Adam learning rate", _POSITIVE)
    lr_schedule: str = _field("constant", "learning rate per update: constant, or linear warm-up then cosine decay "
                              "to 10% of learning_rate at the last step (or time_budget_s)", choices=("constant", "cosine"))
    warmup_steps: int = _field(0, "updates of linear warm-up (cosine schedule)", _at_least(0), 20)
    max_steps_per_epoch: int | None = _field(None, "end each epoch after N steps", _at_least(1), 200, run_id=False)
    time_budget_s: float | None = _field(None, "stop after this many seconds of training steps (equal-time "
                                         "comparisons); epochs is then an upper bound", _POSITIVE, 600.0, run_id=False)
    seed: int = _field(0, "seed of the model's initialisation, the split and the batch order", _SEED)
    device_id: str | None = _field(None, "torch device; falls back (with a message) when it is missing; "
                                   "'auto' = cuda > mps > cpu", example="cpu", run_id=False, cli_default="cuda:0")
    bf16: bool | None = _field(None, "bfloat16 autocast; auto: on for CUDA GPUs that support it, off on CPUs, "
                               "where it trained no faster and to a worse loss (README, Speed)", example=False)
    loss_chunk_size: int | None = _field(None, "rows per fused-loss chunk; default max(128, D // 2)", _at_least(1), 128)
    log_every: int = _field(100, "steps between partial-average lines; 0 = off", _at_least(0), run_id=False)
    eval_every: int | None = _field(None, "steps between validation points; default ~10 a run; 0 = epoch ends only",
                                    _at_least(0), 50, run_id=False)
    sample_every_s: float = _field(30.0, "seconds between text samples; 0 = off", _at_least(0), run_id=False)
    prompt: str = _field("Once upon a", "prompt for the text samples", run_id=False)
    output_dir: str = _field("runs", "runs are saved in OUTPUT_DIR/<name>/", _FOLDER, run_id=False)

    def __post_init__(self):
        files = self.input_files
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if not isinstance(files, (list, tuple)) or not all(isinstance(f, (str, os.PathLike)) for f in files):
            raise ValueError(f"input_files must be a list of file paths, got {self.input_files!r} "
                             "(for example input_files=['input_files/3seqs.txt'])")
        for path in map(os.fspath, files):
            if not path.strip() or "\0" in path:
                raise ValueError(f"input_files holds {path!r}, which is not a file path (empty, or with a null byte) "
                                 "(for example input_files=['input_files/3seqs.txt'])")
        # frozen: the checked values are set as __init__ sets them, past the assignment guard
        object.__setattr__(self, "input_files", [os.fspath(f) for f in files])
        for f in dataclasses.fields(self):
            if f.name != "input_files":
                object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
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
        return cls(**(base | overrides))

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def run_fields(self) -> dict:
        """The fields that change what a checkpoint means; the run id hashes them (store.run_identity)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["run_id"]}


def _refuse_assignment(self, name, value=None):
    """``cfg.batch_size = 0`` would skip the checks: a config is changed by ``replace``, which checks the copy."""
    fields = [f.name for f in dataclasses.fields(self)]
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        raise dataclasses.FrozenInstanceError(f"TrainConfig has no field {name!r}" + (
            f" (did you mean {close[0]!r}?)" if close else "") + "; it is frozen: make a changed copy with "
            "cfg.replace(field=value)")
    shown = "..." if value is None else repr(value)
    raise dataclasses.FrozenInstanceError(f"TrainConfig is frozen: use cfg = cfg.replace({name}={shown}) for a "
                                          f"copy with {name} changed (and checked)")


TrainConfig.__setattr__ = _refuse_assignment  # the frozen dataclass's own guard says only "cannot assign to field"
TrainConfig.__delattr__ = _refuse_assignment


def _checked(f: dataclasses.Field, value):
    """``value`` as the field's type (an int for an int field, ...), or a ValueError that names a valid value."""
    kind, optional = field_kind(f)
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike) and kind is str:
        value = os.fspath(value)
    is_bool = isinstance(value, bool)
    ok = {int: isinstance(value, numbers.Integral) and not is_bool,
          float: isinstance(value, numbers.Real) and not is_bool, bool: is_bool, str: isinstance(value, str)}[kind]
    words, test = f.metadata["check"] or ("", None)
    choices = f.metadata["choices"]
    if ok:
        value = kind(value)
    if ok and kind is str and "\0" in value:  # a path with a null byte would fail later, in the OS, unnamed
        raise ValueError(f"{f.name} contains a null byte, got {value!r} "
                         f"(for example {f.name}={f.metadata['example']!r})")
    if not ok or (test and not test(value)) or (choices and value not in choices):
        what = f"one of {', '.join(map(repr, choices))}" if choices else f"{_TYPE_WORDS[kind]} {words}".strip()
        raise ValueError(f"{f.name} must be {what}{' or None' if optional else ''}, got {value!r} "
                         f"(for example {f.name}={f.metadata['example']!r})")
    return value
