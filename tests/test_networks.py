"""Networks and parameterisations: shapes, the one set of scalings, denoiser wrapper."""

import pytest
import torch

import gaussdiff as gd
from gaussdiff.training import denoising_loss

FRAMEWORKS = ("edm", "vp", "flow")


def _random_output(model, seed=0):
    """Give the zero-initialised output layer random weights so that F is not 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.net.out.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 25, 25), (1, 28, 28), (3, 32, 32)])
def test_unet_shapes(shape):
    model = gd.build_network("unet", shape, width=8)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.1, 3.0])
    out = model(x, s)
    assert out.shape == x.shape
    c_skip = model.scalings(s)[0]
    torch.testing.assert_close(out, c_skip[:, None, None, None] * x)  # zero-initialised output


def test_mlp_flattens_images_and_width_knob():
    small = gd.build_network("mlp", (1, 8, 8), width=16, depth=1)
    big = gd.build_network("mlp", (1, 8, 8), width=64)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(small) < n(big)
    assert small(torch.zeros(3, 1, 8, 8), torch.ones(3)).shape == (3, 1, 8, 8)


def test_seeded_init_touches_no_global_generator():
    state = torch.random.get_rng_state()
    a = gd.build_network("mlp", (4,), width=16, seed=1)
    b = gd.build_network("mlp", (4,), width=16, seed=1)
    c = gd.build_network("mlp", (4,), width=16, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_denoiser_is_its_parameterisation(framework):
    """D = c_skip x + c_out F, and F is EDM's output, the VP eps or the flow velocity (C3, C4)."""
    model = _random_output(gd.build_network("mlp", (3,), width=16, framework=framework, sigma_data=0.7))
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(5, 3, generator=g)
    s = torch.tensor([0.01, 0.3, 1.0, 5.0, 60.0])
    D, F = model(x, s), model.raw(x, s)
    c_skip, c_out, c_in, c_noise = model.scalings(s)
    torch.testing.assert_close(D, c_skip[:, None] * x + c_out[:, None] * F)
    if framework == "vp":
        torch.testing.assert_close(gd.eps_from_denoiser(D, x, s), F, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_in, gd.VP().s(gd.VP().t_of_sigma(s)))
    elif framework == "flow":
        torch.testing.assert_close(gd.velocity_from_denoiser(D, x, s), F, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_noise, gd.RectifiedFlow().t_of_sigma(s))
    else:
        torch.testing.assert_close(c_skip, 0.49 / (s**2 + 0.49))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_is_each_frameworks_own_loss(framework):
    """The shared loss equals lambda ||D - x0||^2 (EDM), ||eps - n||^2 (VP), ||v - (n - x0)||^2 (flow)."""
    model = _random_output(gd.build_network("mlp", (4,), width=16, framework=framework, sigma_data=0.5))
    g = torch.Generator().manual_seed(2)
    x0, n = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    s = torch.exp(torch.randn(64, generator=g))
    x = x0 + s[:, None] * n
    loss = denoising_loss(model, x0, s, n)
    with torch.no_grad():
        D = model(x, s)
        if framework == "edm":
            lam = (s**2 + 0.25) / (s * 0.5) ** 2
            ref = (lam[:, None] * (D - x0) ** 2).mean()
        elif framework == "vp":
            ref = ((gd.eps_from_denoiser(D, x, s) - n) ** 2).mean()
        else:
            ref = ((gd.velocity_from_denoiser(D, x, s) - (n - x0)) ** 2).mean()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_target_mean_is_the_exact_denoisers_output(framework):
    """E[target | x] = (D*(x) - c_skip x) / c_out: the loss is minimised by the exact denoiser.

    1-D standard Gaussian: x0 | x ~ N(x / (1 + s^2), s^2 / (1 + s^2)); float64 Monte Carlo."""
    model = gd.build_network("mlp", (1,), width=4, framework=framework, sigma_data=1.0).double()
    g = torch.Generator().manual_seed(3)
    x, s = torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([0.8], dtype=torch.float64)
    c_skip, c_out, _, _ = model.scalings(s)
    m, v = x / (1 + s**2), s**2 / (1 + s**2)
    x0 = m + v.sqrt() * torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    target = (x0 - c_skip * x) / c_out  # what the loss regresses F on, for this x
    exact = (m - c_skip * x) / c_out
    assert abs(float(target.mean() - exact)) < 4 * float(target.std()) / 200_000**0.5
    if framework == "vp":  # eps target = n = (x - x0) / s
        torch.testing.assert_close(target, (x - x0) / s)
    if framework == "flow":  # velocity target = n - x0
        torch.testing.assert_close(target, (x - x0) / s - x0)


