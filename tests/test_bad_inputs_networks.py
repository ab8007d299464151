"""Bad input for networks, training and inverse problems (issue 16, bad-input suite): every case
gets either a correct result, checked against a float64 route, or a ``ValueError`` whose message
starts with the argument's name (or names the file). Table-driven.

===========================================================  =======
entry point                                                  cases
===========================================================  =======
``NetworkDenoiser.__call__`` bad x / sigma / label (errors)  27
``NetworkDenoiser.__call__`` odd valid input (vs float64)    12
``NetworkDenoiser`` extreme sigma (3 frameworks x 2 dtypes)  48
  plus hypothesis over sigma in [1e-40, 1e30]                 1 (60 examples)
  plus beyond float64 (refused), raw/jacobian, ordinary       5
``build_network`` / ``Preconditioned`` / ``MLP`` / ``UNet``  17
``TrainSettings``                                            37
``train_denoiser`` data, labels, checkpoints, settings       16
``train_denoiser`` odd valid data                             3
``load_denoiser`` / resume: corrupt or foreign files          7
``train_ensemble``                                            6
inverse: operators, posteriors, samplers, experiment         33
===========================================================  =======
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussdiff as gd
from _helpers import TINY
from gaussdiff.inverse.experiment import run_inverse_experiment
from gaussdiff.networks import MLP, NetworkDenoiser, Preconditioned, UNet, build_network
from gaussdiff.training import TrainSettings

D = 4


def _net(framework="edm", num_classes=None, dtype=torch.float32) -> NetworkDenoiser:
    """A small MLP denoiser whose zero-initialised output layer is replaced by random weights, so
    that ``F`` (and every scaling) matters in the output."""
    m = build_network("mlp", (D,), width=16, depth=1, framework=framework, seed=1, num_classes=num_classes)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        m.net.out.weight.copy_(torch.randn(m.net.out.weight.shape, generator=g) * 0.3)
        m.net.out.bias.copy_(torch.randn(m.net.out.bias.shape, generator=g) * 0.3)
    return NetworkDenoiser(m.to(dtype), (D,))


DEN = _net()
DEN64 = DEN.to(dtype=torch.float64)
COND = _net(num_classes=3)
X = torch.randn(3, D, generator=torch.Generator().manual_seed(3))


# -- NetworkDenoiser: refused input ----------------------------------------------------------------

BAD_CALLS = [
    # (id, x, sigma, label, name in the message)
    ("x-complex", X.to(torch.complex64), 1.0, None, "x"),
    ("x-int64", torch.ones(3, D, dtype=torch.int64), 1.0, None, "x"),
    ("x-int32", torch.ones(3, D, dtype=torch.int32), 1.0, None, "x"),
    ("x-bool", torch.ones(3, D, dtype=torch.bool), 1.0, None, "x"),
    ("x-numpy", X.numpy(), 1.0, None, "x"),
    ("x-list", X.tolist(), 1.0, None, "x"),
    ("x-wrong-dim", torch.zeros(3, D + 1), 1.0, None, "x"),
    ("x-1d", torch.zeros(D), 1.0, None, "x"),
    ("x-3d", torch.zeros(3, 1, D), 1.0, None, "x"),
    ("x-nan", torch.tensor([[0.0, math.nan, 0.0, 0.0]]), 1.0, None, "x"),
    ("x-inf", torch.tensor([[0.0, math.inf, 0.0, 0.0]]), 1.0, None, "x"),
    ("sigma-zero", X, 0.0, None, "sigma"),
    ("sigma-negative", X, -1.0, None, "sigma"),
    ("sigma-nan", X, math.nan, None, "sigma"),
    ("sigma-inf", X, math.inf, None, "sigma"),
    ("sigma-string", X, "abc", None, "sigma"),
    ("sigma-none", X, None, None, "sigma"),
    ("sigma-complex", X, torch.ones(3, dtype=torch.complex64), None, "sigma"),
    ("sigma-wrong-length", X, torch.ones(2), None, "sigma"),
    ("sigma-2d", X, torch.ones(3, 1), None, "sigma"),
    ("sigma-one-bad-entry", X, torch.tensor([1.0, -1.0, 1.0]), None, "sigma"),
    ("sigma-nan-entry", X, torch.tensor([1.0, math.nan, 1.0]), None, "sigma"),
    ("label-on-unconditional", X, 1.0, 1, "label"),
]
BAD_COND = [
    ("label-too-large", 3, "label"),
    ("label-negative", -1, "label"),
    ("label-non-integer", torch.tensor([0.5, 1.0, 2.0]), "label"),
    ("label-wrong-length", torch.tensor([0, 1]), "label"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_network_denoiser_refuses(case):
    _, x, sigma, label, name = case
    with pytest.raises(ValueError, match=f"^{name}:"):
        DEN(x, sigma, label)


@pytest.mark.parametrize("case", BAD_COND, ids=[c[0] for c in BAD_COND])
def test_conditional_network_refuses_bad_labels(case):
    _, label, name = case
    with pytest.raises(ValueError, match=f"^{name}:"):
        COND(X, 1.0, label)


# -- NetworkDenoiser: odd but valid input, checked against the float64 network --------------------

VALID_CALLS = [
    # (id, x, sigma, rtol): the float32 network's rounding (about 1e-7 per operation, a few
    # dozen operations deep) bounds its distance to the float64 copy at 1e-5; a half-precision x
    # adds the rounding of its own output (2**-11 float16, 2**-8 bfloat16).
    ("float32", X, 0.7, 1e-5),
    ("float64", X.double(), 0.7, 1e-5),
    ("float16", X.half(), 0.7, 2e-3),
    ("bfloat16", X.bfloat16(), 0.7, 1.6e-2),
    ("one-row", X[:1], 0.7, 1e-5),
    ("sigma-tensor", X, torch.tensor([0.1, 1.0, 10.0]), 1e-5),
    ("sigma-0d", X, torch.tensor(2.0), 1e-5),
    ("sigma-length-1", X, torch.tensor([2.0]), 1e-5),
    ("sigma-int", X, 2, 1e-5),
    ("sigma-numpy", X, np.float64(0.3), 1e-5),
    ("sigma-float64-tensor", X, torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64), 1e-5),
]


@pytest.mark.parametrize("case", VALID_CALLS, ids=[c[0] for c in VALID_CALLS])
def test_network_denoiser_odd_valid_input(case):
    _, x, sigma, rtol = case
    out = DEN(x, sigma)
    assert out.shape == x.shape and out.dtype == x.dtype
    s64 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
    ref = DEN64(x.double(), s64)
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=rtol)


def test_network_denoiser_empty_batch():
    for f in (DEN, DEN64):
        assert f(torch.zeros(0, D), 1.0).shape == (0, D)
        assert f.raw(torch.zeros(0, D, dtype=torch.float64), 1.0).dtype == torch.float64
        assert f.jacobian(torch.zeros(0, D), 1.0).shape == (0, D, D)


# -- NetworkDenoiser at extreme sigma ----------------------------------------------------------------


def _reference(den: NetworkDenoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """An independent route: the table of :mod:`gaussdiff.networks` evaluated with Python floats
    (``math``), then the float64 copy of the raw network ``F``."""
    fw = den.framework
    if fw == "edm":
        sd = den.model.sigma_data
        q = math.hypot(sigma, sd)  # sqrt(sigma^2 + sd^2) without forming sigma^2
        c_skip, c_out, c_in, c_noise = (sd / q) ** 2, sigma / q * sd, 1 / q, math.log(sigma) / 4
    elif fw == "vp":  # sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), solved for t
        vp = gd.VP()
        log1p_s2 = 2 * math.log(sigma) + math.log1p(sigma**-2) if sigma > 1 else math.log1p(sigma**2)
        t = (math.sqrt(vp.beta_min**2 + 2 * vp.beta_d * log1p_s2) - vp.beta_min) / vp.beta_d
        c_skip, c_out, c_in, c_noise = 1.0, -sigma, 1 / math.hypot(1.0, sigma), t
    else:
        t = sigma / (1 + sigma)
        c_skip, c_out, c_in, c_noise = 1 / (1 + sigma), -t, 1 / (1 + sigma), t
    net = den._float64_model().net
    x64 = x.double()
    with torch.no_grad():
        F = net(c_in * x64, torch.full((x.shape[0],), c_noise, dtype=torch.float64))
    return c_skip * x64 + c_out * F


NETS = {(fw, dt): _net(fw, dtype=dt) for fw in ("edm", "vp", "flow") for dt in (torch.float32, torch.float64)}
EXTREME = [1e-40, 1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e25, 1e30]


def _check_extreme(den, sigma):
    g = torch.Generator().manual_seed(int(abs(math.log10(sigma)) * 10))
    x = (torch.randn(3, D, generator=g, dtype=torch.float64) * max(sigma, 1.0)).to(den.dtype)
    out = den(x, sigma)
    assert out.dtype == den.dtype and bool(torch.isfinite(out).all()), (sigma, out)
    ref = _reference(den, x, sigma)
    # float64 network: the same float64 arithmetic in another order (1e-10). float32 network:
    # at sigma whose square leaves float32 (beyond 1.1e-19 .. 1.8e19) it runs on its float64
    # copy and rounds once (2**-24 = 6e-8); inside that range it computes in float32, a few dozen
    # roundings deep (1e-5, the bound test_network_denoiser_odd_valid_input uses)
    lo, hi = gd._checks.sigma_squared_range(den.dtype)
    rtol = 1e-10 if den.dtype == torch.float64 else (1e-5 if lo <= sigma <= hi else 1.2e-7)
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


@pytest.mark.parametrize("sigma", EXTREME)
@pytest.mark.parametrize("key", list(NETS), ids=[f"{fw}-{str(dt)[6:]}" for fw, dt in NETS])
def test_network_denoiser_extreme_sigma_is_finite_and_right(key, sigma):
    _check_extreme(NETS[key], sigma)


@settings(max_examples=60, deadline=None)
@given(
    u=st.floats(-40, 30),
    fw=st.sampled_from(["edm", "vp", "flow"]),
    dt=st.sampled_from([torch.float32, torch.float64]),
)
def test_network_denoiser_extreme_sigma_hypothesis(u, fw, dt):
    _check_extreme(NETS[(fw, dt)], 10.0**u)


@pytest.mark.parametrize("sigma", [1e-160, 1e160, 1e300])
def test_network_denoiser_sigma_beyond_float64_is_refused(sigma):
    for dt in (torch.float32, torch.float64):
        with pytest.raises(ValueError, match="^sigma: .* float64 when squared"):
            NETS[("edm", dt)](X.to(dt), sigma)


def test_network_raw_and_jacobian_at_extreme_sigma():
    den = NETS[("edm", torch.float32)]
    for sigma in (1e-40, 1e30):
        assert bool(torch.isfinite(den.raw(X, sigma)).all())
        J = den.jacobian(X, sigma)
        assert J.shape == (3, D, D) and bool(torch.isfinite(J).all())
    # sigma -> 0: D(x) -> x, so dD/dx -> I (c_out ~ 1e-40 times a bounded network Jacobian)
    torch.testing.assert_close(den.jacobian(X, 1e-40), torch.eye(D).expand(3, D, D), rtol=0, atol=1e-12)


def test_network_denoiser_ordinary_sigma_is_the_plain_call():
    """Inside float32's range the denoiser is the module's own output, bit for bit."""
    s = torch.tensor([0.002, 1.0, 80.0])
    with torch.no_grad():
        assert torch.equal(DEN(X, s), DEN.model(X, s))


# -- constructors ------------------------------------------------------------------------------------

BAD_BUILD = [
    ("net-unknown", lambda: build_network("cnn", (D,)), "net"),
    ("width-zero", lambda: build_network("mlp", (D,), width=0), "width"),
    ("width-negative", lambda: build_network("mlp", (D,), width=-3), "width"),
    ("width-fraction", lambda: build_network("mlp", (D,), width=1.5), "width"),
    ("depth-zero", lambda: build_network("mlp", (D,), depth=0), "depth"),
    ("unet-on-vectors", lambda: build_network("unet", (D,)), "net"),
    ("unet-with-depth", lambda: build_network("unet", (1, 8, 8), depth=2), "depth"),
    ("framework-unknown", lambda: build_network("mlp", (D,), framework="ddpm"), "framework"),
    ("num-classes-zero", lambda: build_network("mlp", (D,), num_classes=0), "num_classes"),
    ("precond-framework", lambda: Preconditioned(MLP(D, 8, 1), "xx"), "framework"),
    ("precond-sigma-data-zero", lambda: Preconditioned(MLP(D, 8, 1), sigma_data=0.0), "sigma_data"),
    ("precond-sigma-data-nan", lambda: Preconditioned(MLP(D, 8, 1), sigma_data=math.nan), "sigma_data"),
    ("precond-sigma-data-str", lambda: Preconditioned(MLP(D, 8, 1), sigma_data="a"), "sigma_data"),
    ("precond-not-a-module", lambda: Preconditioned(lambda x, c: x), "net"),
    ("mlp-dim-zero", lambda: MLP(0), "dim"),
    ("mlp-width-negative", lambda: MLP(D, width=-1), "width"),
    ("unet-channels-zero", lambda: UNet(0, 8), "channels"),
]


@pytest.mark.parametrize("case", BAD_BUILD, ids=[c[0] for c in BAD_BUILD])
def test_network_constructors_refuse(case):
    _, make, name = case
    with pytest.raises(ValueError, match=f"^{name}:"):
        make()


# -- TrainSettings -----------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("steps", -1),
    ("steps", 1.5),
    ("steps", True),
    ("steps", "many"),
    ("seed", -1),
    ("net", "cnn"),
    ("width", 0),
    ("depth", -2),
    ("framework", "ddpm"),
    ("sigma_data", "median"),
    ("sigma_data", 0.0),
    ("sigma_data", math.nan),
    ("batch_size", 0),
    ("batch_size", -8),
    ("lr", 0.0),
    ("lr", -1e-3),
    ("lr", math.nan),
    ("lr", math.inf),
    ("lr", True),
    ("warmup", -1),
    ("ema", 1.0),
    ("ema", -0.1),
    ("ema", math.nan),
    ("ema", True),
    ("grad_clip", 0.0),
    ("grad_clip", math.nan),
    ("p_mean", math.nan),
    ("p_mean", math.inf),
    ("p_mean", "x"),
    ("p_std", 0.0),
    ("p_std", math.inf),
    ("label_dropout", 1.0),
    ("label_dropout", -0.5),
    ("device", "gpu0"),
    ("log_every", 0),
    ("save_every", 0),
    ("save_every", -10),
]


@pytest.mark.parametrize("field, value", BAD_SETTINGS, ids=[f"{f}={v!r}" for f, v in BAD_SETTINGS])
def test_train_settings_refuse(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainSettings(**{field: value})


# -- train_denoiser ----------------------------------------------------------------------------------

PTS = torch.randn(16, D, generator=torch.Generator().manual_seed(5))

BAD_TRAIN = [
    ("data-nan", dict(data=torch.tensor([[0.0, math.nan, 0.0, 0.0]] * 4)), "data"),
    ("data-inf", dict(data=torch.full((4, D), math.inf)), "data"),
    ("data-empty", dict(data=torch.zeros(0, D)), "data"),
    ("data-1d", dict(data=torch.zeros(D)), "data"),
    ("data-complex", dict(data=torch.zeros(4, D, dtype=torch.complex64)), "data"),
    ("data-unknown-spec", dict(data="no-such-set"), "spec"),
    ("labels-wrong-length", dict(labels=torch.zeros(15, dtype=torch.int64)), "labels"),
    ("labels-2d", dict(labels=torch.zeros(16, 1, dtype=torch.int64)), "labels"),
    ("labels-negative", dict(labels=-torch.ones(16, dtype=torch.int64)), "labels"),
    ("labels-fraction", dict(labels=torch.full((16,), 0.5)), "labels"),
    ("labels-beyond-num-classes", dict(labels=torch.arange(16) % 4, num_classes=3), "labels"),
    ("num-classes-without-labels", dict(num_classes=3), "num_classes"),
    ("checkpoint-beyond-steps", dict(checkpoint_steps=(50,)), "checkpoint_steps"),
    ("checkpoint-without-outdir", dict(checkpoint_steps=(2,)), "checkpoint_steps"),
]


@pytest.mark.parametrize("case", BAD_TRAIN, ids=[c[0] for c in BAD_TRAIN])
def test_train_denoiser_refuses(case):
    _, kw, name = case
    kw = dict(kw)
    data = kw.pop("data", PTS)
    with pytest.raises(ValueError, match=f"^{name}:"):
        gd.train_denoiser(data, steps=4, **TINY, **kw)


def test_train_denoiser_settings_and_keywords_together_are_refused():
    with pytest.raises(ValueError, match="^settings:"):
        gd.train_denoiser(PTS, settings=TrainSettings(steps=4), lr=0.1, progress=False)
    with pytest.raises(ValueError, match="^settings:"):
        gd.train_denoiser(PTS, settings={"steps": 4}, progress=False)


def test_train_denoiser_odd_valid_data():
    """Integer data train exactly like the same values as floats; float64 data like their float32
    rounding (the networks compute in float32); one row is enough to train on."""
    ints = torch.randint(-3, 4, (16, D), generator=torch.Generator().manual_seed(2))
    a = gd.train_denoiser(ints, steps=6, **TINY)
    b = gd.train_denoiser(ints.float(), steps=6, **TINY)
    c = gd.train_denoiser(PTS.double(), steps=6, **TINY)
    d = gd.train_denoiser(PTS, steps=6, **TINY)
    for p, q in ((a, b), (c, d)):
        assert all(torch.equal(u, v) for u, v in zip(p.model.state_dict().values(), q.model.state_dict().values()))
    one = gd.train_denoiser(PTS[:1], steps=6, **TINY)
    assert bool(torch.isfinite(one.denoiser(PTS[:2], 0.5)).all())


# -- load_denoiser and resume: files that are not what they should be --------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for width in (16, 8):
        gd.train_denoiser(PTS, steps=4, outdir=root / f"w{width}", **{**TINY, "width": width})
    return root


def _copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_load_denoiser_corrupt_files(trained, tmp_path):
    # truncated model.pt
    run = _copy_run(trained / "w16", tmp_path / "trunc")
    raw = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=f"^{run / 'model.pt'}: cannot be read"):
        gd.load_denoiser(run)
    # not a torch file at all
    (run / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"^{run / 'model.pt'}: cannot be read"):
        gd.load_denoiser(run)
    # a torch file of something else
    torch.save({"weights": torch.zeros(3)}, run / "model.pt")
    with pytest.raises(ValueError, match=f"^{run / 'model.pt'}: not a file saved by train_denoiser"):
        gd.load_denoiser(run)
    # model.pt missing
    (run / "model.pt").unlink()
    with pytest.raises(ValueError, match="model.pt: missing"):
        gd.load_denoiser(run)
    # truncated config.json
    run2 = _copy_run(trained / "w16", tmp_path / "cfg")
    (run2 / "config.json").write_text('{"format": 1, "conf')
    with pytest.raises(ValueError, match=f"^{run2 / 'config.json'}: cannot be read as JSON"):
        gd.load_denoiser(run2)


def test_load_denoiser_weights_of_another_architecture(trained, tmp_path):
    run = _copy_run(trained / "w16", tmp_path / "mixed")
    other = torch.load(trained / "w8" / "model.pt", weights_only=False)
    mine = torch.load(run / "model.pt", weights_only=False)
    torch.save(dict(mine, ema=other["ema"]), run / "model.pt")
    with pytest.raises(ValueError, match=f"^{run / 'model.pt'}: its weights do not fit the architecture"):
        gd.load_denoiser(run)


def test_resume_from_a_corrupt_state_names_it(trained, tmp_path):
    run = _copy_run(trained / "w16", tmp_path / "state")
    raw = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(raw[:100])
    with pytest.raises(ValueError, match=f"^{run / 'state.pt'}: cannot be read"):
        gd.train_denoiser(PTS, steps=8, outdir=run, **{**TINY, "width": 16})


# -- train_ensemble ----------------------------------------------------------------------------------

BAD_ENSEMBLE = [
    ("no-data", dict(datasets=[]), None),
    ("nan-data", dict(datasets=[PTS, torch.full((16, D), math.nan)]), None),
    ("shapes-differ", dict(datasets=[PTS, torch.zeros(16, D + 1)]), None),
    ("empty-data", dict(datasets=[PTS, torch.zeros(0, D)]), None),
    ("bad-setting", dict(datasets=[PTS, PTS], lr=-1.0), "lr"),
    ("seeds-wrong-length", dict(datasets=[PTS, PTS], seeds=[0]), "seeds"),
]


@pytest.mark.parametrize("case", BAD_ENSEMBLE, ids=[c[0] for c in BAD_ENSEMBLE])
def test_train_ensemble_refuses(case):
    _, kw, name = case
    kw = dict(kw)
    datasets = kw.pop("datasets")
    seeds = kw.pop("seeds", list(range(len(datasets))))
    tiny = {k: v for k, v in TINY.items() if k not in ("num_threads",)}
    with pytest.raises(ValueError, match=f"^{name}:" if name else "^datasets"):
        gd.train_ensemble(datasets, seeds=seeds, steps=4, **tiny, **kw)


# -- inverse problems --------------------------------------------------------------------------------

IMG = (1, 4, 4)
G = gd.GaussianDenoiser(torch.zeros(16, dtype=torch.float64), torch.eye(16, dtype=torch.float64))
OP = gd.make_operator("inpaint:0.5", IMG, seed=0)
Y = torch.zeros(2, OP.out_dim, dtype=torch.float64)

BAD_INVERSE = [
    ("spec-unknown", lambda: gd.make_operator("smear:2", IMG), "operator"),
    ("spec-no-colon-number", lambda: gd.make_operator("blur:x", IMG), "operator"),
    ("inpaint-share-zero", lambda: gd.make_operator("inpaint:0", IMG), "operator"),
    ("inpaint-share-above-one", lambda: gd.make_operator("inpaint:1.5", IMG), "operator"),
    ("blur-negative", lambda: gd.make_operator("blur:-1", IMG), "std"),
    ("down-zero", lambda: gd.make_operator("down:0", IMG), "factor"),
    ("down-not-dividing", lambda: gd.make_operator("down:3", IMG), "factor"),
    ("project-zero", lambda: gd.make_operator("project:0", IMG), "m"),
    ("blur-on-vectors", lambda: gd.make_operator("blur:1", (16,)), "event_shape"),
    ("matrix-nan", lambda: gd.MatrixOperator(torch.tensor([[math.nan, 0.0]])), "A"),
    ("matrix-1d", lambda: gd.MatrixOperator(torch.ones(3)), "A"),
    ("mask-not-bool", lambda: gd.InpaintOperator(torch.ones(16)), "mask"),
    ("mask-empty", lambda: gd.InpaintOperator(torch.zeros(16, dtype=torch.bool)), "mask"),
    ("apply-wrong-size", lambda: OP(torch.zeros(2, 15, dtype=torch.float64)), "x"),
    ("posterior-y-wrong-size", lambda: gd.PosteriorDenoiser(G, OP, torch.zeros(2, 3), 0.1), "y"),
    ("posterior-y-nan", lambda: gd.PosteriorDenoiser(G, OP, torch.full((1, OP.out_dim), math.nan), 0.1), "y"),
    ("posterior-sigma-y-negative", lambda: gd.PosteriorDenoiser(G, OP, Y, -0.1), "sigma_y"),
    ("posterior-sigma-y-nan", lambda: gd.PosteriorDenoiser(G, OP, Y, math.nan), "sigma_y"),
    ("posterior-prior-not-a-prior", lambda: gd.PosteriorDenoiser("gaussian", OP, Y, 0.1), "prior"),
    ("sampler-name", lambda: gd.run_posterior_sampler("langevin", G, OP, Y, 0.1, steps=2, n_samples=2), "name"),
    ("sampler-steps-zero", lambda: gd.run_posterior_sampler("exact", G, OP, Y, 0.1, steps=0, n_samples=2), "steps"),
    (
        "sampler-samples-zero",
        lambda: gd.run_posterior_sampler("exact", G, OP, Y, 0.1, steps=2, n_samples=0),
        "n_samples",
    ),
    ("dps-zeta-negative", lambda: gd.sample_dps(G, _x0(), _grid(), A=OP, y=Y, sigma_y=0.1, zeta=-1.0), "zeta"),
    ("dps-grid-increasing", lambda: gd.sample_dps(G, _x0(), _grid().flip(0), A=OP, y=Y, sigma_y=0.1), "sigmas"),
    ("ddrm-eta-above-one", lambda: gd.sample_ddrm(G, _x0(), _grid(), A=OP, y=Y, sigma_y=0.1, eta=1.5), "eta"),
    ("pigdm-y-rows", lambda: gd.sample_pigdm(G, _x0(), _grid(), A=OP, y=torch.zeros(3, OP.out_dim), sigma_y=0.1), "y"),
]


def _x0():
    return torch.zeros(2, *IMG, dtype=torch.float64)


def _grid():
    return gd.karras_sigmas(3)


@pytest.mark.parametrize("case", BAD_INVERSE, ids=[c[0] for c in BAD_INVERSE])
def test_inverse_refuses(case):
    _, call, name = case
    with pytest.raises(ValueError, match=f"^{name}:"):
        call()


def test_inverse_experiment_bad_arguments_write_nothing(tmp_path):
    for kw, name in (
        (dict(samplers=()), "samplers"),
        (dict(steps=(0,)), "steps"),
        (dict(n_meas=0), "n_meas"),
        (dict(n_samples=-1), "n_samples"),
        (dict(n_train=1), "n_train"),
        (dict(sigma_y=(math.nan,)), "sigma_y"),
    ):
        with pytest.raises(ValueError, match=f"^{name}:"):
            run_inverse_experiment(data="gaussian:d=4,n=50", outdir=tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()
    # and a file given as outdir is refused before any work
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="^outdir:"):
        run_inverse_experiment(data="gaussian:d=4,n=50", outdir=tmp_path / "f")
