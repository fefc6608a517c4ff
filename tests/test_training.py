"""The training engine: it learns, keeps a History, checkpoints atomically, resumes exactly, never overwrites."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from pico_helpers.analysis import plots
from pico_helpers.config import TrainConfig
from pico_helpers.data import CorpusVocab, MixedSequenceDataset, load_corpus
from pico_helpers.models import build_model, count_parameters
from pico_helpers.runs import RunStore, data_fingerprint, load_checkpoint, run_identity
from pico_helpers.training import Callback, History, evaluate, make_optimizer, pick_device, train
import pico_helpers.training.loop as loop


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig.quick(output_dir=str(out), embed_size=32, max_steps_per_epoch=30, epochs=2,
                            log_every=0, device_id="cpu", learning_rate=1e-2, test_fraction=0.02)
    return cfg, load_corpus(cfg)


def fit(cfg, corpus, name="run", **kwargs):
    return train(build_model("lstm_seq", cfg, corpus.vocab), corpus, cfg, name=name, **kwargs)


def position(ckpt) -> tuple[int, int]:
    """(epoch, step in the epoch) a checkpoint resumes at: its History's position."""
    history = History.from_dict(ckpt["history"])
    return history.epoch, history.step_in_epoch


def test_lstm_learns_and_history_is_complete(setup):
    cfg, corpus = setup
    model = build_model("lstm_seq", cfg, corpus.vocab)
    before = evaluate(model, corpus.val, cfg.replace(batch_size=64))
    history = train(model, corpus, cfg, name="lstm")
    assert len(history.step_loss) == 60 and history.epoch_end_step == [30, 60]
    assert history.epoch_val_loss[-1] < before - 1.0, (before, history.epoch_val_loss)
    assert history.finished and history.tokens_per_s > 0 and history.tokens_seen > 0
    # about ten validation points a run, at regular steps; the epoch ends' values among them
    assert [s for s, _ in history.val_points] == list(range(6, 61, 6))
    assert dict(history.val_points)[30] == history.epoch_val_loss[0]
    saved = json.loads(open(f"{cfg.output_dir}/lstm/history.json").read())
    assert saved["epoch_val_loss"] == history.epoch_val_loss
    assert History.from_json(f"{cfg.output_dir}/lstm/history.json") == history
    ckpt = load_checkpoint(f"{cfg.output_dir}/lstm/checkpoint.pt")
    assert set(ckpt) == {"model", "optimizer", "config", "run_id", "history", "rng"} and position(ckpt) == (2, 0)
    assert ckpt["run_id"] == history.run_id and ckpt["config"] == cfg.replace(bf16=False).to_dict()
    fresh = build_model("lstm_seq", cfg, corpus.vocab)  # the weights load into the model train() was given
    fresh.load_state_dict(ckpt["model"])
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), model.parameters()))
    assert history.figure and os.path.isfile(history.figure)


def test_resume_continues_where_it_stopped(setup):
    cfg, corpus = setup
    one = cfg.replace(epochs=1)
    fit(one, corpus, "resume")
    m2 = build_model("lstm_seq", cfg, corpus.vocab)
    h2 = train(m2, corpus, cfg, name="resume")  # epochs=2: continues with epoch 2
    h_full = fit(cfg.replace(output_dir=cfg.output_dir + "/straight"), corpus, "resume")
    assert len(h2.step_loss) == 60
    # same data order, same optimizer state: the resumed run retraces the uninterrupted one exactly
    assert h2.step_loss == h_full.step_loss
    m3 = build_model("lstm_seq", cfg, corpus.vocab)
    h3 = train(m3, corpus, cfg, name="resume")  # finished: returns at once, same history
    assert h3.step_loss == h2.step_loss
    for p, q in zip(m3.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_loading_a_finished_run_repeats_its_epoch_lines_and_writes_nothing(setup, tmp_path, capsys):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=3)
    fit(cfg, corpus)
    first = [line for line in capsys.readouterr().out.splitlines() if "end of epoch" in line]
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    fit(cfg, corpus)
    again = [line for line in capsys.readouterr().out.splitlines() if "end of epoch" in line]
    assert len(first) == 2
    # the same losses and speeds, marked as read from the saved run
    assert again == [line.replace("*** end of epoch", "(saved) end of epoch") for line in first]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == files  # a read-only folder works


def test_changed_config_moves_the_old_run_aside(setup, tmp_path, capsys):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=3)
    fit(cfg, corpus)
    other = cfg.replace(learning_rate=3e-3)
    fit(other, corpus)
    assert "config changed (learning_rate)" in capsys.readouterr().out
    kept = load_checkpoint(tmp_path / "run.prev-1" / "checkpoint.pt")
    assert kept["config"]["learning_rate"] == cfg.learning_rate
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["learning_rate"] == 3e-3
    fit(other, corpus, resume=False)  # resume=False moves even a matching run aside
    assert (tmp_path / "run.prev-2" / "checkpoint.pt").is_file()


