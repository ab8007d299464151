"""The closed forms at extreme sigma (issue 16, problem 4).

Where the answer is representable in the model's dtype it is right (checked against a float64
evaluation of the model's own parameters, or the exact limits: sigma -> inf gives the mean,
sigma -> 0 the nearest training point); where it is not, the call raises ``ValueError`` naming
``sigma`` and saying why. Never a silent NaN or inf. The regression tests first (each one
returned NaN, -inf or a wrong message before the shared treatment of
``gaussdiff._checks.check_sigma_squared`` and ``Denoiser._evaluate``), then a property test over
sigma from 1e-40 to 1e30.
"""

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussdiff as gd
from gaussdiff import kernels
from gaussdiff._checks import check_sigma, check_sigma_squared

F32, F64 = torch.float32, torch.float64


def _problem(dtype, n=50, d=4, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(n, d, generator=g, dtype=F64).to(dtype)
    x = torch.randn(b, d, generator=g, dtype=F64).to(dtype)
    return data, x


def _nearest(data, x):
    """Index of the nearest training point of every query, from exact float64 differences."""
    d2 = ((x.to(F64)[:, None] - data.to(F64)[None]) ** 2).sum(-1)
    return d2.argmin(1)


# =============================================================================================
# the reproductions of issue 16, problem 4
# =============================================================================================


def test_smoothed_empirical_float32_sigma_2e19_is_the_data_mean():
    """Was NaN: sigma**2 = 4e38 overflows float32, so every component's log-determinant was inf
    and every logit -inf. As sigma -> inf every component is equally likely and shrinks to its
    mean: D -> the mean of the training points (the error is O(|x|^2 / sigma^2) = 1e-38)."""
    data, x = _problem(F32)
    m = gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.3)
    out = m(x, 2e19)
    limit = data.to(F64).mean(0).expand_as(x).to(F32)
    torch.testing.assert_close(out, limit, rtol=0, atol=4 * torch.finfo(F32).eps)  # a few float32 ulps
    torch.testing.assert_close(out, m.to(dtype=F64)(x.to(F64), 2e19).to(F32), rtol=0, atol=0)
    # the log density is representable (about -181 for d = 4) and right
    ref = m.to(dtype=F64).log_density(x.to(F64), 2e19)
    torch.testing.assert_close(m.log_density(x, 2e19), ref.to(F32), rtol=2 * torch.finfo(F32).eps, atol=0)


def test_smoothed_empirical_h0_float32_sigma_1e20_is_the_nearest_point():
    """Was NaN: sigma**2 = 1e-40 is a float32 subnormal, ``|x - x_i|^2 / sigma^2`` overflowed and
    every logit was -inf. As sigma -> 0 the h = 0 mixture is the empirical distribution, whose
    denoiser is the nearest training point, exactly (the weights are 1 and exact zeros)."""
    data, x = _problem(F32)
    m = gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.0)
    assert torch.equal(m(x, 1e-20), data[_nearest(data, x)])
    # the score (~|x - x_i| / sigma^2 = 1e40) and the log density (~ -1e40) are not float32 numbers
    with pytest.raises(ValueError, match=r"^sigma: at sigma = 1e-20 the score is not representable in float32"):
        m.score(x, 1e-20)
    with pytest.raises(ValueError, match=r"^sigma: .* log density .* float32 .*use float64"):
        m.log_density(x, 1e-20)
    # ... and in float64 they are right
    m64, x64 = m.to(dtype=F64), x.to(F64)
    near = data.to(F64)[_nearest(data, x)]
    torch.testing.assert_close(m64.score(x64, 1e-20), (near - x64) / 1e-40, rtol=1e-14, atol=0)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_empirical_float32_sigma_1e46_is_the_nearest_point(backend):
    """Was NaN (torch) or "sigma: must be finite and > 0" (numba): 1e-46 rounds to 0 in float32,
    and the rounded value reached the kernels. The kernels work in float64 and now get the
    sigma that was given (1e-46**2 is a normal float64)."""
    data, x = _problem(F32)
    E = gd.EmpiricalDenoiser(data, backend=backend)
    near = data[_nearest(data, x)]
    assert torch.equal(E(x, 1e-46), near)
    assert torch.equal(E(x, torch.full((3,), 1e-46, dtype=F64)), near)  # a float64 tensor too
    # the log density ~ -|x - x_i|^2 / 2e-92 is not a float32 number: a clear error
    with pytest.raises(ValueError, match=r"^sigma: at sigma = 1e-46 the log density is not representable in float32"):
        E.log_density(x, 1e-46)
    # at a training point the score is exactly 0 and the log density finite
    assert torch.equal(E.score(data[:2], 1e-46), torch.zeros(2, 4))
    lp = E.log_density(data[:2], 1e-46).to(F64)
    ref = -math.log(50) - 2 * (math.log(2 * math.pi) + 2 * math.log(1e-46))
    torch.testing.assert_close(lp, torch.full((2,), ref, dtype=F64), rtol=1e-7, atol=0)
    # a float32 tensor holding 1e-46 holds 0: that, and only that, is refused as non-positive
    with pytest.raises(ValueError, match=r"^sigma: must be > 0, got min 0.0"):
        E(x, torch.full((3,), 1e-46, dtype=F32))


