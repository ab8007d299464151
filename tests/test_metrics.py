"""Tests of gaussdiff.metrics: every metric on a case with a known answer, plus bad input.

Oracles in float64; sizes kept small (the whole file runs in seconds on 2 cores)."""

import math

import numpy as np
import pytest
import torch

import gaussdiff as gd
from gaussdiff import metrics as M


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gauss(gen):
    """A full-rank 8-d Gaussian with a non-zero mean, its denoiser and 64 of its samples."""
    d = 8
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    cov = A @ A.T / d + 0.05 * torch.eye(d, dtype=torch.float64)
    mu = 2.0 * torch.randn(d, generator=gen, dtype=torch.float64)
    den = gd.GaussianDenoiser(mu, cov)
    return den, den.sample(64, generator=gen)


def tgen(seed=0):
    return torch.Generator().manual_seed(seed)


SIGMAS = [0.05, 0.5, 5.0]


# ---------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------


def test_bootstrap_se_of_bernoulli_matches_binomial_formula(rng):
    n, p = 2000, 0.3
    ind = rng.random(n) < p
    f = M.bootstrap_fraction(ind, n_boot=1000, seed=0)
    phat = ind.mean()
    expected = math.sqrt(phat * (1 - phat) / n)
    assert f.value == pytest.approx(phat)
    assert f.n == n
    assert abs(f.se / expected - 1) < 0.10, (f.se, expected)
    assert f.ci_low < f.value < f.ci_high
    # the 95 % interval is about +-1.96 se wide
    assert (f.ci_high - f.ci_low) == pytest.approx(2 * 1.96 * expected, rel=0.15)


def test_bootstrap_equals_index_resampling_in_distribution(rng):
    ind = rng.random(400) < 0.2
    ours = M.bootstrap_fraction(ind, n_boot=4000, seed=1)
    boot_rng = np.random.default_rng(2)
    reps = ind[boot_rng.integers(0, ind.size, size=(4000, ind.size))].mean(1)
    assert ours.se == pytest.approx(reps.std(ddof=1), rel=0.08)


def test_bootstrap_is_seeded_and_leaves_global_state_alone(rng):
    ind = torch.as_tensor(rng.random(300) < 0.5)
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    a = M.bootstrap_fraction(ind, seed=7)
    b = M.bootstrap_fraction(ind, seed=7)
    c = M.bootstrap_fraction(ind, seed=8)
    d = M.bootstrap_fraction(ind, seed=np.random.default_rng(7))
    assert a == b == d
    assert a.se != c.se
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_bootstrap_degenerate_and_as_dict():
    f = M.bootstrap_fraction(np.ones(10, dtype=bool))
    assert (f.value, f.se, f.ci_low, f.ci_high, f.n) == (1.0, 0.0, 1.0, 1.0, 10)
    row = M.bootstrap_fraction([0, 1, 1, 0]).as_dict("memorization")
    assert set(row) == {
        "memorization",
        "memorization_se",
        "memorization_ci_low",
        "memorization_ci_high",
        "memorization_n",
    }
    assert float(M.bootstrap_fraction([0, 1])) == 0.5


# ---------------------------------------------------------------------------------------------
# Similarities
# ---------------------------------------------------------------------------------------------


def test_similarities_known_values():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    cos = M.CentredCosine()
    assert float(cos(a, a + 10.0)) == pytest.approx(1.0, abs=1e-15)  # offset-blind
    assert float(cos(a, 3 * a)) == pytest.approx(1.0, abs=1e-15)  # scale-blind
    assert float(cos(a, -a)) == pytest.approx(-1.0, abs=1e-15)
    assert float(cos(a, torch.ones_like(a))) == 0.0  # constant -> 0
    l2 = M.NormalisedL2()
    e1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e2 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert float(l2(e1, e1)) == 1.0
    assert float(l2(e1, e2)) == pytest.approx(0.0, abs=1e-15)  # orthogonal, equal norms
    assert float(l2(e1, -e1)) == pytest.approx(1 - math.sqrt(2))
    assert float(l2(torch.zeros_like(e1), torch.zeros_like(e1))) == 1.0
    # equal norms: 1 - sqrt(1 - cos)
    u = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    assert float(l2(u, v)) == pytest.approx(1 - math.sqrt(1 - 0.6))
    feat = M.get_similarity(lambda x: x[:, :2])
    assert isinstance(feat, M.FeatureCosine)
    assert float(feat(a, a * torch.tensor([1.0, 1.0, -5.0, 7.0], dtype=torch.float64))) == pytest.approx(1.0)


