"""Flows and samplers against exact answers: the Gaussian probability-flow ODE is solvable."""

import math

import numpy as np
import pytest
import torch

import gaussdiff as gd

F64 = torch.float64


@pytest.fixture
def gauss():
    """A 5-d Gaussian with a spread spectrum and a non-zero mean (full rank)."""
    g = torch.Generator().manual_seed(3)
    Q = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=g)).Q
    lam = torch.tensor([4.0, 1.0, 0.3, 0.05, 0.01], dtype=F64)
    return gd.GaussianDenoiser(torch.randn(5, dtype=F64, generator=g), (Q * lam) @ Q.T)


def _noise(n, d, sigma, seed=0):
    return gd.seeded_noise(n, d, seed=seed) * sigma


# ---------------------------------------------------------------------------------------------
# exact Gaussian flow
# ---------------------------------------------------------------------------------------------


def test_exact_flow_matches_adaptive_ode(gauss):
    x = _noise(6, 5, 80.0)
    for s_to in (10.0, 1.0, 0.01):
        ref = gd.solve_flow(gauss, x, 80.0, s_to, rtol=1e-10, atol=1e-12)
        exact = gauss.flow(x, 80.0, s_to)
        err = float((ref - exact).abs().max() / exact.abs().max())
        assert err < 1e-9, err


def test_exact_flow_matches_adaptive_ode_rank_deficient():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(4, 2, dtype=F64, generator=g)
    G = gd.GaussianDenoiser(torch.zeros(4, dtype=F64), A @ A.T)
    x = _noise(3, 4, 20.0, seed=1)
    torch.testing.assert_close(gd.solve_flow(G, x, 20.0, 0.05), G.flow(x, 20.0, 0.05), rtol=1e-9, atol=1e-10)


