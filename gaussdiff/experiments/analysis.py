"""Reading the transition off the results: the memorization onset time :func:`tau_mem` per N,
and the transition size N* of a memorized share (:func:`transition_size`, a logistic fit)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["tau_mem", "tau_mem_fit", "TransitionFit", "transition_size"]


def tau_mem(rows: list[dict], *, level: float = 0.5) -> dict:
    """The memorization onset per ``(n, width, framework)``: the training step at which the
    memorization fraction (averaged over seeds) first reaches ``level``, interpolated linearly
    in log(step) between checkpoints; ``None`` when it is never reached within the budget."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["n"], r["width"], r["framework"]), {}).setdefault(r["step"], []).append(r["memorization"])
    out = {}
    for key, by_step in groups.items():
        steps = sorted(by_step)
        mem = [float(np.mean(by_step[s])) for s in steps]
        out[key] = None
        for i, (s, m) in enumerate(zip(steps, mem)):
            if m >= level:
                if i == 0:
                    out[key] = float(s)
                else:
                    s0, m0 = steps[i - 1], mem[i - 1]
                    frac = (level - m0) / (m - m0)
                    out[key] = float(math.exp(math.log(s0) + frac * (math.log(s) - math.log(s0))))
                break
    return out


@dataclass(frozen=True)
class TransitionFit:
    """What :func:`transition_size` returns.

    Attributes
    ----------
    n_star : the size at which the fitted curve crosses ``level`` (nan when the fit does not
        move in the expected direction). ci : its ``(low, high)`` bootstrap percentile interval.
    slope, intercept : the logistic fit ``p(N) = 1 / (1 + exp(-(intercept + slope log N)))``.
    inside_grid : ``n_star`` lies between the smallest and the largest N measured.
    draws : the bootstrap values of ``log N*`` (nan for draws with no crossing).
    separated : the shares jump from one end (0 or 1) to the other between two neighbouring sizes
        with nothing in between: ``n_star`` then only says "between those two sizes" (the slope
        is set by a tiny ridge) and ``ci`` is degenerate.
    """

    n_star: float
    ci: tuple
    slope: float
    intercept: float
    inside_grid: bool
    draws: np.ndarray = dataclasses.field(repr=False)
    separated: bool = False


