"""analysis/seeds.py: paired differences checked against intervals and p-values worked out by hand (and, for p, the
closed forms of Student's t with 2 and 4 degrees of freedom), a tiny real over_seeds study (paired initial weights,
a run that really diverges), and timings' wording."""
from __future__ import annotations

import math

import pytest
from conftest import ROOT

from pico_helpers import TrainConfig
from pico_helpers.analysis.seeds import SeedStudy, over_seeds, paired_difference
from pico_helpers.analysis.timings import Timing, machine, speedup, time_repeats, timing

# --- paired_difference against hand arithmetic ---

# Three seeds whose differences b - a are 0.1, 0.2, 0.3.
A3 = {0: 3.0, 1: 3.2, 2: 3.1}
B3 = {0: 3.1, 1: 3.4, 2: 3.4}


def test_three_seeds_match_the_hand_computed_interval_and_p():
    d = paired_difference(A3, B3, "pre-norm", "post-norm")
    # mean = (0.1 + 0.2 + 0.3) / 3 = 0.2
    # sd = sqrt(((-0.1)^2 + 0^2 + 0.1^2) / (3 - 1)) = sqrt(0.01) = 0.1;  se = 0.1 / sqrt(3) = 0.0577350
    # t_{0.975, 2} = 4.302653 (tables);  half width = 4.302653 * 0.0577350 = 0.248414
    se, t_crit = 0.1 / math.sqrt(3), 4.302653
    assert d.n == 3 and d.mean == pytest.approx(0.2, abs=1e-12) and d.sd == pytest.approx(0.1, abs=1e-12)
    assert (d.low, d.high) == (pytest.approx(0.2 - t_crit * se, abs=1e-6), pytest.approx(0.2 + t_crit * se, abs=1e-6))
    assert (d.low, d.high) == (pytest.approx(-0.048414, abs=1e-6), pytest.approx(0.448414, abs=1e-6))
    # t = 0.2 / se = 2 sqrt(3) = 3.4641; with 2 df the two-sided p has a closed form, 1 - t / sqrt(t^2 + 2)
    # = 1 - 3.4641 / sqrt(14) = 1 - 0.925820 = 0.074180
    t = 0.2 / se
    assert d.p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)
    assert d.p == pytest.approx(0.0742, abs=1e-3)
    assert not d.excludes_zero() and d.confidence == 0.95 and d.dropped == ()
    assert d.sentence() == ("no difference detectable with 3 seeds: post-norm minus pre-norm (validation loss) is "
                            "+0.200 nats (95 % CI -0.048 to +0.448, p = 0.074)")


def test_five_seeds_whose_interval_excludes_zero():
    a = {0: 3.00, 1: 3.10, 2: 2.90, 3: 3.05, 4: 2.95}
    b = {0: 3.10, 1: 3.22, 2: 2.98, 3: 3.16, 4: 3.04}  # differences 0.10, 0.12, 0.08, 0.11, 0.09
    d = paired_difference(a, b, "pre", "post")
    # mean 0.10; squared deviations 0 + 0.0004 + 0.0004 + 0.0001 + 0.0001 = 0.001; sd = sqrt(0.001 / 4) = 0.0158114
    # se = 0.0158114 / sqrt(5) = 0.00707107; t_{0.975, 4} = 2.776445; half width = 0.0196324
    assert d.n == 5 and d.mean == pytest.approx(0.10, abs=1e-12) and d.sd == pytest.approx(0.0158114, abs=1e-7)
    assert (d.low, d.high) == (pytest.approx(0.0803676, abs=1e-6), pytest.approx(0.1196324, abs=1e-6))
    # t = 0.10 / 0.00707107 = 10 sqrt(2) = 14.1421; with 4 df, x = t / sqrt(t^2 + 4), p = 1 - x (3 - x^2) / 2
    # = 0.000145128 (two-sided)
    t = 10 * math.sqrt(2)
    x = t / math.sqrt(t * t + 4)
    assert d.p == pytest.approx(1 - x * (3 - x * x) / 2, rel=1e-6)
    assert d.p == pytest.approx(0.000145128, rel=1e-4)
    assert d.excludes_zero()
    assert d.sentence() == ("post minus pre (validation loss): +0.100 nats (95 % CI +0.080 to +0.120, 5 paired "
                            "seeds, p < 0.001)")
    assert "no difference detectable" not in d.sentence()
    assert d.sentence(what="", unit="bits").startswith("post minus pre: +0.100 bits (")
    # a wider interval at a higher confidence, same mean: t_{0.995, 4} = 4.604095
    wide = paired_difference(a, b, confidence=0.99)
    assert wide.high - wide.mean == pytest.approx(4.604095 * 0.0158114 / math.sqrt(5), abs=1e-6)
    assert "99 % CI" in wide.sentence()


