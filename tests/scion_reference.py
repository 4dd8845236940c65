"""The PyTorch reference Scion (LIONS-EPFL `scion.py`, the same LMOs as Disco) in float64
numpy, in its own layout (torch ``[d_out, d_in]``, conv ``[c_out, c_in, k, k]``), as that
code reads: the tests compare scion_jax against it.
"""

from __future__ import annotations

import numpy as np


def _polar(m):
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


def ref_col_norm_transposed(g, eps=1e-8):  # ColNorm(transpose=True): embedding [V, d]
    rms = np.sqrt(np.mean(g**2, axis=1, keepdims=True))  # per token row, over d
    return g / (rms + eps)


def ref_row_norm(g, eps=1e-8):  # RowNorm(normalized=True): head weight [V, d_in]
    return g / (np.linalg.norm(g, axis=1, keepdims=True) * np.sqrt(g.shape[1]) + eps)


def ref_spectral(g):  # Spectral(normalize=True): weight [d_out, d_in]
    d_out, d_in = g.shape
    return np.sqrt(d_out / d_in) * _polar(g)


def ref_sign(g):  # Sign(normalized=True): weight [d_out, d_in]
    return np.sign(g) / g.shape[1]


def ref_bias_rms(g, eps=1e-8):  # BiasRMS
    return g / (np.sqrt(np.mean(g**2)) + eps)


def ref_spectral_conv(g):  # SpectralConv: weight [c_out, c_in, k, k]
    c_out, c_in, k, _ = g.shape
    return _polar(g.reshape(c_out, -1)).reshape(g.shape) * np.sqrt(c_out / c_in) / k**2


def ref_scion_step(w, m, g, *, lr, momentum, scale, lmo, constrained):
    """One reference Scion step on a torch-layout parameter (returns w, m)."""
    if momentum != 1:
        m = (1 - momentum) * m + momentum * g
        g = m
    update = scale * lmo(g)
    if constrained:
        w = (1 - lr) * w
    return w - lr * update, m


