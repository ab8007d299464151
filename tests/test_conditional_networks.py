"""Class-conditional networks: label embedding, label dropout, guidance, training, command line.

The yardstick is the class-conditional closed form of the same labelled data
(``ClassConditionalDenoiser.from_data(..., kind="gaussian")``, theory (G2) per class), and for the
unconditional branch learned by label dropout the exact marginal (the class-frequency mixture of
the class Gaussians, (M2))."""

import json

import numpy as np
import pytest
import torch

import gaussdiff as gd
from _helpers import TINY, same_weights
from gaussdiff.cli import main

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def two_class(n=64, d=3, seed=0):
    """Two Gaussian classes with different means and covariances, float32, labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    scale = torch.tensor([[1.0, 0.5, 0.3], [0.3, 1.0, 0.6]])[:, :d]
    mean = torch.tensor([[-1.5, 0.0, 0.5], [1.5, 0.5, -0.5]])[:, :d]
    x = mean[labels] + scale[labels] * torch.randn(n, d, generator=g)
    return x, labels


# -- the network side ----------------------------------------------------------------------------


@pytest.mark.parametrize("net, shape", [("mlp", (3,)), ("mlp", (1, 8, 8)), ("unet", (1, 8, 8)), ("unet", (3, 16, 16))])
def test_label_changes_the_output_and_none_is_the_null_token(net, shape):
    model = gd.build_network(net, shape, width=8, num_classes=3, seed=1)
    with torch.no_grad():  # make F non-zero
        for p in model.net.out.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    s = torch.tensor([0.1, 0.5, 1.0, 3.0])
    out0, out1 = model(x, s, torch.zeros(4, dtype=torch.long)), model(x, s, torch.ones(4, dtype=torch.long))
    assert out0.shape == x.shape and not torch.allclose(out0, out1)
    torch.testing.assert_close(model(x, s), model(x, s, torch.full((4,), 3)), rtol=0, atol=0)
    assert model.num_classes == 3 and gd.build_network(net, shape, width=8).num_classes is None
    # the unconditional network is unchanged by the new argument: same weights, same output
    a, b = gd.build_network(net, shape, width=8, seed=4), gd.build_network(net, shape, width=8, seed=4)
    assert same_weights(a, b)


def test_unconditional_network_weights_do_not_depend_on_the_label_code():
    """The seeded initialisation of an unconditional network draws exactly what it drew before
    labels existed: the label embedding is a separate module, initialised after the rest."""
    a = gd.build_network("mlp", (4,), width=16, seed=3)
    b = gd.build_network("mlp", (4,), width=16, seed=3, num_classes=5)
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sb) - set(sa) == {"net.label_embed.table.weight"}
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_network_denoiser_labels_and_guidance():
    x, labels = two_class()
    den = gd.train_denoiser(x, steps=10, labels=labels, **TINY).denoiser
    assert den.num_classes == 2 and "num_classes=2" in repr(den)
    q = x[:5].double()
    d0, d1, du = den(q, 0.7, 0), den(q, 0.7, 1), den(q, 0.7)
    assert d0.dtype == F64 and not torch.equal(d0, d1)
    mixed = den(q, 0.7, torch.tensor([0, 1, 1, 0, 1]))
    torch.testing.assert_close(mixed[[0, 3]], d0[[0, 3]], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mixed[[1, 2, 4]], d1[[1, 2, 4]], rtol=1e-6, atol=1e-7)
    # classifier-free guidance: w = 0 is the unconditional branch exactly, w = 1 the class
    assert torch.equal(gd.classifier_free_guidance(den, 1, 0.0)(q, 0.7), du)
    torch.testing.assert_close(gd.classifier_free_guidance(den, 1, 1.0)(q, 0.7), d1, rtol=0, atol=1e-12)
    g = gd.GuidedDenoiser(den, den.conditioned(1), 3.0)
    torch.testing.assert_close(g(q, 0.7), du + 3.0 * (d1 - du), rtol=0, atol=1e-12)
    # samplers take the conditioned denoiser; per-row sigma works with labels
    xs = gd.sample_heun(den.conditioned(1), 80 * gd.seeded_noise(3, 3, seed=0), gd.karras_sigmas(4))
    assert xs.shape == (3, 3) and bool(torch.isfinite(xs).all())
    s = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0], dtype=F64)
    torch.testing.assert_close(den(q, s, 1)[2:3], den(q[2:3], 1.0, 1))
    assert den.jacobian(q[:2], 0.5, 1).shape == (2, 3, 3)
    # saved and loaded, the conditional network is the same denoiser
    torch.testing.assert_close(gd.NetworkDenoiser(den.model, (3,))(q, 0.7, 1), d1, rtol=0, atol=0)


def test_bad_labels_are_refused(tmp_path):
    x, labels = two_class()
    cond = gd.train_denoiser(x, steps=2, labels=labels, **TINY).denoiser
    unc = gd.train_denoiser(x, steps=2, **TINY).denoiser
    q = x[:2]
    for bad in (
        2,
        -1,
        torch.tensor([0, 5]),
        torch.tensor([0, 1, 1]),
        torch.tensor([0.5, 1.0]),
        torch.zeros(2, 2, dtype=torch.long),
    ):
        with pytest.raises(ValueError, match="^label:"):
            cond(q, 0.5, bad)
    with pytest.raises(ValueError, match="^label:"):
        gd.classifier_free_guidance(cond, 2, 1.5)
    # guidance, or a label, on an unconditional network
    with pytest.raises(ValueError, match="^model: NetworkDenoiser is unconditional"):
        gd.classifier_free_guidance(unc, 0, 2.0)
    with pytest.raises(ValueError, match="^label: this network is unconditional"):
        unc(q, 0.5, 0)
    with pytest.raises(ValueError, match="^label: this network is unconditional"):
        unc.conditioned(0)
    assert unc.num_classes is None
    # training: labels of the wrong length, negative, non-integer, beyond num_classes
    for lab, kw, msg in (
        (labels[:-1], {}, r"^labels: expected \(64,\) labels"),
        (labels - 1, {}, "^labels:"),
        (labels + 0.5, {}, "^labels: expected integer"),
        (labels, {"num_classes": 1}, r"^labels: labels must be in \[0, 0\]"),
        (labels, {"label_dropout": 1.0}, "^label_dropout:"),
        (None, {"num_classes": 3}, "^num_classes: given without labels"),
    ):
        with pytest.raises(ValueError, match=msg):
            gd.train_denoiser(x, steps=2, labels=lab, **kw, **TINY)
    with pytest.raises(ValueError, match="^num_classes:"):
        gd.build_network("mlp", (3,), num_classes=0)


@pytest.mark.parametrize("net", ["mlp", "unet"])
def test_conditional_resume_is_bit_identical(tmp_path, net):
    if net == "mlp":
        x, labels = two_class(32)
        kw = dict(TINY, seed=5, label_dropout=0.3)
    else:
        x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        labels = torch.arange(12) % 3
        kw = dict(TINY, seed=5, net="unet", width=8, depth=None, label_dropout=0.3)
    full = gd.train_denoiser(x, steps=16, labels=labels, **kw)
    gd.train_denoiser(x, steps=8, labels=labels, outdir=tmp_path, **kw)
    resumed = gd.train_denoiser(x, steps=16, labels=labels, outdir=tmp_path, **kw)
    assert same_weights(full.model, resumed.model) and same_weights(full.denoiser.model, resumed.denoiser.model)
    loaded = gd.load_denoiser(tmp_path)
    assert loaded.num_classes == int(labels.max()) + 1
    q = x[:3]
    torch.testing.assert_close(loaded(q, 0.5, 1), full.denoiser(q, 0.5, 1), rtol=0, atol=0)
    # a run with other labels, or another dropout, is a different run
    with pytest.raises(ValueError, match="^outdir: .*labels_fingerprint"):
        gd.train_denoiser(x, steps=16, labels=labels.flip(0), outdir=tmp_path, **kw)
    with pytest.raises(ValueError, match="^outdir: .*label_dropout"):
        gd.train_denoiser(x, steps=16, labels=labels, outdir=tmp_path, **dict(kw, label_dropout=0.1))
    with pytest.raises(ValueError, match="^outdir: .*num_classes"):
        gd.train_denoiser(x, steps=16, outdir=tmp_path, **kw)


# -- convergence to the class-conditional closed form --------------------------------------------

SIGMAS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _conditional_excess(steps, framework="edm", width=64):
    """Relative excess MSE ``(net - exact) / exact`` per sigma of the conditional branch (each
    class's test points with their label) and of the unconditional branch (all test points, no
    label) against the class-conditional Gaussian closed form fitted to the same training data
    and its exact marginal. 2 classes in 3 dimensions, 4096 training points."""
    train, lab = two_class(4096, seed=0)
    test, tlab = two_class(2000, seed=1)
    test = test.double()
    exact = gd.ClassConditionalDenoiser.from_data(train.double(), lab, kind="gaussian", unconditional="marginal")
    den = gd.train_denoiser(
        train,
        steps=steps,
        width=width,
        framework=framework,
        lr=2e-3,
        labels=lab,
        label_dropout=0.2,
        progress=False,
        seed=0,
        num_threads=1,
    ).denoiser
    cond, unc = [], []
    for s in SIGMAS:
        x = test + s * torch.randn(test.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
        for out, net_d, ref_d in ((cond, den(x, s, tlab), exact(x, s, tlab)), (unc, den(x, s), exact(x, s))):
            ref = ((ref_d - test) ** 2).sum(1).mean()
            out.append(float((((net_d - test) ** 2).sum(1).mean() - ref) / ref))
    return np.array(cond), np.array(unc)


def test_conditional_mlp_approaches_class_conditional_closed_form():
    cond, unc = _conditional_excess(600)
    print("relative excess error, conditional branch:  ", np.round(cond, 4))
    print("relative excess error, unconditional branch:", np.round(unc, 4))
    # measured (600 steps, width 64): conditional <= 0.007, unconditional <= 0.013
    assert cond.max() < 0.03 and cond.min() > -0.01
    assert unc.max() < 0.05 and unc.min() > -0.01  # label dropout: a working unconditional branch


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["edm", "vp", "flow"])
def test_conditional_mlp_approaches_closed_form_all_frameworks(framework):
    cond, unc = _conditional_excess(2000, framework=framework)
    print(f"{framework}: relative excess error, conditional", np.round(cond, 4), "unconditional", np.round(unc, 4))
    assert cond.max() < 0.02 and cond.min() > -0.01
    assert unc.max() < 0.03 and unc.min() > -0.01


# -- command line --------------------------------------------------------------------------------


def test_cli_train_conditional(tmp_path, capsys):
    out = tmp_path / "cond"
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--n",
            "40",
            "--conditional",
            "--label-dropout",
            "0.2",
            "--steps",
            "6",
            "--width",
            "8",
            "--depth",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--no-progress",
            "--outdir",
            str(out),
        ]
    )
    assert rc == 0
    assert "10 classes" in capsys.readouterr().out
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["num_classes"] == 10 and meta["config"]["label_dropout"] == 0.2
    den = gd.load_denoiser(out)
    assert den.num_classes == 10 and den(torch.zeros(2, 1, 8, 8), 1.0, 7).shape == (2, 1, 8, 8)
    # a class subset keeps the labels' values (and the data set's number of classes)
    out2 = tmp_path / "sub"
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--classes",
                "3,5",
                "--conditional",
                "--steps",
                "4",
                "--width",
                "8",
                "--depth",
                "1",
                "--batch-size",
                "8",
                "--threads",
                "1",
                "--no-progress",
                "--outdir",
                str(out2),
            ]
        )
        == 0
    )
    meta = json.loads((out2 / "config.json").read_text())
    _, labels, _ = gd.load_dataset("digits")
    assert meta["config"]["n"] == int(((labels == 3) | (labels == 5)).sum()) and meta["config"]["num_classes"] == 10
    assert meta["config"]["classes"] == [3, 5]
    capsys.readouterr()
    # data without labels, or classes out of range: refused with a message
    assert main(["train", "--data", "gaussian:d=2,n=40", "--conditional", "--outdir", str(tmp_path / "x")]) == 2
    assert "--conditional: the data set 'gaussian:d=2,n=40' has no labels" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--classes", "3,12", "--outdir", str(tmp_path / "y")]) == 2
    assert "--classes:" in capsys.readouterr().err


def test_cli_train_user_array_with_labels(tmp_path):
    x, labels = two_class(30)
    np.savez(tmp_path / "data.npz", x=x.numpy(), labels=labels.numpy())
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "data.npz"),
                "--conditional",
                "--steps",
                "4",
                "--width",
                "8",
                "--depth",
                "1",
                "--batch-size",
                "8",
                "--threads",
                "1",
                "--no-progress",
                "--outdir",
                str(out),
            ]
        )
        == 0
    )
    assert gd.load_denoiser(out).num_classes == 2
