r"""Fused GPU kernels (Triton) for the exact empirical posterior.

The same certified algorithm as :mod:`gaussdiff.kernels` (centring, GEMM in the data's dtype,
logits in float64, exact recomputation of the leading candidates, rounding-error certificate
with a float64 fallback), laid out for a GPU, where the two GEMMs are cheap and everything else
must cost as few passes over memory and as few kernel launches as possible:

per call
    ``_prep_kernel``: centred queries ``x_c`` in the GEMM dtype, ``|x_c|^2``, ``1/(2 sigma^2)``
    and the logit error bound ``eps`` (one program per query).
per chunk of training points (by default one chunk: ``B * chunk`` up to 2^25 elements)
    1. ``G = x_c y_c^T``: cuBLAS (float32 for float32 data; TF32 only when asked for).
    2. ``_select_kernel`` (grid: query x column split): float64 logits
       ``l' = (2 G - |y_c|^2) / (2 sigma^2)`` (the per-query constant ``-|x_c|^2 / 2 sigma^2``
       is added back at the end), the split's maximum and its ``K`` largest logits (a running
       top-K kept in registers; ties go to the lower index).
    3. ``_weights_kernel`` (same grid): ``W = exp(l' - m)`` with ``m`` the chunk maximum of the
       query, in float64 and rounded to the GEMM dtype; the split's own candidates get weight 0;
       the split's partial sums ``Z = sum W`` and ``H = sum W (l' - m)`` (of the rounded weights,
       which are what the second GEMM sees).
    4. ``A = W y_c``: cuBLAS. Several chunks are merged with the usual log-sum-exp rescaling.
per call
    ``_refine_kernel`` (one program per query): the squared distances of *all* candidates
    (``K`` per split and chunk) from exact float64 differences of the original values, their
    exact weights added to the candidate-free sums, and the posterior mean, ``lse``, entropy and
    certificate of :mod:`gaussdiff.kernels` (step 5).

Every candidate is kept out of the streamed sums and recomputed exactly, so nothing is ever
subtracted. With many chunks the candidate lists are merged after each chunk down to
``_MAX_CANDIDATES`` per query; the ones that drop out are added to the sums with their
approximate weights (as the CPU kernels do). There are no atomics: the same inputs on the same
device give the same bits.

The kernels also run under Triton's CPU interpreter (``TRITON_INTERPRET=1`` set before the first
import), which is how the test suite checks them on machines without a GPU.

Public here: :func:`empirical_posterior_triton`, :func:`nearest_neighbors_triton` (the fused
candidate pass, then the exact refinement the torch backend shares) and :func:`auto_chunk`.
Imports only :mod:`gaussdiff.kernels._core` (the layers are drawn there); the dispatch of
:mod:`gaussdiff.kernels` imports this module on first use, since Triton is optional.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import triton
import triton.language as tl

from .._checks import check_int, check_sigma_float64
from ._core import (
    DEFAULT_RTOL,
    N_CANDIDATES,
    _LAMBDA,
    _check_torch_inputs,
    _knn_queries_torch,
    _knn_refine_torch,
    _tf32,
    _unit_roundoff,
    triton_interpreted,
)

__all__ = ["empirical_posterior_triton", "nearest_neighbors_triton", "knn_candidates", "auto_chunk"]


def _interpreter_numpy_shim():
    """Triton's CPU interpreter (up to 3.6 at least) turns a scalar into a 1-element array and
    converts it with ``int(array)``, which numpy >= 2.4 refuses; give its tensors an
    ``__index__`` that takes the single element. Only active under ``TRITON_INTERPRET=1``."""
    try:
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover - other Triton layouts
        return
    orig = getattr(interp, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_gaussdiff_shim", False):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched._gaussdiff_shim = True
    interp._patch_lang_tensor = patched


if triton_interpreted():
    _interpreter_numpy_shim()

_ELEMS = 1 << 25  # default chunk: B * chunk up to this many elements per (B, chunk) tile
_BLOCK = 1024  # columns per tile in the select / weights kernels
_MAX_CANDIDATES = 64  # per query, across chunks
_NEG = tl.constexpr(float("-inf"))  # for the kernels (a plain global is not allowed there)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def auto_chunk(B: int, N: int) -> int:
    """Default chunk on a GPU: the whole data set if a (B, N) tile has at most 2^25 elements
    (128 MB in float32), else the largest chunk that keeps the tile at that size (>= 2048)."""
    return int(min(N, max(2048, _ELEMS // max(1, B))))


# =============================================================================================
# kernels
# =============================================================================================


@triton.jit
def _prep_kernel(X, sx, C, S, XQ, sxq, XSQ, A, EPS, COEF, d, BLOCK_D: tl.constexpr):
    """Program per query: centred query in the GEMM dtype, |x_c|^2, 1/(2 sigma^2) and the logit
    error bound eps = COEF |x_c| / sigma^2 (COEF a float64 scalar in memory: a Python float
    argument would be passed as float32)."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_D], tl.float64)
    for start in range(0, d, BLOCK_D):
        cols = start + offs
        msk = cols < d
        x = tl.load(X + row * sx + cols, mask=msk, other=0.0).to(tl.float64)
        c = tl.load(C + cols, mask=msk, other=0.0)
        xc = tl.where(msk, x - c, 0.0)
        tl.store(XQ + row * sxq + cols, xc.to(XQ.dtype.element_ty), mask=msk)
        acc += xc * xc
    xsq = tl.sum(acc, 0)
    s = tl.load(S + row).to(tl.float64)
    a = 0.5 / (s * s)
    tl.store(XSQ + row, xsq)
    tl.store(A + row, a)
    tl.store(EPS + row, tl.load(COEF) * tl.sqrt(xsq) * 2.0 * a)


