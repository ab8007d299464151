"""theory/: every derivation simplifies to zero, and every formula agrees with the gaussdiff
function that implements it (float64, random points). Run with ``-s`` to see the measured
maximum relative errors ("agree" lines)."""

import math
import pathlib
import sys

import numpy as np
import pytest
import sympy as sp
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # theory/ is a top-level package of the repository
    sys.path.insert(0, str(ROOT))

import gaussdiff as gd  # noqa: E402
import theory  # noqa: E402
from theory import conventions, discretization, gaussian, mixture, regimes, tweedie  # noqa: E402

F64 = torch.float64
TOL = 1e-12


def agree(name, got, want, tol=TOL):
    """Assert max |got - want| / max |want| <= tol (relative to the largest entry) and print it."""
    got = np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want.detach().cpu() if isinstance(want, torch.Tensor) else want, dtype=np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))
    print(f"agree {name}: max rel err {err:.2e}")
    assert err <= tol, f"{name}: max relative error {err:.3e} > {tol:.0e}"
    return err


def lam(expr, *symbols):
    return sp.lambdify(symbols, expr, modules="numpy")


def random_cov(rng, d, rank=None):
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / (rank or d) + (0 if rank else 0.1) * np.eye(d)


# =============================================================================================
# Symbolic: every check is exactly zero
# =============================================================================================


@pytest.mark.parametrize("label", list(theory.LABELS))
def test_symbolic_check_is_zero(label):
    result = theory.check(label)
    assert theory.is_zero(result), f"({label}) does not simplify to 0: {result}"


def test_gaussian_integral_lemma():
    assert theory.check_gaussian_integral() == 0


def test_labels_are_cited_by_the_library_and_indexed():
    src = "".join(
        (ROOT / "gaussdiff" / f).read_text() for f in ("schedules.py", "denoisers.py", "empirical.py", "predictions.py")
    )
    readme = (ROOT / "theory" / "README.md").read_text()
    for label in theory.LABELS:
        assert f"({label})" in readme, label
    for label in (
        "C1",
        "C2",
        "C3",
        "C4",
        "C5",
        "T1",
        "G1",
        "G2",
        "G4",
        "G5",
        "M1",
        "M2",
        "E1",
        "E2",
        "E3",
        "R1",
        "R2",
        "R3",
        "P1",
        "P2",
        "P4",
        "P5",
    ):
        assert label in src, label


# =============================================================================================
# Numerical agreement with gaussdiff
# =============================================================================================


def _library_schedule(name):
    return {
        "EDM": gd.EDM(),
        "VP": gd.VP(0.1, 19.9),
        "OU": gd.OU(),
        "RectifiedFlow": gd.RectifiedFlow(),
        "VPDiscrete": gd.VPDiscrete(),
    }[name]


def _numeric_params(name, sched, t):
    """Substitution for the symbolic schedule's parameters at times t (VPDiscrete: its segment)."""
    if name == "VP":
        return {conventions.beta_min: sched.beta_min, conventions.beta_d: sched.beta_d}
    if name == "VPDiscrete":
        # one segment at a time: caller passes t inside [i, i+1)
        rates = -np.log1p(-np.asarray(sched.betas))
        i = int(np.floor(t))
        return {conventions.seg_i: i, conventions.seg_L: float(rates[:i].sum()), conventions.seg_rate: float(rates[i])}
    return {}


