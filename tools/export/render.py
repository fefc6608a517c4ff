"""One answer's section of answers.md: its heading, the outputs of the code cells above it, then its text."""
from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pico_helpers.workbook.display import RESULT_MARK, SOURCE_MARK
from pico_helpers.workbook.notebook_answers import ROOT, repo_path
from tools.export.notebooks import Answer, Notebook, cell_key, clean_stream_text

__all__ = ["Renderer", "source_link", "anchor", "EVIDENCE_LINE", "UNANSWERED", "QUICK_NOTE", "APPENDIX"]

EVIDENCE_LINE = "**Evidence** from"
UNANSWERED = "_Unanswered so far._"
# The answer text is written for the full run; in quick mode the figures above it are smoke-sized.
QUICK_NOTE = "> Quick run: the evidence above comes from smoke-sized runs; the text describes the full run."
MAX_LOG_LINES = 8  # longer printed text is a training log: it stays in the notebook
APPENDIX = "appendix.md"  # beside the figures in answers_files/: every answer's tables and logs, linked from it
_NOT_IN_ANCHOR = re.compile(r"[^\w\- ]")  # GitHub's heading anchor: lower case, these dropped, spaces as "-"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "_(interactive widget: open the notebook)_"
LIVE_MARK = "pico_live"  # the live training plot's output metadata (pico_helpers/analysis/plots.py): never evidence
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|")  # a tqdm bar's text, e.g. "x:  40%|####      | 24/60 [00:03<00:04]"
IMAGE_MIMES = (("image/png", "png"), ("image/jpeg", "jpg"), ("image/svg+xml", "svg"))
_SOURCE = re.compile(re.escape(SOURCE_MARK).replace(r"\{\}", r"(\S+)"))  # show_source's output: a link instead


