r"""Linear measurement operators :math:`A: \mathbb R^d \to \mathbb R^m` acting on flattened
samples (dense matrices, inpainting masks, circular blur, block down-sampling, random
projections), a spec parser for them, and the input checks every inverse-problem function
shares (a measurement ``y`` against its operator, the noise level ``sigma_y``).
"""

from __future__ import annotations

import math

import torch

from .._checks import as_tensor, check_finite, check_int, check_positive

__all__ = [
    "LinearOperator",
    "MatrixOperator",
    "InpaintOperator",
    "BlurOperator",
    "DownsampleOperator",
    "random_projection",
    "make_operator",
    "as_operator",
]


class LinearOperator:
    r"""A linear measurement operator :math:`A: \mathbb R^d \to \mathbb R^m` on flattened samples.

    Subclasses implement ``_forward`` (``(B, d) -> (B, m)``), ``_adjoint`` (``(B, m) -> (B, d)``)
    and ``matrix()``; ``svd()`` defaults to a dense SVD and is overridden where it is cheap.

    ``forward(x)`` / ``A(x)`` accept ``(B, d)`` or ``(B, *event_shape)`` and return ``(B, m)``;
    ``adjoint(y)`` returns ``(B, d)``.
    """

    in_dim: int
    out_dim: int
    dtype: torch.dtype = torch.float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._flat(x, "x")
        return self._forward(x)

    __call__ = forward

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor) or y.ndim != 2 or y.shape[1] != self.out_dim:
            raise ValueError(
                f"y: expected shape (B, {self.out_dim}) for this operator, got "
                f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
            )
        return self._adjoint(y)

    def _flat(self, x, name):
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError(f"{name}: expected a (B, {self.in_dim}) or (B, *event_shape) tensor")
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"{name}: has {x.shape[1]} entries per sample, the operator expects {self.in_dim}")
        return x

    def matrix(self, *, dtype=torch.float64) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def svd(self):
        r"""``(U (m, r), s (r,), V (d, r))`` with :math:`A = U\,\mathrm{diag}(s)\,V^T`, ``s > 0``
        decreasing (``r`` the numerical rank), in float64. Dense here (``O(m d min(m, d))``)."""
        U, s, Vh = torch.linalg.svd(self.matrix(dtype=torch.float64), full_matrices=False)
        keep = s > s.max() * max(self.out_dim, self.in_dim) * torch.finfo(torch.float64).eps
        return U[:, keep], s[keep], Vh[keep].T

    def __repr__(self):
        return f"{type(self).__name__}(m={self.out_dim}, d={self.in_dim})"


class MatrixOperator(LinearOperator):
    """A dense ``(m, d)`` matrix."""

    def __init__(self, A):
        A = check_finite(as_tensor(A, "A"), "A")
        if A.ndim != 2 or A.shape[0] < 1:
            raise ValueError(f"A: expected an (m, d) matrix, got shape {tuple(A.shape)}")
        self.A = A
        self.out_dim, self.in_dim = A.shape
        self.dtype = A.dtype

    def _forward(self, x):
        return x @ self.A.to(dtype=x.dtype, device=x.device).T

    def _adjoint(self, y):
        return y @ self.A.to(dtype=y.dtype, device=y.device)

    def matrix(self, *, dtype=torch.float64):
        return self.A.to(dtype)


class InpaintOperator(LinearOperator):
    """Keep the entries where ``mask`` is True (rows of the identity): ``m = mask.sum()``.

    SVD: ``U = I_m``, ``s = 1``, ``V`` = the kept columns of ``I_d``."""

    def __init__(self, mask):
        mask = torch.as_tensor(mask).reshape(-1)
        if mask.dtype != torch.bool:
            raise ValueError("mask: expected a boolean tensor")
        if not bool(mask.any()):
            raise ValueError("mask: keeps no entry (m = 0)")
        self.mask = mask
        self.index = torch.nonzero(mask).reshape(-1)
        self.in_dim, self.out_dim = mask.numel(), int(self.index.numel())

    def _forward(self, x):
        return x[:, self.index.to(x.device)]

    def _adjoint(self, y):
        out = y.new_zeros(y.shape[0], self.in_dim)
        out[:, self.index.to(y.device)] = y
        return out

    def matrix(self, *, dtype=torch.float64):
        return torch.eye(self.in_dim, dtype=dtype)[self.index]

    def svd(self):
        return (
            torch.eye(self.out_dim, dtype=torch.float64),
            torch.ones(self.out_dim, dtype=torch.float64),
            torch.eye(self.in_dim, dtype=torch.float64)[:, self.index],
        )