def test_run_id_hashes_meaningful_fields_data_and_model(setup):
    cfg, corpus = setup
    model = build_model("lstm_seq", cfg, corpus.vocab)
    run_id = run_identity(cfg, corpus, model)
    for same in (dict(epochs=9), dict(log_every=7), dict(max_steps_per_epoch=3), dict(prompt="1 2"),
                 dict(output_dir="elsewhere"), dict(eval_every=2), dict(sample_every_s=5.0)):
        assert run_identity(cfg.replace(**same), corpus, model) == run_id, same
    assert run_identity(cfg.replace(learning_rate=3e-3), corpus, model) != run_id
    assert run_identity(cfg, corpus, build_model("lstm_seq", cfg.replace(embed_size=16), corpus.vocab)) != run_id
    # one token changed in one training line: another fingerprint, whatever the description says
    other = [list(s) for s in corpus.train.other]  # GPT-2 ids
    other[0][0] = (other[0][0] + 1) % 50257
    changed = dataclasses.replace(corpus, train=MixedSequenceDataset([], other, 0.0, seed=cfg.seed))
    assert changed.description == corpus.description and data_fingerprint(changed) != data_fingerprint(corpus)
    # the same GPT-2 data with another vocabulary (the model's ids standing for other GPT-2 ids): another too
    shifted = dataclasses.replace(corpus, vocab=CorpusVocab([i + 1 for i in corpus.vocab.ids]))
    assert data_fingerprint(shifted) != data_fingerprint(corpus)
    for change in (dict(vocab="full"), dict(long_examples="truncate"), dict(bucket_by_length=False)):
        assert run_identity(cfg.replace(**change), corpus, model) != run_id, change


# --- interrupts: a Ctrl-C at any point resumes to the losses of an uninterrupted run ---

@pytest.fixture(scope="module")
def short(setup, tmp_path_factory):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path_factory.mktemp("short")), epochs=2, max_steps_per_epoch=8,
                      eval_every=4)
    return cfg, corpus, fit(cfg, corpus, "straight")


def test_interrupt_saves_a_checkpoint_that_resumes(short, tmp_path, monkeypatch):
    cfg, corpus, straight = short
    cfg = cfg.replace(output_dir=str(tmp_path))
    real, calls = loop.next_token_loss, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "next_token_loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, corpus, "int")
    ckpt = load_checkpoint(tmp_path / "int" / "checkpoint.pt")
    assert position(ckpt) == (0, 4)
    monkeypatch.setattr(loop, "next_token_loss", real)
    h = fit(cfg, corpus, "int")
    assert h.finished and h.step_loss == straight.step_loss


def _sigint_after_third_update():
    calls = {"n": 0}

    def hook(optimizer, args, kwargs):  # runs inside optimizer.step(), after the update
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, between the update and the step counter

    return register_optimizer_step_post_hook(hook)


@pytest.mark.parametrize("where", ["after_optimizer_step", "epoch_end_save", "plot_redraw"])
def test_interrupt_anywhere_resumes_to_the_same_losses(short, tmp_path, monkeypatch, where):
    cfg, corpus, straight = short
    cfg = cfg.replace(output_dir=str(tmp_path))
    handle = None
    if where == "after_optimizer_step":
        handle = _sigint_after_third_update()
    elif where == "epoch_end_save":
        real_save, calls = RunStore.save, []

        def save(self, *a):
            calls.append(1)
            if len(calls) == 1:  # the first epoch's save, after its losses were recorded
                raise KeyboardInterrupt
            real_save(self, *a)

        monkeypatch.setattr(RunStore, "save", save)
    else:
        def update(self, history):
            if history.epoch_end_step == [history.step]:  # the redraw at the end of epoch 1
                raise KeyboardInterrupt

        monkeypatch.setattr(plots.LiveLossPlot, "update", update)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, corpus)
    finally:
        if handle is not None:
            handle.remove()
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    expected = (0, 3) if where == "after_optimizer_step" else (1, 0)
    assert position(ckpt) == expected
    assert len(ckpt["history"]["step_loss"]) == (3 if where == "after_optimizer_step" else 8)
    resumed = fit(cfg, corpus)
    assert resumed.step_loss == straight.step_loss  # no step applied twice, no epoch trained twice
    assert resumed.epoch_end_step == [8, 16] and resumed.epoch_val_loss == straight.epoch_val_loss


# --- failures that end in one clear message ---