@pytest.mark.parametrize("name", conventions.SCHEDULES)
def test_C1_C5_C6_schedules_match_library(name, rng):
    sched = _library_schedule(name)
    sc = conventions.schedule(name)
    a_sym, b_sym = conventions.ode_coefficients(name)
    lo, hi = {
        "EDM": (0.01, 80.0),
        "VP": (1e-3, 1.0),
        "OU": (1e-3, 3.0),
        "RectifiedFlow": (1e-3, 0.98),
        "VPDiscrete": (0.2, 999.0),
    }[name]
    ts = rng.uniform(lo, hi, 6)
    got, want = [], []
    for tv in ts:
        sub = _numeric_params(name, sched, tv)
        tt = torch.tensor(tv, dtype=F64)
        a, b, sig, s = sched.ode_coefficients(tt)
        for key, lib in (
            ("s", sched.s(tt)),
            ("sigma", sched.sigma(tt)),
            ("ds", sched.ds(tt)),
            ("dsigma", sched.dsigma(tt)),
        ):
            got.append(float(lib))
            want.append(float(sc[key].subs(sub).subs(conventions.t, tv).evalf(30)))
        for lib, expr in ((a, a_sym), (b, b_sym)):
            got.append(float(lib))
            want.append(float(expr.subs(sub).subs(conventions.t, tv).evalf(30)))
        sig_v = float(sched.sigma(tt))
        got.append(float(sched.t_of_sigma(torch.tensor(sig_v, dtype=F64))))
        want.append(float(sc["t_of_sigma"].subs(sub).subs(conventions.sigma, sig_v).evalf(30)))
    agree(f"(C1/C5/C6) {name}", np.array(got), np.array(want), 1e-11)


def test_C2_C3_C4_converters_match_library(rng):
    c = conventions.conversions()
    B, d = 7, 3
    x = torch.tensor(rng.standard_normal((B, d)), dtype=F64)
    D = torch.tensor(rng.standard_normal((B, d)), dtype=F64)
    sig = torch.tensor(rng.uniform(0.05, 20.0, B), dtype=F64)
    X, Dn, S = x.numpy(), D.numpy(), sig.numpy()[:, None]
    xs, Ds, ss = conventions.x, conventions.D, conventions.sigma

    def f(key, other):
        return lam(c[key], xs, ss, other)

    score = gd.score_from_denoiser(D, x, sig)
    agree("(C2) score", score, f("score", Ds)(X, S, Dn))
    agree(
        "(C2) denoiser_from_score",
        gd.denoiser_from_score(score, x, sig),
        f("denoiser_from_score", conventions.score_sym)(X, S, score.numpy()),
    )
    eps = gd.eps_from_denoiser(D, x, sig)
    agree("(C3) eps", eps, f("eps", Ds)(X, S, Dn))
    agree(
        "(C3) denoiser_from_eps",
        gd.denoiser_from_eps(eps, x, sig),
        f("denoiser_from_eps", conventions.eps_sym)(X, S, eps.numpy()),
    )
    v = gd.velocity_from_denoiser(D, x, sig)
    agree("(C4) velocity (posterior form)", v, f("velocity_posterior", Ds)(X, S, Dn))
    agree(
        "(C4) denoiser_from_velocity",
        gd.denoiser_from_velocity(v, x, sig),
        f("denoiser_from_velocity", conventions.v_sym)(X, S, v.numpy()),
    )
    agree("(C4) round trip", gd.denoiser_from_velocity(v, x, sig), D)


def test_C5_schedule_sampler_converges_to_the_sigma_flow(rng):
    """(C5) the same ODE: Heun in OU and rectified-flow time converges, at order 2, to the exact
    sigma-form flow (G4)."""
    den = gd.GaussianDenoiser(torch.zeros(2, dtype=F64), torch.diag(torch.tensor([2.0, 0.3], dtype=F64)))
    x = torch.tensor(rng.standard_normal((3, 2)), dtype=F64) * 5.0
    exact = den.flow(x, 5.0, 0.2)
    for sched in (gd.OU(), gd.RectifiedFlow()):
        errs = []
        for n in (250, 500):
            ts = torch.linspace(float(sched.t_of_sigma(5.0)), float(sched.t_of_sigma(0.2)), n + 1, dtype=F64)
            out = gd.sample_heun(den, x, schedule=sched, ts=ts)
            errs.append(float((out - exact).abs().max() / exact.abs().max()))
        order = math.log2(errs[0] / errs[1])
        print(f"agree (C5) Heun in {type(sched).__name__} time vs (G4): rel err {errs[1]:.2e}, order {order:.2f}")
        assert errs[1] < 1e-5 and abs(order - 2) < 0.1


