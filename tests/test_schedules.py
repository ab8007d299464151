"""Schedules, grids and conversions, checked against autograd and closed forms in float64."""

import math

import pytest
import torch

import gaussdiff as gd

SCHEDULES = [gd.EDM(), gd.VP(), gd.VP(beta_min=0.5, beta_d=0.0), gd.OU(), gd.RectifiedFlow(), gd.VPDiscrete()]
T_RANGES = {
    gd.EDM: (0.01, 50.0),
    gd.VP: (0.01, 1.0),
    gd.OU: (0.01, 3.0),
    gd.RectifiedFlow: (0.01, 0.98),
    gd.VPDiscrete: (1.3, 999.7),
}


def _ts(sched):
    lo, hi = T_RANGES[type(sched)]
    return torch.linspace(lo, hi, 37, dtype=torch.float64)


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: type(s).__name__)
def test_derivatives_match_autograd(sched):
    ts = _ts(sched)
    if isinstance(sched, gd.VPDiscrete):  # piecewise-linear lambda: avoid the kinks
        ts = torch.floor(ts) + 0.5
    t = ts.clone().requires_grad_(True)
    dsig = torch.autograd.grad(sched.sigma(t).sum(), t)[0]
    t = ts.clone().requires_grad_(True)
    ds = torch.autograd.grad((sched.s(t) + 0 * t).sum(), t)[0]
    torch.testing.assert_close(sched.dsigma(ts), dsig, rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.ds(ts), ds, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: type(s).__name__)
def test_inverse_round_trip(sched):
    ts = _ts(sched)
    torch.testing.assert_close(sched.t_of_sigma(sched.sigma(ts)), ts, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sched", [gd.VP(), gd.OU(), gd.VPDiscrete()], ids=lambda s: type(s).__name__)
def test_variance_preserving(sched):
    ts = _ts(sched)
    torch.testing.assert_close(sched.s(ts) ** 2 * (1 + sched.sigma(ts) ** 2), torch.ones_like(ts), rtol=1e-13, atol=0)


def test_ou_and_flow_closed_forms():
    t = torch.linspace(0.01, 2.0, 11, dtype=torch.float64)
    ou = gd.OU()
    torch.testing.assert_close(ou.s(t), torch.exp(-t), rtol=1e-14, atol=0)
    torch.testing.assert_close(ou.s(t) * ou.sigma(t), torch.sqrt(1 - torch.exp(-2 * t)), rtol=1e-13, atol=0)
    rf = gd.RectifiedFlow()
    u = torch.linspace(0.01, 0.99, 11, dtype=torch.float64)
    torch.testing.assert_close(rf.s(u) * rf.sigma(u), u, rtol=1e-14, atol=0)


def test_vp_discrete_matches_ddpm_at_integer_steps():
    sched = gd.VPDiscrete()
    abar = sched.alphas_cumprod()
    i = torch.tensor([1.0, 10.0, 500.0, 1000.0], dtype=torch.float64)
    idx = i.long() - 1
    torch.testing.assert_close(sched.s(i), abar[idx].sqrt(), rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.sigma(i), (1 / abar[idx] - 1).sqrt(), rtol=1e-12, atol=0)
    assert float(sched.sigma(0.0)) == 0.0


def test_vp_sigma_formula():
    sched = gd.VP(0.1, 19.9)
    t = torch.tensor([0.2, 0.7, 1.0], dtype=torch.float64)
    expect = torch.sqrt(torch.exp(0.5 * 19.9 * t**2 + 0.1 * t) - 1)
    torch.testing.assert_close(sched.sigma(t), expect, rtol=1e-14, atol=0)


def test_karras_grid():
    s = gd.karras_sigmas(18)
    assert s.shape == (19,) and float(s[-1]) == 0.0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-14) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-12)
    assert bool((s[1:] < s[:-1]).all())
    assert gd.karras_sigmas(1).tolist() == [80.0, 0.0]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: type(s).__name__)
def test_time_grids_decrease_to_zero_noise(sched):
    ts = sched.time_grid(10)
    assert ts.shape == (11,)
    sig = sched.sigma(ts)
    assert float(sig[-1]) == 0.0 and bool((sig[1:] < sig[:-1]).all())


def test_vp_and_flow_sigma_grids():
    v = gd.vp_sigmas(10)
    assert v.shape == (11,) and float(v[-1]) == 0 and math.isclose(float(v[0]), float(gd.VP().sigma(1.0)))
    f = gd.flow_sigmas(10, sigma_max=80.0)
    assert f.shape == (11,) and float(f[-1]) == 0 and math.isclose(float(f[0]), 80.0, rel_tol=1e-12)


def test_conversions_round_trip(gen):
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    den = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    for fwd, back in (
        (gd.score_from_denoiser, gd.denoiser_from_score),
        (gd.eps_from_denoiser, gd.denoiser_from_eps),
        (gd.velocity_from_denoiser, gd.denoiser_from_velocity),
    ):
        torch.testing.assert_close(back(fwd(den, x, sigma), x, sigma), den, rtol=1e-10, atol=1e-10)


def test_velocity_is_noise_minus_data(gen):
    """(C4) with the true x0 and n, the velocity target is n - x0 on x_t = (1-t) x0 + t n."""
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    n = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9], dtype=torch.float64)
    sigma = t / (1 - t)
    x_hat = x0 + sigma[:, None] * n
    torch.testing.assert_close(gd.velocity_from_denoiser(x0, x_hat, sigma), n - x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gd.eps_from_denoiser(x0, x_hat, sigma), n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "bad", [dict(n=0), dict(n=2.5), dict(n=5, sigma_min=-1.0), dict(n=5, rho=0.0), dict(n=5, sigma_min=100.0)]
)
def test_karras_bad_input(bad):
    name = [k for k in bad if k != "n"] or ["n"]
    with pytest.raises(ValueError, match=name[0]):
        gd.karras_sigmas(**bad)


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="betas"):
        gd.VPDiscrete(betas=(0.1, 1.5))
    with pytest.raises(ValueError, match="beta_min"):
        gd.VP(beta_min=-1.0)
