"""The training engine: it learns, keeps a history, checkpoints atomically, resumes, never overwrites."""
from __future__ import annotations

import json

import pytest
import torch

from pico_helpers.config import TrainConfig
from pico_helpers.data import load_corpus
from pico_helpers.models import build_model
from pico_helpers.training.loop import evaluate, load_checkpoint, pick_device, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.quick(output_dir=str(out), embed_size=32, max_steps_per_epoch=30, epochs=2,
                            compact_vocab=True, log_every=0, device_id="cpu", learning_rate=1e-2)
    return cfg, load_corpus(cfg)


def test_lstm_learns_and_history_is_complete(setup):
    cfg, corpus = setup
    model = build_model("lstm_seq", cfg, corpus.vocab_size)
    before = evaluate(model, corpus.val, 64)
    history = train(model, corpus, cfg, name="lstm", progress=False)
    assert len(history["step_loss"]) == 60 and history["epoch_end_step"] == [30, 60]
    assert history["epoch_val_loss"][-1] < before - 1.0, (before, history["epoch_val_loss"])
    assert history["finished"] and history["tokens_per_s"] > 0 and history["tokens_seen"] > 0
    saved = json.loads(open(f"{cfg.output_dir}/lstm/history.json").read())
    assert saved["epoch_val_loss"] == history["epoch_val_loss"]
    ckpt = load_checkpoint(f"{cfg.output_dir}/lstm/checkpoint.pt")
    assert set(ckpt) >= {"model", "optimizer", "config", "history", "epoch"} and ckpt["epoch"] == 2
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])


def test_resume_continues_where_it_stopped(setup):
    cfg, corpus = setup
    one = cfg.replace(epochs=1)
    m1 = build_model("lstm_seq", one, corpus.vocab_size)
    train(m1, corpus, one, name="resume", progress=False)
    m2 = build_model("lstm_seq", cfg, corpus.vocab_size)
    h2 = train(m2, corpus, cfg, name="resume", progress=False)  # epochs=2: continues with epoch 2
    full = build_model("lstm_seq", cfg, corpus.vocab_size)
    h_full = train(full, corpus, cfg.replace(output_dir=cfg.output_dir + "/straight"), name="resume", progress=False)
    assert len(h2["step_loss"]) == 60
    # same data order, same optimizer state: the resumed run retraces the uninterrupted one
    assert h2["step_loss"] == pytest.approx(h_full["step_loss"], rel=1e-4)
    m3 = build_model("lstm_seq", cfg, corpus.vocab_size)
    h3 = train(m3, corpus, cfg, name="resume", progress=False)  # finished: returns at once, same history
    assert h3["step_loss"] == h2["step_loss"]
    for p, q in zip(m3.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_loading_a_finished_run_repeats_its_epoch_lines(setup, tmp_path, capsys):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=3)
    train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg, name="run", progress=False, live=False)
    first = [line for line in capsys.readouterr().out.splitlines() if "end of epoch" in line]
    train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg, name="run", progress=False, live=False)
    again = [line for line in capsys.readouterr().out.splitlines() if "end of epoch" in line]
    assert len(first) == 2
    # the same losses and speeds, marked as read from the saved run
    assert again == [line.replace("*** end of epoch", "(saved) end of epoch") for line in first]


def test_changed_config_moves_the_old_run_aside(setup, tmp_path):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=3)
    train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg, name="run", progress=False)
    other = cfg.replace(learning_rate=3e-3)
    train(build_model("lstm_seq", other, corpus.vocab_size), corpus, other, name="run", progress=False)
    kept = load_checkpoint(tmp_path / "run.prev-1" / "checkpoint.pt")
    assert kept["config"]["learning_rate"] == cfg.learning_rate
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["learning_rate"] == 3e-3


def test_interrupt_saves_a_checkpoint_that_resumes(setup, tmp_path, monkeypatch):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=10)
    import pico_helpers.training.loop as tr

    real, calls = tr.next_token_loss, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "next_token_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg, name="int", progress=False)
    ckpt = load_checkpoint(tmp_path / "int" / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (0, 4)
    monkeypatch.setattr(tr, "next_token_loss", real)
    h = train(build_model("lstm_seq", cfg, corpus.vocab_size), corpus, cfg, name="int", progress=False)
    assert len(h["step_loss"]) == 10 and h["finished"]


def test_pick_device_falls_back_with_a_message(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert pick_device("cuda:0").type in ("cpu", "mps")
    assert "not available" in capsys.readouterr().out
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="not a torch device"):
        pick_device("gpu7")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="choose from kgram_mlp_seq, lstm_seq, kvcache_transformer"):
        build_model("gru", TrainConfig.quick(), 10)


def test_compile_option_trains_and_keeps_plain_keys(setup, tmp_path):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=2, compile=True)
    model = build_model("lstm_seq", cfg, corpus.vocab_size)
    h = train(model, corpus, cfg, name="compiled", progress=False)  # compiles, or falls back to eager
    assert h["finished"] and len(h["step_loss"]) == 2
    ckpt = load_checkpoint(tmp_path / "compiled" / "checkpoint.pt")
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