@pytest.mark.parametrize("similarity", ["cosine", "l2"])
def test_max_similarity_matches_brute_force(gen, similarity):
    samples = torch.randn(13, 2, 3, generator=gen, dtype=torch.float64)
    train = torch.randn(50, 2, 3, generator=gen, dtype=torch.float64)
    sim = M.get_similarity(similarity)
    brute = torch.stack([sim(samples, train[i].expand_as(samples)) for i in range(50)], 1)  # (13, 50)
    vals, idx = M.max_similarity(samples, train, similarity=similarity, chunk_size=7)
    torch.testing.assert_close(vals, brute.max(1).values, rtol=0, atol=1e-12)
    assert torch.equal(idx, brute.argmax(1))


# ---------------------------------------------------------------------------------------------
# Reproducibility, memorization, generalization score
# ---------------------------------------------------------------------------------------------


def test_identical_samplers_have_reproducibility_one():
    train = torch.randn(12, 6, generator=tgen(1), dtype=torch.float64)
    den = gd.GaussianDenoiser.fit(train)
    sig = gd.karras_sigmas(8)
    noise = gd.seeded_noise(50, 6, seed=3) * sig[0]
    a = gd.sample_heun(den, noise, sig)
    b = gd.sample_heun(den, noise.clone(), sig)
    for similarity in ("cosine", "l2", lambda x: x**2):
        r = M.reproducibility(a, b, similarity=similarity, threshold=0.6, seed=0)
        assert r.fraction.value == 1.0 and r.fraction.se == 0.0
        assert r.mean_similarity == pytest.approx(1.0, abs=1e-12)
        assert r.similarities.shape == (50,)


def test_independent_samples_are_not_reproducible(gen):
    a = torch.randn(300, 32, generator=gen, dtype=torch.float64)
    b = torch.randn(300, 32, generator=gen, dtype=torch.float64)
    r = M.reproducibility(a, b, threshold=0.6)
    assert r.fraction.value == 0.0
    assert abs(r.mean_similarity) < 0.05


def test_empirical_denoiser_samples_are_memorized():
    train = torch.randn(20, 8, generator=tgen(2), dtype=torch.float64)
    den = gd.EmpiricalDenoiser(train)
    sig = gd.karras_sigmas(12)
    samples = gd.sample_heun(den, sig[0] * gd.seeded_noise(100, 8, seed=5), sig)
    dist, idx = M.nearest_training(samples, train, k=2)
    assert dist.shape == (100, 2) and idx.dtype == torch.int64
    assert float(dist[:, 0].max()) < 1e-10  # each sample is a training point
    f = M.memorization_fraction(samples, train, seed=0)
    assert f.value == 1.0 and f.n == 100
    # the precomputed-neighbours path gives the same answer
    assert M.memorization_fraction(samples, train, neighbors=(dist, idx)) == f
    assert M.memorized_within(samples, train, 0.99).value == 1.0
    assert M.generalization_score(samples, train, 0.99).value == 0.0


def test_gaussian_samples_against_large_training_set_are_not_memorized(gen):
    train = torch.randn(4000, 16, generator=gen, dtype=torch.float64)
    samples = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    f = M.memorization_fraction(samples, train, seed=0)
    assert f.value <= 0.01
    assert f.ci_high <= 0.02


def test_memorization_counts_exact_copies_of_duplicated_points(gen):
    train = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    train = torch.cat([train, train[:1]])  # point 0 twice
    f = M.memorization_fraction(train[:1], train)
    assert f.value == 1.0


