"""gaussdiff.inverse: operators against their dense matrices, every exact posterior against an
independent route (precision form, brute-force Bayes on a grid, the stacked observation, Monte
Carlo), the posterior denoiser's flow against the posterior covariance, the approximate samplers'
contracts, and bad input. float64 throughout."""

import math

import numpy as np
import pytest
import torch

import gaussdiff as gd
from gaussdiff import inverse as inv

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def spd(g, d, floor=0.1):
    L = torch.randn(d, d, generator=g, dtype=F64)
    return L @ L.T / d + floor * torch.eye(d, dtype=F64)


def gaussian_problem(g, d=5, m=3, B=4, sy=0.3):
    prior = gd.GaussianDenoiser(torch.randn(d, generator=g, dtype=F64), spd(g, d))
    A = torch.randn(m, d, generator=g, dtype=F64)
    x0 = prior.sample(B, generator=g)
    y = x0 @ A.T + sy * torch.randn(B, m, generator=g, dtype=F64)
    return prior, A, y, sy


def mixture_2d(g, K=3):
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)[:K]
    covs = torch.stack([spd(g, 2, 0.05) * 0.5 for _ in range(K)])
    return gd.GaussianMixtureDenoiser(w / w.sum(), 2 * torch.randn(K, 2, generator=g, dtype=F64), covs)


# =============================================================================================
# Operators
# =============================================================================================

OPERATORS = ["inpaint:0.4", "blur:1.3", "down:2", "project:10", "identity"]


@pytest.mark.parametrize("spec", OPERATORS)
def test_operator_matches_dense_matrix(spec, gen):
    shape = (2, 4, 6) if spec != "project:10" else (24,)
    op = inv.make_operator(spec, shape, seed=3)
    M = op.matrix()
    x = torch.randn(5, *shape, generator=gen, dtype=F64)
    yv = torch.randn(5, op.out_dim, generator=gen, dtype=F64)
    assert rel(op(x), x.reshape(5, -1) @ M.T) < 1e-13
    assert rel(op.adjoint(yv), yv @ M) < 1e-13
    # <A x, y> = <x, A^T y>
    assert abs(float((op(x) * yv).sum() - (x.reshape(5, -1) * op.adjoint(yv)).sum())) < 1e-11
    U, s, V = op.svd()
    assert rel((U * s) @ V.T, M) < 1e-12
    r = s.shape[0]
    assert rel(U.T @ U, torch.eye(r, dtype=F64)) < 1e-12 and rel(V.T @ V, torch.eye(r, dtype=F64)) < 1e-12
    assert bool((s > 0).all())


def test_blur_matrix_is_the_circular_convolution():
    """Independent route: blur a unit impulse by direct summation of the wrapped Gaussian."""
    op = inv.BlurOperator((1, 5, 7), 0.8)
    r = math.ceil(3 * 0.8)
    u = np.arange(-r, r + 1)
    k = np.exp(-(u[:, None] ** 2 + u[None] ** 2) / (2 * 0.8**2))
    k /= k.sum()
    img = np.zeros((5, 7))
    img[1, 2] = 1.0
    want = np.zeros((5, 7))
    for a, du in enumerate(u):
        for b, dv in enumerate(u):
            want[(1 + du) % 5, (2 + dv) % 7] += k[a, b]
    got = op(torch.from_numpy(img).reshape(1, -1)).reshape(5, 7).numpy()
    assert np.max(np.abs(got - want)) < 1e-15
    assert rel(op.matrix(), op.matrix().T) < 1e-15  # symmetric


def test_downsample_and_inpaint_structure():
    op = inv.DownsampleOperator((1, 4, 4), 2)
    M = op.matrix()
    assert rel(M @ M.T, torch.eye(4, dtype=F64) / 4) < 1e-15
    ip = inv.make_operator("inpaint:0.5", (3, 4, 4), seed=0)
    mask = ip.mask.reshape(3, 16)
    assert bool((mask[0] == mask[1]).all()) and int(mask[0].sum()) == 8  # same pixels in every channel


# =============================================================================================
# Exact posteriors
# =============================================================================================


