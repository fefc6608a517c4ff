"""Shared fixtures: the repository root, the course data (../shared/data when present), a tiny story file; and a
heartbeat that names a test (or the collection) still running after 25 s, so `make test` is never long silent."""
from __future__ import annotations

import os
import sys
import threading
import time
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


# --- heartbeat ---

# One notebook test runs for minutes and -q prints nothing until it ends. (The variable is for tests/test_setup.py.)
HEARTBEAT_S = float(os.environ.get("PICO_TEST_HEARTBEAT_S", "25"))


class _Heartbeat:
    """A daemon thread that prints "[50 s] still running tests/x.py::test_y" every ``every_s`` while one test (or
    the collection) runs. It writes to a copy of the terminal's file descriptor: pytest captures fd 1 during tests."""

    def __init__(self, out, every_s: float = HEARTBEAT_S):
        self.out, self.every_s = out, every_s
        self.current: tuple[str, float] | None = None  # (what runs, since when)
        self.last = time.monotonic()
        self.at_line_start = False  # True right after our own line: pytest has printed nothing since
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="pytest-heartbeat", daemon=True).start()

    def begin(self, what: str) -> None:
        with self.lock:
            self.current, self.last, self.at_line_start = (what, time.monotonic()), time.monotonic(), False

    def end(self) -> None:
        with self.lock:
            self.current = None

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            self.out.close()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            with self.lock:
                due = time.monotonic() - self.last >= self.every_s
                if self.current is not None and due and not self.stopped.is_set():
                    what, since = self.current
                    newline = "" if self.at_line_start else "\n"  # end the line of dots first
                    self.out.write(f"{newline}[{time.monotonic() - since:.0f} s] still running {what}\n")
                    self.out.flush()
                    self.last, self.at_line_start = time.monotonic(), True


_heartbeat: _Heartbeat | None = None


def pytest_sessionstart(session):
    global _heartbeat
    try:  # capture is suspended between pytest's own steps, so fd 1 is the terminal here
        out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # stdout replaced by something without a descriptor: no heartbeat
        return
    _heartbeat = _Heartbeat(out)


def pytest_collection(session):
    if _heartbeat is not None:
        _heartbeat.begin("the collection (importing the test modules)")


def pytest_collection_finish(session):
    if _heartbeat is not None:
        _heartbeat.end()


def pytest_runtest_logstart(nodeid, location):
    if _heartbeat is not None:
        _heartbeat.begin(nodeid)


def pytest_runtest_logfinish(nodeid, location):
    if _heartbeat is not None:
        _heartbeat.end()


def pytest_sessionfinish(session, exitstatus):
    if _heartbeat is not None:
        _heartbeat.stop()