def test_gaussian_float32_log_density_at_sigma_2e19_is_finite_and_right():
    """Was -inf: ``l + sigma**2`` overflows float32 and ``log`` of it is inf. The value is
    -d/2 log(2 pi sigma^2) - |x - mu|^2 / (2 sigma^2) + O(l / sigma^2): about -272 for d = 6."""
    data, x = _problem(F32, d=6)
    g = gd.GaussianDenoiser.fit(data)
    for s in (2e19, 1e25, 1e30):
        lp = g.log_density(x, s)
        asym = -3 * (math.log(2 * math.pi) + 2 * math.log(s))
        torch.testing.assert_close(lp.to(F64), torch.full((3,), asym, dtype=F64), rtol=1e-6, atol=0)
        ref = g.to(dtype=F64).log_density(x.to(F64), s)
        torch.testing.assert_close(lp, ref.to(F32), rtol=2 * torch.finfo(F32).eps, atol=0)
    assert abs(float(g.log_density(x, 2e19)[0]) + 272.17) < 0.01
    # the denoiser is the mean, the score ~ 1e-38 * (x - mu) underflows to (nearly) 0
    torch.testing.assert_close(g(x, 2e19), g.mean.expand_as(x), rtol=0, atol=1e-6)
    assert bool(torch.isfinite(g.score(x, 2e19)).all())


def test_gaussian_rank_deficient_float32_tiny_sigma_is_the_projection():
    """Was NaN: with sigma**2 = 1e-50 flushed to 0 in float32, a zero eigenvalue gave 0 / 0. As
    sigma -> 0 the Gaussian denoiser projects onto the span of the covariance."""
    data, x = _problem(F32, n=3, d=6)  # N < d: rank 2
    g = gd.GaussianDenoiser.fit(data)
    U, l = g.eigenvectors.to(F64), g.eigenvalues.to(F64)
    P = U[:, l > 0] @ U[:, l > 0].T
    proj = g.mean.to(F64) + (x.to(F64) - g.mean.to(F64)) @ P
    for s in (1e-25, 1e-40):
        torch.testing.assert_close(g(x, s).to(F64), proj, rtol=0, atol=1e-5)
        J = g.jacobian(s).to(F64)
        torch.testing.assert_close(J, P, rtol=0, atol=1e-5)
        assert abs(float(g.effective_dim(s)) - 2) < 1e-5
        with pytest.raises(ValueError, match=r"^sigma: .*score.*float32"):
            g.score(x, s)  # ~ 1 / sigma^2 off the span