def test_gaussian_posterior_equals_precision_form(gen):
    prior, A, y, sy = gaussian_problem(gen)
    means, C = gd.gaussian_posterior(prior.mean, prior.cov, A, y, sy)
    P = torch.linalg.inv(prior.cov) + A.T @ A / sy**2  # (I1) precision form
    C2 = torch.linalg.inv(P)
    m2 = (C2 @ (torch.linalg.solve(prior.cov, prior.mean)[:, None] + A.T @ y.T / sy**2)).T
    assert rel(C, C2) < 1e-12 and rel(means, m2) < 1e-12
    assert means.shape == (4, 5) and C.shape == (5, 5)
    # an operator object gives the same answer as its dense matrix
    op = inv.random_projection(5, 3, generator=torch.Generator().manual_seed(0))
    a1 = gd.gaussian_posterior(prior.mean, prior.cov, op, y, sy)
    a2 = gd.gaussian_posterior(prior.mean, prior.cov, op.matrix(), y, sy)
    assert rel(a1[0], a2[0]) < 1e-14 and rel(a1[1], a2[1]) < 1e-14


def test_gaussian_posterior_noise_free_limit(gen):
    """sigma_y = 0 is allowed: the posterior reproduces y exactly (A m_y = y, A C = 0)."""
    prior, A, y, _ = gaussian_problem(gen)
    means, C = gd.gaussian_posterior(prior.mean, prior.cov, A, y, 0.0)
    assert rel(means @ A.T, y) < 1e-12
    assert float((A @ C).abs().max()) < 1e-12


def _grid_1d(lo, hi, n=20001):
    t = torch.linspace(lo, hi, n, dtype=F64)
    return t, t[1] - t[0]


def test_posterior_1d_brute_force_bayes():
    """1-D Gaussian and mixture priors: posterior mean and variance, and the posterior denoiser,
    against Bayes' rule summed on a fine grid (trapezoid on a Gaussian integrand is accurate to
    round-off, hence 1e-10)."""
    a, sy, yv, xv, s = 0.7, 0.4, 0.9, -0.3, 0.6
    t, h = _grid_1d(-15, 15)
    A = torch.tensor([[a]], dtype=F64)
    y = torch.tensor([[yv]], dtype=F64)
    # Gaussian prior
    mu, lam = 0.5, 1.7
    post = torch.exp(-((t - mu) ** 2) / (2 * lam) - (yv - a * t) ** 2 / (2 * sy**2))
    Z = post.sum() * h
    m_b = (t * post).sum() * h / Z
    v_b = ((t - m_b) ** 2 * post).sum() * h / Z
    m, C = gd.gaussian_posterior(torch.tensor([mu], dtype=F64), torch.tensor([[lam]], dtype=F64), A, y, sy)
    assert abs(float(m) - float(m_b)) < 1e-10 and abs(float(C) - float(v_b)) < 1e-10
    joint = post * torch.exp(-((xv - t) ** 2) / (2 * s**2))
    D_b = (t * joint).sum() / joint.sum()
    pdn = gd.PosteriorDenoiser(
        gd.GaussianDenoiser(torch.tensor([mu], dtype=F64), torch.tensor([[lam]], dtype=F64)), A, y, sy
    )
    assert abs(float(pdn(torch.tensor([[xv]], dtype=F64), s)) - float(D_b)) < 1e-10
    # mixture prior
    pis, mus, ls = [0.3, 0.7], [-1.0, 1.5], [0.2, 0.5]
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor(pis, dtype=F64),
        torch.tensor(mus, dtype=F64)[:, None],
        torch.tensor(ls, dtype=F64)[:, None],
        cov_type="diag",
    )
    prior_pdf = sum(
        p * torch.exp(-((t - m_) ** 2) / (2 * l_)) / math.sqrt(2 * math.pi * l_) for p, m_, l_ in zip(pis, mus, ls)
    )
    post = prior_pdf * torch.exp(-((yv - a * t) ** 2) / (2 * sy**2))
    pdm = gd.PosteriorDenoiser(mix, A, y, sy)
    m_b = (t * post).sum() / post.sum()
    assert abs(float(pdm.posterior_mean()) - float(m_b)) < 1e-10
    joint = post * torch.exp(-((xv - t) ** 2) / (2 * s**2))
    assert abs(float(pdm(torch.tensor([[xv]], dtype=F64), s)) - float((t * joint).sum() / joint.sum())) < 1e-10
    # posterior weights of the components: mass of each component's posterior on the grid
    for k in range(2):
        comp = (
            pis[k]
            * torch.exp(-((t - mus[k]) ** 2) / (2 * ls[k]))
            / math.sqrt(2 * math.pi * ls[k])
            * torch.exp(-((yv - a * t) ** 2) / (2 * sy**2))
        )
        assert abs(float(pdm.weights[0, k]) - float(comp.sum() / post.sum())) < 1e-10


