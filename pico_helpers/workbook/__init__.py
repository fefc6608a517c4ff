"""The workbook around the notebooks: display helpers, running them headless (``make workbook``), the answers export."""
from __future__ import annotations

from pico_helpers.workbook.display import (cell_text, continues_count, epoch_table, md_table, median_seconds,
                                           sample_table)
from pico_helpers.workbook.export import export_answers

__all__ = ["cell_text", "continues_count", "epoch_table", "export_answers", "md_table", "median_seconds",
           "sample_table"]
