"""The core of the empirical-denoiser kernels: what every backend shares, and nothing else.

Prepared data (:class:`PreparedData`, :func:`prepare_data`), the constants of the algorithm,
the unit round-off and the rounding-error bounds (the certificate of step 5 and the rigorous
nearest-neighbour bound of step 6, in the package docstring of :mod:`gaussdiff.kernels`), the
input checks, the TF32 switch, whether Triton is there, and the exact refinement of
nearest-neighbour candidates that the torch and Triton backends share.

Layers (each imports only the ones below it)::

    gaussdiff.kernels (__init__: the dispatch)
      -> _numba, _torch, _triton (one backend each)
        -> _core (this module: imports no backend)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CHUNK = 2048
DEFAULT_RTOL = 1e-4
N_CANDIDATES = 8  # leading candidates per query recomputed from exact differences
_KNN_EXTRA = 16  # extra candidates kept beyond k for the nearest-neighbour certificate
_LAMBDA = 4.0  # probabilistic rounding-error factor (Higham & Mary 2019)


def _unit_roundoff(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def _gamma(n: int, u: float) -> float:
    """Worst-case bound ``n u / (1 - n u)`` on the relative error of an ``n``-term dot product."""
    return n * u / (1.0 - n * u)


def have_triton() -> bool:
    """Whether the fused Triton kernels (:mod:`gaussdiff.kernels._triton`) can be imported."""
    try:
        import triton  # noqa: F401  (only asks whether the optional package is there)
    except Exception:
        return False
    return True


def triton_interpreted() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``; used by the tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# =============================================================================================
# prepared data (shared by every backend)
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
    elif not isinstance(data, torch.Tensor):
        raise ValueError(f"data: expected a (N, d) tensor or numpy array, got {type(data).__name__}")
    _check_values(data, "data")
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ValueError(f"data: expected shape (N, d) with N, d >= 1, got {tuple(data.shape)}")
    if data.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"data: expected float32 or float64, got {data.dtype}")
    _check_finite(data, "data")
    y64 = data.to(torch.float64)
    center = y64.mean(0)
    yc64 = y64 - center
    ysq = (yc64 * yc64).sum(1)
    ymax = float(ysq.max().sqrt())
    yc = yc64.to(data.dtype)
    del y64, yc64
    if backend == "numba":
        return PreparedData(
            np.ascontiguousarray(data.cpu().numpy()),
            np.ascontiguousarray(yc.cpu().numpy()),
            center.cpu().numpy(),
            ysq.cpu().numpy(),
            ymax,
        )
    if backend in ("torch", "triton"):
        return PreparedData(data.contiguous(), yc.contiguous(), center, ysq, ymax)
    raise ValueError(f"backend: expected 'numba', 'torch' or 'triton', got {backend!r}")


# =============================================================================================
# rounding-error bounds (steps 5 and 6)
# =============================================================================================


def _query_terms(x64c, ymax: float, sigma64, d: int, u: float):
    """float64 ``|x_c|^2``, ``1/(2 sigma^2)`` and the logit error estimate ``eps`` of step 5."""
    xsq = (x64c * x64c).sum(1)
    inv2s2 = 0.5 / (sigma64 * sigma64)
    eps = _LAMBDA * math.sqrt(d + 2) * u * (xsq**0.5) * ymax * 2.0 * inv2s2
    return xsq, inv2s2, eps


def _certificate(eps, rho, top_rest, d):
    """Step 5 for one query: ``eps (sqrt(omega rho) + rho / (2 sqrt(d + 2)))`` with ``omega`` the
    largest possible weight of a non-candidate, ``exp(top_rest + eps)`` (``top_rest`` = the
    smallest candidate logit minus lse), capped at 1. Plain Python on floats: the numba backend
    compiles it, :func:`certificate_torch` is the same formula on tensors, and the Triton
    refinement kernel writes it in-kernel (``tests/test_triton.py`` compares them)."""
    if rho <= 0.0:
        return 0.0
    omega = math.exp(min(0.0, top_rest + eps))
    return eps * (math.sqrt(omega * rho) + rho / (2.0 * math.sqrt(d + 2.0)))


def certificate_torch(eps, rho, top_rest, d: int):
    """:func:`_certificate` on tensors (the torch backend)."""
    omega = torch.exp(torch.clamp(top_rest + eps, max=0.0))
    c = eps * (torch.sqrt(omega * rho) + rho / (2.0 * math.sqrt(d + 2.0)))
    return torch.where(rho > 0, c, torch.zeros_like(c))


def _knn_bound(xsq, ymax, d, u):
    """Rigorous bound on |d2_gemm - d2|: 2 gamma_{d+4} |x_c| |y_c| plus the float64 assembly."""
    xn = np.sqrt(xsq) if isinstance(xsq, np.ndarray) else xsq.sqrt()
    return 2.0 * _gamma(d + 4, u) * xn * ymax + 8 * _unit_roundoff(np.float64) * (xsq + ymax**2)


# =============================================================================================
# input checks
# =============================================================================================


# -- input checks (this layer imports no other gaussdiff module, so the few it needs are here,
# with the messages of gaussdiff._checks: the argument's name first) ------------------------
def _check_values(t: torch.Tensor, name: str) -> torch.Tensor:
    """A tensor with values: not on the "meta" device, not complex."""
    if t.is_meta:
        raise ValueError(f"{name}: is on the meta device, which holds no values")
    if t.is_complex():
        raise ValueError(f"{name}: complex values are not supported")
    return t


def _check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def _check_sigma_arg(sigma, name: str = "sigma"):
    """A noise level as a kernel takes it: a real tensor with values, or a number (a bool or a
    string is refused); returned as given, or as a 0-d float64 tensor for a number."""
    if isinstance(sigma, torch.Tensor):
        if sigma.dtype == torch.bool:
            raise ValueError(f"{name}: expected real noise levels, got a bool tensor")
        return _check_values(sigma, name)
    if isinstance(sigma, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name}: expected a float or a (B,) tensor, got {sigma!r}")
    try:
        return torch.tensor(float(sigma), dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a float or a (B,) tensor, got {sigma!r}") from exc


def _check_knobs(kwargs: dict) -> None:
    """The streamed posterior's knobs, when given: ``n_candidates`` a positive integer, ``rtol``
    a finite number >= 0 (``chunk_size`` is checked by every backend)."""
    if "n_candidates" in kwargs:
        v = kwargs["n_candidates"]
        try:
            ok = not isinstance(v, (bool, np.bool_)) and int(v) == v and int(v) >= 1
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"n_candidates: expected a positive integer, got {v!r}")
    if "rtol" in kwargs:
        v = kwargs["rtol"]
        try:
            ok = not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v)) and float(v) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"rtol: must be >= 0 and finite, got {v!r}")


def _check_k(k, n):
    try:
        ok = not isinstance(k, (bool, np.bool_)) and int(k) == k and 1 <= int(k) <= n
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"k: must be an integer in [1, {n}], got {k!r}")
    return int(k)


def _check_torch_inputs(x, prep: PreparedData, sigma, *, validated: bool = False) -> torch.Tensor:
    """Validate queries for the torch / triton backends; returns sigma as a (B,) float64 tensor.

    ``validated=True``: the caller has checked that sigma is finite and positive (the value
    check costs a device sync on a GPU), so only shapes, dtypes and devices are checked here.
    (The backends then check the range, :func:`gaussdiff._checks.check_sigma_float64`.)"""
    y = prep.y
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != prep.d:
        raise ValueError(
            f"x: expected a (B, {prep.d}) tensor, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x: expected dtype {y.dtype} on {y.device}, got {x.dtype} on {x.device}")
    if x.shape[0] < 1:
        raise ValueError("x: needs at least one query")
    if not validated:
        _check_finite(x, "x")
    B = x.shape[0]
    s = torch.as_tensor(_check_sigma_arg(sigma), dtype=torch.float64, device=x.device)
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


# =============================================================================================
# exact nearest neighbours on tensors: what the torch and Triton candidate passes share
# =============================================================================================


def _knn_queries_torch(x: torch.Tensor, data, k: int):
    """The start of a tensor k-NN: ``(prep, k, x, x64c, xsq, K)`` with ``prep`` prepared from
    ``data`` (a (N, ...) tensor or a :class:`PreparedData`), ``k`` checked, ``x`` flat in the data's
    dtype and on its device, ``x64c`` the centred float64 queries, ``xsq`` = ``|x_c|^2`` and ``K``
    the candidates to keep per query."""
    prep = data if isinstance(data, PreparedData) else prepare_data(data.reshape(data.shape[0], -1), backend="torch")
    k = _check_k(k, prep.n)
    y = prep.y
    x = x.reshape(x.shape[0], -1).to(dtype=y.dtype, device=y.device)
    x64c = x.to(torch.float64) - prep.center
    xsq = (x64c * x64c).sum(1)
    return prep, k, x, x64c, xsq, min(prep.n, k + _KNN_EXTRA)


def _knn_refine_torch(x, prep: PreparedData, k: int, ci, rest_d2, xsq, chunk_size, info):
    """Step 6 after a candidate pass: exact squared distances of the candidates ``ci`` (B, K)
    (-1 for empty slots) from exact differences, the ``k`` best by (distance, index), and the
    rigorous certificate against ``rest_d2`` (B,), the smallest approximate squared distance of
    a point that is not a candidate (+inf when every point is one); a query that does not
    certify is answered by brute force. Returns ``(dist (B, k) ascending, idx (B, k))``."""
    f64 = torch.float64
    y = prep.y
    diff = x.to(f64)[:, None, :] - y[ci.clamp_min(0)].to(f64)
    d2 = torch.where(ci >= 0, (diff * diff).sum(2), torch.full_like(xsq[:, None], math.inf))  # exact
    # sort by (distance, index): stable sort on index order first
    oi = torch.argsort(torch.where(ci >= 0, ci, torch.full_like(ci, prep.n)), dim=1)
    d2s, cis = torch.gather(d2, 1, oi), torch.gather(ci, 1, oi)
    od = torch.argsort(d2s, dim=1, stable=True)
    dist, idx = torch.gather(d2s, 1, od)[:, :k], torch.gather(cis, 1, od)[:, :k]
    bound = _knn_bound(xsq, prep.ymax, prep.d, _unit_roundoff(np.float32 if y.dtype == torch.float32 else np.float64))
    ok = dist[:, k - 1] < rest_d2 - bound
    bad = torch.nonzero(~ok).flatten()
    step = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    for b in bad.tolist():  # brute force, exact differences
        dd = torch.cat([((x[b].to(f64) - y[c0 : c0 + step].to(f64)) ** 2).sum(1) for c0 in range(0, prep.n, step)])
        o = torch.argsort(dd, stable=True)[:k]
        dist[b], idx[b] = dd[o], o
    if info is not None:
        info["n_fallback"] = int(bad.numel())
    return dist.sqrt(), idx
