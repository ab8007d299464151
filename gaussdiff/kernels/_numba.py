"""The numba backend (CPU) of the empirical-denoiser kernels.

Streaming kernels compiled with numba: each thread takes a block of queries (``prange``) and
calls single-threaded BLAS for the two GEMMs of every ``(block, chunk)`` tile; the online
log-sum-exp, the candidate lists and the exact refinement run in compiled loops. The algorithm
and its error bounds are in the docstring of :mod:`gaussdiff.kernels`; the public wrappers are
:func:`empirical_posterior_numba` and :func:`nearest_neighbors_numba` (numpy in, numpy out).

Imports only :mod:`gaussdiff.kernels._core` (the layers are drawn there).

.. warning:: numba ``parallel=True`` kernels are not fork-safe: once they have run, a child
   created by ``fork`` (``multiprocessing``'s default on Linux, joblib's ``"multiprocessing"``
   backend) can die. Use ``spawn``/``forkserver`` or loky pools.
"""

from __future__ import annotations

import contextlib
import math

import numba
import numpy as np
from numba import njit, prange

from .._checks import check_int, check_sigma_float64
from ._core import (
    DEFAULT_CHUNK,
    DEFAULT_RTOL,
    N_CANDIDATES,
    _KNN_EXTRA,
    PreparedData,
    _certificate,
    _check_k,
    _knn_bound,
    _query_terms,
    _unit_roundoff,
)

__all__ = ["empirical_posterior_numba", "nearest_neighbors_numba"]


# =============================================================================================
# numba kernels
# =============================================================================================


@njit(cache=True, inline="always")
def _exp_f32(t):
    """``exp(-t)`` for ``t >= 0``, accurate to ~1e-11 relative before rounding to float32 (1 ulp
    of float32 at most, correctly rounded in all but ~1e-6 of cases): Cody-Waite reduction
    ``-t = -q ln 2 + r``, a degree-10 Taylor polynomial on ``|r| <= ln(2)/2`` and ``2^-q`` built
    by exact multiplications by powers of two selected from the bits of ``q``. No calls and no
    table lookups, so LLVM vectorises the loop that uses it (libm's ``exp`` is a scalar call,
    ~5x slower). Arguments beyond 110 are clamped: ``exp(-110)`` already rounds to 0 in float32.
    Only used where the weights are rounded to float32; float64 weights use ``math.exp``."""
    t = min(t, 110.0)
    q = np.int64(t * 1.4426950408889634 + 0.5)
    qf = np.float64(q)
    r = (qf * 0.6931471803691238 - t) + qf * 1.9082149292705877e-10
    p = 1.0 + r * (
        1.0
        + r
        * (
            0.5
            + r
            * (
                1.0 / 6
                + r
                * (
                    1.0 / 24
                    + r
                    * (
                        1.0 / 120
                        + r
                        * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800)))))
                    )
                )
            )
        )
    )
    s = 1.0
    s *= 0.5 if q & 1 else 1.0
    s *= 0.25 if q & 2 else 1.0
    s *= 0.0625 if q & 4 else 1.0
    s *= 0.00390625 if q & 8 else 1.0
    s *= 1.52587890625e-05 if q & 16 else 1.0
    s *= 2.3283064365386963e-10 if q & 32 else 1.0
    s *= 5.421010862427522e-20 if q & 64 else 1.0
    s *= 2.938735877055719e-39 if q & 128 else 1.0
    return p * s