def _text_block(text: str) -> str:
    """Printed text as a code block, or one line for a log longer than MAX_LOG_LINES."""
    if (n := text.count("\n") + 1) > MAX_LOG_LINES:
        return f"_({n} lines of log omitted; see the notebook)_"
    fence = "`" * (max((len(m) for m in re.findall(r"`{3,}", text)), default=2) + 1)
    return f"{fence}text\n{text}\n{fence}"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces as "-"."""
    return _NOT_IN_ANCHOR.sub("", heading.lower()).replace(" ", "-")


def _image(bundle: dict):
    """(file extension, bytes) of the first image in a mime bundle, or None."""
    for mime, ext in IMAGE_MIMES:
        if mime in bundle:
            return ext, bundle[mime].encode("utf-8") if ext == "svg" else base64.b64decode(bundle[mime])
    return None


def _progress_only(out: dict) -> bool:
    """True for the live training plot or a progress bar: they say nothing once the cell is done."""
    data = out.get("data", {})
    return bool(out.get("metadata", {}).get(LIVE_MARK)) or (WIDGET_MIME in data
                                                          and bool(_PROGRESS_BAR.search(data.get("text/plain", ""))))


def _merged_outputs(ran) -> list:
    """The outputs of an executed code cell without live plots and progress bars, consecutive prints to one stream
    merged as a notebook shows them (a run's log lines, printed between its live plot's redraws, are one log)."""
    outputs = []
    for out in ran.get("outputs", []) if ran is not None and ran.cell_type == "code" else []:
        if _progress_only(out):
            continue
        last = outputs[-1] if outputs else {}
        if out.get("output_type") == last.get("output_type") == "stream" and last.get("name") == out.get("name"):
            outputs[-1] = {**last, "text": last["text"] + out.get("text", "")}
        else:
            outputs.append(out)
    return outputs


def _is_evidence(out: dict) -> bool:
    """False for a print to stderr that holds only warnings or nothing: a cell of those shows no evidence."""
    return out.get("output_type") != "stream" or (out.get("name") != "stderr"
                                                  and bool(clean_stream_text(out.get("text", ""))))


def source_link(ref: str, out_dir: Path) -> str:
    """show_source's ``path#Lm-Ln`` (relative to the repository) as a link that works from ``out_dir``, the folder
    answers.md is written to: ``../pico_helpers/...`` from build/."""
    path, hash_, lines = ref.partition("#")
    try:
        target = Path(os.path.relpath(ROOT / path, out_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        target = (ROOT / path).as_posix()
    return f"[{ref}]({target}{hash_}{lines})"


@dataclass
class Renderer:
    """Renders answer sections into ``out_dir``'s answers.md, collecting figures {file name: bytes} and warnings."""

    out_dir: Path
    warnings: list[str]
    figures: dict = field(default_factory=dict)
    appendix: list = field(default_factory=list)  # sections of answers_files/appendix.md, one per answer

    def _chunk(self, out: dict, entry: Notebook, answer: Answer, cell_index: int):
        """One output as markdown, an (extension, bytes) figure, or None when it shows nothing here."""
        kind, data = out.get("output_type"), out.get("data", {})
        markdown = data.get("text/markdown", "")
        if kind == "stream":
            text = clean_stream_text(out.get("text", ""))
            return _text_block(text) if text.strip() else None
        if kind == "error":
            ename, evalue = out.get("ename", "Error"), clean_stream_text(str(out.get("evalue", "")))
            self.warnings.append(f"{entry.stem}: cell {cell_key(entry.nb.cells[cell_index], cell_index)} (cell "
                                 f"{cell_index}, evidence for {answer.id}) raised {ename}: {evalue}")
            return f"> Error in this cell: `{ename}: {evalue}`"
        if WIDGET_MIME in data:  # a progress bar says nothing once the cell is done; another widget needs the notebook
            return None if _PROGRESS_BAR.search(data.get("text/plain", "")) else WIDGET_NOTE
        if image := _image(data):
            return image
        if markdown.startswith(RESULT_MARK):
            return None  # a row of the results table at the top
        if source := _SOURCE.match(markdown):
            return source_link(source.group(1), self.out_dir / "answers_files")  # linked from the appendix
        if markdown:
            return markdown.strip("\n")
        if "text/plain" in data:  # e.g. a value, or HTML (a DataFrame) by its text version
            return _text_block(clean_stream_text(data["text/plain"]))
        return None

    def _outputs(self, entry: Notebook, answer: Answer, cell_index: int) -> list:
        """Markdown chunks for one evidence cell; a figure is an (extension, bytes) pair for the caller to name."""
        outputs = _merged_outputs(entry.ran_cells.get(cell_key(entry.nb.cells[cell_index], cell_index)))
        if not any(_is_evidence(out) for out in outputs):
            return []
        chunks = [f"> Note: {entry.stale[cell_index]}."] if cell_index in entry.stale else []
        for out in outputs:
            chunk = self._chunk(out, entry, answer, cell_index)
            if chunk is not None and not (chunk == WIDGET_NOTE and chunk in chunks):  # one widget note a cell
                chunks.append(chunk)
        return chunks

    def _figure_name(self, name: str, data: bytes) -> str:
        """Where ``data`` is saved: the file of an earlier figure with the same bytes, else ``name``."""
        name = next((old for old, known in self.figures.items() if known == data), name)
        self.figures[name] = data
        return name

    def answer(self, entry: Notebook, answer: Answer, heading: str) -> str:
        """One answer's section: heading, notebook, evidence from the executed copy, text from the source."""
        chunks = [c for i in answer.evidence_cells for c in self._outputs(entry, answer, i)] if entry.ran else []
        lines = [f"## {heading}", "", f"{EVIDENCE_LINE} `{repo_path(entry.path)}`:", ""]
        n, nothing = 0, "_(no outputs above this answer)_" if entry.ran else "_(no outputs: notebook not executed)_"
        # Figures, notes and the widget note stay here; tables, logs and code links go to the answer's appendix section.
        moved = [c for c in chunks if isinstance(c, str) and not c.startswith("> ") and c != WIDGET_NOTE]
        for chunk in [c for c in chunks if c not in moved] or ([] if moved else [nothing]):
            if isinstance(chunk, tuple):  # a figure: saved beside answers.md under a name that is stable across runs
                n += 1
                name = self._figure_name(f"{answer.notebook}_{answer.id}_{n}.{chunk[0]}", chunk[1])
                chunk = f"![{answer.id}, figure {n}](answers_files/{name})"
            lines += [chunk, ""]
        if moved:
            self.appendix.append("\n\n".join([f"## {heading}", *moved]) + "\n")
            lines += [f"_Its tables and logs ({len(moved)}): in the [appendix](answers_files/{APPENDIX}#"
                      f"{anchor(heading)})._", ""]
        if entry.ran and (entry.run_meta or {}).get("quick"):
            lines += [QUICK_NOTE, ""]
        body = answer.body
        for k, attachment in enumerate(sorted(answer.attachments), start=1):  # images pasted into the answer cell
            if image := _image(answer.attachments[attachment]):
                name = self._figure_name(f"{answer.notebook}_{answer.id}_a{k}.{image[0]}", image[1])
                body = body.replace(f"attachment:{attachment}", f"answers_files/{name}")
        if answer.unanswered:
            body = UNANSWERED + (f" The cell holds:\n\n{body}" if body.strip() else "")
        return "\n".join(lines + ["**Answer:**", "", body]) + "\n"