def test_memorized_within_and_generalization_score_are_complements(gen):
    train = torch.randn(40, 10, generator=gen, dtype=torch.float64)
    samples = torch.cat(
        [
            train[:15] + 0.01 * torch.randn(15, 10, generator=gen, dtype=torch.float64),
            torch.randn(25, 10, generator=gen, dtype=torch.float64),
        ]
    )
    for sim in ("cosine", "l2"):
        m = M.memorized_within(samples, train, 0.9, similarity=sim)
        g = M.generalization_score(samples, train, 0.9, similarity=sim)
        assert m.value == pytest.approx(15 / 40)
        assert m.value + g.value == pytest.approx(1.0)
        assert m.se == pytest.approx(g.se, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Denoiser distance and generalization gap
# ---------------------------------------------------------------------------------------------


def test_denoiser_distance_known_answers(gauss):
    den, pts = gauss
    same = M.denoiser_distance(den, den, pts, SIGMAS, generator=tgen(0))
    assert torch.equal(same.values, torch.zeros(3, dtype=torch.float64)) and same.mean == 0.0
    assert torch.equal(same.sigmas, torch.tensor(SIGMAS, dtype=torch.float64))
    # A constant offset c: relative MSE = |c|^2 / total variance of the points, at every sigma.
    c = torch.linspace(-1, 1, 8, dtype=torch.float64)
    shifted = lambda x, s: den(x, s) + c  # noqa: E731
    prof = M.denoiser_distance(shifted, den, pts, SIGMAS, generator=tgen(0))
    var = float(((pts - pts.mean(0)) ** 2).sum(1).mean())
    torch.testing.assert_close(prof.values, torch.full((3,), float(c @ c) / var, dtype=torch.float64))
    plain = M.denoiser_distance(shifted, den, pts, SIGMAS, generator=tgen(0), normalize="none")
    torch.testing.assert_close(plain.values, torch.full((3,), float(c @ c), dtype=torch.float64))
    # same generator seed -> same noise -> same result; batching does not change it
    again = M.denoiser_distance(gd.EmpiricalDenoiser(pts[:8]), den, pts, SIGMAS, generator=tgen(4))
    batched = M.denoiser_distance(gd.EmpiricalDenoiser(pts[:8]), den, pts, SIGMAS, generator=tgen(4), batch_size=10)
    torch.testing.assert_close(again.values, batched.values, rtol=1e-12, atol=0)
    assert float(again.values.min()) > 0


def test_generalization_gap_separates_memorizing_and_gaussian_denoisers(gauss):
    den, pts = gauss
    train, heldout = pts[:16], pts[16:]
    emp = M.generalization_gap(gd.EmpiricalDenoiser(train), train, heldout, [0.05], generator=tgen(1))
    assert float(emp.train.values[0]) < 1e-3 * float(emp.heldout.values[0])  # it returns x_i
    assert float(emp.gap.values[0]) > 0.1
    # the true Gaussian denoiser does not know the training points: no systematic gap
    exact = M.generalization_gap(den, train, heldout, [0.05, 0.5], generator=tgen(1))
    assert torch.all(exact.gap.values.abs() < 0.5 * exact.heldout.values)


# ---------------------------------------------------------------------------------------------
# Linearity and linear distillation
# ---------------------------------------------------------------------------------------------


def test_centred_linearity_is_one_for_affine_denoisers(gauss, gen):
    den, pts = gauss
    prof = M.centred_linearity_score(den, pts, SIGMAS, generator=tgen(0))
    assert float((prof.values - 1).abs().max()) < 1e-12
    # any affine map, any weights
    W = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    b = 5 * torch.randn(8, generator=gen, dtype=torch.float64)
    affine = lambda x, s: x @ W.T + b  # noqa: E731
    prof = M.centred_linearity_score(affine, pts, [1.0], generator=tgen(1), alpha=0.3, beta=1.7)
    assert float((prof.values - 1).abs().max()) < 1e-12


def test_li_linearity_score_definition(gauss):
    den, pts = gauss
    # linear (zero-mean Gaussian) denoiser: exactly 1
    lin = gd.GaussianDenoiser(torch.zeros(8, dtype=torch.float64), den.cov)
    prof = M.linearity_score(lin, pts - den.mean, SIGMAS, generator=tgen(0))
    assert float((prof.values - 1).abs().max()) < 1e-12
    # affine with an offset: below 1, since D(a x1 + b x2) - a D(x1) - b D(x2) = (1 - a - b) c
    off = M.linearity_score(den, pts, SIGMAS, generator=tgen(0))
    assert float(off.values.max()) < 1 - 1e-8
    assert float(off.values[1:].max()) < 0.9995
    # a memorizing denoiser is markedly less linear than an affine one (both scores)
    emp = gd.EmpiricalDenoiser(pts[:8])
    assert float(M.centred_linearity_score(emp, pts, [0.5], generator=tgen(2)).values[0]) < 0.98


def test_linear_distillation_recovers_gaussian_denoiser(gauss):
    den, pts = gauss
    dist = M.linear_distillation(den, pts, SIGMAS, generator=tgen(3))
    assert dist.weight.shape == (3, 8, 8) and dist.bias.shape == (3, 8)
    mu = den.mean
    for i, s in enumerate(SIGMAS):
        J = den.jacobian(s)
        torch.testing.assert_close(dist.weight[i], J, rtol=0, atol=1e-8)
        torch.testing.assert_close(dist.bias[i], mu - J @ mu, rtol=0, atol=1e-8)
    assert float(dist.residual.max()) < 1e-20
    torch.testing.assert_close(dist.predict(pts[:4], 1), den(pts[:4], SIGMAS[1]), rtol=0, atol=1e-10)
    cmp = M.distillation_distance_to_gaussian(dist, den)
    for prof in (cmp.weight, cmp.offset, cmp.output):
        assert float(prof.values.max()) < 1e-10


def test_distillation_of_empirical_denoiser_approaches_gaussian_at_large_sigma(gen):
    train = torch.randn(300, 4, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.0, 1.0, 0.5, 0.2], dtype=torch.float64
    )
    # As sigma grows, D_emp(x) -> mean + Cov (x - mean) / sigma^2, the Gaussian denoiser's expansion.
    dist = M.linear_distillation(gd.EmpiricalDenoiser(train), train, [0.3, 10.0, 100.0], generator=tgen(0))
    cmp = M.distillation_distance_to_gaussian(dist, train)  # fits the Gaussian itself
    w, out = cmp.weight.values, cmp.output.values
    assert float(w[0]) > float(w[1]) > float(w[2]) and float(w[2]) < 1e-3
    assert float(out[0]) > float(out[1]) > float(out[2]) and float(out[2]) < 1e-9
    assert float(dist.residual[2]) < float(dist.residual[0])


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------


