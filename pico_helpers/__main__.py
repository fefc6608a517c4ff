"""`python -m pico_helpers export`: write answers.md (and answers_files/) from the executed notebooks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand, ``export``."""
    parser = argparse.ArgumentParser(prog="python -m pico_helpers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    export = commands.add_parser(
        "export", help="write answers.md from the executed notebooks",
        description="Collect the '### Answer Q2.1' cells of the source notebooks, with the outputs (figures, tables, "
                    "printed text) of the code cells above each answer in the executed copies, into one markdown "
                    "file. Answer text comes from the source notebooks, so answers can be edited without re-running.")
    export.add_argument("--executed", type=Path, default=ROOT / "build" / "quick",
                        help="folder of executed notebooks (default: build/quick; build/full after `make workbook QUICK=0`)")
    export.add_argument("--out", type=Path, default=None,
                        help="markdown file to write; answers_files/ is created beside it "
                             "(default: answers.md when --executed is build/full, else build/answers.md)")
    export.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="folder of the source notebooks NN_name.ipynb (default: notebooks)")
    return parser


def main(argv=None) -> int:
    """Parse ``argv``, run the subcommand, print its report; 0 on success, 2 on a usage or file error."""
    args = build_parser().parse_args(argv)
    if args.command == "export":
        from pico_helpers.workbook.export import export_answers

        out = args.out
        if out is None:
            out = ROOT / "answers.md" if args.executed.name == "full" else ROOT / "build" / "answers.md"
        try:
            print(export_answers(args.executed, out, args.notebooks))
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
