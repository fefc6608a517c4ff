"""The widgets in a real browser: JupyterLab on 127.0.0.1 and headless Chromium driven by Playwright.

Notebooks 01 (embedding inspector), 06 (attention viewer) and 07 (feature browser) run top to bottom in quick mode,
while the test watches 01's first training cell redraw its live loss plot; then it types into the inspector (a
token and one the model never saw), moves the viewer's head slider and types into the feature browser. Copies of
the notebooks are opened from build/browser/, so the committed ones are never saved over; a screenshot of each
widget, and of any failure, is kept there too.

Needs Playwright (``pip install -e '.[browser]'``) and Debian's Chromium at /usr/bin/chromium (or
$PICO_CHROMIUM): Playwright cannot download its own browser here. Without them the test skips, unless
PICO_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = os.environ.get("PICO_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the others keep it from calling out on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OUT = ROOT / "build" / "browser"
SERVER_START_S = 120
RUN_ALL_S = 900  # notebook 06 in quick mode trains several small runs: about 1.5 min alone on 2 cores
ACTION_S = 60  # one widget callback (a PCA plot, a heatmap) is well under a second when the CPU is free


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[browser]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PICO_CHROMIUM)"
    return None


MISSING = _missing()
if MISSING and os.environ.get("PICO_REQUIRE_BROWSER") != "1":
    pytest.skip(f"browser test: {MISSING}", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- JupyterLab ---

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over the repository root, in quick mode, with its own config, data and runs dirs."""
    if MISSING:
        pytest.fail(f"PICO_REQUIRE_BROWSER=1 but {MISSING}")
    home = tmp_path_factory.mktemp("lab")
    # Copies served from inside the repository: the kernel's find_repo_root() walks up from build/browser/.
    copies = OUT / f"notebooks-{os.getpid()}"
    copies.mkdir(parents=True, exist_ok=True)
    for name in ("01_embeddings.ipynb", "06_experiments.ipynb", "07_monosemanticity.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, copies / name)
    # No autosave (the copies stay as copied) and no news toast over the page.
    for plugin, values in (("docmanager-extension/plugin", {"autosave": False}),
                           ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False})):
        settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(values))
    env = {**os.environ, "PICO_QUICK": "1", "PICO_RUNS_DIR": str(home / "runs"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTER_PREFER_ENV_PATH": "1"}
    port, token = _free_port(), secrets.token_hex(16)
    log_path = home / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root; Jupyter refuses that unless told
        cmd.append("--allow-root")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "copies": copies, "log": log_path}
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(copies, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# --- driving one notebook ---

_PANEL = """(path) => {
    const app = window.jupyterapp;
    if (!app) return null;
    for (const w of app.shell.widgets('main')) if (w.context && w.context.path === path) return w;
    return null;
}"""


class Notebook:
    """One notebook open in its own page: run all cells, read its cells' state, find a cell's DOM."""

    def __init__(self, browser, lab, path: Path):
        self.lab, self.rel = lab, path.relative_to(ROOT).as_posix()
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(ACTION_S * 1000)
        self.focus: int | None = None  # the cell a failure screenshot shows

    def js(self, body: str, arg=None, timeout_s: float | None = None, wait: bool = False):
        """Evaluate ``body`` (JS using ``panel``) with the notebook's panel bound; ``wait``: until truthy."""
        fn = f"(arg) => {{ const panel = ({_PANEL})({json.dumps(self.rel)}); {body} }}"
        if wait:
            return self.page.wait_for_function(fn, arg=arg, timeout=(timeout_s or ACTION_S) * 1000).json_value()
        return self.page.evaluate(fn, arg)

    def open(self) -> None:
        url = f"{self.lab['base']}/lab/tree/{self.rel}?token={self.lab['token']}&reset"
        self.page.goto(url, timeout=SERVER_START_S * 1000)
        self.js("const k = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;"
                "return panel && panel.context.isReady && panel.content.widgets.length > 0 && k"
                " && k.connectionStatus === 'connected' && k.status === 'idle';", wait=True, timeout_s=SERVER_START_S)

    def run_all(self) -> bool:
        """Run > Run All Cells; wait until it finishes, no cell shows [*] and the kernel is idle."""
        self.js("window.__runAll = null; panel.content.activate();"
                "window.jupyterapp.commands.execute('notebook:run-all-cells')"
                ".then(ok => { window.__runAll = {ok: !!ok}; }, err => { window.__runAll = {ok: false, err: String(err)}; });"
                "return true;")
        done = self.js("return window.__runAll;", wait=True, timeout_s=RUN_ALL_S)
        self.js("const busy = [...panel.node.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('[*]'));"
                "return !busy && panel.sessionContext.session.kernel.status === 'idle';", wait=True)
        return bool(done["ok"])

    def cells(self) -> list[dict]:
        """Every code cell: index, source, execution count, and per output its type, error and mime types."""
        return self.js("""const out = [], cells = panel.content.model.cells;
            for (let i = 0; i < cells.length; i++) {
                const c = cells.get(i);
                if (c.type !== 'code') continue;
                const outputs = c.outputs.toJSON().map(o => ({type: o.output_type, ename: o.ename || '',
                    evalue: o.evalue || '', mimes: Object.keys(o.data || {})}));
                out.push({index: i, source: c.sharedModel.getSource(), count: c.executionCount, outputs});
            }
            return out;""")

    def problems(self) -> list[str]:
        """What went wrong: cells that raised or never ran, and widgets that failed to display."""
        found = []
        for cell in self.cells():
            first = cell["source"].strip().splitlines()[0] if cell["source"].strip() else ""
            for o in cell["outputs"]:
                if o["type"] == "error":
                    found.append(f"cell {cell['index']} ({first[:60]!r}) raised {o['ename']}: {o['evalue']}")
                    self.focus = cell["index"] if self.focus is None else self.focus
            if cell["count"] is None and cell["source"].strip():
                found.append(f"cell {cell['index']} ({first[:60]!r}) did not run")
        shown = self.page.locator(".jp-Notebook").inner_text()
        if "Error displaying widget" in shown:
            found.append("the page shows 'Error displaying widget'")
        return found

    def cell(self, starts_with: str):
        """The DOM of the one code cell whose source starts with ``starts_with``, scrolled into view."""
        matches = [c["index"] for c in self.cells() if c["source"].lstrip().startswith(starts_with)]
        assert len(matches) == 1, f"{self.rel}: expected one cell starting {starts_with!r}, found {matches}"
        self.focus = matches[0]
        self.js("panel.content.scrollToItem(arg); return true;", arg=self.focus)
        loc = self.page.locator(".jp-Notebook .jp-Cell").nth(self.focus)
        loc.scroll_into_view_if_needed()
        return loc

    def wait_for_change(self, read, before, what: str):
        """Poll ``read()`` until it differs from ``before`` (ACTION_S at most); return the new value."""
        deadline = time.monotonic() + ACTION_S
        while time.monotonic() < deadline:
            now = read()
            if now and now != before:
                return now
            self.page.wait_for_timeout(250)
        raise AssertionError(f"{what} did not change within {ACTION_S} s")

    def shot(self, cell, label: str) -> None:
        """A picture of one widget cell as the test left it (build/browser/<notebook>-<label>.png), for a reviewer."""
        OUT.mkdir(parents=True, exist_ok=True)
        cell.screenshot(path=str(OUT / f"{Path(self.rel).stem}-{label}.png"))

    def screenshot(self, label: str) -> Path:
        """The window, scrolled to the cell that failed (JupyterLab scrolls inside the page, not the page)."""
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{Path(self.rel).stem}-{label}.png"
        try:
            if self.focus is not None:
                self.js("panel.content.scrollToItem(arg, 'start'); return true;", arg=self.focus)
                self.page.wait_for_timeout(500)
        finally:
            self.page.screenshot(path=str(path))
        return path


def _run_checked(browser, lab, name: str, check, before_run=None) -> float:
    """Open the copy of ``name``, ``before_run(nb)``, run all cells, require no problems, then ``check(nb)``;
    screenshot on failure."""
    nb = Notebook(browser, lab, lab["copies"] / name)
    (OUT / f"{Path(name).stem}-failure.png").unlink(missing_ok=True)  # an old failure's picture would mislead
    t0 = time.monotonic()
    try:
        nb.open()
        if before_run is not None:
            before_run(nb)
        ok = nb.run_all()
        problems = nb.problems()
        assert ok and not problems, f"{name}: Run All {'finished' if ok else 'stopped'}; " + "; ".join(problems)
        check(nb)
    except BaseException as err:
        shot = nb.screenshot("failure")
        if isinstance(err, AssertionError):
            raise AssertionError(f"{err}\nscreenshot: {shot}\nserver log: {lab['log']}") from None
        raise
    finally:
        nb.page.close()
    return time.monotonic() - t0


def _widget_rendered(cell, control: str) -> None:
    """The cell's output holds a live widget view (not an error), with ``control`` among its labels."""
    view = cell.locator(".jp-OutputArea .jupyter-widgets").first
    view.wait_for(state="attached")
    assert cell.locator(".widget-label", has_text=control).count() >= 1, f"no {control!r} control in the widget"


# Every 50 ms, the pictures shown in the output of the cell whose source starts with ``arg``: the frames of its
# live loss plot while it trains (each redraw is a new PNG), then the cell's own figure.
_WATCH_FRAMES = """window.__frames = new Set();
    window.__watch = setInterval(() => {
        for (const cell of panel.content.widgets) {
            if (!cell.model.sharedModel.getSource().startsWith(arg)) continue;
            for (const img of cell.node.querySelectorAll('.jp-OutputArea img')) window.__frames.add(img.src);
        }
    }, 50);
    return true;"""


# --- the tests ---

def test_embedding_inspector_responds_in_the_browser(browser, lab):
    def watch_training(nb):  # 01's first training cell: its live plot should be redrawn while it trains
        nb.js(_WATCH_FRAMES, arg="seqs_corpus = load_corpus(")

    def check(nb):
        frames = nb.js("clearInterval(window.__watch); return window.__frames.size;")
        # at least 3 redraws of the live plot while training, and the cell's own figure once it is done
        assert frames >= 4, f"the training cell showed {frames} distinct pictures: its live plot did not update"
        cell = nb.cell("embedding_inspector(")
        _widget_rendered(cell, "word or id")
        table = cell.locator(".widget-output").first.locator("pre").first

        def read():
            return table.inner_text() if table.count() else ""

        before = nb.wait_for_change(read, "", "the neighbour table")  # drawn when the widget was built
        box = cell.locator(".widget-text", has_text="word or id").locator("input")
        box.fill(" 7")  # the box updates as you type
        after = nb.wait_for_change(read, before, "the neighbour table after typing ' 7'")
        assert "7" in after.splitlines()[0], after
        nb.shot(cell, "inspector")
        box.fill(" dog")  # never in 3seqs, so the 3seqs LSTM (the first model) has no row for it: one clear line
        unseen = nb.wait_for_change(read, after, "the panel after typing ' dog'")
        assert unseen.startswith("LSTM on 3seqs: ' dog' (id 3290) has no embedding row"), unseen
        assert "rank" not in unseen and "cosine" not in unseen, f"a table instead of the line: {unseen}"
        nb.shot(cell, "inspector-unseen")

    _run_checked(browser, lab, "01_embeddings.ipynb", check, before_run=watch_training)


def test_attention_viewer_responds_in_the_browser(browser, lab):
    def check(nb):
        cell = nb.cell("attention_viewer(")
        _widget_rendered(cell, "head")
        image = cell.locator(".widget-output img").first

        def read():
            return image.get_attribute("src") if image.count() else ""

        before = nb.wait_for_change(read, "", "the heatmap")
        # What a student sees in a 1000-px window: the whole default prompt, and prompt, sliders and heatmap at once.
        box = cell.locator(".widget-text", has_text="prompt").locator("input")
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the prompt box cuts the default prompt"
        height = cell.locator(".jp-OutputArea-output .widget-vbox").first.bounding_box()["height"]
        assert height < 800, f"the viewer is {height:.0f} px tall: sliders and heatmap do not fit in a 1000-px window"
        slider = cell.locator(".widget-hslider", has_text="head")
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")  # head 0 -> 1
        nb.wait_for_change(read, before, "the heatmap after moving the head slider")
        assert slider.locator(".widget-readout").inner_text().strip() == "1"
        nb.shot(cell, "viewer")

    _run_checked(browser, lab, "06_experiments.ipynb", check)


def test_feature_browser_responds_in_the_browser(browser, lab):
    def check(nb):
        cell = nb.cell("FeatureBrowser(")
        _widget_rendered(cell, "feature")
        card = cell.locator(".pico-feature").first

        def shown():
            return card.get_attribute("data-feature") if card.count() else ""

        first = nb.wait_for_change(shown, "", "the feature card")  # drawn when the widget was built
        assert "top contexts" in card.inner_text() and "fires on" in card.inner_text()
        box = cell.locator(".widget-text", has_text="feature").locator("input")
        other = str((int(first) + 1) % 100)
        box.fill(other)
        box.press("Enter")  # the number box sends its value on Enter
        assert nb.wait_for_change(shown, first, "the card after typing a feature number") == other
        assert card.locator("span[title]").count() > 0  # its contexts, token by token, shaded by activation

        matches = cell.locator(".widget-html", has_text="strongest features").first
        token = cell.locator(".widget-text", has_text="token").locator("input")
        token.fill(" the")
        token.press("Enter")  # lists the features ' the' activates most, and shows the strongest
        matches.wait_for(state="visible")
        assert "' the'" in matches.inner_text()
        nb.shot(cell, "features")

        cell.locator(".lm-TabBar-tab", has_text="sentence").click()
        table = cell.locator(".pico-sentence").first

        def rows():
            return table.inner_text() if table.count() else ""

        before = nb.wait_for_change(rows, "", "the sentence table")
        sentence = cell.locator(".widget-text", has_text="sentence").locator("input")
        sentence.fill("The cat sat on the mat.")
        sentence.press("Enter")
        after = nb.wait_for_change(rows, before, "the sentence table after typing a sentence")
        assert "' cat'" in after and "' mat'" in after, after
        nb.shot(cell, "sentence")

    _run_checked(browser, lab, "07_monosemanticity.ipynb", check)


def test_a_cell_that_raises_fails_the_check(browser, lab):
    """The checker itself: a notebook whose widget cell raises must be reported, not passed."""
    broken = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                         "source": "import ipywidgets as widgets\nwidgets.IntSlider(description='head')"},
                        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                         "source": "raise RuntimeError('the widget cell failed')"}],
              "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
              "nbformat": 4, "nbformat_minor": 5}
    (lab["copies"] / "broken.ipynb").write_text(json.dumps(broken))
    nb = Notebook(browser, lab, lab["copies"] / "broken.ipynb")
    try:
        nb.open()
        assert not nb.run_all()
        problems = nb.problems()
        assert any("RuntimeError: the widget cell failed" in p for p in problems), problems
        _widget_rendered(nb.cell("import ipywidgets"), "head")
    finally:
        nb.page.close()