def test_numba_kernel_refuses_with_the_reason():
    """The numba backend refused a positive 1e-46 with "must be finite and > 0"; it now gets
    1e-46 (above). Where ``1/(2 sigma^2)`` really leaves float64 every kernel and every closed
    form says so, naming sigma."""
    data, x = _problem(F64)
    prep = kernels.prepare_data(data)
    xn = np.ascontiguousarray(x.numpy())
    mean = kernels.empirical_posterior_numba(xn, prep, 1e-46)[0]  # (centred, then + centre: 1 ulp)
    np.testing.assert_allclose(mean, data[_nearest(data, x)], rtol=0, atol=4 * np.finfo(np.float64).eps)
    for backend, call in (
        ("numba", lambda s: kernels.empirical_posterior_numba(xn, prep, s)),
        ("torch", lambda s: kernels.empirical_posterior_torch(x, kernels.prepare_data(data, backend="torch"), s)),
    ):
        with pytest.raises(ValueError, match=r"^sigma: 1e-170 underflows float64 when squared"):
            call(1e-170)
        with pytest.raises(ValueError, match=r"^sigma: 1e\+200 overflows float64 when squared"):
            call(1e200)
        with pytest.raises(ValueError, match=r"^sigma: "):
            call(0.0)
    for dtype in (F32, F64):
        data, x = _problem(dtype)
        for model in (gd.GaussianDenoiser.fit(data), gd.EmpiricalDenoiser(data)):
            with pytest.raises(ValueError, match=r"^sigma: 1e-170 underflows float64 when squared"):
                model(x, 1e-170)


def test_the_other_sigma_dependent_methods():
    """The same treatment reaches every method with a sigma (each was NaN, -inf or refused a
    positive sigma before): responsibilities, the exact flow and its moments, the effective
    dimension and count, the posterior weights and the empirical Jacobian."""
    data, x = _problem(F32, n=3, d=6)  # rank 2
    G = gd.GaussianDenoiser.fit(data)
    mu, l, U = G.mean.to(F64), G.eigenvalues.to(F64), G.eigenvectors.to(F64)

    def ratio(s0, s1):  # (G4) in float64 from G's own eigendecomposition
        return torch.sqrt((l + s1**2) / (l + s0**2))

    M = gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.0)
    E = gd.EmpiricalDenoiser(data)
    onehot = torch.nn.functional.one_hot(_nearest(data, x), 3).to(F32)
    assert torch.equal(M.responsibilities(x, 1e-20), onehot)
    assert torch.equal(E.posterior_weights(x, 1e-46), onehot)
    assert torch.equal(E.effective_count(x, 1e-46), torch.ones(3))
    assert torch.equal(G.effective_dim(torch.tensor([1e-46, 1e39], dtype=F64)), torch.tensor([2.0, 0.0]))
    for s0, s1 in ((1e-25, 0.0), (2e19, 1.0), (1.0, 1e-30)):  # the float32 flow is the float64 one
        want = mu + ((x.to(F64) - mu) @ U * ratio(s0, s1)) @ U.T
        torch.testing.assert_close(G.flow(x, s0, s1), want.to(F32), rtol=1e-5, atol=1e-5)
        mean, cov = G.flow_output_moments(s0, s1)
        torch.testing.assert_close(mean, (mu - (mu @ U * ratio(s0, s1)) @ U.T).to(F32), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cov, ((U * s0**2 * ratio(s0, s1) ** 2) @ U.T).to(F32), rtol=1e-5, atol=1e-5)
    # the empirical Jacobian Cov / sigma^2 at an exact tie of two points: (y0 - y1)(y0 - y1)^T / 4
    # / sigma^2 at every sigma (the kernels' lse ~ -1e19 used to round the weights' log 2 away)
    for dtype in (F32, F64):
        E2 = gd.EmpiricalDenoiser(torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]], dtype=dtype))
        q = torch.tensor([[0.5, 0.3], [0.2, 0.1]], dtype=dtype)
        for s in (1e-3, 1e-8, 1e-15):
            J = E2.jacobian(q, s).to(F64) * s**2
            want = torch.zeros(2, 2, 2, dtype=F64)
            want[0, 0, 0] = 0.25
            # float32: the output's rounding; float64: the weights' u64 |lse| (2e-11 at 1e-3)
            torch.testing.assert_close(J, want, rtol=0, atol=1e-7 if dtype == F32 else 1e-9)
    # a denoiser that computes in its own dtype only (a network) gets sigma rounded to it, and is
    # told where that rounding flushes sigma to 0
    net = gd.NetworkDenoiser(gd.build_network("mlp", (6,), width=8), (6,))
    with pytest.raises(ValueError, match=r"^sigma: 1e-46 underflows float32 \(this denoiser computes in float32\)"):
        net.score(x, 1e-46)
    with pytest.raises(ValueError, match=r"^sigma: at sigma = 1e-30 the score is not representable in float32"):
        net.score(x, 1e-30)