def test_T1_tweedie_discrete_prior(rng):
    pr = tweedie.discrete_prior_1d(3)
    args = (tweedie.x, tweedie.sigma, *pr["w"], *pr["a"])
    score_f, mean_f = lam(pr["score"], *args), lam(pr["posterior_mean"], *args)
    w = rng.dirichlet(np.ones(3))
    a = rng.normal(0, 2, 3)
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor(w), torch.tensor(a[:, None]), torch.zeros(3, dtype=F64), cov_type="isotropic"
    )
    x = rng.normal(0, 3, 9)
    sig = rng.uniform(0.3, 4.0, 9)
    xt, st = torch.tensor(x[:, None]), torch.tensor(sig)
    agree("(T1) score vs dlog p/dx", mix.score(xt, st)[:, 0], score_f(x, sig, *w, *a))
    agree("(T1) denoiser vs posterior mean", mix(xt, st)[:, 0], mean_f(x, sig, *w, *a))
    agree("(T1) x + sigma^2 score = D", xt[:, 0] + st**2 * mix.score(xt, st)[:, 0], mean_f(x, sig, *w, *a))


def test_T2_general_covariance_via_whitening(rng):
    """(T2) E[x0|x] = x + C grad log p(x) for x = x0 + n, n ~ N(0, C), with gaussdiff's Gaussian
    denoiser and score in the whitened variable z = L^{-1} x (C = L L^T)."""
    d = 3
    S, C, mu = random_cov(rng, d), random_cov(rng, d), rng.standard_normal(d)
    L = np.linalg.cholesky(C)
    Li = np.linalg.inv(L)
    den = gd.GaussianDenoiser(torch.tensor(Li @ mu), torch.tensor(Li @ S @ Li.T))
    x = rng.standard_normal((5, d)) * 2
    z = torch.tensor(x @ Li.T)
    post_mean = den(z, 1.0).numpy() @ L.T  # E[x0 | x] = L E[L^-1 x0 | z]
    grad_x = den.score(z, 1.0).numpy() @ Li  # grad_x log p = L^-T grad_z log p_z
    agree("(T2) E[x0|x] = x + C grad log p", x + grad_x @ C.T, post_mean)
    want = mu + (x - mu) @ np.linalg.solve(S + C, S)  # mu + S (S + C)^-1 (x - mu), row form
    agree("(T2) vs linear-Gaussian posterior", post_mean, want)


def test_T3_jacobian_is_posterior_covariance(rng):
    d = 4
    cov = random_cov(rng, d)
    den = gd.GaussianDenoiser(torch.tensor(rng.standard_normal(d)), torch.tensor(cov))
    for s in (0.1, 1.3, 7.0):
        post_cov = np.linalg.inv(np.linalg.inv(cov) + np.eye(d) / s**2)
        agree(f"(T3) Gaussian jacobian sigma={s}", den.jacobian(s), post_cov / s**2)
    pr = tweedie.discrete_prior_1d(3)
    args = (tweedie.x, tweedie.sigma, *pr["w"], *pr["a"])
    var_f = lam(pr["posterior_var"] / tweedie.sigma**2, *args)
    pts = rng.normal(0, 2, 3)
    emp = gd.EmpiricalDenoiser(torch.tensor(pts[:, None]))
    x, sig = rng.normal(0, 2, 6), 0.9
    J = emp.jacobian(torch.tensor(x[:, None]), sig)[:, 0, 0]
    agree("(T3) empirical jacobian vs Var/sigma^2", J, var_f(x, sig, 1 / 3, 1 / 3, 1 / 3, *pts))


def _gauss_setup(rng, d=5, rank=None):
    cov = random_cov(rng, d, rank)
    l, U = np.linalg.eigh(cov)
    l = np.clip(l, 0, None)
    mu = rng.standard_normal(d)
    return gd.GaussianDenoiser(torch.tensor(mu), torch.tensor(cov)), mu, l, U


