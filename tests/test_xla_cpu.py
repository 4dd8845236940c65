"""The project's XLA:CPU options (`scion_jax.xla_cpu`): set once, never over the user's,
only on a tested jaxlib, and accepted by XLA (a computation under them gives the same
numbers as without); the CPU device count, one per core as many as divide the batch."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from scion_jax import xla_cpu

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
    assert xla_cpu.cpu_devices(16, cores=2) == 2
    assert xla_cpu.cpu_devices(16, cores=3) == 2  # 3 does not divide 16
    assert xla_cpu.cpu_devices(12, cores=8) == 6
    assert xla_cpu.cpu_devices(7, cores=4) == 1
    assert xla_cpu.cpu_devices(4, cores=64) == 4
    assert 1 <= xla_cpu.cpu_devices(16) <= len(os.sched_getaffinity(0))


def test_set_flags_sets_the_device_count_unless_the_user_did(monkeypatch):
    monkeypatch.setattr(xla_cpu.importlib.metadata, "version", _jaxlib("0.11.0"))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert xla_cpu.set_flags(cpu_devices=1) == []  # one device: nothing to set
    # A stable option: set on an untested jaxlib too.
    assert xla_cpu.set_flags(cpu_devices=2) == ["--xla_force_host_platform_device_count=2"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert xla_cpu.set_flags(cpu_devices=2) == []
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"


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
