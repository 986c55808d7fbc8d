"""Every benchmark's --quick mode runs, prints its table and writes its files (so none rots).

Only that: timings are never asserted here (performance goals live in benchmarks/RESULTS.md).
The quick MPZCH run checks its own correctness claim: FBGEMM's slots equal ours when
FBGEMM is installed, and it exits with an error otherwise.
"""

import json
import os
import subprocess
import sys

import jax
import pytest

from benchmarks import ablations, book, compact, mpzch, pipeline, serving, training


@pytest.mark.parametrize(
    "module",
    [serving, mpzch, training, ablations, pipeline, book, compact],
    ids=lambda m: m.__name__,
)
def test_quick_mode_writes_its_results(module, tmp_path, capsys):
    summary = module.main(["--quick", "--out", str(tmp_path)])
    subject = module.__name__.rsplit(".", 1)[1]
    stem = tmp_path / f"{subject}-{jax.default_backend()}"
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["summary"] == json.loads(json.dumps(summary))
    assert record["rows"] and record["machine"]["backend"] == jax.default_backend()
    assert stem.with_suffix(".csv").read_text().count("\n") == len(record["rows"]) + 1
    assert stem.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert "wrote" in capsys.readouterr().out
    if module is serving:  # the two attention paths compute one function
        assert summary["max_rel_diff"] < 1e-5


def test_bad_arguments_stop_before_any_work(tmp_path):
    for module, argv in [
        (mpzch, ["--repeats", "0"]),
        (serving, ["--candidates", "0"]),
        (serving, ["--block", "0"]),
    ]:
        with pytest.raises(SystemExit):
            module.main([*argv, "--out", str(tmp_path)])


def test_sharding_benchmark_runs_on_simulated_devices(tmp_path):
    """The sharded benchmark needs several devices, so it runs in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.sharding", "--quick", "--devices", "4",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "sharding-cpu.json").read_text())
    assert [r["devices"] for r in record["rows"]] == [2, 4]
    for r in record["rows"]:
        assert r["kb_minimum"] < r["kb_explicit_tight"] <= r["kb_explicit"] < r["kb_gspmd"]
