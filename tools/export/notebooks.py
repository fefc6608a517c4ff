"""Reading the notebooks: the expected answers, ``### Answer Q2.1`` cells, executed copies and their stale cells."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pico_helpers.workbook.notebook_answers import repo_path

__all__ = ["EXPECTED_ANSWERS", "ANSWER_ID", "Answer", "Notebook", "find_answers", "load_notebooks", "clean_stream_text",
           "cell_key"]

# The answers the course asks for, per notebook (ids follow the course's numbering).
EXPECTED_ANSWERS: dict[str, tuple[tuple[str, str], ...]] = {
    "01_embeddings": (("Q1.1", "sanity check (LSTM on 3seqs)"), ("Q1.2", "LSTM on TinyStories"),
                      ("Q1.3", "why torch.nn.Embedding is useful"), ("Q1.4", "what the embedding inspector shows")),
    "02_kgram_mlp": (("Q2.1", "the K-gram window and what the off-by-one costs"),
                     ("Q2.2", "one-hot against embedding inputs"),
                     ("Q2.3", "per-step against per-epoch loss (tiny epochs vs full epochs)"),
                     ("Q2.4", "speed of the vectorised model and what chunk_size does to memory")),
    "03_lstm": (("Q1.5", "the LSTM on both datasets with validation loss"),
                ("Q1.6", "what the recurrent state buys over a fixed window")),
    "04_transformer": (("Q4.1", "the model piece by piece"), ("Q4.2", "training on 3seqs and TinyStories"),
                       ("Q4.3", "the three models compared on the same data and budget"),
                       ("Q4.4", "the KV cache: equality and speed-up")),
    "05_sampling": (("Q3.1", "nucleus sampling implemented and checked"),
                    ("Q3.2", "greedy against top-p samples with diversity and repetition measures"), ("Q3.3", "what p does")),
    "06_experiments": (("E1", "positional variants"), ("E2", "pre-norm against post-norm"),
                       ("E3", "underfitting and overfitting"), ("E4", "a small hyperparameter study"),
                       ("E5", "attention maps of individual heads"), ("E6", "embedding neighbours and clusters"),
                       ("E7", "training on one more dataset")),
    "07_monosemanticity": (("Q7.1", "does a sparse autoencoder stand in for the model"),
                           ("Q7.2", "sparsity against faithfulness over k"),
                           ("Q7.3", "residual stream against MLP layer: which features are easier to read"),
                           ("Q7.4", "how often features fire"), ("Q7.5", "naming features from their top contexts"),
                           ("Q7.6", "the course's annotation made from SAE features")),
}

ANSWER_ID = r"(?:Q\d+\.\d+|E\d+)"  # Q2.1 (a course question) or E3 (an experiment), as a regex
_HEADING = re.compile(r"^(#{1,6})\s+answer\b\s*(.*)$", re.IGNORECASE)
_HEADING_ID = re.compile(rf"^({ANSWER_ID})(?!\w|\.\d)\s*[:.\-\u2013\u2014]?\s*(.*)$", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_PLACEHOLDER = re.compile(r"\bTODO\b|_your answer here_|\*your answer here\*", re.IGNORECASE)


# --- answers in a source notebook ---

@dataclass
class Answer:
    """One answer cell: id, title, its notebook's stem, its text (heading removed) and the code cells above it."""

    id: str
    title: str
    notebook: str
    cell_index: int
    body: str
    attachments: dict = field(default_factory=dict)
    evidence_cells: list[int] = field(default_factory=list)

    @property
    def unanswered(self) -> bool:
        """True while the body is empty or still holds a placeholder (TODO, _Your answer here_, ...)."""
        text = self.body.strip()
        return not text or text in ("...", "\u2026") or bool(_PLACEHOLDER.search(text))


def _parse_heading(line: str):
    """``### Answer Q2.1: title`` -> (level, id, title); (level, None, rest) if the id is malformed; None."""
    if not (m := _HEADING.match(line.strip())):
        return None
    level, rest = len(m.group(1)), m.group(2).strip()
    if not (m_id := _HEADING_ID.match(rest)):
        return level, None, rest
    return level, m_id.group(1).upper(), re.sub(r"\s+#+$", "", m_id.group(2)).strip()  # '### x ###' closes


def find_answers(nb, stem: str, warnings: list[str]) -> list[Answer]:
    """The answer cells of the SOURCE notebook ``nb`` in order, each with the code cells above it as its evidence."""
    answers, pending = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            pending += [i] if cell.cell_type == "code" else []
            continue
        lines = cell.source.strip("\n").split("\n")  # nbformat.read joins a cell's lines
        parsed = _parse_heading(lines[0])
        if parsed is None or (parsed[1] is None and parsed[0] != 3):
            if later := [ln for ln in lines[1:] if (p := _parse_heading(ln)) and p[1]]:
                warnings.append(f"{stem}: markdown cell {i} has '{later[0].strip()}' below its first line; the export only "
                                "reads an answer heading on a cell's FIRST line: split the cell or move the heading up")
        elif parsed[1] is None:
            warnings.append(f"{stem}: cell {i} heading '{lines[0].strip()}' has no answer id the export understands; "
                            "write it as '### Answer Q2.1: title' or '### Answer E3: title'")
        else:
            if parsed[0] != 3:
                warnings.append(f"{stem}: answer {parsed[1]} uses a level-{parsed[0]} heading; the workbook's "
                                f"convention is '### Answer {parsed[1]}' (exported anyway)")
            body = "\n".join(lines[1:]).strip("\n")
            answers.append(Answer(parsed[1], parsed[2], stem, i, body, dict(cell.get("attachments") or {}), pending))
            pending = []
    return answers


