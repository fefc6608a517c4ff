"""The first lines of every notebook, written once: work from the repository root and pick the device."""
from __future__ import annotations

import os

import torch

from pico_helpers.config import find_repo_root, quick_mode
from pico_helpers.training.setup import pick_device

__all__ = ["start_notebook", "QUICK_NOTE"]

QUICK_NOTE = ("**Quick mode** (`PICO_QUICK=1`, the default without a GPU): every run below is smoke-sized, seconds "
              "on a laptop, so its numbers and plots are not the full run's. The answer cells describe the full run "
              "(`make workbook QUICK=0`): read them as what the full run showed, not as comments on the quick "
              "numbers above them.")


def start_notebook(device_id: str | None = None) -> torch.device:
    """Work from the repository root (so paths read as in pico.py and the README), pick the device (cuda > mps >
    cpu, or ``device_id``), say which, and return it; in quick mode, say that the answers describe the full run.
    The first code cell of every notebook calls it."""
    os.chdir(find_repo_root())
    device = pick_device(device_id)
    print("device:", device)
    if quick_mode():
        from IPython.display import Markdown, display

        display(Markdown(QUICK_NOTE))
    return device
