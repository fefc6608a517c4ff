"""What the notebooks show: markdown tables, result rows and sources for answers.md, and samples."""
from __future__ import annotations

import inspect
import re
from typing import Sequence

from pico_helpers.sample.generate import generate_text

__all__ = ["md_table", "cell_text", "epoch_table", "sample_table", "continues_count", "result_row",
           "show_source", "RESULT_MARK", "RESULT_HEADER", "SOURCE_MARK"]


# --- markdown tables ---

def md_table(header: Sequence, rows: Sequence[Sequence]) -> str:
    """A markdown table from a header and rows, ``|`` escaped, newlines as " ⏎ " (02_kgram_mlp.ipynb on)."""
    def cell(x) -> str:
        return re.sub(r"(?<!\\)\|", r"\\|", str(x)).replace("\n", " ⏎ ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows])


def cell_text(token: str) -> str:
    """A token as a table cell: its repr (spaces and newlines visible), pipes escaped (01_embeddings.ipynb)."""
    return repr(token).replace("|", "\\|")


def epoch_table(history) -> str:
    """One run (a History or its dict form) in markdown: name, size, tokens, time, epoch losses (01_embeddings)."""
    get = history.__getitem__ if isinstance(history, dict) else lambda k: getattr(history, k)
    num = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731  None: no validation split
    epochs = zip(*(get(k) for k in ("epoch_end_step", "epoch_train_loss", "epoch_val_loss")))
    rows = [[e, step, num(tr), num(va)] for e, (step, tr, va) in enumerate(epochs, start=1)]
    name, n_params, tokens, seconds = (get(k) for k in ("model", "n_params", "tokens_seen", "train_time_s"))
    return (f"**{name}**: {n_params:,} parameters, {tokens:,} training tokens, {seconds:.0f} s of training\n\n"
            + md_table(["epoch", "steps so far", "train loss (epoch mean)", "validation loss"], rows))


# --- what answers.md collects: result rows and function sources ---

RESULT_MARK = "<!-- pico:result -->"  # the export gathers these rows into one results table at the top
RESULT_HEADER = ("model", "data", "budget", "validation loss", "one sample")
SOURCE_MARK = "<!-- pico:source {} -->"  # the export shows a link to the file and lines instead of the code


def result_row(model: str, data: str, budget: str, val_loss: float, sample: str):
    """One row of answers.md's results table (a one-row table in the notebook), e.g. ``display(result_row("Transformer",
    "TinyStories", "20 min, 2.1M tokens", 2.61, text))``; ``sample`` is cut to 100 characters. Used in 01 to 06."""
    from IPython.display import Markdown

    sample = sample if len(sample) <= 100 else sample[:99] + "…"
    return Markdown(f"{RESULT_MARK}\n" + md_table(RESULT_HEADER, [[model, data, budget, f"{val_loss:.3f}", sample]]))


def show_source(obj):
    """The source of a function or class as a Python block headed by its file and lines (IPython Markdown);
    answers.md shows only a link to those lines. Used where the implementation is the answer (02 to 05)."""
    from IPython.display import Markdown

    from pico_helpers.workbook.notebook_answers import repo_path

    lines, start = inspect.getsourcelines(obj)
    path, end, code = repo_path(inspect.getsourcefile(obj)), start + len(lines) - 1, "".join(lines).rstrip()
    fence = "````" if "```" in code else "```"
    return Markdown(f"{SOURCE_MARK.format(f'{path}#L{start}-L{end}')}\n`{path}` lines {start}-{end}\n\n"
                    f"{fence}python\n{code}\n{fence}")


# --- samples ---

def continues_count(prompt: str, text: str) -> int:
    """How many numbers after ``prompt`` in ``text`` (prompt included) continue its count: last + 1, + 2, ..."""
    last, words = int(prompt.split()[-1]), text[len(prompt):].split()
    return next((k for k, word in enumerate(words) if word != str(last + k + 1)), len(words))


def sample_table(model, enc, prompt: str, max_new_tokens: int = 20, count: bool = False, seed: int = 0) -> str:
    """The starter's three continuations of ``prompt`` (greedy, top-p 0.95 and 1.0, ``seed``) as a markdown table;
    ``count`` adds a column of continues_count, for prompts such as "0 1 2 3 4". Used in 01_embeddings.ipynb."""
    rows = []
    for label, top_p in (("greedy", None), ("top-p 0.95", 0.95), ("top-p 1.0", 1.0)):
        text, _ = generate_text(model, enc, prompt, max_new_tokens=max_new_tokens, top_p=top_p, seed=seed)
        rows.append([label, text] + ([continues_count(prompt, text)] if count else []))
    return md_table(["decoding", "sample"] + (["numbers continuing the count"] if count else []), rows)
