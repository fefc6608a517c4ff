"""One run's data: held-out splits, the starter's seeded mixture, length-bucketed padded batches (01_embeddings on)."""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pico_helpers.data.sources import TINYSTORIES_ENV, TINYSTORIES_HUB, load_text_file, load_tinystories, require_file

__all__ = ["split_train_val", "overlap", "drop_seen", "VALID_STORIES", "TEST_SEED", "MixedSequenceDataset", "HeldOutSet", "collate",
           "iterate_batches", "padding_fraction", "Corpus", "load_corpus", "PAD_ID"]

VALID_STORIES = 1000  # stories read from a separate validation file
TEST_SEED = 12345  # the test split's shuffle: one test set whatever a run's seed
PAD_ID = 0  # right padding; masked out of every loss (it is GPT-2's "!", a real token)


# --- splits and mixing ---

def split_train_val(seqs: list, test_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Deterministic held-out split by content: the distinct sequences in a seeded order, the last
    ``test_fraction`` of them held out with all their copies, so no validation sequence also occurs in training."""
    copies: dict[tuple, list] = {}  # content -> its copies, in the order they occur
    for s in seqs:
        copies.setdefault(tuple(s), []).append(s)
    distinct = list(copies.values())
    random.Random(seed).shuffle(distinct)
    n_val = max(int(round(len(distinct) * test_fraction)), int(test_fraction > 0))  # at least one if any is asked
    cut = len(distinct) - (min(n_val, len(distinct) - 1) if len(distinct) > 1 else 0)
    return [s for group in distinct[:cut] for s in group], [s for group in distinct[cut:] for s in group]


def overlap(train: list, val: list) -> int:
    """How many validation sequences also occur, token for token, in the training list."""
    seen = set(map(tuple, train))
    return sum(tuple(s) in seen for s in val)


def drop_seen(train: list, held_out: list) -> tuple[list, int]:
    """``held_out`` without the examples that also occur, token for token, in ``train``, and how many were dropped.
    Whole lines are split by content, but a model is scored on windows, and two different lines can share a window
    (3seqs at block 64: 53 of 1,051 validation windows): a loss on such a window measures memory, not prediction."""
    seen = set(map(tuple, train))
    kept = [s for s in held_out if tuple(s) not in seen]
    return kept, len(held_out) - len(kept)


class MixedSequenceDataset(torch.utils.data.Dataset):
    """The starter's mixture, seeded: item i comes from TinyStories with probability ``tinystories_weight``.
    Item i's draw depends only on (seed, epoch, i). With one source in use (weight 0 or 1, or one list empty) item i
    is that source's sequence i, so a shuffled epoch visits each once. Length = len(tinystories) + len(other)."""

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
    """Validation sequences: every held-out TinyStories sequence, then every held-out file line, each once (no
    resampling: every epoch is scored on the same set). ``.tinystories`` and ``.other`` as in MixedSequenceDataset."""

    def __init__(self, tinystories: list, other: list):
        self.tinystories, self.other = tinystories, other

    def __len__(self) -> int:
        return len(self.tinystories) + len(self.other)

    def __getitem__(self, i: int) -> list[int]:
        return self.tinystories[i] if i < len(self.tinystories) else self.other[i - len(self.tinystories)]


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


BUCKET_BATCHES = 50  # batches per length bucket: sorted within ~50 batches, so batches stay a random mix


def _batch_order(dataset, batch_size: int, shuffle: bool, seed: int, epoch: int, bucket: bool) -> list[list[int]]:
    """The item indices of each batch: a pure function of (dataset, seed, epoch), so a resumed epoch can skip ahead.
    ``bucket``: sort each group of BUCKET_BATCHES batches of the order by length, cut it, shuffle the batches."""
    g = torch.Generator().manual_seed((seed * 100003 + epoch) % 2 ** 64)  # a Generator takes 64 bits
    order = torch.randperm(len(dataset), generator=g).tolist() if shuffle else list(range(len(dataset)))
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    group = batch_size * BUCKET_BATCHES if shuffle else len(order)  # unshuffled (validation): one sorted group
    batches = []
    for start in range(0, len(order), group):
        part = sorted(order[start:start + group], key=lambda i: len(dataset[i]))  # stable: ties keep their order
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()] if shuffle else batches


def iterate_batches(dataset, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                    drop_last: bool = False, bucket: bool = False):
    """Yield ``collate``d batches, in an order seeded by (seed, epoch); ``bucket``: similar lengths together."""
    for idx in _batch_order(dataset, batch_size, shuffle, seed, epoch, bucket):
        if len(idx) == batch_size or not drop_last:
            yield collate([dataset[i] for i in idx])


def padding_fraction(dataset, batch_size: int, bucket: bool, seed: int = 0) -> float:
    """The share of padding in the (T, B) batches of epoch 0: 1 - real tokens / batch positions."""
    batches = [[len(dataset[i]) for i in idx] for idx in _batch_order(dataset, batch_size, True, seed, 0, bucket)]
    return 1 - sum(map(sum, batches)) / max(sum(max(b) * len(b) for b in batches), 1)