def clean_stream_text(text: str) -> str:
    """Printed text as a terminal shows it at the end: no ANSI colours, a \\r-redrawn line (tqdm) in its last state."""
    lines = [([p for p in line.split("\r") if p.strip()] or [""])[-1].rstrip()
             for line in _ANSI.sub("", text.replace("\r\n", "\n")).split("\n")]
    return "\n".join(lines).rstrip("\n")


# --- a source notebook with its executed copy ---

@dataclass
class Notebook:
    """A source notebook with its executed copy (``ran`` False when there is none or it has no outputs)."""

    stem: str
    path: Path
    nb: object
    ran: bool = False
    stale: dict = field(default_factory=dict)  # source cell index -> reason
    run_meta: dict | None = None
    ran_cells: dict = field(default_factory=dict)  # cell key -> executed cell, in the executed order


def cell_key(cell, index: int) -> str:
    """How a cell is matched between the source and the executed copy: its id (its index when it has none)."""
    return cell.get("id") or f"#{index}"


def _read_notebook(path: Path, fix: str):
    """``nbformat.read`` with one error that names the notebook and says ``fix`` (malformed JSON, a bad schema)."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)  # read lets some schema errors through, to fail later on a cell
        return nb
    except Exception as err:  # NotJSONError, ValidationError, TypeError...: nbformat raises many kinds
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{repo_path(path)} is not a valid notebook ({type(err).__name__}: {first}); {fix}") from None


def load_notebooks(source_dir: Path, executed_dir: Path, warnings: list[str]) -> list[Notebook]:
    """Every source notebook NN_name.ipynb with its executed copy, its run metadata and its stale cells."""
    notebooks = []
    for path in sorted(source_dir.glob("[0-9][0-9]_*.ipynb")):
        entry, copy = Notebook(path.stem, path, _read_notebook(path, "repair it in Jupyter or restore it with "
                                                                    "`git checkout -- <file>`")), executed_dir / path.name
        why = "has no executed copy"
        if copy.is_file():
            executed = _read_notebook(copy, "delete it and run the notebook again (`make workbook`)")
            why = "has an executed copy without outputs"
            entry.ran_cells = {cell_key(c, i): c for i, c in enumerate(executed.cells)}
            entry.ran = any(c.get("outputs") or c.get("execution_count") is not None
                            for c in executed.cells if c.cell_type == "code")
            entry.run_meta = dict(executed.metadata.get("pico") or {}) or None
        if entry.ran:
            _check_stale(entry, copy.stat().st_mtime < path.stat().st_mtime, warnings)
        else:
            warnings.append(f"{path.stem}: {why} in {repo_path(executed_dir)}/ (not executed): its answers lack "
                            f"evidence; run `make workbook` (or `python -m tools.run_workbook --only {path.stem[:2]}`)")
        notebooks.append(entry)
    warnings += [f"{repo_path(extra)} has no source notebook in {repo_path(source_dir)}/; skipped" for extra in
                 sorted(executed_dir.glob("[0-9][0-9]_*.ipynb")) if not (source_dir / extra.name).is_file()]
    return notebooks


def _check_stale(entry: Notebook, older: bool, warnings: list[str]) -> None:
    """Mark source code cells whose executed copy is missing or ran other code (``older``: the copy is older)."""
    changed, added = [], []
    for i, cell in ((i, c) for i, c in enumerate(entry.nb.cells) if c.cell_type == "code"):
        ran = entry.ran_cells.get(key := cell_key(cell, i))
        if ran is None or ran.cell_type != "code":
            entry.stale[i] = "this cell is not in the executed copy (added after the run): no outputs"
            added.append(f"{key} (cell {i})")
        elif ran.source.strip() != cell.source.strip():
            entry.stale[i] = "this cell's code changed after the run: the outputs below may be stale"
            changed.append(f"{key} (cell {i})")
    if changed:
        when = " The outputs are older than the code (the executed copy is older than the notebook)." if older else ""
        warnings.append(f"{entry.stem}: code changed since execution in cell(s) {', '.join(changed)}; their "
                        f"outputs are stale.{when} Re-run the notebook to refresh them.")
    if added:
        warnings.append(f"{entry.stem}: cell(s) {', '.join(added)} are missing from the executed copy "
                        "(added after the run): no outputs for them; re-run the notebook")
