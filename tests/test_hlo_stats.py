"""scion_jax.hlo_stats: a compiled step's instructions by kind, joined with a trace."""

import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import pytest

import scion_jax
from scion_jax import hlo_stats


def _model_and_update(x, w, g):
    """A matmul with an elementwise tail (model-like) and a Newton–Schulz (optimizer)."""
    y = jnp.tanh(jnp.matmul(x, w, preferred_element_type=jnp.float32)) * 3.0
    return y.sum(), scion_jax.newton_schulz(g, "muon", 2, jnp.float32)


def _args():
    k = jax.random.split(jax.random.key(0), 3)
    return (
        jax.random.normal(k[0], (64, 96)),
        jax.random.normal(k[1], (96, 80)),
        jax.random.normal(k[2], (48, 64)),
    )


def test_classify_tells_optimizer_matmul_and_elementwise_apart():
    compiled = jax.jit(_model_and_update).lower(*_args()).compile()
    hlo = compiled.as_text()
    categories = hlo_stats.classify(hlo)
    assert set(categories.values()) <= set(hlo_stats.CATEGORIES)
    # Every dot of the Newton–Schulz (source: scion_jax/newton_schulz.py) is optimizer work;
    # the model's one dot (this file) is a matmul.
    dots = {
        name: categories[name]
        for name in categories
        if any(
            f"%{name} = " in line and (" dot(" in line or "fusion(" in line)
            for line in hlo.splitlines()
        )
    }
    assert "optimizer" in dots.values() and "matmul" in dots.values()
    assert "elementwise" in categories.values()
    assert hlo_stats.module_name(hlo).startswith("jit_")


def test_kernel_times_subtracts_nested_kernels():
    """A while loop's event encloses its body's kernels on the same thread: exclusive
    times; other modules' events and threads are kept apart."""
    ev = lambda ts, dur, op, tid=1, module="m": {
        "ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": op,
        "args": {"hlo_module": module, "hlo_op": op},
    }
    events = [
        ev(0, 100, "while.1"),
        ev(10, 20, "dot.1"),
        ev(40, 10, "fusion.2"),
        ev(42, 5, "fusion.3"),  # nested twice
        ev(0, 50, "dot.1", tid=2),  # another device's thread
        ev(0, 1000, "dot.1", module="other"),
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 7, "name": "python", "args": {}},
    ]
    assert hlo_stats.kernel_times(events, "m") == {
        "while.1": 70.0, "dot.1": 70.0, "fusion.2": 5.0, "fusion.3": 5.0
    }


def test_time_shares_of_a_profiled_program(tmp_path):
    fn = jax.jit(_model_and_update)
    args = _args()
    hlo = fn.lower(*args).compile().as_text()
    jax.block_until_ready(fn(*args))
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        for _ in range(3):
            jax.block_until_ready(fn(*args))
    (path,) = glob.glob(os.path.join(tmp_path, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    shares = hlo_stats.time_shares(hlo, events)
    assert shares["kernel_us"] > 0
    assert sum(shares[c] for c in hlo_stats.CATEGORIES) == pytest.approx(1.0)
    assert shares["optimizer"] > 0 and shares["matmul"] > 0
