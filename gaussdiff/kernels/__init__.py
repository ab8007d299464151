r"""Streaming kernels for the exact empirical denoiser and exact nearest neighbours.

For queries ``x`` (B, d), training points ``y_i`` (N, d) and per-query noise levels ``sigma``
(B,), the empirical posterior is (theory (E1)-(E2))

.. math:: l_{bi} = -\frac{\|x_b - y_i\|^2}{2\sigma_b^2}, \quad
          w_{bi} = \mathrm{softmax}_i(l_{bi}), \quad
          D(x_b) = \sum_i w_{bi}\, y_i, \quad
          \mathrm{lse}_b = \log\sum_i e^{l_{bi}}, \quad
          n_{\mathrm{eff},b} = \exp\big(-\textstyle\sum_i w_{bi}\log w_{bi}\big).

How it is computed (every backend, the same algorithm)
-----------------------------------------------------
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

Backends, one module each, and the dispatch
-------------------------------------------
``numba`` (:func:`empirical_posterior_numba`, :func:`nearest_neighbors_numba`; CPU): compiled
kernels call BLAS for the two GEMMs and run the streaming log-sum-exp with ``prange`` over
queries. ``triton`` (``gaussdiff.kernels._triton``; CUDA): the same algorithm with every step
between the two cuBLAS GEMMs fused into a few kernels, all candidates recomputed exactly.
``torch`` (:func:`empirical_posterior_torch`, :func:`nearest_neighbors_torch`; CPU or CUDA):
plain torch ops. :func:`auto_backend` picks numba for CPU data and Triton for CUDA data (torch
where Triton is not installed); :func:`stream_posterior` and :func:`nearest_neighbors` are
the one dispatch to them (:class:`gaussdiff.EmpiricalDenoiser` calls nothing else). TF32 is
disabled unless asked for. The float64 brute force the tests check every backend against lives
beside them, in ``tests/_naive_kernels.py``.

Layout (each layer imports only the ones below it; ``tests/test_imports.py`` checks it)::

    gaussdiff.kernels      this module: the dispatch and the public names
      _numba, _torch, _triton   one backend each (_triton imported on first use: optional)
        _core              prepared data, constants, round-off bounds and the certificate,
                           input checks, the TF32 switch; imports no backend

.. warning:: numba ``parallel=True`` kernels are not fork-safe: once they have run, a child
   created by ``fork`` (``multiprocessing``'s default on Linux, joblib's ``"multiprocessing"``
   backend) can die. Use ``spawn``/``forkserver`` or loky pools.
"""

from __future__ import annotations

import numpy as np
import torch

from ._core import (
    DEFAULT_CHUNK,
    DEFAULT_RTOL,
    N_CANDIDATES,
    PreparedData,
    _check_finite,
    _check_k,
    _check_knobs,
    _check_sigma_arg,
    _check_values,
    have_triton,
    prepare_data,
    triton_interpreted,
)
from ._numba import empirical_posterior_numba, nearest_neighbors_numba
from ._torch import empirical_posterior_torch, nearest_neighbors_torch

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_RTOL",
    "N_CANDIDATES",
    "BACKENDS",
    "PreparedData",
    "prepare_data",
    "have_triton",
    "triton_interpreted",
    "auto_backend",
    "stream_posterior",
    "nearest_neighbors",
    "empirical_posterior_numba",
    "nearest_neighbors_numba",
    "empirical_posterior_torch",
    "nearest_neighbors_torch",
]

BACKENDS = ("numba", "torch", "triton")


def auto_backend(device) -> str:
    """The fastest exact backend of a device (``validation/benchmarks``): ``"numba"`` on the CPU,
    ``"triton"`` on CUDA where Triton is installed, ``"torch"`` otherwise."""
    device = torch.device(device)
    if device.type == "cpu":
        return "numba"
    return "triton" if device.type == "cuda" and have_triton() else "torch"


def _triton_backend():
    """The Triton backend module, imported on first use rather than with this package: Triton is
    an optional dependency, and its CPU interpreter (``TRITON_INTERPRET=1``) is chosen when it is
    first imported."""
    from . import _triton

    return _triton


def _unknown(backend):
    return ValueError(f"backend: expected 'numba', 'torch' or 'triton', got {backend!r}")


def _dispatch_checks(x, prep, sigma, kwargs):
    """What every backend needs before it converts anything: ``prep`` a :class:`PreparedData`,
    ``x`` a real floating tensor with values (not on "meta"), ``sigma`` a float or a real tensor,
    and the knobs ``n_candidates`` (a positive integer) and ``rtol`` (a number >= 0) when given.
    Shapes, the dtype match and the values are the backends' checks."""
    if not isinstance(prep, PreparedData):
        raise ValueError(
            f"prep: expected a PreparedData (gaussdiff.kernels.prepare_data(data)), got {type(prep).__name__}"
        )
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError("x: is on the meta device, which holds no values")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x: expected the data's dtype ({prep.y.dtype}), got {x.dtype}")
    _check_knobs(kwargs)
    return x, _check_sigma_arg(sigma)