def test_jacobian_spectrum_of_gaussian_matches_shrinkage(gauss):
    den, pts = gauss
    for s in (0.1, 1.0):
        sv, J = M.jacobian_spectrum(den, pts[:5], s, return_jacobian=True)
        shrink = torch.sort(den.eigenvalues / (den.eigenvalues + s * s), descending=True).values
        torch.testing.assert_close(sv, shrink.expand(5, -1), rtol=0, atol=1e-12)
        torch.testing.assert_close(J, den.jacobian(s).expand(5, -1, -1), rtol=0, atol=1e-12)
        torch.testing.assert_close(
            M.effective_dimension(den, pts[:5], s), den.effective_dim(s).expand(5), rtol=0, atol=1e-12
        )
    # per-sample sigma and a small memory bound (several passes) give the same Jacobians
    sig = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    J = M.denoiser_jacobian(den, pts[:3], sig, max_elements=50)
    torch.testing.assert_close(J, den.jacobian(sig), rtol=0, atol=1e-12)


def test_jacobian_of_network_and_empirical_denoiser(gen, gauss):
    _, pts = gauss
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).double()
    with torch.no_grad():  # weights from the seeded generator, not the global one
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    D = lambda x, s: net(x) / (1 + s if not isinstance(s, torch.Tensor) else (1 + s)[:, None])  # noqa: E731
    J = M.denoiser_jacobian(D, pts[:3], 0.5)
    for b in range(3):
        ref = torch.autograd.functional.jacobian(lambda v: D(v[None], 0.5)[0], pts[b])
        torch.testing.assert_close(J[b], ref, rtol=0, atol=1e-12)
    emp = gd.EmpiricalDenoiser(pts[:10])
    torch.testing.assert_close(
        M.denoiser_jacobian(emp, pts[10:13], 0.7), emp.jacobian(pts[10:13], 0.7), rtol=0, atol=1e-10
    )


