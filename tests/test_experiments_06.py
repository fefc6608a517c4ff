"""06_experiments' design, read from the notebook without training: paired seeds everywhere, the E1 control, the E2
setting where post-norm should struggle, an E4 grid around its baseline, and run folders the run store accepts."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pico_helpers import TrainConfig, quick_mode, runs_root, tinystories_source
from pico_helpers.analysis.seeds import paired_difference
from pico_helpers.presets import tinystories_valid_source
from pico_helpers.runs.store import check_run_name

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_experiments.ipynb"


def cells() -> list[dict]:
    return json.loads(NOTEBOOK.read_text())["cells"]


def cell_source(needle: str) -> str:
    """The source of the one code cell that contains ``needle``."""
    found = ["".join(c["source"]) for c in cells() if c["cell_type"] == "code" and needle in "".join(c["source"])]
    assert len(found) == 1, f"{len(found)} code cells contain {needle!r}"
    return found[0]


def parameters(monkeypatch, quick: bool) -> dict:
    """The names the parameters cell defines, in quick or full mode (it only builds configs and prints)."""
    monkeypatch.setenv("PICO_QUICK", "1" if quick else "0")
    tagged = [c for c in cells() if "parameters" in c.get("metadata", {}).get("tags", [])]
    namespace = dict(TrainConfig=TrainConfig, quick_mode=quick_mode, runs_root=runs_root,
                     tinystories_source=tinystories_source, tinystories_valid_source=tinystories_valid_source)
    exec("".join(tagged[0]["source"]), namespace)
    return namespace


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_every_comparison_has_seeds_for_an_interval(monkeypatch, capsys, quick):
    p = parameters(monkeypatch, quick)
    assert len(p["SEEDS"]) >= (2 if quick else 3) and len(p["E2_SEEDS"]) >= len(p["SEEDS"])
    assert len(set(p["E2_SEEDS"])) == len(p["E2_SEEDS"]), "a seed twice would pair a run with itself"
    printed = capsys.readouterr().out
    assert re.search(r"E1: .* = \d+ runs of \d+ steps", printed) and "E2: " in printed, "the run counts are printed"


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_the_e1_control_sees_the_same_tokens_per_step_at_the_long_length(monkeypatch, quick):
    p = parameters(monkeypatch, quick)
    e1, control = p["E1"], p["E1_CONTROL"]
    assert p["E1_LONG"] == 4 * e1.block_size == control.block_size
    assert control.batch_size * control.block_size == e1.batch_size * e1.block_size
    assert control.positional == "learned" and control.max_steps_per_epoch == e1.max_steps_per_epoch


def test_e2_runs_where_post_norm_is_said_to_struggle(monkeypatch):
    p = parameters(monkeypatch, quick=False)
    e2 = p["E2"]
    assert e2.n_blocks >= 8 and e2.learning_rate >= 3e-3 and 0 in p["E2_WARMUP"]


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_e4_grids_hold_their_baseline_and_room_on_both_sides(monkeypatch, quick):
    p = parameters(monkeypatch, quick)
    rates = p["E4_LRS"]
    assert list(rates) == sorted(rates) and len(rates) >= 5 and rates[-1] / rates[0] >= 100
    for field, values in p["E4_SHAPES"].items():
        assert getattr(p["E4"], field) in values, f"E4_SHAPES[{field!r}] lacks the baseline's own value"
        assert len(values) >= 2


def test_run_folders_are_plain_and_distinct():
    from pico_helpers import run_names

    name = run_names("e4")
    variants = ["baseline: width 64, 4 heads, 2 blocks", "width 32", "heads 1", "pre-norm, warm-up 30",
                "learned, trained on 256", "lr 0.003"]
    folders = [check_run_name(name(v, 0)) for v in variants]
    assert len(set(folders)) == len(folders) and name("lr 0.003", 0) != name("lr 0.003", 1)


def test_a_paired_cell_reads_as_mean_interval_and_p():
    helpers = {"re": re}
    exec(cell_source("def paired("), helpers)
    d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 2.4, 2: 3.6}, "a", "b")
    assert re.fullmatch(r"\+0\.500 \(\+0\.\d{3} to \+0\.\d{3}\), p 0\.\d{3}", helpers["paired"](d))


def test_the_answer_headings_are_there_in_order():
    heads = [m.group(1) for c in cells() if c["cell_type"] == "markdown"
             for m in [re.match(r"### Answer (E\d):", "".join(c["source"]))] if m]
    assert heads == [f"E{i}" for i in range(1, 8)]
