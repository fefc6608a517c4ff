"""`make gpu-check` without a GPU: it says so, lists its checks, exits 0; its fused-loss check runs on the CPU."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from conftest import ROOT


def test_gpu_check_without_cuda_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU, so this runs the same on a GPU machine
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("[gpu-check] no CUDA"), done.stdout
    for check in ("cuda tests", "train <model> bf16", "fused loss", "kv cache", "bench --quick", "torchrun nccl"):
        assert any(check in line for line in lines[1:]), f"{check!r} is not among the checks listed"


def test_make_gpu_check_runs_that_script():
    recipe = re.search(r"^gpu-check:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and "-m benchmarks.gpu_check" in recipe.group(1)


def test_fused_loss_check_passes_on_the_cpu(tmp_path):
    # The one check cheap enough for the CPU suite: it keeps gpu_check's calls in step with the package's API.
    from benchmarks.gpu_check import _quick_config, check_fused_loss
    from pico_helpers import load_corpus

    device = torch.device("cpu")
    status, detail = check_fused_loss(device, load_corpus(_quick_config(device, str(tmp_path))))
    assert status == "PASS", detail
