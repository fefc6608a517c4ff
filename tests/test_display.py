"""The notebooks' display helpers: markdown tables, run and epoch summaries, samples and the median timer."""
import re
from types import SimpleNamespace

import pytest
import torch

import pico_helpers.workbook.display as display
from conftest import ROOT
from pico_helpers.workbook import (cell_text, continues_count, epoch_table, md_table,
                                   sample_table)


def cells_of(line: str) -> list[str]:
    """The cells of one markdown table row, split on the pipes that are not escaped (the reference parser)."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


# --- md_table ---

def test_md_table_header_alignment_and_rows():
    table = md_table(["model", "loss"], [["lstm", 2.5], ["kgram", 3]])
    assert table.split("\n") == ["| model | loss |", "| --- | --- |", "| lstm | 2.5 |", "| kgram | 3 |"]


def test_md_table_escapes_pipes_and_newlines_so_every_row_keeps_its_cells():
    rows = [["a|b", "line 1\nline 2"], ["already \\| escaped", ""]]
    lines = md_table(["x | y", "text"], rows).split("\n")
    assert len(lines) == 4  # a newline in a cell never starts a new row
    assert [len(cells_of(line)) for line in lines if "---" not in line] == [2, 2, 2]
    assert cells_of(lines[0]) == ["x \\| y", "text"]
    assert cells_of(lines[2]) == ["a\\|b", "line 1 ⏎ line 2"]
    assert cells_of(lines[3]) == ["already \\| escaped", ""]  # not escaped twice


def test_cell_text_shows_the_token_and_fits_in_md_table():
    assert cell_text(" the") == "' the'"
    assert cell_text("\n") == "'\\n'"
    assert cell_text("|") == "'\\|'"
    assert cells_of(md_table(["token"], [[cell_text("a|b")]]).split("\n")[2]) == ["'a\\|b'"]


# --- run and epoch tables, from the History dataclass or its dict form ---

def history_dict(**changes):
    h = {"model": "lstm_3seqs", "n_params": 12345, "step_loss": [3.0, 2.5, 2.0, 1.5], "epoch_end_step": [2, 4],
         "epoch_train_loss": [2.75, 1.75], "epoch_val_loss": [2.9, 1.95], "tokens_seen": 20000,
         "train_time_s": 4.0, "tokens_per_s": 5000.0}
    return {**h, **changes}


@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "attributes"])
def test_epoch_table(as_object):
    h = history_dict()
    text = epoch_table(SimpleNamespace(**h) if as_object else h)
    head, table = text.split("\n\n")
    assert head == "**lstm_3seqs**: 12,345 parameters, 20,000 training tokens, 4 s of training"
    assert table.split("\n")[2:] == ["| 1 | 2 | 2.750 | 2.900 |", "| 2 | 4 | 1.750 | 1.950 |"]


# --- samples ---

def test_continues_count():
    assert continues_count("0 1 2 3 4", "0 1 2 3 4 5 6 8 9") == 2
    assert continues_count("7 8", "7 8 9 10 11") == 3
    assert continues_count("7 8", "7 8\n\n") == 0


def test_sample_table_asks_for_the_starter_three_decodings(monkeypatch):
    calls = []

    def fake_generate_text(model, enc, prompt, max_new_tokens, top_p, seed):
        calls.append((top_p, max_new_tokens, seed))
        return prompt + (" 5 6 7" if top_p is None else " 5 9"), ""

    monkeypatch.setattr(display, "generate_text", fake_generate_text)
    lines = sample_table("model", "enc", "3 4", max_new_tokens=6, count=True, seed=3).split("\n")
    assert calls == [(None, 6, 3), (0.95, 6, 3), (1.0, 6, 3)]
    assert cells_of(lines[0]) == ["decoding", "sample", "numbers continuing the count"]
    assert [cells_of(line) for line in lines[2:]] == [["greedy", "3 4 5 6 7", "3"], ["top-p 0.95", "3 4 5 9", "1"],
                                                     ["top-p 1.0", "3 4 5 9", "1"]]


def test_sample_table_with_a_real_model():
    from pico_helpers.models import LSTMSeqModel

    class CharEnc:
        def encode_ordinary(self, text):
            return [ord(c) - 32 for c in text]

        def decode(self, ids):
            return "".join(chr(i + 32) for i in ids)

    torch.manual_seed(0)
    lines = sample_table(LSTMSeqModel(95, 8, 8), CharEnc(), "ab", max_new_tokens=5).split("\n")
    assert len(lines) == 5 and [cells_of(line)[0] for line in lines[2:]] == ["greedy", "top-p 0.95", "top-p 1.0"]
    assert all(cells_of(line)[1].startswith("ab") for line in lines[2:])


# --- the timer ---

# --- result rows and sources, which answers.md collects ---

def test_result_row_is_a_marked_one_row_table_with_a_short_escaped_sample():
    from pico_helpers import result_row

    text = result_row("Transformer", "TinyStories", "20 min", 2.71828, "Once | upon\n" + "a" * 200).data
    mark, *table = text.split("\n")
    assert mark == display.RESULT_MARK and len(table) == 3
    assert cells_of(table[0]) == list(display.RESULT_HEADER)
    row = cells_of(table[2])
    assert row[:4] == ["Transformer", "TinyStories", "20 min", "2.718"]
    assert row[4].startswith("Once \\| upon ⏎ aaa") and row[4].endswith("…") and len(row[4]) < 110


def test_show_source_names_the_file_and_the_real_lines():
    from pico_helpers import RMSNorm, show_source

    text = show_source(RMSNorm).data
    where = re.match(r"<!-- pico:source (\S+)#L(\d+)-L(\d+) -->\n`(\S+)` lines (\d+)-(\d+)\n", text)
    assert where and where.group(1) == where.group(4) == "pico_helpers/models/transformer.py"
    start, end = int(where.group(2)), int(where.group(3))
    lines = (ROOT / where.group(1)).read_text(encoding="utf-8").split("\n")[start - 1:end]
    assert lines[0].startswith("class RMSNorm") and "```python\n" + "\n".join(lines).rstrip() + "\n```" in text