def test_effective_rank_known_values():
    assert int(M.effective_rank(torch.tensor([1.0, 0.0, 0.0]))) == 1
    assert int(M.effective_rank(torch.ones(10))) == 10  # 99 % needs all 10
    assert int(M.effective_rank(torch.ones(10), energy=0.5)) == 5
    assert int(M.effective_rank(torch.zeros(4))) == 0
    s = torch.tensor([[10.0, 1.0, 0.5], [0.5, 1.0, 10.0]])  # order does not matter
    assert M.effective_rank(s).tolist() == [2, 2]  # 100/101.25 < 0.99
    assert int(M.effective_rank(torch.tensor([10.0, 1.0, 0.1]))) == 1  # 100/101.01 >= 0.99


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=tgen(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: M.bootstrap_fraction([]), "indicators"),
        (lambda: M.bootstrap_fraction([0.5, 1.0]), "indicators"),
        (lambda: M.bootstrap_fraction([0, float("nan")]), "indicators"),
        (lambda: M.bootstrap_fraction([0, 1], n_boot=1), "n_boot"),
        (lambda: M.bootstrap_fraction([0, 1], seed=-1), "seed"),
        (lambda: M.nearest_training(_x(3, 4), _x(5, 5)), "train"),
        (lambda: M.nearest_training(_x(3, 4), _x(5, 4), k=6), "k"),
        (lambda: M.nearest_training(torch.empty(0, 4, dtype=torch.float64), _x(5, 4)), "samples"),
        (lambda: M.memorization_fraction(_x(3, 4), _x(1, 4)), "train"),
        (lambda: M.memorization_fraction(_x(3, 4), _x(5, 4), ratio=1.5), "ratio"),
        (lambda: M.memorization_fraction(_x(3, 4), _x(5, 4), ratio=0.0), "ratio"),
        (lambda: M.memorization_fraction(torch.full((3, 4), float("nan")), _x(5, 4)), "samples"),
        (lambda: M.memorization_fraction(_x(3, 4), _x(5, 4), neighbors=(torch.zeros(3, 1), None)), "neighbors"),
        (lambda: M.memorized_within(_x(3, 4), _x(5, 4), 1.5), "threshold"),
        (lambda: M.memorized_within(_x(3, 4), _x(5, 4), float("nan")), "threshold"),
        (lambda: M.generalization_score(_x(3, 4), _x(5, 4), -0.9, similarity="l2"), "threshold"),
        (lambda: M.generalization_score(_x(3, 4), _x(5, 4), 0.5, similarity="ssim"), "similarity"),
        (lambda: M.reproducibility(_x(3, 4), _x(4, 4)), "samples_b"),
        (lambda: M.reproducibility(_x(3, 4), _x(3, 4), threshold=2.0), "threshold"),
        (lambda: M.reproducibility(_x(3, 4), _x(3, 4), similarity=lambda x: x[:1]), "feature_map"),
        (lambda: M.denoiser_distance(lambda x, s: x, lambda x, s: x, _x(3, 4), [], generator=tgen()), "sigmas"),
        (
            lambda: M.denoiser_distance(lambda x, s: x, lambda x, s: x, _x(3, 4), [1.0, -1.0], generator=tgen()),
            "sigmas",
        ),
        (lambda: M.denoiser_distance(lambda x, s: x, lambda x, s: x, _x(3, 4), 1.0, generator=0), "generator"),
        (
            lambda: M.denoiser_distance(
                lambda x, s: x, lambda x, s: x, _x(3, 4), 1.0, generator=tgen(), normalize="max"
            ),
            "normalize",
        ),
        (
            lambda: M.denoiser_distance(lambda x, s: x[:, :2], lambda x, s: x, _x(3, 4), 1.0, generator=tgen()),
            "denoiser",
        ),
        (
            lambda: M.denoiser_distance(lambda x, s: x, lambda x, s: x, torch.ones(3, 4), 1.0, generator=tgen()),
            "points",
        ),
        (lambda: M.linearity_score(lambda x, s: x, _x(1, 4), 1.0, generator=tgen()), "points"),
        (lambda: M.centred_linearity_score(lambda x, s: x, _x(3, 4), 1.0, generator=tgen(), alpha=None), "alpha"),
        (lambda: M.linear_distillation(lambda x, s: x, _x(3, 4), 1.0, generator=tgen(), n_noise=0), "n_noise"),
        (lambda: M.distillation_distance_to_gaussian("W", _x(5, 4)), "distillation"),
        (lambda: M.generalization_gap(lambda x, s: x, _x(3, 4), _x(3, 5), 1.0, generator=tgen()), "heldout"),
        (lambda: M.jacobian_spectrum(lambda x, s: x, _x(3, 4), 0.0), "sigma"),
        (lambda: M.denoiser_jacobian(lambda x, s: x, _x(3, 4), torch.ones(2)), "sigma"),
        (lambda: M.effective_rank(torch.tensor([1.0, -1.0])), "singular_values"),
        (lambda: M.effective_rank(torch.ones(3), energy=1.5), "energy"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_distillation_dimension_mismatch_refused(gauss):
    den, pts = gauss
    dist = M.linear_distillation(den, pts, [1.0], generator=tgen())
    with pytest.raises(ValueError, match="^gaussian"):
        M.distillation_distance_to_gaussian(dist, _x(10, 3))


def test_public_api_is_flat():
    for name in (
        "bootstrap_fraction",
        "memorization_fraction",
        "reproducibility",
        "denoiser_distance",
        "centred_linearity_score",
        "jacobian_spectrum",
        "Fraction",
    ):
        assert getattr(gd, name) is getattr(M, name)


# ---------------------------------------------------------------------------------------------
# Optimum gap (a measured "sufficiently trained")
# ---------------------------------------------------------------------------------------------


def test_optimum_gap_is_zero_for_the_optimum_and_the_gaussian_loss_is_exact(gen):
    train = torch.randn(30, 5, generator=gen, dtype=torch.float64) * torch.tensor(
        [2.0, 1.0, 0.5, 0.3, 0.1], dtype=torch.float64
    )
    emp = gd.EmpiricalDenoiser(train)
    g = gd.optimum_gap(emp, train, generator=tgen(1), n_draws=512)
    assert g.excess == 0.0 and g.excess_se == 0.0 and g.loss == g.loss_optimum
    # Independent route: for the training set's own Gaussian fit and x0 uniform on the set, the
    # expected squared error at sigma is sum_k l_k s^2 / (l_k + s^2) (the empirical law has
    # exactly the fitted mean and covariance). A nearly fixed sigma (p_std tiny) makes the
    # Monte-Carlo mean comparable with it; the tolerance is 4 standard errors, the per-draw spread
    # measured on independent draws of the same loss.
    gauss = gd.GaussianDenoiser.fit(train)
    s, sd = math.exp(-0.5), float(train.std())
    n_draws = 20000
    g = gd.optimum_gap(gauss, train, generator=tgen(2), n_draws=n_draws, p_mean=-0.5, p_std=1e-9)
    lam = torch.linalg.eigvalsh(torch.cov(train.T, correction=0))
    weight = (s**2 + sd**2) / (s * sd) ** 2 / 5
    exact = float((lam * s**2 / (lam + s**2)).sum()) * weight
    gen2 = tgen(7)
    x0 = train[torch.randint(30, (n_draws,), generator=gen2)]
    per_draw = weight * ((gauss(x0 + s * torch.randn(x0.shape, generator=gen2, dtype=x0.dtype), s) - x0) ** 2).sum(1)
    assert float(per_draw.mean()) == pytest.approx(exact, abs=4 * float(per_draw.std()) / math.sqrt(n_draws))
    assert g.loss == g.loss_gaussian
    assert abs(g.loss_gaussian - exact) < 4 * float(per_draw.std()) / math.sqrt(n_draws)
    assert g.loss_optimum < g.loss_gaussian and g.gaussian_share == pytest.approx(1.0)


def test_optimum_gap_of_a_worse_denoiser_is_positive(gen):
    train = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    identity = lambda x, s: x  # noqa: E731
    g = gd.optimum_gap(identity, train, generator=tgen(3), n_draws=256)
    assert g.excess > 10 * g.excess_se > 0 and g.gaussian_share > 1


def test_optimum_gap_bad_input(gen):
    train = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    den = gd.EmpiricalDenoiser(train)
    with pytest.raises(ValueError, match="train: needs at least 2"):
        gd.optimum_gap(den, train[:1], generator=tgen())
    with pytest.raises(ValueError, match="n_draws"):
        gd.optimum_gap(den, train, generator=tgen(), n_draws=1)
    with pytest.raises(ValueError, match="p_std"):
        gd.optimum_gap(den, train, generator=tgen(), p_std=0.0)
    with pytest.raises(ValueError, match="denoiser: must return"):
        gd.optimum_gap(lambda x, s: x[:, :2], train, generator=tgen())
    with pytest.raises(ValueError, match="train: all its entries are equal"):
        gd.optimum_gap(den, torch.ones(5, 4, dtype=torch.float64), generator=tgen())
