"""PyTorch baselines for the benchmarks: the same norm-everywhere Llama and a Scion step
written the way the reference implementation (and Disco) write them.

Torch layout: a Linear weight is [d_out, d_in]; the embedding and unembedding are [V, d].
Only imported by the benchmarks (`pip install -e .[bench]` provides torch).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(len(os.sched_getaffinity(0)))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=1e-6)


def _rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """x: [B, H, T, hd]; rotate-half RoPE."""
    t, hd = x.shape[-2], x.shape[-1]
    freqs = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angles = torch.arange(t, dtype=torch.float32)[:, None] * freqs[None]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, head_dim: int, hidden: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(d, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, d, bias=False)
        self.w1, self.w3 = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = _norm(x)
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q = _rope(_norm(split(self.q(h))))
        k = _rope(_norm(split(self.k(h))))
        v = _norm(split(self.v(h)))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(_norm(a.transpose(1, 2).reshape(b, t, -1)))
        h = _norm(x)
        return x + self.w2(_norm(F.silu(self.w1(h)) * self.w3(h)))


class Llama(nn.Module):
    """The paper's norm-everywhere decoder (PAPER.md §4) with parameter-free norms."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, head_dim: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, head_dim, hidden) for _ in range(layers))
        self.unembed = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(_norm(x))


@torch.compile
def zeropower(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's quintic Newton–Schulz in bf16 (the reference Scion/Disco implementation)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16()
    x = x / (x.norm() + 1e-7)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


@torch.no_grad()
def scion_step(named: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], lr: float):
    """One unconstrained Scion step: embedding 1→RMS, unembedding RMS→∞, hidden RMS→RMS."""
    for name, w in named.items():
        g = grads[name]
        if name.startswith("embed"):  # [V, d]: each token's row to RMS 1
            u = g / (g.norm(dim=1, keepdim=True) + 1e-20) * g.shape[1] ** 0.5
        elif name.startswith("unembed"):  # [V, d]: each vocab row to L2 1/√d
            u = g / (g.norm(dim=1, keepdim=True) + 1e-20) / g.shape[1] ** 0.5
        else:
            d_out, d_in = g.shape
            u = zeropower(g) * (d_out / d_in) ** 0.5
        w.add_(u, alpha=-lr)
