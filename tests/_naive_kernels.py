"""The slow references the kernels of ``gaussdiff.kernels`` are checked against: float64, from
exact differences, full (B, N) matrices. Only the tests use them, so they live beside the tests.
"""

import numpy as np


def _naive_d2(x, data):
    x64 = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y64 = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    return np.stack([((xb - y64) ** 2).sum(1) for xb in x64]), y64


def empirical_posterior_naive(x, data, sigma):
    """Slow float64 reference from exact differences: ``(mean (B, d), lse (B,), neff (B,))``."""
    d2, y64 = _naive_d2(x, data)
    s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (d2.shape[0],))
    logit = -d2 / (2 * s[:, None] ** 2)
    mx = logit.max(1, keepdims=True)
    e = np.exp(logit - mx)
    z = e.sum(1, keepdims=True)
    w = e / z
    lse = (mx + np.log(z))[:, 0]
    ent = -(w * np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), 0.0)).sum(1)
    return w @ y64, lse, np.exp(ent)


def nearest_neighbors_naive(x, data, k: int = 1):
    """Slow float64 reference: exact differences, stable sort (ties by index)."""
    d2, _ = _naive_d2(x, data)
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(d2, idx, 1)), idx