def test_mixture_posterior_denoiser_2d_brute_force(gen):
    """2-D mixture prior, 1-D measurement: E[x0 | x, y] by Bayes' rule on a 2-D grid."""
    mix = mixture_2d(gen)
    A = torch.tensor([[0.8, -0.5]], dtype=F64)
    y = torch.tensor([[0.4], [-1.0]], dtype=F64)
    x = torch.tensor([[0.3, -0.2], [1.0, 2.0]], dtype=F64)
    s, sy = 0.7, 0.35
    t = torch.linspace(-12, 12, 1201, dtype=F64)
    G = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    logp = mix.log_density(G, 1e-9)  # the prior itself (sigma -> 0)
    pdn = gd.PosteriorDenoiser(mix, A, y, sy)
    got = pdn(x, s)
    for b in range(2):
        lw = logp - (y[b, 0] - G @ A[0]) ** 2 / (2 * sy**2) - ((x[b] - G) ** 2).sum(1) / (2 * s**2)
        wts = torch.softmax(lw, 0)
        assert float((wts @ G - got[b]).abs().max()) < 1e-9


def test_posterior_denoiser_equals_stacked_observation(gen):
    """(I2) the Gaussian posterior denoiser against the stacked observation H = [I; A] with noise
    diag(sigma^2 I, sigma_y^2 I), also with a per-row sigma."""
    prior, A, y, sy = gaussian_problem(gen)
    d, m = 5, 3
    pdn = gd.PosteriorDenoiser(prior, A, y, sy)
    x = 2 * torch.randn(4, d, generator=gen, dtype=F64)
    sig = torch.tensor([0.01, 0.3, 2.0, 50.0], dtype=F64)
    got = pdn(x, sig)
    H = torch.cat([torch.eye(d, dtype=F64), A])
    for b in range(4):
        R = torch.diag(torch.cat([torch.full((d,), float(sig[b]) ** 2, dtype=F64), torch.full((m,), sy**2, dtype=F64)]))
        K = prior.cov @ H.T @ torch.linalg.inv(H @ prior.cov @ H.T + R)
        want = prior.mean + K @ (torch.cat([x[b], y[b]]) - H @ prior.mean)
        assert rel(got[b], want) < 1e-10
    # a mixture with one component is the Gaussian case
    one = gd.GaussianMixtureDenoiser(torch.ones(1, dtype=F64), prior.mean[None], prior.cov[None])
    assert rel(gd.PosteriorDenoiser(one, A, y, sy)(x, sig), got) < 1e-12


def test_empirical_posterior_denoiser(gen):
    """(I4) against the direct softmax over training points with exact differences, and the
    h -> 0 limit of the smoothed mixture (error O(h^2))."""
    data = torch.randn(30, 2, 2, generator=gen, dtype=F64)
    A = torch.randn(2, 4, generator=gen, dtype=F64)
    y = torch.randn(3, 2, generator=gen, dtype=F64)
    x = torch.randn(3, 2, 2, generator=gen, dtype=F64)
    s, sy = 0.4, 0.5
    pdn = gd.PosteriorDenoiser(gd.EmpiricalDenoiser(data), A, y, sy)
    X = data.reshape(30, -1)
    for b in range(3):
        lw = -((y[b] - X @ A.T) ** 2).sum(1) / (2 * sy**2) - ((x[b].reshape(-1) - X) ** 2).sum(1) / (2 * s**2)
        assert rel(pdn(x, s)[b].reshape(-1), torch.softmax(lw, 0) @ X) < 1e-12
    w = gd.empirical_posterior(data, A, y, sy)
    assert rel(w, pdn.weights) < 1e-15 and rel(w.sum(1), torch.ones(3, dtype=F64)) < 1e-14
    errs = []
    for h in (1e-2, 5e-3):
        sm = gd.GaussianMixtureDenoiser.smoothed_empirical(data, h)
        errs.append(float((gd.PosteriorDenoiser(sm, A, y, sy)(x, s) - pdn(x, s)).abs().max()))
    assert errs[1] < errs[0] / 3 and errs[0] < 1e-2  # O(h^2): ratio ~4


def test_posterior_denoiser_monte_carlo(gen):
    """Mixture prior in 3-D: E[x0 | x, y] by self-normalised importance sampling from the prior,
    within 5 standard errors (Monte Carlo: the tolerance is its own standard error)."""
    g = torch.Generator().manual_seed(7)
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor([0.4, 0.6], dtype=F64),
        torch.randn(2, 3, generator=g, dtype=F64),
        torch.tensor([0.5, 0.8], dtype=F64),
        cov_type="isotropic",
    )
    A = torch.tensor([[1.0, 0.5, 0.0]], dtype=F64)
    y = torch.tensor([[0.3]], dtype=F64)
    x = torch.tensor([[0.1, -0.4, 0.6]], dtype=F64)
    s, sy = 0.9, 0.6
    z, _ = mix.sample(400_000, generator=g)
    lw = -((y[0] - z @ A[0]) ** 2) / (2 * sy**2) - ((x[0] - z) ** 2).sum(1) / (2 * s**2)
    wts = torch.softmax(lw, 0)
    est = wts @ z
    se = torch.sqrt((wts[:, None] ** 2 * (z - est) ** 2).sum(0))
    got = gd.PosteriorDenoiser(mix, A, y, sy)(x, s)[0]
    assert bool(((got - est).abs() < 5 * se).all()), (got, est, se)


