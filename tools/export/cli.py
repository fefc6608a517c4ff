"""The command line of the export: `python -m tools.export --executed build/full`, and export() for run_workbook."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "export"]

ROOT = Path(__file__).resolve().parents[2]  # not pico_helpers' ROOT: `--help` should not wait for torch to import


def export(executed: Path, out: Path, notebooks: Path = ROOT / "notebooks", force: bool = False) -> int:
    """Run the export and print its report; 0 on success, 2 (one line on stderr) on a file or usage error."""
    from tools.export.answers import export_answers

    try:
        print(export_answers(executed, out, notebooks, force=force))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    """Parse ``argv`` and run the export; its exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.export", description=(
        "Collect the '### Answer Q2.1' cells of the source notebooks, in question order, with the outputs of the code "
        "cells above each answer in the executed copies, into one markdown file."))
    parser.add_argument("--executed", type=Path, default=ROOT / "build" / "quick",
                        help="folder of executed notebooks (default: build/quick; build/full after `make workbook QUICK=0`)")
    parser.add_argument("--out", type=Path, help="markdown file to write, answers_files/ beside it (default: "
                                                 "answers.md when --executed is build/full, else build/answers.md)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="folder of the source notebooks NN_name.ipynb (default: notebooks)")
    parser.add_argument("--force", action="store_true", help="export even if answers lose the outputs the current "
                        "answers.md shows, or a figure in answers_files/ the export did not write is replaced (a copy "
                        "of it is kept)")
    args = parser.parse_args(argv)
    out = args.out or (ROOT / "answers.md" if args.executed.name == "full" else ROOT / "build" / "answers.md")
    return export(args.executed, out, args.notebooks, args.force)
