"""Shared fixtures: the repository root, the course data (../shared/data when present), a tiny story file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never touch the network: the hub is unreachable on CI, and a test must not wait on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY_STORIES = [
    "Once upon a time, there was a little cat named Tom. Tom liked to play in the sun.",
    "One day, Lily found a red ball in the park.\nShe was very happy and played all day.",
    "Ben had a big dog. The dog was kind and liked to run with Ben.",
    "Sue saw a bird in the tree. The bird sang a song, and Sue smiled.",
]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def enc():
    from pico_helpers.data.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="session")
def tinystories_file(tmp_path_factory) -> Path:
    """The real training sample from ../shared/data when it exists, else a tiny file in the same format (80
    distinct stories: held-out stories are chosen by content, so copies would all land on one side)."""
    real = SHARED_DATA / "tinystories_train_sample.txt"
    if real.is_file():
        return real
    path = tmp_path_factory.mktemp("tiny") / "tinystories.txt"
    stories = [f"{story} That was on day {day}." for day in range(1, 21) for story in TINY_STORIES]  # 80, distinct
    path.write_text("".join(s + "\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-tensor tests on one CPU thread (fastest for them; immune to other jobs' load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
