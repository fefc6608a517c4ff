"""The set-up cannot drift: environment.yml names pyproject's packages; CI calls the README's test command; make setup
says what it installs, make lab runs as root, and the runner and the test suite are never long silent."""
from __future__ import annotations

import re
import tomllib

import pytest
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


# --- make setup, make lab, the runner's and the test suite's progress lines ---

def _make_dry_run(*args: str, env: dict | None = None) -> str:
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("needs make")
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    return out.stdout


def _fake_id(tmp_path, uid: int) -> dict:
    """An environment whose `id -u` prints ``uid`` (make's $(shell id -u) finds it first on PATH)."""
    import os

    folder = tmp_path / f"uid{uid}"
    folder.mkdir()
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (folder / "id").chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("uid", [0, 1000])
def test_make_lab_adds_allow_root_only_as_root(tmp_path, uid):
    steps = _make_dry_run("lab", "QUICK=auto", env=_fake_id(tmp_path, uid)).splitlines()
    lab = [line for line in steps if "jupyter lab" in line]
    assert len(lab) == 1 and lab[0].startswith(".venv/bin/jupyter lab") and lab[0].endswith(" notebooks/")
    assert ("--allow-root" in lab[0]) == (uid == 0)


def test_make_lab_passes_the_quick_switch():
    assert "PICO_QUICK=0 .venv/bin/jupyter lab" in _make_dry_run("lab", "QUICK=0")
    assert "PICO_QUICK" not in _make_dry_run("lab", "QUICK=auto")


def test_make_setup_says_what_it_installs_and_keeps_pip_quiet():
    steps = _make_dry_run("-B", "setup").splitlines()
    said = " ".join(line for line in steps if "echo" in line)
    for what in ("virtual environment", "torch", "dev extras", "Jupyter kernel", "nbstripout", "tokenizer"):
        assert what in said, f"make setup does not say it installs {what}"
    assert all("--quiet" in line for line in steps if "pip install" in line)
    # Its own entry point: `-m pico_helpers.data.tokenizer` runs a module the package has imported (runpy warns).
    assert any("-m tools.provision_tokenizer" in line for line in steps)
    assert not any("pico_helpers.data.tokenizer" in line for line in steps)
    # The notebook filter goes into this clone's .git only: nothing committed, nothing user-wide.
    filter_lines = [line for line in steps if "nbstripout" in line and "echo" not in line]
    assert filter_lines and not any(flag in line for line in filter_lines for flag in ("--global", "--system",
                                                                                       "--attributes"))


def test_provisioning_runs_without_a_runpy_warning():
    import subprocess
    import sys

    from pico_helpers.data.tokenizer import RANK_FILE_SHA256, _PACKAGE_ASSET, _sha256

    if not (_PACKAGE_ASSET.is_file() and _sha256(_PACKAGE_ASSET) == RANK_FILE_SHA256):
        pytest.skip("the rank file is not provisioned yet (make setup fetches it; this test stays offline)")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "tools.provision_tokenizer"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "already present and verified" in out.stdout and "50257 tokens" in out.stdout


def test_runner_kernel_uses_ipc_sockets_on_posix(tmp_path):
    import os

    from tools.run_workbook import _kernel_config

    config = _kernel_config(tmp_path)
    if os.name != "posix":
        assert "transport" not in config.KernelManager
        return
    # IPC: the kernel has no TCP traffic to warn about. An absolute path: kernel and client run in different folders.
    assert config.KernelManager.transport == "ipc" and config.KernelManager.ip == str(tmp_path / "kernel")


def _wait_for(predicate, seconds: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_runner_prints_each_cell_as_it_starts_and_a_heartbeat_while_it_runs():
    import io

    from nbformat.v4 import new_code_cell

    from tools.run_workbook import CellProgress

    out = io.StringIO()
    progress = CellProgress(total=3, heartbeat_s=0.2, out=out)
    try:
        progress.on_cell_execute(new_code_cell("\n# train the three models\nfor name in runs:\n    train(name)"), 4)
        assert out.getvalue().startswith("    [1/3] # train the three models\n")
        assert _wait_for(lambda: "    [1/3] still running, " in out.getvalue())
        progress.on_cell_executed(new_code_cell("x"), 4, {})
        progress.on_cell_execute(new_code_cell("y = 1"), 5)
        assert "    [2/3] y = 1\n" in out.getvalue()
    finally:
        progress.close()


def test_pytest_heartbeat_names_a_long_test_through_output_capture(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_slow.py").write_text("import time\n\ndef test_sleeps():\n    time.sleep(3)\n")
    env = {**os.environ, "PICO_TEST_HEARTBEAT_S": "0.5"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_slow.py"], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "still running test_slow.py::test_sleeps" in out.stdout
