"""The notebooks' shape: one parameters cell each, nothing defined twice across notebooks, no private helpers shown."""
from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def definitions(path: Path) -> tuple[set[str], set[str]]:
    """(names of top-level functions and classes, source of every TrainConfig(...) / preset(...) call assigned)."""
    functions, configs = set(), set()
    for cell in code_cells(path):
        tree = ast.parse("".join(cell["source"]))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                functions.add(node.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                func = ast.unparse(node.value.func)
                if func.startswith("TrainConfig") and node.value.keywords:
                    configs.add(ast.unparse(node.value))
    return functions, configs


def test_the_notebooks_are_there():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell(path):
    tagged = [c for c in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', expected 1"
    assert "quick_mode()" in "".join(tagged[0]["source"]), "the parameters cell reads the quick switch"


@pytest.mark.parametrize("a, b", list(itertools.combinations(NOTEBOOKS, 2)), ids=lambda p: p.stem[:2])
def test_nothing_is_defined_in_two_notebooks(a, b):
    (fa, ca), (fb, cb) = definitions(a), definitions(b)
    assert not fa & fb, (f"{a.name} and {b.name} both define {sorted(fa & fb)}: move it to pico_helpers "
                         "(shared display helpers live in pico_helpers/workbook/display.py)")
    assert not ca & cb, (f"{a.name} and {b.name} both write the config {sorted(ca & cb)}: make it a preset "
                         "in pico_helpers/presets.py")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_private_helper_is_shown_or_imported(path):
    code = "\n".join("".join(c["source"]) for c in code_cells(path))
    assert not re.findall(r"getsource\([^)]*\._[a-z]", code), f"{path.name} prints a private helper's source"
    assert not re.findall(r"from pico_helpers[\w.]* import[^\n]*\b_[a-z]", code), f"{path.name} imports a private name"
    assert "redirect_stdout" not in code, f"{path.name}: use train(..., verbose=False) instead of redirect_stdout"
