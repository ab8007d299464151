"""The torch backend (CPU or CUDA) of the empirical-denoiser kernels.

The algorithm of :mod:`gaussdiff.kernels` in plain torch ops: the same stream (candidates kept
out of the running sums, float64 logits and accumulators), the same exact refinement and
certificate, with the float64 fallback. On CUDA the default backend is the fused Triton one
(:mod:`gaussdiff.kernels._triton`); this one is the fallback where Triton is missing, and the
reference the Triton kernels are checked against.

Imports only :mod:`gaussdiff.kernels._core` (the layers are drawn there).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_int, check_sigma_float64
from ._core import (
    DEFAULT_CHUNK,
    DEFAULT_RTOL,
    N_CANDIDATES,
    PreparedData,
    _check_torch_inputs,
    _knn_queries_torch,
    _knn_refine_torch,
    _query_terms,
    _tf32,
    _unit_roundoff,
    certificate_torch,
)

__all__ = ["empirical_posterior_torch", "nearest_neighbors_torch"]


def _torch_stream(xq, xq64, prep, xsq, inv2s2, chunk, K, want_mean, wide):
    """The same stream as the numba ``_stream_kernel``, in torch ops: candidates are kept out of the
    running sums (weight 0 while they are candidates, added back if they drop out)."""
    B, d = xq.shape
    dev = xq.device
    f64 = torch.float64
    m = torch.full((B,), -torch.inf, dtype=f64, device=dev)
    z = torch.zeros(B, dtype=f64, device=dev)
    h = torch.zeros(B, dtype=f64, device=dev)
    acc = torch.zeros(B, d if want_mean else 0, dtype=f64, device=dev)
    cand_l = torch.full((B, 0), -torch.inf, dtype=f64, device=dev)
    cand_i = torch.zeros((B, 0), dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    N = prep.n
    for c0 in range(0, N, chunk):
        yk = prep.yc[c0 : c0 + chunk]
        n = yk.shape[0]
        if wide:  # exact float64 centring (the stored copy is rounded)
            yk = prep.y[c0 : c0 + chunk].to(f64) - prep.center
            G = xq64 @ yk.T
        else:
            G = xq @ yk.T
        logit = (G.to(f64).mul_(2.0).sub_(xsq[:, None]).sub_(prep.ysq[None, c0 : c0 + n])).mul_(inv2s2[:, None])
        old_l, old_i = cand_l, cand_i
        cl = torch.cat([old_l, logit], 1)
        ci = torch.cat([old_i, torch.arange(c0, c0 + n, device=dev).expand(B, -1)], 1)
        kk = min(K, cl.shape[1])
        cand_l, pos = torch.topk(cl, kk, dim=1, sorted=True)
        cand_i = torch.gather(ci, 1, pos)
        if not want_mean:
            continue
        m_new = torch.maximum(m, logit.max(1).values)
        sc = torch.where(z > 0, torch.exp(m - m_new), torch.zeros_like(m))
        lm = logit.sub_(m_new[:, None])
        new_here = cand_i >= c0  # candidates of this chunk: weight 0
        lm[rows[:, None].expand(-1, kk)[new_here], (cand_i - c0)[new_here]] = -torch.inf
        W = torch.exp(lm).to(yk.dtype)
        Wf = W.to(f64)
        h = torch.where(z > 0, sc * (h + (m - m_new) * z), torch.zeros_like(h)) + torch.nan_to_num(
            Wf * lm, nan=0.0
        ).sum(1)
        z = z * sc + Wf.sum(1)
        acc = acc * sc[:, None] + (W @ yk).to(f64)
        if old_i.shape[1]:  # earlier candidates that dropped out
            dropped = ~(old_i[:, :, None] == cand_i[:, None, :]).any(2)
            if bool(dropped.any()):
                bi, ki = torch.nonzero(dropped, as_tuple=True)
                le = old_l[bi, ki] - m_new[bi]
                we = torch.exp(le)
                z = z.index_add(0, bi, we)
                h = h.index_add(0, bi, we * le)
                acc = acc.index_add(0, bi, we[:, None] * prep.yc[old_i[bi, ki]].to(f64))
        m = m_new
    return m, z, h, acc, cand_l, cand_i


def _torch_refine(x, prep, inv2s2, m, z, h, acc, cand_l, cand_i, eps):
    """Exact candidates added to the (candidate-free) running sums, as the numba ``_refine_kernel``."""
    f64 = torch.float64
    yex = prep.y[cand_i]  # (B, K, d) original values
    diff = x.to(f64)[:, None, :] - yex.to(f64)  # exact differences
    lex = -(diff * diff).sum(2) * inv2s2[:, None]
    empty = z <= 0
    lrest = torch.where(empty, torch.full_like(m, -torch.inf), m + torch.log(z.clamp_min(1e-300)))
    m_ex = torch.maximum(lrest, lex.max(1).values)
    sc = torch.where(empty, torch.zeros_like(m), torch.exp(m - m_ex))
    hr = torch.where(empty, torch.zeros_like(h), sc * (h + (m - m_ex) * z))
    zr = z * sc
    ar = acc * sc[:, None]
    lm = lex - m_ex[:, None]
    w = torch.exp(lm)
    zt = zr + w.sum(1)
    ht = hr + (w * lm).sum(1)
    at = ar + torch.einsum("bk,bkd->bd", w, yex.to(f64) - prep.center)
    lse = m_ex + torch.log(zt)
    return at / zt[:, None], lse, torch.log(zt) - ht / zt, certificate_torch(eps, zr / zt, cand_l[:, -1] - lse, prep.d)


def empirical_posterior_torch(
    x: torch.Tensor,
    prep: PreparedData,
    sigma,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    n_candidates: int = N_CANDIDATES,
    rtol: float = DEFAULT_RTOL,
    allow_tf32: bool = False,
    info: dict | None = None,
    validated: bool = False,
):
    """Torch version of :func:`~gaussdiff.kernels.empirical_posterior_numba` (same algorithm, CPU or CUDA).

    ``x`` (B, d) tensor in the data's dtype and on its device; ``prep`` from
    :func:`~gaussdiff.kernels.prepare_data` with ``backend="torch"``. ``allow_tf32=True`` (CUDA, float32 only) runs
    the logit GEMM in TF32: several times faster on tensor cores, but with a ~1e-3 relative
    rounding, so the certificate is skipped and the result is *approximate* (opt-in only).
    Returns float64 tensors ``(mean (B, d), lse (B,), neff (B,))``."""
    y = prep.y
    s = _check_torch_inputs(x, prep, sigma, validated=validated)
    if not validated:
        check_sigma_float64(*torch.stack(torch.aminmax(s)).tolist())
    B = x.shape[0]
    f64 = torch.float64
    chunk = check_int(chunk_size, "chunk_size")
    K = max(1, min(int(n_candidates), prep.n))
    x64c = x.to(f64) - prep.center
    xq = x64c.to(y.dtype)
    u = _unit_roundoff(np.float32 if y.dtype == torch.float32 else np.float64)
    xsq, inv2s2, eps = _query_terms(x64c, prep.ymax, s, prep.d, u)

    def run(rows, wide, eps_):
        m, z, h, acc, cl, ci = _torch_stream(xq[rows], x64c[rows], prep, xsq[rows], inv2s2[rows], chunk, K, True, wide)
        return _torch_refine(x[rows], prep, inv2s2[rows], m, z, h, acc, cl, ci, eps_[rows])

    with _tf32(x.device, allow_tf32 and y.dtype == torch.float32):
        allr = torch.arange(B, device=x.device)
        mean, lse, ent, cert = run(allr, False, eps)
    bad = torch.nonzero(cert > rtol).flatten()
    n_fb = 0
    if bad.numel() and y.dtype != f64 and not allow_tf32:
        eps64 = eps * (_unit_roundoff(np.float64) / u)
        mb, lb, eb, cb = run(bad, True, eps64)
        mean[bad], lse[bad], ent[bad], cert[bad] = mb, lb, eb, cb
        n_fb = int(bad.numel())
    if info is not None:
        info["n_fallback"] = n_fb
        info["cert"] = cert
    return mean + prep.center, lse, torch.exp(ent)


def nearest_neighbors_torch(
    x: torch.Tensor, data, k: int = 1, *, chunk_size: int | None = None, info: dict | None = None
):
    """Exact ``k`` nearest neighbours in torch ops (CPU/CUDA); same certified scheme as
    :func:`~gaussdiff.kernels.nearest_neighbors_numba`. ``data`` is a (N, ...) tensor or a
    :class:`~gaussdiff.kernels.PreparedData`; ``chunk_size=None``: 2048.

    Returns ``(dist (B, k) float64 ascending, idx (B, k) int64)``."""
    prep, k, x, x64c, xsq, K = _knn_queries_torch(x, data, k)
    y = prep.y
    B = x.shape[0]
    chunk = DEFAULT_CHUNK if chunk_size is None else check_int(chunk_size, "chunk_size")
    with _tf32(x.device, False):
        inv2s2 = torch.ones(B, dtype=torch.float64, device=x.device)
        _, _, _, _, cl, ci = _torch_stream(x64c.to(y.dtype), x64c, prep, xsq, inv2s2, chunk, K, False, False)
        rest_d2 = -cl[:, K - 1] if K < prep.n else torch.full_like(xsq, math.inf)
    return _knn_refine_torch(x, prep, k, ci, rest_d2, xsq, chunk_size, info)
