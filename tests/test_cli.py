"""pico.py: the course's flags run as written, and bad input gets an error that names the fix."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from pico_helpers.config import TrainConfig


def run(args, tmp_path, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("PICO_TINYSTORIES", None) if env_extra is None else None
    return subprocess.run([sys.executable, "pico.py", *args, "--output_dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def test_starter_style_run_prints_the_starter_lines(tmp_path):
    # the handout's data as the starter has it: all 50,257 ids, lines truncated, batches in plain random order
    r = run(["--block_size", "16", "--embed_size", "32", "--tinystories_weight", "0.0", "--input_files",
             "input_files/3seqs.txt", "--prompt", "0 1 2 3 4", "--max_steps_per_epoch", "5", "--epochs", "1",
             "--log_every", "5", "--vocab", "full", "--long_examples", "truncate", "--no-bucket_by_length"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "Vocab size: 50257" in out and "full vocabulary of 50,257 ids" in out
    # ~10% of the distinct lines held out, less those whose first 16 tokens also start a training line
    assert re.search(r"(8,9\d\d|9,\d\d\d) train / (\d+) val sequences, .* of (9\d\d|1,\d\d\d) validation windows "
                     r"dropped \(they also occur in training\)", out)
    assert "0 validation lines also in training" in out
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


# --- flags built from TrainConfig, and bad values caught before any training ---

def load_pico():
    spec = importlib.util.spec_from_file_location("pico_cli", ROOT / "pico.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_field_is_a_flag_with_its_default():
    pico = load_pico()
    config = pico.config_from_args(pico.parse_args([]))
    # the starter's --device_id default is cuda:0 (falling back with a message); every other default is TrainConfig's
    assert config == TrainConfig(device_id="cuda:0")
    args = pico.parse_args(["--bf16", "off", "--tie_weights", "--input_files", "a.txt", "b.txt",
                            "--max_steps_per_epoch", "7", "--positional", "rope"])
    config = pico.config_from_args(args)
    assert (config.bf16, config.tie_weights, config.input_files, config.max_steps_per_epoch, config.positional) == \
        (False, True, ["a.txt", "b.txt"], 7, "rope")
    assert pico.config_from_args(pico.parse_args(["--bf16", "on"])).bf16 is True
    assert (config.vocab, config.long_examples, config.bucket_by_length) == ("corpus", "windows", True)
    args = pico.parse_args(["--vocab", "full", "--long_examples", "truncate", "--no-bucket_by_length"])
    config = pico.config_from_args(args)
    assert (config.vocab, config.long_examples, config.bucket_by_length) == ("full", "truncate", False)
    with pytest.raises(SystemExit) as done:  # every help text prints, a "%" in it included
        pico.parse_args(["--help"])
    assert done.value.code == 0


@pytest.mark.parametrize("bad", [
    dict(learning_rate=-1), dict(learning_rate=float("nan")), dict(learning_rate="0.01"), dict(block_size=1.5),
    dict(block_size=True), dict(batch_size=2.5), dict(bf16="off"), dict(tie_weights="no"), dict(tinystories_stories=0),
    dict(tinystories_stories=-5), dict(block_size=1), dict(positional="absolute"), dict(max_steps_per_epoch=0)])
def test_bad_config_values_name_the_field_and_a_valid_one(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got .*\(for example {name}="):
        TrainConfig.quick(**bad)


@pytest.mark.parametrize("flags, message", [
    (["--learning_rate", "-1"], "learning_rate must be a number > 0"),
    (["--block_size", "1"], "block_size must be an integer >= 2"),
    (["--new_tokens", "-5"], "--new_tokens must be an integer >= 1"),
    (["--device_id", "banana"], "device_id 'banana' is not a torch device"),
    (["--models", "lstm_seq", "kvcache_transformer", "--n_heads", "3"], "not divisible by n_heads=3"),
])
def test_bad_flags_end_in_one_line_before_any_training(tmp_path, flags, message):
    r = run(["--block_size", "16", "--embed_size", "32", "--tinystories_weight", "0", "--input_files",
             "input_files/3seqs.txt", "--max_steps_per_epoch", "2", "--epochs", "1", *flags], tmp_path)
    assert r.returncode == 2, r.stdout[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "=== Training" not in r.stdout and not any(tmp_path.iterdir())


def test_ctrl_c_saves_and_ends_in_one_message(tmp_path):
    p = subprocess.Popen([sys.executable, "pico.py", "--block_size", "16", "--embed_size", "16", "--tinystories_weight",
                          "0", "--input_files", "input_files/3seqs.txt", "--log_every", "1", "--epochs", "1",
                          "--sample_every_s", "0", "--output_dir", str(tmp_path)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if "partial average loss" in line:
            p.send_signal(signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert err.startswith("interrupted: [lstm_seq] checkpoint saved at epoch 1, step ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "lstm_seq" / "checkpoint.pt").is_file()