@pytest.mark.parametrize("kind", ["gaussian", "mixture", "empirical"])
def test_score_is_grad_log_density(kind, gen):
    d = 3
    if kind == "gaussian":
        prior = gd.GaussianDenoiser(torch.randn(d, generator=gen, dtype=F64), spd(gen, d))
    elif kind == "mixture":
        prior = gd.GaussianMixtureDenoiser(
            torch.tensor([0.5, 0.5], dtype=F64),
            torch.randn(2, d, generator=gen, dtype=F64),
            torch.stack([spd(gen, d), spd(gen, d)]),
        )
    else:
        prior = gd.EmpiricalDenoiser(torch.randn(20, d, generator=gen, dtype=F64))
    A = torch.randn(2, d, generator=gen, dtype=F64)
    y = torch.randn(2, 2, generator=gen, dtype=F64)
    pdn = gd.PosteriorDenoiser(prior, A, y, 0.5)
    x = torch.randn(2, d, generator=gen, dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(pdn.log_density(x, 0.8).sum(), x)
    assert rel(pdn.score(x.detach(), 0.8), grad) < 1e-10
    # the log density integrates the Gaussian/mixture/empirical posterior marginal: at large
    # sigma it tends to N(0-mean offset..): check normalisation in 1 direction is not needed;
    # Tweedie (T1) ties score and denoiser
    assert rel(pdn.score(x.detach(), 0.8), (pdn(x.detach(), 0.8) - x.detach()) / 0.64) < 1e-10


# =============================================================================================
# The posterior denoiser's flow samples the posterior
# =============================================================================================


def test_exact_flow_and_heun_reproduce_the_posterior_covariance(gen):
    prior, A, y, sy = gaussian_problem(gen, B=1)
    pdn = gd.PosteriorDenoiser(prior, A, y, sy)
    C = pdn.posterior_cov()[0]
    m = pdn.posterior_mean()
    d, s0 = 5, 40.0
    # (G4) on the posterior, started from its exact marginal N(m, C + s0^2 I): the flow is linear,
    # x -> m + M (x - m); push the basis through it.
    E = torch.eye(d, dtype=F64)
    M_exact = pdn.flow(m + E, s0, 0.0) - m
    cov_exact = M_exact @ (C + s0**2 * E) @ M_exact.T
    assert rel(cov_exact, C) < 1e-12
    # Heun on the same linear ODE, 100 and 400 steps of the Karras grid: order 2 (ratio ~16), and the
    # covariance error is discretisation error only
    errs = []
    for steps in (100, 400):
        sig = gd.karras_sigmas(steps, 1e-3, s0)
        M_heun = gd.sample_heun(pdn, m + E, sig) - gd.sample_heun(pdn, m.expand(d, d).clone(), sig)
        errs.append(rel(M_heun.T @ (C + s0**2 * E) @ M_heun, C))
    assert errs[1] < errs[0] / 8 and errs[1] < 5e-4
    # Monte Carlo: samples of the Heun flow from the usual start; 6000 samples, 5 standard errors
    # of each covariance entry (sqrt((C_ii C_jj + C_ij^2)/n)).
    n = 6000
    x = gd.seeded_noise(n, d, seed=1) * 80.0
    smp = gd.sample_heun(gd.PosteriorDenoiser(prior, A, y.expand(n, -1), sy), x, gd.karras_sigmas(60))
    Ch = torch.cov(smp.T)
    se = torch.sqrt((torch.diag(C)[:, None] * torch.diag(C)[None] + C**2) / n)
    assert bool(((Ch - C).abs() < 5 * se).all())


def test_flows_of_mixture_and_empirical_posteriors_sample_them(gen):
    data = torch.randn(8, 3, generator=gen, dtype=F64)
    A = torch.randn(2, 3, generator=gen, dtype=F64)
    y = data[:1] @ A.T
    sy = 0.8
    n = 3000
    pdn = gd.PosteriorDenoiser(gd.EmpiricalDenoiser(data), A, y.expand(n, -1), sy)
    smp = gd.sample_heun(pdn, gd.seeded_noise(n, 3, seed=2) * 80.0, gd.karras_sigmas(40))
    nn = torch.cdist(smp, data).argmin(1)
    assert float(torch.cdist(smp, data).min(1).values.max()) < 1e-6  # lands on training points
    freq = torch.bincount(nn, minlength=8).double() / n
    w = pdn.weights[0]
    assert bool(((freq - w).abs() < 5 * torch.sqrt(w * (1 - w) / n) + 1e-12).all())
    # mixture: sample mean within 5 standard errors of the exact posterior mean
    mix = mixture_2d(gen)
    A2 = torch.tensor([[0.8, -0.5]], dtype=F64)
    pd2 = gd.PosteriorDenoiser(mix, A2, torch.tensor([[0.4]], dtype=F64).expand(n, -1), 0.3)
    smp = gd.sample_heun(pd2, gd.seeded_noise(n, 2, seed=3) * 80.0, gd.karras_sigmas(60))
    m, C = pd2.posterior_mean()[0], pd2.posterior_cov()[0]
    assert bool(((smp.mean(0) - m).abs() < 5 * torch.sqrt(torch.diag(C) / n)).all())


# =============================================================================================
# Approximate samplers and their measurement
# =============================================================================================


def test_pigdm_is_exact_for_an_isotropic_gaussian_prior(gen):
    """With prior N(mu, v I), PiGDM's Gaussian approximation of p(x0 | x_t) is exact, so its Euler
    sampler converges to the exact posterior (order 1): the sampled linear map's output covariance
    approaches C as the steps grow."""
    d, v = 4, 0.7
    prior = gd.GaussianDenoiser(torch.randn(d, generator=gen, dtype=F64), v * torch.eye(d, dtype=F64))
    A = torch.randn(2, d, generator=gen, dtype=F64)
    y = torch.randn(1, 2, generator=gen, dtype=F64)
    pdn = gd.PosteriorDenoiser(prior, A, y, 0.2)
    C = pdn.posterior_cov()[0]
    errs = []
    for steps in (50, 200):
        sig = gd.karras_sigmas(steps, 1e-3, 80.0)
        X = torch.cat([torch.zeros(1, d, dtype=F64), torch.eye(d, dtype=F64)])
        out = gd.sample_pigdm(prior, X, sig, A=A, y=y, sigma_y=0.2, data_var=v)
        M = out[1:] - out[:1]
        cov = M @ M.T * 80.0**2
        exact0 = pdn.flow(X[:1], 80.0, 0.0)[0]  # exact flow from the same start
        errs.append((rel(cov, C), float((out[0] - exact0).abs().max())))
    assert errs[1][0] < errs[0][0] / 2.5 and errs[1][0] < 0.05
    assert errs[1][1] < 1e-3 and errs[1][1] < errs[0][1] / 2.5


def test_dps_step_is_zeta_times_the_gradient_of_the_residual_norm(gen):
    """One DPS gradient step equals ``zeta * grad ||y - A x0_hat||`` (unsquared norm) in the VP
    variable, as in the authors' code (DPS2022/diffusion-posterior-sampling,
    ``guided_diffusion/condition_methods.py``, ``PosteriorSampling``), checked against a direct
    autograd of ``torch.linalg.norm`` one sample at a time and against the hand-computed gradient
    for a Gaussian prior (linear denoiser, Jacobian ``S (S + sigma^2 I)^-1``); and the paper's
    Algorithm 1 with ``zeta_i = zeta' / ||r||`` equals ``zeta = 2 zeta'``. float64, 1e-10."""
    d, m, B = 5, 3, 4
    prior, A, y, sy = gaussian_problem(gen, d=d, m=m, B=B)
    s0, s1 = 2.5, 0.7
    sig = torch.tensor([s0, s1, 0.0], dtype=F64)
    x = torch.randn(B, d, generator=gen, dtype=F64) * s0

    def first_step(zeta):
        seen = []
        gd.sample_dps(
            prior, x, sig, A=A, y=y, sigma_y=sy, zeta=zeta, seed=3, callback=lambda info: seen.append(info["x"])
        )
        return seen[1]  # the state after step 0

    zeta = 0.5
    step = first_step(zeta) - first_step(0.0)  # the ancestral part cancels (same noise)
    c0, c1 = math.sqrt(1 + s0**2), math.sqrt(1 + s1**2)
    # the authors' code: norm of one sample's residual, autograd wrt the VP variable x / sqrt(1 + s^2)
    ref = torch.empty_like(x)
    for b in range(B):
        x_vp = (x[b : b + 1] / c0).requires_grad_(True)
        norm = torch.linalg.norm(y[b : b + 1] - prior(x_vp * c0, s0) @ A.T)
        (g,) = torch.autograd.grad(norm, x_vp)
        ref[b] = -zeta * c1 * g[0]  # x_vp -= scale * grad, back to x: * c1
    assert rel(step, ref) < 1e-10
    # by hand: D(x) = mu + S (S + s^2 I)^-1 (x - mu), J symmetric, grad_x |r| = -J A^T r / |r|
    S = prior.cov
    J = S @ torch.linalg.inv(S + s0**2 * torch.eye(d, dtype=F64))
    r = y - prior(x, s0) @ A.T
    hand = -zeta * c0 * c1 * (-(r @ A) @ J.T / r.norm(dim=1, keepdim=True))
    assert rel(step, hand) < 1e-10
    # the paper's Algorithm 1 with zeta_i = zeta' / |r| (Appendix C.2) is zeta = 2 zeta'
    zeta_p = 0.3
    paper = -zeta_p / r.norm(dim=1, keepdim=True) * c0 * c1 * (-2 * (r @ A) @ J.T)
    assert rel(first_step(2 * zeta_p) - first_step(0.0), paper) < 1e-10


def test_samplers_take_any_denoiser_and_are_deterministic(gen):
    data = torch.randn(12, 1, 2, 2, generator=gen, dtype=F64)
    emp = gd.EmpiricalDenoiser(data)
    smooth = gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.0)  # the same law, differentiable
    op = inv.make_operator("inpaint:0.5", (1, 2, 2), seed=0)
    y = op(data[:3])
    x = gd.seeded_noise(3, (1, 2, 2), seed=5) * 80.0
    sig = gd.karras_sigmas(8)
    for fn in (gd.sample_dps, gd.sample_pigdm, gd.sample_ddrm):
        a = fn(emp, x, sig, A=op, y=y, sigma_y=0.1, seed=1)
        b = fn(emp, x, sig, A=op, y=y, sigma_y=0.1, seed=1)
        c = fn(smooth, x, sig, A=op, y=y, sigma_y=0.1, seed=1)
        assert a.shape == x.shape and torch.equal(a, b)
        assert rel(a, c) < 1e-9  # empirical VJP (E3) = autograd of the mixture