@pytest.mark.parametrize("rank", [None, 3])
def test_G1_G2_G3_gaussian_closed_forms(rng, rank):
    den, mu, l, U = _gauss_setup(rng, 5, rank)
    x = rng.standard_normal((6, 5)) * 2
    sig = rng.uniform(0.05, 5.0, 6)
    xt, st = torch.tensor(x), torch.tensor(sig)
    y = (x - mu) @ U  # eigen-coordinates
    L, S = l[None, :], sig[:, None]
    fac = lam(gaussian.denoiser_factor(), gaussian.lam, gaussian.sigma)(L, S)
    agree(f"(G2) denoiser rank={rank}", den(xt, st), mu + (fac * y) @ U.T)
    logn = lam(sp.log(gaussian.marginal_density()), gaussian.lam, gaussian.sigma, gaussian.y)
    agree(f"(G1) log density rank={rank}", den.log_density(xt, st), logn(L, S, y).sum(1))
    sf = lam(gaussian.score_factor(), gaussian.lam, gaussian.sigma)(L, S)
    agree(f"(G3) score rank={rank}", den.score(xt, st), (sf * y) @ U.T)
    agree(f"(G3) effective_dim rank={rank}", den.effective_dim(st), fac.sum(1))
    agree(f"(G3) jacobian rank={rank}", den.jacobian(float(sig[0])), (U * fac[0]) @ U.T)


def test_G2_matrix_form_2x2(rng):
    g = gaussian.gaussian_2x2()
    shrink = lam(g["shrink"], *g["entries"], gaussian.sigma)
    post = lam(g["posterior_cov"], *g["entries"], gaussian.sigma)
    cov, mu = random_cov(rng, 2), rng.standard_normal(2)
    den = gd.GaussianDenoiser(torch.tensor(mu), torch.tensor(cov))
    x = rng.standard_normal((4, 2))
    for s in (0.2, 2.0):
        M = np.asarray(shrink(cov[0, 0], cov[0, 1], cov[1, 1], s), dtype=float)
        agree(f"(G2) 2x2 matrix form sigma={s}", den(torch.tensor(x), s), mu + (x - mu) @ M.T)
        Pc = np.asarray(post(cov[0, 0], cov[0, 1], cov[1, 1], s), dtype=float)
        agree(f"(G2/T3) 2x2 posterior cov / sigma^2 = jacobian sigma={s}", den.jacobian(s), Pc / s**2)


def test_G4_G5_exact_flow_and_moments(rng):
    den, mu, l, U = _gauss_setup(rng, 4)
    ratio = lam(gaussian.flow_ratio(), gaussian.lam, gaussian.sigma0, gaussian.sigma1)
    var = lam(gaussian.flow_output_variance(), gaussian.lam, gaussian.sigma0, gaussian.sigma1)
    x = rng.standard_normal((5, 4)) * 3
    for s0, s1 in ((3.0, 0.5), (10.0, 0.0), (0.7, 2.0)):
        r = ratio(l, s0, s1)
        agree(f"(G4) flow {s0}->{s1}", den.flow(torch.tensor(x), s0, s1), mu + ((x - mu) @ U * r) @ U.T)
        m0 = rng.standard_normal(4)
        mean, cov = den.flow_output_moments(s0, s1, start_mean=torch.tensor(m0))
        agree(f"(G5) output cov {s0}->{s1}", cov, (U * var(l, s0, s1)) @ U.T)
        agree(f"(G5) output mean {s0}->{s1}", mean, mu + (U * r) @ (U.T @ (m0 - mu)))


