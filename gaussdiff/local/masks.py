r"""Data-driven locality (Lukoianov et al., NeurIPS 2025, "Locality in image diffusion models
emerges from data statistics"): an empirical denoiser whose distance, at each output pixel, only
looks at the pixels that the data's Wiener filter links to it.

(W1) Wiener filter of the data's Gaussian at noise level :math:`\sigma` (the Jacobian of
:class:`~gaussdiff.GaussianDenoiser`, (G2)):

.. math:: W_\sigma = \Sigma (\Sigma + \sigma^2 I)^{-1} = U \,\mathrm{diag}\big(\tfrac{l}{l + \sigma^2}\big) U^T.

(W2) Row-normalised and thresholded: :math:`A_{nm} = W_{nm} / W_{nn}` (row ``n`` divided by its
diagonal entry), and the binary mask :math:`M_{nm} = 1[\,|A_{nm}| \ge \tau \max_{n'm'} |A_{n'm'}|\,]`.

(W3) The denoiser: at every output entry ``m`` (a pixel of one channel) a softmax over the ``N``
training images of the masked squared distance, and the posterior mean of that entry:

.. math:: D(x, \sigma)_m = \sum_i \mathrm{softmax}_i\Big(-\frac{\sum_n M_{nm} (x_n - x_{i,n})^2}{2 \sigma^2 T}\Big)\, x_{i,m}.

With :math:`M` all ones this is the empirical denoiser (E2); with :math:`M = I` the per-pixel
marginal posterior. It is a denoiser, not the posterior of one law: there is no log density, and
the score is Tweedie's :math:`(D - x)/\sigma^2` by definition.

Source: ``ottogin/locality-in-diffusion-models``, ``src/local_diffusion/models/pca_locality.py``
(commit 2bd2d42): ``PCALocalityDenoiser._projection_mask`` (lines 142-166: shrink factors,
``LLt = U diag(shrink) Vh``, ``mask = LLt / diagonal(LLt)[:, None]`` with diagonal entries below
1e-6 replaced by 1, threshold ``mask.abs().max() * mask_threshold`` and binarisation when
``mask_threshold > 0``), ``denoise`` (lines 169-205: per-entry squared differences
``delta[b, k, n]``, ``ds = einsum("bkn,nm->bkm", delta, mask)``,
``logits = -ds / (2 beta_t temperature)``) and ``src/local_diffusion/utils/wiener.py``
(``compute_wiener_filter``: covariance of the centred data divided by ``N - 1``). Their DDPM
``x_t = sqrt(a) x0 + sqrt(1 - a) n`` is the EDM ``x = x_t / sqrt(a)`` with
``sigma^2 = (1 - a) / a``: their shrink factors ``a l / (1 - a + a l)`` are (W1)'s, and their
logits ``-a |x - x_i|^2 / (2 (1 - a) T)`` are (W3)'s.

Choices the paper and code leave open, and what is done here:

* **Covariance**: the data's, normalised by ``N - 1`` as their code (``covariance=`` takes any
  other, e.g. ``GaussianDenoiser.fit(train).cov``). Eigendecomposed once in float64.
* **Normalisation**: rows divided by their diagonal (their ``denom = diagonal(LLt).unsqueeze(1)``),
  so :math:`M` is *not* symmetric: entry ``(n, m)`` is ``W_nm / W_nn``, and output ``m`` uses
  column ``m``. Their code keeps a row whose diagonal is below an absolute 1e-6 undivided; that
  cut depends on sigma (every diagonal entry of ``W`` falls below 1e-6 once ``sigma`` exceeds
  about 1e3 data standard deviations, and the mask then changes construction). Here a row is
  dropped (set to 0: that pixel enters no distance) only where its diagonal is zero to rounding
  (``<= d * eps64 * max diagonal``: a pixel with no variance), and (W1) is evaluated in the
  scale-free form ``W / W_max-shrink`` so that the masks are exact at every sigma.
* **Threshold**: one global maximum over the whole matrix (their ``mask.abs().max()``), not one
  per row; absolute values; ``threshold=0.02`` (their configs). ``threshold=0`` keeps the
  *weighted, signed* normalised matrix :math:`A` itself as the mask, as their code does for a
  non-positive threshold (the masked "distance" may then be negative).
* **Per pixel, per sigma, across channels**: one mask per output entry and noise level; the
  entries are the flattened ``C H W`` coordinates, so a mask may span channels (their
  ``flatten(start_dim=1)``).
* **No scaling by mask size**: the masked distance enters the logit as it is, divided by
  :math:`2\sigma^2 T` (temperature ``T = 1`` in their configs).
* **Output**: the posterior mean of the entry itself, :math:`x_{i,m}` (not a patch centre: the
  mask need not contain ``m`` or be contiguous); no mean image is subtracted.
* **The softmax is over all N training images, exact**: their ``WeightedStreamingSoftmax``
  normalises the weights *within each data-loader batch* and then averages the batch means
  with equal weight (the sum of the per-batch normalised weights is 1 per batch), which equals
  the softmax over the training set only when one batch holds it all. Here the training set is
  streamed in chunks with a per-entry online log-sum-exp (one running maximum per query and
  output entry, never one over the batch or the image), in float64 for float32 data too.

Two exact backends. ``"torch"`` (any device): the masked distances of a chunk of training images
are one ``(B c, d) x (d, d)`` GEMM on exact float64 differences, ``O(B N d^2)`` per call, memory
``O(B d (c + 1))`` beyond the data and its float64 copy. ``"numba"`` (CPU): a compiled loop over
the mask's nonzero entries only, ``O(B N (nnz + d))``, one thread per query. ``"auto"`` takes
numba for CPU data and a sparse mask (at most a quarter of the entries nonzero, the usual case:
a few to a few dozen entries per mask), torch otherwise. Measured on 2 shared cores, 16 queries,
float64: 28x28 MNIST with N = 2000, masks of 2-18 entries on average: 0.7-1.9 s per call with
numba, 5-6 s with torch; 8x8 digits, N = 1797: about 0.1 s (numba) and 0.3 s (torch).

.. warning:: the numba kernel is ``parallel=True``: once it has run, a child created by ``fork``
   can die (numba's threading layer is not fork-safe). Use ``spawn``/``forkserver`` or loky
   pools, or ``backend="torch"``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from .._checks import as_tensor, check_data, check_finite, check_int, check_positive
from ..denoisers import Denoiser, _eigh_psd

__all__ = ["WienerMaskDenoiser", "wiener_masks"]

_WORK = torch.float64
_CHUNK_ELEMENTS = 1 << 21  # float64 entries of one (b, chunk, d) block
_SPARSE = 0.25  # the numba path is used for masks with at most this share of nonzero entries
_BACKENDS = ("auto", "numba", "torch")


@njit(parallel=True, cache=True)
def _masked_posterior(x, y, ptr, idx, wts, inv_denom, out):  # pragma: no cover - compiled
    """(W3) for queries ``x`` (B, d) over training images ``y`` (N, d), float64, the masks as
    compressed columns (output ``m``: inputs ``idx[ptr[m]:ptr[m+1]]`` with weights ``wts``).
    One thread per query; per output entry an online log-sum-exp (running maximum ``mx``,
    normaliser ``z``, weighted sum ``acc``) over the training images, with explicit float64
    accumulation and no fastmath."""
    B, d = x.shape
    N = y.shape[0]
    for b in prange(B):
        mx = np.full(d, -np.inf)
        z = np.zeros(d)
        acc = np.zeros(d)
        diff2 = np.empty(d)
        for i in range(N):
            for n in range(d):
                t = x[b, n] - y[i, n]
                diff2[n] = t * t
            for m in range(d):
                s = 0.0
                for k in range(ptr[m], ptr[m + 1]):
                    s += wts[k] * diff2[idx[k]]
                logit = -s * inv_denom
                if logit > mx[m]:
                    r = math.exp(mx[m] - logit)  # 0 for the first image (mx = -inf)
                    z[m] = z[m] * r + 1.0
                    acc[m] = acc[m] * r + y[i, m]
                    mx[m] = logit
                else:
                    e = math.exp(logit - mx[m])
                    z[m] += e
                    acc[m] += e * y[i, m]
        for m in range(d):
            out[b, m] = acc[m] / z[m]


def _compressed_columns(M: torch.Tensor):
    """The nonzero entries of ``M`` (d, d) by column: ``(ptr (d+1,), idx, wts)`` numpy arrays."""
    Mc = M.detach().to("cpu", _WORK).T.contiguous().numpy()  # row m of Mc is column m of M
    rows, cols = np.nonzero(Mc)
    ptr = np.zeros(Mc.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=Mc.shape[0]), out=ptr[1:])
    return ptr, cols.astype(np.int64), np.ascontiguousarray(Mc[rows, cols])


def _normalised_wiener(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""(W2)'s :math:`A = W_\sigma / \mathrm{diag}(W_\sigma)` (rows), float64 ``(d, d)``.

    Computed from ``W / f_max`` (``f_k = l_k / (l_k + s^2)``, ``f_max`` at the largest
    eigenvalue), ``g_k = (l_k / l_max) (l_max + s^2) / (l_k + s^2)`` in ``[0, 1]``: no entry
    under- or overflows at any sigma, and the row ratios are those of ``W``."""
    l, U = eigenvalues, eigenvectors
    d = l.shape[0]
    l_max = float(l.max()) if d else 0.0
    if l_max <= 0:
        return torch.zeros(d, d, dtype=_WORK, device=l.device)
    s2 = sigma * sigma
    if s2 >= 1.0:  # (l_max + s^2) / (l_k + s^2) without forming s^2 + l near the overflow limit
        g = (l / l_max) * ((l_max / s2 + 1.0) / (l / s2 + 1.0))
    else:
        g = (l / l_max) * ((l_max + s2) / (l + s2))
    Wn = (U * g[None]) @ U.T
    Wn = 0.5 * (Wn + Wn.T)
    diag = torch.diagonal(Wn)
    tol = d * torch.finfo(_WORK).eps * float(diag.max())
    keep = diag > tol
    return torch.where(keep[:, None], Wn / torch.where(keep, diag, 1.0)[:, None], 0.0)


