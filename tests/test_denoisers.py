"""Closed-form denoisers, each proven through an independent route in float64.

Routes: autograd of the log density (scores), brute force from the full posterior weights
(empirical), importance-sampled Monte-Carlo posterior means (all three), limits in sigma and
the identities between the three families.
"""

import math

import numpy as np
import pytest
import torch

import gaussdiff as gd

F64 = torch.float64


def _random_cov(d, rank, gen):
    A = torch.randn(d, rank, dtype=F64, generator=gen)
    return A @ A.T


def _make(kind, d, K, gen):
    """A closed-form denoiser of each family, parameters drawn from ``gen``."""
    if kind == "empirical":
        return gd.EmpiricalDenoiser(torch.randn(12 + 5 * K, d, dtype=F64, generator=gen) * 2)
    if kind == "gaussian":
        return gd.GaussianDenoiser(torch.randn(d, dtype=F64, generator=gen), _random_cov(d, d, gen))
    if kind == "gaussian_lowrank":
        return gd.GaussianDenoiser(torch.randn(d, dtype=F64, generator=gen), _random_cov(d, max(1, d // 2), gen))
    w = torch.rand(K, dtype=F64, generator=gen) + 0.2
    w = w / w.sum()
    mu = 3 * torch.randn(K, d, dtype=F64, generator=gen)
    if kind == "gmm_full":
        covs = torch.stack([_random_cov(d, d, gen) for _ in range(K)])
        return gd.GaussianMixtureDenoiser(w, mu, covs, cov_type="full")
    if kind == "gmm_diag":
        return gd.GaussianMixtureDenoiser(w, mu, torch.rand(K, d, dtype=F64, generator=gen) + 0.1, cov_type="diag")
    if kind == "gmm_iso":
        return gd.GaussianMixtureDenoiser(w, mu, torch.rand(K, dtype=F64, generator=gen) + 0.1, cov_type="isotropic")
    if kind == "gmm_lowrank":
        r = max(1, d // 2)
        return gd.GaussianMixtureDenoiser(w, mu, torch.randn(K, d, r, dtype=F64, generator=gen), cov_type="lowrank")
    raise AssertionError(kind)


KINDS = ["empirical", "gaussian", "gaussian_lowrank", "gmm_full", "gmm_diag", "gmm_iso", "gmm_lowrank"]


# ---------------------------------------------------------------------------------------------
# score = grad log density (autograd), for random d = 2..8, K = 1..4, sigma 1e-2..1e2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_score_is_gradient_of_log_density(kind, seed):
    gen = torch.Generator().manual_seed(1000 + seed)
    d = 2 + seed * 2  # 2, 4, 6, 8
    K = 1 + seed  # 1..4
    den = _make(kind, d, K, gen)
    for sigma in (1e-2, 1e-1, 1.0, 10.0, 100.0):
        # queries near the data so that the small-sigma cases are not all underflow
        x = torch.randn(6, d, dtype=F64, generator=gen) * (1 + sigma)
        x = x.requires_grad_(True)
        logp = den.log_density(x, sigma)
        grad = torch.autograd.grad(logp.sum(), x)[0]
        score = den.score(x.detach(), sigma)
        torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9 / sigma**2)
        # and the score is Tweedie's (D - x) / sigma^2 of the denoiser
        tweedie = (den(x.detach(), sigma) - x.detach()) / sigma**2
        torch.testing.assert_close(score, tweedie, rtol=1e-8, atol=1e-8 / sigma**2)


# ---------------------------------------------------------------------------------------------
# log densities against direct formulas
# ---------------------------------------------------------------------------------------------


def test_empirical_matches_brute_force(gen):
    data = torch.randn(300, 5, dtype=F64, generator=gen) + 4.0
    den = gd.EmpiricalDenoiser(data, chunk_size=64)  # 300 is not a multiple of the chunk
    x = torch.randn(17, 5, dtype=F64, generator=gen) + 4.0
    for sigma in (1e-3, 0.05, 1.0, 30.0, 1e3):
        d2 = ((x[:, None, :] - data[None]) ** 2).sum(-1)  # exact differences
        logits = -d2 / (2 * sigma**2)
        w = torch.softmax(logits, 1)
        torch.testing.assert_close(den(x, sigma), w @ data, rtol=1e-10, atol=1e-10)
        lp = torch.logsumexp(logits, 1) - math.log(300) - 2.5 * math.log(2 * math.pi * sigma**2)
        torch.testing.assert_close(den.log_density(x, sigma), lp, rtol=1e-10, atol=1e-10)


def test_gaussian_log_density_matches_scipy(gen):
    from scipy.stats import multivariate_normal

    mean, cov = torch.randn(4, dtype=F64, generator=gen), _random_cov(4, 4, gen)
    den = gd.GaussianDenoiser(mean, cov)
    x = torch.randn(8, 4, dtype=F64, generator=gen)
    ref = multivariate_normal(mean.numpy(), (cov + 0.49 * torch.eye(4, dtype=F64)).numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(den.log_density(x, 0.7).numpy(), ref, rtol=1e-12)


def test_empirical_jacobian_matches_autograd(gen):
    data = torch.randn(40, 3, dtype=F64, generator=gen)
    den = gd.EmpiricalDenoiser(data, chunk_size=16)
    x = torch.randn(4, 3, dtype=F64, generator=gen)
    for sigma in (0.3, 2.0):
        J = den.jacobian(x, sigma)
        Jad = torch.stack([torch.autograd.functional.jacobian(lambda v: den(v[None], sigma)[0], xi) for xi in x])
        torch.testing.assert_close(J, Jad, rtol=1e-10, atol=1e-12)


def test_gaussian_jacobian_and_effective_dim(gen):
    den = gd.GaussianDenoiser(torch.zeros(5, dtype=F64), _random_cov(5, 3, gen))
    J = den.jacobian(0.5)
    Jad = torch.autograd.functional.jacobian(lambda v: den(v[None], 0.5)[0], torch.randn(5, dtype=F64, generator=gen))
    torch.testing.assert_close(J, Jad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(den.effective_dim(0.5), torch.trace(J), rtol=1e-12, atol=0)
    assert den.jacobian(torch.tensor([0.5, 1.0], dtype=F64)).shape == (2, 5, 5)
    # rank 3 covariance: effective dimension -> 3 as sigma -> 0
    assert abs(float(den.effective_dim(1e-7)) - 3.0) < 1e-6


# ---------------------------------------------------------------------------------------------
# identities between the families
# ---------------------------------------------------------------------------------------------


def _xs(gen, d, B=9, scale=2.0):
    return torch.randn(B, d, dtype=F64, generator=gen) * scale


@pytest.mark.parametrize("cov_rank", [4, 2])
def test_one_component_mixture_is_the_gaussian(gen, cov_rank):
    mean, cov = torch.randn(4, dtype=F64, generator=gen), _random_cov(4, cov_rank, gen)
    G = gd.GaussianDenoiser(mean, cov)
    M = gd.GaussianMixtureDenoiser(torch.ones(1, dtype=F64), mean[None], cov[None], cov_type="full")
    x = _xs(gen, 4)
    for s in (0.01, 1.0, 100.0):
        torch.testing.assert_close(M(x, s), G(x, s), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(M.log_density(x, s), G.log_density(x, s), rtol=1e-11, atol=1e-10)
        torch.testing.assert_close(M.score(x, s), G.score(x, s), rtol=1e-10, atol=1e-10)


def test_lowrank_mixture_is_the_gaussian_of_its_factor(gen):
    A = torch.randn(5, 2, dtype=F64, generator=gen)
    G = gd.GaussianDenoiser(torch.zeros(5, dtype=F64), A @ A.T)
    M = gd.GaussianMixtureDenoiser(torch.ones(1, dtype=F64), torch.zeros(1, 5, dtype=F64), A[None], cov_type="lowrank")
    x = _xs(gen, 5)
    for s in (0.05, 1.0, 20.0):
        torch.testing.assert_close(M(x, s), G(x, s), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(M.log_density(x, s), G.log_density(x, s), rtol=1e-11, atol=1e-9)


def test_empirical_is_mixture_with_zero_covariance(gen):
    data = torch.randn(30, 3, dtype=F64, generator=gen)
    E = gd.EmpiricalDenoiser(data)
    N = data.shape[0]
    w = torch.full((N,), 1 / N, dtype=F64)
    for cov_type, covs in (
        ("isotropic", torch.zeros(N, dtype=F64)),
        ("diag", torch.zeros(N, 3, dtype=F64)),
        ("full", torch.zeros(N, 3, 3, dtype=F64)),
    ):
        M = gd.GaussianMixtureDenoiser(w, data, covs, cov_type=cov_type)
        x = _xs(gen, 3)
        for s in (0.05, 1.0, 10.0):
            torch.testing.assert_close(M(x, s), E(x, s), rtol=1e-10, atol=1e-11)
            torch.testing.assert_close(M.log_density(x, s), E.log_density(x, s), rtol=1e-11, atol=1e-10)


def test_smoothed_empirical_tends_to_empirical(gen):
    data = torch.randn(25, 4, dtype=F64, generator=gen)
    E = gd.EmpiricalDenoiser(data)
    x = _xs(gen, 4)
    errs = []
    for h in (1e-1, 1e-2, 1e-3, 1e-4, 0.0):
        M = gd.GaussianMixtureDenoiser.smoothed_empirical(data, h)
        errs.append(float((M(x, 0.5) - E(x, 0.5)).abs().max()))
    assert errs[-1] < 1e-12
    assert all(b < a for a, b in zip(errs[:-2], errs[1:-1]))  # monotone approach
    assert errs[-2] < 1e-6  # O(h^2) at h = 1e-4


def test_smoothed_empirical_is_the_empirical_at_inflated_noise(gen):
    """The KDE with width h convolved with N(0, s^2) has the same weights as the empirical
    distribution at noise sqrt(s^2 + h^2); its denoiser shrinks towards x by s^2/(s^2+h^2)."""
    data = torch.randn(20, 3, dtype=F64, generator=gen)
    h, s = 0.4, 0.7
    M = gd.GaussianMixtureDenoiser.smoothed_empirical(data, h)
    E = gd.EmpiricalDenoiser(data)
    x = _xs(gen, 3)
    t2 = s**2 + h**2
    expect = (s**2 * E(x, math.sqrt(t2)) + h**2 * x) / t2
    torch.testing.assert_close(M(x, s), expect, rtol=1e-11, atol=1e-12)


def test_empirical_limits(gen):
    data = torch.randn(50, 6, dtype=F64, generator=gen) * 3 + 1
    E = gd.EmpiricalDenoiser(data)
    x = _xs(gen, 6, scale=4.0)
    # sigma -> infinity: the data mean (error O(spread^2 / sigma^2))
    err_big = float((E(x, 1e6) - data.mean(0)).abs().max())
    assert err_big < 1e-8
    # sigma -> 0: the nearest training point
    nn = torch.cdist(x, data).argmin(1)
    torch.testing.assert_close(E(x, 1e-4), data[nn], rtol=0, atol=1e-12)


def test_gaussian_limits(gen):
    mean, cov = torch.randn(4, dtype=F64, generator=gen), _random_cov(4, 2, gen)
    G = gd.GaussianDenoiser(mean, cov)
    x = _xs(gen, 4)
    assert float((G(x, 1e7) - mean).abs().max()) < 1e-10
    # sigma -> 0: the projection of x onto mean + range(cov)
    U = G.eigenvectors[:, G.eigenvalues > 1e-9]
    proj = mean + (x - mean) @ U @ U.T
    torch.testing.assert_close(G(x, 1e-8), proj, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Monte-Carlo posterior means (self-normalised importance sampling from the prior)
# ---------------------------------------------------------------------------------------------


def _mc_posterior_mean(prior_samples, x, sigma):
    """E[x0 | x] with x0 ~ prior (samples) and weights N(x; x0, sigma^2 I); returns mean and
    its delta-method standard error."""
    logw = -((x[None] - prior_samples) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(logw, 0)
    mean = w @ prior_samples
    se = torch.sqrt((w[:, None] ** 2 * (prior_samples - mean) ** 2).sum(0))
    ess = 1.0 / float((w**2).sum())
    return mean, se, ess


@pytest.mark.parametrize("kind", ["empirical", "gaussian", "gaussian_lowrank", "gmm_full", "gmm_lowrank", "gmm_iso"])
def test_monte_carlo_posterior_mean(kind):
    gen = torch.Generator().manual_seed(7)
    d, K = 3, 3
    den = _make(kind, d, K, gen)
    M = 200_000
    if kind == "empirical":
        prior = den.data[torch.randint(den.n, (M,), generator=gen)]
    elif kind.startswith("gaussian"):
        prior = den.sample(M, generator=gen)
    else:
        prior = den.sample(M, generator=gen)[0]
    sigma = 1.5
    xs = prior[:4] + sigma * torch.randn(4, d, dtype=F64, generator=gen)
    for x in xs:
        mc, se, ess = _mc_posterior_mean(prior, x, sigma)
        assert ess > 500, "the importance sampler degenerated: the check would be meaningless"
        exact = den(x[None], sigma)[0]
        z = (mc - exact).abs() / se
        assert float(z.max()) < 5.0, f"{kind}: MC {mc} vs exact {exact}, se {se}"


# ---------------------------------------------------------------------------------------------
# input shapes, dtypes, devices and bad input
# ---------------------------------------------------------------------------------------------


def test_image_shaped_data_and_per_sample_sigma(gen):
    data = torch.randn(10, 1, 3, 3, dtype=F64, generator=gen)
    for den in (
        gd.EmpiricalDenoiser(data),
        gd.GaussianDenoiser.fit(data),
        gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.1),
    ):
        x = torch.randn(4, 1, 3, 3, dtype=F64, generator=gen)
        sig = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=F64)
        out = den(x, sig)
        assert out.shape == x.shape
        for i in range(4):  # a (B,) sigma is the same as calling each row alone
            torch.testing.assert_close(out[i : i + 1], den(x[i : i + 1], float(sig[i])), rtol=1e-12, atol=1e-12)


def test_float32_works(gen):
    data = torch.randn(20, 4, generator=gen)
    for den in (
        gd.EmpiricalDenoiser(data),
        gd.GaussianDenoiser.fit(data),
        gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.2),
    ):
        x = torch.randn(3, 4, generator=gen)
        out = den(x, 0.5)
        assert out.dtype == torch.float32
        ref = den.to(dtype=F64)(x.double(), 0.5)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)  # float32 round-off


def test_gaussian_fit_matches_numpy(gen):
    data = torch.randn(100, 3, dtype=F64, generator=gen)
    G = gd.GaussianDenoiser.fit(data)
    np.testing.assert_allclose(G.cov.numpy(), np.cov(data.numpy().T, bias=True), rtol=1e-12, atol=1e-14)
    Gu = gd.GaussianDenoiser.fit(data, unbiased=True)
    np.testing.assert_allclose(Gu.cov.numpy(), np.cov(data.numpy().T), rtol=1e-12, atol=1e-14)


def test_molrg(gen):
    M = gd.GaussianMixtureDenoiser.random_molrg(8, 2, 3, generator=gen)
    x, k = M.sample(500, generator=gen)
    # every sample lies in its component's subspace
    U = M._U[k]
    resid = x - torch.einsum("ndr,nr->nd", U, torch.einsum("ndr,nd->nr", U, x))
    assert float(resid.abs().max()) < 1e-12
    with pytest.raises(ValueError, match="bases"):
        gd.GaussianMixtureDenoiser.molrg(torch.randn(2, 4, 2, dtype=F64, generator=gen) * 3)


@pytest.mark.parametrize("cov_type", gd.GaussianMixtureDenoiser.COV_TYPES)
def test_mixture_component_accessors(cov_type, gen):
    """The public view of the components (what gaussdiff.inverse builds on): flat means,
    log-weights and dense covariances equal to what the constructor was given, for every
    ``cov_type``; the dense covariances assembled in the dtype asked for."""
    K, d = 3, 4
    w = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    mu = torch.randn(K, 2, 2, dtype=F64, generator=gen)
    given = {
        "full": torch.stack([_random_cov(d, d, gen) for _ in range(K)]),
        "diag": torch.rand(K, d, dtype=F64, generator=gen) + 0.1,
        "isotropic": torch.tensor([0.3, 1.0, 2.0], dtype=F64),
        "lowrank": torch.randn(K, d, 2, dtype=F64, generator=gen),
    }[cov_type]
    dense = {
        "full": lambda c: c,
        "diag": torch.diag_embed,
        "isotropic": lambda c: c[:, None, None] * torch.eye(d, dtype=F64),
        "lowrank": lambda c: c @ c.transpose(1, 2),
    }[cov_type](given)
    M = gd.GaussianMixtureDenoiser(w, mu, given, cov_type=cov_type)
    assert torch.equal(M.component_means, mu.reshape(K, d))
    assert torch.equal(M.log_weights, torch.log(w))
    S = M.component_covariances()
    assert S.shape == (K, d, d) and S.dtype == F64
    assert float((S - dense).abs().max() / dense.abs().max()) < 1e-13
    S32 = M.component_covariances(dtype=torch.float32)
    assert S32.dtype == torch.float32 and float((S32.double() - dense).abs().max() / dense.abs().max()) < 1e-6
    # the mixture's own density is the one these components define
    x = torch.randn(5, 2, 2, dtype=F64, generator=gen)
    s = 0.7
    comp = torch.stack(
        [
            torch.distributions.MultivariateNormal(
                M.component_means[k], S[k] + s * s * torch.eye(d, dtype=F64)
            ).log_prob(x.reshape(5, d))
            for k in range(K)
        ],
        1,
    )
    assert float((torch.logsumexp(M.log_weights + comp, 1) - M.log_density(x, s)).abs().max()) < 1e-12


def _assert_names(fn, name):
    with pytest.raises(ValueError, match=name):
        fn()


def test_bad_input(gen):
    data = torch.randn(10, 3, dtype=F64, generator=gen)
    E, G = gd.EmpiricalDenoiser(data), gd.GaussianDenoiser.fit(data)
    x = torch.randn(4, 3, dtype=F64, generator=gen)
    for den in (E, G, gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.1)):
        _assert_names(lambda: den(torch.randn(4, 2, dtype=F64), 1.0), "x")
        _assert_names(lambda: den(x, 0.0), "sigma")
        _assert_names(lambda: den(x, -1.0), "sigma")
        _assert_names(lambda: den(x, float("nan")), "sigma")
        _assert_names(lambda: den(x, torch.ones(3, dtype=F64)), "sigma")
        _assert_names(lambda: den(torch.full((4, 3), float("nan"), dtype=F64), 1.0), "x")
        _assert_names(lambda: den(x.float(), 1.0), "x")  # dtype mismatch
        _assert_names(lambda: den(x.numpy(), 1.0), "x")  # not a tensor
    _assert_names(lambda: gd.EmpiricalDenoiser(torch.empty(0, 3)), "data")
    _assert_names(lambda: gd.EmpiricalDenoiser(torch.tensor([[1.0, float("nan")]])), "data")
    _assert_names(lambda: gd.EmpiricalDenoiser(torch.ones(5)), "data")
    _assert_names(lambda: gd.GaussianDenoiser(torch.zeros(3, dtype=F64), torch.eye(2, dtype=F64)), "cov")
    _assert_names(
        lambda: gd.GaussianDenoiser(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 0], [0, -1.0]], dtype=F64)), "cov"
    )
    _assert_names(
        lambda: gd.GaussianDenoiser(torch.zeros(2, dtype=F64), torch.tensor([[1.0, 2.0], [0, 1.0]], dtype=F64)), "cov"
    )
    _assert_names(
        lambda: gd.GaussianMixtureDenoiser(
            torch.tensor([0.5, 0.6], dtype=F64),
            torch.zeros(2, 3, dtype=F64),
            torch.ones(2, dtype=F64),
            cov_type="isotropic",
        ),
        "weights",
    )
    _assert_names(
        lambda: gd.GaussianMixtureDenoiser(
            torch.tensor([1.5, -0.5], dtype=F64),
            torch.zeros(2, 3, dtype=F64),
            torch.ones(2, dtype=F64),
            cov_type="isotropic",
        ),
        "weights",
    )
    _assert_names(
        lambda: gd.GaussianMixtureDenoiser(
            torch.tensor([1.0], dtype=F64), torch.zeros(1, 3, dtype=F64), torch.ones(1, dtype=F64), cov_type="banana"
        ),
        "cov_type",
    )
    _assert_names(
        lambda: gd.GaussianMixtureDenoiser(
            torch.tensor([1.0], dtype=F64),
            torch.zeros(1, 3, dtype=F64),
            torch.ones(2, 3, 3, dtype=F64),
            cov_type="full",
        ),
        "covs",
    )
    _assert_names(lambda: gd.GaussianMixtureDenoiser.smoothed_empirical(data, -0.1), "h")
    _assert_names(lambda: G.flow(x, 1.0, -1.0), "sigma_to")
    _assert_names(lambda: G.effective_dim(0.0), "sigma")


def test_float32_rank_deficient_fits_are_accepted_and_right():
    """Issue 16, problem 1: float32 data with a rank-deficient covariance (the digits loader's
    64 pixels include constant ones; any N <= d) have float32 eigenvalues near ``-d eps max|l|``
    by rounding alone. The fit accepts them and agrees with the float64 fit to float32 rounding;
    a matrix with a negative eigenvalue beyond rounding is still refused in both dtypes."""
    data = gd.load_dataset("digits")[0]
    assert data.dtype == torch.float32
    g32, g64 = gd.GaussianDenoiser.fit(data), gd.GaussianDenoiser.fit(data.double())
    x = data[:8] + 0.3 * torch.randn(data[:8].shape, generator=torch.Generator().manual_seed(0))
    d, eps, lmax = x.shape[-1] * x.shape[-2], torch.finfo(torch.float32).eps, float(g64.eigenvalues.max())
    spread = float((x.double().reshape(8, -1) - g64.mean.reshape(1, -1)).abs().max())
    for sigma in (0.05, 0.5, 5.0):
        # float32 eigenvalues are off by up to ~d eps lmax, which moves the shrinkage
        # l / (l + sigma^2) of a direction by up to that over sigma^2: the bound below
        err = float((g32(x, sigma).double() - g64(x.double(), sigma)).abs().max())
        assert err <= 4 * d * eps * lmax / sigma**2 * spread + 1e-5, (sigma, err)
    for seed in range(20):
        few = torch.randn(20, 64, generator=torch.Generator().manual_seed(seed))  # N < d
        gd.GaussianDenoiser.fit(few)
    g64.to(dtype=torch.float32)
    up = g32.to(dtype=torch.float64)  # and back to a finer dtype: its rounding is not refused
    torch.testing.assert_close(up(x.double(), 1.0), g32(x, 1.0).double(), rtol=0, atol=1e-5)
    gd.ClassConditionalDenoiser.from_data(*gd.load_dataset("digits")[:2], kind="gaussian")
    for dtype in (torch.float32, torch.float64):
        bad = torch.diag(torch.tensor([1.0, -1e-3], dtype=dtype))
        with pytest.raises(ValueError, match="^cov: is not positive semi-definite"):
            gd.GaussianDenoiser(torch.zeros(2, dtype=dtype), bad)
