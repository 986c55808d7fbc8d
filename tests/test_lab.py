"""Chapter 1 in JupyterLab, driven in a real (headless) Chromium as a reader would.

The test starts JupyterLab the way ``make lab`` does (same settings overrides),
on 127.0.0.1 with a random port and token, in a scratch copy of the chapter so
the repository is never written. It opens the chapter by clicking its name in
the file browser, runs every cell from the Run menu, saves, and then checks:

* a known output of the chapter appears on the page;
* no cell shows an error except the one tagged ``raises-exception``;
* the paired notebook was written with those outputs, and the chapter's text
  file is byte-for-byte what it was (outputs live only in the notebook).

A screenshot and JupyterLab's log go to the test artifacts (``_build/test-artifacts/``).
The browser is the ``chromium`` fixture of ``conftest.py``: Debian's package,
installed by ``.ci/run``.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_hash_embeddings"
# Printed by Chapter 1's second code cell (memory of one row per user).
KNOWN_OUTPUT = "one row per user:      1.024 TB"
RUN_TIMEOUT_S = 90


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_lab(workdir, port, token, log):
    """JupyterLab serving ``workdir``, with the repository's settings overrides."""
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(workdir / ".jupyter"))
    env.pop("PHOENIX_FIGURES_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--notebook-dir={workdir}",
        f"--LabApp.app_settings_dir={ROOT / 'lab'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"JupyterLab did not answer within 60 s; see {log.name}")


def _stop_lab(proc, port, token):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=5)
        proc.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def _wait_until_run(page):
    """Wait for the last code cell's prompt to show an execution count, e.g. ``[20]:``.

    Run All executes in order, so that is the end of the run (or of the cells run
    before an error stopped it: the saved notebook tells). Cells scrolled out of
    view are not rendered by JupyterLab, so only the last one is read here.
    """
    last = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").last
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        prompt = last.inner_text().strip()
        if re.fullmatch(r"\[\d+\]:", prompt):
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the last cell did not run within {RUN_TIMEOUT_S} s: {prompt!r}")


def test_chapter_one_runs_and_saves_in_jupyterlab(tmp_path, chromium, artifacts):
    (tmp_path / "chapters").mkdir()
    source = ROOT / "chapters" / f"{CHAPTER}.md"
    chapter = tmp_path / "chapters" / source.name
    shutil.copyfile(source, chapter)
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # Jupytext pairing
    original = chapter.read_bytes()

    port, token = _free_port(), secrets.token_hex(16)
    log = (artifacts / "jupyterlab.log").open("w")
    lab = _start_lab(tmp_path, port, token, log)
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"http://127.0.0.1:{port}/lab/tree/chapters?token={token}")
        page.locator(".jp-DirListing-item", has_text=source.name).dblclick()
        page.locator(".jp-NotebookPanel").wait_for(timeout=30_000)
        # Opened as a notebook (not as a Markdown text file); its kernel is up.
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        _wait_until_run(page)

        known = page.get_by_text(KNOWN_OUTPUT)
        known.scroll_into_view_if_needed()
        assert known.is_visible()
        page.keyboard.press("Control+s")
        page.locator(".jp-mod-dirty").wait_for(state="detached", timeout=15_000)
    finally:
        page.screenshot(path=artifacts / "jupyterlab-chapter-01.png")
        _stop_lab(lab, port, token)
        log.close()

    # What the browser ran and saved: every code cell, in order, with no error
    # output except the expected one (the cell tagged raises-exception, a negative ID).
    notebook = json.loads((tmp_path / "notebooks" / f"{CHAPTER}.ipynb").read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code_cells] == list(range(1, len(code_cells) + 1))
    errors = [
        (cell["metadata"].get("tags", []), out)
        for cell in code_cells
        for out in cell["outputs"]
        if out["output_type"] == "error" or out.get("name") == "stderr"
    ]
    assert len(errors) == 1, errors
    tags, out = errors[0]
    assert "raises-exception" in tags and out["ename"] == "ValueError", errors
    printed = "".join(
        "".join(o.get("text", "")) for c in code_cells for o in c["outputs"] if "text" in o
    )
    assert KNOWN_OUTPUT in printed
    assert chapter.read_bytes() == original, "saving from JupyterLab changed the chapter text"
