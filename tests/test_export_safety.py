"""The export never loses a student's words or figures, whatever state its manifest is in; quick runs say so."""
from __future__ import annotations

import base64
import os
import stat
import tempfile

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import ROOT
from tools.export import files as export_files
from tools.export.cli import main
from tools.export.render import QUICK_NOTE, source_link

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
ANSWERS = {"Q2.1": "The window sees k tokens.", "Q2.2": "Embeddings are a one-hot times a matrix."}
FIGURE = "02_kgram_mlp_Q2.1_1.png"


def write(tmp_path, answers=None, figure: bytes = PNG, quick: bool = False):
    """notebooks/02_kgram_mlp.ipynb (a plot, Q2.1, a print, Q2.2) and its executed copy; (src, executed, answers.md)."""
    answers = {**ANSWERS, **(answers or {})}
    cells = [new_code_cell("plot()", id="plot"), new_markdown_cell(f"### Answer Q2.1\n{answers['Q2.1']}", id="a21"),
             new_code_cell("print(2)", id="two"), new_markdown_cell(f"### Answer Q2.2\n{answers['Q2.2']}", id="a22")]
    src, exe = tmp_path / "notebooks", tmp_path / "executed"
    src.mkdir(exist_ok=True)
    exe.mkdir(exist_ok=True)
    nbformat.write(new_notebook(cells=cells), src / "02_kgram_mlp.ipynb")
    ran = nbformat.from_dict(nbformat.reads(nbformat.writes(new_notebook(cells=cells)), as_version=4))
    ran.cells[0].outputs = [new_output("display_data", data={"image/png": base64.b64encode(figure).decode(),
                                                             "text/plain": "<Figure>"})]
    ran.cells[2].outputs = [new_output("stream", name="stdout", text="2\n")]
    ran.cells[0].execution_count, ran.cells[2].execution_count = 1, 2
    ran.metadata["pico"] = {"quick": quick, "executed": "2026-12-01", "commit": "fedcba9"}
    nbformat.write(ran, exe / "02_kgram_mlp.ipynb")
    return src, exe, tmp_path / "out" / "answers.md"