@njit(cache=True)
def _row_logits(g, ysq, xs, a, buf, n):
    """``buf[j] = -(xs + ysq[j] - 2 g[j]) a`` in float64 for one query, and their maximum (four
    running maxima: the order does not matter for a maximum, and four independent chains let
    LLVM vectorise what a single ``max`` chain keeps scalar)."""
    m0 = m1 = m2 = m3 = -np.inf
    n4 = n // 4 * 4
    for j in range(0, n4, 4):
        l0 = -(xs + ysq[j] - 2.0 * np.float64(g[j])) * a
        l1 = -(xs + ysq[j + 1] - 2.0 * np.float64(g[j + 1])) * a
        l2 = -(xs + ysq[j + 2] - 2.0 * np.float64(g[j + 2])) * a
        l3 = -(xs + ysq[j + 3] - 2.0 * np.float64(g[j + 3])) * a
        buf[j] = l0
        buf[j + 1] = l1
        buf[j + 2] = l2
        buf[j + 3] = l3
        m0 = max(m0, l0)
        m1 = max(m1, l1)
        m2 = max(m2, l2)
        m3 = max(m3, l3)
    for j in range(n4, n):
        l0 = -(xs + ysq[j] - 2.0 * np.float64(g[j])) * a
        buf[j] = l0
        m0 = max(m0, l0)
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True, fastmath={"reassoc"})
def _weight_sums(w, buf, m, n):
    """``(sum w_j, sum w_j (buf_j - m))`` over the weights as the second GEMM sees them (rounded to
    ``w``'s dtype). Reassociation lets LLVM vectorise both sums; the order is fixed by the code,
    so the same inputs give the same bits. Candidates carry ``buf = -1e300`` and ``w = 0``, which
    add exactly 0 to both sums."""
    z = 0.0
    h = 0.0
    for j in range(n):
        wr = np.float64(w[j])
        z += wr
        h += wr * (buf[j] - m)
    return z, h


@njit(cache=True)
def _update_tile(G, yc, ysq, xsq, inv2s2, c0, m, z, h, acc, cand_l, cand_i, W, buf, want_mean):
    """One (b, n) tile of GEMM results ``G = x_c . y_c`` (training points ``c0 ... c0 + n``).

    Float64 logits; the sorted candidate lists are updated; when ``want_mean``, the online
    log-sum-exp of the *non-candidates* is updated: current candidates get weight 0 in ``W``
    (the tile of weights for the second GEMM), and a candidate of an earlier chunk that drops
    out of the list is added explicitly. ``acc`` rows are rescaled here; the caller adds
    ``W @ y_chunk``. So the candidates never enter the running sums and nothing has to be
    subtracted later (no cancellation). ``buf`` (n,) scratch.

    The passes over a row are split so that the long ones vectorise: logits and their maximum
    (:func:`_row_logits`), candidate insertion (scalar, a compare per point, skipped when the row's
    maximum cannot enter the list), weights (:func:`_exp_f32` when ``W`` is float32) and the sums
    of the rounded weights (:func:`_weight_sums`)."""
    B, n = G.shape
    K = cand_l.shape[1]
    d = yc.shape[1]
    f32 = W.itemsize == 4
    ev_l = np.empty(K)
    ev_i = np.empty(K, dtype=np.int64)
    for b in range(B):
        a = inv2s2[b]
        xs = xsq[b]
        mx = _row_logits(G[b], ysq[c0 : c0 + n], xs, a, buf, n)
        thr = cand_l[b, K - 1]
        n_ev = 0
        for j in range(n if mx > thr else 0):  # insertion into the sorted candidate list
            lj = buf[j]
            if lj > thr:
                out = cand_i[b, K - 1]
                if 0 <= out < c0:  # a candidate of an earlier chunk drops out
                    ev_l[n_ev] = cand_l[b, K - 1]
                    ev_i[n_ev] = out
                    n_ev += 1
                p = K - 1
                while p > 0 and cand_l[b, p - 1] < lj:
                    cand_l[b, p] = cand_l[b, p - 1]
                    cand_i[b, p] = cand_i[b, p - 1]
                    p -= 1
                cand_l[b, p] = lj
                cand_i[b, p] = c0 + j
                thr = cand_l[b, K - 1]
        if not want_mean:
            continue
        for k in range(K):  # candidates of this chunk: weight 0 in the sums
            i = cand_i[b, k]
            if i >= c0:
                buf[i - c0] = -1e300
        m_old = m[b]
        m_new = max(m_old, mx)
        zb = z[b]
        sc = math.exp(m_old - m_new) if zb > 0.0 else 0.0
        if f32:
            for j in range(n):
                W[b, j] = _exp_f32(m_new - buf[j])
        else:
            for j in range(n):
                W[b, j] = math.exp(buf[j] - m_new)
        zz, hh = _weight_sums(W[b], buf, m_new, n)
        for j in range(d):
            acc[b, j] *= sc
        for e in range(n_ev):
            lj = ev_l[e] - m_new
            w = math.exp(lj)
            zz += w
            hh += w * lj
            for j in range(d):
                acc[b, j] += w * np.float64(yc[ev_i[e], j])
        if zb > 0.0:
            h[b] = sc * (h[b] + (m_old - m_new) * zb) + hh
        else:
            h[b] = hh
        z[b] = zb * sc + zz
        m[b] = m_new