def stream_posterior(
    x: torch.Tensor, prep: PreparedData, sigma: torch.Tensor, *, backend: str, validated: bool = False, **kwargs
):
    """The one dispatch of the streamed posterior (named apart from
    :func:`gaussdiff.empirical_posterior`, the exact posterior of an inverse problem):
    :func:`empirical_posterior_numba`, the torch
    backend or the fused Triton kernels (``gaussdiff.kernels._triton.empirical_posterior_triton``).

    ``x`` (B, d) and ``sigma`` (B,) are torch tensors for every backend (numpy is made here for
    numba); returns float64 torch ``(mean (B, d), lse (B,), neff (B,))``. ``validated`` skips the
    torch/Triton input checks (the caller has made them); other keywords go to the backend."""
    x, sigma = _dispatch_checks(x, prep, sigma, kwargs)
    if backend == "numba":
        out = empirical_posterior_numba(
            np.ascontiguousarray(x.detach().cpu().numpy()),
            prep,
            sigma.detach().to("cpu", torch.float64).numpy(),
            **kwargs,
        )
        return tuple(torch.from_numpy(o) for o in out)
    if backend == "triton":
        return _triton_backend().empirical_posterior_triton(x, prep, sigma, validated=validated, **kwargs)
    if backend == "torch":
        return empirical_posterior_torch(x, prep, sigma, validated=validated, **kwargs)
    raise _unknown(backend)


def _query_tensor(value, name: str = "x") -> torch.Tensor:
    """A tensor (arrays and sequences converted) that holds real values: complex values and the
    "meta" device are refused by name rather than cast (complex -> real drops the imaginary part)."""
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    return _check_values(t, name)


def nearest_neighbors(x: torch.Tensor, data, k: int = 1, *, backend: str | None = None, **kwargs):
    """Exact ``k`` nearest neighbours of queries ``x`` (B, ...) in ``data``: the one dispatch of
    step 6.

    ``data`` is (N, ...) training points (tensor or array; ``x`` then has the same event shape,
    and both are promoted to a common float dtype) or a :class:`PreparedData` (``x`` then flat
    (B, d) in its dtype and on its device). ``backend=None``: :func:`auto_backend` of the data's
    device, so CPU data use the numba kernels and CUDA data the Triton candidate pass (the torch
    one where Triton is missing). Other keywords go to the backend (``chunk_size``, ``info``).

    Returns ``(dist (B, k) float64 ascending, idx (B, k) int64)`` as torch tensors on ``x``'s
    device; identical to a float64 brute force from exact differences (ties by lower index)."""
    x = _query_tensor(x)
    if isinstance(data, PreparedData):
        if x.ndim < 1:
            raise ValueError(f"x: expected shape (B, {data.d}), got {tuple(x.shape)}")
        prep, xf = data, x.reshape(x.shape[0], data.d)
        if backend is None:
            backend = "numba" if isinstance(prep.y, np.ndarray) else auto_backend(prep.y.device)
    else:
        data = _query_tensor(data, "data")
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data: expected shape (N, ...) with N >= 1, got {tuple(data.shape)}")
        _check_finite(data, "data")
        if x.ndim < 1 or x.shape[1:] != data.shape[1:]:
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, data.shape[1:]))}), got {tuple(x.shape)}")
        yf = data.reshape(data.shape[0], -1)
        if not yf.is_floating_point():
            yf = yf.to(torch.float64)
        dtype = torch.promote_types(yf.dtype, x.dtype if x.is_floating_point() else yf.dtype)
        if dtype not in (torch.float32, torch.float64):
            dtype = torch.float64
        xf = x.reshape(x.shape[0], yf.shape[1]).to(dtype=dtype, device=yf.device)
        yf = yf.to(dtype)
        backend = auto_backend(yf.device) if backend is None else backend
        if backend not in BACKENDS:
            raise _unknown(backend)
        prep = prepare_data(yf, backend=backend)
    if xf.shape[0] == 0:  # an empty batch has an empty answer (the backends want a query)
        k = _check_k(k, prep.n)
        empty = torch.zeros(0, k, device=x.device)
        return empty.to(torch.float64), empty.to(torch.int64)
    if backend == "numba":
        if xf.device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on CPU data only, x is on {xf.device}")
        dist, idx = nearest_neighbors_numba(np.ascontiguousarray(xf.numpy()), prep, k, **kwargs)
        dist, idx = torch.from_numpy(dist), torch.from_numpy(idx)
    elif backend == "triton":
        dist, idx = _triton_backend().nearest_neighbors_triton(xf, prep, k, **kwargs)
    elif backend == "torch":
        dist, idx = nearest_neighbors_torch(xf, prep, k, **kwargs)
    else:
        raise _unknown(backend)
    return dist.to(x.device), idx.to(x.device)