def test_measure_exact_samples(gen):
    """Exact posterior draws: coverage within 4 binomial standard errors of the nominal level and
    mean error near the Monte-Carlo floor."""
    prior, A, y, sy = gaussian_problem(gen, B=3)
    S = 2000
    pdn_rep = gd.PosteriorDenoiser(prior, A, y.repeat_interleave(S, 0), sy)
    smp = pdn_rep.sample(generator=torch.Generator().manual_seed(0)).reshape(3, S, 5)
    res = gd.measure_posterior_samples(smp, gd.PosteriorDenoiser(prior, A, y, sy))
    assert abs(res["coverage"] - 0.9) < 4 * math.sqrt(0.09 / (3 * S))  # coordinates are correlated: loose
    assert res["mean_error"] < 3 * res["mc_floor"] and abs(res["spread_ratio"] - 1) < 0.1
    assert res["w2_rel"] < 0.15


def test_run_and_measure_each_sampler_small(gen):
    prior, A, y, sy = gaussian_problem(gen, B=2)
    pdn = gd.PosteriorDenoiser(prior, A, y, sy)
    for name in gd.POSTERIOR_SAMPLERS:
        smp = gd.run_posterior_sampler(name, prior, A, y, sy, steps=10, n_samples=50)
        assert smp.shape == (2, 50, 5)
        res = gd.measure_posterior_samples(smp, pdn)
        assert set(res) >= {"mean_error", "coverage", "w2", "spread_ratio"}