@njit(cache=True)
def _add(acc, T):
    B, d = acc.shape
    for b in range(B):
        for j in range(d):
            acc[b, j] += np.float64(T[b, j])


@njit(cache=True)
def _stream_block(xb, yc, ysq, xsq, inv2s2, chunk, m, z, h, acc, cand_l, cand_i, want_mean):
    """Stream one block of queries ``xb`` (b, d) over all of ``yc`` (same dtype, so the GEMMs
    run in that dtype); results go to the views ``m, z, h, acc, cand_l, cand_i``."""
    B = xb.shape[0]
    N = yc.shape[0]
    buf = np.empty(chunk)
    for c0 in range(0, N, chunk):
        c1 = min(N, c0 + chunk)
        yk = yc[c0:c1]
        G = np.dot(xb, yk.T)
        W = np.empty((B, c1 - c0) if want_mean else (0, 0), dtype=yc.dtype)
        _update_tile(G, yc, ysq, xsq, inv2s2, c0, m, z, h, acc, cand_l, cand_i, W, buf, want_mean)
        if want_mean:
            _add(acc, np.dot(W, yk))


@njit(cache=True)
def _stream_block_wide(xb64, y, center, yc, ysq, xsq, inv2s2, chunk, m, z, h, acc, cand_l, cand_i, want_mean):
    """:func:`_stream_block` with both GEMMs in float64: each chunk is centred on the fly in
    float64 from the original values ``y`` (the stored centred copy ``yc`` is rounded to the data's
    dtype, an error the float64 certificate does not allow for)."""
    N = yc.shape[0]
    d = yc.shape[1]
    ywide = np.empty((min(chunk, N), d))
    for c0 in range(0, N, chunk):
        c1 = min(N, c0 + chunk)
        yk = ywide[: c1 - c0]
        for i in range(c1 - c0):
            for j in range(d):
                yk[i, j] = np.float64(y[c0 + i, j]) - center[j]
        _stream_chunk64(xb64, yk, yc, ysq, xsq, inv2s2, c0, m, z, h, acc, cand_l, cand_i, want_mean)


@njit(cache=True)
def _stream_chunk64(xb64, yk, yc, ysq, xsq, inv2s2, c0, m, z, h, acc, cand_l, cand_i, want_mean):
    """One chunk ``yk`` (float64 copy of ``yc[c0:c0 + n]``) with float64 GEMMs."""
    B = xb64.shape[0]
    n = yk.shape[0]
    G = np.dot(xb64, yk.T)
    W = np.empty((B, n) if want_mean else (0, 0))
    buf = np.empty(n)
    _update_tile(G, yc, ysq, xsq, inv2s2, c0, m, z, h, acc, cand_l, cand_i, W, buf, want_mean)
    if want_mean:
        _add(acc, np.dot(W, yk))