def test_M1_M2_mixture(rng):
    m = mixture.mixture_1d(2)
    args = (mixture.x, mixture.sigma, *m["pi"], *m["mu"], *m["ell"])
    resp_f, den_f = lam(m["resp"][0], *args), lam(m["denoiser"], *args)
    tw_f = lam(m["tweedie"], *args)
    w = rng.dirichlet(np.ones(2))
    mus, ells = rng.normal(0, 2, 2), rng.uniform(0.1, 2.0, 2)
    for cov_type, covs in (("isotropic", ells), ("full", ells[:, None, None])):
        mix = gd.GaussianMixtureDenoiser(
            torch.tensor(w), torch.tensor(mus[:, None]), torch.tensor(covs), cov_type=cov_type
        )
        x, sig = rng.normal(0, 3, 8), rng.uniform(0.1, 3.0, 8)
        xt, st = torch.tensor(x[:, None]), torch.tensor(sig)
        p = (x, sig, *w, *mus, *ells)
        agree(f"(M1) responsibilities {cov_type}", mix.responsibilities(xt, st)[:, 0], resp_f(*p))
        agree(f"(M2) denoiser {cov_type}", mix(xt, st)[:, 0], den_f(*p))
        agree(f"(M2) = Tweedie on the mixture {cov_type}", mix(xt, st)[:, 0], tw_f(*p))


def test_E1_E2_E3_empirical(rng):
    e = mixture.empirical_1d(3)
    args = (mixture.x, mixture.sigma, *e["pts"])
    pts = rng.normal(0, 2, 3)
    emp = gd.EmpiricalDenoiser(torch.tensor(pts[:, None]))
    x, sig = rng.normal(0, 3, 8), rng.uniform(0.2, 3.0, 8)
    xt, st = torch.tensor(x[:, None]), torch.tensor(sig)
    agree("(E1) log density", emp.log_density(xt, st), lam(e["log_density"], *args)(x, sig, *pts))
    agree("(E2) denoiser", emp(xt, st)[:, 0], lam(e["denoiser"], *args)(x, sig, *pts))
    smooth = gd.GaussianMixtureDenoiser.smoothed_empirical(torch.tensor(pts[:, None]), 1e-7)
    agree("(E2) smoothed h=1e-7 -> empirical", smooth(xt, st), emp(xt, st))
    # (E3) in 2-D with 2 points: Jacobian = posterior covariance / sigma^2
    e2 = mixture.empirical_2d()
    cov_f = lam(e2["posterior_cov"] / mixture.sigma**2, *e2["X"], mixture.sigma, *e2["P"][0], *e2["P"][1])
    pts2 = rng.normal(0, 1, (2, 2))
    emp2 = gd.EmpiricalDenoiser(torch.tensor(pts2))
    q = rng.normal(0, 1, (4, 2))
    J = emp2.jacobian(torch.tensor(q), 0.8)
    want = np.stack([np.asarray(cov_f(*qi, 0.8, *pts2[0], *pts2[1]), dtype=float) for qi in q])
    agree("(E3) empirical jacobian 2-D", J, want)


def test_R1_speciation_time(rng):
    f = lam(regimes.speciation_time(), regimes.Lambda)
    m, v = rng.standard_normal(6) * 3, 0.7
    cov = np.outer(m, m) + v * np.eye(6)
    agree("(R1) speciation_time(cov)", gd.speciation_time(torch.tensor(cov)), f(m @ m + v))
    agree("(R1) speciation_time(eigenvalues)", gd.speciation_time(np.linalg.eigvalsh(cov)), f(m @ m + v))
    t_s = gd.speciation_time(25.0)
    agree("(R1) sigma_S^2 = Lambda - 1", float(gd.OU().sigma(t_s)) ** 2, 24.0)


def test_R2_symmetry_breaking_against_mixture_curvature(rng):
    f = lam(regimes.symmetry_breaking_time(), regimes.m2, regimes.v)
    d, v = 4, 0.6
    m = rng.standard_normal(d) * 2
    t_star = gd.symmetry_breaking_time(m @ m, v)
    agree("(R2) symmetry_breaking_time", t_star, f(m @ m, v))
    mix = gd.GaussianMixtureDenoiser(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.tensor(np.stack([m, -m])),
        torch.tensor([v, v], dtype=F64),
        cov_type="isotropic",
    )
    u = torch.tensor(m / np.linalg.norm(m))

    def curvature(t):
        sig = float(gd.OU().sigma(torch.tensor(t, dtype=F64)))
        H = torch.autograd.functional.jacobian(lambda z: mix.score(z[None], sig)[0], torch.zeros(d, dtype=F64))
        return float(u @ H @ u) * (v + sig**2)  # in units of the curvature scale

    c0 = curvature(t_star)
    print(f"agree (R2) curvature of log p at t*: {abs(c0):.2e} (relative to 1/(v + sigma^2))")
    assert abs(c0) < 1e-12
    assert curvature(t_star - 0.05) > 0 > curvature(t_star + 0.05)  # bimodal before, unimodal after