# --- one corpus for a run ---

@dataclass
class Corpus:
    """Train, validation and test datasets for a run (GPT-2 ids), the tokenizer (text <-> GPT-2 ids) and a
    description. Settings are chosen on ``val``; ``test`` (None unless config.test_split) is apart from every choice.
    ``vocab``: the CorpusVocab of the training split (its models predict ``vocab_size`` = vocab.n_vocab ids), or None:
    models over all of GPT-2's ids."""

    train: MixedSequenceDataset
    val: "HeldOutSet | None"
    enc: object
    vocab_size: int
    description: str
    sources: dict = field(default_factory=dict)
    vocab: "CorpusVocab | None" = None
    test: "HeldOutSet | None" = None  # config.test_split of the training source: scored once, for the final numbers

    def wrap(self, model):
        """``model`` (built with ``vocab_size`` outputs) as the outside sees it: GPT-2 ids in, GPT-2 logits out."""
        from pico_helpers.data.vocab import CorpusVocabModel

        return model if self.vocab is None else CorpusVocabModel(model, self.vocab)


def _load_tokens(kind: str, key: str, n: int | None, enc):
    """Whole token lists of a file's lines (``kind`` "file") or of ``n`` TinyStories stories ("tiny")."""
    return load_text_file(key, enc) if kind == "file" else load_tinystories(enc, n_stories=n, path=key or None)


@functools.lru_cache(maxsize=16)
def _cached_tokens(kind: str, key: str, mtime: float, n: int | None):
    """``_load_tokens`` with GPT-2's tokenizer, memoised per process (mtime invalidates an entry); shared between
    calls, so never changed in place."""
    from pico_helpers.data.tokenizer import get_tokenizer

    return _load_tokens(kind, key, n, get_tokenizer())


def _mtime(path: str) -> float:
    return Path(path).stat().st_mtime if path and Path(path).is_file() else 0.0


def _examples(seqs: list, block_size: int, long_examples: str) -> list:
    """Examples of at most block_size tokens. "windows": consecutive windows that overlap by one token, so every
    next-token pair of a long sequence is in exactly one window; "truncate": the first block_size tokens only."""
    if long_examples == "truncate":
        return [s[:block_size] for s in seqs]
    return [s[i:i + block_size] for s in seqs for i in range(0, max(len(s) - 1, 1), block_size - 1)]


def _describe(config, parts: list, whole: list, train, val, splits, vocab, enc, test=None, dropped=None) -> str:
    """One line on a corpus: its sources, sizes, padding, leaks between the splits and its vocabulary."""
    n_tokens = sum(map(len, whole))
    kept = sum(min(len(s), config.block_size) for s in whole) / max(n_tokens, 1)
    pad = [padding_fraction(train, config.batch_size, b, config.seed) for b in (False, config.bucket_by_length)]
    leaks = [overlap(train_, val_) for train_, val_, _ in splits]
    unseen = sum(vocab.to_model(s).count(vocab.other_id) for s in val) if vocab and val else 0  # never trained on
    return (" + ".join(parts) + f", tinystories_weight {config.tinystories_weight}, block_size "
            f"{config.block_size}, {n_tokens:,} tokens ("
            + ("longer examples in windows: every token used" if config.long_examples == "windows"
               else f"examples truncated: {kept:.0%} of the tokens used")
            + f"), {len(train):,} train / {len(val) if val else 0:,} val"
            + (f" / {len(test):,} test (stories and lines held out before any choice)" if test else "")
            + f" sequences, padding {pad[0]:.0%}"
            + (f" -> {pad[1]:.0%} (bucketed by length)" if config.bucket_by_length else "")
            + "".join(f", {n:,} validation {what} also in training" for n, what, pair
                      in zip(leaks, ("stories", "lines"), splits) if pair[1])
            + "".join(f", {n:,} of {total:,} {what} windows dropped (they also occur in training)"
                      for what, (n, total) in (dropped or {}).items() if n)
            + (f", corpus vocabulary of {len(vocab.ids):,} ids + other ({unseen:,} validation tokens unseen "
               "in training)" if vocab else f", full vocabulary of {enc.n_vocab:,} ids"))


def _check_pairs(parts: list, train: list, val: list) -> None:
    """A ValueError if no training (or, when one is held out, no validation) example has 2 tokens: a one-token line
    has no next token to predict, so the loss would be 0 (or n/a) and say nothing."""
    sources = " + ".join(parts)
    if not any(len(s) > 1 for s in train):
        raise ValueError(f"no training line of {sources} has 2 or more tokens ({len(train):,} examples of one token): "
                         "a model learns from next-token pairs, and one token has none; join the words into longer "
                         "lines (for example a sentence per line)")
    if val and not any(len(s) > 1 for s in val):
        raise ValueError(f"no validation line of {sources} has 2 or more tokens ({len(val):,} held out, one token "
                         "each), so validation loss cannot be measured; join the words into longer lines (for example "
                         "a sentence per line), or hold none out with test_fraction=0")