def test_flow_composes_and_inverts(gauss):
    x = _noise(4, 5, 50.0)
    mid = gauss.flow(x, 50.0, 2.0)
    torch.testing.assert_close(gauss.flow(mid, 2.0, 0.1), gauss.flow(x, 50.0, 0.1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gauss.flow(mid, 2.0, 50.0), x, rtol=1e-12, atol=1e-12)


def test_flow_output_covariance(gauss):
    """(G5): the flow is affine, so pushing the basis gives its matrix exactly; a Monte-Carlo
    run from N(0, sigma_max^2 I) agrees with the closed-form covariance within its error."""
    smax = 80.0
    mean, cov = gauss.flow_output_moments(smax)
    zero = gauss.flow(torch.zeros(1, 5, dtype=F64), smax, 0.0)[0]
    A = gauss.flow(torch.eye(5, dtype=F64), smax, 0.0) - zero  # rows: A e_i
    torch.testing.assert_close(smax**2 * A.T @ A, cov, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(zero, mean, rtol=1e-12, atol=1e-14)
    # Monte Carlo: relative error of a sample covariance entry ~ sqrt(2/n)
    n = 40_000
    out = gauss.flow(_noise(n, 5, smax, seed=9), smax, 0.0)
    emp = torch.cov(out.T)
    scale = torch.sqrt(torch.diag(cov)[:, None] * torch.diag(cov)[None])
    assert float(((emp - cov).abs() / scale).max()) < 5 * math.sqrt(2 / n)
    # with sigma_max -> infinity the output covariance is the data covariance
    _, cov_inf = gauss.flow_output_moments(1e6)
    torch.testing.assert_close(cov_inf, gauss.cov, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# convergence orders
# ---------------------------------------------------------------------------------------------


def _order(sampler, gauss, steps=(16, 32, 64, 128, 256)):
    x = _noise(8, 5, 80.0)
    exact = gauss.flow(x, 80.0, 0.002)
    errs = []
    for n in steps:
        sig = gd.karras_sigmas(n)[:-1]  # stop at sigma_min: the flow is smooth there
        errs.append(float((sampler(gauss, x, sig) - exact).norm(dim=1).max()))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    return slope, errs


def test_euler_order_one(gauss):
    slope, errs = _order(gd.sample_euler, gauss)
    assert 0.9 < slope < 1.15, (slope, errs)


def test_heun_order_two(gauss):
    slope, errs = _order(gd.sample_heun, gauss)
    assert 1.85 < slope < 2.2, (slope, errs)


@pytest.mark.parametrize("schedule", [gd.VP(), gd.OU(), gd.RectifiedFlow()], ids=lambda s: type(s).__name__)
def test_orders_in_each_framework_time(gauss, schedule):
    """EDM Algorithm 1 in the framework's own time: Euler order 1, Heun order 2. Orders are
    asymptotic: uniform grids in VP/OU time are stiff near sigma_min for the smallest
    eigenvalue (0.01), so Heun only reaches its asymptotic regime from ~256 steps; the ladder
    starts there."""
    x = _noise(8, 5, 80.0)
    exact = gauss.flow(x, 80.0, 0.01)
    steps = (256, 512, 1024, 2048)
    for sampler, lo, hi in ((gd.sample_euler, 0.9, 1.15), (gd.sample_heun, 1.85, 2.2)):
        errs = []
        for n in steps:
            ts = schedule.time_grid(n, sigma_min=0.01, sigma_max=80.0)
            if isinstance(schedule, gd.RectifiedFlow):
                ts = torch.linspace(float(ts[0]), float(schedule.t_of_sigma(0.01)), n + 1, dtype=F64)
            else:
                ts = ts[:-1]
            errs.append(float((sampler(gauss, x, schedule=schedule, ts=ts) - exact).norm(dim=1).max()))
        slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
        assert lo < slope < hi, (sampler.__name__, slope, errs)


def test_frameworks_converge_to_the_same_sample(gauss):
    """DDIM on the VP grid, Heun on the EDM grid and Euler in rectified-flow time, started
    from the same noise, all converge to the exact flow's sample."""
    x = _noise(8, 5, 80.0)
    exact = gauss.flow(x, 80.0, 0.0)
    vp, rf = gd.VP(), gd.RectifiedFlow()
    runs = {
        "ddim_vp": lambda n: gd.sample_euler(gauss, x, vp.sigma(vp.time_grid(n, sigma_max=80.0))),
        "heun_edm": lambda n: gd.sample_heun(gauss, x, gd.karras_sigmas(n)),
        "euler_flow": lambda n: gd.sample_euler(gauss, x, schedule=rf, ts=rf.time_grid(n, sigma_max=80.0)),
    }
    final = {}
    for name, run in runs.items():
        errs = [float((run(n) - exact).norm(dim=1).max()) for n in (16, 64, 256, 1024)]
        assert all(b < a for a, b in zip(errs, errs[1:])), (name, errs)
        final[name] = errs[-1]
    assert max(final.values()) < 0.05, final
    assert final["heun_edm"] < 1e-4, final


def test_ddim_is_euler_in_sigma(gauss):
    """The DDIM update x' = D + (sigma'/sigma) (x - D) is the Euler step of the sigma-ODE."""
    x = _noise(4, 5, 10.0)
    sig = gd.vp_sigmas(12)
    y = x * float(sig[0]) / 10.0
    ddim = y.clone()
    for s, s_next in zip(sig[:-1].tolist(), sig[1:].tolist()):
        den = gauss(ddim, s)
        ddim = den + (s_next / s) * (ddim - den)
    torch.testing.assert_close(gd.sample_euler(gauss, y, sig), ddim, rtol=1e-12, atol=1e-12)


def test_sigma_form_equals_edm_schedule_form(gauss):
    x = _noise(4, 5, 80.0)
    sig = gd.karras_sigmas(20)
    torch.testing.assert_close(
        gd.sample_heun(gauss, x, sig), gd.sample_heun(gauss, x, schedule=gd.EDM(), ts=sig), rtol=0, atol=0
    )


# ---------------------------------------------------------------------------------------------
# the empirical flow ends on training points (Yi, Sun & Li 2023)
# ---------------------------------------------------------------------------------------------


def test_empirical_flow_lands_on_training_points():
    g = torch.Generator().manual_seed(11)
    train = torch.randn(20, 3, dtype=F64, generator=g)
    E = gd.EmpiricalDenoiser(train)
    x = _noise(16, 3, 80.0, seed=4)
    # distance of the ODE state at sigma to its nearest training point, as sigma -> 0
    ends = (0.2, 0.1, 0.05, 0.025, 0.0125)
    dists = []
    for s_end in ends:
        xs = gd.solve_flow(E, x, 80.0, s_end, rtol=1e-10, atol=1e-12)
        dists.append(float(torch.cdist(xs, train).min(1).values.median()))
    slope = np.polyfit(np.log(ends), np.log(dists), 1)[0]
    # near a training point x_i the flow is x - x_i proportional to sigma: rate 1
    assert 0.9 < slope < 1.1, (slope, dists)
    # a full Heun run ends on training points exactly
    out = gd.sample_heun(E, x, gd.karras_sigmas(40))
    assert float(torch.cdist(out, train).min(1).values.max()) < 1e-12


# ---------------------------------------------------------------------------------------------
# the same-noise protocol, stochastic samplers, callbacks and bad input
# ---------------------------------------------------------------------------------------------


def test_seeded_noise_independent_of_batching():
    a = gd.seeded_noise(10, (2, 3), seed=5)
    b = torch.cat([gd.seeded_noise(4, (2, 3), seed=5), gd.seeded_noise(6, (2, 3), seed=5, start=4)])
    assert torch.equal(a, b)
    assert not torch.equal(a, gd.seeded_noise(10, (2, 3), seed=6))
    assert not torch.equal(a, gd.seeded_noise(10, (2, 3), seed=5, step=1))
    assert torch.equal(gd.seeded_noise(3, 4, seed=1, dtype=torch.float32), gd.seeded_noise(3, 4, seed=1).float())
    z = gd.seeded_noise(20_000, 1, seed=0)
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.02


def test_samplers_bit_reproducible(gauss):
    x = _noise(5, 5, 80.0)
    sig = gd.karras_sigmas(10)
    for fn in (gd.sample_euler, gd.sample_heun, gd.sample_edm_stochastic, gd.sample_euler_ancestral):
        assert torch.equal(fn(gauss, x, sig), fn(gauss, x, sig))


@pytest.mark.parametrize(
    "fn",
    [gd.sample_euler, gd.sample_heun, gd.sample_edm_stochastic, gd.sample_euler_ancestral],
    ids=lambda f: f.__name__,
)
def test_callback_state_is_at_its_sigma(gauss, fn):
    """Every sampler's callback reports the state *at* ``info["sigma"]`` (before the step), with
    ``denoised`` its denoiser output there: the first call sees the start, each later call the
    previous step's result, and ``denoised`` is ``D(x, sigma)`` of that state."""
    x = _noise(3, 5, 80.0)
    sig = gd.karras_sigmas(6)
    seen = []
    out = fn(gauss, x, sig, callback=lambda info: seen.append({k: v for k, v in info.items()}))
    assert len(seen) == len(sig) - 1 and torch.equal(seen[0]["x"], x)
    for info in seen:
        assert info["sigma"] == pytest.approx(float(sig[info["i"]]))
    if fn is not gd.sample_edm_stochastic:  # its denoiser sees the churned state at sigma_hat
        for info in seen:
            torch.testing.assert_close(info["denoised"], gauss(info["x"], info["sigma"]), rtol=1e-12, atol=1e-12)
    if fn is gd.sample_euler_ancestral:  # the last state reported is the one the last step starts from
        assert not torch.equal(seen[-1]["x"], out)


def test_stochastic_samplers_do_not_depend_on_batching(gauss):
    x = _noise(6, 5, 80.0)
    sig = gd.karras_sigmas(10)
    for fn in (gd.sample_edm_stochastic, gd.sample_euler_ancestral):
        full = fn(gauss, x, sig, seed=3)
        parts = torch.cat([fn(gauss, x[:2], sig, seed=3), fn(gauss, x[2:], sig, seed=3, start=2)])
        torch.testing.assert_close(full, parts, rtol=1e-13, atol=1e-13)


def test_stochastic_sampler_reduces_to_heun(gauss):
    x = _noise(4, 5, 80.0)
    sig = gd.karras_sigmas(12)
    torch.testing.assert_close(
        gd.sample_edm_stochastic(gauss, x, sig, s_churn=0.0), gd.sample_heun(gauss, x, sig), rtol=1e-13, atol=1e-13
    )
    torch.testing.assert_close(
        gd.sample_euler_ancestral(gauss, x, sig, eta=0.0), gd.sample_euler(gauss, x, sig), rtol=1e-13, atol=1e-13
    )


@pytest.mark.parametrize("fn", [gd.sample_euler_ancestral, gd.sample_edm_stochastic], ids=lambda f: f.__name__)
def test_stochastic_samplers_converge_to_the_gaussian(gauss, fn):
    """With an exact denoiser the stochastic samplers are biased at finite steps (the reverse
    kernel uses E[x0 | x] in place of x0), and the bias of the output covariance shrinks as
    the steps grow. Sampling error of a covariance entry: ~ sqrt(2 / n) = 0.02."""
    n = 4000
    x = _noise(n, 5, 80.0, seed=2)
    scale = torch.sqrt(torch.diag(gauss.cov)[:, None] * torch.diag(gauss.cov)[None])
    errs = []
    for steps in (10, 160):  # first order: ~4x less bias per 4x steps
        out = fn(gauss, x, gd.karras_sigmas(steps), seed=1)
        errs.append(float(((torch.cov(out.T) - gauss.cov).abs() / scale).max()))
    assert errs[1] < 0.25 * errs[0] and errs[1] < 0.1, errs


def test_callback_records_trajectory(gauss):
    x = _noise(3, 5, 80.0)
    rec = []
    gd.sample_heun(gauss, x, gd.karras_sigmas(7), callback=rec.append)
    assert [r["i"] for r in rec] == list(range(7))
    assert rec[0]["sigma"] == 80.0 and torch.equal(rec[0]["x"], x)


def test_sampler_bad_input(gauss):
    x = _noise(3, 5, 80.0)
    with pytest.raises(ValueError, match="sigmas"):
        gd.sample_euler(gauss, x, torch.tensor([1.0, 2.0, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="sigmas"):
        gd.sample_heun(gauss, x, torch.tensor([1.0, -0.5, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="sigmas"):
        gd.sample_heun(gauss, x, torch.tensor([1.0, float("nan"), 0.0], dtype=F64))
    with pytest.raises(ValueError, match="sigmas"):
        gd.sample_heun(gauss, x)
    with pytest.raises(ValueError, match="ts"):
        gd.sample_heun(gauss, x, schedule=gd.VP(), ts=torch.tensor([0.1, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="schedule"):
        gd.sample_heun(gauss, x, schedule="vp", ts=torch.tensor([0.5, 0.1], dtype=F64))
    with pytest.raises(ValueError, match="sigma_to"):
        gd.solve_flow(gauss, x, 80.0, 0.0)
    with pytest.raises(ValueError, match="n"):
        gd.seeded_noise(-1, 3)