def test_check_sigma_squared():
    """Ordinary sigma: exactly :func:`check_sigma`'s tensor (so the closed forms are bit for bit
    what they were); extreme sigma: float64 and unrounded; beyond float64: refused."""
    for dtype in (F32, F64):
        for sigma in (1e-3, 0.1, 1.0, 80.0, torch.linspace(0.1, 2.0, 4, dtype=F64), torch.tensor(0.5)):
            a = check_sigma(sigma, 4, dtype=dtype, device="cpu")
            b = check_sigma_squared(sigma, 4, dtype=dtype, device="cpu")
            assert b.dtype == dtype and torch.equal(a, b)
    for sigma in (1e-20, 2e19, 1e39, torch.tensor([1e-46, 1.0], dtype=F64)):
        s = check_sigma_squared(sigma, 2, dtype=F32, device="cpu")
        assert s.dtype == F64 and torch.equal(s, torch.as_tensor(sigma, dtype=F64).expand(2))
    assert check_sigma_squared(1e-20, 2, dtype=F64, device="cpu").dtype == F64
    zero = check_sigma_squared(torch.tensor([0.0, 1e-30]), 2, dtype=F32, device="cpu", allow_zero=True)
    assert zero.dtype == F64  # the nonzero one is extreme
    for bad, msg in (
        (float("nan"), "must be finite"),
        (-1.0, "must be > 0"),
        (0.0, "must be > 0"),
        (torch.tensor([1.0, float("inf")]), "must be finite"),
        (1e-160, "underflows float64 when squared"),
        (1e160, "overflows float64 when squared"),
    ):
        with pytest.raises(ValueError, match=f"^sigma: .*{msg}"):
            check_sigma_squared(bad, 2, dtype=F32, device="cpu")


# =============================================================================================
# property test: sigma from 1e-40 to 1e30, float32 and float64
# =============================================================================================

KINDS = ("gaussian", "mixture_full", "smoothed_h0", "smoothed_h03", "empirical_numba", "empirical_torch")
_D, _N = 4, 12


@functools.cache
def _model(kind, dtype):
    g = torch.Generator().manual_seed(7)
    data = torch.randn(_N, _D, generator=g, dtype=F64).to(dtype)
    data[:, 3] = data[:, 2]  # a rank-deficient covariance for the Gaussian
    if kind == "gaussian":
        return gd.GaussianDenoiser.fit(data)
    if kind == "mixture_full":
        A = torch.randn(3, _D, _D, generator=g, dtype=F64)
        covs = A @ A.transpose(1, 2) / _D + 0.5 * torch.eye(_D, dtype=F64)  # full rank
        w = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
        return gd.GaussianMixtureDenoiser(w.to(dtype), data[:3], covs.to(dtype), cov_type="full")
    if kind.startswith("smoothed"):
        return gd.GaussianMixtureDenoiser.smoothed_empirical(data, 0.3 if kind == "smoothed_h03" else 0.0)
    return gd.EmpiricalDenoiser(data, backend=kind.split("_")[1])


def _components(model):
    """Every model as a mixture of Gaussians, in float64 from its own parameters: log-weights
    (K,), means (K, d), eigenvalues (K, d) and eigenvectors (K, d, d) of the covariances. The
    empirical distribution is the mixture of point masses (zero covariance)."""
    if isinstance(model, gd.GaussianDenoiser):
        return (
            torch.zeros(1, dtype=F64),
            model.mean.reshape(1, -1).to(F64),
            model.eigenvalues.to(F64)[None],
            model.eigenvectors.to(F64)[None],
        )
    if isinstance(model, gd.GaussianMixtureDenoiser):
        lam, U = torch.linalg.eigh(model.component_covariances(dtype=F64))
        return model.log_weights.to(F64), model.component_means.to(F64), lam.clamp_min(0), U
    n, d = model.data.shape
    eye = torch.eye(d, dtype=F64).expand(n, d, d)
    return torch.full((n,), -math.log(n), dtype=F64), model.data.to(F64), torch.zeros(n, d, dtype=F64), eye