def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(setup, tmp_path, monkeypatch):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=4)
    real, calls, saved = loop.next_token_loss, {"n": 0}, []

    def diverging(*a, **k):
        loss = real(*a, **k)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            calls["n"] += 1
            loss = loss * float("nan") if calls["n"] == 6 else loss
        return loss

    class Snapshot(Callback):
        def on_epoch_end(self, history, model):
            saved.append((tmp_path / "run" / "checkpoint.pt").read_bytes())

    monkeypatch.setattr(loop, "next_token_loss", diverging)
    too_high = r"loss is nan at step 6: learning_rate 0.01 is probably too high, try 0.001"
    with pytest.raises(loop.Diverged, match=too_high):
        fit(cfg, corpus, callbacks=[Snapshot()])
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == saved[-1]  # epoch 1's, untouched
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (position(ckpt), ckpt["history"]["finished"], len(ckpt["history"]["step_loss"])) == ((1, 0), False, 4)
    json.loads((tmp_path / "run" / "history.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    monkeypatch.setattr(loop, "next_token_loss", real)
    h = fit(cfg, corpus)  # not "already trained": it continues with epoch 2
    assert h.finished and h.step == 8


def test_train_step_skips_the_update_of_a_non_finite_loss(setup):
    cfg, corpus = setup
    model = build_model("lstm_seq", cfg, corpus.vocab)
    optimizer = make_optimizer(model, 1e-2)
    ids = corpus.vocab.ids
    tokens = torch.tensor([[ids[1], ids[2]], [ids[2], ids[3]], [ids[3], ids[4]]])  # (T, B) GPT-2 ids
    with torch.no_grad():
        model.model.head.bias[0] = float("inf")  # an infinite logit: inf - inf in the softmax, a NaN loss
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert math.isnan(loop.train_step(model, optimizer, tokens, None, cfg))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_history_json_is_strict(tmp_path):
    h = History(step_loss=[2.0, float("nan")], val_points=[(1, float("inf"))], epoch_val_loss=[None])
    h.to_json(tmp_path / "h.json")

    def refuse(name):
        raise AssertionError(f"{name} in history.json")

    data = json.loads((tmp_path / "h.json").read_text(), parse_constant=refuse)
    assert data["step_loss"] == [2.0, None] and data["val_points"] == [[1, None]]
    assert History.from_json(tmp_path / "h.json").val_points == [(1, None)]
    assert os.listdir(tmp_path) == ["h.json"]  # no temporary left behind


@pytest.mark.parametrize("name", ["", "../victim", "a/b", "..", ".", "/tmp/run", "a\\b"])
def test_run_names_are_checked(setup, tmp_path, name):
    cfg, corpus = setup
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    cfg = cfg.replace(output_dir=str(tmp_path / "runs"), epochs=1, max_steps_per_epoch=2)
    with pytest.raises(ValueError, match="run name"):
        fit(cfg, corpus, name)
    assert sorted(os.listdir(tmp_path)) == ["victim"] and (tmp_path / "victim" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "missing_keys"])
def test_unreadable_checkpoint_names_the_file_and_the_way_out(setup, tmp_path, damage):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=2)
    fit(cfg, corpus)
    path = tmp_path / "run" / "checkpoint.pt"
    good = path.read_bytes()
    bad = {"empty": b"", "garbage": b"not a checkpoint", "truncated": good[: len(good) // 2]}.get(damage)
    if bad is None:
        torch.save({"model": {}}, path)
        bad = path.read_bytes()
    path.write_bytes(bad)
    with pytest.raises(ValueError, match=r"cannot read the checkpoint .*checkpoint\.pt.*resume=False"):
        fit(cfg, corpus)
    h = fit(cfg, corpus, resume=False)  # moves the folder aside without reading it
    assert h.finished and (tmp_path / "run.prev-1" / "checkpoint.pt").read_bytes() == bad


# --- verbose, callbacks, plots ---

def test_quiet_run_prints_nothing_and_calls_its_callbacks(setup, tmp_path, capsys):
    cfg, corpus = setup
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=5, log_every=1, eval_every=2)

    class Count(Callback):
        def __init__(self):
            self.events = []

        def on_step(self, history, model):
            self.events.append(("step", history.step))

        def on_eval(self, history, model):
            self.events.append(("eval", history.val_points[-1][0]))

        def on_epoch_end(self, history, model):
            self.events.append(("epoch", history.step))

        def on_train_end(self, history, model):
            self.events.append(("end", history.finished))

    count = Count()
    h = fit(cfg, corpus, verbose=False, callbacks=[count])
    assert capsys.readouterr().out == ""
    assert [e for e in count.events if e[0] != "step"] == [("eval", 2), ("eval", 4), ("epoch", 5), ("eval", 6),
                                                            ("eval", 8), ("epoch", 10), ("end", True)]
    assert [s for s, _ in h.val_points] == [2, 4, 5, 6, 8, 10]


def test_loss_plot_has_log_axis_and_labels(setup, tmp_path):
    cfg, corpus = setup
    h = fit(cfg.replace(output_dir=str(tmp_path), epochs=1, max_steps_per_epoch=10), corpus, "lstm_3seqs")
    ax = plots.loss_figure(h).axes[0]
    assert ax.get_yscale() == "log" and "step" in ax.get_xlabel() and "nats" in ax.get_ylabel()
    assert ax.get_title() == "LSTM on 3seqs: training and validation loss"
    assert [line.get_label() for line in ax.lines][1:] == ["lstm_3seqs: training loss (running mean of 5 steps)",
                                                          f"lstm_3seqs: validation loss (all {len(corpus.val)} "
                                                          "held-out sequences)"]


def test_every_point_of_a_validation_curve_scores_the_same_sequences(setup, tmp_path, monkeypatch):
    # A held-out set larger than the sample: every point of val_points, epoch ends included, scores the same fixed
    # sample, and the whole set is scored at epoch ends on its own (epoch_val_loss, val_loss), never on the curve.
    cfg, corpus = setup
    monkeypatch.setattr(loop, "VAL_SAMPLE", 50)
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=6, eval_every=2)
    model = build_model("lstm_seq", cfg, corpus.vocab)
    h = train(model, corpus, cfg, name="protocol", verbose=False)
    sample = loop.fixed_sample(corpus.val)
    assert len(sample) == 50 < len(corpus.val) == h.val_size and h.val_sample_size == 50
    assert [s for s, _ in h.val_points] == [2, 4, 6, 8, 10, 12]  # mid-epoch points and both epoch ends
    assert h.val_points[-1][1] == pytest.approx(evaluate(model, sample, cfg), abs=1e-5)
    assert h.val_loss == h.epoch_val_loss[-1] == pytest.approx(evaluate(model, corpus.val, cfg), abs=1e-5)
    assert h.val_loss != pytest.approx(h.val_points[-1][1], abs=1e-6)  # two sets, kept apart
    labels = [line.get_label() for line in plots.loss_figure(h).axes[0].lines]
    assert f"protocol: validation loss (the same 50 of {len(corpus.val)} held-out sequences at every point)" in labels
    assert f"protocol: validation loss, all {len(corpus.val)} held-out sequences (epoch ends)" in labels


