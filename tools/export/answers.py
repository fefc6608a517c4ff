"""export_answers: answers.md and answers_files/ written all or nothing, never losing text or figures it did not write."""
from __future__ import annotations

import json
from pathlib import Path

from pico_helpers.workbook.notebook_answers import ROOT, repo_path
from tools.export.document import GENERATED_MARK, Document, compose
from tools.export.files import Staged, check_writable
from tools.export.notebooks import load_notebooks
from tools.export.safety import MANIFEST, answer_texts, check_folders, is_ours, read_manifest, refuse_losses, sha

__all__ = ["export_answers"]

NO_MANIFEST = "there is no readable answers_files/.manifest.json, so the export cannot tell its own files from yours"


def _check_inputs(executed_dir: Path, target: Path, source_dir: Path) -> str:
    """The previous answers.md's text ("" when none), after refusing folders that are missing or a target of the
    wrong kind (a folder, or a file the export did not write)."""
    for folder, what in ((source_dir, "source notebook folder (notebooks/: 01_embeddings.ipynb, ...)"), (executed_dir,
                         "executed notebook folder; run `make workbook` first, or pass --executed build/full")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: give the {what}")
    if target.is_dir():
        raise ValueError(f"the output {target} is a directory; give the markdown file to write, e.g. "
                         f"{target / 'answers.md'}")
    previous_md = target.read_text(encoding="utf-8", errors="replace") if target.exists() else ""
    if previous_md and GENERATED_MARK not in previous_md[:2000]:
        raise FileExistsError(f"{target} exists and was not written by the export (no '{GENERATED_MARK}' line at "
                              "its top); move it away or delete it, then export again")
    return previous_md


def _stage_answers(staged: Staged, target: Path, previous_md: str, doc: Document, manifest: dict | None) -> None:
    """Stage answers.md, after a copy of the old one when it may hold words found nowhere else."""
    data = doc.text.encode("utf-8")
    if target.exists() and target.read_bytes() == data:
        return  # unchanged: nothing to replace
    if target.exists():
        check_writable(target)
        ours = manifest is not None and manifest.get("answers") == target.name and manifest.get(
            "sha256") == sha(target.read_bytes())
        hand = [] if ours else [NO_MANIFEST if manifest is None else f"{target.name} was edited by hand since the "
                                "last export (answer text belongs in the notebooks' answer cells)"]
        new_texts = answer_texts(doc.text)
        emptied = [aid for aid, old in answer_texts(previous_md).items() if old and not new_texts.get(aid)]
        reasons = hand + ([f"{', '.join(emptied)} {'has' if len(emptied) == 1 else 'have'} no answer text now (an "
                           "emptied, placeholder or removed cell); the previous text is in the copy"] if emptied else [])
        if reasons:
            staged.keep_copy(target, "edited" if hand else "previous", "; ".join(reasons))
    staged.write(target, data)


def _stage_figures(staged: Staged, files_dir: Path, figures: dict, manifest: dict | None,
                   warnings: list[str]) -> tuple[int, int]:
    """Stage new or changed figures (a copy first of any the manifest does not vouch for) and the removal of those
    the last export wrote that are no longer used; (written, removed)."""
    changed = [n for n in sorted(figures) if not (files_dir / n).is_file() or (files_dir / n).read_bytes() != figures[n]]
    for name in changed:
        path = files_dir / name
        if path.exists():
            check_writable(path)
            if not is_ours(path, manifest):
                staged.keep_copy(path, "edited", NO_MANIFEST if manifest is None else
                                 "--force: the export did not write it, or it was changed since")
        staged.write(path, figures[name])
    unused = sorted(set((manifest or {}).get("figures", {})) - set(figures))
    removed = [name for name in unused if is_ours(files_dir / name, manifest)]
    for name in removed:
        staged.delete(files_dir / name)
    warnings += [f"{repo_path(files_dir / name)} was changed since the export wrote it; kept"
                 for name in unused if name not in removed and (files_dir / name).is_file()]
    return len(changed), len(removed)


def _report(target: Path, files_dir: Path, doc: Document, n_notebooks: int, counts: tuple[int, int],
            kept: list[str], warnings: list[str]) -> str:
    """What was written, what is missing, which copies were kept, and the warnings."""
    n = doc.n_answers
    report = [f"Wrote {repo_path(target)}: {n} answer{'s' * (n != 1)} from {n_notebooks} notebook"
              f"{'s' * (n_notebooks != 1)} ({doc.n_expected - len(doc.missing)} of {doc.n_expected} expected), "
              f"{len(doc.figures)} figure file(s) in {repo_path(files_dir)}/ ({counts[0]} new or changed, {counts[1]} "
              "old removed).", doc.run_line]
    for label, lines in (("Missing", [m.split(":")[0] for m in doc.missing]), ("Unanswered", doc.unanswered),
                         ("Lacking evidence (not executed)", doc.no_evidence)):
        report += [f"{label} ({len(lines)}): {', '.join(lines)}"] if lines else []
    report += [f"Kept copies ({len(kept)}):"] + [f"  - {line}" for line in kept] if kept else []
    return "\n".join(report + ([f"Warnings ({len(warnings)}):"] + [f"  - {w}" for w in warnings] if warnings else []))


def export_answers(executed_dir, target, source_dir=ROOT / "notebooks", force: bool = False) -> str:
    """Write ``target`` (answers.md) and answers_files/ from the answer text in ``source_dir`` and the outputs in
    ``executed_dir`` (build/quick or build/full); return a report. ``force``: even if it loses evidence.
    Nothing is written if any file cannot be; a file the export cannot vouch for is copied before it is replaced."""
    executed_dir, target, source_dir = Path(executed_dir), Path(target), Path(source_dir)
    previous_md = _check_inputs(executed_dir, target, source_dir)
    warnings: list[str] = []
    notebooks = load_notebooks(source_dir, executed_dir, warnings)
    doc = compose(notebooks, executed_dir, source_dir, target, warnings)
    files_dir = target.parent / "answers_files"
    check_folders(target, files_dir)
    manifest = read_manifest(files_dir)
    warnings += refuse_losses(target, previous_md, doc.text, doc.figures, manifest, force, executed_dir)
    staged = Staged()
    try:
        _stage_answers(staged, target, previous_md, doc, manifest)
        counts = _stage_figures(staged, files_dir, doc.figures, manifest, warnings)
        record = {"answers": target.name, "sha256": sha(doc.text.encode("utf-8")),
                  "figures": {name: sha(data) for name, data in sorted(doc.figures.items())}}
        staged.write(files_dir / MANIFEST, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
        staged.commit()
    except BaseException:  # Ctrl-C included: no temporary or half of an export is left behind
        staged.abort()
        raise
    kept = [f"{repo_path(original)} kept as {repo_path(copy)} before it was replaced: {why}"
            for original, copy, why in staged.kept]
    return _report(target, files_dir, doc, len(notebooks), counts, kept, warnings)
