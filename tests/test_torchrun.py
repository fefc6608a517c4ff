"""torchrun data-parallel training: 2 processes with a global batch of 16 train as 1 process with a batch of 16.

gloo on the CPU here; benchmarks/gpu_check.py runs the same test with PICO_DIST_BACKEND=nccl on a machine with
two or more GPUs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch.distributed as dist
from conftest import ROOT

from pico_helpers import TrainConfig, build_model, load_checkpoint, load_corpus

BACKEND = os.environ.get("PICO_DIST_BACKEND", "gloo")
DEVICE = "cuda" if BACKEND == "nccl" else "cpu"
pytestmark = pytest.mark.skipif(not dist.is_available() or not getattr(dist, f"is_{BACKEND}_available")(),
                                reason=f"this torch build has no torch.distributed {BACKEND} backend")

STEPS, NAME = 20, "kvcache_transformer"
ARGS = ["--input_files", "input_files/3seqs.txt", "--tinystories_weight", "0", "--block_size", "32", "--embed_size",
        "32", "--n_blocks", "2", "--models", NAME, "--batch_size", "16", "--epochs", "1", "--max_steps_per_epoch",
        str(STEPS), "--bf16", "off", "--sample_every_s", "0", "--new_tokens", "2", "--log_every", "1"]
# Per-step losses of 2 ranks x 8 against 1 process x 16 differ only by float32 rounding: each rank's fused loss sums
# its own rows, the gradient all-reduce adds the two halves in another order, and Adam carries the differences on.
# Measured here (CPU, gloo, 20 steps): at most 1.2e-6 nats. 1e-4 leaves a wide margin; CUDA (not measured) 1e-3.
TOL = 1e-4 if DEVICE == "cpu" else 1e-3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # 1 thread each, as torchrun sets for 2


def torchrun_cmd(out) -> list[str]:
    """``torchrun --standalone --nproc_per_node=2 pico.py ...`` (standalone: a free port of its own)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "pico.py", *ARGS,
            "--device_id", DEVICE, "--output_dir", str(out)]


def history(out) -> dict:
    return json.loads((out / NAME / "history.json").read_text())


def test_two_processes_train_as_one_and_resume_the_same_curve(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    device = f"{DEVICE}:0" if DEVICE == "cuda" else DEVICE
    single = subprocess.run([sys.executable, "pico.py", *ARGS, "--device_id", device, "--output_dir", str(one)],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]

    # A 2-process run, interrupted by a Ctrl-C (SIGINT to torchrun, which passes it on to both ranks) after step 3.
    first = subprocess.Popen(torchrun_cmd(two), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    watchdog = threading.Timer(300, first.kill)
    watchdog.start()
    lines = []
    for line in first.stdout:
        lines.append(line)
        if f"step 3/{STEPS}:" in line:
            first.send_signal(signal.SIGINT)
    first.wait()
    watchdog.cancel()
    out = "".join(lines)
    assert first.returncode != 0, out[-3000:]
    assert out.count("checkpoint saved at epoch 1") == 1, out[-3000:]  # saved once, by rank 0
    assert "Unable to shutdown process" not in out, out[-3000:]  # both ranks ended in time, torchrun killed none
    stopped = len(history(two)["step_loss"])
    assert 3 <= stopped < STEPS, f"the Ctrl-C should stop the run early, it saved after step {stopped}"

    second = subprocess.run(torchrun_cmd(two), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"[{NAME}] resuming: {stopped} steps done, epoch 1, step {stopped} of it; loaded {two / NAME / 'checkpoint.pt'}" in second.stdout

    ref, par = history(one), history(two)
    assert len(ref["step_loss"]) == len(par["step_loss"]) == STEPS and par["finished"]
    diffs = [abs(a - b) for a, b in zip(ref["step_loss"], par["step_loss"])]
    assert max(diffs) < TOL, f"per-step |loss difference| {max(diffs):.2e} (steps 1-{stopped} before the resume)"
    assert abs(ref["epoch_val_loss"][0] - par["epoch_val_loss"][0]) < TOL  # the all-reduced validation loss
    assert ref["tokens_seen"] == par["tokens_seen"]  # the global batches, not one rank's share

    # Rank 0's checkpoint is a plain single-process one (no DDP "module." prefixes) with the reference's weights:
    # the corpus-vocabulary model's state dict, which loads into the model pico.py builds for the same corpus.
    ckpt, ref_ckpt = load_checkpoint(two / NAME / "checkpoint.pt"), load_checkpoint(one / NAME / "checkpoint.pt")
    assert set(ckpt["model"]) == set(ref_ckpt["model"])
    config = TrainConfig(**ckpt["config"])
    model = build_model(NAME, config, load_corpus(config).vocab)
    model.load_state_dict(ckpt["model"])  # strict: every key matches
    assert max(float((v - ref_ckpt["model"][k]).abs().max()) for k, v in ckpt["model"].items()) < TOL


def test_a_global_batch_that_does_not_split_evenly_is_refused(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("pico_cli", ROOT / "pico.py")
    pico = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pico)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="global batch, split over 3 processes.*--batch_size 15"):
        pico.init_torchrun(TrainConfig.quick(batch_size=16))
    assert not dist.is_initialized()
