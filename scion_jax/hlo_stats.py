"""What a compiled XLA program costs per device: FLOPs and collective traffic.

Used to check that partitioned Newton–Schulz does 1/N of the work on each device and
moves whole matrices once, rather than reducing a Gram matrix every iteration.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")
_BITS = {
    "pred": 8,
    "s8": 8,
    "u8": 8,
    "s16": 16,
    "u16": 16,
    "f16": 16,
    "bf16": 16,
    "s32": 32,
    "u32": 32,
    "f32": 32,
    "s64": 64,
    "u64": 64,
    "f64": 64,
    "c64": 64,
    "c128": 128,
}
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_OP = re.compile(
    r"=\s*(?P<shape>\([^()]*\)|[a-z]+\d*\[[\d,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<op>" + "|".join(COLLECTIVES) + r")(?:-start)?\("
)


def _bytes(shape_text: str) -> int:
    total = 0
    for dtype, dims in _SHAPE.findall(shape_text):
        if dtype in _BITS:
            n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
            total += n * _BITS[dtype] // 8
    return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """``{op: {"count": n, "bytes": b}}`` over the collectives of an HLO module.

    ``bytes`` sums each collective's result size on one device (for an all-gather the
    gathered array, for an all-to-all the exchanged block, for an all-reduce the
    reduced array).
    """
    out: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for m in _OP.finditer(hlo_text):
        entry = out[m.group("op")]
        entry["count"] += 1
        entry["bytes"] += _bytes(m.group("shape"))
    return dict(out)


def flops(compiled: Any) -> float:
    """Per-device FLOPs of a compiled (SPMD) program, from XLA's cost analysis."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0]
    return float(cost.get("flops", 0.0))


def summary(compiled: Any) -> dict[str, Any]:
    """FLOPs, collective counts/bytes and their total bytes for a compiled program."""
    coll = collectives(compiled.as_text())
    return {
        "flops": flops(compiled),
        "collectives": coll,
        "collective_bytes": sum(c["bytes"] for c in coll.values()),
    }