def test_posterior_denoiser_is_one_class_per_prior(gen):
    """``PosteriorDenoiser(prior, ...)`` builds the class of the prior (and stays a
    PosteriorDenoiser); a subclass refuses another kind of prior; what a kind of prior does not
    have names the prior."""
    prior, A, y, sy = gaussian_problem(gen, d=4)
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.randn(2, 4, generator=gen, dtype=F64),
        torch.stack([spd(gen, 4), spd(gen, 4)]),
    )
    emp = gd.EmpiricalDenoiser(torch.randn(10, 4, generator=gen, dtype=F64))
    for p, cls, kind in (
        (prior, gd.GaussianPosteriorDenoiser, "gaussian"),
        (mix, gd.MixturePosteriorDenoiser, "mixture"),
        (emp, gd.EmpiricalPosteriorDenoiser, "empirical"),
    ):
        post = gd.PosteriorDenoiser(p, A, y, sy)
        assert type(post) is cls and isinstance(post, gd.PosteriorDenoiser) and post.kind == kind
        direct = cls(p, A, y, sy)
        x = torch.randn(4, 4, generator=gen, dtype=F64)
        assert torch.equal(direct(x, 0.5), post(x, 0.5))
    with pytest.raises(ValueError, match="^prior: expected a GaussianDenoiser, got GaussianMixtureDenoiser"):
        gd.GaussianPosteriorDenoiser(mix, A, y, sy)
    with pytest.raises(ValueError, match="^prior:"):
        gd.PosteriorDenoiser(emp, A, y, sy).marginal_intervals(0.9)
    with pytest.raises(ValueError, match="^prior:"):
        gd.PosteriorDenoiser(prior, A, y, sy).credible_set(0.9)
    with pytest.raises(ValueError, match="^prior:"):
        gd.PosteriorDenoiser(mix, A, y, sy).flow(torch.randn(4, 4, dtype=F64), 1.0, 0.0)
    with pytest.raises(ValueError, match="^level:"):
        gd.PosteriorDenoiser(mix, A, y, sy).marginal_intervals(1.0)


