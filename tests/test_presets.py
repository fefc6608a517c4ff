"""The shared runs of presets.py: compare() sweeps (a grid that grows past an edge), picks on validation, trains each
model on paired seeds and reports the test set; trained_transformer() trains and loads long_config()."""
from __future__ import annotations

import math

import pytest

from pico_helpers import presets
from pico_helpers.data import load_corpus
from pico_helpers.presets import LONG_RUN, SWEEP_RATES, compare, long_config, preset, trained_transformer
from pico_helpers.workbook.comparison import (MAX_EXTEND, best_rate, bracketed, comparison_table, next_rate, sweep,
                                              sweep_cell, sweep_table)


# --- the sweep's grid: stubs whose best rate is known ---

def bowl(best: float, diverge_above: float = math.inf):
    """A stub try: loss (log10 rate - log10 best)^2 + 3, None (diverged) above ``diverge_above``; records its calls."""
    calls = []

    def try_rate(rate):
        calls.append(rate)
        return None if rate > diverge_above else (math.log10(rate) - math.log10(best)) ** 2 + 3.0
    return try_rate, calls


def test_the_ladder_steps_1_2_5_and_off_ladder_rates_join_it():
    assert [next_rate(r, up=True) for r in (1e-3, 2e-3, 5e-3, 3e-3)] == [2e-3, 5e-3, 1e-2, 5e-3]
    assert [next_rate(r, up=False) for r in (1e-3, 2e-3, 5e-3, 3e-3)] == [5e-4, 1e-3, 2e-3, 2e-3]
    with pytest.raises(ValueError, match="must be > 0"):
        next_rate(0.0, up=True)


def test_a_grid_that_brackets_the_best_is_not_extended():
    try_rate, calls = bowl(best=1e-2)
    losses = sweep(try_rate, (5e-3, 1e-2, 2e-2))
    assert calls == [5e-3, 1e-2, 2e-2] and best_rate(losses) == 1e-2 and bracketed(losses)


