"""Where text comes from, as GPT-2 ids per example: the 3seqs generator, local files, TinyStories (01_embeddings on)."""
from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["generate_3seqs", "write_3seqs", "require_file", "load_text_file", "read_tinystories_file",
           "load_tinystories", "TINYSTORIES_ENV", "TINYSTORIES_HUB", "EOT_TEXT"]

TINYSTORIES_ENV = "PICO_TINYSTORIES"
TINYSTORIES_HUB = "roneneldan/TinyStories"
EOT_TEXT = "<|endoftext|>"


# --- 3seqs: a seeded generator of integer sequences ---

def generate_3seqs(n_lines: int = 10000, seed: int = 3) -> str:
    """A 3seqs-style corpus, lines of 12-40 integers: counting, Fibonacci-like, 2^n, n^2, zeros (60/15/10/10/5 %)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        length = rng.randint(12, 40)
        kind = rng.choices(["count", "fib", "pow2", "square", "zeros"], weights=[60, 15, 10, 10, 5])[0]
        if kind == "count":
            start = rng.randint(-10, 100)
            seq = list(range(start, start + length))
        elif kind == "fib":  # each number the sum of the two before it
            seq = list(rng.choice([(0, 1), (1, 1), (1, 2), (2, 3), (3, 5), (5, 8)]))
            while len(seq) < length:
                seq.append(seq[-2] + seq[-1])
        elif kind == "pow2":
            start = rng.randint(0, 3)
            seq = [2 ** (start + i) for i in range(length)]
        elif kind == "square":
            start = rng.randint(0, 10)
            seq = [(start + i) ** 2 for i in range(length)]
        else:
            seq = [0] * length
        lines.append(" ".join(str(x) for x in seq))
    return "\n".join(lines) + "\n"


def write_3seqs(path: str | os.PathLike = "input_files/3seqs.txt", n_lines: int = 10000, seed: int = 3) -> Path:
    """Write ``generate_3seqs(n_lines, seed)`` to ``path`` (LF line endings) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generate_3seqs(n_lines, seed).encode("ascii"))
    return path


# --- local text files ---

def _folder_listing(folder: Path) -> str:
    if not folder.is_dir():
        return f"folder {folder}/ does not exist"
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return f"files in {folder}/: " + (", ".join(names) if names else "(none)")


def require_file(path: str | os.PathLike, what: str, where: str = "") -> Path:
    """``path`` if it is a regular file; else an OSError that says what it is instead (missing or a folder: with a
    listing of the folder; a FIFO or a device: nothing to read a corpus from). ``what`` names it: "input file", ..."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a text file; {_folder_listing(path)}")
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found{where}; {_folder_listing(path.parent)}")
    if not path.is_file():  # opening a FIFO would wait for a writer forever
        raise OSError(f"{what} {path} is not a regular file (a FIFO, socket or device): save the text to a file "
                      "and give that")
    return path


@contextlib.contextmanager
def _open_text(path: Path, what: str, where: str = ""):
    """``path`` opened as UTF-8 text; a missing file, a directory, a FIFO or bad bytes raise an error that names it."""
    with open(require_file(path, what, where), encoding="utf-8") as f:
        try:
            yield f
        except UnicodeDecodeError as err:
            raise ValueError(f"{what} {path} is not UTF-8 text ({err}); save it with UTF-8 encoding") from None


def load_text_file(path: str | os.PathLike, enc, block_size: int | None = None) -> list[list[int]]:
    """Tokenize a local text file: one example per non-empty line, truncated to ``block_size`` tokens if given.
    A missing, empty or non-UTF-8 file, or a directory, raises an error that names it and lists its folder."""
    path = Path(path)
    with _open_text(path, "input file") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"input file {path} has no non-empty lines; {_folder_listing(path.parent)}")
    return [enc.encode_ordinary(line)[:block_size] for line in lines]


# --- TinyStories ---

def read_tinystories_file(path: str | os.PathLike, n_stories: int | None = None) -> list[str]:
    """Stories of a raw TinyStories text file (stories separated by ``<|endoftext|>`` lines)."""
    path = Path(path)
    stories, buf = [], []
    with _open_text(path, "TinyStories file", f" (from {TINYSTORIES_ENV} or tinystories_path)") as f:
        for line in itertools.chain(f, [EOT_TEXT]):  # a separator after the end closes the last story
            if line.strip() != EOT_TEXT:
                buf.append(line)
                continue
            stories += [story] if (story := "".join(buf).strip()) else []
            if n_stories is not None and len(stories) >= n_stories:
                return stories
            buf = []
    if not stories:
        raise ValueError(f"TinyStories file {path} holds no stories (expected text separated by {EOT_TEXT} lines)")
    return stories[:n_stories]


def _stories_from_hub(n_stories: int, split: str) -> list[str]:
    """Stream the first ``n_stories`` stories of the hub's split (never downloads the whole split)."""
    hint = (f"TinyStories could not be read from the HuggingFace hub ({TINYSTORIES_HUB}). Offline, point at a local "
            f"raw file instead: export {TINYSTORIES_ENV}=/path/to/TinyStories-train.txt (stories separated by "
            f"{EOT_TEXT} lines), e.g. the repository's 600-story sample input_files/tinystories_sample.txt; or pass "
            "--tinystories_path FILE (TrainConfig(tinystories_path=...)), or train on local files only with "
            "--tinystories_weight 0 --input_files input_files/3seqs.txt.")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise RuntimeError(hint + " (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set.)")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if not proxied:  # fail in seconds rather than after the hub client's half-minute of retries
        try:
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as err:
            raise RuntimeError(f"{hint}\nCause: cannot reach {host}:443 ({err}).") from err
    try:
        from datasets import load_dataset

        stream = load_dataset(TINYSTORIES_HUB, split=split, streaming=True)
        stories = [row["text"].strip() for row in itertools.islice(stream, n_stories)]
    except Exception as err:
        raise RuntimeError(f"{hint}\nCause: {type(err).__name__}: {err}") from err
    return [s for s in stories if s]


def load_tinystories(enc, n_stories: int = 20000, block_size: int | None = None, path: str | None = None,
                     split: str = "train") -> list[list[int]]:
    """Tokenize the first ``n_stories`` TinyStories stories, whole or truncated to ``block_size`` tokens if given.
    Source: ``path``, else $PICO_TINYSTORIES, else the HuggingFace hub (streamed)."""
    path = path or os.environ.get(TINYSTORIES_ENV)
    stories = read_tinystories_file(path, n_stories) if path else _stories_from_hub(n_stories, split)
    return [enc.encode_ordinary(story)[:block_size] for story in stories]
