"""`make workbook` (`python -m tools.run_workbook`): execute every notebook headless into build/ and export the answers.
Quick mode (the default without a GPU) writes build/answers.md; a full run (--quick 0) writes answers.md."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def execute_notebook(src: Path, dest: Path, quick: bool, timeout: int = 3600) -> float:
    """Run ``src`` top to bottom with nbclient (cwd = notebooks/) and save it with outputs to ``dest``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(src, as_version=4)
    os.environ["PICO_QUICK"] = "1" if quick else "0"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.on_notebook_start = lambda notebook: _poll_shell_in_steps(client)
    t0 = time.perf_counter()
    client.execute()
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
        print(f"  {src.name}: {execute_notebook(src, out_dir / src.name, quick):.0f} s")
    from tools.export import export

    return export(out_dir, BUILD / "answers.md" if quick else ROOT / "answers.md", force=args.force)


if __name__ == "__main__":
    sys.exit(main())
