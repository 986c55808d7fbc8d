import os
from pathlib import Path

import pytest
from hypothesis import settings

# JIT compilation makes the first example slow; deadlines would only measure that.
settings.register_profile("book", deadline=None, max_examples=60)
settings.load_profile("book")

# xdist (--dist loadfile, --no-loadscope-reorder) hands whole files to its two workers in
# collection order. The slowest files go first (longest first, as measured in
# benchmarks/RESULTS.md section 8), so that short files even out the end of the run;
# any file not listed follows them in its usual order.
SLOWEST_FIRST = [
    "tests/test_mpzch.py",
    "tests/test_sharding.py",
    "chapters/05_retrieval.md",
    "chapters/04_multi_action_ranking.md",
    "tests/test_benchmarks.py",
    "chapters/07_freshness.md",
    "tests/test_models.py",
    "chapters/03_transformer.md",
    "tests/test_train.py",
    "chapters/06_zero_collision_hashing.md",
    "tests/test_lab.py",
    "chapters/01_hash_embeddings.md",
    "chapters/02_reduce_blocks.md",
]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


CHROMIUM = Path("/usr/bin/chromium")
# Headless, and none of Chromium's own network features: the machine is offline.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium (``/usr/bin/chromium``) launched headless through Playwright.

    Playwright never downloads a browser here. Without Chromium or Playwright the
    test skips, unless ``PHOENIX_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that
    a failure.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python (pip install -e '.[test]')"
    else:
        missing = None if CHROMIUM.exists() else f"{CHROMIUM} (Debian package chromium)"
    if missing:
        if os.environ.get("PHOENIX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"this test needs {missing}")
        pytest.skip(f"this test needs {missing}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts():
    """Screenshots and logs of tests: ``_build/test-artifacts/`` or ``$PHOENIX_ARTIFACTS_DIR``."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("PHOENIX_ARTIFACTS_DIR", root / "_build" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
