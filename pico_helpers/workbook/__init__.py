"""The workbook around the notebooks: display helpers (tables, timers, result rows, sources).
Running the notebooks headless is tools/run_workbook.py and the answers export is tools/export/, outside the package."""
from __future__ import annotations

from pico_helpers.workbook.display import (cell_text, continues_count, epoch_table, md_table,
                                           result_row, sample_table, show_source)
from pico_helpers.workbook.start import start_notebook

__all__ = ["cell_text", "continues_count", "epoch_table", "md_table", "result_row", "sample_table",
           "show_source", "start_notebook"]