@triton.jit
def _select_kernel(
    G, sg, YSQ, A, PMAX, CL, CI, n, c0, span, S, K: tl.constexpr, BLOCK: tl.constexpr, MARK: tl.constexpr
):
    """Program (row, split): float64 logits of columns [split*span, (split+1)*span) of the
    chunk, their maximum, and the K largest (values and global indices; -1 where fewer; ties
    go to the lower index). With ``MARK`` the candidates' entries of ``G`` are set to -inf, so
    that the weights kernel gives them weight 0 (only this program reads this range of this row,
    and the weights kernel runs in a later launch)."""
    row = tl.program_id(0).to(tl.int64)
    sp = tl.program_id(1)
    a = tl.load(A + row)
    lo = sp * span
    hi = tl.minimum(lo + span, n)
    offs = tl.arange(0, BLOCK)
    kk = tl.arange(0, K)
    cv = tl.full([K], _NEG, tl.float64)
    cidx = tl.full([K], -1, tl.int64)
    mx = tl.full([BLOCK], _NEG, tl.float64)
    for start in range(lo, hi, BLOCK):
        cols = start + offs
        msk = cols < hi
        g = tl.load(G + row * sg + cols, mask=msk, other=0.0).to(tl.float64)
        ys = tl.load(YSQ + c0 + cols, mask=msk, other=0.0)
        lg = tl.where(msk, (2.0 * g - ys) * a, _NEG)
        mx = tl.maximum(mx, lg)
        lmin = tl.min(cv, 0)
        tmax = tl.max(lg, 0)
        while tmax > lmin:  # insert the tile's maxima while they beat the list
            pos = tl.min(tl.where(lg == tmax, cols, hi), 0)  # lowest column among equals
            out = tl.max(tl.where(cv == lmin, cidx, -2), 0)  # evict the highest index
            slot = tl.min(tl.where((cv == lmin) & (cidx == out), kk, K), 0)
            cv = tl.where(kk == slot, tmax, cv)
            cidx = tl.where(kk == slot, (pos + c0).to(tl.int64), cidx)
            lg = tl.where(cols == pos, _NEG, lg)
            lmin = tl.min(cv, 0)
            tmax = tl.max(lg, 0)
    tl.store(PMAX + row * S + sp, tl.max(mx, 0))
    base = (row * S + sp) * K
    tl.store(CL + base + kk, cv)
    tl.store(CI + base + kk, cidx)
    if MARK:
        tl.store(G + row * sg + (cidx - c0), tl.full([K], _NEG, tl.float64).to(G.dtype.element_ty), mask=cidx >= 0)


