"""Multi-host: two processes on 127.0.0.1 (4 fake CPU devices each) run one partitioned
Scion step over a mesh spanning both, and match the single-process plain update."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import scion_jax

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import multihost_worker  # noqa: E402

TIMEOUT_S = 150


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(tmp_path: Path, task: str, num_processes: int = 2) -> dict[str, np.ndarray]:
    """Runs `task` of tests/multihost_worker.py in `num_processes` local processes."""
    out = tmp_path / "result.npz"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "multihost_worker.py"), str(i), str(num_processes),
             str(port), str(out), task],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(num_processes)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"multi-host processes did not finish in {TIMEOUT_S}s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    with np.load(out) as data:
        return dict(data)


@pytest.mark.slow
def test_two_process_partitioned_step_matches_single_process(tmp_path):
    got = run_processes(tmp_path, "scion_step")
    grads = multihost_worker.make_grads()
    opt = scion_jax.scion(1.0, multihost_worker.rules(), ns_dtype="float32")
    want = jax.device_get(jax.jit(lambda g: opt.update(g, opt.init(g))[0])(grads))
    assert set(got) == set(want)
    flat = lambda t: np.concatenate([np.asarray(t[k], np.float64).ravel() for k in want])  # noqa: E731
    err = np.linalg.norm(flat(got) - flat(want)) / np.linalg.norm(flat(want))
    assert err <= 1e-6, err
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=2e-6 * np.abs(want[k]).max())