def test_R3_collapse_time(rng):
    f = lam(regimes.collapse_time_isotropic(), regimes.N, regimes.d, regimes.v)
    for n, dim, var in ((1000, 10, 1.0), (50, 64, 0.3), (10**5, 784, 2.0)):
        agree(f"(R3) collapse_time iso N={n} d={dim}", gd.collapse_time(n, var, dim=dim), f(n, dim, var))
        agree(f"(R3) spectrum form N={n} d={dim}", gd.collapse_time(n, [var] * dim), f(n, dim, var))
    # general spectrum: the excess entropy at sigma(t_C), from gaussdiff's log densities, is log N
    cov = random_cov(rng, 6)
    n = 300
    t_c = gd.collapse_time(n, torch.tensor(cov))
    sig = float(gd.OU().sigma(torch.tensor(t_c, dtype=F64)))
    mu = torch.zeros(1, 6, dtype=F64)
    data = gd.GaussianDenoiser(mu[0], torch.tensor(cov))
    point = gd.GaussianDenoiser(mu[0], torch.zeros(6, 6, dtype=F64))
    excess = float(point.log_density(mu, sig) - data.log_density(mu, sig))  # H[p_t] - H[N(0, sigma^2)]
    agree("(R3) excess entropy at t_C = log N", excess, math.log(n))
    assert gd.collapse_time(2 * n, [1.0] * 6, n_clusters=2) == pytest.approx(gd.collapse_time(n, [1.0] * 6), rel=1e-14)


# -- Pierret & Galerne: the sampler on Gaussian data ------------------------------------------


def _linear_map(sampler, den, mu, sigmas):
    """The sampler's affine map x -> mu + A (x - mu), read off by pushing mu and mu + e_j."""
    d = mu.shape[0]
    inp = torch.cat([mu[None], mu[None] + torch.eye(d, dtype=F64)])
    out = sampler(den, inp, sigmas)
    return (out[1:] - out[0]).T, out[0]  # A[:, j] = image of e_j


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_P1_P2_P4_P5_sampler_on_gaussian(rng, method):
    d = 4
    den, mu, l, U = _gauss_setup(rng, d)
    l = den.eigenvalues.numpy()
    U = den.eigenvectors.numpy()
    sigmas = gd.karras_sigmas(12, 0.01, 20.0)
    sampler = gd.sample_euler if method == "euler" else gd.sample_heun
    A, fixed = _linear_map(sampler, den, torch.tensor(mu), sigmas)
    A = A.numpy()
    # the per-step factors against the lambdified symbolic ones
    fsym = discretization.euler_factor() if method == "euler" else discretization.heun_factor()
    ff = lam(fsym, discretization.lam, discretization.s_i, discretization.s_n)
    s = sigmas.numpy()
    want_fac = np.stack([ff(l, s[i], s[i + 1]) if s[i + 1] > 0 else l / (l + s[i] ** 2) for i in range(len(s) - 1)])
    fac = gd.gaussian_sampler_factors(l, sigmas, method)
    agree(f"(P1/P2) {method} factors vs sympy", fac, want_fac)
    P = fac.prod(0).numpy()
    agree(f"(P4) {method} fixed point mu", fixed, mu, 1e-10)
    agree(f"(P4) {method} linear map U diag(P) U^T", A, (U * P) @ U.T, 1e-10)
    v0 = s[0] ** 2
    out_var = gd.gaussian_sampler_output(l, sigmas, method)
    agree(f"(P4) {method} output variance", out_var, np.diag(U.T @ (v0 * A @ A.T) @ U), 1e-10)
    # (P5): W2 to N(mu, Sigma) from the sampler's actual output law, by the general Bures formula
    from scipy.linalg import sqrtm

    cov_out = v0 * A @ A.T
    m0 = np.zeros(d)  # x = sigmas[0] * noise
    mean_out = mu + A @ (m0 - mu)
    Sigma = den.cov.numpy()
    rS = np.real(sqrtm(Sigma))
    bures = np.trace(Sigma + cov_out - 2 * np.real(sqrtm(rS @ cov_out @ rS)))
    w2_ref = math.sqrt(np.sum((mean_out - mu) ** 2) + bures)
    w2 = gd.gaussian_sampler_w2(l, sigmas, method, mean_offset=U.T @ (m0 - mu))
    agree(f"(P5) {method} W2 vs Bures on the sampler's output", w2, w2_ref, 1e-9)


