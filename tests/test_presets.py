"""The shared runs of presets.py: compare() sweeps, picks and trains each model; trained_transformer() reuses its rate."""
from __future__ import annotations

import pytest

from pico_helpers.data import load_corpus
from pico_helpers.presets import SWEEP_RATES, compare, preset, trained_transformer


def test_compare_picks_the_best_try_and_the_long_transformer_reuses_its_rate(tmp_path, monkeypatch):
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
    long = trained_transformer(corpus, quick=True, verbose=False)
    assert long.learning_rate == results["kvcache_transformer"].learning_rate
    assert long.history.step == 2 * results["kvcache_transformer"].history.step
    assert long.history.val_points[-1][1] == pytest.approx(long.history.epoch_val_loss[-1])
