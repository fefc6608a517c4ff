"""bf16 autocast as configured, auto on CUDA GPUs only (training/setup.py use_bf16) and the learning-rate schedule
(setup.lr_at)."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_STORIES
from pico_helpers.config import TrainConfig
from pico_helpers.data import collate, load_corpus
from pico_helpers.data.tokenizer import get_tokenizer
from pico_helpers.models import build_model
from pico_helpers.models.transformer import TransformerModel
from pico_helpers.training import lr_at, make_optimizer, train, use_bf16
import pico_helpers.training.loop as loop

CPU = torch.device("cpu")


# --- bf16: the choice ---

def test_bf16_true_and_false_force_the_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    for device in (CPU, torch.device("cuda")):
        for forced in (True, False):
            assert use_bf16(TrainConfig.quick(bf16=forced), device) is forced


def test_auto_keeps_the_cpu_in_float32_and_uses_bf16_where_cuda_supports_it(monkeypatch):
    auto = TrainConfig.quick(bf16=None)
    assert use_bf16(auto, CPU) is False
    for supported in (True, False):  # no GPU needed: the answer is the GPU's support
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert use_bf16(auto, torch.device("cuda")) is supported


# --- bf16: the loss matches fp32 ---

def test_bf16_training_losses_match_fp32_on_a_seeded_run():
    enc = get_tokenizer()
    tokens, mask = collate([enc.encode_ordinary(s) for s in TINY_STORIES])  # (22, 4) real story tokens
    losses = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = TransformerModel(50257, d_model=32, n_heads=2, n_blocks=2, block_size=32)
        optimizer = make_optimizer(model, 1e-3)
        config = TrainConfig.quick(bf16=bf16)
        losses[bf16] = [loop.train_step(model, optimizer, tokens, mask, config) for _ in range(8)]
    diffs = [abs(a - b) for a, b in zip(losses[False], losses[True])]
    assert losses[False][-1] < losses[False][0] - 0.3  # it learns (10.83 -> 10.29), so the runs really diverge
    assert max(diffs) > 0  # bf16 really ran
    # bf16 rounds the matmuls' inputs to 8 significant bits (2^-9 ~ 0.2% relative); the fused loss sums in
    # float32, so the first loss differs by ~1e-5 and the gap grows only as the two weight paths drift apart.
    # Measured over 3 seeds: at most 2e-4 nats in 8 steps at loss ~10.5. 0.01 nats is 50x that, and still a
    # tenth of one step's loss decrease here (~0.08 nats), so a broken bf16 path would not pass.
    assert max(diffs) < 0.01, (losses, diffs)


# --- the learning-rate schedule ---

def test_cosine_schedule_values():
    cfg = TrainConfig.quick(learning_rate=1e-3, lr_schedule="cosine", warmup_steps=10)
    total = 110  # 10 warm-up updates, then 100 of decay (steps 10 .. 109)
    at = lambda step: lr_at(step, cfg, total)  # noqa: E731
    assert at(0) == pytest.approx(1e-4)  # the first update already moves: 1/10 of the peak
    assert at(9) == pytest.approx(1e-3)  # the end of the warm-up is the peak
    assert at(10) == pytest.approx(1e-3)  # decay starts from the peak
    assert at(10 + 99 / 2) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway: the middle of floor and peak
    assert at(109) == pytest.approx(1e-4)  # the last update: the floor, 10% of the peak
    assert at(500) == pytest.approx(1e-4)  # past the end (more epochs than planned): stays at the floor
    decay = [at(s) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at(57, TrainConfig.quick(learning_rate=3e-3), total) == 3e-3  # constant: the starter's
    assert lr_at(0, cfg.replace(warmup_steps=0), total) == pytest.approx(1e-3)  # no warm-up: starts at the peak
    timed = cfg.replace(time_budget_s=60.0)  # with a time budget the decay follows the training seconds, not steps
    assert lr_at(10, timed, total, elapsed_s=30.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(10, timed, total, elapsed_s=90.0) == pytest.approx(1e-4)  # past the budget: the floor
    assert lr_at(5, timed, total, elapsed_s=50.0) == pytest.approx(6e-4)  # the warm-up still counts steps


def test_a_resumed_run_gets_the_same_learning_rates(tmp_path, monkeypatch):
    cfg = TrainConfig.quick(output_dir=str(tmp_path), embed_size=16, epochs=2, max_steps_per_epoch=6, log_every=0,
                            lr_schedule="cosine", warmup_steps=3, device_id="cpu", bf16=False)
    corpus = load_corpus(cfg)
    real, seen = loop.train_step, []

    def recording(model, optimizer, *args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        if len(seen) == 8 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # in epoch 2, before its second update
        return real(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording)
    interrupted = [True]  # the straight run is never interrupted
    straight = train(build_model("lstm_seq", cfg, corpus.vocab), corpus, cfg, name="straight", verbose=False)
    expected, seen[:] = list(seen), []
    assert expected == [lr_at(s, cfg, 12) for s in range(12)] and len(set(expected)) > 6
    interrupted.clear()
    with pytest.raises(KeyboardInterrupt):
        train(build_model("lstm_seq", cfg, corpus.vocab), corpus, cfg, name="resumed", verbose=False)
    seen.pop()  # the interrupted call's update never happened
    resumed = train(build_model("lstm_seq", cfg, corpus.vocab), corpus, cfg, name="resumed", verbose=False)
    assert seen == expected  # 7 updates before the interrupt, 5 after it: the same rates in the same order
    assert resumed.step_loss == straight.step_loss and all(math.isfinite(x) for x in resumed.step_loss)