def _logistic_fit(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Binomial maximum likelihood of ``logit p = a + b x`` (Newton, with a small ridge so
    that a perfectly separated curve still gives a finite, steep fit)."""
    a, b, ridge = 0.0, 0.0, 1e-6
    xc = x - x.mean()
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a + b * xc)))
        w = n * p * (1 - p)
        g = np.array([np.sum(k - n * p) - ridge * a, np.sum((k - n * p) * xc) - ridge * b])
        h = np.array([[w.sum() + ridge, (w * xc).sum()], [(w * xc).sum(), (w * xc * xc).sum() + ridge]])
        step = np.linalg.solve(h, g)
        a, b = a + step[0], b + step[1]
        if np.abs(step).max() < 1e-10:
            break
    return a - b * x.mean(), b


def transition_size(
    ns, successes, trials, *, level: float = 0.5, increasing: bool = True, n_boot: int = 2000, seed: int = 0
) -> TransitionFit:
    r"""The training-set size at which a share crosses ``level``, from a logistic fit in
    ``log N`` across *all* sizes (not a first crossing, which a non-monotone curve fools).

    At each size :math:`N_j` the share is ``successes[j]`` out of ``trials[j]`` (e.g. the pairs
    whose similarity passes a threshold); the fit :math:`\mathrm{logit}\, p = a + b \log N` is
    binomial maximum likelihood and :math:`N^* = \exp((\mathrm{logit}(level) - a)/b)`. Its
    interval: ``n_boot`` refits with each point's successes redrawn from
    :math:`\mathrm{Binomial}(n_j, k_j / n_j)`, percentiles 2.5 and 97.5 of :math:`\log N^*`.
    A share that never moves (all zero, or all full) gives ``n_star = nan``; a perfectly
    separated one is flagged (``separated``).

    Parameters
    ----------
    ns : sizes (at least two distinct). successes, trials : counts per size.
    level : the share that defines the transition, in (0, 1).
    increasing : the share is expected to rise with N (reproducibility) or fall (memorization);
        a fit going the other way gives ``n_star = nan``.
    n_boot, seed : bootstrap draws and their seed.
    """
    sizes = np.asarray(ns, dtype=float)
    if sizes.ndim == 1 and not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError("ns: sizes must be finite and > 0")
    x = np.log(sizes)
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if x.ndim != 1 or not (x.shape == k.shape == n.shape) or np.unique(x).size < 2:
        raise ValueError("ns: need at least two distinct sizes, with one count of successes and trials each")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("successes: must lie between 0 and trials (trials >= 1)")
    if not 0 < level < 1:
        raise ValueError(f"level: must lie in (0, 1), got {level!r}")
    target = math.log(level / (1 - level))
    sign = 1.0 if increasing else -1.0

    def crossing(kk):
        a, b = _logistic_fit(x, kk, n)
        return (target - a) / b if sign * b > 0 else float("nan"), a, b

    if np.all(k == 0) or np.all(k == n):  # the share never moves: no crossing to locate
        return TransitionFit(
            float("nan"), (float("nan"), float("nan")), 0.0, float("nan"), False, np.full(n_boot, np.nan), False
        )
    order = np.argsort(x)
    ks, ns_ = k[order], n[order]
    lo_side, hi_side = (ks == 0, ks == ns_) if increasing else (ks == ns_, ks == 0)
    # perfectly separated: every size below some point at one end, every size above at the other;
    # the fit's slope is then set by the ridge and the bootstrap cannot widen the interval
    separated = any(lo_side[:j].all() and hi_side[j:].all() for j in range(1, x.size))
    log_star, a, b = crossing(k)
    rng = np.random.default_rng(seed)
    draws = np.array([crossing(rng.binomial(n.astype(int), k / n).astype(float))[0] for _ in range(n_boot)])
    finite = draws[np.isfinite(draws)]
    ci = (
        (float(np.exp(np.percentile(finite, 2.5))), float(np.exp(np.percentile(finite, 97.5))))
        if finite.size > n_boot // 2
        else (float("nan"), float("nan"))
    )
    n_star = float(math.exp(log_star)) if math.isfinite(log_star) else float("nan")
    inside = bool(math.isfinite(log_star) and x.min() <= log_star <= x.max())
    return TransitionFit(n_star, ci, float(b), float(a), inside, draws, separated)


def tau_mem_fit(ns, taus, *, level: float = 0.95) -> dict | None:
    r"""The power law :math:`\tau_{mem} = a N^b` fitted to the finite onsets: ordinary least
    squares of :math:`\log \tau` on :math:`\log N` (the exponent fit drawn on the
    phase diagram and used by ``validation/bonnaire_tau_mem.py``; Bonnaire et al. 2025: :math:`\tau_{mem} \propto N`).

    Parameters
    ----------
    ns, taus : sizes and onsets; pairs whose tau is ``None`` or not finite are left out.
    level : the confidence level of the intervals (default 0.95).

    Returns
    -------
    ``None`` when fewer than three sizes have a finite tau (no interval can be formed from two
    points); otherwise a dict with ``b`` (the exponent), ``log_a`` (intercept of
    :math:`\log \tau`), ``b_se``, ``b_ci`` (the t-interval of ``b``, ``n - 2`` degrees of
    freedom), ``n_points`` and ``band(n) -> (tau, low, high)``: the fitted onset at sizes ``n``
    with the pointwise t-interval of the fitted line,
    :math:`\hat y \pm t\, s \sqrt{1/k + (x - \bar x)^2 / S_{xx}}` in log space.
    """
    from scipy import stats

    pts = [(float(n), float(t)) for n, t in zip(ns, taus) if t is not None and math.isfinite(float(t))]
    if len({n for n, _ in pts}) < 3:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([t for _, t in pts])
    k = x.size
    xbar, sxx = x.mean(), float(((x - x.mean()) ** 2).sum())
    b = float(((x - xbar) * (y - y.mean())).sum() / sxx)
    log_a = float(y.mean() - b * xbar)
    resid = y - (log_a + b * x)
    s = math.sqrt(float((resid**2).sum()) / (k - 2))
    q = float(stats.t.ppf(0.5 + level / 2, k - 2))
    b_se = s / math.sqrt(sxx)

    def band(n):
        xn = np.log(np.asarray(n, float))
        yhat = log_a + b * xn
        half = q * s * np.sqrt(1.0 / k + (xn - xbar) ** 2 / sxx)
        return np.exp(yhat), np.exp(yhat - half), np.exp(yhat + half)

    return dict(b=b, log_a=log_a, b_se=b_se, b_ci=(b - q * b_se, b + q * b_se), n_points=k, level=level, band=band)
