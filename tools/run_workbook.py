"""`make workbook` (`python -m tools.run_workbook`): execute every notebook headless into build/ and export the answers.
Quick mode (the default without a GPU) writes build/answers.md; a full run (--quick 0) writes answers.md.
It prints each code cell as it starts, and a line every 25 s while one cell runs."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


def notebook_paths() -> list[Path]:
    """The workbook's notebooks in order (01_..., 02_..., ...)."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _git_short_hash() -> str | None:
    """`git rev-parse --short HEAD` of the repository, or None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _poll_shell_in_steps(client, step_s: float = 1.0) -> None:
    """Wait for each cell's reply in 1-second polls (nbclient#312: under CPU load a reply missed by one
    long poll can stall a cell, typically one that displays a widget, until the whole timeout)."""
    from queue import Empty

    channel = client.kc.shell_channel
    original = channel.get_msg

    async def get_msg(timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = step_s if deadline is None else max(0.0, min(step_s, deadline - time.monotonic()))
            try:
                return await original(timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


# --- live progress ---

HEARTBEAT_S = 25.0  # the longest a cell runs before a "still running" line: never more than 30 s without output


def _first_line(source: str, width: int = 72) -> str:
    """The first non-blank line of a cell's source, cut to ``width`` characters."""
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[:width - 3] + "..."


class CellProgress:
    """One line as each code cell starts ("    [12/40] for name, cfg in runs:") and a heartbeat every
    ``heartbeat_s`` while one cell runs ("    [12/40] still running, 50 s"), from a daemon thread.

    Hooked into nbclient as ``on_cell_execute`` / ``on_cell_executed``; ``close()`` stops the heartbeat."""

    def __init__(self, total: int, heartbeat_s: float = HEARTBEAT_S, out=None):
        self.total, self.heartbeat_s, self.out = total, heartbeat_s, out
        self.done = 0
        self._cell: tuple[int, float] | None = None  # (number of the running cell, its start time)
        self._last_line = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="cell-heartbeat", daemon=True)
        self._thread.start()

    def _say(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)
        self._last_line = time.monotonic()

    def on_cell_execute(self, cell, cell_index: int) -> None:
        with self._lock:
            number = self.done + 1
            self._cell = (number, time.monotonic())
            self._say(f"    [{number}/{self.total}] {_first_line(cell.source)}")

    def on_cell_executed(self, cell, cell_index: int, execute_reply=None) -> None:
        with self._lock:
            self.done += 1
            self._cell = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat_s / 5)):
            with self._lock:
                if self._cell is not None and time.monotonic() - self._last_line >= self.heartbeat_s:
                    number, started = self._cell
                    self._say(f"    [{number}/{self.total}] still running, {time.monotonic() - started:.0f} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _code_cell_count(nb, skip_tag: str = "skip-execution") -> int:
    """The code cells nbclient will execute (it skips empty ones and those tagged ``skip_tag``)."""
    return sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip()
               and skip_tag not in c.get("metadata", {}).get("tags", []))


def _kernel_config(socket_dir: Path):
    """Kernel settings: IPC sockets in ``socket_dir`` instead of TCP on POSIX (the kernel then has no reason to
    warn that TCP traffic is unencrypted, and nothing listens on a port). An absolute path: the kernel runs in
    notebooks/, the client here. Windows has no IPC transport and keeps TCP."""
    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(socket_dir / "kernel")
    return config


def execute_notebook(src: Path, dest: Path, quick: bool, timeout: int = 3600, progress: bool = True) -> float:
    """Run ``src`` top to bottom with nbclient (cwd = notebooks/) and save it with outputs to ``dest``.

    With ``progress``, prints each code cell as it starts and a heartbeat while a long one runs (CellProgress)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(src, as_version=4)
    os.environ["PICO_QUICK"] = "1" if quick else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    sockets = tempfile.TemporaryDirectory(prefix="pico-kernel-")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}},
                            config=_kernel_config(Path(sockets.name)))
    client.on_notebook_start = lambda notebook: _poll_shell_in_steps(client)
    tracker = CellProgress(_code_cell_count(nb, client.skip_cells_with_tag)) if progress else None
    if tracker is not None:
        client.on_cell_execute, client.on_cell_executed = tracker.on_cell_execute, tracker.on_cell_executed
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        if tracker is not None:
            tracker.close()
        sockets.cleanup()
    # Which run produced these outputs (read by the answers export); the date only, so that
    # exports of one day's run stay byte-identical.
    nb.metadata["pico"] = {"quick": bool(quick), "executed": datetime.now(timezone.utc).date().isoformat(),
                           "commit": _git_short_hash()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", default="auto", help="1 = quick (CI-sized) runs, 0 = full runs, auto = quick unless CUDA")
    parser.add_argument("--only", nargs="*", help="run only notebooks whose name contains one of these")
    parser.add_argument("--force", action="store_true", help="export even if answers lose outputs (see export --help)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    from pico_helpers.config import quick_mode

    os.environ["PICO_QUICK"] = {"1": "1", "0": "0"}.get(str(args.quick), "auto")
    quick = quick_mode()
    paths = notebook_paths()
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS}/", file=sys.stderr)
        return 2
    if args.only:
        paths = [p for p in paths if any(s in p.name for s in args.only)]
    out_dir = BUILD / ("quick" if quick else "full")
    print(f"Executing {len(paths)} notebooks in {'quick' if quick else 'full'} mode into {out_dir}/")
    for src in paths:
        print(f"  {src.name}", flush=True)
        print(f"  {src.name}: {execute_notebook(src, out_dir / src.name, quick):.0f} s", flush=True)
    from tools.export import export

    return export(out_dir, BUILD / "answers.md" if quick else ROOT / "answers.md", force=args.force)


if __name__ == "__main__":
    sys.exit(main())