@njit(parallel=True, cache=True)
def _stream_kernel(xq, xq64, y, center, yc, ysq, xsq, inv2s2, chunk, qblock, ncand, want_mean, wide):
    """Stream over ``yc`` (N, d) in chunks, ``prange`` over blocks of ``qblock`` queries (each
    thread calls single-threaded BLAS on its own (qblock, chunk) tile). ``xq`` (B, d) centred
    queries in ``yc``'s dtype, ``xq64`` the same in float64 (used when ``wide``: both GEMMs in
    float64). Returns the running max, Z, H, the weighted sum A (B, d) (empty when not
    ``want_mean``) and the candidate lists (approximate logits descending, indices)."""
    B, d = xq.shape
    m = np.full(B, -np.inf)
    z = np.zeros(B)
    h = np.zeros(B)
    acc = np.zeros((B, d if want_mean else 0))
    cand_l = np.full((B, ncand), -np.inf)
    cand_i = np.full((B, ncand), -1, dtype=np.int64)
    nblk = (B + qblock - 1) // qblock
    for blk in prange(nblk):
        b0 = blk * qblock
        b1 = min(B, b0 + qblock)
        if wide:
            _stream_block_wide(
                xq64[b0:b1],
                y,
                center,
                yc,
                ysq,
                xsq[b0:b1],
                inv2s2[b0:b1],
                chunk,
                m[b0:b1],
                z[b0:b1],
                h[b0:b1],
                acc[b0:b1],
                cand_l[b0:b1],
                cand_i[b0:b1],
                want_mean,
            )
        else:
            _stream_block(
                xq[b0:b1],
                yc,
                ysq,
                xsq[b0:b1],
                inv2s2[b0:b1],
                chunk,
                m[b0:b1],
                z[b0:b1],
                h[b0:b1],
                acc[b0:b1],
                cand_l[b0:b1],
                cand_i[b0:b1],
                want_mean,
            )
    return m, z, h, acc, cand_l, cand_i


_certificate = njit(cache=True)(_certificate)  # the core's formula, compiled


@njit(parallel=True, cache=True)
def _refine_kernel(x, y, center, yc, inv2s2, m, z, h, acc, cand_l, cand_i, eps):
    """Steps 4-5: add the candidates, with exact weights (float64 from exact differences of the
    original values), to the candidate-free running sums. Returns the centred mean (B, d), lse,
    entropy and the certificate of step 5 per query."""
    B, d = x.shape
    K = cand_l.shape[1]
    mean = np.empty((B, d))
    lse = np.empty(B)
    ent = np.empty(B)
    cert = np.empty(B)
    for b in prange(B):
        a = inv2s2[b]
        mb = m[b]
        zr = z[b]
        hr = h[b]
        ar = acc[b].copy()
        lex = np.full(K, -np.inf)
        for k in range(K):
            i = cand_i[b, k]
            if i < 0:
                continue
            s = 0.0
            for j in range(d):  # exact squared distance
                t = np.float64(x[b, j]) - np.float64(y[i, j])
                s += t * t
            lex[k] = -s * a
        if zr <= 0.0:  # every point is a candidate
            zr = 0.0
            hr = 0.0
            ar[:] = 0.0
            m_ex = lex.max()
        else:  # the rest's log-mass is mb + log(zr)
            m_ex = max(mb + math.log(zr), lex.max())
        sc = math.exp(mb - m_ex) if zr > 0.0 else 0.0
        hr = sc * (hr + (mb - m_ex) * zr)
        zr *= sc
        for j in range(d):
            ar[j] *= sc
        zt = zr
        ht = hr
        for k in range(K):
            i = cand_i[b, k]
            if i < 0:
                continue
            w = math.exp(lex[k] - m_ex)
            zt += w
            ht += w * (lex[k] - m_ex)
            for j in range(d):
                ar[j] += w * (np.float64(y[i, j]) - center[j])
        for j in range(d):
            mean[b, j] = ar[j] / zt
        lse[b] = m_ex + math.log(zt)
        ent[b] = math.log(zt) - ht / zt
        cert[b] = _certificate(eps[b], zr / zt, cand_l[b, K - 1] - lse[b], d)
    return mean, lse, ent, cert


