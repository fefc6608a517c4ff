"""pico.py: the course's flags run as written, and bad input gets an error that names the fix."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT


def run(args, tmp_path, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("PICO_TINYSTORIES", None) if env_extra is None else None
    return subprocess.run([sys.executable, "pico.py", *args, "--output_dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def test_starter_style_run_prints_the_starter_lines(tmp_path):
    r = run(["--block_size", "16", "--embed_size", "32", "--tinystories_weight", "0.0", "--input_files",
             "input_files/3seqs.txt", "--prompt", "0 1 2 3 4", "--max_steps_per_epoch", "5", "--epochs", "1",
             "--log_every", "5", "--compact_vocab"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for line in ("Using device: cpu", "Vocab size:", "Sequences loaded: 0 from TinyStories, 10,000 from input files",
                 "partial average loss", "end of epoch 1", "validation loss", "greedy:", "top-p 0.95:", "top-p 1.0:",
                 "saved: loss figure"):
        assert line in out, f"missing {line!r} in:\n{out}"
    assert (tmp_path / "lstm_seq" / "checkpoint.pt").is_file() and (tmp_path / "lstm_seq" / "loss.png").is_file()


def test_missing_input_file_lists_the_folder(tmp_path):
    r = run(["--tinystories_weight", "0", "--input_files", "input_files/nope.txt"], tmp_path)
    assert r.returncode == 2
    assert "input_files/nope.txt not found" in r.stderr and "3seqs.txt" in r.stderr


def test_tinystories_offline_says_what_to_do(tmp_path):
    r = run(["--tinystories_weight", "1.0", "--block_size", "16"], tmp_path)
    assert r.returncode == 2
    assert "PICO_TINYSTORIES=" in r.stderr


def test_tinystories_from_a_local_file(tmp_path, tinystories_file):
    r = run(["--tinystories_weight", "1.0", "--block_size", "16", "--embed_size", "16", "--tinystories_stories", "30",
             "--max_steps_per_epoch", "2", "--epochs", "1", "--sample_every_s", "0"], tmp_path,
            {"PICO_TINYSTORIES": str(tinystories_file)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Sequences loaded: 30 from TinyStories, 0 from input files" in r.stdout