def _reference(model, x, s):
    """(M1)/(M2) in float64, term by term: for every query the outputs ``D``, ``score``,
    ``log p`` and the per-component terms the tolerances are made of. ``s`` (B,) float64: at
    1e-40 <= sigma <= 1e30 every ``sigma**2`` is a normal float64, so nothing here overflows."""
    log_w, mu, lam, U = _components(model)
    v = x[:, None, :] - mu[None]  # (B, K, d): exact differences of the float32 values
    c = torch.einsum("bkd,kde->bke", v, U)
    var = lam[None] + s[:, None, None] ** 2
    quad, logdet = (c * c / var).sum(-1), torch.log(var).sum(-1)
    logit = log_w[None] - 0.5 * (quad + logdet)
    w = torch.softmax(logit, 1)
    den_k = mu[None] + torch.einsum("kde,bke->bkd", U, c * lam[None] / var)
    score_k = -torch.einsum("kde,bke->bkd", U, c / var)
    den, score = torch.einsum("bk,bkd->bd", w, den_k), torch.einsum("bk,bkd->bd", w, score_k)
    logp = torch.logsumexp(logit, 1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return dict(
        den=den, score=score, logp=logp, w=w, log_w=log_w, quad=quad, logdet=logdet, den_k=den_k,
        score_k=score_k, mu=mu, vmin=var.amin(-1),
    )  # fmt: skip


def _tolerances(model, x, s, r):
    """Per query (B,) bounds on |computed - reference| for ``den``, ``score``, ``logp``.

    ``u`` is the unit round-off of the model's dtype; ``C = 4 (d + 2)`` counts the roundings of
    one component's terms (a d-term rotation, a square, a division and a d-term sum, each
    relative ``u``; the float64 reference's own error is ``u64 / u`` times smaller, or the same
    order for a float64 model, also inside ``C``). Every bound ends with the smallest normal
    number of the dtype: smaller values come back subnormal or 0 (at sigma = 1e30 the float32
    score ~1e-60 is 0).

    * Every model as a mixture (:func:`_components`; rounding sigma to the dtype is one more
      relative ``u`` in ``sigma^2``, inside ``C``): a logit ``l_k = log w_k - (quad_k + logdet_k) / 2`` is
      off by at most ``dl_k = C u (quad_k + |logdet_k| + |log w_k| + 1 + sqrt(d quad_k)
      (|x| + |mu_k|) / sqrt(min var_k))`` (the last term: ``x - mu_k`` carries an absolute error
      ``u (|x| + |mu_k|)`` per coordinate, which moves ``quad_k`` by ``2 sqrt(quad_k) |dv| /
      sqrt(min var)``). With ``|eps_k| <= dl_k`` the weights become ``w_k e^eps_k / Z``,
      ``|log Z| <= L = logsumexp(log w_k + dl_k)``, so ``|dw_k| <= w_k expm1(dl_k + L)``: the
      log density is off by ``L`` and the denoiser by ``sum_k |dw_k| |D_k - D|`` plus each
      component denoiser's own ``C u (|x| + |mu_k|)``; the score likewise with the component
      scores, whose own error is ``C u (|score_k| + sqrt(d) (|x| + |mu_k|) / min var_k)``.
      Where float32 cannot decide a near-tie at small sigma (``dl_k`` of order 1) the bound
      grows to the distance between the competing components: that is float32's conditioning,
      not slack. Both are capped by the convex hull of the components (``max_k |D_k - D|``).
    * Empirical, in addition, the GEMMs of :mod:`gaussdiff.kernels` bounded by the kernels' own
      certificate, as ``tests/test_kernels.py`` uses it: ``|dD| <= 2 cert max_i |x_i - D|`` plus
      the second GEMM's rounding ``4 sqrt(N) u max|x_i|``; the log-sum-exp is off by at most
      ``eps rho <= 2 sqrt(d + 2) cert``; the score ``(D - x) / sigma^2`` by ``|dD| / sigma^2``
      (its own rounding ``u (|D| + |x|) / sigma^2`` is in the mixture bound, ``min var = sigma^2``).
    """
    dtype = model.dtype
    u, tiny = torch.finfo(dtype).eps / 2, torch.finfo(dtype).tiny
    d = x.shape[1]
    C = 4 * (d + 2)
    xn = x.norm(dim=1)
    mun = r["mu"].norm(dim=1)[None]  # (1, K)
    w, quad = r["w"], r["quad"]
    dl = C * u * (quad + r["logdet"].abs() + r["log_w"].abs()[None] + 1)
    dl = dl + C * u * torch.sqrt(d * quad) * (xn[:, None] + mun) / r["vmin"].sqrt()
    L = torch.logsumexp(r["log_w"][None] + dl, 1)
    dw = torch.where(w > 0, w * torch.expm1((dl + L[:, None]).clamp(max=700.0)), torch.zeros_like(w))

    def mixed(parts, mean, own):  # the weights' error on the components, capped by their hull; their own
        spread = (parts - mean[:, None]).norm(dim=2)
        return torch.minimum((dw * spread).sum(1), spread.amax(1)) + own.amax(1)

    den = mixed(r["den_k"], r["den"], C * u * (xn[:, None] + mun))
    own_score = C * u * (r["score_k"].norm(dim=2) + math.sqrt(d) * (xn[:, None] + mun) / r["vmin"])
    score = mixed(r["score_k"], r["score"], own_score)
    logp = L + C * u * (r["logp"].abs() + 1)
    if isinstance(model, gd.EmpiricalDenoiser):  # plus the rounding of the kernels' GEMMs
        cert = torch.as_tensor(np.asarray(model.last_info["cert"]), dtype=F64)
        R = (r["mu"][None] - r["den"][:, None]).norm(dim=2).amax(1)
        gemm = 2 * cert * R + 4 * math.sqrt(_N) * u * float(mun.max())
        den, score, logp = den + gemm, score + gemm / s**2, logp + 2 * math.sqrt(d + 2) * cert
    return den + tiny, score + tiny, logp + tiny


def _call(fn):
    """The output, or the ValueError, which must name sigma."""
    try:
        return fn()
    except ValueError as exc:
        assert str(exc).startswith("sigma: ") and "not representable" in str(exc), str(exc)
        return exc


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(KINDS),
    dtype=st.sampled_from([F32, F64]),
    log_sigma=st.lists(st.floats(-40.0, 30.0), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    near=st.sampled_from([None, 0.0, 1e-6, 1e-2]),
)
def test_extreme_sigma_right_or_refused(kind, dtype, log_sigma, seed, near):
    """For every closed form, both dtypes and sigma from 1e-40 to 1e30 (one float, or a (3,)
    tensor mixing levels): the denoiser, score and log density are finite and within the
    tolerances of :func:`_tolerances` of the float64 reference, or the call raises ``ValueError``
    naming sigma, and then only because the reference really is out of the dtype's range. The
    denoiser (a convex combination / a shrinkage) is always representable: never refused.
    ``near``: queries at (or this close to) training points, where small sigma is decided."""
    model = _model(kind, dtype)
    g = torch.Generator().manual_seed(seed)
    B = 3
    if near is None:
        x = 2 * torch.randn(B, _D, generator=g, dtype=F64)
    else:
        pts = _components(model)[1]
        x = pts[torch.randint(0, pts.shape[0], (B,), generator=g)] + near * torch.randn(B, _D, generator=g, dtype=F64)
    x = x.to(dtype)
    sig = 10.0 ** np.asarray(log_sigma)
    sigma = float(sig[0]) if len(sig) == 1 else torch.tensor(np.resize(sig, B), dtype=F64)
    s = torch.as_tensor(sigma, dtype=F64).expand(B)
    ref = _reference(model, x.to(F64), s)
    top = torch.finfo(dtype).max
    outputs = {
        "den": _call(lambda: model(x, sigma)),
        "score": _call(lambda: model.score(x, sigma)),
        "logp": _call(lambda: model.log_density(x, sigma)),
    }
    if isinstance(model, gd.EmpiricalDenoiser):  # the tolerances read the kernels' certificate
        model(x, sigma)
    tols = dict(zip(("den", "score", "logp"), _tolerances(model, x.to(F64), s, ref)))
    assert not isinstance(outputs["den"], Exception), outputs["den"]
    for name, out in outputs.items():
        want, tol = ref[name].reshape(B, -1), tols[name]
        if isinstance(out, Exception):  # refused: only where the answer is out of range
            assert float((want.abs().amax(1) + tol).max()) > 0.5 * top, (name, str(out))
            continue
        assert out.dtype == dtype and bool(torch.isfinite(out).all()), (name, out)
        err = (out.to(F64).reshape(B, -1) - want).norm(dim=1)
        assert bool((err <= tol).all()), (name, kind, dtype, sigma, err, tol)