def test_missing_diverged_and_non_finite_seeds_are_left_out_of_the_pairs():
    a = {**A3, 3: 3.3, 5: 3.0}  # seed 5 only here
    b = {**B3, 3: None, 4: 2.0, 6: math.nan}  # seed 3 diverged here, seed 4 only here, seed 6 not a number
    a[6] = 3.0
    d = paired_difference(a, b)
    reference = paired_difference(A3, B3)  # the three seeds both finished
    assert d.n == 3 and set(d.dropped) == {3, 4, 5, 6}
    assert (d.mean, d.low, d.high, d.p) == (reference.mean, reference.low, reference.high, reference.p)
    assert "4 unpaired seeds left out" in d.sentence()


@pytest.mark.parametrize("a, b, pairs", [({0: 1.0}, {0: 2.0, 1: 3.0}, 1), ({0: 1.0, 1: None}, {0: 2.0, 1: 3.0}, 1),
                                         ({}, {0: 1.0}, 0)])
def test_fewer_than_two_pairs_is_refused_with_the_reason(a, b, pairs):
    with pytest.raises(ValueError, match=f"need at least 2 paired seeds for an interval, got {pairs}"):
        paired_difference(a, b)


def test_identical_differences_collapse_the_interval_to_the_point():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.5, 2: 3.5})  # exactly 0.5 each (binary fractions)
    assert (d.mean, d.sd, d.low, d.high, d.p) == (0.5, 0.0, 0.5, 0.5, 0.0) and d.excludes_zero()
    same = paired_difference(A3, A3)  # no difference at all: t = 0 / 0, reported as p = 1
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0) and not same.excludes_zero()
    assert same.sentence().startswith("no difference detectable with 3 seeds:")


def test_confidence_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        paired_difference(A3, B3, confidence=95)


# --- a study's table, by hand ---

def test_table_tells_diverged_from_not_run_and_marks_the_baseline():
    scores = {"base": {0: 1.0, 1: 1.1, 2: 1.2}, "wide": {0: 1.5, 1: None, 2: 1.7}, "half": {0: 1.3},
              "lost": {0: None, 1: None, 2: None}}
    study = SeedStudy(runs={}, scores=scores, seeds=(0, 1, 2))
    rows = {line.split(" | ")[0].strip("| "): line for line in study.table("base").splitlines()[2:]}
    assert "| 3 of 3 | 1.100 ± 0.100 | baseline |" in rows["base"]
    # wide - base on seeds 0 and 2: differences 0.5, 0.5 -> mean +0.500, sd 0, the interval is the point
    assert "diverged (1 of 3 seeds)" in rows["wide"] and "+0.500 (+0.500 to +0.500)" in rows["wide"]
    assert "1.300 (1 seed); not run (2 of 3 seeds)" in rows["half"] and "too few paired seeds" in rows["half"]
    assert "diverged (3 of 3 seeds)" in rows["lost"] and "not run" not in rows["lost"]
    assert study.mean("base") == pytest.approx(1.1) and math.isnan(study.mean("lost"))
    assert study.best() == "base" and study.best(lower_is_better=False) == "wide"
    with pytest.raises(ValueError, match="no variant 'nope' in this study; it has 'base'"):
        study.table("nope")


# --- over_seeds: a tiny real study ---

