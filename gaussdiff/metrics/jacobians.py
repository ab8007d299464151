r"""Jacobian spectra of denoisers: which directions a denoiser keeps at a query point.

:func:`denoiser_jacobian` differentiates any denoiser (network or closed form) by autograd;
:func:`jacobian_spectrum` gives the singular values, :func:`effective_rank` counts the leading
ones that hold a share of their energy and :func:`effective_dimension` is the Jacobian's trace.
Unlike the noise-grid metrics of :mod:`gaussdiff.metrics.denoisers`, these are evaluated at given
query points and one noise level, with no noise drawn. Re-exported by :mod:`gaussdiff.metrics`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import as_tensor, check_callable, check_data, check_finite, check_int, check_positive
from ._common import _WORK

__all__ = ["denoiser_jacobian", "jacobian_spectrum", "effective_rank", "effective_dimension"]


def denoiser_jacobian(denoiser: Callable, x: torch.Tensor, sigma, *, max_elements: int = 2**22) -> torch.Tensor:
    r"""Jacobians :math:`J_b = \partial D(x_b, \sigma) / \partial x_b` of any differentiable
    denoiser (network or closed form), by reverse-mode autograd: ``(B, d, d)`` in ``x``'s dtype.

    The denoiser acts on each row independently, so one backward pass through a batch that
    holds ``c`` copies of ``x`` gives ``c`` rows of every Jacobian at once (copy ``j`` carries the
    gradient of output coordinate ``j``). Copies are taken ``c`` at a time so that at most
    ``max_elements`` input entries are in flight. Networks must be in eval mode (no batch
    statistics), or the rows would not be independent.

    Parameters
    ----------
    denoiser : ``D(x, sigma)``.
    x : (B, *event_shape) query points.
    sigma : float or (B,) tensor.
    max_elements : memory bound, in input entries per pass.
    """
    check_callable(denoiser, "denoiser")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    x = check_data(x, "x")
    if not x.is_floating_point():  # pragma: no cover - check_data already promotes
        raise ValueError("x: expected a floating dtype")
    B = x.shape[0]
    d = math.prod(x.shape[1:])
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        if sigma.shape != (B,):
            raise ValueError(f"sigma: expected a float or a ({B},) tensor, got shape {tuple(sigma.shape)}")
        check_finite(sigma, "sigma")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma: must be > 0")
    else:
        check_positive(float(sigma), "sigma")
    max_elements = check_int(max_elements, "max_elements", minimum=1)
    c = max(1, min(d, max_elements // max(1, B * d)))
    J = torch.empty(B, d, d, dtype=x.dtype, device=x.device)
    xf = x.detach().reshape(B, d)
    for j0 in range(0, d, c):
        cj = min(c, d - j0)
        xin = xf[None].expand(cj, B, d).reshape(cj * B, *x.shape[1:]).clone().requires_grad_(True)
        s_in = sigma.repeat(cj) if isinstance(sigma, torch.Tensor) and sigma.ndim > 0 else sigma
        with torch.enable_grad():
            y = denoiser(xin, s_in)
            if not isinstance(y, torch.Tensor) or y.shape != xin.shape:
                raise ValueError(
                    f"denoiser: must return a tensor of the input's shape {tuple(xin.shape)}, "
                    f"got {getattr(y, 'shape', type(y).__name__)}"
                )
            if not y.requires_grad:
                raise ValueError("denoiser: its output does not depend on x through autograd (detached or no_grad)")
            check_finite(y, "denoiser output")
            y = y.reshape(cj, B, d)
            rows = torch.arange(cj, device=x.device)
            picked = y[rows, :, j0 + rows]  # (cj, B): output coord j0+k of copy k
            (grad,) = torch.autograd.grad(picked.sum(), xin)
        J[:, j0 : j0 + cj, :] = grad.reshape(cj, B, d).transpose(0, 1)
    return J


def jacobian_spectrum(
    denoiser: Callable, x: torch.Tensor, sigma, *, return_jacobian: bool = False, max_elements: int = 2**22
):
    r"""Singular values of the denoiser's Jacobian at each query, descending: ``(B, d)``.

    For an exact (MMSE) denoiser the Jacobian is the posterior covariance over
    :math:`\sigma^2`, symmetric positive semi-definite, so these are its eigenvalues; for the
    Gaussian denoiser they are the shrinkage factors :math:`l_k / (l_k + \sigma^2)` (G2).
    Kadkhodaie et al. (2024) read the adaptive bases of networks off these spectra.

    Parameters
    ----------
    denoiser, x, sigma, max_elements : as :func:`denoiser_jacobian`.
    return_jacobian : also return the ``(B, d, d)`` Jacobians.

    Returns
    -------
    (B, d) float64 singular values (and the Jacobians when asked).
    """
    J = denoiser_jacobian(denoiser, x, sigma, max_elements=max_elements)
    sv = torch.linalg.svdvals(J.to(_WORK))
    return (sv, J) if return_jacobian else sv


def effective_rank(singular_values, energy: float = 0.99) -> torch.Tensor:
    r"""Number of leading singular values that hold a share ``energy`` of the squared sum:

    .. math:: r = \min\{k : \textstyle\sum_{i \le k} s_i^2 \ge \text{energy} \cdot \sum_i s_i^2\}

    (``s`` sorted descending here; the "99 % criterion" for ``energy = 0.99``). All-zero
    spectra have rank 0.

    Parameters
    ----------
    singular_values : (..., d) non-negative values.
    energy : in (0, 1].

    Returns
    -------
    (...) int64 tensor.
    """
    e = check_positive(energy, "energy")
    if e > 1:
        raise ValueError(f"energy: must lie in (0, 1], got {energy!r}")
    s = check_finite(as_tensor(singular_values, "singular_values", dtype=_WORK), "singular_values")
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(f"singular_values: expected shape (..., d) with d >= 1, got {tuple(s.shape)}")
    if bool((s < 0).any()):
        raise ValueError("singular_values: must be non-negative")
    p = torch.sort(s, dim=-1, descending=True).values ** 2
    cum = torch.cumsum(p, -1)
    total = cum[..., -1:]
    # Tolerance: a share exactly at the boundary should not fail by one rounding error.
    reached = cum >= (e * total) * (1 - 1e-12)
    rank = torch.where(total[..., 0] > 0, (~reached).sum(-1) + 1, torch.zeros_like(total[..., 0]))
    return rank.to(torch.int64)


def effective_dimension(denoiser: Callable, x: torch.Tensor, sigma, *, max_elements: int = 2**22) -> torch.Tensor:
    r"""Trace of the denoiser's Jacobian at each query, :math:`\mathrm{tr}\,\partial D/\partial x`:
    ``(B,)`` float64.

    For an exact denoiser this is :math:`\mathrm{tr}\,\mathrm{Cov}[x_0 \mid x] / \sigma^2`, and for
    the Gaussian denoiser :math:`\sum_k l_k / (l_k + \sigma^2)`
    (:meth:`GaussianDenoiser.effective_dim`), the number of directions the denoiser keeps.
    Arguments as :func:`denoiser_jacobian`.
    """
    J = denoiser_jacobian(denoiser, x, sigma, max_elements=max_elements)
    return torch.diagonal(J, dim1=1, dim2=2).sum(-1).to(_WORK)
