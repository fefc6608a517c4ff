"""The benchmark: a quick run produces every row with its ratio, and each baseline computes what its fast path does.

Speed itself is never asserted here (STYLE.md): the numbers live in BENCHMARKS.md.
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from benchmarks.baselines import starter_loop_kgram_forward
from benchmarks.bench import ROW_KEYS
from benchmarks.harness import alternate
from benchmarks.rows_sampling import plain_nucleus_sampling
from pico_helpers.models import KGramMLPSeqModel, TransformerModel
from pico_helpers.sample.nucleus import nucleus_probs, nucleus_sampling
from pico_helpers.training import make_optimizer, next_token_loss


# --- the quick run ---

def _table_rows(report: str) -> list[list[str]]:
    """The data rows of the markdown results table, as lists of cell texts."""
    lines = [line for line in report.splitlines() if line.startswith("| ")]
    header, body = lines[0], lines[1:]
    assert header.startswith("| what | baseline | fast |"), header
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body if not line.startswith("| ---")]


def test_quick_run_prints_and_writes_every_row(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--quick", "--device", "cpu", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = out.read_text()
    rows = _table_rows(report)
    assert len(rows) == len(ROW_KEYS), report
    columns = ["what", "baseline", "fast", "unit", "base", "fast_value", "ratio", "target", "met", "memory"]
    by_what = [dict(zip(columns, cells)) for cells in rows]
    for row in by_what:
        assert row["met"] in ("yes", "no", "n/a") or row["met"].startswith("n/a: "), row  # never "error"
        if row["what"].startswith("Time to the baseline's validation loss"):
            continue  # checked below: at quick sizes the fast side may start below the baseline's final loss
        assert row["ratio"].endswith("x") and float(row["ratio"][:-1].replace(",", "")) > 0, row
        assert row["target"], row
    targets = [row for row in by_what if row["target"] != "report"]
    assert all(row["met"] in ("yes", "no") for row in targets)
    # the time-to-loss row: both sides trained for the budget and were scored, the fast side timed to the target
    ttl = next(row for row in by_what if row["what"].startswith("Time to the baseline's validation loss"))
    assert ttl["unit"] == "s to loss" and float(ttl["base"]) > 0 and ttl["met"] in ("yes", "no"), ttl
    assert ttl["ratio"].endswith("x") or ttl["fast_value"] in ("0", "n/a"), ttl
    assert re.search(r"validation loss at the budget: baseline \d+\.\d+, fast \d+\.\d+", report), report
    # the memory row got its numbers from the --one subprocesses
    memory = next(row for row in by_what if "peak memory" in row["what"])
    assert memory["unit"] == "MB" and "->" in memory["memory"], memory
    for field in ("- date:", "- cpu:", "- cores:", "- torch:", "- threads:", "make bench"):
        assert field in report, field
    for row in by_what:  # the printed table is the written one
        assert row["what"] in r.stdout


# --- the harness ---

def test_alternate_warms_up_then_alternates():
    calls = []
    times = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                      repeats=3, budget_s=60.0, warmup=1)
    assert calls == ["a", "b"] * 4  # one untimed round, then A B A B A B
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_time_to_reach_interpolates_between_validation_points():
    from benchmarks.time_to_loss import time_to_reach

    points = [(0.0, 10.0), (10.0, 6.0), (20.0, 4.0)]  # (clock s, validation loss)
    assert time_to_reach(points, 5.0) == pytest.approx(15.0)  # halfway from 6 to 4
    assert time_to_reach(points, 6.0) == 10.0
    assert time_to_reach(points, 10.5) == 0.0  # below it before training
    assert time_to_reach(points, 3.9) is None  # never reached


def test_held_out_windows_score_every_next_token_pair_once():
    from benchmarks.time_to_loss import _windows

    for n in (1, 2, 127, 128, 129, 300):
        story = list(range(n))
        windows = _windows(story, 128)
        pairs = [(w[i], w[i + 1]) for w in windows for i in range(len(w) - 1)]
        assert pairs == list(zip(story, story[1:])) and all(len(w) <= 128 for w in windows), n


# --- the baselines compute the same function as the fast paths ---

@pytest.mark.parametrize("window", ["aligned", "starter"])
@pytest.mark.parametrize("chunk_size", [1, 0])
def test_starter_loop_equals_the_vectorised_kgram(window, chunk_size):
    torch.manual_seed(0)
    model = KGramMLPSeqModel(vocab_size=50, k=3, embed_size=16, num_inner_layers=1, chunk_size=chunk_size,
                             input_mode="one_hot", window=window)
    idx = torch.randint(0, 50, (7, 3))  # T=7 > k, so both the padded start and full windows are covered
    with torch.no_grad():
        loop = starter_loop_kgram_forward(model, idx)
        fast = model(idx)
    assert loop.shape == fast.shape == (7, 3, 50)
    # The loop multiplies W1 by a real one-hot vector (a dot product over k*V entries, all but k of them
    # exact zeros); the model adds the k gathered columns. Same terms, different summation order: float32
    # rounding, ~1e-7 relative on values of order 0.1-1, so 1e-5 absolute is a wide margin.
    torch.testing.assert_close(loop, fast, rtol=0, atol=1e-5)


def test_starter_loop_refuses_the_embedding_mode():
    model = KGramMLPSeqModel(vocab_size=20, k=2, embed_size=8, input_mode="embedding")
    with pytest.raises(ValueError, match="one_hot"):
        starter_loop_kgram_forward(model, torch.zeros(3, 1, dtype=torch.long))


def test_fused_adam_matches_unfused_adam():
    torch.manual_seed(0)
    fused_model = TransformerModel(50, d_model=16, n_heads=2, n_blocks=1, block_size=16)
    plain_model = copy.deepcopy(fused_model)
    start = copy.deepcopy(fused_model)
    fused = make_optimizer(fused_model, 1e-3)
    if not fused.defaults.get("fused"):
        pytest.skip("this torch has no fused Adam on the CPU; make_optimizer fell back to the default")
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-3, fused=False, foreach=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        idx = torch.randint(0, 50, (12, 3), generator=g)
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            loss = next_token_loss(model, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    moved = max((p - s).abs().max().item() for p, s in zip(fused_model.parameters(), start.parameters()))
    assert moved > 1e-3  # five steps of lr 1e-3 really moved the weights: the comparison below is not vacuous
    # Same formula, different operation order inside the fused kernel: each update (~lr = 1e-3) differs by a
    # few float32 ulps, and adding it to a weight of ~0.02 rounds at ~2e-9; after 5 steps that is ~1e-8
    # (measured: 4e-9). 1e-7 is 10,000x below one update, so a wrong update would still fail.
    for (name, p), q in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def test_plain_nucleus_draws_from_the_fast_paths_distribution():
    # The top-p row's baseline and fast path cut to bit-identical probabilities (tests/test_sampling.py). The fast
    # path draws among the top k when the nucleus ends there, the plain one over all V columns: every draw of both
    # lies in the nucleus, and where the fast path falls back (a wide nucleus) the same seed gives the same ids.
    gen = torch.Generator().manual_seed(11)
    for scale in (8.0, 2.5):  # the top-k cut, then its fallback to the full sort
        logits = torch.randn(4, 50257, generator=gen) * scale  # (B, V)
        nucleus = nucleus_probs(logits, 0.9) > 0  # (B, V)
        for seed in range(3):
            fast = nucleus_sampling(logits, 0.9, generator=torch.Generator().manual_seed(seed))
            plain = plain_nucleus_sampling(logits, 0.9, generator=torch.Generator().manual_seed(seed))
            assert plain.shape == fast.shape == (4,), (scale, seed)
            assert nucleus.gather(1, fast[:, None]).all() and nucleus.gather(1, plain[:, None]).all()
            if scale == 2.5:
                assert torch.equal(plain, fast), (scale, seed)


def test_busy_warning_counts_only_other_processes():
    from benchmarks.report import busy_warning, others_share

    # 10 s of wall time on 2 cores; the machine was busy 12 CPU-s, of which this process used 11.
    share = others_share((100.0, 5.0), (112.0, 16.0), 10.0, 2)
    assert share == pytest.approx(0.05)
    assert busy_warning({"others_cpu_share": 0.01}) == ""
    assert "Other processes used 30%" in busy_warning({"others_cpu_share": 0.30})
    assert busy_warning({}) == ""  # not measurable (no /proc/stat): no claim either way
