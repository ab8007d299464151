"""The exact empirical denoiser: the optimal denoiser of the training set itself."""

from __future__ import annotations

import math
import numbers

import torch

from . import kernels
from ._checks import check_data, check_int
from .denoisers import Denoiser

_LOG_2PI = math.log(2 * math.pi)

__all__ = ["EmpiricalDenoiser"]

_BACKENDS = ("auto", *kernels.BACKENDS)


class EmpiricalDenoiser(Denoiser):
    r"""The optimal denoiser of the empirical distribution of ``data`` (the memorization solution).

    (E2) :math:`D(x, \sigma) = \sum_i \mathrm{softmax}_i(-\|x - x_i\|^2 / 2\sigma^2)\, x_i`

    (E1) :math:`\log p_\sigma(x) = \mathrm{logsumexp}_i(-\|x - x_i\|^2/2\sigma^2) - \log N - \tfrac d2 \log(2\pi\sigma^2)`

    (E3) Jacobian :math:`\partial D / \partial x = \mathrm{Cov}[x_0 \mid x] / \sigma^2`.

    Exact at every sigma, in float32 and float64: the training set is streamed in chunks with a
    per-query online log-sum-exp, the GEMMs run on centred data, the logits are assembled and
    accumulated in float64, the leading candidates of every query are recomputed from exact
    differences and a rounding-error certificate sends the rare uncertified query to float64
    GEMMs (details and the error bound in :mod:`gaussdiff.kernels`). Memory is
    ``O((B + chunk) d)`` beyond the data and one centred copy of it.

    Parameters
    ----------
    data : (N, *event_shape) training points, float32 or float64 (integers become float64).
    backend : ``"numba"`` (CPU), ``"torch"`` (CPU or CUDA), ``"triton"`` (fused GPU kernels, CUDA
        data; on CPU tensors only under Triton's interpreter, ``TRITON_INTERPRET=1``) or
        ``"auto"``: numba for CPU data, triton for CUDA data (torch where Triton is missing): the
        fastest exact backend of each device, see ``validation/benchmarks``.
    chunk_size : training points per streamed chunk; ``None``: 2048 on the CPU, and on a GPU
        (triton) as many as keep one ``(B, chunk)`` tile at 2^25 elements.
    n_candidates : leading candidates per query recomputed from exact differences.
    rtol : certificate threshold of the float64 fallback.

    Notes
    -----
    The numba backend runs ``parallel=True`` kernels, which are not fork-safe: after it has run,
    use ``spawn``/``forkserver`` (or loky) process pools, never ``fork``.
    """

    _sigma_float64 = True  # the kernels form 1/(2 sigma^2) in float64 from the data's dtype

    def __init__(
        self,
        data,
        *,
        backend: str = "auto",
        chunk_size: int | None = None,
        n_candidates: int = kernels.N_CANDIDATES,
        rtol: float = kernels.DEFAULT_RTOL,
    ):
        data = check_data(data, "data")
        if data.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"data: expected float32 or float64 values, got {data.dtype}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = kernels.auto_backend(data.device)
        if backend == "numba" and data.device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on CPU data only, data is on {data.device}")
        if backend == "triton":
            if not kernels.have_triton():
                raise ValueError("backend: 'triton' needs the triton package (it comes with CUDA builds of torch)")
            if data.device.type != "cuda" and not kernels.triton_interpreted():
                raise ValueError(
                    f"backend: 'triton' runs on CUDA data (or under TRITON_INTERPRET=1), data is on {data.device}"
                )
        self._stream_chunk = None if chunk_size is None else check_int(chunk_size, "chunk_size")
        self.chunk_size = kernels.DEFAULT_CHUNK if chunk_size is None else self._stream_chunk
        check_int(n_candidates, "n_candidates")
        if isinstance(rtol, bool) or not (isinstance(rtol, numbers.Real) and math.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"rtol: must be a finite number >= 0, got {rtol!r}")
        self.n_candidates, self.rtol = int(n_candidates), float(rtol)
        self.backend = backend
        self.data = data
        self.event_shape = tuple(data.shape[1:])
        self.dtype, self.device = data.dtype, data.device
        self._prep = kernels.prepare_data(data.reshape(data.shape[0], -1), backend=backend)
        self.last_info: dict = {}

    @property
    def n(self) -> int:
        return self.data.shape[0]

    def to(self, *, dtype=None, device=None) -> "EmpiricalDenoiser":
        data = self.data.to(dtype=dtype or self.dtype, device=device or self.device)
        backend = self.backend if data.device == self.device else "auto"
        return EmpiricalDenoiser(
            data, backend=backend, chunk_size=self._stream_chunk, n_candidates=self.n_candidates, rtol=self.rtol
        )

    # -- the streamed posterior ----------------------------------------------------------------
    @property
    def _kernel_chunk(self):
        """The chunk the kernels get: the Triton backend's own default (``None``) unless one was
        given, ``chunk_size`` for the others."""
        return self._stream_chunk if self.backend == "triton" else self.chunk_size

    def _posterior(self, x, s):
        """float64 ``(mean (B, d), lse (B,), neff (B,))`` for flat queries ``x`` (B, d)."""
        if x.shape[0] == 0:  # an empty batch has an empty answer (the kernels want a query)
            empty = torch.zeros(0, dtype=torch.float64, device=x.device)
            return empty.reshape(0, x.shape[1]), empty, empty
        info: dict = {}
        out = kernels.stream_posterior(
            x.detach(),
            self._prep,
            s.detach(),
            backend=self.backend,
            validated=True,
            chunk_size=self._kernel_chunk,
            n_candidates=self.n_candidates,
            rtol=self.rtol,
            info=info,
        )
        self.last_info = info
        return out

    def _mean_lse(self, x, s):
        """``(mean, lse)`` in float64, differentiable in ``x`` (not in sigma) when autograd asks."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _MeanLse.apply(x, s, self)
        mean, lse, _ = self._posterior(x, s)
        return mean.to(x.device), lse.to(x.device)

    def _cov_times(self, x, s, mean, lse, g):
        """``Cov[x0 | x] g`` (B, d) for every query, streamed from exact differences (float64)."""
        s64 = s.detach().to(torch.float64)
        xf = x.detach()
        out = torch.zeros_like(mean)
        for w, diff in self._centred_chunks(xf, s64, mean, lse):
            out += torch.einsum("bc,bcd->bd", w * torch.einsum("bcd,bd->bc", diff, g), diff)
        return out

    def _denoise(self, x, s):
        return self._mean_lse(x, s)[0].to(self.dtype)

    def _log_density(self, x, s):
        _, lse = self._mean_lse(x, s)
        s64 = s.to(torch.float64)
        d = x.shape[1]
        return (lse - math.log(self.n) - 0.5 * d * (_LOG_2PI + 2 * torch.log(s64))).to(self.dtype)

    def effective_count(self, x: torch.Tensor, sigma) -> torch.Tensor:
        r"""Effective number of contributing training points, ``exp(H(w))`` with
        ``H(w) = -sum_i w_i log w_i`` the entropy of the posterior weights: ``(B,)``, in
        ``[1, N]`` (1: one training point carries the posterior; N: uniform weights)."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate("effective count", lambda m, s, x: m._posterior(x, s)[2].to(m.dtype), s, xf)

    def nearest_neighbors(self, x: torch.Tensor, k: int = 1):
        """Exact ``k`` nearest training points of queries ``x`` (B, *event_shape):
        ``(dist (B, k) float64 ascending, idx (B, k) int64)``, as a float64 brute force from
        exact differences would give them (ties by lower index)."""
        xf, _ = self._prepare(x, 1.0)
        return kernels.nearest_neighbors(xf, self._prep, k, backend=self.backend, chunk_size=self._kernel_chunk)

    # -- diagnostics holding (B, N) or (B, d, d) -------------------------------------------------
    def _exact_d2(self, xf, start, stop):
        """float64 squared distances from exact differences to training points [start, stop)."""
        y = self._prep.y[start:stop]
        y = torch.as_tensor(y).to(device=xf.device, dtype=torch.float64)
        diff = xf.to(torch.float64)[:, None, :] - y[None]
        return (diff * diff).sum(-1)

    def _exact_mean_lse(self, xf, s64):
        """(E1)-(E2) from exact differences in float64: the kernels' online log-sum-exp without
        their GEMMs (slower, for the few queries that need it). Returns ``(mean (B, d), m (B,),
        z (B,))`` with ``lse = m + log z``, ``m`` the largest logit: the weights are
        ``exp(l - m) / z``, exact where ``m + log z`` would round ``log z`` away."""
        B, d = xf.shape
        m = torch.full((B,), -torch.inf, dtype=torch.float64, device=self.device)
        z = torch.zeros(B, dtype=torch.float64, device=self.device)
        acc = torch.zeros(B, d, dtype=torch.float64, device=self.device)
        step = max(1, self.chunk_size // max(1, B))
        for start in range(0, self.n, step):
            y = torch.as_tensor(self._prep.y[start : start + step]).to(device=self.device, dtype=torch.float64)
            logit = -self._exact_d2(xf, start, start + step) / (2 * s64[:, None] ** 2)
            m_new = torch.maximum(m, logit.max(1).values)
            w = torch.exp(logit - m_new[:, None])
            rescale = torch.exp(m - m_new)
            z, acc, m = z * rescale + w.sum(1), acc * rescale[:, None] + w @ y, m_new
        return acc / z[:, None], m, z

    def _centred_chunks(self, xf, s64, mean, lse):
        """Chunks of training points as ``(w (B, c), y - mean (B, c, d))``: the (E2) weights
        ``exp(-|x - y_i|^2 / 2 sigma^2 - lse)`` from exact differences (float64) and the points
        centred on the posterior mean, the two factors of every posterior second moment.

        The kernels' ``lse`` carries an absolute error ``~ u64 |lse|``, a common factor
        ``exp(u64 |lse|)`` on every weight, and their mean an error ``~ u64 |y|`` that the
        centred moment divided by ``sigma^2`` magnifies: at small sigma (``|lse| ~ |x - y|^2 /
        2 sigma^2`` beyond ~1e8) the weights and the centre of those queries are recomputed
        from exact differences (:meth:`_exact_mean_lse`), so that the Jacobian of a query
        decided by one training point is exactly 0, not ``u^2 |y|^2 / sigma^2``."""
        shift, scale = lse, None  # the weights: exp(l - shift) * scale
        redo = torch.nonzero(lse.abs() * torch.finfo(torch.float64).eps > 1e-8).flatten()
        if redo.numel():
            mean, shift, scale = mean.clone(), lse.clone(), torch.ones_like(lse)
            mean[redo], shift[redo], z = self._exact_mean_lse(xf[redo], s64[redo])
            scale[redo] = 1 / z
        step = max(1, self.chunk_size // max(1, xf.shape[0]))
        for start in range(0, self.n, step):
            y = torch.as_tensor(self._prep.y[start : start + step]).to(device=self.device, dtype=torch.float64)
            w = torch.exp(-self._exact_d2(xf, start, start + step) / (2 * s64[:, None] ** 2) - shift[:, None])
            yield (w if scale is None else w * scale[:, None]), y[None] - mean[:, None, :]

    def posterior_weights(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The full ``(B, N)`` posterior weights ``softmax_i(-|x - x_i|^2 / 2 sigma^2)``.

        Holds a ``(B, N)`` matrix: meant for small problems, diagnostics and tests."""
        xf, s = self._prepare(x, sigma)
        step = max(1, self.chunk_size // max(1, xf.shape[0] // 16 + 1))
        d2 = torch.cat([self._exact_d2(xf, a, a + step) for a in range(0, self.n, step)], 1)
        return self._evaluate(
            "posterior weights",
            lambda m, s: torch.softmax(-d2 / (2 * s.to(torch.float64)[:, None] ** 2), dim=1).to(m.dtype),
            s,
        )

    def jacobian(self, x: torch.Tensor, sigma) -> torch.Tensor:
        r"""(E3) ``dD/dx = Cov[x0 | x] / sigma^2`` for every query: ``(B, d, d)``.

        Two streamed passes: the posterior mean and lse first, then the centred second moment
        from exact differences."""
        xf, s = self._prepare(x, sigma)
        return self._evaluate("Jacobian", lambda m, s, x: m._jacobian(x, s), s, xf)

    def _jacobian(self, xf, s):
        mean, lse, _ = self._posterior(xf, s)
        mean, lse = mean.to(self.device), lse.to(self.device)
        s64 = s.to(torch.float64)
        B, d = xf.shape
        cov = torch.zeros(B, d, d, dtype=torch.float64, device=self.device)
        for w, diff in self._centred_chunks(xf, s64, mean, lse):
            cov += torch.einsum("bc,bcd,bce->bde", w, diff, diff)
        return (cov / s64[:, None, None] ** 2).to(self.dtype)


class _MeanLse(torch.autograd.Function):
    """Autograd for the streamed posterior: ``d lse / dx = (D - x) / sigma^2`` (Tweedie) and
    ``dD/dx = Cov[x0 | x] / sigma^2`` (E3), applied to the incoming gradient by one more
    streamed pass. Sigma is treated as a constant."""

    @staticmethod
    def forward(ctx, x, s, den):
        mean, lse, _ = den._posterior(x.detach(), s.detach())
        mean, lse = mean.to(x.device), lse.to(x.device)
        ctx.den = den
        ctx.save_for_backward(x, s, mean, lse)
        return mean, lse

    @staticmethod
    def backward(ctx, g_mean, g_lse):
        x, s, mean, lse = ctx.saved_tensors
        den = ctx.den
        s2 = s.detach().to(torch.float64)[:, None] ** 2
        grad = torch.zeros_like(mean)
        if g_lse is not None:
            grad = grad + g_lse.to(torch.float64)[:, None] * (mean - x.detach().to(torch.float64)) / s2
        if g_mean is not None:
            grad = grad + den._cov_times(x, s, mean, lse, g_mean.to(torch.float64)) / s2
        return grad.to(x.dtype), None, None