def load_corpus(config, enc=None) -> Corpus:
    """Tokenize what ``config`` asks for (once per process), split it and mix it as the starter does.
    Args: config: a TrainConfig (its data fields, block_size, seed, vocab, batch_size); enc: default GPT-2's."""
    from pico_helpers.data.tokenizer import get_tokenizer
    from pico_helpers.data.vocab import CorpusVocab

    enc = enc or get_tokenizer()
    # Tokens are memoised only for the default tokenizer; a custom one tokenizes afresh.
    tokens = _cached_tokens if enc is get_tokenizer() else (lambda kind, key, mtime, n: _load_tokens(kind, key, n, enc))
    # Every path given is checked, even one the weights skip: a typo must not pass silently until the weight changes.
    for f in config.input_files:
        require_file(f, "input file")
    for what, path in (("tinystories_path", config.tinystories_path),
                       ("tinystories_valid_path", config.tinystories_valid_path)):
        if path:
            require_file(path, f"{what} (a TinyStories text file)")
    files_seqs: list[list[int]] = []
    parts = []
    # Sources that can never be drawn are not loaded (the starter's weight 0 skips TinyStories; 1 skips files).
    for f in (config.input_files if config.tinystories_weight < 1.0 else []):
        p = Path(f)
        seqs = tokens("file", str(p.resolve()), p.stat().st_mtime, None)
        files_seqs += seqs
        parts.append(f"{p.name} ({len(seqs):,} lines)")
    tiny_seqs, valid_seqs = [], None
    if config.tinystories_weight > 0:
        path = config.tinystories_path or os.environ.get(TINYSTORIES_ENV) or ""
        tiny_seqs = tokens("tiny", path, _mtime(path), config.tinystories_stories)
        parts.append(f"TinyStories from {Path(path).name if path else TINYSTORIES_HUB} ({len(tiny_seqs):,} stories")
        if config.tinystories_valid_path:
            valid = str(Path(config.tinystories_valid_path).resolve())
            valid_seqs = tokens("tiny", valid, _mtime(valid), VALID_STORIES)
            parts[-1] += f"; validation: {len(valid_seqs):,} stories of {Path(valid).name}"
        parts[-1] += ")"
    splits = [_three_way(tiny_seqs, config, valid_seqs), _three_way(files_seqs, config)]
    # The vocabulary of the whole training lines and stories, so no block_size or truncation changes it.
    vocab = CorpusVocab.from_sequences(splits[0][0] + splits[1][0], enc.n_vocab) if config.vocab == "corpus" else None
    (tiny_train, tiny_val, tiny_test), (file_train, file_val, file_test), dropped = _windows(config, splits)
    _check_pairs(parts, tiny_train + file_train, tiny_val + file_val)
    train = MixedSequenceDataset(tiny_train, file_train, config.tinystories_weight, seed=config.seed)
    val = HeldOutSet(tiny_val, file_val) if (tiny_val or file_val) else None
    test = HeldOutSet(tiny_test, file_test) if (tiny_test or file_test) else None
    description = _describe(config, parts, tiny_seqs + files_seqs, train, val, splits, vocab, enc, test, dropped)
    return Corpus(train=train, val=val, enc=enc, vocab_size=vocab.n_vocab if vocab else enc.n_vocab,
                  description=description, sources={"tinystories": len(tiny_seqs), "files": len(files_seqs)},
                  vocab=vocab, test=test)


def _three_way(seqs: list, config, validation: list | None = None) -> tuple[list, list, list]:
    """Whole stories or lines -> (train, validation, test), by content, before any cutting (a story's windows never
    straddle two splits). The test share comes off first with a fixed seed, so every run seed has the same test set;
    the validation share then comes off the rest with the run's seed, as the starter's split does, unless a separate
    ``validation`` list (a validation file's stories) is given: then the rest all trains."""
    rest, test = split_train_val(seqs, config.test_split, TEST_SEED) if config.test_split else (seqs, [])
    return (rest, validation, test) if validation is not None else (*split_train_val(rest, config.test_fraction,
                                                                                     config.seed), test)


def _windows(config, splits: list) -> tuple[list, list, list]:
    """Each source's (train, val, test) cut into examples, with the held-out windows that also occur in training
    dropped (drop_seen); and, per held-out split, how many were dropped of how many."""
    cut = functools.partial(_examples, block_size=config.block_size, long_examples=config.long_examples)
    out, dropped = [], {"validation": [0, 0], "test": [0, 0]}  # split -> [dropped, windows before]
    for train, *held_out in splits:
        train, kept = cut(train), []
        for what, windows in zip(dropped, map(cut, held_out)):
            windows, n = drop_seen(train, windows)
            dropped[what][0], dropped[what][1] = dropped[what][0] + n, dropped[what][1] + n + len(windows)
            kept.append(windows)
        out.append((train, *kept))
    return out[0], out[1], dropped
