r"""Class-conditional closed forms and classifier-free guidance.

A label changes the prior, not the machinery: the class-conditional denoiser
:math:`D(\hat x, \sigma, c) = E[x_0 \mid \hat x, c]` is the closed-form denoiser of class ``c``'s
data (empirical, Gaussian or Gaussian-mixture), and classifier-free guidance (Ho & Salimans 2022,
eq. (6) written for denoisers) combines any pair of denoisers,

.. math:: D_w(\hat x, \sigma) = D(\hat x, \sigma) + w\,\big(D(\hat x, \sigma, c) - D(\hat x, \sigma)\big)

(``w = 0``: unconditional, ``w = 1``: conditional, ``w > 1``: guided beyond the class).

For Gaussian class-conditionals the guided probability-flow ODE is linear, so its output law is
Gaussian and known exactly (theory :mod:`theory.inverse`, labels (CFG1)-(CFG3)):
:func:`guided_gaussian_flow` gives the affine map and :func:`guided_gaussian_output` the output
mean and covariance.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from ._checks import as_tensor, check_callable, check_data, check_finite, check_int, check_labels, check_positive
from .denoisers import GaussianDenoiser, GaussianMixtureDenoiser, _eigh_psd
from .empirical import EmpiricalDenoiser

__all__ = [
    "ClassConditionalDenoiser",
    "GuidedDenoiser",
    "classifier_free_guidance",
    "guided_gaussian_flow",
    "guided_gaussian_output",
]

KINDS = ("empirical", "gaussian", "mixture")


class ClassConditionalDenoiser:
    r"""``D(x, sigma, label)``: one closed-form denoiser per class, plus an unconditional one
    (``label=None``).

    Parameters
    ----------
    class_denoisers : sequence of denoisers ``D_c(x, sigma)``, one per class ``0..C-1``, sharing
        event shape, dtype and device.
    unconditional : the denoiser used for ``label=None`` (e.g. the marginal of the classes).

    Notes
    -----
    Build one from labelled data with :meth:`from_data`.
    """

    def __init__(self, class_denoisers: Sequence[Callable], unconditional: Callable):
        if len(class_denoisers) < 1:
            raise ValueError("class_denoisers: need at least one class")
        for c, den in enumerate(class_denoisers):
            check_callable(den, f"class_denoisers[{c}]")
        check_callable(unconditional, "unconditional")
        self.class_denoisers = list(class_denoisers)
        self.unconditional = unconditional
        first = self.class_denoisers[0]
        self.event_shape = tuple(getattr(first, "event_shape", ()))
        self.dtype = getattr(first, "dtype", None)
        self.device = getattr(first, "device", None)
        self.class_weights = None

    @property
    def num_classes(self) -> int:
        return len(self.class_denoisers)

    @classmethod
    def from_data(
        cls,
        data,
        labels,
        *,
        kind: str = "empirical",
        n_components: int = 2,
        seed: int = 0,
        unconditional: str | None = None,
    ) -> "ClassConditionalDenoiser":
        r"""The class-conditional closed forms of labelled data.

        Parameters
        ----------
        data : (N, *event_shape).  labels : (N,) integers ``0..C-1`` (every class present).
        kind : ``"empirical"`` (E2) per class; ``"gaussian"`` (G2) per class
            (``GaussianDenoiser.fit``); ``"mixture"``: a full-covariance Gaussian mixture of
            ``n_components`` fitted per class by EM (scikit-learn, ``random_state=seed``,
            ``reg_covar=1e-6``), (M2).
        unconditional : ``"marginal"``: the exact marginal of the class models (the empirical
            denoiser of all data; the mixture of the class mixtures / class Gaussians weighted by
            class frequency); ``"gaussian"``: the Gaussian fitted to all data (then the guided
            flow of Gaussian classes is linear, see :func:`guided_gaussian_flow`). Default:
            ``"gaussian"`` for ``kind="gaussian"``, ``"marginal"`` otherwise.
        """
        data = check_data(data, "data")
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        if labels is None:
            raise ValueError("labels: class-conditional denoisers need labels")
        lab = _integer_labels(labels).reshape(-1)
        if lab.shape[0] != data.shape[0]:
            raise ValueError(f"labels: expected {data.shape[0]} labels to match data, got {lab.shape[0]}")
        if int(lab.min()) < 0:
            raise ValueError("labels: must be >= 0")
        C = int(lab.max()) + 1
        counts = torch.bincount(lab, minlength=C)
        if bool((counts == 0).any()):
            raise ValueError(f"labels: classes {torch.nonzero(counts == 0).reshape(-1).tolist()} have no data")
        unconditional = unconditional or ("gaussian" if kind == "gaussian" else "marginal")
        if unconditional not in ("marginal", "gaussian"):
            raise ValueError(f"unconditional: expected 'marginal' or 'gaussian', got {unconditional!r}")
        lab = lab.to(data.device)
        parts = [data[lab == c] for c in range(C)]
        freq = (counts.to(torch.float64) / counts.sum()).to(data.dtype)
        comps = None
        if kind == "empirical":
            dens = [EmpiricalDenoiser(p) for p in parts]
        elif kind == "gaussian":
            dens = [GaussianDenoiser.fit(p) for p in parts]
            comps = (freq, torch.stack([g.mean.reshape(-1) for g in dens]), torch.stack([g.cov for g in dens]))
        else:
            dens, ws, ms, cs = [], [], [], []
            for c, p in enumerate(parts):
                w, m, S = _fit_gmm(p.reshape(p.shape[0], -1), n_components, seed)
                dens.append(GaussianMixtureDenoiser(w, m.reshape(-1, *data.shape[1:]), S, cov_type="full"))
                ws.append(w * freq[c]), ms.append(m), cs.append(S)
            comps = (torch.cat(ws), torch.cat(ms), torch.cat(cs))
        if unconditional == "gaussian":
            unc = GaussianDenoiser.fit(data)
        elif kind == "empirical":
            unc = EmpiricalDenoiser(data)
        else:
            w, m, S = comps
            unc = GaussianMixtureDenoiser(w / w.sum(), m.reshape(-1, *data.shape[1:]), S, cov_type="full")
        out = cls(dens, unc)
        out.class_weights = freq
        out.kind = kind
        return out

    def __call__(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """``D(x, sigma, label)``; ``label`` an int, a ``(B,)`` integer tensor, or None
        (unconditional)."""
        if label is None:
            return self.unconditional(x, sigma)
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ValueError("x: expected a (B, *event_shape) tensor")
        lab = check_labels(label, self.num_classes, x.shape[0])
        if isinstance(sigma, torch.Tensor) and sigma.ndim > 0 and tuple(sigma.shape) not in ((1,), (x.shape[0],)):
            raise ValueError(f"sigma: expected a float or a ({x.shape[0]},) tensor, got shape {tuple(sigma.shape)}")
        out = torch.empty_like(x)
        sig = sigma if isinstance(sigma, torch.Tensor) and sigma.ndim == 1 and sigma.shape[0] > 1 else None
        for c in torch.unique(lab).tolist():
            rows = torch.nonzero(lab == c).reshape(-1).to(x.device)
            s = sigma if sig is None else sig[rows]
            out[rows] = self.class_denoisers[c](x[rows], s)
        return out

    def conditioned(self, label) -> Callable:
        """The denoiser ``D(., ., label)`` of a fixed label (int or ``(B,)`` tensor)."""
        check_labels(label, self.num_classes, None if np.ndim(label) else 1)
        return lambda x, sigma: self(x, sigma, label)


def _integer_labels(labels) -> torch.Tensor:
    """Class labels as int64, refusing what a cast would silently change: non-integer values
    (2.5 -> 2), NaN, bools, complex values and strings."""
    try:
        t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    except (TypeError, ValueError, RuntimeError):
        t = None
    bad = t is None or t.dtype == torch.bool or t.is_complex() or t.is_meta
    if not bad and t.is_floating_point():
        bad = not bool((t == t.round()).all())
    if bad:
        what = repr(labels) if t is None else ("non-integer values" if t.is_floating_point() else f"{t.dtype} values")
        raise ValueError(f"labels: expected integer class labels, got {what}")
    return t.to(torch.int64)


def _fit_gmm(X: torch.Tensor, k: int, seed: int):
    from sklearn.mixture import GaussianMixture

    check_int(k, "n_components")
    k = min(int(k), X.shape[0])
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=int(seed))
    gm.fit(X.detach().cpu().to(torch.float64).numpy())
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=X.dtype, device=X.device)  # noqa: E731
    w = t(gm.weights_)
    return w / w.sum(), t(gm.means_), t(gm.covariances_)


class GuidedDenoiser:
    r"""Classifier-free guidance of any pair of denoisers:
    :math:`D_w = D_u + w\,(D_c - D_u)` (``w`` a float).

    Parameters
    ----------
    unconditional, conditional : callables ``D(x, sigma)``.
    w : guidance weight (0: ``unconditional``, 1: ``conditional``).
    """

    def __init__(self, unconditional: Callable, conditional: Callable, w: float):
        if not callable(unconditional) or not callable(conditional):
            raise ValueError("unconditional, conditional: expected two callables D(x, sigma)")
        self.w = _check_w(w)
        self.unconditional, self.conditional = unconditional, conditional

    def __call__(self, x, sigma):
        du = self.unconditional(x, sigma)
        return du + self.w * (self.conditional(x, sigma) - du)


def _check_w(w) -> float:
    """A guidance weight: a finite number (a bool is refused)."""
    try:
        v = float(w)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"w: expected a number, got {w!r}") from exc
    if isinstance(w, (bool, np.bool_)):
        raise ValueError(f"w: expected a number, got {w!r}")
    if not math.isfinite(v):
        raise ValueError(f"w: must be finite, got {w!r}")
    return v


def classifier_free_guidance(model, label, w: float, *, unconditional: Callable | None = None) -> GuidedDenoiser:
    r"""Guide a class-conditional model towards ``label`` with weight ``w``:
    ``D_w(x, sigma) = D(x, sigma) + w (D(x, sigma, label) - D(x, sigma))``.

    ``model`` must be class-conditional (a :class:`ClassConditionalDenoiser`, or any object with
    ``num_classes`` whose ``__call__`` takes ``label=``); ``unconditional`` defaults to
    ``model(x, sigma, label=None)``. To guide with an arbitrary pair of denoisers use
    :class:`GuidedDenoiser` directly."""
    if not (callable(model) and isinstance(getattr(model, "num_classes", None), int)):
        raise ValueError(
            f"model: {type(model).__name__} is unconditional (no labels); classifier-free "
            "guidance needs a class-conditional denoiser D(x, sigma, label)"
        )
    check_labels(label, model.num_classes, None if np.ndim(label) else 1)
    unc = unconditional if unconditional is not None else (lambda x, sigma: model(x, sigma, None))
    return GuidedDenoiser(unc, lambda x, sigma: model(x, sigma, label), w)


# =============================================================================================
# The exact guided Gaussian flow
# =============================================================================================


def _gauss_parts(g, name):
    if not isinstance(g, GaussianDenoiser):
        raise ValueError(f"{name}: expected a GaussianDenoiser, got {type(g).__name__}")
    return g.mean.reshape(-1).to(torch.float64).cpu(), g.cov.to(torch.float64).cpu()


def _joint_eigenbasis(Su, Sc, tol):
    """A shared orthonormal eigenbasis of commuting symmetric matrices, or None."""
    scale = max(float(Su.abs().max()), float(Sc.abs().max()), 1e-300)
    if float((Su @ Sc - Sc @ Su).abs().max()) > tol * scale**2:
        return None
    # a generic combination separates the eigenspaces of both
    _, U = torch.linalg.eigh(Su + math.pi * Sc)
    lu = torch.einsum("dk,de,ek->k", U, Su, U)
    lc = torch.einsum("dk,de,ek->k", U, Sc, U)
    if (
        float((U @ torch.diag(lu) @ U.T - Su).abs().max()) > 1e3 * tol * scale
        or float((U @ torch.diag(lc) @ U.T - Sc).abs().max()) > 1e3 * tol * scale
    ):
        return None
    return U, lu.clamp_min(0), lc.clamp_min(0)


def guided_gaussian_flow(
    conditional: GaussianDenoiser,
    unconditional: GaussianDenoiser,
    w: float,
    sigma_from: float,
    sigma_to: float = 0.0,
    *,
    method: str = "auto",
    rtol: float = 1e-12,
):
    r"""The exact probability-flow map of the guided Gaussian denoiser
    :math:`D_w = D_u + w(D_c - D_u)` from ``sigma_from`` to ``sigma_to``: ``x -> Phi x + c``.

    The ODE :math:`d\hat x/d\sigma = (\hat x - D_w)/\sigma` is linear. When :math:`\Sigma_u` and
    :math:`\Sigma_c` commute (shared eigenvectors, eigenvalues :math:`l_u, l_c`) it is solved in
    closed form per eigen-coordinate (CFG1, CFG2):

    .. math:: \Phi = \Big(\frac{l_u+\sigma_1^2}{l_u+\sigma_0^2}\Big)^{\frac{1-w}{2}}
                     \Big(\frac{l_c+\sigma_1^2}{l_c+\sigma_0^2}\Big)^{\frac{w}{2}},\qquad
              \hat x_1 = \mu_c + \Phi(\hat x_0 - \mu_c) - (1-w)(\mu_u-\mu_c)\,J,

    :math:`J = \int_{\sigma_0}^{\sigma_1}\Phi(\sigma_1, s)\,\frac{s}{l_u+s^2}\,ds`, which is
    :math:`\Phi - 1` when :math:`l_u = l_c` and otherwise a one-dimensional integral (an
    incomplete beta function) evaluated by adaptive quadrature to ``rtol``. Otherwise
    (``method="ode"``, or non-commuting covariances with ``"auto"``) the matrix ODE
    :math:`d\Phi/d\sigma = M\Phi`, :math:`dc/d\sigma = Mc + b` is integrated with DOP853 at
    ``rtol`` (it is linear but has no closed form when the matrices do not commute).

    Returns
    -------
    Phi : (d, d), c : (d,) float64, with ``flow(x) = x @ Phi.T + c``.
    """
    from scipy.integrate import quad, solve_ivp

    mu_c, Sc = _gauss_parts(conditional, "conditional")
    mu_u, Su = _gauss_parts(unconditional, "unconditional")
    if mu_c.shape != mu_u.shape:
        raise ValueError("unconditional: has a different dimension from conditional")
    w = _check_w(w)
    s0 = check_positive(sigma_from, "sigma_from")
    s1 = check_positive(sigma_to, "sigma_to", allow_zero=True)
    if method not in ("auto", "closed", "ode"):
        raise ValueError(f"method: expected 'auto', 'closed' or 'ode', got {method!r}")
    d = mu_c.shape[0]
    basis = None if method == "ode" else _joint_eigenbasis(Su, Sc, 1e-10)
    if basis is None and method == "closed":
        raise ValueError("conditional: its covariance does not commute with the unconditional one; use method='ode'")
    if basis is not None:
        U, lu, lc = basis
        phi = ((lu + s1**2) / (lu + s0**2)) ** ((1 - w) / 2) * ((lc + s1**2) / (lc + s0**2)) ** (w / 2)
        J = torch.zeros(d, dtype=torch.float64)
        dmu = U.T @ (mu_u - mu_c)
        for k in range(d):
            a, b = float(lu[k]), float(lc[k])
            if abs(a - b) <= 1e-14 * max(a, b, 1e-300):
                J[k] = phi[k] - 1  # (CFG2) equal eigenvalues
                continue
            if float(dmu[k]) == 0 or w == 1:
                continue  # the term is multiplied by 0
            if s1 == 0 and a == 0:
                raise ValueError(
                    "sigma_to: must be > 0 when the unconditional covariance is singular in a "
                    "direction where the class covariance is not"
                )
            F = lambda s: (a + s * s) ** ((1 - w) / 2) * (b + s * s) ** (w / 2)  # noqa: E731
            f1 = F(s1)
            val, _ = quad(lambda s: f1 / F(s) * s / (a + s * s), s0, s1, epsabs=0, epsrel=rtol, limit=200)
            J[k] = val
        Phi = (U * phi) @ U.T
        c = mu_c - Phi @ mu_c - (1 - w) * (U @ (J * dmu))
        return Phi, c

    I = torch.eye(d, dtype=torch.float64)

    def rhs(s, z):
        Mu = torch.linalg.inv(Su + s * s * I)
        Mc = torch.linalg.inv(Sc + s * s * I)
        M = s * ((1 - w) * Mu + w * Mc)
        b = -s * ((1 - w) * Mu @ mu_u + w * Mc @ mu_c)
        P = torch.from_numpy(z[: d * d]).reshape(d, d)
        cc = torch.from_numpy(z[d * d :])
        return torch.cat([(M @ P).reshape(-1), M @ cc + b]).numpy()

    z0 = torch.cat([I.reshape(-1), torch.zeros(d, dtype=torch.float64)]).numpy()
    sol = solve_ivp(rhs, (s0, s1), z0, method="DOP853", rtol=rtol, atol=rtol * 1e-2)
    if not sol.success:  # pragma: no cover
        raise RuntimeError(f"guided_gaussian_flow: the ODE solver failed: {sol.message}")
    zf = torch.from_numpy(sol.y[:, -1])
    return zf[: d * d].reshape(d, d), zf[d * d :]


def guided_gaussian_output(
    conditional: GaussianDenoiser,
    unconditional: GaussianDenoiser,
    w: float,
    sigma_from: float,
    sigma_to: float = 0.0,
    *,
    start_mean=None,
    start_cov=None,
    method: str = "auto",
):
    r"""(CFG3) Exact output law of the guided Gaussian flow started from
    :math:`N(m_0, V_0)` at ``sigma_from`` (default :math:`m_0 = 0`, :math:`V_0 = \sigma_0^2 I`, the
    usual start): :math:`N(\Phi m_0 + c,\; \Phi V_0 \Phi^T)` with ``(Phi, c)`` of
    :func:`guided_gaussian_flow`. Returns ``(mean (d,), cov (d, d))`` float64."""
    Phi, c = guided_gaussian_flow(conditional, unconditional, w, sigma_from, sigma_to, method=method)
    d = c.shape[0]
    m0 = (
        torch.zeros(d, dtype=torch.float64)
        if start_mean is None
        else check_finite(as_tensor(start_mean, "start_mean", dtype=torch.float64).reshape(-1).cpu(), "start_mean")
    )
    V0 = (
        float(sigma_from) ** 2 * torch.eye(d, dtype=torch.float64)
        if start_cov is None
        else check_finite(as_tensor(start_cov, "start_cov", dtype=torch.float64).cpu(), "start_cov")
    )
    if m0.shape != (d,) or V0.shape != (d, d):
        raise ValueError(f"start_mean, start_cov: expected shapes ({d},) and ({d}, {d})")
    if start_cov is not None:
        _eigh_psd(V0, "start_cov")  # a covariance: symmetric positive semi-definite
    cov = Phi @ V0 @ Phi.T
    return Phi @ m0 + c, 0.5 * (cov + cov.T)
