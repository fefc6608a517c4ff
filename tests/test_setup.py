"""The set-up cannot drift: environment.yml names pyproject's packages; CI calls the README's test command."""
from __future__ import annotations

import re
import tomllib

from conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_items = [line.strip()[2:] for line in lines[start + 1:] if line.strip().startswith("- ")]
    listed = {_name(r) for r in pip_items if not r.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert any(r.startswith("-e .") for r in pip_items), "environment.yml must install this package itself"
    assert any(line.strip() == "- python=3.11" for line in lines)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make workbook" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_package_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import random, torch; s = torch.initial_seed(); r = random.getstate(); import pico_helpers, sys; "
            "assert torch.initial_seed() == s and random.getstate() == r; "
            "assert 'matplotlib.pyplot' not in sys.modules and 'ipywidgets' not in sys.modules "
            "and 'datasets' not in sys.modules, 'heavy optional import at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
