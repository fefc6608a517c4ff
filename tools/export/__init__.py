"""The answers export (`python -m tools.export`): answers.md and answers_files/ from the executed notebooks.

notebooks.py reads the notebooks, render.py and document.py write the text, safety.py and files.py make sure
nothing a student wrote is lost, answers.py puts them together (export_answers), cli.py is the command."""
from __future__ import annotations

from tools.export.cli import export, main

__all__ = ["export", "main"]
