"""Nothing lost when things go wrong together (issue 28, classes 2-6): one writer per run, SIGTERM saves, exact resume
with dropout and with an interrupted validation, folder problems before training, divergence that stops, and the
arguments, checkpoints and histories that used to end in a traceback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import pico_helpers.training.loop as loop
from conftest import ROOT
from pico_helpers.config import TrainConfig
from pico_helpers.data import load_corpus
from pico_helpers.models import build_model
from pico_helpers.runs import RunStore, load_checkpoint
from pico_helpers.training import History, train

PICO = [sys.executable, str(ROOT / "pico.py"), "--input_files", "input_files/3seqs.txt", "--tinystories_weight", "0",
        "--block_size", "32", "--embed_size", "16", "--device_id", "cpu", "--models", "lstm_seq",
        "--sample_every_s", "0", "--log_every", "1", "--new_tokens", "3"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = TrainConfig.quick(output_dir=str(tmp_path_factory.mktemp("runs")), embed_size=16, n_heads=2, n_blocks=1,
                            epochs=2, max_steps_per_epoch=6, eval_every=2, log_every=0, device_id="cpu")
    return cfg, load_corpus(cfg)


def fit(cfg, corpus, name="run", model="lstm_seq", **kwargs):
    return train(build_model(model, cfg, corpus.vocab), corpus, cfg, name=name, verbose=False, **kwargs)


def pico(out, *extra, wait=True):
    cmd = PICO + ["--output_dir", str(out), *extra]
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(proc, text: str, timeout_s: float = 120.0) -> list[str]:
    """Read ``proc``'s output until a line contains ``text``; the lines read."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in:\n{''.join(lines)[-2000:]}")


# --- class 2: one writer per run; SIGTERM saves ---

def test_a_second_process_on_a_run_in_training_stops_at_once(tmp_path):
    first = pico(tmp_path, "--max_steps_per_epoch", "400", "--epochs", "1", wait=False)
    try:
        wait_for_line(first, "step 2/")  # it is training
        second = pico(tmp_path, "--max_steps_per_epoch", "400", "--epochs", "1", "--embed_size", "24")
        assert second.returncode == 2, second.stdout + second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "is being trained by process" in err[0] and str(first.pid) in err[0], err
        assert not list(tmp_path.glob("lstm_seq.prev-*")), "the second process moved the first one's run aside"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    # a lock left by a killed process does not block: the operating system released it
    killed = pico(tmp_path, "--max_steps_per_epoch", "400", "--epochs", "1", wait=False)
    wait_for_line(killed, "resuming")
    killed.kill()
    killed.wait(timeout=60)
    after = pico(tmp_path, "--max_steps_per_epoch", "3", "--epochs", "1", "--embed_size", "24")
    assert after.returncode == 0 and "was moved to" in after.stdout, after.stdout + after.stderr


def test_sigterm_saves_a_checkpoint_as_ctrl_c_does(tmp_path):
    proc = pico(tmp_path, "--max_steps_per_epoch", "400", "--epochs", "1", wait=False)
    wait_for_line(proc, "step 5/")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted: [lstm_seq] checkpoint saved at epoch 1, step" in out, out
    steps = len(load_checkpoint(tmp_path / "lstm_seq" / "checkpoint.pt")["history"]["step_loss"])
    assert 5 <= steps < 400


# --- class 3: exact resume ---

def _interrupt_at(monkeypatch, function: str, n: int) -> None:
    real, calls = getattr(loop, function), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, function, flaky)


def test_resume_with_dropout_is_exact(small, tmp_path, monkeypatch):
    cfg, corpus = small
    cfg = cfg.replace(output_dir=str(tmp_path), dropout=0.1)
    straight = fit(cfg, corpus, "straight", "kvcache_transformer")
    _interrupt_at(monkeypatch, "train_step", 4)  # mid-epoch: the dropout masks after it must be the same
    with pytest.raises(KeyboardInterrupt, match="checkpoint saved at epoch 1, step 3"):
        fit(cfg, corpus, "resumed", "kvcache_transformer")
    monkeypatch.undo()
    torch.manual_seed(1234)  # whatever the generator holds now, the checkpoint's state is restored
    resumed = fit(cfg, corpus, "resumed", "kvcache_transformer")
    assert resumed.step_loss == straight.step_loss and resumed.val_points == straight.val_points


def test_an_interrupted_validation_point_is_done_again(small, tmp_path, monkeypatch):
    cfg, corpus = small
    cfg = cfg.replace(output_dir=str(tmp_path))
    straight = fit(cfg, corpus, "straight")
    _interrupt_at(monkeypatch, "evaluate", 2)  # the second mid-epoch point, at step 4
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, corpus, "resumed")
    saved = History.from_dict(load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["history"])
    assert saved.eval_pending and saved.step == 4 and [s for s, _ in saved.val_points] == [2]
    monkeypatch.undo()
    resumed = fit(cfg, corpus, "resumed")
    assert resumed.val_points == straight.val_points and resumed.step_loss == straight.step_loss


