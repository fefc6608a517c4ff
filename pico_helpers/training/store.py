"""The folder of one named run: atomic checkpoint, history and figure writes, the run id, set-aside.
Used by train() (every notebook, pico.py): <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from array import array
from pathlib import Path

import torch

__all__ = ["RunStore", "atomic_write", "check_run_name", "data_fingerprint", "run_identity", "load_checkpoint"]

# What train() needs to resume (the History is also the run's position). No "run_id" (an older version): another run.
CHECKPOINT_KEYS = ("model", "optimizer", "config", "history")


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` via an fsync'ed temporary: old content or all of the new."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave a half-written temporary
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by train() (tensors and plain data only: ``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


# --- run identity ---

def check_run_name(name) -> str:
    """``name`` if it is a plain folder name, else a ValueError (empty, a path separator, '.', '..', absolute)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"run name must be a non-empty string, got {name!r} (for example name='lstm_3seqs')")
    if name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        raise ValueError(f"run name {name!r} must be a plain folder name inside output_dir: no '/', '\\', '..' "
                         "or absolute path (for example name='lstm_3seqs')")
    return name


def data_fingerprint(corpus) -> str:
    """sha256 over every sequence (lengths and token ids) of the train and validation splits: the same data,
    tokenized the same way, gives the same fingerprint whatever its files' paths or description."""
    h = hashlib.sha256(f"vocab {corpus.vocab_size}".encode())
    h.update(array("q", corpus.vocab.ids if getattr(corpus, "vocab", None) else []).tobytes())  # what the ids mean
    for split in (corpus.train, corpus.val):
        # the datasets keep their two sources (TinyStories, files); the mixture's item order changes by epoch
        for seqs in [split.tinystories, split.other] if hasattr(split, "other") else [list(split or [])]:
            h.update(len(seqs).to_bytes(8, "little"))
            h.update(array("q", map(len, seqs)).tobytes())
            h.update(array("q", itertools.chain.from_iterable(seqs)).tobytes())
    return h.hexdigest()[:16]


def run_identity(config, corpus, model: torch.nn.Module) -> str:
    """The run id: a hash of the config's meaningful fields (TrainConfig.run_fields), the data fingerprint and the
    model's class and parameter shapes. A checkpoint with the same id trains the same thing, so it may resume."""
    shapes = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    key = {"config": config.run_fields(), "data": data_fingerprint(corpus), "model": [type(model).__name__, shapes]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# --- the run's folder ---

class RunStore:
    """The files of one named run: <output_dir>/<name>/checkpoint.pt, history.json and loss.png."""

    def __init__(self, output_dir: str | Path, name: str):
        self.name = check_run_name(name)
        self.folder = Path(output_dir) / name
        self.checkpoint = self.folder / "checkpoint.pt"
        self.history = self.folder / "history.json"
        self.figure = self.folder / "loss.png"

    def in_use(self) -> bool:
        """True if the folder exists and holds anything."""
        return self.folder.is_dir() and any(self.folder.iterdir())

    def load(self) -> dict | None:
        """The checkpoint, or None if there is none; one ValueError naming the file and the way out if it cannot
        be read (empty, truncated, not a checkpoint, keys missing)."""
        if not self.checkpoint.exists():
            return None
        try:
            ckpt = load_checkpoint(self.checkpoint)
            missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
            if missing:
                raise KeyError(f"no {', '.join(missing)}")
        except Exception as err:  # RuntimeError, UnpicklingError, EOFError, ... depending on the damage
            reason = (str(err).strip().splitlines() or ["empty or damaged"])[0][:200]
            raise ValueError(f"cannot read the checkpoint {self.checkpoint} ({type(err).__name__}: {reason}). "
                             f"Run again with resume=False (pico.py --no_resume): {self.folder} is then moved "
                             f"aside to {self.name}.prev-N, unread, and training starts afresh.") from err
        return ckpt

    def save(self, checkpoint: dict, history) -> None:
        """Write checkpoint.pt, then history.json, each atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.checkpoint, lambda f: torch.save(checkpoint, f))
        history.to_json(self.history)

    def save_figure(self, fig) -> Path:
        """Write a matplotlib figure to loss.png, atomically; return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.figure, lambda f: fig.savefig(f, format="png", dpi=120))
        return self.figure

    def set_aside(self) -> Path:
        """Move the folder to <name>.prev-N, the first N free (nothing is deleted); return the new path."""
        k = 1
        while self.folder.with_name(f"{self.name}.prev-{k}").exists():
            k += 1
        os.replace(self.folder, self.folder.with_name(f"{self.name}.prev-{k}"))
        return self.folder.with_name(f"{self.name}.prev-{k}")