def _binarise(A: torch.Tensor, threshold: float) -> torch.Tensor:
    """(W2)'s binary mask: ``|A| >= threshold * max|A|`` (one global maximum); ``A`` itself
    for ``threshold == 0``."""
    if threshold == 0:
        return A
    top = float(A.abs().max())
    if top == 0:
        return torch.zeros_like(A)
    return (A.abs() >= threshold * top).to(A.dtype)


def wiener_masks(covariance, sigma: float, *, threshold: float = 0.02) -> torch.Tensor:
    r"""The data-driven locality masks (W1)-(W2) of a covariance at one noise level.

    Parameters
    ----------
    covariance : (d, d) symmetric positive semi-definite matrix.
    sigma : positive noise level.
    threshold : ``tau`` in ``[0, 1]``; 0 returns the weighted normalised matrix ``A``.

    Returns
    -------
    float64 ``(d, d)`` tensor ``M``: ``M[n, m]`` weights input entry ``n`` in the distance of
    output entry ``m`` (column ``m`` is output ``m``'s mask).
    """
    cov = check_finite(as_tensor(covariance, "covariance", dtype=_WORK), "covariance")
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(f"covariance: expected a square (d, d) matrix, got shape {tuple(cov.shape)}")
    sigma = check_positive(sigma, "sigma")
    threshold = _check_threshold(threshold)
    l, U = _eigh_psd(cov, "covariance")
    return _binarise(_normalised_wiener(l, U, sigma), threshold)