@triton.jit
def _weights_kernel(G, sg, YSQ, A, PMAX, W, sw, MC, ZP, HP, n, c0, span, S, SP: tl.constexpr, BLOCK: tl.constexpr):
    """Program (row, split): W = exp(l' - m) rounded to W's dtype (0 for the candidates, whose G
    entries the select kernel set to -inf); partial sums Z and H of the rounded weights. ``m`` is
    the row's chunk maximum (the max of the S split maxima), stored by split 0."""
    row = tl.program_id(0).to(tl.int64)
    sp = tl.program_id(1)
    a = tl.load(A + row)
    ss = tl.arange(0, SP)
    m = tl.max(tl.load(PMAX + row * S + ss, mask=ss < S, other=_NEG), 0)
    if sp == 0:
        tl.store(MC + row, m)
    lo = sp * span
    hi = tl.minimum(lo + span, n)
    offs = tl.arange(0, BLOCK)
    zacc = tl.zeros([BLOCK], tl.float64)
    hacc = tl.zeros([BLOCK], tl.float64)
    for start in range(lo, hi, BLOCK):
        cols = start + offs
        msk = cols < hi
        g = tl.load(G + row * sg + cols, mask=msk, other=0.0).to(tl.float64)
        ys = tl.load(YSQ + c0 + cols, mask=msk, other=0.0)
        lg = tl.where(msk, (2.0 * g - ys) * a - m, _NEG)
        w = tl.exp(lg).to(W.dtype.element_ty)
        tl.store(W + row * sw + cols, w, mask=msk)
        w64 = w.to(tl.float64)
        zacc += w64
        hacc += w64 * tl.where(w64 > 0.0, lg, 0.0)
    tl.store(ZP + row * S + sp, tl.sum(zacc, 0))
    tl.store(HP + row * S + sp, tl.sum(hacc, 0))


