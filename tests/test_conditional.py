"""gaussdiff.conditional: class-conditional closed forms, classifier-free guidance, and the exact
guided Gaussian flow against an independent ODE solve and Heun's method. float64."""

import pytest
import torch

import gaussdiff as gd

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def labelled(gen, n=60, d=3, C=3):
    labels = torch.arange(n) % C
    data = torch.randn(n, d, generator=gen, dtype=F64) + 2.0 * labels[:, None].to(F64)
    return data, labels


def commuting_pair(gen, d=3, lu=(2.0, 1.0, 0.5), lc=(0.3, 1.0, 0.1)):
    Q = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64)).Q
    Su = Q @ torch.diag(torch.tensor(lu, dtype=F64)) @ Q.T
    Sc = Q @ torch.diag(torch.tensor(lc, dtype=F64)) @ Q.T
    return (
        gd.GaussianDenoiser(torch.randn(d, generator=gen, dtype=F64), Sc),
        gd.GaussianDenoiser(torch.randn(d, generator=gen, dtype=F64), Su),
    )


def test_class_conditional_empirical_and_gaussian(gen):
    data, labels = labelled(gen)
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    lab = torch.tensor([0, 1, 2, 2, 1, 0])
    emp = gd.ClassConditionalDenoiser.from_data(data, labels, kind="empirical")
    out = emp(x, 0.7, lab)
    for c in range(3):
        want = gd.EmpiricalDenoiser(data[labels == c])(x[lab == c], 0.7)
        assert rel(out[lab == c], want) < 1e-14
    assert rel(emp(x, 0.7), gd.EmpiricalDenoiser(data)(x, 0.7)) < 1e-14  # label=None: marginal
    assert rel(emp(x, 0.7, 1), gd.EmpiricalDenoiser(data[labels == 1])(x, 0.7)) < 1e-14
    gau = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian")
    assert rel(gau(x, 0.3, 2), gd.GaussianDenoiser.fit(data[labels == 2])(x, 0.3)) < 1e-13
    assert rel(gau(x, 0.3), gd.GaussianDenoiser.fit(data)(x, 0.3)) < 1e-13
    # the marginal of Gaussian classes is their mixture weighted by class frequency
    gm = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian", unconditional="marginal")
    mix = gd.GaussianMixtureDenoiser(
        torch.full((3,), 1 / 3, dtype=F64),
        torch.stack([data[labels == c].mean(0) for c in range(3)]),
        torch.stack([gd.GaussianDenoiser.fit(data[labels == c]).cov for c in range(3)]),
    )
    assert rel(gm(x, 0.5), mix(x, 0.5)) < 1e-12
    # per-row sigma
    s = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=F64)
    assert rel(gau(x, s, lab)[lab == 1], gau.class_denoisers[1](x[lab == 1], s[lab == 1])) < 1e-14


def test_class_conditional_mixture(gen):
    data, labels = labelled(gen, n=90)
    mm = gd.ClassConditionalDenoiser.from_data(data, labels, kind="mixture", n_components=2, seed=0)
    assert all(isinstance(dn, gd.GaussianMixtureDenoiser) and dn.n_components == 2 for dn in mm.class_denoisers)
    assert abs(float(mm.unconditional.weights.sum()) - 1) < 1e-12
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    # the marginal is the class-frequency mixture of the class mixtures: at sigma -> inf its
    # denoiser tends to the overall mean of the model
    big = mm(x, 1e4)
    mu = sum(float(w) * dn.weights @ dn.means for w, dn in zip(mm.class_weights, mm.class_denoisers))
    assert float((big - mu).abs().max()) < 1e-5


def test_guidance_combines_any_pair(gen):
    data, labels = labelled(gen)
    model = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian")
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    du, dc = model(x, 0.5), model(x, 0.5, 1)
    for w in (0.0, 1.0, 3.0, -0.5):
        assert rel(gd.classifier_free_guidance(model, 1, w)(x, 0.5), du + w * (dc - du)) < 1e-14
    assert rel(gd.classifier_free_guidance(model, 1, 0.0)(x, 0.5), du) == 0
    # any pair of denoisers, e.g. an empirical and a Gaussian one
    e, g = gd.EmpiricalDenoiser(data), gd.GaussianDenoiser.fit(data)
    assert rel(gd.GuidedDenoiser(g, e, 2.0)(x, 0.5), g(x, 0.5) + 2 * (e(x, 0.5) - g(x, 0.5))) < 1e-14


