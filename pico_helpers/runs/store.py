"""The folder of one named run: atomic writes, the run id, resume or set aside (the workbook's machinery).
Used by train() (every notebook, pico.py): <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import tempfile
from array import array
from pathlib import Path

import torch

__all__ = ["RunStore", "atomic_write", "check_run_name", "data_fingerprint", "run_identity", "load_checkpoint",
           "open_run"]

CHECKPOINT_KEYS = ("model", "optimizer", "config", "run_id", "history")  # what train() needs to resume


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` through ``write(binary_file)`` via an fsync'ed temporary: old content or all of the new."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; the file keeps its mode, a new one follows the umask
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C included: never leave a half-written temporary
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The mode a file written at ``path`` should have: the existing file's, else 0666 less the umask."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
    h.update(array("q", corpus.vocab.ids if corpus.vocab else []).tobytes())  # the ids the model predicts
    for split in (corpus.train, corpus.val):
        # the datasets keep their two sources (TinyStories, files); the mixture's item order changes by epoch
        for seqs in [split.tinystories, split.other] if split is not None else [[]]:
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

    def save(self, model, optimizer, config, history) -> None:
        """Write checkpoint.pt (weights, Adam state, config, run id, History), then history.json, each atomically."""
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
                      "run_id": history.run_id, "history": history.to_dict()}
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


# --- resume or start afresh ---

def open_run(store: RunStore, run_id: str, model, optimizer, config, resume: bool, say=print):
    """The History of the earlier run with this ``run_id``, its weights and Adam state loaded into model and
    optimizer; else None, after moving whatever is in the run's folder aside to <name>.prev-N (nothing is deleted)."""
    from pico_helpers.training.history import History

    ckpt = store.load() if resume else None
    if ckpt is not None and ckpt["run_id"] == run_id:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history = History.from_dict(ckpt["history"])
        where = (f"{history.epoch} epochs" if history.finished
                 else f"epoch {history.epoch + 1}, step {history.step_in_epoch} of it")
        say(f"[{store.name}] {'already trained' if history.finished else 'resuming'}: {history.step} steps done, "
            f"{where}; loaded {store.checkpoint}")
        return history
    if store.in_use():
        changed = [k for k, v in config.run_fields().items() if ckpt and ckpt["config"].get(k) != v]
        reason = ("resume=False" if not resume else "no checkpoint in the run's folder" if ckpt is None
                  else f"config changed ({', '.join(changed)})" if changed else "data or model changed")
        say(f"{reason}: the earlier run in {store.folder} was moved to {store.set_aside()} (nothing deleted).")
    return None