def _event_image(event_shape):
    shape = tuple(int(v) for v in event_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"event_shape: blur and down-sampling need images (C, H, W), got {shape}")
    return shape


class BlurOperator(LinearOperator):
    r"""Circular (periodic) Gaussian blur of standard deviation ``std`` pixels, per channel.

    The kernel :math:`g(u, v) \propto e^{-(u^2+v^2)/2\,std^2}`, :math:`|u|, |v| \le \lceil 3\,std\rceil`,
    sums to 1 and is wrapped onto the ``H x W`` torus, so ``A`` is a symmetric block-circulant
    ``(d, d)`` matrix (``A^T = A``), applied by FFT."""

    def __init__(self, event_shape, std: float):
        self.event_shape = _event_image(event_shape)
        self.std = check_positive(std, "std")
        C, H, W = self.event_shape
        self.in_dim = self.out_dim = C * H * W
        r = int(math.ceil(3 * self.std))
        u = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-(u**2) / (2 * self.std**2))
        g2 = g[:, None] * g[None, :]
        g2 = g2 / g2.sum()
        k = torch.zeros(H, W, dtype=torch.float64)
        for i, du in enumerate(range(-r, r + 1)):
            for j, dv in enumerate(range(-r, r + 1)):
                k[du % H, dv % W] += g2[i, j]
        self.kernel = k  # periodic kernel on the torus
        self._khat = torch.fft.fft2(k).real  # real: the kernel is symmetric

    def _apply(self, x):
        C, H, W = self.event_shape
        img = x.reshape(x.shape[0], C, H, W)
        out = torch.fft.ifft2(torch.fft.fft2(img.to(torch.float64)) * self._khat.to(x.device)).real
        return out.reshape(x.shape[0], -1).to(x.dtype)

    _forward = _apply
    _adjoint = _apply

    def matrix(self, *, dtype=torch.float64):
        C, H, W = self.event_shape
        i = torch.arange(H)
        j = torch.arange(W)
        # A[(c, i, j), (c, k, l)] = kernel[(i - k) mod H, (j - l) mod W]
        blk = self.kernel[
            (i[:, None, None, None] - i[None, None, :, None]) % H, (j[None, :, None, None] - j[None, None, None, :]) % W
        ].reshape(H * W, H * W)
        return torch.block_diag(*([blk] * C)).to(dtype)


