"""Sharded tables, co-sharded MPZCH and the sharded training step on 8 simulated devices.

The checks live in tests/sharding_checks.py and run in child processes (this one keeps
JAX's single CPU device): one process of 8 devices, and two processes of 4 devices each
joined by jax.distributed with gloo collectives over 127.0.0.1.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import sharding_checks

SCRIPT = pathlib.Path(sharding_checks.__file__)
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "checks.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--devices", "8", "--out", str(out)],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(sharding_checks.CHECKS))
def test_on_eight_devices(outcomes, name):
    assert outcomes[name] == "ok", outcomes[name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_gloo_match_one_device(tmp_path):
    port = free_port()
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--devices",
                "8",
                "--processes",
                "2",
                "--process",
                str(i),
                "--port",
                str(port),
                "--out",
                str(out),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    for out in outs:
        outcome = json.loads(out.read_text())
        assert set(outcome) == {"mpzch", "training"}
        for name, result in outcome.items():
            assert result == "ok", f"{out.name} {name}: {result}"
