"""The numba backend (CPU) of the streamed patch posterior of :mod:`gaussdiff.local.patches`.

One compiled kernel, :func:`_stream_kernel`: each thread takes a tile of ``qblock`` query rows of
one group (``prange``), and for every chunk of the group's candidate rows calls single-threaded
BLAS for the logit GEMM (the augmented rows of :func:`gaussdiff.local.patches._stream`, so every
logit carries the same rounding as on the torch path), takes the weights with a vectorised
float64 ``exp`` (:func:`_exp_tile`) while the tile is in cache, and a second small GEMM
accumulates the weighted centres and the normaliser. The online log-sum-exp per row is the
torch path's: the first chunk sets the row's shift ``m`` to its maximum, later chunks add
``exp(l - m)`` and raise ``m`` by ``log z_chunk`` when a chunk's weights sum above 1; a chunk
whose weights overflow for a row (a logit more than ~708 above ``m``) is redone for that row
with its own maximum (the textbook update). No maximum is ever shared between rows.

.. warning:: the kernel is ``parallel=True``: once it has run, a child created by ``fork``
   can die (numba's threading layer is not fork-safe). Use ``spawn``/``forkserver`` pools.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__: list = []

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # fdlibm's split of ln 2: n * _LN2_HI is exact for |n| < 2^21
_LN2_LO = 1.9082149292705877e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2^52: t + _SHIFT rounds t to an integer held in the low bits
_T_MIN = -708.0  # exp(-708) ~ 3e-308: weights below it are set to 0 (relative to the row's shift)
_T_MAX = 708.0  # above it a chunk is redone with its own maximum (the sums would overflow)


# exp(r) on |r| <= ln(2)/2: the degree-11 polynomial interpolating exp at the 12 Chebyshev nodes
# of the interval (found in 50-digit arithmetic, coefficients rounded to float64). Its relative
# error is 1.7e-17 with these rounded coefficients (the degree-13 Taylor polynomial: 5e-18), far
# below float64's 1.1e-16, and two terms shorter.
_C0, _C1, _C2, _C3 = 1.0, 1.0, 0.5000000000000019, 0.1666666666666668
_C4, _C5, _C6, _C7 = 0.0416666666664881, 0.008333333333319601, 0.0013888888952314775, 0.00019841269890047113
_C8, _C9, _C10, _C11 = 2.4801485482328494e-05, 2.755724091857897e-06, 2.763263963904103e-07, 2.5110037605963777e-08


@njit(cache=True, fastmath={"contract"})
def _exp_tile(L, shift, T, K, nq, nj):
    """``T[i, j] = exp(L[i, j] - shift[i])`` in float64 for ``i < nq, j < nj`` (``K`` a scratch
    row of at least ``nj`` entries).

    Cody-Waite reduction ``t = n ln 2 + r`` (``n`` rounded to nearest by the 1.5 * 2^52 shifter,
    ``|r| <= ln(2) / 2``), the degree-11 Chebyshev interpolant of ``exp`` on that interval
    (``_C0 .. _C11``) and ``2^n`` added to the exponent bits: about 1 ulp, no calls and no
    tables, so LLVM vectorises the loops (libm's ``exp`` is a scalar call, ~5x slower here).
    Arguments are clamped to ``[-708, 708]`` (normal results only) and those below ``-708``
    give exactly 0. ``fastmath={"contract"}`` lets LLVM fuse each multiply-add into one FMA
    (one rounding instead of two; no reassociation, so the shifter and the two-part ``ln 2``
    keep their exactness), and the two passes run a row at a time so that a row's ``T`` and
    ``K`` stay in L1: measured ~0.77 ns per entry against 0.92 ns with the Taylor polynomial
    over whole tiles (one thread, 128 x 512 tiles), about the FMA units' bound for the ~30
    vector operations an entry takes."""
    Ti = T.view(np.int64)
    Ki = K.view(np.int64)
    sb = np.int64(0x4338000000000000)  # the bits of _SHIFT
    for i in range(nq):
        s = shift[i]
        for j in range(nj):
            t0 = L[i, j] - s
            t = min(max(t0, _T_MIN), _T_MAX)
            kd = t * _LOG2E + _SHIFT
            n = kd - _SHIFT
            r = (t - n * _LN2_HI) - n * _LN2_LO
            p = _C11 * r + _C10  # Horner
            p = p * r + _C9
            p = p * r + _C8
            p = p * r + _C7
            p = p * r + _C6
            p = p * r + _C5
            p = p * r + _C4
            p = p * r + _C3
            p = p * r + _C2
            p = p * r + _C1
            p = p * r + _C0
            K[j] = kd
            T[i, j] = p if t0 >= _T_MIN else 0.0
        for j in range(nj):
            e = (Ki[j] - sb) << 52
            Ti[i, j] = Ti[i, j] + e if Ti[i, j] != 0 else 0


@njit(cache=True)
def _redo_row(L, v, m, acc, i, nj):
    """The textbook online update of one row ``i`` of a chunk, from its logits ``L[i]``: the new
    maximum taken, ``math.exp`` per weight, ``acc`` rescaled."""
    mx = -np.inf
    for j in range(nj):
        mx = max(mx, L[i, j])
    mb = max(m, mx)
    C1 = v.shape[1]
    s = np.zeros(C1)
    for j in range(nj):
        w = math.exp(L[i, j] - mb)
        for c in range(C1):
            s[c] += w * v[j, c]
    sc = math.exp(m - mb) if m > -np.inf else 0.0
    for c in range(C1):
        acc[c] = acc[c] * sc + s[c]
    return mb


@njit(parallel=True, cache=True)
def _stream_kernel(xa, ya, v, m, acc, qblock, chunk):
    """One pass of the online log-sum-exp over the candidate rows ``ya`` (G, M, e) for the query
    rows ``xa`` (G, Q, e): ``xa . ya`` is the logit (the augmented rows of the torch path with a
    zero shift column), ``v`` (G, M, C + 1) the centred centres and a 1. Updates the row shifts
    ``m`` (G, Q; ``-inf`` before the first candidate) and the sums ``acc`` (G, Q, C + 1) in place,
    so that a stream of chunks may be passed one call at a time."""
    G, Q, e = xa.shape
    M = ya.shape[1]
    C1 = v.shape[2]
    nqb = (Q + qblock - 1) // qblock
    for task in prange(G * nqb):
        g = task // nqb
        q0 = (task % nqb) * qblock
        q1 = min(Q, q0 + qblock)
        nq = q1 - q0
        xb = np.ascontiguousarray(xa[g, q0:q1])
        K = np.empty(min(chunk, M))
        T = np.empty((nq, min(chunk, M)))
        sh = np.empty(nq)
        for j0 in range(0, M, chunk):
            j1 = min(M, j0 + chunk)
            nj = j1 - j0
            yk = ya[g, j0:j1]
            vk = v[g, j0:j1]
            L = np.dot(xb, yk.T)  # (nq, nj) logits
            for i in range(nq):  # a row's first chunk: weights 0 here, redone below with its maximum
                sh[i] = m[g, q0 + i] if m[g, q0 + i] > -np.inf else np.inf
            Tk = T if nj == T.shape[1] else np.empty((nq, nj))  # the last, shorter chunk
            _exp_tile(L, sh, Tk, K, nq, nj)
            S = np.dot(Tk, vk)  # (nq, C + 1): weighted centres and the normaliser
            for i in range(nq):
                q = q0 + i
                mi = m[g, q]
                z = S[i, C1 - 1]
                ok = mi > -np.inf and z < 1e300
                if ok:
                    for c in range(C1):
                        ok = ok and math.isfinite(S[i, c])
                if not ok:  # the first chunk of a row, or weights above exp(708): own maximum
                    m[g, q] = _redo_row(L, vk, mi, acc[g, q], i, nj)
                    continue
                m_new = mi + math.log(max(z, 1.0))
                sc = math.exp(mi - m_new)
                for c in range(C1):
                    acc[g, q, c] = (acc[g, q, c] + S[i, c]) * sc
                m[g, q] = m_new
