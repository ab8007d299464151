r"""Measuring posterior samples against the exact posterior: :func:`measure_posterior_samples`
(mean error, spread, coverage of the exact credible intervals or credible set, W2 or total
variation) and the Gaussian Wasserstein-2 distance :func:`gaussian_w2` it uses.
"""

from __future__ import annotations

import math

import torch

from .posteriors import EmpiricalPosteriorDenoiser, GaussianPosteriorDenoiser, PosteriorDenoiser, squared_distances

__all__ = ["measure_posterior_samples", "gaussian_w2"]


def gaussian_w2(m1, C1, m2, C2) -> torch.Tensor:
    r"""Wasserstein-2 distance between Gaussians (the Bures formula, (P5) without commutation):
    :math:`W_2^2 = |m_1-m_2|^2 + \mathrm{tr}(C_1 + C_2 - 2(C_2^{1/2}C_1C_2^{1/2})^{1/2})`.
    Batched over leading dimensions; float64."""
    m1, m2 = m1.to(torch.float64), m2.to(torch.float64)
    C1, C2 = C1.to(torch.float64), C2.to(torch.float64)

    def sqrtm(M):
        e, Q = torch.linalg.eigh(0.5 * (M + M.transpose(-1, -2)))
        return (Q * e.clamp_min(0).sqrt()[..., None, :]) @ Q.transpose(-1, -2)

    r2 = sqrtm(C2)
    cross = sqrtm(r2 @ C1 @ r2)
    tr = (
        torch.diagonal(C1, dim1=-2, dim2=-1).sum(-1)
        + torch.diagonal(C2, dim1=-2, dim2=-1).sum(-1)
        - 2 * torch.diagonal(cross, dim1=-2, dim2=-1).sum(-1)
    )
    return torch.sqrt((((m1 - m2) ** 2).sum(-1) + tr).clamp_min(0))


def measure_posterior_samples(samples: torch.Tensor, posterior: PosteriorDenoiser, *, level: float = 0.9) -> dict:
    r"""Measure samples against the exact posterior of each measurement.

    Parameters
    ----------
    samples : (Q, S, *event_shape): ``S`` samples for each of the ``Q`` measurements of
        ``posterior`` (``posterior.y`` has ``Q`` rows).
    level : credible level.

    Returns
    -------
    dict
        Floats averaged over the ``Q`` measurements; the keys are listed under Notes.

    Notes
    -----

    * ``mean_error``: :math:`|\hat m - m_y| / \sqrt{\mathrm{tr}\,C_y}`, the error of the sample mean
    relative to the posterior spread (for the empirical prior, whose posterior can be a single
    point, relative to the prior's spread: ``mean_error_scale``); an exact sampler gives about
    ``mc_floor`` (:math:`1/\sqrt S`, its Monte-Carlo error); much more is bias.
    ``mean_rmse``: the same error in data units, root mean square over coordinates.
    * ``spread_ratio``: :math:`\mathrm{tr}\,\hat C / \mathrm{tr}\,C_y` (1 when the spread is right;
    meaningless when the exact posterior is numerically a point).
    * ``coverage`` and ``coverage_nominal``: share of sample coordinates inside the exact central
    credible interval (Gaussian/mixture prior; nominal = ``level``), or share of samples whose
    nearest training point is in the exact ``level`` credible set (empirical prior; nominal =
    that set's mass, >= ``level``).
    * Gaussian prior: ``w2`` (Bures W2 between the Gaussian fitted to the samples and the exact
    posterior Gaussian) and ``w2_rel`` = ``w2`` / :math:`\sqrt{\mathrm{tr}\,C}`. The fitted
    Gaussian carries a Monte-Carlo error of its own: compare with the ``exact`` sampler's value
    at the same ``S``.
    * empirical prior: ``tv`` total-variation distance between the distribution of the nearest
    training point of the samples and the exact posterior weights.
    """
    if not isinstance(posterior, PosteriorDenoiser):
        raise ValueError("posterior: expected a PosteriorDenoiser")
    Q = posterior.batch
    if not isinstance(samples, torch.Tensor) or samples.shape[0] != Q or samples.ndim < 3:
        raise ValueError(
            f"samples: expected shape (Q={Q}, S, *event_shape), got "
            f"{tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__}"
        )
    S = samples.shape[1]
    X = samples.reshape(Q, S, -1).to(torch.float64)
    if X.shape[2] != posterior.dim:
        raise ValueError(f"samples: have {X.shape[2]} entries per sample, the posterior has {posterior.dim}")
    m = posterior.posterior_mean()
    C = posterior.posterior_cov()
    trC = torch.diagonal(C, dim1=1, dim2=2).sum(1)
    mh = X.mean(1)
    Ch = torch.einsum("qsd,qse->qde", X - mh[:, None], X - mh[:, None]) / max(S - 1, 1)
    discrete = isinstance(posterior, EmpiricalPosteriorDenoiser)
    if discrete:
        # a discrete posterior can be (numerically) a single point: scale by the prior's spread
        Xt = posterior.points
        scale = torch.sqrt(((Xt - Xt.mean(0)) ** 2).sum(1).mean()).expand(Q)
        floor = float((trC.sqrt() / scale).mean()) / math.sqrt(S)
    else:
        scale, floor = trC.sqrt(), 1 / math.sqrt(S)
    out = {
        "n_samples": S,
        "n_measurements": Q,
        "mc_floor": floor,
        "mean_error": float(((mh - m).norm(dim=1) / scale).mean()),
        "mean_error_scale": "prior" if discrete else "posterior",
        "mean_rmse": float(((mh - m) ** 2).mean().sqrt()),
        "spread_ratio": float((torch.diagonal(Ch, dim1=1, dim2=2).sum(1) / trC.clamp_min(1e-300)).mean()),
    }
    if discrete:
        nn = torch.stack([squared_distances(X[q], Xt).argmin(1) for q in range(Q)])  # (Q, S)
        cs = posterior.credible_set(level)
        out["coverage"] = float(torch.gather(cs, 1, nn).double().mean())
        out["coverage_nominal"] = float((posterior.weights * cs).sum(1).mean())
        hist = torch.zeros_like(posterior.weights).scatter_add_(1, nn, torch.ones_like(nn, dtype=torch.float64)) / S
        out["tv"] = float(0.5 * (hist - posterior.weights).abs().sum(1).mean())
    else:
        lo, hi = posterior.marginal_intervals(level)
        inside = (X >= lo[:, None]) & (X <= hi[:, None])
        # coordinates the posterior pins down exactly (zero variance, e.g. constant pixels) have a
        # degenerate interval: left out of the coverage, their number reported
        sd = torch.sqrt(torch.diagonal(C, dim1=1, dim2=2).clamp_min(0))
        live = sd > 1e-8 * sd.amax(1, keepdim=True)
        out["coverage"] = float(inside.double().mul(live[:, None]).sum() / (live.sum() * S))
        out["degenerate_coordinates"] = int((~live).sum())
        out["coverage_nominal"] = float(level)
        if isinstance(posterior, GaussianPosteriorDenoiser):
            w2 = gaussian_w2(mh, Ch, m, C)
            out["w2"] = float(w2.mean())
            out["w2_rel"] = float((w2 / trC.sqrt()).mean())
    return out
