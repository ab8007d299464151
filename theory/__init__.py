r"""Symbolic derivations (sympy) of every closed form and prediction of gaussdiff.

Each result has a stable label that the library's docstrings cite, e.g. ``(G2)`` in
``GaussianDenoiser``. For a label ``X``, ``theory.<module>.check_X()`` returns the simplified
difference between the two sides of the derivation (0, a zero matrix, or a tuple/dict of
those); ``tests/test_theory.py`` asserts that every check is exactly zero and compares each
formula numerically, in float64, with the gaussdiff function that implements it.

``LABELS`` maps every label to ``(module, title, library objects)``; :func:`check` runs one
check and :func:`check_all` all of them. See ``theory/README.md`` for the index.

Modules: :mod:`theory.conventions` (C1-C6), :mod:`theory.tweedie` (T1-T3),
:mod:`theory.gaussian` (G1-G5), :mod:`theory.mixture` (M1, M2, E1-E3),
:mod:`theory.regimes` (R1-R3), :mod:`theory.discretization` (P1-P5),
:mod:`theory.inverse` (I1-I4, CFG1-CFG3).
"""

from __future__ import annotations

import importlib

from ._sym import check_gaussian_integral, is_zero, simplify_difference

__all__ = ["LABELS", "check", "check_all", "is_zero", "simplify_difference", "check_gaussian_integral"]

LABELS = {
    "C1": (
        "conventions",
        "noising convention x = s(t)(x0 + sigma(t) n) for EDM/VP/DDPM/OU/RF",
        "gaussdiff.schedules: EDM, VP, VPDiscrete, OU, RectifiedFlow (s, sigma)",
    ),
    "C2": (
        "conventions",
        "score <-> denoiser, also in the scaled variable",
        "score_from_denoiser, denoiser_from_score, Denoiser.score",
    ),
    "C3": (
        "conventions",
        "eps <-> denoiser; eps = -sqrt(1 - alpha_bar) grad log p_t",
        "eps_from_denoiser, denoiser_from_eps",
    ),
    "C4": (
        "conventions",
        "rectified-flow velocity <-> denoiser; dx_t/dt = v is the PF-ODE",
        "velocity_from_denoiser, denoiser_from_velocity",
    ),
    "C5": (
        "conventions",
        "scaled-variable PF-ODE coefficients = the sigma form",
        "Schedule.ode_coefficients, sample_euler/sample_heun(schedule=, ts=)",
    ),
    "C6": ("conventions", "schedule derivatives and inverses", "Schedule.ds, Schedule.dsigma, Schedule.t_of_sigma"),
    "T1": ("tweedie", "Tweedie: grad log p_sigma = (D - x) / sigma^2", "Denoiser.score, score_from_denoiser"),
    "T2": ("tweedie", "Tweedie for a general Gaussian convolution: E[x0|x] = x + C grad log p", "-"),
    "T3": (
        "tweedie",
        "second-order Tweedie: dD/dx = Cov[x0|x] / sigma^2",
        "GaussianDenoiser.jacobian, EmpiricalDenoiser.jacobian",
    ),
    "G1": ("gaussian", "Gaussian marginal p_sigma = N(mu, Sigma + sigma^2 I)", "GaussianDenoiser.log_density"),
    "G2": ("gaussian", "Gaussian denoiser by completing the square", "GaussianDenoiser.__call__"),
    "G3": (
        "gaussian",
        "Gaussian score, Jacobian and effective dimension",
        "GaussianDenoiser.score, .jacobian, .effective_dim",
    ),
    "G4": ("gaussian", "exact Gaussian probability flow", "GaussianDenoiser.flow"),
    "G5": ("gaussian", "moments of the exact flow's output", "GaussianDenoiser.flow_output_moments"),
    "M1": ("mixture", "mixture responsibilities", "GaussianMixtureDenoiser.responsibilities"),
    "M2": ("mixture", "mixture denoiser", "GaussianMixtureDenoiser.__call__"),
    "E1": ("mixture", "empirical log density (h -> 0 limit)", "EmpiricalDenoiser.log_density"),
    "E2": (
        "mixture",
        "empirical denoiser (h -> 0 limit of the smoothed mixture)",
        "EmpiricalDenoiser.__call__, GaussianMixtureDenoiser.smoothed_empirical",
    ),
    "E3": ("mixture", "empirical Jacobian = posterior covariance / sigma^2", "EmpiricalDenoiser.jacobian"),
    "R1": ("regimes", "speciation time t_S = log(Lambda) / 2", "gaussdiff.speciation_time"),
    "R2": ("regimes", "exact symmetry breaking of the two-cluster model", "gaussdiff.symmetry_breaking_time"),
    "R3": ("regimes", "collapse time from the excess-entropy (REM) condition", "gaussdiff.collapse_time"),
    "P1": ("discretization", "Euler one-step factor on a Gaussian", "sample_euler; gaussdiff.gaussian_sampler_factors"),
    "P2": ("discretization", "Heun one-step factor on a Gaussian", "sample_heun; gaussdiff.gaussian_sampler_factors"),
    "P3": ("discretization", "one-step errors of Euler (h^2) and Heun (h^3)", "-"),
    "P4": ("discretization", "output variance of a whole run", "gaussdiff.gaussian_sampler_output"),
    "P5": ("discretization", "W2 between commuting Gaussians; sampler's W2 error", "gaussdiff.gaussian_sampler_w2"),
    "I1": (
        "inverse",
        "Gaussian posterior given y = A x0 + eta (gain = precision form)",
        "gaussdiff.gaussian_posterior",
    ),
    "I2": ("inverse", "posterior denoiser = stacked observation H = [I; A]", "gaussdiff.PosteriorDenoiser"),
    "I3": (
        "inverse",
        "mixture posterior: evidence and factorised joint evidence",
        "gaussdiff.mixture_posterior, PosteriorDenoiser",
    ),
    "I4": (
        "inverse",
        "empirical posterior weights (l -> 0 limit of I3)",
        "gaussdiff.empirical_posterior, PosteriorDenoiser",
    ),
    "CFG1": ("inverse", "guided Gaussian flow factor (commuting covariances)", "gaussdiff.guided_gaussian_flow"),
    "CFG2": ("inverse", "guided Gaussian flow offset (variation of constants)", "gaussdiff.guided_gaussian_flow"),
    "CFG3": ("inverse", "output law of the guided Gaussian flow", "gaussdiff.guided_gaussian_output"),
}


def check(label: str):
    """Run ``check_<label>()`` of its module; the result is zero when the derivation holds."""
    if label not in LABELS:
        raise ValueError(f"label: unknown {label!r}; known: {', '.join(LABELS)}")
    mod = importlib.import_module(f"theory.{LABELS[label][0]}")
    return getattr(mod, f"check_{label}")()


def check_all() -> dict:
    """``{label: is_zero(check(label))}`` for every label."""
    return {label: is_zero(check(label)) for label in LABELS}