class DownsampleOperator(LinearOperator):
    r"""Average over non-overlapping ``factor x factor`` blocks, per channel:
    ``(C, H, W) -> (C, H/f, W/f)``. Its rows are orthogonal with :math:`AA^T = I/f^2`, so the SVD
    is ``U = I``, ``s = 1/f``, ``V = f A^T``."""

    def __init__(self, event_shape, factor: int):
        self.event_shape = _event_image(event_shape)
        self.factor = f = check_int(factor, "factor")
        C, H, W = self.event_shape
        if H % f or W % f:
            raise ValueError(f"factor: {f} does not divide the image size {H}x{W}")
        self.in_dim, self.out_dim = C * H * W, C * (H // f) * (W // f)

    def _forward(self, x):
        C, H, W = self.event_shape
        f = self.factor
        return x.reshape(-1, C, H // f, f, W // f, f).mean((3, 5)).reshape(x.shape[0], -1)

    def _adjoint(self, y):
        C, H, W = self.event_shape
        f = self.factor
        z = y.reshape(-1, C, H // f, 1, W // f, 1) / (f * f)
        return z.expand(-1, C, H // f, f, W // f, f).reshape(y.shape[0], -1)

    def matrix(self, *, dtype=torch.float64):
        C, H, W = self.event_shape
        f = self.factor
        A = torch.zeros(self.out_dim, C, H, W, dtype=dtype)
        r = 0
        for c in range(C):
            for a in range(H // f):
                for b in range(W // f):
                    A[r, c, a * f : (a + 1) * f, b * f : (b + 1) * f] = 1.0 / (f * f)
                    r += 1
        return A.reshape(self.out_dim, -1)

    def svd(self):
        f = self.factor
        return (
            torch.eye(self.out_dim, dtype=torch.float64),
            torch.full((self.out_dim,), 1.0 / f, dtype=torch.float64),
            f * self.matrix().T,
        )


def random_projection(
    d: int, m: int, *, generator: torch.Generator | None = None, dtype=torch.float64
) -> MatrixOperator:
    """A Gaussian random projection: entries ``N(0, 1/m)``, shape ``(m, d)``."""
    for name, v in (("d", d), ("m", m)):
        check_int(v, name)
    A = torch.randn(int(m), int(d), generator=generator, dtype=torch.float64) / math.sqrt(m)
    return MatrixOperator(A.to(dtype))


def make_operator(spec: str, event_shape, *, seed: int = 0) -> LinearOperator:
    """An operator from a spec: ``inpaint:P`` (keep a random share ``P`` of the pixels, the same
    pixels in every channel), ``blur:STD``, ``down:F``, ``project:M`` (``M`` random Gaussian
    measurements) or ``identity``. Randomness comes from ``seed``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"operator: expected a spec such as inpaint:0.5, blur:2, down:2, project:16, got {spec!r}")
    shape = (int(event_shape),) if isinstance(event_shape, int) else tuple(int(v) for v in event_shape)
    d = math.prod(shape)
    name, _, arg = spec.strip().partition(":")
    g = torch.Generator().manual_seed(int(seed))
    try:
        if name == "identity":
            return MatrixOperator(torch.eye(d, dtype=torch.float64))
        if name == "inpaint":
            p = float(arg or 0.5)
            if not 0 < p <= 1:
                raise ValueError(f"operator: inpaint share must be in (0, 1], got {p}")
            pix = shape[-2:] if len(shape) >= 2 else shape
            npix = math.prod(pix)
            keep = torch.zeros(npix, dtype=torch.bool)
            keep[torch.randperm(npix, generator=g)[: max(1, round(p * npix))]] = True
            mask = keep.reshape(pix).expand(shape) if len(shape) >= 2 else keep
            return InpaintOperator(mask)
        if name == "blur":
            return BlurOperator(shape, float(arg or 1.0))
        if name == "down":
            return DownsampleOperator(shape, int(arg or 2))
        if name in ("project", "proj"):
            return random_projection(d, int(arg or max(1, d // 4)), generator=g)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(("operator", "factor", "std", "event_shape", "mask", "m:", "d:")):
            raise
        raise ValueError(f"operator: cannot parse {spec!r} ({exc})") from exc
    raise ValueError(f"operator: unknown {name!r}; expected inpaint:P, blur:STD, down:F, project:M or identity")


def as_operator(A, d: int | None = None) -> LinearOperator:
    """``A`` as a :class:`LinearOperator` (a dense ``(m, d)`` tensor/array is wrapped); checks
    that it acts on ``d`` entries."""
    op = A if isinstance(A, LinearOperator) else MatrixOperator(A)
    if d is not None and op.in_dim != d:
        raise ValueError(f"A: acts on {op.in_dim} entries but the prior has dimension {d}")
    return op


# ---------------------------------------------------------------------------------------------
# Input checks shared by the posteriors and the samplers
# ---------------------------------------------------------------------------------------------


def check_measurement(y, op: LinearOperator, *, dtype, device) -> torch.Tensor:
    """``y`` as a finite ``(B, m)`` tensor matching ``op`` (a single ``(m,)`` row becomes ``(1, m)``)."""
    y = check_finite(as_tensor(y, "y", dtype=dtype, device=device), "y")
    if y.ndim == 1:
        y = y[None]
    if y.ndim != 2 or y.shape[1] != op.out_dim:
        raise ValueError(
            f"y: expected shape (B, {op.out_dim}) to match A ({op.out_dim} x {op.in_dim}), got {tuple(y.shape)}"
        )
    return y


def check_sigma_y(sigma_y) -> float:
    """The measurement noise level: a finite float >= 0."""
    return check_positive(sigma_y, "sigma_y", allow_zero=True)
