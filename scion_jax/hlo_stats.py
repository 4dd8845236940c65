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


# --- Where a compiled step's time goes: its optimized HLO joined with a profiler trace. ---

# Categories of `classify`, in the order they are tried on an instruction.
CATEGORIES = ("optimizer", "attention", "matmul", "elementwise", "other")
# Source files (any frame of an instruction's Python stack) that make it optimizer work: the
# Scion / AdamW update and its Newton–Schulz (optax's losses are the model's loss).
_OPTIMIZER_SOURCES = re.compile(
    r"scion_jax/(optimizer|newton_schulz|partitioned|lmo|norms|rules)\.py$|/optax/(?!losses/)"
)
_ATTENTION_SOURCES = re.compile(r"scion_jax/model/attention\.py$")
# Opcodes with no kernel of their own, or glue: neither matmul nor elementwise work. An
# asynchronous op (all-gather-start, send-done, copy-start, ...) counts as its synchronous op.
_OTHER_OPS = set(COLLECTIVES) | {
    "while", "conditional", "call", "custom-call", "rng", "rng-bit-generator", "infeed",
    "outfeed", "send", "recv", "after-all", "parameter", "constant", "tuple",
    "get-tuple-element", "partition-id", "replica-id",
}
_ASYNC_SUFFIX = re.compile(r"-(?:start|update|done)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s+=\s+(?P<rest>.*)$")
_CALLS = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")
_FRAME_ID = re.compile(r"\bstack_frame_id=(\d+)")
_TABLE_ROW = re.compile(r"^(\d+)\s+(.*)$")


def _opcode(rest: str) -> str:
    """The opcode of an instruction's right-hand side ``shape opcode(operands), ...``."""
    if rest.startswith("("):  # tuple shape: skip to its closing parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[i + 1 :]
                break
    else:
        rest = rest.split(" ", 1)[1] if " " in rest else ""
    return rest.strip().split("(", 1)[0].strip()


def _stack_files(hlo_text: str) -> dict[int, frozenset[str]]:
    """{stack frame id: the source files of that frame and all its callers}, from the
    FileNames / FileLocations / StackFrames tables of an HLO module's text. (The text
    prints a frame's parent as its id + 1; 0 means none.)"""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in hlo_text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(line, {})
        elif current is not None and (m := _TABLE_ROW.match(line)):
            current[int(m.group(1))] = m.group(2)
        elif not line.strip() or line.startswith(("%", "ENTRY", "HloModule")):
            current = None
    files = {i: v.strip('"') for i, v in tables.get("FileNames", {}).items()}
    location_file = {
        i: files.get(int(re.search(r"file_name_id=(\d+)", v).group(1)), "")
        for i, v in tables.get("FileLocations", {}).items()
    }
    frames = {}
    for i, v in tables.get("StackFrames", {}).items():
        loc = int(re.search(r"file_location_id=(\d+)", v).group(1))
        parent = int(re.search(r"parent_frame_id=(\d+)", v).group(1)) - 1
        frames[i] = (location_file.get(loc, ""), parent)
    out: dict[int, frozenset[str]] = {}
    for i in frames:
        chain, frame, seen = set(), i, set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            chain.add(frames[frame][0])
            frame = frames[frame][1]
        out[i] = frozenset(chain)
    return out


def classify(hlo_text: str) -> dict[str, str]:
    """{instruction name: category} for every instruction of an optimized HLO module's text
    (`compiled.as_text()`), the names a profiler trace's kernels carry (``hlo_op``).

    An instruction (with the computations it calls, e.g. a fusion's body) is
    "optimizer" when any of its ops comes from the optimizer's source files, else
    "attention" from `scion_jax/model/attention.py`, else "matmul" when it holds a dot
    or convolution, else "other" for collectives, control flow and custom calls, and
    "elementwise" for the rest (loop and input fusions, converts, copies, reductions).
    Needs the module's stack frames (JAX emits them into the HLO).
    """
    frame_files = _stack_files(hlo_text)
    instructions: dict[str, tuple[str, str, list[str], set[int]]] = {}
    bodies: dict[str, list[str]] = collections.defaultdict(list)
    computation = ""
    for line in hlo_text.splitlines():
        if (c := _COMPUTATION.match(line)) and " = " not in line:
            computation = c.group("name")
            continue
        m = _INSTRUCTION.match(line)
        if not m or not computation:
            continue
        rest = m.group("rest")
        called = _CALLS.findall(rest)
        for group in _BRANCHES.findall(rest):
            called += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
        frames = {int(f) for f in _FRAME_ID.findall(rest)}
        instructions[m.group("name")] = (computation, _opcode(rest), called, frames)
        bodies[computation].append(m.group("name"))

    def closure(name: str) -> tuple[set[str], set[str]]:
        """(opcodes, source files) of an instruction and everything it calls."""
        ops, files, todo, seen = set(), set(), [name], set()
        while todo:
            inst = todo.pop()
            if inst in seen or inst not in instructions:
                continue
            seen.add(inst)
            _, op, called, frames = instructions[inst]
            ops.add(op)
            for f in frames:
                files |= frame_files.get(f, frozenset())
            for comp in called:
                todo += bodies.get(comp, [])
        return ops, files

    out = {}
    for name, (_, op, _, _) in instructions.items():
        ops, files = closure(name)
        if any(_OPTIMIZER_SOURCES.search(f) for f in files):
            out[name] = "optimizer"
        elif any(_ATTENTION_SOURCES.search(f) for f in files):
            out[name] = "attention"
        elif ops & {"dot", "convolution"}:
            out[name] = "matmul"
        elif _ASYNC_SUFFIX.sub("", op) in _OTHER_OPS:
            out[name] = "other"
        else:
            out[name] = "elementwise"
    return out


def kernel_times(trace_events: list[dict], module: str) -> dict[str, float]:
    """{hlo_op: exclusive µs summed over all its runs} of one HLO module's kernels in a
    profiler trace (the ``traceEvents`` of `jax.profiler.trace`'s perfetto JSON): each
    event's duration less that of the module's kernels nested inside it on its thread
    (a while loop's body runs inside the loop's own event)."""
    by_thread: dict[Any, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for e in trace_events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and args.get("hlo_module") == module and args.get("hlo_op"):
            by_thread[(e.get("pid"), e.get("tid"))].append(
                (float(e["ts"]), float(e["dur"]), args["hlo_op"])
            )
    out: dict[str, float] = collections.defaultdict(float)
    for events in by_thread.values():
        events.sort(key=lambda x: (x[0], -x[1]))
        stack: list[tuple[float, str]] = []  # (end, op) of the enclosing events
        for ts, dur, op in events:
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack:
                out[stack[-1][1]] -= dur
            out[op] += dur
            stack.append((ts + dur, op))
    return dict(out)


def module_name(hlo_text: str) -> str:
    """The name of an HLO module (what a trace's kernels give as ``hlo_module``)."""
    return hlo_text.split(None, 2)[1].rstrip(",")


def time_shares(hlo_text: str, trace_events: list[dict]) -> dict[str, float]:
    """{category: share of the module's kernel time} (`classify`, `kernel_times`), plus
    "kernel_us": the kernel time summed over the trace's threads."""
    categories = classify(hlo_text)
    times = kernel_times(trace_events, module_name(hlo_text))
    total = sum(times.values())
    shares = dict.fromkeys(CATEGORIES, 0.0)
    for op, us in times.items():
        shares[categories.get(op, "other")] += us / total if total else 0.0
    return {**shares, "kernel_us": total}