def test_network_denoiser_contract():
    model = gd.build_network("mlp", (2, 3), width=8)
    den = gd.NetworkDenoiser(model, (2, 3))
    x64 = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = den(x64, 0.5)
    assert out.dtype == torch.float64 and out.shape == (4, 2, 3)
    torch.testing.assert_close(den(x64, torch.full((4,), 0.5)), out)
    assert not torch.is_grad_enabled() or not out.requires_grad
    with pytest.raises(ValueError, match="^x:"):
        den(torch.zeros(4, 6), 0.5)
    with pytest.raises(ValueError, match="^sigma:"):
        den(x64, -1.0)
    J = den.jacobian(x64[:2], 0.5)
    assert J.shape == (2, 6, 6)
    h = 1e-4
    e = torch.zeros(1, 2, 3, dtype=torch.float64)
    e[0, 0, 1] = h
    fd = (den(x64[:1] + e, 0.5) - den(x64[:1] - e, 0.5)).reshape(-1) / (2 * h)
    torch.testing.assert_close(J[0, :, 1], fd, rtol=1e-2, atol=1e-3)
    # usable by every sampler
    xs = gd.sample_heun(den, 80 * gd.seeded_noise(3, (2, 3), seed=0), gd.karras_sigmas(5))
    assert xs.shape == (3, 2, 3) and bool(torch.isfinite(xs).all())


def test_network_denoiser_to_returns_a_new_object():
    """``.to`` copies the network: the wrapper one holds keeps its dtype and keeps working (it
    used to move the shared module in place, so ``d(x, 1.0)`` then failed on a dtype mismatch)."""
    den = gd.NetworkDenoiser(gd.build_network("mlp", (6,), width=8), (6,))
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    before = den(x, 1.0)
    d64 = den.to(dtype=torch.float64)
    assert d64.dtype == torch.float64 and den.dtype == torch.float32
    assert next(den.model.parameters()).dtype == torch.float32 and d64.model is not den.model
    torch.testing.assert_close(den(x, 1.0), before, rtol=0, atol=0)
    torch.testing.assert_close(d64(x.double(), 1.0), before.double(), rtol=1e-5, atol=1e-6)


def test_build_network_errors():
    with pytest.raises(ValueError, match="^net: 'unet' needs images"):
        gd.build_network("unet", (5,))
    with pytest.raises(ValueError, match="^net:"):
        gd.build_network("cnn", (5,))
    with pytest.raises(ValueError, match="^framework:"):
        gd.build_network("mlp", (5,), framework="ddpm")
    with pytest.raises(ValueError, match="^width:"):
        gd.build_network("mlp", (5,), width=0)


def test_unet_without_normalisation():
    """``norm="none"``: no GroupNorm anywhere (every layer is a convolution, a pointwise map or
    the noise embedding); the default keeps them, so existing runs build the same network."""
    plain = gd.build_network("unet", (1, 12, 12), width=8, norm="none")
    grouped = gd.build_network("unet", (1, 12, 12), width=8)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in grouped.modules()) == 11  # 5 blocks x 2 + output
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    assert plain(x, torch.full((3,), 0.5)).shape == x.shape
    # the same seed draws the same weights for every layer both networks have
    shared = {k: v for k, v in plain.state_dict().items() if k in grouped.state_dict()}
    assert all(torch.equal(v, grouped.state_dict()[k]) for k, v in shared.items() if "norm" not in k)
    with pytest.raises(ValueError, match="^norm"):
        gd.build_network("unet", (1, 12, 12), norm="batch")
    with pytest.raises(ValueError, match="^norm"):
        gd.build_network("mlp", (4,), norm="none")
    with pytest.raises(ValueError, match="^norm"):
        gd.TrainSettings(net="mlp", norm="none")


def test_unet_without_normalisation_trains_saves_and_loads(tmp_path):
    """The option travels through training, config.json, loading and resuming; a run saved
    before the option existed (no "norm" in its config) loads and resumes as GroupNorm."""
    data = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    s = gd.TrainSettings(net="unet", width=8, steps=4, batch_size=4, norm="none", log_every=2, save_every=2)
    res = gd.train_denoiser(data, settings=s, outdir=tmp_path / "run", progress=False)
    assert res.config["norm"] == "none"
    back = gd.load_denoiser(tmp_path / "run")
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in back.model.modules())
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(back(x, 0.7), res.denoiser(x, 0.7))
    with pytest.raises(ValueError, match="norm: 'none' there, 'group' here"):
        gd.train_denoiser(data, settings=s.replace(norm="group", steps=6), outdir=tmp_path / "run", progress=False)
    # a GroupNorm run whose config predates the option
    gd.train_denoiser(data, settings=s.replace(norm="group"), outdir=tmp_path / "old", progress=False)
    f = tmp_path / "old" / "model.pt"
    saved = torch.load(f, weights_only=False)
    del saved["config"]["norm"]
    torch.save(saved, f)
    old = gd.load_denoiser(tmp_path / "old")
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in old.model.modules()) > 0