def test_a_best_rate_at_the_top_edge_extends_the_grid_upwards_until_it_is_inside():
    try_rate, calls = bowl(best=5e-2)  # the grid's top, 2e-2, looks best: 5e-2 is tried, then 1e-1 to bracket it
    losses = sweep(try_rate, (5e-3, 1e-2, 2e-2))
    assert calls == [5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
    assert best_rate(losses) == 5e-2 and bracketed(losses) and list(losses) == sorted(losses)


def test_a_best_rate_at_the_bottom_edge_extends_downwards():
    try_rate, calls = bowl(best=1e-3)
    losses = sweep(try_rate, (2e-3, 5e-3, 1e-2))
    assert calls[3:] == [1e-3, 5e-4] and best_rate(losses) == 1e-3 and bracketed(losses)


def test_the_extension_stops_at_its_limit_and_the_edge_stays_visible():
    try_rate, calls = bowl(best=10.0)  # far above any rate tried: still at the edge after MAX_EXTEND more
    losses = sweep(try_rate, (1e-3, 2e-3, 5e-3))
    assert len(calls) == 3 + MAX_EXTEND and best_rate(losses) == max(losses) and not bracketed(losses)
    assert "no: at an edge" in sweep_table({"stub": (losses, best_rate(losses))})


def test_a_diverged_rate_above_the_best_brackets_it_and_all_diverged_goes_lower():
    try_rate, calls = bowl(best=1.0, diverge_above=1.5e-2)  # 2e-2 diverges, so 1e-2 is the best, inside the grid
    losses = sweep(try_rate, (5e-3, 1e-2, 2e-2))
    assert calls == [5e-3, 1e-2, 2e-2] and losses[2e-2] is None and best_rate(losses) == 1e-2 and bracketed(losses)
    try_rate, calls = bowl(best=1e-4, diverge_above=2e-3)  # every rate of the grid diverges: try lower ones
    losses = sweep(try_rate, (5e-3, 1e-2, 2e-2))
    assert calls[3:] == [2e-3, 1e-3] and best_rate(losses) == 1e-3 and not bracketed(losses)


def test_untried_and_diverged_rates_read_differently():
    losses = {1e-3: 4.25, 2e-3: None}
    cells = [sweep_cell(losses, r, chosen=1e-3) for r in (1e-3, 2e-3, 5e-3)]
    assert cells == ["**4.250**", "diverged", "not tried"]
    table = sweep_table({"A": (losses, 1e-3), "B": ({5e-3: 3.5, 1e-3: 3.6, 1e-2: 3.7}, 5e-3)})
    assert "| A | **4.250** | diverged | not tried |" in table and "| B | 3.600 | not tried | **3.500** | 3.700 | yes |" \
        in table


def test_the_comparison_table_pairs_seeds_with_the_baseline():
    rows = {"T": ([], {0: 3.0, 1: 3.2, 2: 3.1}, {0: 3.05, 1: 3.25, 2: 3.15}),
            "L": ([], {0: 3.1, 1: 3.4, 2: 3.4}, None)}
    table = comparison_table([], rows, baseline="T")
    # L minus T: differences 0.1, 0.2, 0.3: mean 0.2, 95 % CI 0.2 -+ 4.3027 * 0.1 / sqrt(3) (test_seeds.py)
    assert "| L | 3.300 ± 0.173 | +0.200 (-0.048 to +0.448), p = 0.074 | no test set |  |" in table
    assert "| T | 3.100 ± 0.100 | baseline | 3.150 ± 0.100 | baseline |" in table


# --- compare() on a tiny corpus ---

def test_compare_picks_the_best_try_then_trains_paired_seeds_that_load_again(tmp_path, monkeypatch):
    monkeypatch.setenv("PICO_RUNS_DIR", str(tmp_path))
    monkeypatch.setitem(SWEEP_RATES, "kgram_mlp_seq", (2e-2, 5e-2, 1e-1))  # near its best in 5 steps: fewer tries
    config = preset("compare_tinystories", quick=True)
    corpus = load_corpus(config)
    results = compare(corpus, quick=True, names=("kgram_mlp_seq",), seeds=(0, 1), verbose=False)
    run = results["kgram_mlp_seq"]
    assert set(SWEEP_RATES["kgram_mlp_seq"]) <= set(run.sweep) and len(run.sweep) <= 3 + MAX_EXTEND
    assert run.learning_rate == best_rate(run.sweep)  # chosen on the validation losses of the tries
    assert bracketed(run.sweep) or len(run.sweep) == 3 + MAX_EXTEND  # inside the grid, unless out of extensions
    assert set(run.seeds) == {0, 1} and run.model is run.seeds[0][0] and run.history is run.seeds[0][1]
    for seed, (model, history) in run.seeds.items():
        assert history.finished and history.step == config.epochs * config.max_steps_per_epoch
        assert run.val_losses[seed] == history.val_loss
    assert run.seeds[0][1].step_loss != run.seeds[1][1].step_loss  # another seed: other weights and batches
    assert run.corpora[0] is corpus and run.corpora[1].test is not None
    tests = run.test_losses()  # the same test stories for both seeds, scored once and remembered
    assert set(tests) == {0, 1} and all(v > 0 for v in tests.values()) and run.test_losses() is tests
    assert run.corpora[0].test.tinystories == run.corpora[1].test.tinystories
    folder = tmp_path / "quick" / "compare"
    assert all((folder / f"kgram_mlp_seq_try1ep_lr{r:g}" / "checkpoint.pt").is_file() for r in run.sweep)
    again = compare(corpus, quick=True, names=("kgram_mlp_seq",), seeds=(0, 1), verbose=False)["kgram_mlp_seq"]
    assert again.sweep == run.sweep and again.val_losses == run.val_losses  # the saved runs load: nothing retrains
    assert again.history.wall_time_s == run.history.wall_time_s


def test_the_budgets_fit_the_workbooks_time():
    # compare() in full mode: at most 3 + MAX_EXTEND tries per model, then one run per seed; under 30 minutes of
    # training steps (04_transformer.ipynb states the total with evaluations)
    steps_s = sum((len(SWEEP_RATES[n]) + MAX_EXTEND) * presets.SWEEP_S + len(presets.SEEDS) * presets.BUDGET_S
                  for n in presets.COMPARE_MODELS)
    assert len(presets.SEEDS) >= 3 and steps_s <= 30 * 60
    assert all(len(grid) >= 3 for grid in SWEEP_RATES.values())  # a grid with an inside


# --- the trained Transformer ---

def test_the_trained_transformer_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("PICO_RUNS_DIR", str(tmp_path))
    quick = preset("compare_tinystories", quick=True)
    long = trained_transformer(quick=True, verbose=False)
    assert long.history.finished and long.history.step == 2 * quick.epochs * quick.max_steps_per_epoch
    assert long.history.val_loss == long.history.epoch_val_loss[-1]
    assert long.corpus.train is not None and long.model.vocab is long.corpus.vocab and long.corpus.test is not None
    again = trained_transformer(quick=True, verbose=False)
    assert again.history.step_loss == long.history.step_loss and again.history.wall_time_s == long.history.wall_time_s


def test_the_full_long_config_is_the_comparisons_with_long_run_changes():
    compare_config, config = preset("compare_tinystories", quick=False), long_config(quick=False)
    assert {k: getattr(config, k) for k in LONG_RUN} == LONG_RUN
    changed = {k for k, v in config.to_dict().items() if compare_config.to_dict()[k] != v}
    assert changed <= set(LONG_RUN)  # the same data (test stories included), schedule and sizes otherwise
    assert config.test_split == compare_config.test_split > 0
