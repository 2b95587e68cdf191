"""The interactive path, as a student meets it: JupyterLab in a real browser (Debian's chromium, driven by
selenium through chromium-driver). Notebook 1 runs top to bottom with smoke-sized parameters, the explorer
widget renders, and typing a prompt and moving the layer slider change the table it shows.

Needs `apt-get install chromium chromium-driver` and `pip install -e .[notebooks,test]`; skipped (with the
reason) when any is missing, unless EEUTILS_REQUIRE_BROWSER=1 (set by .ci/run) turns the skip into a failure.
Screenshots go to $EEUTILS_SCREENSHOTS (default: results/browser/).
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_logit_lens.ipynb"
PARAMS = {"SMOKE": True, "INTERACTIVE": True, "N_DOCS": 4, "N_BOOT": 10}
NEW_PROMPT = "In the beginning was the Word"
RUN_TIMEOUT = 300  # seconds for notebook 1 with smoke parameters (about 30 s on 2 busy CPU cores)

# The notebook's state, read from JupyterLab's own models (window.jupyterapp, exposed by the server flag below).
NOTEBOOK_STATE_JS = """
const app = window.jupyterapp; const panel = app && app.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const code = panel.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
code.forEach((c, i) => { const outs = c.model.outputs.toJSON();
  outs.filter(o => o.output_type === 'error').forEach(o => errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`)); });
return {kernel: kernel ? kernel.status : null, n_code: code.length,
        n_done: code.filter(c => c.model.executionCount !== null).length, errors: errors};
"""


def requirement(ok: bool, reason: str):
    if not ok:
        if os.environ.get("EEUTILS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EEUTILS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def find_browser() -> tuple[str, str]:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    requirement(browser is not None and driver is not None,
                "no chromium / chromedriver on PATH (Debian: apt-get install -y chromium chromium-driver)")
    for mod, pkg in (("selenium", "selenium (pip install -e .[test])"),
                     ("jupyterlab", "jupyterlab (pip install -e .[notebooks])"),
                     ("papermill", "papermill (pip install -e .[notebooks])")):
        requirement(importlib.util.find_spec(mod) is not None, f"{pkg} is not installed")
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_notebook(work: Path) -> Path:
    """Notebook 1 with smoke parameters in a cell after `parameters` (what papermill injects)."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    values = {**PARAMS, "OUT_DIR": str(work / "out")}
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    dest = work / NOTEBOOK.name
    nbformat.write(nb, dest)
    return dest


def stop_group(proc: subprocess.Popen):
    """SIGTERM the server's process group (the server and the kernels it started), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            time.sleep(0.5)  # kernels leave after the server
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 (random free port, random token), in its own process group."""
    work = tmp_path / "work"
    work.mkdir()
    prepare_notebook(work)
    port, token = free_port(), secrets.token_hex(16)
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonpath,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no news / update pop-ups over the notebook
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": f"{base}/lab/tree/{NOTEBOOK.name}?token={token}&reset", "log": tmp_path / "jupyterlab.log"}
    finally:
        stop_group(server)
        log.close()


@pytest.fixture
def browser():
    chromium, chromedriver = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not try to download a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for(fn, timeout: float, what: str, poll: float = 0.5):
    """Poll `fn` until it returns something truthy; an element replaced under our feet counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_notebook1_explorer_in_jupyterlab(lab, browser):
    shots = Path(os.environ.get("EEUTILS_SCREENSHOTS", REPO / "results" / "browser"))
    shots.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        drive_notebook1(browser, lab["url"], shots)
    except BaseException:
        browser.save_screenshot(str(shots / "failure.png"))
        print(f"\nscreenshot of the failure: {shots / 'failure.png'}; server log: {lab['log']}")
        raise
    print(f"\nbrowser test: {time.monotonic() - t0:.0f} s in the browser; screenshots in {shots}")


def drive_notebook1(browser, url: str, shots: Path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(url)
    state = lambda: browser.execute_script(NOTEBOOK_STATE_JS)  # noqa: E731
    wait_for(lambda: (s := state()) and s["kernel"] == "idle" and s["n_code"] > 0, 120, "the notebook and its kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished():
        s = state()
        if s and s["kernel"] == "idle" and (s["errors"] or s["n_done"] == s["n_code"]):
            return s
        return None

    s = wait_for(finished, RUN_TIMEOUT, "Run All to finish", poll=1.0)
    assert not s["errors"], f"cells errored: {s['errors']}"
    assert s["n_done"] == s["n_code"]

    # the explorer: a VBox holding the prompt box, the layer slider and the output with the top-tokens table
    explorer = wait_for(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-vbox")
                                 if e.find_elements(By.CSS_SELECTOR, ".widget-text input")
                                 and e.find_elements(By.CSS_SELECTOR, "table")], 60, "the explorer widget")[0]
    layer = next(e for e in explorer.find_elements(By.CSS_SELECTOR, ".widget-hslider")
                 if e.find_element(By.CSS_SELECTOR, ".widget-label").text == "layer")
    # read in one script each: the output areas replace their children while the kernel redraws them
    js = lambda code: browser.execute_script(code, explorer)  # noqa: E731
    table = lambda: js("const t = arguments[0].querySelector('table'); return t ? t.innerText : '';")  # noqa: E731
    inputs = lambda: js(  # noqa: E731  the "input" column, joined, without spaces
        "return Array.from(arguments[0].querySelectorAll('table tbody tr td:nth-of-type(2)'))"
        ".map(td => td.innerText).join('').replace(/\\s/g, '');")
    figure = lambda: js(  # noqa: E731
        "return Array.from(arguments[0].querySelectorAll('img')).map(i => i.src.slice(-64)).join('');")
    layer_shown = lambda: layer.find_element(By.CSS_SELECTOR, ".widget-readout").text  # noqa: E731

    def follows(old_table: str, old_figure: str, what: str) -> str:
        """Wait until both the table and the heatmap below it are redrawn; return the new table text."""
        new = wait_for(lambda: (t := table()) != old_table and t, 60, f"the table to follow {what}")
        wait_for(lambda: figure() not in ("", old_figure), 60, f"the figure to follow {what}")
        return new
    before, figure_before = table(), figure()
    assert figure_before, "the explorer shows no figure"
    assert "top" in before and "final_top1" in before
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", explorer)
    browser.save_screenshot(str(shots / "01_explorer_rendered.png"))

    box = explorer.find_element(By.CSS_SELECTOR, ".widget-text input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(NEW_PROMPT, Keys.ENTER)  # continuous_update=False: sent on Enter
    after_prompt = follows(before, figure_before, "the new prompt")
    figure_prompt = figure()
    assert inputs().endswith(NEW_PROMPT.replace(" ", "")), inputs()
    browser.save_screenshot(str(shots / "02_explorer_new_prompt.png"))

    layer_before = layer_shown()
    handle = layer.find_element(By.CSS_SELECTOR, ".noUi-handle")
    ActionChains(browser).drag_and_drop_by_offset(handle, -400, 0).perform()  # to layer 0: a released drag
    wait_for(lambda: layer_shown() != layer_before, 30, "the layer slider to move")
    assert layer_shown() == "0"
    follows(after_prompt, figure_prompt, "the layer slider")
    assert inputs().endswith(NEW_PROMPT.replace(" ", ""))  # same prompt, another layer's top tokens
    assert "layer 0/" in explorer.find_element(By.CSS_SELECTOR, ".widget-html").text
    browser.save_screenshot(str(shots / "03_explorer_layer_0.png"))
