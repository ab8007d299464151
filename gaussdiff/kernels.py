r"""Streaming kernels for the exact empirical denoiser and exact nearest neighbours.

For queries ``x`` (B, d), training points ``y_i`` (N, d) and per-query noise levels ``sigma``
(B,), the empirical posterior is (theory (E1)-(E2))

.. math:: l_{bi} = -\frac{\|x_b - y_i\|^2}{2\sigma_b^2}, \quad
          w_{bi} = \mathrm{softmax}_i(l_{bi}), \quad
          D(x_b) = \sum_i w_{bi}\, y_i, \quad
          \mathrm{lse}_b = \log\sum_i e^{l_{bi}}, \quad
          n_{\mathrm{eff},b} = \exp\big(-\textstyle\sum_i w_{bi}\log w_{bi}\big).

How it is computed (both backends, same algorithm)
--------------------------------------------------
1. **Centring.** The data mean ``c`` is computed in float64 and subtracted once; the GEMMs see
   ``x - c`` and ``y_i - c``. Pixel data in [0, 255] otherwise carry a common offset of ~128 per
   coordinate whose products swamp the informative low digits.
2. **GEMM in the data's precision, logits in float64.** ``G = (x - c)(y - c)^T`` is one BLAS GEMM
   per ``(B, chunk)`` tile (float32 for float32 data). The logit is assembled in float64 as
   ``-(|x_c|^2 + |y_c|^2 - 2 G) / (2 sigma^2)`` with both norms computed once in float64, so the
   only rounding left is the GEMM's own accumulation. (``|x_c|^2`` is constant per query and drops
   out of the softmax; it is kept so that ``lse`` is the true (E1) quantity.)
3. **Online log-sum-exp per query**, in float64: running max ``m_b``, normaliser
   ``Z_b = sum exp(l - m_b)``, entropy accumulator ``H_b = sum exp(l - m_b)(l - m_b)`` and the
   weighted sum ``A_b = sum exp(l - m_b) y_c`` (a second GEMM on the tile of weights, added into a
   float64 accumulator). All are rescaled whenever ``m_b`` grows. No normalisation happens inside
   a chunk, and the maximum is per query, never global.
4. **Exact recomputation of the leading candidates.** While streaming, each query keeps its
   ``n_candidates`` largest approximate logits, and these points are kept *out* of the running
   sums (weight 0 in the tile while they are candidates; a point that drops out of the list is
   added then, with its approximate weight). Afterwards the candidates' squared distances are
   recomputed in float64 from *exact differences* of the original (uncentred) values,
   ``sum_j (x_j - y_ij)^2`` (for float32 inputs these differences are exact in float64), and
   added to the sums with exact weights, so nothing is ever subtracted. At small sigma, where
   the GEMM's rounding (``~ u |x_c| |y_c| / sigma^2`` in the logit) is large, the posterior is
   carried by a few points and those are now exact, so near-duplicates and the
   nearest-neighbour winner are decided as a float64 brute force would decide them.
5. **A certificate, and a float64 fallback.** The logit error of every *other* point is bounded by
   ``eps_b = lambda sqrt(d + 2) u |x_c,b| max_i |y_c,i| / sigma_b^2`` (the probabilistic
   rounding-error bound of Higham & Mary 2019 with ``lambda = 4``, ``u`` the unit round-off of the
   GEMM's dtype; the worst-case bound ``d u`` is about ``sqrt(d)`` times larger and never reached
   by blocked FMA GEMMs). These points carry the posterior mass ``rho_b`` (known after step 4)
   and their weights relative errors ``delta_i``, ``|delta_i| <= eps_b``; the error of ``D`` is
   ``sum_i w_i (delta_i - mean_w delta)(y_i - D)`` over them. In the same model the rounding
   errors of distinct dot products are independent, so this sum grows like
   ``sqrt(sum_i w_i^2) <= sqrt(omega_b rho_b)``, not like ``rho_b``: ``omega_b`` bounds the
   weight of any one of these points (``exp`` of the smallest candidate logit plus ``eps_b``
   minus ``lse``), and a broad posterior averages the errors out. The one error common to all
   points, the rounding of the query to the GEMM's dtype, shifts every logit coherently by at
   most ``eps_b / (lambda sqrt(d + 2))`` per unit of ``|y_i - D| / max|y_c|``. Together,

   ``cert_b = eps_b (sqrt(omega_b rho_b) + rho_b / (2 sqrt(d + 2)))``,  and
   ``|D_computed - D| <~ 2 cert_b max_i |y_i - D|``, plus the second GEMM's own rounding (at
   the level of the output's float32 resolution; ``tests/test_kernels.py`` checks both).

   Queries with ``cert_b > rtol`` (default ``1e-4``) are recomputed with float64 GEMMs on data
   centred in float64 (unit round-off ``1.1e-16``). Measured (float32, d = 784, sigma = 10 x the
   data spread, posterior over ~200 points): actual error 3.9e-7 of the spread where the
   worst-case form ``eps_b rho_b`` (used before) was 4.8e-4; the fallback is now rare; see
   ``validation/benchmarks/README.md`` for its cost where it happens.
6. **Nearest neighbours** use the same pass with ``n_candidates = k + 16`` and a *rigorous*
   bound: squared distances from the GEMM are within ``E_b = 2 gamma_{d+4} |x_c,b| max|y_c|`` of
   the truth (``gamma_n = n u / (1 - n u)``, valid for any summation order). The exact k-th
   distance of the candidates is compared with the smallest approximate distance not in the list
   minus ``E_b``; a query that does not certify is recomputed by brute force from exact
   differences. The returned neighbours are therefore exactly those of a float64 brute force
   (ties broken by index).

Memory: the data (and one centred copy in the GEMM dtype) plus ``O((B + chunk) d)`` and one
``(B, chunk)`` tile of logits and weights; no ``(B, N)`` matrix is formed.

Backends: :func:`empirical_posterior_numba` (CPU; ``numba`` kernels call BLAS for the two GEMMs
and run the streaming log-sum-exp with ``prange`` over queries), the fused Triton kernels of
``gaussdiff._triton`` (CUDA; the same algorithm with every step between the two cuBLAS GEMMs in
a few kernels, all candidates recomputed exactly) and :func:`empirical_posterior_torch` (plain
torch ops, CPU or CUDA). TF32 is disabled unless asked for. A slow float64 reference from exact
differences is :func:`empirical_posterior_naive`.

.. warning:: numba ``parallel=True`` kernels are not fork-safe: once they have run, a child
   created by ``fork`` (``multiprocessing``'s default on Linux, joblib's ``"multiprocessing"``
   backend) can die. Use ``spawn``/``forkserver`` or loky pools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

__all__ = ["DEFAULT_CHUNK", "DEFAULT_RTOL", "N_CANDIDATES", "PreparedData", "prepare_data", "have_triton",
           "empirical_posterior", "empirical_posterior_numba", "empirical_posterior_torch",
           "empirical_posterior_naive", "nearest_neighbors", "nearest_neighbors_numba",
           "nearest_neighbors_torch", "nearest_neighbors_naive"]

DEFAULT_CHUNK = 2048
DEFAULT_RTOL = 1e-4
N_CANDIDATES = 8          # leading candidates per query recomputed from exact differences
_KNN_EXTRA = 16           # extra candidates kept beyond k for the nearest-neighbour certificate
_LAMBDA = 4.0             # probabilistic rounding-error factor (Higham & Mary 2019)


def _unit_roundoff(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def _gamma(n: int, u: float) -> float:
    """Worst-case bound ``n u / (1 - n u)`` on the relative error of an ``n``-term dot product."""
    return n * u / (1.0 - n * u)


# =============================================================================================
# prepared data (shared by both backends)
# =============================================================================================

@dataclass(frozen=True)
class PreparedData:
    """Training data laid out for the kernels; build with :func:`prepare_data`.

    ``y`` the original (N, d) values (the reference for exact differences), ``yc`` the centred
    copy in the GEMM dtype, ``center`` (d,) float64, ``ysq`` (N,) float64 ``|y_c|^2`` and
    ``ymax`` = max ``|y_c|``. Arrays are numpy (numba backend) or torch tensors (torch backend).
    """
    y: object
    yc: object
    center: object
    ysq: object
    ymax: float

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def d(self) -> int:
        return self.y.shape[1]


def prepare_data(data, *, backend: str = "numba") -> PreparedData:
    """Centre ``data`` (N, d) once: float64 mean, centred copy in the data's float dtype.

    ``backend="numba"`` gives numpy arrays (C-contiguous), ``"torch"`` and ``"triton"`` tensors
    on the data's device."""
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"data: expected shape (N, d) with N, d >= 1, got {tuple(data.shape)}")
    if data.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"data: expected float32 or float64, got {data.dtype}")
    y64 = data.to(torch.float64)
    center = y64.mean(0)
    yc64 = y64 - center
    ysq = (yc64 * yc64).sum(1)
    ymax = float(ysq.max().sqrt())
    yc = yc64.to(data.dtype)
    del y64, yc64
    if backend == "numba":
        return PreparedData(np.ascontiguousarray(data.cpu().numpy()), np.ascontiguousarray(yc.cpu().numpy()),
                            center.cpu().numpy(), ysq.cpu().numpy(), ymax)
    if backend in ("torch", "triton"):
        return PreparedData(data.contiguous(), yc.contiguous(), center, ysq, ymax)
    raise ValueError(f"backend: expected 'numba', 'torch' or 'triton', got {backend!r}")


