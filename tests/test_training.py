"""Training: convergence to the exact denoisers, bit-identical resume, checkpoints, bad input."""

import json

import numpy as np
import pytest
import torch

import gaussdiff as gd
from _helpers import TINY, same_weights
from gaussdiff.cli import main


def _points(n=32, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# -- the training run and its result ----------------------------------------------------------------


def test_result_and_outputs(tmp_path):
    seen = []
    res = gd.train_denoiser(
        _points(),
        steps=20,
        outdir=tmp_path,
        checkpoint_steps=(10,),
        callback=lambda step, den: seen.append((step, den)),
        **TINY,
    )
    assert res.step == 20 and res.loss_history["step"] == [5, 10, 15, 20]
    assert all(np.isfinite(res.loss_history["loss"]))
    assert res.config["net"] == "mlp" and res.config["framework"] == "edm" and res.config["n"] == 32
    assert not res.denoiser.model.training
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["step"] == 20 and meta["checkpoints"] == [10] and meta["loss_history"] == res.loss_history
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gd.load_denoiser(tmp_path)(x, 0.5), res.denoiser(x, 0.5), rtol=0, atol=0)
    [(step, den10)] = seen
    assert step == 10
    torch.testing.assert_close(gd.load_denoiser(tmp_path, step=10)(x, 0.5), den10(x, 0.5), rtol=0, atol=0)
    assert not torch.equal(den10(x, 0.5), res.denoiser(x, 0.5))
    with pytest.raises(ValueError, match="^step: no checkpoint at step 7"):
        gd.load_denoiser(tmp_path, step=7)


def test_same_seed_same_run_and_no_global_rng():
    state = torch.random.get_rng_state()
    a = gd.train_denoiser(_points(), steps=8, seed=3, **TINY)
    b = gd.train_denoiser(_points(), steps=8, seed=3, **TINY)
    c = gd.train_denoiser(_points(), steps=8, seed=4, **TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert same_weights(a.model, b.model) and not same_weights(a.model, c.model)


@pytest.mark.parametrize(
    "net, framework, data",
    [("mlp", "edm", "points"), ("mlp", "vp", "points"), ("mlp", "flow", "points"), ("unet", "edm", "images")],
)
def test_resume_is_bit_identical(tmp_path, net, framework, data):
    x = _points() if data == "points" else torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kw = dict(TINY, net=net, framework=framework, seed=5)
    if net == "unet":
        kw.update(width=8, depth=None)
    full = gd.train_denoiser(x, steps=16, **kw)
    # stopped after 8 steps, then extended to 16
    gd.train_denoiser(x, steps=8, outdir=tmp_path / "a", **kw)
    resumed = gd.train_denoiser(x, steps=16, outdir=tmp_path / "a", **kw)
    assert same_weights(full.model, resumed.model)
    assert same_weights(full.denoiser.model, resumed.denoiser.model)

    # killed mid-run (after the state saved at step 10), then rerun
    def crash(step, den):
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gd.train_denoiser(
            x, steps=16, outdir=tmp_path / "b", save_every=5, checkpoint_steps=(12,), callback=crash, **kw
        )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["step"] == 12
    again = gd.train_denoiser(x, steps=16, outdir=tmp_path / "b", save_every=5, checkpoint_steps=(12,), **kw)
    assert same_weights(full.model, again.model) and same_weights(full.denoiser.model, again.denoiser.model)
    assert again.loss_history["loss"][-1] == full.loss_history["loss"][-1]


def test_resume_refuses_a_different_run(tmp_path):
    gd.train_denoiser(_points(), steps=6, outdir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="^outdir: .*holds a different run.*lr"):
        gd.train_denoiser(_points(), steps=6, outdir=tmp_path, lr=0.1, **TINY)
    with pytest.raises(ValueError, match="^outdir: .*data_fingerprint"):
        gd.train_denoiser(_points(seed=1), steps=6, outdir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="^steps: .*already holds 6 steps"):
        gd.train_denoiser(_points(), steps=3, outdir=tmp_path, **TINY)
    done = gd.train_denoiser(_points(), steps=6, outdir=tmp_path, **TINY)  # finished: no training
    assert done.step == 6


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, kw, msg",
    [
        (torch.tensor([[0.0, float("nan")]]), {}, "^data: contains NaN"),
        (torch.zeros(5), {}, r"^data: expected shape \(N, \*event_shape\)"),
        (torch.zeros(0, 3), {}, "^data: needs at least 1 row"),
        ("no-such-set", {}, "^spec: unknown data set"),
        (torch.zeros(4, 3), {"net": "unet"}, "^net: 'unet' needs images"),
        (torch.zeros(4, 3), {"framework": "ddim"}, "^framework:"),
        (torch.zeros(4, 3), {"steps": -1}, "^steps:"),
        (torch.zeros(4, 3), {"ema": 1.0}, "^ema:"),
        (torch.zeros(4, 3), {"checkpoint_steps": (50,), "steps": 10}, "^checkpoint_steps:"),
        (torch.zeros(4, 3), {"device": "cuda:7"} if not torch.cuda.is_available() else {"lr": -1}, "^(device|lr):"),
    ],
)
def test_bad_input_is_refused(data, kw, msg):
    args = dict(TINY, steps=2)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        gd.train_denoiser(data, **args)


