"""The shared runs of presets.py: compare() sweeps, picks and trains each model; trained_transformer() trains and loads
long_config()."""
from __future__ import annotations

import pytest

from pico_helpers.data import load_corpus
from pico_helpers.presets import LONG_RUN, SWEEP_RATES, compare, long_config, preset, trained_transformer


def test_compare_picks_the_best_try_and_saved_runs_load(tmp_path, monkeypatch):
    monkeypatch.setenv("PICO_RUNS_DIR", str(tmp_path))
    config = preset("compare_tinystories", quick=True)
    corpus = load_corpus(config)
    results = compare(corpus, quick=True, verbose=False)
    assert list(results) == list(SWEEP_RATES)
    for name, run in results.items():
        assert list(run.sweep) == list(SWEEP_RATES[name][:2])  # quick mode: two rates
        assert run.learning_rate == min(run.sweep, key=lambda rate: run.sweep[rate])  # the lowest validation loss
        assert run.history.finished and run.history.step == config.epochs * config.max_steps_per_epoch
        for rate in run.sweep:
            assert (tmp_path / "quick" / "compare" / f"{name}_try_lr{rate:g}" / "checkpoint.pt").is_file()
    again = compare(corpus, quick=True, verbose=False)  # the saved runs load: nothing is trained again
    assert all(again[n].history.step_loss == results[n].history.step_loss for n in results)
    assert all(again[n].history.wall_time_s == results[n].history.wall_time_s for n in results)


def test_the_trained_transformer_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("PICO_RUNS_DIR", str(tmp_path))
    quick = preset("compare_tinystories", quick=True)
    long = trained_transformer(quick=True, verbose=False)
    assert long.history.finished and long.history.step == 2 * quick.epochs * quick.max_steps_per_epoch
    assert long.history.val_points[-1][1] == pytest.approx(long.history.epoch_val_loss[-1])
    assert long.corpus.train is not None and long.model.vocab is long.corpus.vocab
    again = trained_transformer(quick=True, verbose=False)
    assert again.history.step_loss == long.history.step_loss and again.history.wall_time_s == long.history.wall_time_s


def test_the_full_long_config_is_the_comparisons_with_long_run_changes():
    compare_config, config = preset("compare_tinystories", quick=False), long_config(quick=False)
    assert {k: getattr(config, k) for k in LONG_RUN} == LONG_RUN
    changed = {k for k, v in config.to_dict().items() if compare_config.to_dict()[k] != v}
    assert changed <= set(LONG_RUN)  # the same data, schedule and sizes otherwise