@triton.jit
def _refine_kernel(
    X,
    sx,
    Y,
    sy,
    C,
    A,
    XSQ,
    EPS,
    MC,
    ZP,
    HP,
    S,
    ACC,
    sacc,
    CI,
    M,
    TOP,
    MEAN,
    smean,
    LSE,
    ENT,
    CERT,
    d,
    SP: tl.constexpr,
    MP: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Program per query: exact candidates added to the candidate-free sums (m, Z, H, A), which
    are relative to the shifted logits l' = l + |x_c|^2 / 2 sigma^2; writes the posterior mean
    (uncentred, float64), lse, entropy and the certificate (``TOP``: the largest approximate
    logit l' a non-candidate can have). The candidates' rows are read as (MP, BLOCK_D) tiles."""
    row = tl.program_id(0).to(tl.int64)
    a = tl.load(A + row)
    ss = tl.arange(0, SP)
    z = tl.sum(tl.load(ZP + row * S + ss, mask=ss < S, other=0.0), 0)
    h = tl.sum(tl.load(HP + row * S + ss, mask=ss < S, other=0.0), 0)
    shift = tl.load(XSQ + row) * a
    m = tl.load(MC + row) - shift  # on the true logit scale
    jj = tl.arange(0, MP)
    ci = tl.load(CI + row * M + jj, mask=jj < M, other=-1)
    valid = ci >= 0
    rows_y = tl.where(valid, ci, 0) * sy
    offs = tl.arange(0, BLOCK_D)
    d2 = tl.zeros([MP], tl.float64)
    for start in range(0, d, BLOCK_D):  # exact squared distances
        cols = start + offs
        msk = cols < d
        x = tl.load(X + row * sx + cols, mask=msk, other=0.0).to(tl.float64)
        yv = tl.load(Y + rows_y[:, None] + cols[None, :], mask=valid[:, None] & msk[None, :], other=0.0).to(tl.float64)
        t = tl.where(msk[None, :], x[None, :] - yv, 0.0)
        d2 += tl.sum(t * t, 1)
    lex = tl.where(valid, -d2 * a, _NEG)
    has_rest = z > 0.0
    lrest = tl.where(has_rest, m + tl.log(tl.where(has_rest, z, 1.0)), _NEG)
    m_ex = tl.maximum(lrest, tl.max(lex, 0))
    sc = tl.where(has_rest, tl.exp(tl.where(has_rest, m - m_ex, 0.0)), 0.0)
    hr = tl.where(has_rest, sc * (h + (m - m_ex) * z), 0.0)
    zr = z * sc
    lm = lex - m_ex
    w = tl.exp(lm)
    zt = zr + tl.sum(w, 0)
    ht = hr + tl.sum(w * tl.where(w > 0.0, lm, 0.0), 0)
    lse = m_ex + tl.log(zt)
    tl.store(LSE + row, lse)
    tl.store(ENT + row, tl.log(zt) - ht / zt)
    eps = tl.load(EPS + row)
    rho = zr / zt
    omega = tl.exp(tl.minimum(tl.load(TOP + row) - shift - lse + eps, 0.0))
    # _core._certificate (step 5), here in-kernel; tests/test_triton.py compares the two
    cert = eps * (tl.sqrt(omega * rho) + rho / (2.0 * tl.sqrt(tl.cast(d, tl.float64) + 2.0)))
    tl.store(CERT + row, tl.where(rho > 0.0, cert, 0.0))
    inv = 1.0 / zt
    for start in range(0, d, BLOCK_D):  # mean = c + (sc A + sum w (y - c)) / Z
        cols = start + offs
        msk = cols < d
        c = tl.load(C + cols, mask=msk, other=0.0)
        yv = tl.load(Y + rows_y[:, None] + cols[None, :], mask=valid[:, None] & msk[None, :], other=0.0).to(tl.float64)
        out = tl.load(ACC + row * sacc + cols, mask=msk, other=0.0).to(tl.float64) * sc
        out += tl.sum(w[:, None] * (yv - c[None, :]), 0)
        tl.store(MEAN + row * smean + cols, c + out * inv, mask=msk)


# =============================================================================================
# host side
# =============================================================================================


def _splits(B: int, n: int) -> int:
    """Column splits per query: enough programs to fill a large GPU (~512), spans >= 2 tiles."""
    return int(max(1, min(16, -(-512 // B), n // (2 * _BLOCK))))


def _centred_rows(prep, idx, dtype):
    """Centred training points ``y[idx] - c`` as the GEMM sees them: the stored centred copy in
    the data's dtype, or, for the float64 fallback of float32 data, recomputed in float64 from the
    original values (the float32 copy carries its own rounding, which the float64 certificate
    does not allow for)."""
    if dtype == prep.yc.dtype:
        return prep.yc[idx]
    return prep.y[idx].to(dtype) - prep.center.to(dtype)


def _split_plan(B: int, n: int):
    """(S, span): column splits of a chunk of ``n`` points and their width (whole tiles)."""
    S = _splits(B, n)
    span = -(-n // S)
    span = -(-span // _BLOCK) * _BLOCK
    return -(-n // span), span


def _select(G, prep, a, c0: int, K: int, *, mark: bool):
    """``_select_kernel`` on one chunk's GEMM tile ``G`` (B, n): returns ``(S, span, split maxima
    (B, S), candidate logits (B, S K), candidate indices (B, S K))``."""
    B, n = G.shape
    S, span = _split_plan(B, n)
    f64 = torch.float64
    pmax = torch.empty(B, S, dtype=f64, device=G.device)
    cl = torch.empty(B, S * K, dtype=f64, device=G.device)
    ci = torch.empty(B, S * K, dtype=torch.long, device=G.device)
    _select_kernel[(B, S)](G, G.stride(0), prep.ysq, a, pmax, cl, ci, n, c0, span, S, K=K, BLOCK=_BLOCK, MARK=mark)
    return S, span, pmax, cl, ci


def knn_candidates(xq, prep, chunk: int, K: int):
    """Candidates for the exact nearest neighbours: per query the ``K`` largest approximate
    ``l' = 2 x_c.y_c - |y_c|^2 = |x_c|^2 - |x - y|^2`` over all chunks (``_select_kernel`` with
    ``1/(2 sigma^2) = 1``). Returns ``(idx (B, M), top (B,))``: candidate indices (-1 for empty
    slots) and the largest ``l'`` any other point can have (-inf when every point is a
    candidate), for the certificate of :func:`nearest_neighbors_triton`."""
    with _on_device(xq.device):
        return _knn_candidates(xq, prep, chunk, K)


def _knn_candidates(xq, prep, chunk, K):
    B = xq.shape[0]
    dev = xq.device
    f64 = torch.float64
    KP = _next_pow2(K)
    ones = torch.ones(B, dtype=f64, device=dev)
    chunk = min(chunk, (2**31 - 1) // max(1, B))
    top = torch.full((B,), -math.inf, dtype=f64, device=dev)
    cand_l = torch.empty(B, 0, dtype=f64, device=dev)
    cand_i = torch.empty(B, 0, dtype=torch.long, device=dev)

    def merge(cand_l, cand_i, top, keep):
        kept_l, pos = torch.topk(cand_l, keep, dim=1)
        dropped = torch.ones_like(cand_l, dtype=torch.bool).scatter_(1, pos, False)
        top = torch.maximum(top, torch.where(dropped, cand_l, torch.full_like(cand_l, -math.inf)).amax(1))
        return kept_l, torch.gather(cand_i, 1, pos), top

    for c0 in range(0, prep.n, chunk):
        n = min(chunk, prep.n - c0)
        G = xq @ prep.yc[c0 : c0 + n].T
        S, span, pmax, cl, ci = _select(G, prep, ones, c0, KP, mark=False)
        del G
        top = torch.maximum(top, cl.view(B, S, KP).amin(2).amax(1))
        cand_l, cand_i = torch.cat([cand_l, cl], 1), torch.cat([cand_i, ci], 1)
        if cand_l.shape[1] > 4 * K:
            cand_l, cand_i, top = merge(cand_l, cand_i, top, K)
    if cand_l.shape[1] > K:
        cand_l, cand_i, top = merge(cand_l, cand_i, top, K)
    return cand_i, top


def _stream(xq, prep, a, chunk, K, dtype):
    """Steps 1-4 over all chunks. Returns (m, ZP, HP, A, cand_idx, top) with ZP / HP (B, S)
    partials (S = 1 after a merge), m (B,) on the l' scale, A (B, d) (GEMM dtype for one chunk)
    and ``top`` (B,) the largest l' a non-candidate can have (the largest minimum of a full
    candidate list, or of the candidates dropped in a merge)."""
    B, d = xq.shape
    N = prep.n
    dev = xq.device
    f64 = torch.float64
    chunk = min(chunk, (2**31 - 1) // max(1, B))  # int32 offsets inside the kernels
    state = None
    cand_l = cand_i = None
    for c0 in range(0, N, chunk):
        n = min(chunk, N - c0)
        yk = _centred_rows(prep, slice(c0, c0 + n), dtype)
        G = xq @ yk.T
        S, span, pmax, cl, ci = _select(G, prep, a, c0, K, mark=True)
        W = torch.empty(B, n, dtype=dtype, device=dev)
        mc = torch.empty(B, dtype=f64, device=dev)
        zp = torch.empty(B, S, dtype=f64, device=dev)
        hp = torch.empty(B, S, dtype=f64, device=dev)
        _weights_kernel[(B, S)](
            G,
            G.stride(0),
            prep.ysq,
            a,
            pmax,
            W,
            W.stride(0),
            mc,
            zp,
            hp,
            n,
            c0,
            span,
            S,
            SP=_next_pow2(S),
            BLOCK=_BLOCK,
        )
        del G
        Ac = W @ yk
        del W
        top_c = cl.view(B, S, K).amin(2).amax(1)  # -inf where a list holds a whole split
        if state is None:
            state = [mc, zp, hp, Ac]
            cand_l, cand_i, top = cl, ci, top_c
            continue
        top = torch.maximum(top, top_c)
        m, z, h, acc = state
        if z.shape[1] > 1:
            z, h = z.sum(1, keepdim=True), h.sum(1, keepdim=True)
        zc, hc = zp.sum(1, keepdim=True), hp.sum(1, keepdim=True)
        mn = torch.maximum(m, mc)
        so, sn = torch.exp(m - mn)[:, None], torch.exp(mc - mn)[:, None]
        h = so * (h + (m - mn)[:, None] * z) + sn * (hc + (mc - mn)[:, None] * zc)
        z = so * z + sn * zc
        acc = acc.to(f64) * so + Ac.to(f64) * sn
        cand_l, cand_i = torch.cat([cand_l, cl], 1), torch.cat([cand_i, ci], 1)
        if cand_l.shape[1] > _MAX_CANDIDATES:  # drop the weakest, with approx. weights
            order = torch.argsort(cand_l, dim=1, descending=True, stable=True)
            keep, drop = order[:, :_MAX_CANDIDATES], order[:, _MAX_CANDIDATES:]
            dl, di = torch.gather(cand_l, 1, drop), torch.gather(cand_i, 1, drop)
            le = torch.where(di >= 0, dl - mn[:, None], torch.full_like(dl, -math.inf))
            we = torch.exp(le)
            z = z + we.sum(1, keepdim=True)
            h = h + torch.where(we > 0, we * le, torch.zeros_like(we)).sum(1, keepdim=True)
            acc = acc + torch.einsum("bm,bmd->bd", we, _centred_rows(prep, di.clamp_min(0), f64))
            top = torch.maximum(top, torch.where(di >= 0, dl, torch.full_like(dl, -math.inf)).amax(1))
            cand_l, cand_i = torch.gather(cand_l, 1, keep), torch.gather(cand_i, 1, keep)
        state = [mn, z, h, acc]
    m, z, h, acc = state
    return m, z, h, acc, cand_i, top


def _run(x, xq, prep, a, xsq, eps, chunk, K, dtype):
    """Stream + refine for queries ``x`` (original values) with centred GEMM operands ``xq``."""
    B, d = x.shape
    m, zp, hp, acc, ci, top = _stream(xq, prep, a, chunk, K, dtype)
    ci = ci.contiguous()
    acc = acc.contiguous()
    M = ci.shape[1]
    f64 = torch.float64
    mean = torch.empty(B, d, dtype=f64, device=x.device)
    lse = torch.empty(B, dtype=f64, device=x.device)
    ent = torch.empty(B, dtype=f64, device=x.device)
    cert = torch.empty(B, dtype=f64, device=x.device)
    S = zp.shape[1]
    _refine_kernel[(B,)](
        x,
        x.stride(0),
        prep.y,
        prep.y.stride(0),
        prep.center,
        a,
        xsq,
        eps,
        m,
        zp,
        hp,
        S,
        acc,
        acc.stride(0),
        ci,
        M,
        top.contiguous(),
        mean,
        mean.stride(0),
        lse,
        ent,
        cert,
        d,
        SP=_next_pow2(S),
        MP=_next_pow2(M),
        BLOCK_D=max(16, min(256, 8192 // _next_pow2(M), _next_pow2(d))),
    )
    return mean, lse, ent, cert


def empirical_posterior_triton(
    x: torch.Tensor,
    prep,
    sigma,
    *,
    chunk_size: int | None = None,
    n_candidates: int = N_CANDIDATES,
    rtol: float = DEFAULT_RTOL,
    allow_tf32: bool = False,
    info: dict | None = None,
    validated: bool = False,
):
    """Posterior mean, log-sum-exp and effective count with the fused Triton kernels (GPU).

    Same contract as :func:`gaussdiff.kernels.empirical_posterior_torch`; ``chunk_size=None``
    picks :func:`auto_chunk`. ``n_candidates`` is rounded up to a power of two (per split of
    every chunk). ``validated=True`` skips the checks of ``x`` and ``sigma`` (each costs a
    device sync) when the caller has made them. Returns float64 tensors
    ``(mean (B, d), lse (B,), neff (B,))``."""
    s = _check_torch_inputs(x, prep, sigma, validated=validated)
    if not validated:
        check_sigma_float64(*torch.stack(torch.aminmax(s)).tolist())
    with _on_device(x.device):
        return _posterior(x, prep, s, chunk_size, n_candidates, rtol, allow_tf32, info)


def _on_device(device):
    """Triton launches on the *current* CUDA device and stream: make it the tensors' device."""
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _posterior(x, prep, s, chunk_size, n_candidates, rtol, allow_tf32, info):
    """The body of :func:`empirical_posterior_triton` (on the right device, inputs checked)."""
    B, d = x.shape
    y = prep.y
    chunk = auto_chunk(B, prep.n) if chunk_size is None else check_int(chunk_size, "chunk_size")
    K = _next_pow2(max(1, int(n_candidates)))
    f64 = torch.float64
    dev = x.device
    x = x.contiguous()
    u = _unit_roundoff(np.float32 if y.dtype == torch.float32 else np.float64)
    xq = torch.empty(B, d, dtype=y.dtype, device=dev)
    xsq = torch.empty(B, dtype=f64, device=dev)
    a = torch.empty(B, dtype=f64, device=dev)
    eps = torch.empty(B, dtype=f64, device=dev)
    coef = torch.full((1,), _LAMBDA * math.sqrt(d + 2) * u * prep.ymax, dtype=f64, device=dev)
    _prep_kernel[(B,)](
        x,
        x.stride(0),
        prep.center,
        s.contiguous(),
        xq,
        xq.stride(0),
        xsq,
        a,
        eps,
        coef,
        d,
        BLOCK_D=min(1024, _next_pow2(d)),
    )
    with _tf32(dev, allow_tf32 and y.dtype == torch.float32):
        mean, lse, ent, cert = _run(x, xq, prep, a, xsq, eps, chunk, K, y.dtype)
    bad = torch.nonzero(cert > rtol).flatten()
    n_fb = 0
    if bad.numel() and y.dtype != f64 and not allow_tf32:
        xb = x[bad].contiguous()
        xq64 = (xb.to(f64) - prep.center).contiguous()
        eps64 = (eps[bad] * (_unit_roundoff(np.float64) / u)).contiguous()
        # float64 chunks are centred on the fly: keep them at <= 2^25 elements (not the whole set)
        chunk64 = min(auto_chunk(len(bad), prep.n) if chunk_size is None else chunk, max(2048, _ELEMS // d))
        mb, lb, eb, cb = _run(xb, xq64, prep, a[bad].contiguous(), xsq[bad].contiguous(), eps64, chunk64, K, f64)
        mean[bad], lse[bad], ent[bad], cert[bad] = mb, lb, eb, cb
        n_fb = int(bad.numel())
    if info is not None:
        info["n_fallback"] = n_fb
        info["cert"] = cert
    return mean, lse, torch.exp(ent)


def nearest_neighbors_triton(
    x: torch.Tensor, data, k: int = 1, *, chunk_size: int | None = None, info: dict | None = None
):
    """Exact ``k`` nearest neighbours with the fused candidate pass (:func:`knn_candidates`),
    then the exact refinement and rigorous certificate the torch backend shares (step 6 of
    :mod:`gaussdiff.kernels`). ``data`` is a (N, ...) tensor or a
    :class:`~gaussdiff.kernels.PreparedData`; ``chunk_size=None`` picks :func:`auto_chunk`.

    Returns ``(dist (B, k) float64 ascending, idx (B, k) int64)``."""
    prep, k, x, x64c, xsq, K = _knn_queries_torch(x, data, k)
    chunk = auto_chunk(x.shape[0], prep.n) if chunk_size is None else check_int(chunk_size, "chunk_size")
    with _tf32(x.device, False):
        ci, top = knn_candidates(x64c.to(prep.y.dtype).contiguous(), prep, chunk, K)
        rest_d2 = xsq - top  # +inf where every point is a candidate
    return _knn_refine_torch(x, prep, k, ci, rest_d2, xsq, chunk_size, info)