def _query_terms(x64c, ymax: float, sigma64, d: int, u: float):
    """float64 ``|x_c|^2``, ``1/(2 sigma^2)`` and the logit error estimate ``eps`` of step 5."""
    xsq = (x64c * x64c).sum(1)
    inv2s2 = 0.5 / (sigma64 * sigma64)
    eps = _LAMBDA * math.sqrt(d + 2) * u * (xsq ** 0.5) * ymax * 2.0 * inv2s2
    return xsq, inv2s2, eps


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
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800))))))))))
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
        mx = _row_logits(G[b], ysq[c0:c0 + n], xs, a, buf, n)
        thr = cand_l[b, K - 1]
        n_ev = 0
        for j in range(n if mx > thr else 0):  # insertion into the sorted candidate list
            lj = buf[j]
            if lj > thr:
                out = cand_i[b, K - 1]
                if 0 <= out < c0:             # a candidate of an earlier chunk drops out
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
        for k in range(K):                    # candidates of this chunk: weight 0 in the sums
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
        yk = ywide[:c1 - c0]
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
            _stream_block_wide(xq64[b0:b1], y, center, yc, ysq, xsq[b0:b1], inv2s2[b0:b1], chunk, m[b0:b1], z[b0:b1],
                               h[b0:b1], acc[b0:b1], cand_l[b0:b1], cand_i[b0:b1], want_mean)
        else:
            _stream_block(xq[b0:b1], yc, ysq, xsq[b0:b1], inv2s2[b0:b1], chunk, m[b0:b1], z[b0:b1],
                          h[b0:b1], acc[b0:b1], cand_l[b0:b1], cand_i[b0:b1], want_mean)
    return m, z, h, acc, cand_l, cand_i


