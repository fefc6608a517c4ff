"""The workbook around the notebooks: running them headless (``make workbook``) and exporting the answers."""
from __future__ import annotations

from pico_helpers.workbook.answers import export_answers

__all__ = ["export_answers"]