# -- settings: one frozen, validated object holds every default ----------------------------------------


def test_settings_are_the_one_home_of_the_defaults():
    import dataclasses
    import inspect

    from gaussdiff.cli import build_parser

    d = gd.TrainSettings()
    assert dict(gd.TRAIN_DEFAULTS) == dataclasses.asdict(d)
    with pytest.raises(TypeError):
        gd.TRAIN_DEFAULTS["lr"] = 1.0  # a read-only view, not a second copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.lr = 1.0
    for fn in (gd.train_denoiser, gd.train_ensemble):  # no literal repeated in a signature
        for name, p in inspect.signature(fn).parameters.items():
            if name in gd.TRAIN_DEFAULTS:
                assert p.default == gd.TRAIN_DEFAULTS[name], (fn.__name__, name)
    # the command line's options are generated from the settings: one per field, same default
    args = build_parser().parse_args(["train", "--outdir", "x"])
    assert {f.name: getattr(args, f.name) for f in dataclasses.fields(d)} == dataclasses.asdict(d)
    args = build_parser().parse_args(
        ["train", "--outdir", "x", "--grad-clip", "none", "--sigma-data", "0.5", "--warmup", "7"]
    )
    assert (args.grad_clip, args.sigma_data, args.warmup) == (None, 0.5, 7)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"steps": -1}, "^steps:"),
        ({"net": "cnn"}, "^net:"),
        ({"framework": "ddim"}, "^framework:"),
        ({"batch_size": 0}, "^batch_size:"),
        ({"lr": 0}, "^lr:"),
        ({"warmup": -1}, "^warmup:"),
        ({"ema": 1.0}, "^ema:"),
        ({"ema": "x"}, "^ema:"),
        ({"grad_clip": 0.0}, "^grad_clip:"),
        ({"p_mean": "x"}, "^p_mean:"),
        ({"p_std": -1}, "^p_std:"),
        ({"sigma_data": "std"}, "^sigma_data:"),
        ({"sigma_data": 0}, "^sigma_data:"),
        ({"label_dropout": 1.0}, "^label_dropout:"),
        ({"log_every": 0}, "^log_every:"),
        ({"save_every": 0}, "^save_every:"),
        ({"seed": True}, "^seed:"),
        ({"width": 0}, "^width:"),
        ({"depth": 2.5}, "^depth:"),
        ({"device": "tpu"}, "^device:"),
    ],
)
def test_settings_refuse_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        gd.TrainSettings(**kw)
    with pytest.raises(ValueError, match=msg):
        gd.TrainSettings().replace(**kw)


def test_a_settings_object_trains_exactly_like_the_keywords():
    kw = dict(TINY)
    extra = {k: kw.pop(k) for k in ("progress", "num_threads")}
    a = gd.train_denoiser(_points(), steps=8, seed=3, **kw, **extra)
    b = gd.train_denoiser(_points(), settings=gd.TrainSettings(steps=8, seed=3, **kw), **extra)
    assert same_weights(a.model, b.model) and a.config == b.config
    with pytest.raises(ValueError, match="^settings: given together with lr"):
        gd.train_denoiser(_points(), settings=gd.TrainSettings(steps=8), lr=0.1, **extra)
    with pytest.raises(ValueError, match="^settings: expected a TrainSettings"):
        gd.train_denoiser(_points(), settings={"steps": 8}, **extra)


def test_loss_is_the_preconditioned_modules_own_and_vectorises():
    """``denoising_loss`` is ``Preconditioned.loss``; its ensemble form (K models' stacked weights,
    per-model float64 sigma_data) gives each model's own loss, and the per-model scalings are
    bit-identical to each single model's (the rounding of sigma_data is the same)."""
    import copy

    from torch.func import functional_call, stack_module_state

    g = torch.Generator().manual_seed(0)
    sds = (0.3, 1.7)
    models = [gd.build_network("mlp", (3,), width=16, depth=1, sigma_data=sd, seed=k) for k, sd in enumerate(sds)]
    for m in models:  # non-zero output layers, so F matters
        with torch.no_grad():
            m.net.out.weight.normal_(generator=g)
    x0, noise = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    sigma = torch.exp(torch.randn(2, 5, generator=g))
    single = torch.stack([m.loss(x0[k], sigma[k], noise[k]) for k, m in enumerate(models)])
    assert torch.equal(gd.denoising_loss(models[0], x0[0], sigma[0], noise[0]), single[0])
    sd = torch.tensor(sds, dtype=torch.float64)[:, None]
    for a, b in zip(models[0].scalings(sigma, sd), zip(*(m.scalings(sigma[k]) for k, m in enumerate(models)))):
        assert torch.equal(a, torch.stack(b))
    params, buffers = stack_module_state([m.net for m in models])
    shell = copy.deepcopy(models[0].net).to("meta")
    batched = torch.vmap(lambda p, b, x, c: functional_call(shell, (p, b), (x, c)))
    both = models[0].loss(x0, sigma, noise, sigma_data=sd, f=lambda x, c: batched(params, buffers, x, c))
    assert both.shape == (2,)
    # vmap sums the layers' products in another order: float32 rounding only
    torch.testing.assert_close(both, single, rtol=1e-6, atol=0)


