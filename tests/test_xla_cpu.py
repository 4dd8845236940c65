"""The project's XLA:CPU options (`scion_jax.xla_cpu`): set once, never over the user's,
only on a tested jaxlib, and accepted by XLA (a computation under them gives the same
numbers as without); the CPU device count, one per core as many as divide the batch."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from scion_jax import xla_cpu
from scion_jax.train.config import base_config, cpu_devices

# A norm-like reduction (what the option moves out of YNNPACK), printed to full precision.
PROGRAM = (
    "import jax, jax.numpy as jnp\n"
    "x = jax.random.normal(jax.random.key(0), (64, 256, 96))\n"
    "f = jax.jit(lambda x: (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True))).sum(0))\n"
    "print(f(x)[3, :4].tolist())\n"
)


def _jaxlib(release: str):
    return lambda name: release if name == "jaxlib" else importlib.metadata.version(name)


def test_set_flags_adds_each_option_once_and_keeps_the_users(monkeypatch):
    monkeypatch.setattr(xla_cpu.importlib.metadata, "version", _jaxlib("0.10.2"))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    added = xla_cpu.set_flags()
    assert added == ["--xla_cpu_experimental_ynn_fusion_type=-reduce"]
    assert os.environ["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=8 "
        "--xla_cpu_experimental_ynn_fusion_type=-reduce"
    )
    assert xla_cpu.set_flags() == []  # already there
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert xla_cpu.set_flags() == []  # the user's choice stands
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"


def test_set_flags_adds_nothing_on_an_untested_jaxlib(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(xla_cpu.importlib.metadata, "version", _jaxlib("0.11.0"))
    assert xla_cpu.set_flags() == [] and "XLA_FLAGS" not in os.environ


def test_cpu_devices_one_per_core_as_many_as_divide_the_batch():
    assert xla_cpu.MAX_CPU_DEVICES == 2  # what was measured
    assert xla_cpu.cpu_devices(16, cores=2) == 2
    assert xla_cpu.cpu_devices(16, cores=64) == 2  # capped
    assert xla_cpu.cpu_devices(15, cores=2) == 1  # 2 does not divide 15
    assert xla_cpu.cpu_devices(16, cores=1) == 1
    assert xla_cpu.cpu_devices(0, cores=2) == 1  # nothing divides: one (validate() says why)
    assert xla_cpu.cpu_devices(16) in (1, 2)


def test_run_py_devices_only_for_a_single_process_default_mesh():
    config = base_config()
    config.batch_size, config.microbatches = 16, 2
    assert cpu_devices(config, True, cores=4) == 2
    assert cpu_devices(config, False, cores=4) == 1  # multi-process: its own devices
    config.microbatches = 32  # more microbatches than sequences: validate() says so
    assert cpu_devices(config, True, cores=4) == 1
    config.microbatches, config.mesh.data = 1, 1  # an explicit mesh is the user's
    assert cpu_devices(config, True, cores=4) == 1
    config.mesh.data, config.mesh.fsdp = -1, 2
    assert cpu_devices(config, True, cores=4) == 1


def test_set_flags_sets_the_device_count_unless_the_user_did(monkeypatch):
    monkeypatch.setattr(xla_cpu.importlib.metadata, "version", _jaxlib("0.10.2"))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_cpu.set_flags(1) == ["--xla_cpu_experimental_ynn_fusion_type=-reduce"]
    monkeypatch.delenv("XLA_FLAGS")
    assert xla_cpu.set_flags(2) == [
        "--xla_cpu_experimental_ynn_fusion_type=-reduce",
        "--xla_force_host_platform_device_count=2",
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",  # no collective deadlocks
    ]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert xla_cpu.set_flags(2) == ["--xla_cpu_experimental_ynn_fusion_type=-reduce"]
    assert "device_count=8 " in os.environ["XLA_FLAGS"]  # the user's devices stand
    monkeypatch.setattr(xla_cpu.importlib.metadata, "version", _jaxlib("0.11.0"))
    monkeypatch.delenv("XLA_FLAGS")
    assert xla_cpu.set_flags(2) == [] and "XLA_FLAGS" not in os.environ  # untested jaxlib


@pytest.mark.skipif(
    xla_cpu.jaxlib_release() not in xla_cpu.TESTED_JAXLIB, reason="an untested jaxlib"
)
def test_xla_accepts_the_flags_and_the_numbers_stay():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run = lambda env: subprocess.run(  # noqa: E731
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120
    )
    plain = run(env)
    flagged = run({**env, "XLA_FLAGS": " ".join(f"--{k}={v}" for k, v in xla_cpu.FLAGS)})
    assert plain.returncode == 0 and flagged.returncode == 0, flagged.stderr[-2000:]
    got = [float(v) for v in flagged.stdout.strip(" []\n").split(",")]
    want = [float(v) for v in plain.stdout.strip(" []\n").split(",")]
    assert got == pytest.approx(want, rel=1e-5)