def test_P4_exact_method_is_the_flow(rng):
    den, mu, l, U = _gauss_setup(rng, 3)
    l = den.eigenvalues.numpy()
    sigmas = gd.karras_sigmas(5, 0.05, 10.0)
    P = gd.gaussian_sampler_factors(l, sigmas, "exact").prod(0)
    _, cov = den.flow_output_moments(10.0, 0.0)
    U = den.eigenvectors.numpy()
    agree(
        "(P4) exact telescoped = (G5)", gd.gaussian_sampler_output(l, sigmas, "exact"), np.diag(U.T @ cov.numpy() @ U)
    )
    agree("(P4) exact product = sqrt(l/(l+s0^2))", P, np.sqrt(l / (l + 100.0)))


def test_P3_orders_of_euler_and_heun():
    """(P3) global error of the run's factor product: order 1 (Euler) and 2 (Heun) in the step."""
    l = np.array([0.3, 1.0, 4.0])
    errs = {}
    for method in ("euler", "heun"):
        e = []
        for n in (40, 80, 160):
            sig = torch.linspace(5.0, 0.5, n + 1, dtype=F64)
            P = gd.gaussian_sampler_factors(l, sig, method).prod(0).numpy()
            e.append(np.max(np.abs(P - np.sqrt((l + 0.25) / (l + 25.0)))))
        errs[method] = np.log2(np.array(e[:-1]) / np.array(e[1:]))
    print(f"agree (P3) measured orders: euler {errs['euler']}, heun {errs['heun']}")
    assert np.all(np.abs(errs["euler"] - 1) < 0.05) and np.all(np.abs(errs["heun"] - 2) < 0.05)
    # leading local term of (P3) against the library factors at a small step
    lam_, s0, h = 0.7, 1.3, 1e-4
    a = gd.gaussian_sampler_factors([lam_], torch.tensor([s0, s0 - h], dtype=F64), "euler")[0, 0]
    r = math.sqrt((lam_ + (s0 - h) ** 2) / (lam_ + s0**2))
    lead = -lam_ * h**2 / (2 * (lam_ + s0**2) ** 2)
    assert float(a) - r == pytest.approx(lead, rel=1e-3)


def test_predictions_refuse_bad_input():
    with pytest.raises(ValueError, match="method"):
        gd.gaussian_sampler_factors([1.0], [1.0, 0.0], "rk4")
    with pytest.raises(ValueError, match="eigenvalues"):
        gd.gaussian_sampler_output([-1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas"):
        gd.gaussian_sampler_w2([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="dim"):
        gd.collapse_time(100, 1.0)
    with pytest.raises(ValueError, match="n_train"):
        gd.collapse_time(1, [1.0, 2.0])
    with pytest.raises(ValueError, match="mean_norm_sq"):
        gd.symmetry_breaking_time(0.5, 1.0)
    with pytest.raises(ValueError, match="cov"):
        gd.speciation_time(np.zeros((2, 3)))
