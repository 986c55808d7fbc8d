"""A compile blow-up in a new JAX release fails the suite instead of hanging it.

``benchmarks.compile_times`` calls each core program once with the compilation cache
off; here it runs in its own process under a time limit, so that a program that
compiles for minutes (JAX 0.12's XLA:CPU did, for ``multi_hash`` with one hash
function) is named in the failure rather than stalling a worker.
"""

import json
import pathlib
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PER_PROGRAM_S = 60  # today's slowest, the ranker's training step, takes about 13 s
TOTAL_S = 600


def test_every_core_program_compiles_within_a_minute(tmp_path):
    command = [sys.executable, "-m", "benchmarks.compile_times", "--limit", str(PER_PROGRAM_S)]
    try:
        done = subprocess.run(
            [*command, "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TOTAL_S,
        )
    except subprocess.TimeoutExpired as stopped:
        out = stopped.stdout or ""
        started = (out.decode() if isinstance(out, bytes) else out).strip().splitlines()
        pytest.fail(f"still compiling after {TOTAL_S} s; last started: {started[-1:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / f"compile_times-{jax.default_backend()}.json").read_text())
    names = [row["program"] for row in record["rows"]]
    assert "multi_hash, 1 hash" in names and "ranker training step" in names
    assert all(row["first_call_s"] < PER_PROGRAM_S for row in record["rows"])