def _check_threshold(threshold) -> float:
    t = check_positive(threshold, "threshold", allow_zero=True)
    if t > 1:
        raise ValueError(f"threshold: must be in [0, 1] (a fraction of the largest entry), got {threshold!r}")
    return t


class WienerMaskDenoiser(Denoiser):
    r"""Lukoianov et al.'s analytic denoiser: per-entry softmax over training images of the
    distance masked by the thresholded, row-normalised Wiener filter of the data (W1)-(W3).

    Parameters
    ----------
    data : (N, *event_shape) training images, e.g. (N, C, H, W), float32 or float64.
    threshold : ``tau`` of (W2), in ``[0, 1]``; 0.02 as in their configs; 0 uses the weighted
        normalised filter itself.
    temperature : ``T`` of (W3), > 0 (1 in their configs).
    covariance : (d, d) covariance the masks are built from; default the data's, divided by
        ``N - 1`` (needs ``N >= 2``).
    mask : optional fixed (d, d) mask ``M[n, m]`` used at every sigma instead of (W1)-(W2)
        (all ones: the empirical denoiser; the identity: the per-pixel marginal posterior).
    chunk_size : training images per streamed chunk of the torch backend; default as many as
        keep one ``(B, chunk, d)`` float64 block near 2^21 entries.
    backend : ``"numba"`` (CPU data), ``"torch"`` (any device) or ``"auto"`` (numba for CPU data
        and a sparse mask, torch otherwise); see the module docstring.

    Notes
    -----
    Float64 throughout (differences, masked sums and the log-sum-exp), whatever the data's
    dtype; the output is rounded to it. Sigmas in one call may differ per row: the masks are
    built once per distinct sigma and cached. The numba kernel is not fork-safe (module
    docstring) and not differentiable: for autograd through ``D`` use ``backend="torch"``.
    """

    _sigma_float64 = True  # the terms compute with a float64 sigma whatever the dtype

    def __init__(
        self,
        data,
        *,
        threshold: float = 0.02,
        temperature: float = 1.0,
        covariance=None,
        mask=None,
        chunk_size: int | None = None,
        backend: str = "auto",
    ):
        data = check_data(data, "data")
        if data.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"data: expected float32 or float64 values, got {data.dtype}")
        self.data = data
        self.event_shape = tuple(data.shape[1:])
        self.dtype, self.device = data.dtype, data.device
        d = self.dim
        self.threshold = _check_threshold(threshold)
        self.temperature = check_positive(temperature, "temperature")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size")
        if backend not in _BACKENDS:
            raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
        if backend == "numba" and data.device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on CPU data only, data is on {data.device}")
        self.backend = backend
        self._data64 = data.reshape(data.shape[0], -1).to(_WORK)
        self._cache: dict = {}
        self.fixed_mask = None
        self.covariance = None
        if mask is not None:
            if covariance is not None:
                raise ValueError("mask: give either a fixed mask or a covariance to build masks from, not both")
            m = check_finite(as_tensor(mask, "mask", dtype=_WORK, device=self.device), "mask")
            if tuple(m.shape) != (d, d):
                raise ValueError(f"mask: expected shape ({d}, {d}) to match the data, got {tuple(m.shape)}")
            self.fixed_mask = m
            return
        if covariance is None:
            if data.shape[0] < 2:
                raise ValueError("data: needs at least 2 images to estimate the covariance (or pass covariance=)")
            centred = self._data64 - self._data64.mean(0)
            cov = centred.T @ centred / (data.shape[0] - 1)
        else:
            cov = check_finite(as_tensor(covariance, "covariance", dtype=_WORK, device=self.device), "covariance")
            if tuple(cov.shape) != (d, d):
                raise ValueError(f"covariance: expected shape ({d}, {d}) to match the data, got {tuple(cov.shape)}")
        self.covariance = cov
        self._eig = _eigh_psd(cov, "covariance")

    @property
    def n(self) -> int:
        return self.data.shape[0]

    def to(self, *, dtype=None, device=None) -> "WienerMaskDenoiser":
        """A copy with the data in ``dtype`` on ``device`` (this one keeps working)."""
        device = device or self.device
        return WienerMaskDenoiser(
            self.data.to(dtype=dtype or self.dtype, device=device),
            threshold=self.threshold,
            temperature=self.temperature,
            covariance=None if self.covariance is None else self.covariance.to(device),
            mask=None if self.fixed_mask is None else self.fixed_mask.to(device),
            chunk_size=self.chunk_size,
            backend=self.backend if device == self.device or self.backend == "torch" else "auto",
        )

    # -- the masks ---------------------------------------------------------------------------
    def wiener_filter(self, sigma: float) -> torch.Tensor:
        """(W1) ``Sigma (Sigma + sigma^2 I)^-1``, float64 ``(d, d)``."""
        if self.covariance is None:
            raise ValueError("mask: this denoiser uses a fixed mask, it has no Wiener filter")
        s = check_positive(sigma, "sigma")
        l, U = self._eig
        return (U * (l / (l + s * s))[None]) @ U.T

    def mask(self, sigma: float) -> torch.Tensor:
        """(W2) the masks at ``sigma``: float64 ``(d, d)``, column ``m`` the mask of output
        entry ``m`` (the fixed mask when one was given)."""
        return self._mask(check_positive(sigma, "sigma")).clone()

    def mask_sizes(self, sigma: float) -> torch.Tensor:
        """Number of entries in each output entry's mask at ``sigma``: ``(d,)`` float64 (the sum
        of the weights for a weighted mask)."""
        return self._mask(check_positive(sigma, "sigma")).sum(0)

    def _mask(self, sigma: float) -> torch.Tensor:
        return self._entry(sigma)[0]

    def _entry(self, sigma: float) -> list:
        """``[mask, its compressed columns or None]`` at ``sigma``, built once and cached."""
        if self.fixed_mask is not None:
            return self.__dict__.setdefault("_fixed_entry", [self.fixed_mask, None])
        e = self._cache.get(sigma)
        if e is None:
            if len(self._cache) >= 64:
                self._cache.clear()
            e = [_binarise(_normalised_wiener(*self._eig, sigma), self.threshold), None]
            self._cache[sigma] = e
        return e

    def _use_numba(self, M: torch.Tensor) -> bool:
        """numba where asked; under ``"auto"`` for CPU data and a sparse mask (a dense one is
        faster as the torch path's GEMM)."""
        if self.backend != "auto":
            return self.backend == "numba"
        return self.device.type == "cpu" and int(torch.count_nonzero(M)) <= _SPARSE * M.numel()

    # -- (W3) ----------------------------------------------------------------------------------
    def _denoise(self, x, s):
        x64 = x.to(_WORK)
        s64 = s.to(_WORK)
        out = torch.empty_like(x64)
        for v in torch.unique(s64).tolist():
            rows = torch.nonzero(s64 == v).flatten()
            entry = self._entry(v)
            M = entry[0]
            if self._use_numba(M):
                if entry[1] is None:
                    entry[1] = _compressed_columns(M)
                res = np.empty((rows.shape[0], x.shape[1]))
                xb = np.ascontiguousarray(x64[rows].detach().numpy())
                inv_denom = 1.0 / (2.0 * v * v * self.temperature)
                _masked_posterior(xb, self._data64_np, *entry[1], inv_denom, res)
                out[rows] = torch.from_numpy(res)
            else:
                out[rows] = self._stream(x64[rows], M, v)
        return out.to(self.dtype)

    @property
    def _data64_np(self) -> np.ndarray:
        arr = self.__dict__.get("_data64_numpy")
        if arr is None:
            arr = np.ascontiguousarray(self._data64.numpy())
            self.__dict__["_data64_numpy"] = arr
        return arr

    def _stream(self, x: torch.Tensor, M: torch.Tensor, sigma: float) -> torch.Tensor:
        """(W3) for queries ``x`` (b, d) at one sigma: the training set in chunks, one running
        maximum, normaliser and weighted sum per query and output entry (float64)."""
        b, d = x.shape
        denom = 2.0 * sigma * sigma * self.temperature
        step = self.chunk_size or max(1, _CHUNK_ELEMENTS // max(1, b * d))
        run_max = torch.full((b, d), -math.inf, dtype=_WORK, device=x.device)
        z = torch.zeros(b, d, dtype=_WORK, device=x.device)
        acc = torch.zeros(b, d, dtype=_WORK, device=x.device)
        for start in range(0, self.n, step):
            y = self._data64[start : start + step]  # (c, d)
            diff2 = (x[:, None, :] - y[None]) ** 2  # (b, c, d), exact differences
            logit = -((diff2.reshape(-1, d) @ M).reshape(b, -1, d) / denom)
            new_max = torch.maximum(run_max, logit.amax(1))
            rescale = torch.exp(run_max - new_max)
            w = torch.exp(logit - new_max[:, None, :])
            z = z * rescale + w.sum(1)
            acc = acc * rescale + (w * y[None]).sum(1)
            run_max = new_max
        return acc / z
