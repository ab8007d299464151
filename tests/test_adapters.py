"""Adapters of external models (gaussdiff.adapters): the conversions are exact (a closed form
dressed up as an eps-/v-/x0-predicting UNet comes back as itself), Euler on a diffusers model's
own grid is its own DDIM (and Euler) loop, models load from local folders only, and bad input
or a missing diffusers says what to do."""

import builtins
import json
import math

import pytest
import torch

import gaussdiff as gd
from gaussdiff.adapters import CallableDenoiser, DiffusersDenoiser, LoadedModel, load_model
from _helpers import tiny_unet

diffusers = pytest.importorskip("diffusers")

PREDICTIONS = ("epsilon", "v_prediction", "sample")


@pytest.fixture(scope="module")
def gaussian():
    """A float64 Gaussian law on 1 x 8 x 8 images with a rank-deficient covariance."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(64, 20, generator=g, dtype=torch.float64) * 0.3
    mean = torch.randn(64, generator=g, dtype=torch.float64) * 0.2
    return gd.GaussianDenoiser(mean.reshape(1, 8, 8), a @ a.T)


class ClosedFormUNet(torch.nn.Module):
    """A fake float64 UNet2DModel whose output is what an exact network would predict for a
    Gaussian law: from ``x_t`` and integer ``t`` it recovers ``sigma_t`` and ``x_hat`` from the
    DDPM table by the DDPM definitions (not the adapter's formulas), applies the closed form
    ``D`` and returns eps = (x_t - sqrt(abar) D) / sqrt(1 - abar), v = sqrt(abar) eps -
    sqrt(1 - abar) D, or D itself."""

    def __init__(self, den, alphas_cumprod, prediction_type):
        super().__init__()
        self.den, self.abar, self.pred = den, alphas_cumprod.to(torch.float64), prediction_type
        self.config = {"sample_size": 8, "in_channels": 1, "num_class_embeds": None}
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.seen_t = []

    def forward(self, x_t, t, return_dict=False, class_labels=None):
        self.seen_t.append(t.clone())
        assert not t.is_floating_point() or bool((t == t.round()).all()), "the fake needs trained timesteps"
        abar = self.abar[t.long()].reshape(-1, 1, 1, 1)
        sigma = ((1 - abar) / abar).sqrt()
        x_hat = x_t / abar.sqrt()  # x_t = sqrt(abar) (x0 + sigma n)
        d = self.den(x_hat, sigma.reshape(-1))
        eps = (x_t - abar.sqrt() * d) / (1 - abar).sqrt()
        out = {"epsilon": eps, "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * d, "sample": d}[self.pred]
        return (out,)


@pytest.mark.parametrize("rule", ["interpolate", "nearest"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_conversions_return_the_closed_form(gaussian, prediction, rule):
    """float64, every prediction type: the adapter of an exact fake UNet is the closed form at
    every trained sigma, to 1e-12 (only rounding of the scaling and the conversion)."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)
    fake = ClosedFormUNet(gaussian, sched.alphas_cumprod, prediction)
    den = DiffusersDenoiser(fake, sched, timestep_rule=rule)
    g = torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1, 17, 250, 500, 998, 999])
    sig = den.sigmas[idx]
    x = torch.randn(len(idx), 1, 8, 8, generator=g, dtype=torch.float64) * (1 + sig.reshape(-1, 1, 1, 1))
    got = den(x, sig)
    want = gaussian(x, sig)
    assert torch.equal(fake.seen_t[-1].long(), idx)  # a trained sigma is its own timestep, both rules
    scale = want.abs().max()
    assert (got - want).abs().max() <= 1e-12 * scale
    assert got.dtype == torch.float64 and got.shape == x.shape