def export(capsys, src, exe, target) -> tuple[int, str, str]:
    """What ``python -m tools.export --executed EXE --out TARGET --notebooks SRC`` does: (exit code, stdout, stderr)."""
    code = main(["--executed", str(exe), "--out", str(target), "--notebooks", str(src)])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder) -> dict:
    """Every file under ``folder``: relative path -> (bytes, mode)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("damage", ["deleted", "not JSON", "not a manifest"])
def test_a_hand_edit_is_kept_when_the_manifest_is_missing_or_unreadable(tmp_path, capsys, damage):
    src, exe, target = write(tmp_path)
    assert export(capsys, src, exe, target)[0] == 0
    generated = target.read_text(encoding="utf-8")
    target.write_text(generated + "\nMy note, typed into answers.md.\n", encoding="utf-8")
    manifest = target.parent / "answers_files" / ".manifest.json"
    manifest.unlink() if damage == "deleted" else manifest.write_text("{oops" if damage == "not JSON" else "[]")
    code, out, err = export(capsys, src, exe, target)
    assert code == 0, err
    kept = list(target.parent.glob("answers.edited-*.md"))
    assert len(kept) == 1 and kept[0].read_text(encoding="utf-8").endswith("My note, typed into answers.md.\n")
    assert "Kept copies (1):" in out and kept[0].name in out and "no readable answers_files/.manifest.json" in out
    assert target.read_text(encoding="utf-8") == generated
    assert "Kept copies" not in export(capsys, src, exe, target)[1]  # the manifest is back: nothing more to keep


def test_a_students_figure_under_an_export_name_is_kept_without_a_manifest(tmp_path, capsys):
    src, exe, target = write(tmp_path)
    export(capsys, src, exe, target)
    files = target.parent / "answers_files"
    (files / FIGURE).write_bytes(b"the student's own plot, saved under the export's name")
    (files / ".manifest.json").unlink()
    src, exe, target = write(tmp_path, figure=PNG + b"re-run")  # the notebook ran again: a new figure
    code, out, err = export(capsys, src, exe, target)
    assert code == 0, err
    assert (files / FIGURE).read_bytes() == PNG + b"re-run"
    kept = list(files.glob("02_kgram_mlp_Q2.1_1.edited-*.png"))
    assert [p.read_bytes() for p in kept] == [b"the student's own plot, saved under the export's name"]
    assert kept[0].name in out and "cannot tell its own files from yours" in out


@pytest.mark.parametrize("emptied", ["", "_Your answer here_"], ids=["empty", "placeholder"])
def test_an_emptied_answer_keeps_its_previous_text(tmp_path, capsys, emptied):
    src, exe, target = write(tmp_path)
    export(capsys, src, exe, target)
    src, exe, target = write(tmp_path, answers={"Q2.1": emptied})
    code, out, err = export(capsys, src, exe, target)
    assert code == 0, err
    kept = list(target.parent.glob("answers.previous-*.md"))
    assert len(kept) == 1 and ANSWERS["Q2.1"] in kept[0].read_text(encoding="utf-8")
    assert "Kept copies (1):" in out and "Q2.1 has no answer text now" in out and kept[0].name in out
    assert ANSWERS["Q2.1"] not in target.read_text(encoding="utf-8")
    assert "Kept copies" not in export(capsys, src, exe, target)[1]  # already unanswered: nothing more to keep


def test_copies_made_within_one_second_get_distinct_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export_files, "_stamp", lambda: "20261201-120000")  # both cycles in the same second
    src, exe, target = write(tmp_path)
    export(capsys, src, exe, target)
    generated = target.read_text(encoding="utf-8")
    for edit in ("first edit", "second edit"):
        target.write_text(generated + edit, encoding="utf-8")
        assert export(capsys, src, exe, target)[0] == 0
    kept = sorted(target.parent.glob("answers.edited-*.md"))
    assert [p.name for p in kept] == ["answers.edited-20261201-120000-2.md", "answers.edited-20261201-120000.md"]
    assert kept[0].read_text(encoding="utf-8").endswith("\nsecond edit")  # each copy holds its own edit
    assert kept[1].read_text(encoding="utf-8").endswith("\nfirst edit")


@pytest.mark.parametrize("how", ["write fails", "read-only folder"])
def test_a_failed_export_leaves_the_tree_as_it_was(tmp_path, capsys, monkeypatch, how):
    src, exe, target = write(tmp_path)
    export(capsys, src, exe, target)
    files = target.parent / "answers_files"
    src, exe, target = write(tmp_path, answers={"Q2.1": "A better answer."}, figure=PNG + b"re-run")
    before = snapshot(target.parent)
    if how == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; the 'write fails' case covers this")
        files.chmod(0o555)
    else:
        real = tempfile.mkstemp

        def mkstemp(**kw):  # answers.md's temporary is made; the figures' folder refuses, as a read-only one would
            if kw["dir"] == files:
                raise PermissionError(13, "Permission denied")
            return real(**kw)

        monkeypatch.setattr(export_files.tempfile, "mkstemp", mkstemp)
    code, out, err = export(capsys, src, exe, target)
    files.chmod(0o755)
    monkeypatch.undo()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "answers_files/ (Permission denied)" in err
    assert "Nothing was written" in err and snapshot(target.parent) == before  # answers.md untouched, no temporaries
    code, out, err = export(capsys, src, exe, target)
    assert code == 0 and "edited by hand" not in out and "Kept copies" not in out  # no spurious copy afterwards
    assert "A better answer." in target.read_text(encoding="utf-8")


def test_a_read_only_answers_md_is_refused_not_replaced(tmp_path, capsys):
    src, exe, target = write(tmp_path)
    export(capsys, src, exe, target)
    target.chmod(0o444)
    before = snapshot(target.parent)
    src, exe, target = write(tmp_path, answers={"Q2.1": "A better answer."})
    code, out, err = export(capsys, src, exe, target)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "answers.md is read-only (mode 0444)" in err and "chmod u+w" in err and "Nothing was written" in err
    assert snapshot(target.parent) == before


def test_files_keep_their_modes_and_new_files_follow_the_umask(tmp_path, capsys):
    src, exe, target = write(tmp_path)
    old = os.umask(0o027)
    try:
        export(capsys, src, exe, target)
    finally:
        os.umask(old)
    files = target.parent / "answers_files"
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (target, files / FIGURE, files / ".manifest.json")} == {
        "answers.md": 0o640, FIGURE: 0o640, ".manifest.json": 0o640}  # not mkstemp's 0o600
    target.chmod(0o664)
    (files / FIGURE).chmod(0o604)
    src, exe, target = write(tmp_path, answers={"Q2.1": "A better answer."}, figure=PNG + b"re-run")
    assert export(capsys, src, exe, target)[0] == 0
    assert "A better answer." in target.read_text(encoding="utf-8") and (files / FIGURE).read_bytes() == PNG + b"re-run"
    assert stat.S_IMODE(target.stat().st_mode) == 0o664 and stat.S_IMODE((files / FIGURE).stat().st_mode) == 0o604


def test_answers_files_as_a_file_is_one_clear_line(tmp_path, capsys):
    src, exe, target = write(tmp_path)
    target.parent.mkdir()
    (target.parent / "answers_files").write_text("not a folder")
    code, out, err = export(capsys, src, exe, target)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Errno" not in err
    assert "answers_files is a file, but the export needs a folder there" in err and "Rename or move that file" in err
    assert not target.exists() and (target.parent / "answers_files").read_text() == "not a folder"


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_every_answer_of_a_quick_run_says_its_evidence_is_smoke_sized(tmp_path, capsys, quick):
    src, exe, target = write(tmp_path, quick=quick)
    assert export(capsys, src, exe, target)[0] == 0
    md = target.read_text(encoding="utf-8")
    for aid in ("Q2.1", "Q2.2"):
        section = md[md.index(f"\n## {aid}:"):md.index("\n## ", md.index(f"\n## {aid}:") + 1)]
        assert section.count(QUICK_NOTE) == (1 if quick else 0)
        assert not quick or section.index(QUICK_NOTE) < section.index("**Answer:**")  # between evidence and text
    assert md.count(QUICK_NOTE) == (2 if quick else 0)  # answers only: not the missing ones


def test_source_links_are_relative_to_the_folder_answers_md_is_in():
    ref = "pico_helpers/models/transformer.py#L66-L82"
    assert source_link(ref, ROOT / "build") == f"[{ref}](../{ref})"  # build/answers.md, the quick export
    assert source_link(ref, ROOT) == f"[{ref}]({ref})"  # answers.md, the submission