@njit(cache=True)
def _certificate(eps, rho, top_rest, d):
    """Step 5: ``eps (sqrt(omega rho) + rho / (2 sqrt(d + 2)))`` with ``omega`` the largest
    possible weight of a non-candidate, ``exp(top_rest + eps)`` (``top_rest`` = the smallest
    candidate logit minus lse), capped at 1."""
    if rho <= 0.0:
        return 0.0
    omega = math.exp(min(0.0, top_rest + eps))
    return eps * (math.sqrt(omega * rho) + rho / (2.0 * math.sqrt(d + 2.0)))


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
            for j in range(d):                          # exact squared distance
                t = np.float64(x[b, j]) - np.float64(y[i, j])
                s += t * t
            lex[k] = -s * a
        if zr <= 0.0:                                   # every point is a candidate
            zr = 0.0
            hr = 0.0
            ar[:] = 0.0
            m_ex = lex.max()
        else:                                           # the rest's log-mass is mb + log(zr)
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
            p = c                                       # insertion sort on (distance, index)
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
        if cand_i[b, K - 1] < 0:                        # every training point is a candidate
            ok[b] = True
        else:
            worst_out = -cand_l[b, K - 1] / inv2s2[b]   # smallest approximate d2 not kept
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
        order = np.argsort(dd, kind="mergesort")       # stable: ties by index
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
        import contextlib
        return contextlib.nullcontext()