@pytest.fixture(scope="module")
def study(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("seeds")
    base = TrainConfig.quick(input_files=[str(ROOT / "input_files" / "3seqs.txt")], block_size=16, embed_size=8,
                             n_heads=2, n_blocks=1, epochs=1, max_steps_per_epoch=3, eval_every=0, log_every=0,
                             device_id="cpu", output_dir=str(out))
    # learning_rate 1e38: Adam's first update moves every weight by about 1e38, so the next forward pass overflows
    # float32 and the loss is not finite: train() raises Diverged at step 2.
    variants = {"lr 1e-3": base, "lr 3e-3": base.replace(learning_rate=3e-3),
                "lr 1e38": ("kvcache_transformer", base.replace(learning_rate=1e38))}
    return variants, over_seeds(variants, seeds=(0, 1), verbose=False)


def test_over_seeds_pairs_the_variants_of_a_seed(study):
    _, study = study
    assert study.seeds == (0, 1) and set(study.runs) == {(v, s) for v in ("lr 1e-3", "lr 3e-3", "lr 1e38")
                                                          for s in (0, 1)}
    first = {key: run[1].step_loss[0] for key, run in study.runs.items() if run is not None}
    # the first loss comes before any update: one seed's variants (equal but for the learning rate) start alike
    assert first[("lr 1e-3", 0)] == first[("lr 3e-3", 0)] and first[("lr 1e-3", 1)] == first[("lr 3e-3", 1)]
    assert first[("lr 1e-3", 0)] != first[("lr 1e-3", 1)]  # and the seeds differ
    for variant in ("lr 1e-3", "lr 3e-3"):
        for seed in (0, 1):
            model, history = study.runs[(variant, seed)]
            assert history.finished and history.step == 3 and not model.training
            # the default score: the whole held-out set at the run's end (not the curve's fixed sample)
            assert study.scores[variant][seed] == history.val_loss == history.epoch_val_loss[-1]
            assert math.isfinite(history.val_loss)


def test_a_diverged_run_is_reported_as_diverged_not_as_a_number(study):
    _, study = study
    assert study.runs[("lr 1e38", 0)] is None and study.scores["lr 1e38"] == {0: None, 1: None}
    table = study.table("lr 1e-3")
    assert "lr 1e-3" in table and "lr 3e-3" in table and "baseline" in table
    assert "| lr 1e38 | 0 of 2 | diverged (2 of 2 seeds) | too few paired seeds |" in table
    assert study.difference("lr 1e-3", "lr 3e-3").n == 2
    assert study.best() in ("lr 1e-3", "lr 3e-3")


def test_a_rerun_loads_the_finished_runs_and_says_which_run_it_is_on(study, capsys):
    variants, first = study
    finished = {k: v for k, v in variants.items() if k != "lr 1e38"}
    again = over_seeds(finished, seeds=(0, 1), score=lambda model, history, corpus: history.step, verbose=True)
    out = capsys.readouterr().out
    assert "over_seeds: run 1 of 4, lr 1e-3, seed 0" in out and "over_seeds: run 4 of 4, lr 3e-3, seed 1" in out
    assert again.scores == {"lr 1e-3": {0: 3, 1: 3}, "lr 3e-3": {0: 3, 1: 3}}  # no more steps: loaded, not retrained


def test_variants_must_name_a_model_and_a_config():
    with pytest.raises(ValueError, match="variant 'x' must be a TrainConfig or \\(model, TrainConfig\\) with a model "
                                         "name in kgram_mlp_seq, lstm_seq, kvcache_transformer or a function"):
        over_seeds({"x": ("gru", TrainConfig.quick())}, seeds=(0, 1))


def test_a_variant_may_bring_its_own_model(tmp_path):
    # make(config, corpus): a model build_model cannot make (02's one-hot model started as the embedding model)
    from pico_helpers import build_model

    made = []

    def make(cfg, corpus):
        made.append(cfg.seed)
        return build_model("lstm_seq", cfg.replace(embed_size=4), corpus.vocab)
    cfg = TrainConfig.quick(embed_size=8, epochs=1, max_steps_per_epoch=2, log_every=0, output_dir=str(tmp_path))
    study = over_seeds({"tiny LSTM": (make, cfg)}, seeds=(0, 1), verbose=False)
    assert made == [0, 1] and all(study.runs[("tiny LSTM", s)][0].model.embedding.embedding_dim == 4 for s in (0, 1))


# --- timings ---

def test_timing_and_speedup_wording_on_fixed_numbers():
    t = timing([12.3, 11.9, 13.0, 12.5, 12.1], unit="ms")
    assert t == Timing(median=12.3, low=11.9, high=13.0, n=5, unit="ms")
    assert str(t) == "12.3 ms (11.9-13.0, 5 repeats)"
    assert str(timing([0.5, 0.25, 1.0])) == "0.500 s (0.250-1.000, 3 repeats)"
    # paired ratios 72/10 = 7.2, 69/10 = 6.9, 75/10 = 7.5: median 7.2, range 6.9 to 7.5
    assert speedup([72.0, 69.0, 75.0], [10.0, 10.0, 10.0]) == "7.2x (6.9-7.5x over 3 paired repeats)"
    with pytest.raises(ValueError, match="give equally many"):
        speedup([1.0, 2.0], [1.0])


def test_time_repeats_calls_warmup_plus_repeats_times():
    calls = []
    times = time_repeats(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        time_repeats(lambda: None, repeats=0)



def test_machine_names_the_cpu_its_cores_and_threads():
    import os
    from pathlib import Path

    import torch

    text = machine()
    assert f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads" in text
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the model name, as lscpu shows it
        name = next(line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name"))
        assert text.startswith(name)