def test_guided_gaussian_flow_closed_form(gen):
    cond, unc = commuting_pair(gen)
    x = 20 * torch.randn(4, 3, generator=gen, dtype=F64)
    for w in (0.0, 1.0, 2.5, -0.5):
        P1, c1 = gd.guided_gaussian_flow(cond, unc, w, 20.0, 0.05)
        P2, c2 = gd.guided_gaussian_flow(cond, unc, w, 20.0, 0.05, method="ode")  # independent route
        assert rel(P1, P2) < 1e-10 and float((c1 - c2).abs().max()) < 1e-10 * (1 + float(c2.abs().max()))
    # w = 0 and w = 1 are the unconditional / conditional exact flows (G4)
    P, c = gd.guided_gaussian_flow(cond, unc, 0.0, 20.0, 0.0)
    assert rel(x @ P.T + c, unc.flow(x, 20.0, 0.0)) < 1e-12
    P, c = gd.guided_gaussian_flow(cond, unc, 1.0, 20.0, 0.0)
    assert rel(x @ P.T + c, cond.flow(x, 20.0, 0.0)) < 1e-12
    # equal eigenvalues (different means): J = Phi - 1 in closed form vs the ODE
    c_eq, u_eq = commuting_pair(gen, lu=(1.0, 0.5, 2.0), lc=(1.0, 0.5, 2.0))
    a = gd.guided_gaussian_flow(c_eq, u_eq, 3.0, 10.0, 0.0)
    b = gd.guided_gaussian_flow(c_eq, u_eq, 3.0, 10.0, 1e-9, method="ode")
    assert rel(a[0], b[0]) < 1e-8 and float((a[1] - b[1]).abs().max()) < 1e-8


def test_heun_converges_to_the_guided_flow_order_2(gen):
    cond, unc = commuting_pair(gen)
    guided = gd.GuidedDenoiser(unc, cond, 2.0)
    x = 20 * torch.randn(4, 3, generator=gen, dtype=F64)
    P, c = gd.guided_gaussian_flow(cond, unc, 2.0, 20.0, 0.05)
    want = x @ P.T + c
    errs = [
        float((gd.sample_heun(guided, x, gd.karras_sigmas(n, 0.05, 20.0)[:-1]) - want).abs().max()) for n in (50, 200)
    ]
    assert errs[1] < errs[0] / 10 and errs[1] < 1e-3  # order 2: ratio ~16
    # non-commuting covariances (class Gaussian vs the Gaussian of all data): the ODE route
    data, labels = labelled(gen, n=90)
    model = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian")
    cg, ug = model.class_denoisers[0], model.unconditional
    with pytest.raises(ValueError, match="commute"):
        gd.guided_gaussian_flow(cg, ug, 1.5, 20.0, 0.05, method="closed")
    P, c = gd.guided_gaussian_flow(cg, ug, 1.5, 20.0, 0.05)
    got = gd.sample_heun(gd.classifier_free_guidance(model, 0, 1.5), x, gd.karras_sigmas(300, 0.05, 20.0)[:-1])
    assert float((got - (x @ P.T + c)).abs().max()) < 1e-4


def test_guided_output_law_monte_carlo(gen):
    """(CFG3) against samples of the exact flow map from N(0, s0^2 I): mean within 5 standard
    errors, covariance within 5 standard errors of each entry."""
    cond, unc = commuting_pair(gen)
    m, C = gd.guided_gaussian_output(cond, unc, 2.0, 30.0, 0.0)
    P, c = gd.guided_gaussian_flow(cond, unc, 2.0, 30.0, 0.0)
    n = 20000
    z = gd.seeded_noise(n, 3, seed=4) * 30.0
    smp = z @ P.T + c
    assert bool(((smp.mean(0) - m).abs() < 5 * torch.sqrt(torch.diag(C) / n)).all())
    se = torch.sqrt((torch.diag(C)[:, None] * torch.diag(C)[None] + C**2) / n)
    assert bool(((torch.cov(smp.T) - C).abs() < 5 * se).all())
    # guidance w > 1 shrinks the output variance below the class variance in directions where
    # the class is narrower than the unconditional law
    m1, C1 = gd.guided_gaussian_output(cond, unc, 1.0, 30.0, 0.0)
    assert float(torch.trace(C)) < float(torch.trace(C1))


def test_bad_input_is_refused(gen):
    data, labels = labelled(gen)
    model = gd.ClassConditionalDenoiser.from_data(data, labels, kind="gaussian")
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="^label:"):
        model(x, 0.5, 3)
    with pytest.raises(ValueError, match="^label:"):
        model(x, 0.5, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="^label:"):
        gd.classifier_free_guidance(model, 7, 2.0)
    with pytest.raises(ValueError, match="^model:.*unconditional"):
        gd.classifier_free_guidance(gd.GaussianDenoiser.fit(data), 0, 2.0)
    with pytest.raises(ValueError, match="^labels:"):
        gd.ClassConditionalDenoiser.from_data(data, labels[:-1])
    with pytest.raises(ValueError, match="^labels:"):
        gd.ClassConditionalDenoiser.from_data(data, None)
    with pytest.raises(ValueError, match="^kind:"):
        gd.ClassConditionalDenoiser.from_data(data, labels, kind="network")
    with pytest.raises(ValueError, match="^w:"):
        gd.GuidedDenoiser(model.unconditional, model.class_denoisers[0], float("inf"))
