"""One run's data: held-out splits, the starter's seeded mixture, padded batches, and ``load_corpus``.

Used in every notebook; introduced in 01_embeddings.ipynb.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pico_helpers.data.sources import TINYSTORIES_ENV, TINYSTORIES_HUB, load_text_file, load_tinystories

__all__ = ["split_train_val", "MixedSequenceDataset", "HeldOutSet", "collate", "iterate_batches", "Corpus",
           "load_corpus", "PAD_ID"]

PAD_ID = 0  # right padding; masked out of every loss (it is GPT-2's "!", a real token)


# --- splits and mixing ---

def split_train_val(seqs: list, test_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Deterministic held-out split: a seeded permutation, the last ``test_fraction`` becomes validation."""
    order = list(range(len(seqs)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(seqs) * test_fraction))
    if test_fraction > 0 and len(seqs) >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(seqs) - 1) if len(seqs) > 1 else 0
    cut = len(seqs) - n_val
    return [seqs[i] for i in order[:cut]], [seqs[i] for i in order[cut:]]


class MixedSequenceDataset(torch.utils.data.Dataset):
    """The starter's mixture, seeded: item i comes from TinyStories with probability ``tinystories_weight``.

    Each item's draw depends only on (seed, epoch, i), so a run is reproducible and order-independent.
    With one source in use (weight 0 or 1, or one list empty) item i is simply that source's sequence i,
    so a shuffled epoch visits every sequence once. Length = len(tinystories) + len(other).
    """

    def __init__(self, tinystories: list, other: list, tinystories_weight: float = 0.5, seed: int = 0):
        if not tinystories and not other:
            raise ValueError("MixedSequenceDataset needs at least one non-empty list of sequences")
        self.tinystories, self.other = tinystories, other
        self.weight = tinystories_weight if (tinystories and other) else (1.0 if tinystories else 0.0)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh (but reproducible) mixture for this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tinystories) + len(self.other)

    def __getitem__(self, i: int) -> list[int]:
        if self.weight in (0.0, 1.0):  # one source: item i is sequence i, so an epoch sees each once
            source = self.tinystories if self.weight == 1.0 else self.other
            if i < len(source):
                return source[i]
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_000_007 + i)
        source = self.tinystories if rng.random() < self.weight else self.other
        return source[rng.randrange(len(source))]


class HeldOutSet(torch.utils.data.Dataset):
    """Validation sequences: every held-out TinyStories sequence, then every held-out file line, each once.

    No resampling, so every epoch is scored on the same set. ``.tinystories`` and ``.other`` as in
    MixedSequenceDataset.
    """

    def __init__(self, tinystories: list, other: list):
        self.tinystories, self.other = tinystories, other

    def __len__(self) -> int:
        return len(self.tinystories) + len(self.other)

    def __getitem__(self, i: int) -> list[int]:
        n = len(self.tinystories)
        return self.tinystories[i] if i < n else self.other[i - n]


# --- batches ---

def collate(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: (tokens (T, B) long, mask (T, B) bool; True = real token)."""
    T = max(len(s) for s in seqs)
    tokens = torch.full((T, len(seqs)), PAD_ID, dtype=torch.long)
    mask = torch.zeros((T, len(seqs)), dtype=torch.bool)
    for b, s in enumerate(seqs):
        tokens[: len(s), b] = torch.as_tensor(s, dtype=torch.long)
        mask[: len(s), b] = True
    return tokens, mask


def iterate_batches(dataset, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                    drop_last: bool = False):
    """Yield ``collate``d batches; the order is a permutation seeded by (seed, epoch)."""
    n = len(dataset)
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield collate([dataset[i] for i in order[start:start + batch_size]])


# --- one corpus for a run ---

@dataclass
class Corpus:
    """Train and validation datasets for a run, with the tokenizer and a description of the data."""

    train: MixedSequenceDataset
    val: "HeldOutSet | None"
    enc: object
    vocab_size: int
    description: str
    sources: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def _cached_tokens(kind: str, key: str, mtime: float, block_size: int, n: int | None):
    """GPT-2 tokens of a file or of TinyStories, memoised per process (mtime invalidates the entry)."""
    from pico_helpers.data.tokenizer import get_tokenizer

    return _load_tokens(kind, key, block_size, n, get_tokenizer())


def _load_tokens(kind: str, key: str, block_size: int, n: int | None, enc):
    if kind == "file":
        return load_text_file(key, enc, block_size)
    return load_tinystories(enc, n_stories=n, block_size=block_size, path=key or None)


def load_corpus(config, enc=None) -> Corpus:
    """Tokenize what ``config`` asks for (once per process), split it and mix it as the starter does.

    Args:
        config: a TrainConfig (input_files, tinystories_weight, tinystories_path, tinystories_stories,
            block_size, test_fraction, seed, compact_vocab).
        enc: tokenizer; default GPT-2's.
    """
    from pico_helpers.data.tokenizer import get_tokenizer, CompactVocab

    enc = enc or get_tokenizer()
    # Tokens are memoised only for the default tokenizer; a custom one tokenizes afresh.
    tokens = _cached_tokens if enc is get_tokenizer() else (lambda kind, key, mtime, bs, n: _load_tokens(kind, key, bs, n, enc))
    files_seqs: list[list[int]] = []
    parts = []
    # Sources that can never be drawn are not loaded (the starter's weight 0 skips TinyStories; 1 skips files).
    for f in (config.input_files if config.tinystories_weight < 1.0 else []):
        p = Path(f)
        if not p.is_file():
            load_text_file(p, enc, config.block_size)  # raises the teaching error
        seqs = tokens("file", str(p.resolve()), p.stat().st_mtime, config.block_size, None)
        files_seqs += seqs
        parts.append(f"{p.name} ({len(seqs):,} lines)")
    tiny_seqs: list[list[int]] = []
    if config.tinystories_weight > 0:
        path = config.tinystories_path or os.environ.get(TINYSTORIES_ENV) or ""
        mtime = Path(path).stat().st_mtime if path and Path(path).is_file() else 0.0
        tiny_seqs = tokens("tiny", path, mtime, config.block_size, config.tinystories_stories)
        where = Path(path).name if path else TINYSTORIES_HUB
        parts.append(f"TinyStories from {where} ({len(tiny_seqs):,} stories)")
    tiny_train, tiny_val = split_train_val(tiny_seqs, config.test_fraction, config.seed)
    file_train, file_val = split_train_val(files_seqs, config.test_fraction, config.seed)
    vocab_size = enc.n_vocab
    if config.compact_vocab:
        enc = CompactVocab.from_sequences(tiny_seqs + files_seqs, enc)
        tiny_train, tiny_val, file_train, file_val = (
            [enc.remap(s) for s in lst] for lst in (tiny_train, tiny_val, file_train, file_val))
        vocab_size = enc.n_vocab
    weight = config.tinystories_weight
    train = MixedSequenceDataset(tiny_train, file_train, weight, seed=config.seed)
    val = HeldOutSet(tiny_val, file_val) if (tiny_val or file_val) else None
    n_tokens = sum(len(s) for s in tiny_seqs) + sum(len(s) for s in files_seqs)
    description = (" + ".join(parts) + f", tinystories_weight {weight}, block_size {config.block_size}, "
                   f"{n_tokens:,} tokens, {len(train):,} train / {len(val) if val else 0:,} val sequences"
                   + (f", compact vocabulary of {vocab_size:,} ids" if config.compact_vocab else ""))
    return Corpus(train=train, val=val, enc=enc, vocab_size=vocab_size, description=description,
                  sources={"tinystories": len(tiny_seqs), "files": len(files_seqs)})
