"""Paths as the workbook names them: relative to the repository, for show_source's links (the export is tools/export/)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "repo_path"]

ROOT = Path(__file__).resolve().parents[2]


def repo_path(path) -> str:
    """A path relative to the repository when it lies inside it (stable across machines)."""
    path = Path(os.path.abspath(path))
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()