@njit(parallel=True, cache=True)
def _knn_refine_kernel(x, y, cand_l, cand_i, inv2s2, bound, k):
    """Exact squared distances of the candidates, the k best (ascending, ties by index), and
    whether the rigorous certificate holds."""
    B = x.shape[0]
    d = x.shape[1]
    K = cand_l.shape[1]
    dist = np.empty((B, k))
    idx = np.empty((B, k), dtype=np.int64)
    ok = np.empty(B, dtype=np.bool_)
    for b in prange(B):
        dd = np.full(K, np.inf)
        ii = np.full(K, 9223372036854775807)
        for c in range(K):
            i = cand_i[b, c]
            if i < 0:
                continue
            s = 0.0
            for j in range(d):
                t = np.float64(x[b, j]) - np.float64(y[i, j])
                s += t * t
            p = c  # insertion sort on (distance, index)
            while p > 0 and (dd[p - 1] > s or (dd[p - 1] == s and ii[p - 1] > i)):
                dd[p] = dd[p - 1]
                ii[p] = ii[p - 1]
                p -= 1
            dd[p] = s
            ii[p] = i
        order = np.arange(K)
        for r in range(k):
            dist[b, r] = dd[order[r]]
            idx[b, r] = ii[order[r]]
        if cand_i[b, K - 1] < 0:  # every training point is a candidate
            ok[b] = True
        else:
            worst_out = -cand_l[b, K - 1] / inv2s2[b]  # smallest approximate d2 not kept
            ok[b] = dist[b, k - 1] < worst_out - bound[b]
    return dist, idx, ok


@njit(parallel=True, cache=True)
def _knn_bruteforce_kernel(x, y, k):
    """Exact k nearest neighbours from exact float64 differences, O(N) per query."""
    B, d = x.shape
    N = y.shape[0]
    dist = np.empty((B, k))
    idx = np.empty((B, k), dtype=np.int64)
    for b in prange(B):
        dd = np.empty(N)
        for i in range(N):
            s = 0.0
            for j in range(d):
                t = np.float64(x[b, j]) - np.float64(y[i, j])
                s += t * t
            dd[i] = s
        order = np.argsort(dd, kind="mergesort")  # stable: ties by index
        for r in range(k):
            dist[b, r] = dd[order[r]]
            idx[b, r] = order[r]
    return dist, idx


# =============================================================================================
# numba backend: public wrappers
# =============================================================================================

_BLAS_CTRL = None


def _single_threaded_blas():
    """BLAS limited to one thread while the numba kernels run: each numba thread calls BLAS on
    its own tile, and two thread pools spinning on the same cores would halve the speed."""
    global _BLAS_CTRL
    try:
        if _BLAS_CTRL is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba calls: load it first)
            from threadpoolctl import ThreadpoolController

            _BLAS_CTRL = ThreadpoolController()
        return _BLAS_CTRL.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing: run with BLAS as it is
        return contextlib.nullcontext()


