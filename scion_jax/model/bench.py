"""Forward+backward throughput of the decoder on this machine.

    python -m scion_jax.model.bench --size=cpu_d128 --batch=16 --seq=256

Prints tokens/s for every (compute dtype, attention implementation) pair, measured side by
side in one process (TARGETS.md: machines are noisy, compare ratios).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from scion_jax.model.config import SIZES, ModelConfig
from scion_jax.model.transformer import init_model


def loss_fn(model: nnx.Module, inputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats)."""
    logits = model(inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def tokens_per_second(cfg: ModelConfig, batch: int, seq: int, steps: int = 20) -> float:
    """Forward+backward (loss and gradients w.r.t. all parameters) tokens per second, from
    the fastest of `steps` timed steps."""
    model = init_model(cfg, jax.random.key(0))
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit
    def step(params, inputs, targets):
        def f(p):
            return loss_fn(nnx.merge(graphdef, p), inputs, targets)

        return jax.value_and_grad(f)(params)

    toks = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, cfg.vocab_size)
    inputs, targets = toks[:, :-1], toks[:, 1:]
    jax.block_until_ready(step(params, inputs, targets))
    best = float("inf")  # fastest single step: robust to other processes on a shared CPU
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(step(params, inputs, targets))
        best = min(best, time.perf_counter() - start)
    return batch * seq / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="cpu_d128", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--scan", action="store_true")
    args = parser.parse_args()
    base = SIZES[args.size].replace(scan_layers=args.scan)
    for dtype in (jnp.float32, jnp.bfloat16):
        for attention in ("einsum", "xla"):
            cfg = base.replace(compute_dtype=dtype, attention=attention)
            tps = tokens_per_second(cfg, args.batch, args.seq, args.steps)
            print(f"{args.size} {jnp.dtype(dtype).name:9s} {attention:7s} {tps:9.0f} tokens/s")


if __name__ == "__main__":
    main()
