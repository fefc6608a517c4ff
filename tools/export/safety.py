"""What the last export wrote (its manifest), and what this one would lose: checked before anything is written."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pico_helpers.workbook.notebook_answers import repo_path
from tools.export.notebooks import ANSWER_ID
from tools.export.render import UNANSWERED

__all__ = ["MANIFEST", "sha", "read_manifest", "is_ours", "answer_texts", "refuse_losses", "check_folders"]

MANIFEST = ".manifest.json"  # in answers_files/: {"answers": file name, "sha256": of it, "figures": {name: sha256}}


def sha(data: bytes) -> str:
    """The hex SHA-256 of ``data``, as the manifest records files."""
    return hashlib.sha256(data).hexdigest()


def _plain_name(name) -> bool:
    """A file name inside answers_files/: a manifest naming ``../x`` must not make the export delete ``x``."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def read_manifest(files_dir: Path) -> dict | None:
    """The last export's record in ``files_dir``, or None when it is missing or unreadable (then nothing is ours)."""
    try:
        manifest = json.loads((files_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("figures"), dict)):
        return None
    manifest["figures"] = {name: digest for name, digest in manifest["figures"].items()
                           if _plain_name(name) and isinstance(digest, str)}
    return manifest


def is_ours(path: Path, manifest: dict | None) -> bool:
    """True if the manifest says the last export wrote ``path`` and its bytes have not changed since."""
    figures = (manifest or {}).get("figures", {})
    return path.name in figures and path.is_file() and figures[path.name] == sha(path.read_bytes())


def _with_evidence(md: str) -> list[str]:
    """The answer ids whose section in a generated answers.md shows outputs (not the "_(no outputs" placeholder)."""
    sections = (re.match(rf"## ({ANSWER_ID})\b.*?\*\*Evidence\*\* from[^\n]*\n\s*(_\(no outputs)?", sec, re.DOTALL)
                for sec in re.split(r"\n(?=## )", md))
    return [m.group(1) for m in sections if m and not m.group(2)]


def answer_texts(md: str) -> dict[str, str]:
    """Answer id -> the text under **Answer:** in a generated answers.md ("" while unanswered)."""
    texts = {}
    for sec in re.split(r"\n(?=## )", md):
        if (m := re.match(rf"## ({ANSWER_ID})\b", sec)) and "\n**Answer:**\n" in sec:
            body = sec.split("\n**Answer:**\n", 1)[1].strip()
            texts[m.group(1)] = "" if body.startswith(UNANSWERED) else body
    return texts


def refuse_losses(target: Path, previous_md: str, text: str, figures: dict, manifest: dict | None, force: bool,
                  executed_dir: Path) -> list[str]:
    """Unless ``force``, refuse (ValueError) to strip shown outputs or replace a figure the manifest shows someone
    changed (or never wrote); with ``force``, these become warnings (and the figure is copied before it is replaced)."""
    files_dir = target.parent / "answers_files"
    lost = [aid for aid in _with_evidence(previous_md) if aid not in set(_with_evidence(text))]
    problems = [f"{', '.join(lost)} show outputs in {repo_path(target)} but would have none (their executed notebooks "
                "are missing or have no outputs: run `make workbook`, or check --executed)"] if lost else []
    changed = [name for name, data in sorted(figures.items()) if (files_dir / name).is_file()
               and (files_dir / name).read_bytes() != data and not is_ours(files_dir / name, manifest)]
    problems += [f"{repo_path(files_dir / name)} was not written by the export (or was changed since) and would be "
                 "replaced" for name in changed] if manifest is not None else []  # without one, copies are kept
    if problems and not force:
        raise ValueError(f"export refused, it would lose work: {'; '.join(problems)}. Nothing was written; to export "
                         f"anyway (a copy of each changed file is kept): python -m tools.export --executed "
                         f"{repo_path(executed_dir)} --out {repo_path(target)} --force")
    return [f"--force: {p}" for p in problems]


def check_folders(target: Path, files_dir: Path) -> None:
    """One clear error (FileExistsError) when a file stands where the export needs a folder."""
    for folder in (files_dir, *files_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{repo_path(folder)} is a file, but the export needs a folder there (it writes "
                                  f"{target.name} and its figures in {repo_path(files_dir)}/). Rename or move that "
                                  "file, then export again; nothing was written")
        if folder.exists():
            return