# --- devices and models ---

def test_time_budget_stops_the_run_and_a_larger_one_continues_it(setup, tmp_path, monkeypatch):
    cfg, corpus = setup
    clock = iter(range(10**6))  # each perf_counter call is one second later: a step takes a second
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(clock)))
    cfg = cfg.replace(output_dir=str(tmp_path), epochs=50, time_budget_s=6.0)
    h = fit(cfg, corpus, name="budget", verbose=False)
    assert h.finished and h.step == 6 and h.train_time_s == 6.0, (h.step, h.train_time_s)
    assert len(h.val_points) >= 6, "about TIME_POINTS validation points over the budget"
    again = fit(cfg, corpus, name="budget", verbose=False)
    assert again.step == 6, "a run that spent its budget loads as finished"
    longer = fit(cfg.replace(time_budget_s=10.0), corpus, name="budget", verbose=False)
    assert longer.step == 10 and longer.step_loss[:6] == h.step_loss


def test_non_embedding_parameters_leave_out_the_vocabulary_layers():
    cfg = TrainConfig.quick(embed_size=16, n_blocks=1, n_heads=2, kgram_input_mode="embedding")
    for name in ("lstm_seq", "kgram_mlp_seq", "kvcache_transformer"):
        model = build_model(name, cfg, 100)
        vocab_sized = sum(p.numel() for n, p in model.named_parameters() if "embedding" in n or n.startswith("head"))
        assert count_parameters(model, non_embedding=True) == count_parameters(model) - vocab_sized, name


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


# --- guards for the refactor: one loop for one process, the vocabulary at one boundary ---

def test_the_loop_knows_nothing_of_processes_or_vocabularies():
    import inspect
    from pathlib import Path

    import pico_helpers

    for fn in (loop.train_step, loop.evaluate):
        source = inspect.getsource(fn)
        for word in ("DistributedDataParallel", "all_reduce", "shard", "dist."):
            assert word not in source, f"{fn.__name__} mentions {word}: data parallelism belongs in runs/distributed.py"
    package = Path(pico_helpers.__file__).parent
    readers = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
               if 'getattr(model, "vocab"' in p.read_text(encoding="utf-8")]
    assert readers == [], f"{readers} read model.vocab: ids are mapped in CorpusVocabModel only"