def test_empirical_logits_are_the_empirical_denoisers_weights(gen):
    """(E2) written once in gaussdiff.inverse: its softmax equals the streamed empirical
    denoiser's posterior weights (an independent implementation, gaussdiff.empirical), and with
    the measurement's log-weights it is the empirical posterior denoiser's softmax (I4)."""
    from gaussdiff.inverse.posteriors import empirical_logits

    data = torch.randn(25, 3, generator=gen, dtype=F64)
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    s = torch.tensor([0.2, 0.5, 1.0, 2.0, 0.7, 0.3], dtype=F64)
    w = torch.softmax(empirical_logits(x, data, s[:, None]), 1)
    assert rel(w, gd.EmpiricalDenoiser(data).posterior_weights(x, s)) < 1e-12
    A = torch.randn(2, 3, generator=gen, dtype=F64)
    y = torch.randn(6, 2, generator=gen, dtype=F64)
    post = gd.PosteriorDenoiser(gd.EmpiricalDenoiser(data), A, y, 0.4)
    joint = torch.softmax(empirical_logits(x, data, s[:, None], torch.log(post.weights)), 1)
    assert rel(joint @ data, post(x, s)) < 1e-14


def test_dps_without_guidance_is_the_ancestral_sampler(gen):
    """DPS and sample_euler_ancestral take the one ancestral step of gaussdiff.sampling on the
    same noise: with zeta = 0 DPS is the DDPM ancestral sampler, bit for bit."""
    prior, A, y, sy = gaussian_problem(gen)
    x = gd.seeded_noise(4, 5, seed=1) * 80.0
    sig = gd.karras_sigmas(7)
    assert torch.equal(
        gd.sample_dps(prior, x, sig, A=A, y=y, sigma_y=sy, zeta=0.0, seed=3),
        gd.sample_euler_ancestral(prior, x, sig, eta=1.0, seed=3),
    )


def test_inverse_experiment_writes_its_files_and_shares_the_clis_defaults(tmp_path):
    """The experiment behind ``gaussdiff inverse``, called as a function: rows in loop order,
    the three files written, its own arguments recorded by default; the CLI's option defaults
    are the function's."""
    import inspect
    import json

    from gaussdiff.cli import build_parser
    from gaussdiff.inverse import experiment

    lines = []
    res = experiment.run_inverse_experiment(
        samplers=("exact", "ddrm"), steps=(2, 3), n_train=40, n_meas=1, n_samples=2, outdir=tmp_path, log=lines.append
    )
    assert [(r["steps"], r["sampler"]) for r in res.rows] == [(2, "exact"), (2, "ddrm"), (3, "exact"), (3, "ddrm")]
    assert lines == [experiment.format_row(r) for r in res.rows]
    assert set(res.shown) == {"exact", "ddrm", "y", "truth", "posterior mean"}
    assert {p.name for p in tmp_path.iterdir()} == {"measurements.csv", "measurements.json", "inverse.png"}
    saved = json.loads((tmp_path / "measurements.json").read_text())
    assert saved["config"]["samplers"] == ["exact", "ddrm"] and len(saved["rows"]) == 4
    with pytest.raises(ValueError, match="^dps_zeta:"):
        experiment.run_inverse_experiment(dps_zeta=-1.0)
    sub = build_parser()._subparsers._group_actions[0].choices["inverse"]
    cli = {a.dest: a.default for a in sub._actions}
    lib = {k: p.default for k, p in inspect.signature(experiment.run_inverse_experiment).parameters.items()}
    for opt, arg in (
        ("data", "data"),
        ("operator", "operator"),
        ("sigma_y", "sigma_y"),
        ("sampler", "samplers"),
        ("prior", "prior"),
        ("steps", "steps"),
        ("n_train", "n_train"),
        ("n_meas", "n_meas"),
        ("samples", "n_samples"),
        ("seed", "seed"),
        ("dps_zeta", "dps_zeta"),
    ):
        want = lib[arg]
        assert (tuple(cli[opt]) if isinstance(want, tuple) else cli[opt]) == want, opt
    assert sub._option_string_actions["--prior"].choices == experiment.PRIORS