def _qblock(B: int) -> int:
    """Queries per parallel block: enough blocks for every thread, blocks of <= 128 rows. Each
    block packs every chunk of the training set once for its GEMMs, so larger blocks pack less;
    measured on 2 cores (N, d, B = 50000, 3072, 256; chunk 2048): 1.59 / 1.23 / 0.99 s for
    blocks of 32 / 64 / 128 rows, and 128 is as fast as 64 at d = 64."""
    nt = numba.get_num_threads()
    return int(max(1, min(128, -(-B // nt))))


def _check_array(a, name, shape, dtype=None):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.ndim != len(shape) or any(s is not None and a.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{name}: expected shape {tuple('*' if s is None else s for s in shape)}, got {a.shape}")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name}: expected float32 or float64, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")


def _as_sigma_np(sigma, B):
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(B, float(s))
    if s.shape != (B,):
        raise ValueError(f"sigma: expected a float or shape ({B},), got {s.shape}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("sigma: must be finite and > 0")
    check_sigma_float64(float(s.min()), float(s.max()))
    return np.ascontiguousarray(s)


def empirical_posterior_numba(
    x,
    prep: PreparedData,
    sigma,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    n_candidates: int = N_CANDIDATES,
    rtol: float = DEFAULT_RTOL,
    kernel=None,
    info: dict | None = None,
):
    """Posterior mean, log-sum-exp and effective count of the empirical distribution (numba, CPU).

    Parameters
    ----------
    x : (B, d) numpy array, C-contiguous, same dtype as the data.
    prep : the training data from :func:`prepare_data` (``backend="numba"``).
    sigma : float or (B,) positive noise levels.
    chunk_size : training points per streamed chunk.
    n_candidates : leading candidates per query recomputed from exact differences.
    rtol : certificate threshold; queries above it are recomputed with float64 GEMMs.
    kernel : the streaming kernel (tests pass ``_stream_kernel.py_func``).
    info : if a dict, receives ``n_fallback`` (queries recomputed in float64) and ``cert``.

    Returns
    -------
    mean : (B, d) float64 ``D(x)``.  lse : (B,) float64 ``log sum_i exp(-|x - y_i|^2 / 2 sigma^2)``.
    neff : (B,) float64 ``exp(entropy of the posterior weights)``.
    """
    y = prep.y
    _check_array(x, "x", (None, prep.d), y.dtype)
    B = x.shape[0]
    if B < 1:
        raise ValueError("x: needs at least one query")
    s = _as_sigma_np(sigma, B)
    chunk = check_int(chunk_size, "chunk_size")
    K = max(1, min(int(n_candidates), prep.n))
    kernel = _stream_kernel if kernel is None else kernel
    x64c = x.astype(np.float64) - prep.center
    xq = np.ascontiguousarray(x64c.astype(y.dtype))
    xsq, inv2s2, eps = _query_terms(x64c, prep.ymax, s, prep.d, _unit_roundoff(y.dtype))

    def run(rows, xq_, wide, eps_):
        xr = np.ascontiguousarray(xq_[rows])
        with _single_threaded_blas():
            m, z, h, acc, cl, ci = kernel(
                xr,
                np.ascontiguousarray(x64c[rows]),
                y,
                prep.center,
                prep.yc,
                prep.ysq,
                xsq[rows],
                inv2s2[rows],
                chunk,
                _qblock(len(rows)),
                K,
                True,
                wide,
            )
        return _refine_kernel(x[rows], y, prep.center, prep.yc, inv2s2[rows], m, z, h, acc, cl, ci, eps_[rows])

    allr = np.arange(B)
    mean, lse, ent, cert = run(allr, xq, False, eps)
    bad = np.nonzero(cert > rtol)[0]
    if bad.size and y.dtype != np.float64:
        eps64 = eps * (_unit_roundoff(np.float64) / _unit_roundoff(y.dtype))
        mb, lb, eb, cb = run(bad, xq, True, eps64)
        mean[bad], lse[bad], ent[bad], cert[bad] = mb, lb, eb, cb
    if info is not None:
        info["n_fallback"] = int(bad.size) if y.dtype != np.float64 else 0
        info["cert"] = cert
    return mean + prep.center, lse, np.exp(ent)


def nearest_neighbors_numba(
    x, prep: PreparedData, k: int = 1, *, chunk_size: int = DEFAULT_CHUNK, kernel=None, info: dict | None = None
):
    """Exact ``k`` nearest neighbours (numba, CPU): ``(dist (B, k) float64 ascending, idx (B, k))``.

    One streamed GEMM pass keeps ``k + 16`` candidates per query; they are recomputed from exact
    differences and certified with a rigorous rounding bound (:mod:`gaussdiff.kernels`, step 6). Queries
    that do not certify are recomputed by brute force from exact differences."""
    y = prep.y
    _check_array(x, "x", (None, prep.d), y.dtype)
    k = _check_k(k, prep.n)
    chunk = check_int(chunk_size, "chunk_size")
    kernel = _stream_kernel if kernel is None else kernel
    B = x.shape[0]
    K = min(prep.n, k + _KNN_EXTRA)
    x64c = x.astype(np.float64) - prep.center
    xq = np.ascontiguousarray(x64c.astype(y.dtype))
    xsq = (x64c * x64c).sum(1)
    inv2s2 = np.ones(B)
    with _single_threaded_blas():
        _, _, _, _, cl, ci = kernel(
            xq, x64c, y, prep.center, prep.yc, prep.ysq, xsq, inv2s2, chunk, _qblock(B), K, False, False
        )
    bound = _knn_bound(xsq, prep.ymax, prep.d, _unit_roundoff(y.dtype))
    dist, idx, ok = _knn_refine_kernel(x, y, cl, ci, inv2s2, bound, k)
    bad = np.nonzero(~ok)[0]
    if bad.size:
        db, ib = _knn_bruteforce_kernel(np.ascontiguousarray(x[bad]), y, k)
        dist[bad], idx[bad] = db, ib
    if info is not None:
        info["n_fallback"] = int(bad.size)
    return np.sqrt(dist), idx