# -- command line -------------------------------------------------------------------------------------


def test_cli_train(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--data",
            "gaussian:d=2,n=40",
            "--n",
            "10",
            "--part",
            "1",
            "--steps",
            "10",
            "--width",
            "8",
            "--batch-size",
            "8",
            "--no-progress",
            "--outdir",
            str(out),
        ]
    )
    assert rc == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["n"] == 10 and meta["config"]["data"] == "gaussian:d=2,n=40"
    den = gd.load_denoiser(out)
    assert den(torch.zeros(3, 2), 1.0).shape == (3, 2)
    assert "wrote" in capsys.readouterr().out
    assert main(["train", "--data", "nope", "--outdir", str(out)]) == 2
    assert "unknown data set" in capsys.readouterr().err


# -- convergence to the exact denoisers ---------------------------------------------------------------

SIGMAS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _gaussian_excess(framework, steps):
    """Relative excess MSE (net - Bayes) / Bayes on a sigma grid, for a 4-d Gaussian, float64."""
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64)).Q
    truth = gd.GaussianDenoiser(torch.zeros(4, dtype=torch.float64), (Q * lam) @ Q.T)
    train, test = truth.sample(4096, generator=g).float(), truth.sample(2000, generator=g)
    den = gd.train_denoiser(
        train, steps=steps, width=64, framework=framework, lr=2e-3, progress=False, seed=0, num_threads=1
    ).denoiser
    out = []
    for s in SIGMAS:
        x = test + s * torch.randn(test.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        bayes = ((truth(x, s) - test) ** 2).sum(1).mean()
        out.append(float((((den(x, s) - test) ** 2).sum(1).mean() - bayes) / bayes))
    return np.array(out)


def test_mlp_approaches_gaussian_denoiser():
    excess = _gaussian_excess("edm", 600)
    print("relative excess error, edm 600 steps:", np.round(excess, 4))
    assert excess.max() < 0.03 and excess.min() > -0.01


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["edm", "vp", "flow"])
def test_mlp_approaches_gaussian_denoiser_all_frameworks(framework):
    excess = _gaussian_excess(framework, 1500)
    print(f"relative excess error, {framework} 1500 steps:", np.round(excess, 4))
    assert excess.max() < 0.01 and excess.min() > -0.005


def _memorization(n, d, framework, steps):
    train = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    emp = gd.EmpiricalDenoiser(train.double())
    den = gd.train_denoiser(
        train, steps=steps, width=128, framework=framework, lr=2e-3, progress=False, seed=0, num_threads=1
    ).denoiser
    rel = []
    for s in (0.05, 0.2, 0.5, 1.0, 2.0):
        idx = torch.randint(n, (512,), generator=torch.Generator().manual_seed(2))
        x = train.double()[idx] + s * torch.randn(
            512, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )
        e = emp(x, s)
        rel.append(float(((den(x, s) - e) ** 2).sum(1).mean() / ((x - e) ** 2).sum(1).mean()))
    samples = gd.sample_heun(den, 80 * gd.seeded_noise(200, d, seed=0), gd.karras_sigmas(32))
    two = torch.cdist(samples, train.double()).topk(2, largest=False).values
    memorized = float((two[:, 0] < two[:, 1] / 3).double().mean())
    near = float((two[:, 0] / torch.pdist(train.double()).min()).median())
    return np.array(rel), memorized, near


def test_mlp_on_few_points_memorizes():
    rel, memorized, near = _memorization(4, 2, "edm", 600)
    print("4 points: relative distance to empirical", np.round(rel, 4), "memorized", memorized, "median nn", near)
    assert rel.max() < 0.05
    assert memorized > 0.95 and near < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["edm", "vp", "flow"])
def test_mlp_on_eight_points_memorizes_all_frameworks(framework):
    rel, memorized, near = _memorization(8, 8, framework, 3000)
    print(f"8 points, {framework}: relative distance", np.round(rel, 4), "memorized", memorized, "median nn", near)
    assert rel.max() < 0.08
    assert memorized > 0.95 and near < 0.05
