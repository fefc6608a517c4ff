"""The workbook around the notebooks: display helpers (tables, timers, result rows) and the answers export.
Running the notebooks headless (`make workbook`) is tools/run_workbook.py, outside the package."""
from __future__ import annotations

from pico_helpers.workbook.display import (cell_text, continues_count, epoch_table, md_table, median_seconds,
                                           sample_table)
from pico_helpers.workbook.export import export_answers

__all__ = ["cell_text", "continues_count", "epoch_table", "export_answers", "md_table", "median_seconds",
           "sample_table"]
