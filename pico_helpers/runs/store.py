"""The folder of one named run: atomic writes, the run id, resume or set aside (the workbook's machinery).
Used by train() (every notebook, pico.py): <output_dir>/<name>/{checkpoint.pt, history.json, loss.png}."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from array import array
from pathlib import Path

import torch

__all__ = ["RunStore", "atomic_write", "check_run_name", "data_fingerprint", "run_identity", "load_checkpoint",
           "open_run", "rng_state", "set_rng_state"]

CHECKPOINT_KEYS = ("model", "optimizer", "config", "run_id", "history")  # what train() needs to resume; "rng" too


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
    """``name`` if it is a plain folder name, else a ValueError (empty, a path separator, '.', '..', absolute, a
    control character such as a null byte, or longer than a folder name may be)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"run name must be a non-empty string, got {name!r} (for example name='lstm_3seqs')")
    if name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        raise ValueError(f"run name {name!r} must be a plain folder name inside output_dir: no '/', '\\', '..' "
                         "or absolute path (for example name='lstm_3seqs')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):  # a null byte cannot reach the OS; a newline breaks listings
        raise ValueError(f"run name {name!r} contains a control character (a null byte, newline, ...): use letters, "
                         "digits, '_' and '-' (for example name='lstm_3seqs')")
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        raise ValueError(f"run name {name[:40]!r}... is {len(name.encode('utf-8', 'surrogateescape'))} bytes long; a "
                         "folder name holds at most 255: use a shorter one (for example name='lstm_3seqs')")
    return name


def data_fingerprint(corpus) -> str:
    """sha256 over every sequence (lengths and token ids) of the train, validation (and test) splits: the same data,
    tokenized the same way, gives the same fingerprint whatever its files' paths or description."""
    h = hashlib.sha256(f"vocab {corpus.vocab_size}".encode())
    h.update(array("q", corpus.vocab.ids if corpus.vocab else []).tobytes())  # the ids the model predicts
    for split in (corpus.train, corpus.val) + ((corpus.test,) if getattr(corpus, "test", None) else ()):
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

    @contextmanager
    def writer(self):
        """Hold the run's lock (<output_dir>/.<name>.lock) for the block: a second process on the same run stops at once
        with a ValueError naming the first. The operating system drops the lock of a process that dies, so a stale lock
        never blocks. In a folder no lock can be made in (read-only), the block runs without one."""
        from filelock import FileLock, Timeout

        lock, owner = FileLock(self.folder.parent / f".{self.name}.lock"), self.folder.parent / f".{self.name}.owner"
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:
            who = owner.read_text().strip() if owner.is_file() else "another process"
            raise ValueError(f"run {self.name!r} in {self.folder.parent} is being trained by {who}: wait for it to "
                             "finish (the same call then loads or resumes it), or give this run another name or "
                             "output_dir") from None
        except OSError:  # no lock can be made here: only a finished run can be loaded (check_writable says so)
            yield
            return
        try:
            owner.write_text(f"process {os.getpid()} on {socket.gethostname()} (since "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            yield
        finally:
            owner.unlink(missing_ok=True)
            lock.release()

    def check_writable(self) -> None:
        """Create the run's folder and write a file in it, before any training: a ValueError that names the folder
        and the way out if that fails (read-only, not a folder, disk full), instead of an error an epoch later."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / ".write-test", lambda f: f.write(b"ok"))
            (self.folder / ".write-test").unlink()
        except OSError as err:
            raise ValueError(f"cannot write the run's folder {self.folder} ({err.strerror or err}): choose another "
                             "output_dir (pico.py --output_dir) or make that folder writable") from None

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
        """Write checkpoint.pt (weights, Adam state, config, run id, History, the random generators' states), then
        history.json, each atomically."""
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "config": config.to_dict(),
                      "run_id": history.run_id, "history": history.to_dict(), "rng": rng_state()}
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
        try:
            os.replace(self.folder, self.folder.with_name(f"{self.name}.prev-{k}"))
        except OSError as err:
            raise ValueError(f"cannot move the earlier run in {self.folder} aside ({err.strerror or err}): make "
                             f"{self.folder.parent} writable, or choose another output_dir or run name") from None
        return self.folder.with_name(f"{self.name}.prev-{k}")


# --- the random generators training uses ---

def rng_state() -> dict:
    """The states of torch's generator (CPU and every CUDA device), Python's ``random`` and numpy's, as plain data
    (numpy's as lists), so that a resumed run draws the same dropout masks as an uninterrupted one."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "numpy" in sys.modules:  # only if something imported it
        kind, keys, pos, has_gauss, gauss = sys.modules["numpy"].random.get_state()
        state["numpy"] = [kind, keys.tolist(), pos, has_gauss, gauss]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` saved (the CUDA states only where CUDA is here, numpy's only if it is imported)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state and "numpy" in sys.modules:
        np = sys.modules["numpy"]
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


# --- resume or start afresh ---

def open_run(store: RunStore, run_id: str, model, optimizer, config, resume: bool, say=print):
    """The History of the earlier run with this ``run_id``, its weights and Adam state loaded into model and
    optimizer; else None, after moving whatever is in the run's folder aside to <name>.prev-N (nothing is deleted)."""
    from pico_helpers.training.history import History

    ckpt = store.load() if resume else None
    if ckpt is not None and ckpt["run_id"] == run_id:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            history = History.from_dict(ckpt["history"])
        except (RuntimeError, ValueError, TypeError, KeyError) as err:  # edited or damaged by hand
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"the checkpoint {store.checkpoint} does not match this run ({reason}). Run again with "
                             "resume=False (pico.py --no_resume): it is then moved aside, unread, and training "
                             "starts afresh.") from None
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        if store.history.exists() and not _readable_json(store.history):  # a damaged copy: the checkpoint's is right
            history.to_json(store.history)
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


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False
