"""The workbook's machinery behind train(): each run's folder (checkpoint, history, run id, set-aside) and
data-parallel training under torchrun. The course code calls it; it never branches on it."""
from __future__ import annotations

from pico_helpers.runs.store import (RunStore, atomic_write, check_run_name, data_fingerprint, load_checkpoint,
                                     open_run, run_identity)

__all__ = ["RunStore", "atomic_write", "check_run_name", "data_fingerprint", "load_checkpoint", "open_run",
           "run_identity"]