def _qblock(B: int) -> int:
    """Queries per parallel block: enough blocks for every thread, blocks of <= 128 rows. Each
    block packs every chunk of the training set once for its GEMMs, so larger blocks pack less;
    measured on 2 cores (N, d, B = 50000, 3072, 256; chunk 2048): 1.59 / 1.23 / 0.99 s for
    blocks of 32 / 64 / 128 rows, and 128 is as fast as 64 at d = 64."""
    import numba
    nt = numba.get_num_threads()
    return int(max(1, min(128, -(-B // nt))))


def _check_array(a, name, shape, dtype=None):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.ndim != len(shape) or any(s is not None and a.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{name}: expected shape {tuple('*' if s is None else s for s in shape)}, "
                         f"got {a.shape}")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name}: expected float32 or float64, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")


def _check_chunk(chunk_size):
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size: must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _as_sigma_np(sigma, B):
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(B, float(s))
    if s.shape != (B,):
        raise ValueError(f"sigma: expected a float or shape ({B},), got {s.shape}")
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("sigma: must be finite and > 0")
    return np.ascontiguousarray(s)


def empirical_posterior_numba(x, prep: PreparedData, sigma, *, chunk_size: int = DEFAULT_CHUNK,
                              n_candidates: int = N_CANDIDATES, rtol: float = DEFAULT_RTOL,
                              kernel=None, info: dict | None = None):
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
    chunk = _check_chunk(chunk_size)
    K = max(1, min(int(n_candidates), prep.n))
    kernel = _stream_kernel if kernel is None else kernel
    x64c = x.astype(np.float64) - prep.center
    xq = np.ascontiguousarray(x64c.astype(y.dtype))
    xsq, inv2s2, eps = _query_terms(x64c, prep.ymax, s, prep.d, _unit_roundoff(y.dtype))

    def run(rows, xq_, wide, eps_):
        xr = np.ascontiguousarray(xq_[rows])
        with _single_threaded_blas():
            m, z, h, acc, cl, ci = kernel(xr, np.ascontiguousarray(x64c[rows]), y, prep.center, prep.yc, prep.ysq,
                                          xsq[rows],
                                          inv2s2[rows], chunk, _qblock(len(rows)), K, True, wide)
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


def nearest_neighbors_numba(x, prep: PreparedData, k: int = 1, *, chunk_size: int = DEFAULT_CHUNK,
                            kernel=None, info: dict | None = None):
    """Exact ``k`` nearest neighbours (numba, CPU): ``(dist (B, k) float64 ascending, idx (B, k))``.

    One streamed GEMM pass keeps ``k + 16`` candidates per query; they are recomputed from exact
    differences and certified with a rigorous rounding bound (module docstring, step 6). Queries
    that do not certify are recomputed by brute force from exact differences."""
    y = prep.y
    _check_array(x, "x", (None, prep.d), y.dtype)
    k = _check_k(k, prep.n)
    chunk = _check_chunk(chunk_size)
    kernel = _stream_kernel if kernel is None else kernel
    B = x.shape[0]
    K = min(prep.n, k + _KNN_EXTRA)
    x64c = x.astype(np.float64) - prep.center
    xq = np.ascontiguousarray(x64c.astype(y.dtype))
    xsq = (x64c * x64c).sum(1)
    inv2s2 = np.ones(B)
    with _single_threaded_blas():
        _, _, _, _, cl, ci = kernel(xq, x64c, y, prep.center, prep.yc, prep.ysq, xsq, inv2s2, chunk, _qblock(B), K,
                                    False, False)
    bound = _knn_bound(xsq, prep.ymax, prep.d, _unit_roundoff(y.dtype))
    dist, idx, ok = _knn_refine_kernel(x, y, cl, ci, inv2s2, bound, k)
    bad = np.nonzero(~ok)[0]
    if bad.size:
        db, ib = _knn_bruteforce_kernel(np.ascontiguousarray(x[bad]), y, k)
        dist[bad], idx[bad] = db, ib
    if info is not None:
        info["n_fallback"] = int(bad.size)
    return np.sqrt(dist), idx


def _knn_bound(xsq, ymax, d, u):
    """Rigorous bound on |d2_gemm - d2|: 2 gamma_{d+4} |x_c| |y_c| plus the float64 assembly."""
    xn = np.sqrt(xsq) if isinstance(xsq, np.ndarray) else xsq.sqrt()
    return 2.0 * _gamma(d + 4, u) * xn * ymax + 8 * _unit_roundoff(np.float64) * (xsq + ymax ** 2)


def _check_k(k, n):
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n:
        raise ValueError(f"k: must be an integer in [1, {n}], got {k!r}")
    return int(k)


# =============================================================================================
# torch backend (CPU / CUDA)
# =============================================================================================

def _torch_stream(xq, xq64, prep, xsq, inv2s2, chunk, K, want_mean, wide):
    """The same stream as :func:`_stream_kernel`, in torch ops: candidates are kept out of the
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
        yk = prep.yc[c0:c0 + chunk]
        n = yk.shape[0]
        if wide:                          # exact float64 centring (the stored copy is rounded)
            yk = prep.y[c0:c0 + chunk].to(f64) - prep.center
            G = xq64 @ yk.T
        else:
            G = xq @ yk.T
        logit = (G.to(f64).mul_(2.0).sub_(xsq[:, None]).sub_(prep.ysq[None, c0:c0 + n])).mul_(inv2s2[:, None])
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
        new_here = cand_i >= c0                                  # candidates of this chunk: weight 0
        lm[rows[:, None].expand(-1, kk)[new_here], (cand_i - c0)[new_here]] = -torch.inf
        W = torch.exp(lm).to(yk.dtype)
        Wf = W.to(f64)
        h = torch.where(z > 0, sc * (h + (m - m_new) * z), torch.zeros_like(h)) \
            + torch.nan_to_num(Wf * lm, nan=0.0).sum(1)
        z = z * sc + Wf.sum(1)
        acc = acc * sc[:, None] + (W @ yk).to(f64)
        if old_i.shape[1]:                                       # earlier candidates that dropped out
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
    """Exact candidates added to the (candidate-free) running sums; see :func:`_refine_kernel`."""
    f64 = torch.float64
    yex = prep.y[cand_i]                                          # (B, K, d) original values
    diff = x.to(f64)[:, None, :] - yex.to(f64)                    # exact differences
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
    return at / zt[:, None], lse, torch.log(zt) - ht / zt, certificate_torch(eps, zr / zt, cand_l[:, -1] - lse,
                                                                           prep.d)


def certificate_torch(eps, rho, top_rest, d: int):
    """:func:`_certificate` on tensors (the torch and triton backends)."""
    omega = torch.exp(torch.clamp(top_rest + eps, max=0.0))
    c = eps * (torch.sqrt(omega * rho) + rho / (2.0 * math.sqrt(d + 2.0)))
    return torch.where(rho > 0, c, torch.zeros_like(c))


def empirical_posterior_torch(x: torch.Tensor, prep: PreparedData, sigma, *,
                              chunk_size: int = DEFAULT_CHUNK, n_candidates: int = N_CANDIDATES,
                              rtol: float = DEFAULT_RTOL, allow_tf32: bool = False,
                              info: dict | None = None, validated: bool = False):
    """Torch version of :func:`empirical_posterior_numba` (same algorithm, CPU or CUDA).

    ``x`` (B, d) tensor in the data's dtype and on its device; ``prep`` from
    :func:`prepare_data` with ``backend="torch"``. ``allow_tf32=True`` (CUDA, float32 only) runs
    the logit GEMM in TF32: several times faster on tensor cores, but with a ~1e-3 relative
    rounding, so the certificate is skipped and the result is *approximate* (opt-in only).
    Returns float64 tensors ``(mean (B, d), lse (B,), neff (B,))``."""
    y = prep.y
    s = _check_torch_inputs(x, prep, sigma, validated=validated)
    B = x.shape[0]
    f64 = torch.float64
    chunk = _check_chunk(chunk_size)
    K = max(1, min(int(n_candidates), prep.n))
    x64c = x.to(f64) - prep.center
    xq = x64c.to(y.dtype)
    u = _unit_roundoff(np.float32 if y.dtype == torch.float32 else np.float64)
    xsq, inv2s2, eps = _query_terms(x64c, prep.ymax, s, prep.d, u)

    def run(rows, wide, eps_):
        m, z, h, acc, cl, ci = _torch_stream(xq[rows], x64c[rows], prep, xsq[rows], inv2s2[rows], chunk, K,
                                             True, wide)
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


def _check_torch_inputs(x, prep: PreparedData, sigma, *, validated: bool = False) -> torch.Tensor:
    """Validate queries for the torch / triton backends; returns sigma as a (B,) float64 tensor.

    ``validated=True``: the caller has checked that sigma is finite and positive (the value
    check costs a device sync on a GPU), so only shapes, dtypes and devices are checked here."""
    y = prep.y
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != prep.d:
        raise ValueError(f"x: expected a (B, {prep.d}) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x: expected dtype {y.dtype} on {y.device}, got {x.dtype} on {x.device}")
    if x.shape[0] < 1:
        raise ValueError("x: needs at least one query")
    B = x.shape[0]
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    s = s.expand(B) if s.ndim == 0 else s
    if s.shape != (B,) or not (validated or bool(((s > 0) & torch.isfinite(s)).all())):
        raise ValueError(f"sigma: expected finite positive values, a float or shape ({B},)")
    return s


class _tf32:
    """Context: TF32 matmuls on CUDA only when ``on``; otherwise force them off."""

    def __init__(self, device, on: bool):
        self.cuda = torch.device(device).type == "cuda"
        self.on = on

    def __enter__(self):
        if self.cuda:
            self.prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = self.on
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.prev


def nearest_neighbors_torch(x: torch.Tensor, data, k: int = 1, *, chunk_size: int | None = None,
                            info: dict | None = None, use_triton: bool | None = None):
    """Exact ``k`` nearest neighbours in torch (CPU/CUDA); same certified scheme as
    :func:`nearest_neighbors_numba`. ``data`` is a (N, ...) tensor or a :class:`PreparedData`.
    The candidate pass runs in the fused Triton kernel when ``use_triton`` (default: on CUDA
    tensors when Triton is installed), else in torch ops; the exact refinement is shared.
    ``chunk_size=None``: the GPU default of the triton pass, 2048 for the torch pass.

    Returns ``(dist (B, k) float64 ascending, idx (B, k) int64)``."""
    prep = data if isinstance(data, PreparedData) else prepare_data(data.reshape(data.shape[0], -1),
                                                                     backend="torch")
    k = _check_k(k, prep.n)
    y = prep.y
    x = x.reshape(x.shape[0], -1).to(dtype=y.dtype, device=y.device)
    B = x.shape[0]
    f64 = torch.float64
    K = min(prep.n, k + _KNN_EXTRA)
    x64c = x.to(f64) - prep.center
    xsq = (x64c * x64c).sum(1)
    if use_triton is None:
        use_triton = x.device.type == "cuda" and have_triton()
    with _tf32(x.device, False):
        if use_triton:
            from ._triton import auto_chunk, knn_candidates
            chunk = auto_chunk(B, prep.n) if chunk_size is None else _check_chunk(chunk_size)
            ci, top = knn_candidates(x64c.to(y.dtype).contiguous(), prep, chunk, K)
            rest_d2 = xsq - top                                    # +inf where every point is a candidate
        else:
            chunk = DEFAULT_CHUNK if chunk_size is None else _check_chunk(chunk_size)
            inv2s2 = torch.ones(B, dtype=f64, device=x.device)
            _, _, _, _, cl, ci = _torch_stream(x64c.to(y.dtype), x64c, prep, xsq, inv2s2, chunk, K, False, False)
            rest_d2 = -cl[:, K - 1] if K < prep.n else torch.full_like(xsq, math.inf)
    diff = x.to(f64)[:, None, :] - y[ci.clamp_min(0)].to(f64)
    d2 = torch.where(ci >= 0, (diff * diff).sum(2), torch.full_like(xsq[:, None], math.inf))   # exact
    # sort by (distance, index): stable sort on index order first
    oi = torch.argsort(torch.where(ci >= 0, ci, torch.full_like(ci, prep.n)), dim=1)
    d2s, cis = torch.gather(d2, 1, oi), torch.gather(ci, 1, oi)
    od = torch.argsort(d2s, dim=1, stable=True)
    dist, idx = torch.gather(d2s, 1, od)[:, :k], torch.gather(cis, 1, od)[:, :k]
    bound = _knn_bound(xsq, prep.ymax, prep.d, _unit_roundoff(np.float32 if y.dtype == torch.float32
                                                              else np.float64))
    ok = dist[:, k - 1] < rest_d2 - bound
    bad = torch.nonzero(~ok).flatten()
    step = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    for b in bad.tolist():                                         # brute force, exact differences
        dd = torch.cat([((x[b].to(f64) - y[c0:c0 + step].to(f64)) ** 2).sum(1)
                        for c0 in range(0, prep.n, step)])
        o = torch.argsort(dd, stable=True)[:k]
        dist[b], idx[b] = dd[o], o
    if info is not None:
        info["n_fallback"] = int(bad.numel())
    return dist.sqrt(), idx


# =============================================================================================
# slow references (float64, exact differences, full (B, N) matrices)
# =============================================================================================

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


# =============================================================================================
# dispatch
# =============================================================================================

def have_triton() -> bool:
    """Whether the fused Triton kernels (:mod:`gaussdiff._triton`) can be imported."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def triton_interpreted() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``; used by the tests)."""
    import os
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def empirical_posterior(x: torch.Tensor, prep: PreparedData, sigma: torch.Tensor, *, backend: str,
                        validated: bool = False, **kwargs):
    """The one dispatch of the streamed posterior: :func:`empirical_posterior_numba`, the torch
    backend or the fused Triton kernels (:func:`gaussdiff._triton.empirical_posterior_triton`).

    ``x`` (B, d) and ``sigma`` (B,) are torch tensors for every backend (numpy is made here for
    numba); returns float64 torch ``(mean (B, d), lse (B,), neff (B,))``. ``validated`` skips the
    torch/Triton input checks (the caller has made them); other keywords go to the backend."""
    if backend == "numba":
        out = empirical_posterior_numba(np.ascontiguousarray(x.detach().cpu().numpy()), prep,
                                        sigma.detach().to("cpu", torch.float64).numpy(), **kwargs)
        return tuple(torch.from_numpy(o) for o in out)
    if backend == "triton":
        from ._triton import empirical_posterior_triton
        return empirical_posterior_triton(x, prep, sigma, validated=validated, **kwargs)
    if backend == "torch":
        return empirical_posterior_torch(x, prep, sigma, validated=validated, **kwargs)
    raise ValueError(f"backend: expected 'numba', 'torch' or 'triton', got {backend!r}")


def nearest_neighbors(x: torch.Tensor, data: torch.Tensor, k: int = 1, **kwargs):
    """Exact ``k`` nearest neighbours of queries ``x`` (B, ...) in ``data`` (N, ...).

    Returns ``(dist (B, k) float64 ascending, idx (B, k) int64)`` as torch tensors on ``x``'s
    device; identical to a float64 brute force from exact differences (ties by lower index).
    CPU tensors use the numba kernels, CUDA tensors the torch ones."""
    x = torch.as_tensor(x)
    data = torch.as_tensor(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data: expected shape (N, ...) with N >= 1, got {tuple(data.shape)}")
    if x.ndim < 1 or x.shape[1:] != data.shape[1:]:
        raise ValueError(f"x: expected shape (B, {', '.join(map(str, data.shape[1:]))}), got {tuple(x.shape)}")
    yf = data.reshape(data.shape[0], -1)
    if not yf.is_floating_point():
        yf = yf.to(torch.float64)
    dtype = torch.promote_types(yf.dtype, x.dtype if x.is_floating_point() else yf.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float64
    xf = x.reshape(x.shape[0], -1).to(dtype=dtype, device=yf.device)
    yf = yf.to(dtype)
    if yf.device.type != "cpu":
        dist, idx = nearest_neighbors_torch(xf, yf, k, **kwargs)
        return dist.to(x.device), idx.to(x.device)
    prep = prepare_data(yf, backend="numba")
    dist, idx = nearest_neighbors_numba(np.ascontiguousarray(xf.numpy()), prep, k, **kwargs)
    return torch.from_numpy(dist).to(x.device), torch.from_numpy(idx).to(x.device)
