"""Chapter 1 as a reader meets it: run and saved in JupyterLab, then in the HTML book.

JupyterLab starts the way ``make lab`` does (same settings overrides), on 127.0.0.1
with a random port and token, in a scratch copy of the chapter so the repository is
never written. A real (headless) Chromium opens the chapter by clicking its name in
the file browser, runs every cell from the Run menu and saves. Then:

* a known output of the chapter appears on the page;
* no cell shows an error except the one tagged ``raises-exception``;
* the paired notebook was written with those outputs, and the chapter's text file
  is byte-for-byte what it was (outputs live only in the notebook).

The HTML book (jupyter-book with ``make html``'s settings and ``-W``) is then built
with Chapter 1's outputs taken from jupyter-book's execution cache, seeded with the
notebook JupyterLab saved, so the chapter is not run a third time (nbval runs it too);
the other chapters are rendered without outputs. Checks on the pages: every chapter
exists, executed figures are embedded, numbered and referenced, math goes to the
vendored MathJax and is typeset in the browser, no page loads anything from the
network, and every internal link resolves.

Screenshots and JupyterLab's log go to the test artifacts (``_build/test-artifacts/``).
The browser is the ``chromium`` fixture of ``conftest.py``: Debian's package, installed
by ``.ci/run``.
"""

import functools
import html.parser
import http.server
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_hash_embeddings"
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))
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


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory, chromium, artifacts):
    """Chapter 1 run and saved in JupyterLab: the scratch folder and what the page showed."""
    tmp_path = tmp_path_factory.mktemp("lab")
    (tmp_path / "chapters").mkdir()
    source = ROOT / "chapters" / f"{CHAPTER}.md"
    chapter = tmp_path / "chapters" / source.name
    shutil.copyfile(source, chapter)
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # Jupytext pairing

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
        shown = known.is_visible()
        page.keyboard.press("Control+s")
        page.locator(".jp-mod-dirty").wait_for(state="detached", timeout=15_000)
    finally:
        page.screenshot(path=artifacts / "jupyterlab-chapter-01.png")
        _stop_lab(lab, port, token)
        log.close()
    return {"folder": tmp_path, "shown": shown}


def test_chapter_one_runs_and_saves_in_jupyterlab(lab_run):
    assert lab_run["shown"], f"{KNOWN_OUTPUT!r} is not visible on the page"
    # What the browser ran and saved: every code cell, in order, with no error
    # output except the expected one (the cell tagged raises-exception, a negative ID).
    tmp_path = lab_run["folder"]
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
    original = (ROOT / "chapters" / f"{CHAPTER}.md").read_bytes()
    chapter = tmp_path / "chapters" / f"{CHAPTER}.md"
    assert chapter.read_bytes() == original, "saving from JupyterLab changed the chapter text"


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.refs.append((tag, attrs[key]))


@pytest.fixture(scope="module")
def site(tmp_path_factory, lab_run):
    """The HTML book as ``make html`` builds it, with ``-W``: Chapter 1's outputs come from
    jupyter-book's execution cache, seeded with the notebook JupyterLab saved (the cache
    ``make html`` reuses on a rebuild); the other chapters are rendered without outputs."""
    subprocess.run(["make", "-s", "mathjax"], cwd=ROOT, check=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["exclude_patterns"] = [f"*{c.stem}*" for c in CHAPTERS[1:]]
    # Unexecuted chapters have no figures, so references to them cannot resolve here
    # (make html builds everything with every warning an error).
    config["sphinx"]["config"]["suppress_warnings"].append("ref.numref")
    # The copy lives elsewhere: its local extensions' folders must point back here.
    extensions = config["sphinx"]["local_extensions"]
    config["sphinx"]["local_extensions"] = {name: str(ROOT / p) for name, p in extensions.items()}
    out = tmp_path_factory.mktemp("book")
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    saved = lab_run["folder"] / "notebooks" / f"{CHAPTER}.ipynb"
    get_cache(out / "_build" / ".jupyter_cache").cache_notebook_file(saved, check_validity=False)
    jb = Path(sys.executable).parent / "jupyter-book"
    build = [jb, "build", ".", "--config", out / "_config.yml", "--path-output", out, "-W", "-n"]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # The cache matched Chapter 1's code cells, so nothing was executed again.
    assert f"{CHAPTER}.md: Using cached notebook" in done.stdout, done.stdout[-3000:]
    assert "Executing notebook" not in done.stdout
    return out / "_build" / "html"


def test_every_chapter_page_exists_and_executed_figures_are_embedded(site):
    for chapter in CHAPTERS:
        assert (site / "chapters" / f"{chapter.stem}.html").is_file(), chapter.stem
    first = (site / "chapters" / f"{CHAPTER}.html").read_text()
    assert first.count("<img") >= 2  # Chapter 1's two figures, from its executed outputs
    assert "cell_output" in first  # (its one traceback is a cell tagged raises-exception)


def test_math_uses_the_vendored_mathjax_and_nothing_loads_from_the_network(site):
    for page in site.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for tag, ref in parser.refs:
            if tag in ("script", "link", "img") and urlsplit(ref).scheme:
                pytest.fail(f"{page.name} loads {ref} from the network")
    first = (site / "chapters" / f"{CHAPTER}.html").read_text()
    assert 'class="math' in first
    parser = Links()
    parser.feed(first)
    mathjax = [r for t, r in parser.refs if t == "script" and "tex-chtml.js" in r]
    assert mathjax, "no MathJax script tag"
    target = (site / "chapters" / urlsplit(mathjax[0]).path).resolve()
    assert target.is_file(), target


def test_internal_links_resolve(site):
    pages = [p for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_")]
    ids = {}
    for page in pages:
        parser = Links()
        parser.feed(page.read_text())
        ids[page.resolve()] = parser
    for page, parser in ids.items():
        for _, ref in parser.refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / parts.path).resolve() if parts.path else page
            assert target.exists(), f"{page.name}: broken link {ref}"
            if parts.fragment and target.suffix == ".html":
                assert parts.fragment in ids[target].ids, f"{page.name}: no anchor {ref}"


def test_figures_are_numbered_and_referenced_and_chapters_link_to_each_other(site):
    first = (site / "chapters" / f"{CHAPTER}.html").read_text()
    for number in (1, 2):  # numbered through the book; Chapter 1 has the first two
        assert f'<span class="caption-number">Fig. {number} </span>' in first, number
    parser = Links()
    parser.feed(first)
    assert "fig-01-collision-vs-load" in parser.ids
    assert ("a", "#fig-01-collision-vs-load") in parser.refs  # the {numref} in the prose
    second = Links()
    second.feed((site / "chapters" / f"{CHAPTERS[1].stem}.html").read_text())
    assert ("a", f"{CHAPTER}.html") in second.refs  # "[Chapter 1](01_....md)"
    landing = (site / "index.html").read_text()
    assert "two_stage_pipeline.svg" in landing


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_math_is_typeset_in_a_browser(site, chromium, artifacts):
    handler = functools.partial(QuietHandler, directory=site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = chromium.new_page()
    failed = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    try:
        port = server.server_address[1]
        page.goto(f"http://127.0.0.1:{port}/chapters/{CHAPTER}.html")
        page.locator("mjx-container").first.wait_for(timeout=30_000)
        typeset = page.locator("mjx-container").count()
        source = page.locator(".math").count()
        page.screenshot(path=artifacts / "html-chapter-01.png")
    finally:
        server.shutdown()
    assert typeset >= source > 0, (typeset, source)
    assert page.locator("mjx-merror").count() == 0
    assert not failed, failed
