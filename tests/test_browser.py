"""Notebook 08 in a real browser: JupyterLab, headless Chromium driven by Playwright.

A widget that works headless can still fail to render in JupyterLab ("Error displaying widget", or an ipywidgets /
jupyterlab_widgets version mismatch); only a browser shows it. This test

1. starts JupyterLab on 127.0.0.1 with a random token, on a copy of notebook 08 in a temporary folder, with
   ``MEMLAB_FAST=1`` so the notebook trains its tiny models in seconds;
2. opens the notebook in a fresh workspace, runs all cells, waits for the kernel to be idle with every code cell run,
   saves it, and checks the saved notebook for error outputs, the page for "Error displaying widget" and the
   dashboards for a kept exception;
3. moves the LSH playground's τ slider with the keyboard and waits until the dashboard's image changes;
4. saves screenshots under ``runs/browser/`` and closes the browser, the kernel and the server.

It takes a minute or two, so it runs only when asked: ``make browser-test`` (``MEMLAB_BROWSER_TEST=1``). It skips,
saying why, without Chromium (``apt-get install chromium``, or ``MEMLAB_CHROMIUM=/path/to/chrome``) or Playwright
(``pip install -e '.[browser]'``; Playwright drives the installed Chromium, no browser download is needed).
Every wait has a deadline, and the whole test stops after ``MEMLAB_BROWSER_TIMEOUT`` seconds (default 600).
"""
from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_bucket_and_key_explorer.ipynb"
SHOTS = ROOT / "runs" / "browser"
BUDGET = float(os.environ.get("MEMLAB_BROWSER_TIMEOUT", "600"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("MEMLAB_BROWSER_TEST") != "1",
                       reason="the browser test takes 1-3 min: run it with `make browser-test` "
                              "(MEMLAB_BROWSER_TEST=1)"),
]


def find_chromium() -> str | None:
    """$MEMLAB_CHROMIUM, else the first of chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("MEMLAB_CHROMIUM"):
        return os.environ["MEMLAB_CHROMIUM"] if Path(os.environ["MEMLAB_CHROMIUM"]).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the browser test ran past its budget of {BUDGET:.0f} s")
        return left if cap is None else min(cap, left)

    def ms(self, cap: float) -> float:
        return 1000 * self.left(cap)


def start_server(folder: Path, port: int, token: str, env: dict, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
            "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: run commands, read kernel status
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    return subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_server(server: subprocess.Popen, port: int, token: str, deadline: Deadline, log: Path) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            deadline.left()
            time.sleep(0.5)


def stop_server(server: subprocess.Popen, port: int, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its whole process group is gone."""
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST")
        urllib.request.urlopen(request, timeout=5).read()
        server.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    else:
        try:  # kernels the server started share its process group
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


#: JavaScript: the notebook's kernel is idle and every code cell has an execution count.
ALL_RUN = """(() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.sessionContext || w.sessionContext.kernelDisplayStatus !== 'idle') return false;
  const cells = Array.from(w.content.model.cells).filter(c => c.type === 'code' && c.sharedModel.getSource().trim());
  return cells.length > 0 && cells.every(c => c.executionCount !== null);
})()"""
KERNEL_IDLE = """(() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.kernelDisplayStatus === 'idle');
})()"""


def test_notebook_08_runs_and_its_widgets_render_in_jupyterlab(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found: apt-get install chromium (or set MEMLAB_CHROMIUM=/path/to/chrome)")
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[browser]'")
    assert NOTEBOOK.exists(), f"{NOTEBOOK} is missing: execute notebooks/08_bucket_and_key_explorer.py first"
    deadline = Deadline(BUDGET)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)  # JupyterLab saves the run: never into the committed file
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    # render every cell (JupyterLab 4 draws only the cells in view by default), and no news pop-up
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, MEMLAB_FAST="1", JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), OMP_NUM_THREADS="1")
    env.pop("MPLBACKEND", None)  # the kernel must use the inline backend, or figures vanish
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    server = start_server(tmp_path, port, token, env, log)
    try:
        wait_for_server(server, port, token, deadline, log)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1900})  # a whole dashboard in view
                page.set_default_timeout(deadline.ms(120))
                workspace = f"memlab-{secrets.token_hex(4)}"
                page.goto(f"http://127.0.0.1:{port}/lab/workspaces/{workspace}/tree/{NOTEBOOK.name}"
                          f"?reset&token={token}")
                page.wait_for_function(KERNEL_IDLE, timeout=deadline.ms(180), polling=500)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.wait_for_function(ALL_RUN, timeout=deadline.ms(BUDGET), polling=1000)
                page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(SHOTS / "notebook_after_run_all.png"))

                saved = json.loads((tmp_path / NOTEBOOK.name).read_text())
                errors = [o for c in saved["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                          if o.get("output_type") == "error"]
                assert not errors, f"kernel error in notebook 08: {errors[0]['ename']}: {errors[0]['evalue']}"
                assert "Error displaying widget" not in page.content()

                dashboards = page.locator(".memlab-dashboard")
                assert dashboards.count() == 3, f"expected 3 rendered dashboards, found {dashboards.count()}"
                for i in range(3):
                    board = dashboards.nth(i)
                    assert board.locator("img").count() == 1
                    assert "Traceback" not in board.inner_text(), f"dashboard {i} kept an exception"
                    board.screenshot(path=str(SHOTS / f"dashboard_{i}.png"))

                playground = dashboards.filter(has_text="LSH playground").first
                image = playground.locator("img").first
                image.scroll_into_view_if_needed()
                before = image.screenshot(path=str(SHOTS / "lsh_playground_before.png"))
                src = image.get_attribute("src")
                tau = playground.locator(".widget-slider").filter(has_text="τ (bits)").first
                readout = tau.locator(".widget-readout").first
                old = readout.inner_text()
                tau.locator(".noUi-handle").first.focus()
                page.keyboard.press("ArrowLeft")  # τ 8 → 7: the kernel redraws, the image changes
                page.wait_for_function("([el, src]) => el.getAttribute('src') !== src",
                                       arg=[image.element_handle(), src], timeout=deadline.ms(120), polling=250)
                page.wait_for_timeout(500)
                after = image.screenshot(path=str(SHOTS / "lsh_playground_after.png"))
                assert readout.inner_text() != old, "the τ slider did not move"
                assert after != before, "the rendered plot did not change after moving the τ slider"
                assert "Traceback" not in playground.inner_text()
                playground.screenshot(path=str(SHOTS / "lsh_playground_dashboard_after.png"))
            finally:
                browser.close()
    finally:
        stop_server(server, port, token)
    assert server.poll() is not None