def test_timestep_rules(gaussian):
    """Between two trained levels: "interpolate" is linear in log sigma, "nearest" the nearer
    one in log sigma; the range is the table's and a sigma outside it is refused."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000)
    unet = ClosedFormUNet(gaussian, sched.alphas_cumprod, "epsilon")
    interp = DiffusersDenoiser(unet, sched)
    near = DiffusersDenoiser(unet, sched, timestep_rule="nearest")
    s = interp.sigmas
    abar = sched.alphas_cumprod.to(torch.float64)
    assert torch.equal(s, ((1 - abar) / abar).sqrt())
    assert interp.sigma_min == float(s[0]) and interp.sigma_max == float(s[-1])
    for i, w in ((10, 0.25), (500, 0.5), (900, 0.9)):
        mid = math.exp((1 - w) * math.log(s[i]) + w * math.log(s[i + 1]))
        assert float(interp.timestep(mid)) == pytest.approx(i + w, abs=1e-9)
        assert float(interp.sigma_of_timestep(i + w)) == pytest.approx(mid, rel=1e-12)
        assert float(near.timestep(mid)) == (i if w < 0.5 else i + 1)
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma: .* outside the model's trained range"):
        interp(x, float(s[0]) / 2)
    with pytest.raises(ValueError, match="sigma: .* outside"):
        interp(x, float(s[-1]) * 1.01)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """One saved DDPMPipeline folder per prediction type (DDIM scheduler config, no clipping)."""
    root = tmp_path_factory.mktemp("pipes")
    out = {}
    for k, pred in enumerate(PREDICTIONS):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, prediction_type=pred)
        diffusers.DDPMPipeline(unet=tiny_unet(k), scheduler=sched).save_pretrained(root / pred)
        out[pred] = root / pred
    return out


def _ddim_loop(unet, config, noise, n):
    """diffusers' own deterministic DDIM loop (eta = 0) from ``noise`` = x_T."""
    sch = diffusers.DDIMScheduler.from_config(config)
    sch.set_timesteps(n)
    x = noise.clone()
    with torch.no_grad():
        for t in sch.timesteps:
            x = sch.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return x


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_euler_on_own_grid_is_the_ddim_loop(pipelines, prediction, one_thread):
    """Saved and reloaded, the adapter sampled by gaussdiff's Euler on the model's own grid
    gives diffusers' DDIM samples from the same noise, to float32 rounding."""
    model = load_model(pipelines[prediction])
    den = model.denoiser
    assert isinstance(den, DiffusersDenoiser) and den.prediction_type == prediction
    assert model.provenance["weights_sha1"] and model.provenance["pipeline"] == "DDPMPipeline"
    n = 10
    sig = model.sigma_grid(n)
    assert sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    noise = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    want = _ddim_loop(den.unet, den.scheduler.config, noise, n).double()
    got = gd.sample_euler(den, noise.double() * (1 + sig[0] ** 2).sqrt(), sig)
    # the two routes round differently in float32 (x_t computed in float64 here, in float32 by
    # diffusers, whose x0-prediction route divides by sqrt(1 - abar) ~ sigma at the last steps) and
    # the errors pass through 10 network calls: relative 1e-5 of the largest value bounds them
    # (measured: 1.8e-7 epsilon, 3.7e-7 v_prediction, 1.4e-6 sample)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_euler_scheduler_loop_and_grid(tmp_path, one_thread):
    """An EulerDiscreteScheduler config: the own grid is the scheduler's sigmas, and Euler on it
    with the nearest-timestep rule is its own loop (integer timesteps with 'leading' spacing)."""
    sched = diffusers.EulerDiscreteScheduler(num_train_timesteps=1000, timestep_spacing="leading", steps_offset=1)
    unet = tiny_unet(5)
    unet.save_pretrained(tmp_path / "unet")
    sched.save_pretrained(tmp_path / "sched")
    model = load_model(tmp_path / "unet", scheduler=tmp_path / "sched", timestep_rule="nearest")
    n = 8
    sig = model.sigma_grid(n)
    ref = diffusers.EulerDiscreteScheduler.from_config(sched.config)
    ref.set_timesteps(n)
    assert torch.equal(sig, ref.sigmas.double())
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    x = noise * ref.init_noise_sigma
    with torch.no_grad():
        for t in ref.timesteps:
            out = unet(ref.scale_model_input(x, t), t).sample
            x = ref.step(out, t, x).prev_sample
    got = gd.sample_euler(model.denoiser, noise.double() * ref.init_noise_sigma, sig)
    # float32 rounding through 8 network calls, as in the DDIM test
    assert (got - x.double()).abs().max() <= 1e-5 * x.abs().max()


def test_class_conditional_unet(one_thread):
    """A class-conditional UNet: the label reaches the network, is required, and is checked."""
    unet = tiny_unet(1, num_class_embeds=3)
    sched = diffusers.DDPMScheduler(num_train_timesteps=100)
    den = DiffusersDenoiser(unet, sched)
    assert den.num_classes == 3
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = float(den.sigmas[40])
    a, b = den(x, s, torch.tensor([0, 0])), den(x, s, torch.tensor([2, 2]))
    with torch.no_grad():
        eps = unet((x / math.sqrt(1 + s**2)).float(), torch.tensor([40, 40]), class_labels=torch.tensor([2, 2])).sample
    assert torch.allclose(b, x - s * eps.double(), rtol=0, atol=1e-5)  # float32 network, float64 conversion
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(den.conditioned(2)(x, s), b)
    with pytest.raises(ValueError, match="label: .*class-conditional"):
        den(x, s)
    with pytest.raises(ValueError, match=r"label: labels must be in \[0, 2\]"):
        den(x, s, 3)