# =============================================================================================
# Bad input
# =============================================================================================


def test_bad_input_is_refused(gen):
    prior, A, y, sy = gaussian_problem(gen)
    with pytest.raises(ValueError, match="^y:"):
        gd.gaussian_posterior(prior.mean, prior.cov, A, y[:, :2], sy)
    with pytest.raises(ValueError, match="^y:"):
        gd.PosteriorDenoiser(prior, A, torch.randn(4, 7, dtype=F64), sy)
    with pytest.raises(ValueError, match="^sigma_y:"):
        gd.PosteriorDenoiser(prior, A, y, -0.1)
    with pytest.raises(ValueError, match="^sigma_y:"):
        gd.gaussian_posterior(prior.mean, prior.cov, A, y, float("nan"))
    with pytest.raises(ValueError, match="^A:"):
        gd.PosteriorDenoiser(prior, torch.randn(3, 4, dtype=F64), y, sy)
    with pytest.raises(ValueError, match="^sigma_y:"):
        gd.PosteriorDenoiser(gd.EmpiricalDenoiser(torch.randn(5, 5, dtype=F64)), A, y, 0.0)
    with pytest.raises(ValueError, match="^prior:"):
        gd.PosteriorDenoiser(lambda x, s: x, A, y, sy)
    with pytest.raises(ValueError, match="^x:"):
        gd.PosteriorDenoiser(prior, A, y, sy)(torch.randn(3, 5, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="^y:"):
        gd.sample_dps(prior, torch.randn(2, 5, dtype=F64), gd.karras_sigmas(3), A=A, y=y, sigma_y=sy)
    with pytest.raises(ValueError, match="^operator:"):
        inv.make_operator("warp:3", (1, 4, 4))
    with pytest.raises(ValueError, match="^factor:"):
        inv.make_operator("down:3", (1, 4, 4))
    with pytest.raises(ValueError, match="^denoiser:"):
        gd.sample_dps(
            lambda x, s: x.detach() * 0, torch.randn(4, 5, dtype=F64), gd.karras_sigmas(3), A=A, y=y, sigma_y=sy
        )


def test_cli_inverse_passes_the_authors_dps_scale(tmp_path, monkeypatch, capsys):
    """``gaussdiff inverse`` gives DPS the DPS authors' config scale by operator (0.5 for
    inpainting, 0.3 otherwise) unless ``--dps-zeta`` says otherwise; a negative one is refused."""
    from gaussdiff.cli import main as cli_main
    from gaussdiff.inverse import experiment

    seen = []
    real = experiment.run_posterior_sampler

    def spy(name, *args, **kw):
        seen.append((name, kw.get("zeta")))
        return real(name, *args, **kw)

    monkeypatch.setattr(experiment, "run_posterior_sampler", spy)  # where the experiment looks it up
    base = ["inverse", "--sampler", "dps,ddrm", "--steps", "3", "--samples", "2", "--n-meas", "1", "--n-train", "50"]
    assert cli_main(base + ["--outdir", str(tmp_path / "a")]) in (0, None)
    assert seen == [("dps", 0.5), ("ddrm", None)]
    seen.clear()
    assert cli_main(base + ["--operator", "blur:1", "--outdir", str(tmp_path / "b")]) in (0, None)
    assert seen[0] == ("dps", 0.3)
    seen.clear()
    assert cli_main(base + ["--dps-zeta", "1.5", "--outdir", str(tmp_path / "c")]) in (0, None)
    assert seen[0] == ("dps", 1.5)
    assert cli_main(base + ["--dps-zeta", "-1", "--outdir", str(tmp_path / "d")]) not in (0, None)
    assert "--dps-zeta: must be >= 0" in capsys.readouterr().err
