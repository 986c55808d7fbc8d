"""The HTML book: a quick build (Chapter 1 executed, the rest rendered without outputs)
with -W, then checks on the pages: every chapter exists, executed figures are
embedded, numbered and referenced, math goes to the vendored MathJax and is typeset in
a real browser, no page loads anything from the network, and every internal link
resolves."""

import functools
import html.parser
import http.server
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.md"))


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
def site(tmp_path_factory):
    subprocess.run(["make", "-s", "mathjax"], cwd=ROOT, check=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["exclude_patterns"] = [f"*{c.stem}*" for c in CHAPTERS[1:]]
    # Unexecuted chapters have no figures, so references to them cannot resolve here
    # (make html builds everything with every warning an error).
    config["sphinx"]["config"]["suppress_warnings"].append("ref.numref")
    out = tmp_path_factory.mktemp("book")
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).parent / "jupyter-book"
    build = [jb, "build", ".", "--config", out / "_config.yml", "--path-output", out, "-W", "-n"]
    done = subprocess.run(build, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "_build" / "html"


def test_every_chapter_page_exists_and_executed_figures_are_embedded(site):
    for chapter in CHAPTERS:
        assert (site / "chapters" / f"{chapter.stem}.html").is_file(), chapter.stem
    first = (site / "chapters" / f"{CHAPTERS[0].stem}.html").read_text()
    assert first.count("<img") >= 2  # Chapter 1's two figures, from its executed outputs
    assert "cell_output" in first  # (its one traceback is a cell tagged raises-exception)


def test_math_uses_the_vendored_mathjax_and_nothing_loads_from_the_network(site):
    for page in site.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for tag, ref in parser.refs:
            if tag in ("script", "link", "img") and urlsplit(ref).scheme:
                pytest.fail(f"{page.name} loads {ref} from the network")
    first = (site / "chapters" / f"{CHAPTERS[0].stem}.html").read_text()
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
    first = (site / "chapters" / f"{CHAPTERS[0].stem}.html").read_text()
    for number in (1, 2):  # numbered through the book; Chapter 1 has the first two
        assert f'<span class="caption-number">Fig. {number} </span>' in first, number
    parser = Links()
    parser.feed(first)
    assert "fig-01-collision-vs-load" in parser.ids
    assert ("a", "#fig-01-collision-vs-load") in parser.refs  # the {numref} in the prose
    second = Links()
    second.feed((site / "chapters" / f"{CHAPTERS[1].stem}.html").read_text())
    assert ("a", f"{CHAPTERS[0].stem}.html") in second.refs  # "[Chapter 1](01_....md)"
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
        page.goto(f"http://127.0.0.1:{port}/chapters/{CHAPTERS[0].stem}.html")
        page.locator("mjx-container").first.wait_for(timeout=30_000)
        typeset = page.locator("mjx-container").count()
        source = page.locator(".math").count()
        page.screenshot(path=artifacts / "html-chapter-01.png")
    finally:
        server.shutdown()
    assert typeset >= source > 0, (typeset, source)
    assert page.locator("mjx-merror").count() == 0
    assert not failed, failed