def test_callable_denoiser_checks(gaussian):
    """An EDM-style callable is used as it is; bad shapes, dtypes, values and sigmas are refused."""
    wrapped = CallableDenoiser(gaussian, (1, 8, 8), dtype=torch.float64, sigma_min=0.01, sigma_max=50)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(wrapped(x, 0.5), gaussian(x, 0.5))
    assert torch.allclose(wrapped.score(x, 0.5), gaussian.score(x, 0.5), rtol=1e-12, atol=0)  # Tweedie (T1)
    assert wrapped(x.float(), 0.5).dtype == torch.float32
    with pytest.raises(ValueError, match="sigma: .* outside"):
        wrapped(x, 100.0)
    with pytest.raises(ValueError, match="x: expected shape"):
        wrapped(torch.zeros(3, 64, dtype=torch.float64), 0.5)
    bad = {
        "output shape": lambda x, s: x[:, :, :4],
        "not floating": lambda x, s: x.long(),
        "NaN": lambda x, s: x * math.nan,
        "must return a tensor": lambda x, s: x.numpy(),
    }
    for msg, fn in bad.items():
        with pytest.raises(ValueError, match=f"model: .*{msg}"):
            CallableDenoiser(fn, (1, 8, 8), dtype=torch.float64)(x, 0.5)
    grid = wrapped.sigma_grid(5)
    assert float(grid[0]) == 50 and float(grid[-2]) == pytest.approx(0.01) and grid[-1] == 0


def test_load_model_forms_and_errors(tmp_path, pipelines, one_thread):
    """Every MODEL form loads from local files; bad ones say which argument is wrong."""
    emp = load_model("empirical:digits", n=16, data_seed=2)
    data, _, _ = gd.load_dataset("digits")
    assert isinstance(emp, LoadedModel) and emp.kind == "empirical"
    assert torch.equal(emp.train, gd.subset(data, 16, 2).double())
    gauss = load_model("gaussian:digits", n=16, part=1)
    assert gauss.kind == "gaussian" and torch.equal(gauss.train, gd.disjoint_split(data, 16, 0)[1].double())
    # a bare UNet folder: the scheduler config next to it, or given
    pipe = pipelines["epsilon"]
    bare = load_model(pipe / "unet", scheduler=pipe / "scheduler" / "scheduler_config.json")
    assert bare.kind == "diffusers" and bare.provenance["pipeline"] is None
    with pytest.raises(ValueError, match="scheduler: the bare UNet folder"):
        load_model(pipe / "unet")
    with pytest.raises(ValueError, match="model: no such folder"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model: .* neither a diffusers model nor a gaussdiff checkpoint"):
        load_model(tmp_path / "empty")
    cfg = tmp_path / "sched.json"
    cfg.write_text(json.dumps({"_class_name": "PNDMScheduler", "num_train_timesteps": 10}))
    with pytest.raises(ValueError, match="scheduler: PNDMScheduler is not supported"):
        load_model(pipe / "unet", scheduler=cfg)
    with pytest.raises(ValueError, match="model: empirical: needs a data set"):
        load_model("empirical:")


def test_load_gaussdiff_checkpoint(tmp_path, one_thread):
    """A gaussdiff checkpoint folder loads as the trained network."""
    data, _, _ = gd.load_dataset("gaussian:d=4")
    gd.train_denoiser(data[:32], steps=3, width=8, depth=1, batch_size=8, progress=False, outdir=tmp_path / "net")
    model = load_model(tmp_path / "net")
    ref = gd.load_denoiser(tmp_path / "net")
    x = data[:5].double()
    assert model.kind == "gaussdiff" and model.event_shape == (4,)
    assert torch.equal(model.denoiser(x, 0.3), ref(x, 0.3))
    assert model.provenance["weights_sha1"] == gd.weights_fingerprint(ref.model)


def test_missing_diffusers_says_how_to_install(monkeypatch, tmp_path, pipelines):
    """Without diffusers, loading a diffusers model names the package and the pip command;
    closed forms still load."""
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ModuleNotFoundError, match=r'diffusers is needed .* pip install "gaussdiff\[diffusers\]"'):
        load_model(pipelines["epsilon"])
    assert load_model("gaussian:gaussian:d=3").kind == "gaussian"