def test_a_second_ctrl_c_waits_for_the_checkpoint(small, tmp_path, monkeypatch):
    cfg, corpus = small
    cfg = cfg.replace(output_dir=str(tmp_path))
    _interrupt_at(monkeypatch, "train_step", 3)
    real_save = RunStore.save

    def save(self, *args):  # a second Ctrl-C 30 ms after the first, while the checkpoint is written
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.03)
        real_save(self, *args)

    monkeypatch.setattr(RunStore, "save", save)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, corpus)
    assert len(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]["step_loss"]) == 2


# --- class 4: folder problems before training ---

def test_an_output_dir_that_is_a_file_fails_before_training(small, tmp_path, monkeypatch):
    cfg, corpus = small
    (tmp_path / "runs").write_text("not a folder")
    steps = []
    monkeypatch.setattr(loop, "train_step", lambda *a: steps.append(1))
    with pytest.raises(ValueError, match="choose another output_dir"):
        fit(cfg.replace(output_dir=str(tmp_path / "runs")), corpus)
    assert not steps


def test_an_unwritable_run_folder_fails_before_training(small, tmp_path, monkeypatch):
    cfg, corpus = small
    steps = []
    monkeypatch.setattr(loop, "train_step", lambda *a: steps.append(1))

    def refuse(path, write):  # as a read-only folder does (root ignores chmod, so the refusal is simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pico_helpers.runs.store.atomic_write", refuse)
    with pytest.raises(ValueError, match=r"cannot write the run's folder .*Permission denied.*output_dir"):
        fit(cfg.replace(output_dir=str(tmp_path)), corpus)
    assert not steps


# --- class 5: divergence stops ---

@pytest.mark.parametrize("model", ["lstm_seq", "kgram_mlp_seq"])
def test_a_diverging_run_stops_with_a_message_and_stays_unfinished(tmp_path, model):
    out = pico(tmp_path, "--models", model, "--learning_rate", "1e6", "--max_steps_per_epoch", "60", "--epochs", "2")
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and ("diverged" in err[0] or "non-finite" in err[0] or "loss is nan" in err[0]), err
    assert "learning_rate 1e+06" in err[0] and "try 100000" in err[0], err
    history = tmp_path / model / "history.json"
    assert not history.exists() or not json.loads(history.read_text())["finished"]


def test_a_loss_stuck_at_a_uniform_guess_gets_a_hint():
    h = History(model="m", vocab_size=322, step_loss=[5.77] * 4, epoch_end_step=[4], epoch_train_loss=[5.77],
                epoch_val_loss=[5.78], epoch_tokens_per_s=[None])
    assert "a uniform guess: the model has not learned yet" in h.epoch_line(0, "***")
    h.epoch_train_loss = [3.0]
    assert "uniform" not in h.epoch_line(0, "***")


# --- class 6: arguments, checkpoints and histories that used to end in a traceback ---

def test_train_checks_its_arguments(small):
    cfg, corpus = small
    model = build_model("lstm_seq", cfg, corpus.vocab)
    with pytest.raises(ValueError, match="corpus must be a Corpus, got NoneType: load one with load_corpus"):
        train(model, None, cfg)
    with pytest.raises(ValueError, match=r"config must be a TrainConfig, got dict: .*TrainConfig\(\*\*values\)"):
        train(model, corpus, cfg.to_dict())
    with pytest.raises(ValueError, match=r"another vocabulary .* build_model\(name, config, corpus.vocab\)"):
        train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg)  # a raw model of the corpus's size


@pytest.mark.parametrize("damage", ["extra_key", "wrong_shape", "history_types"])
def test_a_tampered_checkpoint_names_the_file_and_the_way_out(small, tmp_path, damage):
    cfg, corpus = small
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=2)
    fit(cfg, corpus)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    if damage == "extra_key":
        ckpt["model"]["model.extra"] = torch.zeros(2)
    elif damage == "wrong_shape":
        key = next(iter(ckpt["model"]))
        ckpt["model"][key] = torch.zeros(3, 3)
    else:
        ckpt["history"]["step_loss"] = "garbage"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt does not match this run .*--no_resume"):
        fit(cfg.replace(epochs=2), corpus)


def test_a_corrupt_history_json_is_written_again_from_the_checkpoint(small, tmp_path):
    cfg, corpus = small
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=2)
    first = fit(cfg, corpus)
    (tmp_path / "run" / "history.json").write_text("{ not json")
    fit(cfg.replace(epochs=2), corpus)  # resumes: the checkpoint's History is the right one
    assert History.from_json(tmp_path / "run" / "history.json").step_loss[:2] == first.step_loss


def test_rerunning_a_finished_run_names_its_figure(tmp_path):
    for _ in range(2):
        out = pico(tmp_path, "--max_steps_per_epoch", "2", "--epochs", "1")
        assert out.returncode == 0, out.stderr
    assert "already trained" in out.stdout and "loss figure None" not in out.stdout
    assert f"loss figure {tmp_path / 'lstm_seq' / 'loss.png'}" in out.stdout
