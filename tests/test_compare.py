"""compare_denoisers and the verbs ``gaussdiff compare`` / ``gaussdiff sample``: exact models
are recognised as what they are, the outputs are complete, errors name the argument, and an
external diffusers model trained here goes through the whole comparison."""

import csv
import json

import numpy as np
import pytest
import torch

import gaussdiff as gd
from gaussdiff import cli
from gaussdiff.adapters import LoadedModel, load_model
from gaussdiff.compare import CompareSettings, compare_denoisers, sample_model, write_comparison

SMALL = dict(n_points=24, n_sigmas=4, n_groups=4, n_samples=12, steps=8, n_boot=200, grid="karras")


@pytest.fixture(scope="module")
def digits16():
    """16 training digits (float64) and 40 held-out ones, by one seeded permutation."""
    data, _, _ = gd.load_dataset("digits")
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(0))
    return data[perm[:16]].double(), data[perm[16:56]].double()


def _loaded(den, train, kind):
    return LoadedModel(den, kind, tuple(train.shape[1:]), provenance={"kind": kind})


def test_exact_models_are_recognised(digits16, one_thread):
    """The empirical denoiser compared with its own training set: distance 0 to the empirical
    closed form, every sample memorized and reproduced by the empirical flow; the Gaussian
    denoiser: distance 0 to the Gaussian closed form, reproducibility 1 against it."""
    train, held = digits16
    emp = compare_denoisers(_loaded(gd.EmpiricalDenoiser(train), train, "empirical"), train, held, **SMALL)
    for part in ("train", "heldout"):
        assert torch.equal(emp.distance[f"empirical_{part}"][0], torch.zeros(4, dtype=torch.float64))
        assert bool((emp.distance[f"gaussian_{part}"][0] > 0).all())
    assert emp.memorization["model"].value == 1.0 and emp.memorization["model"].n == 12
    assert emp.reproducibility["empirical"].fraction.value == 1.0
    assert torch.equal(emp.samples["model"], emp.samples["empirical"])
    assert torch.allclose(emp.nearest_images, emp.samples["model"], rtol=0, atol=1e-10)  # samples are training points
    # the empirical denoiser memorizes: its held-out error exceeds its training error at small sigma
    assert emp.mse_heldout[0] > 10 * emp.mse_train[0]
    gau = compare_denoisers(gd.GaussianDenoiser.fit(train), train, held, **SMALL)  # a plain denoiser works too
    assert torch.equal(gau.distance["gaussian_train"][0], torch.zeros(4, dtype=torch.float64))
    assert gau.reproducibility["gaussian"].fraction.value == 1.0
    assert gau.memorization["model"].value == gau.memorization["gaussian"].value == 0.0


def test_model_sees_the_same_noise_as_both_references(digits16, one_thread):
    """With D = (empirical + Gaussian) / 2 the two distances are equal at every sigma (the same
    noisy inputs for both references), band included, to rounding."""
    train, held = digits16
    e, g = gd.EmpiricalDenoiser(train), gd.GaussianDenoiser.fit(train)
    mid = _loaded(lambda x, s: 0.5 * (e(x, s) + g(x, s)), train, "callable")
    comp = compare_denoisers(mid, train, held, **SMALL)
    for part in ("train", "heldout"):
        (ve, se_e), (vg, se_g) = comp.distance[f"empirical_{part}"], comp.distance[f"gaussian_{part}"]
        # ||D - e|| = ||D - g|| = ||e - g|| / 2 exactly; float64 rounding of the sums remains
        assert torch.allclose(ve, vg, rtol=1e-12, atol=0) and torch.allclose(se_e, se_g, rtol=1e-9, atol=1e-15)
        assert bool((se_e > 0).all())
    rows = comp.table()
    assert len(rows) == 4 and rows[0]["sigma"] == pytest.approx(0.01) and rows[-1]["sigma"] == pytest.approx(80)
    assert rows[0]["generalization_gap"] == pytest.approx(rows[0]["mse_heldout"] - rows[0]["mse_train"])


def test_errors_name_the_argument(digits16, one_thread):
    train, held = digits16
    g = gd.GaussianDenoiser.fit(train)
    vec = gd.GaussianDenoiser.fit(train.reshape(16, -1))
    with pytest.raises(ValueError, match=r"model: it takes samples of shape \(64,\) but the data have shape"):
        compare_denoisers(vec, train, held, **SMALL)
    ranged = LoadedModel(g, "callable", (1, 8, 8), sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(ValueError, match="sigma_lo: the distance grid .* inside the model's range"):
        compare_denoisers(ranged, train, held, **{**SMALL, "sigma_lo": 0.01})
    bad = LoadedModel(lambda x, s: x[:, :, :4], "callable", (1, 8, 8))
    with pytest.raises(ValueError, match="model: returned shape"):
        compare_denoisers(bad, train, held, **SMALL)
    with pytest.raises(ValueError, match="label: the model is unconditional"):
        compare_denoisers(g, train, held, **{**SMALL, "label": 1})
    with pytest.raises(ValueError, match="sampler: expected one of"):
        CompareSettings(sampler="rk4")
    with pytest.raises(ValueError, match="heldout: rows of shape"):
        compare_denoisers(g, train, held.reshape(40, -1), **SMALL)


def test_write_comparison(tmp_path, digits16, one_thread):
    """The tables, the samples, config.json (settings, versions, provenance) and both figures."""
    train, held = digits16
    comp = compare_denoisers(_loaded(gd.EmpiricalDenoiser(train), train, "empirical"), train, held, **SMALL)
    paths = write_comparison(comp, tmp_path / "out", config={"note": "test"})
    assert {p.name for p in paths} == {
        "compare.csv",
        "samples.csv",
        "samples.npz",
        "config.json",
        "distances.png",
        "samples.png",
    }
    for p in paths:
        assert p.stat().st_size > 0
    with open(tmp_path / "out" / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and float(rows[0]["dist_empirical_train"]) == 0.0 and "dist_gaussian_heldout_se" in rows[0]
    with open(tmp_path / "out" / "samples.csv") as f:
        summary = {r["sampler"]: r for r in csv.DictReader(f)}
    assert float(summary["model"]["memorization"]) == 1.0 and float(summary["empirical"]["reproducibility"]) == 1.0
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert meta["versions"]["gaussdiff"] == gd.__version__ and meta["model"] == {"kind": "empirical"}
    assert meta["settings"]["n_samples"] == 12 and meta["config"] == {"note": "test"}
    arr = np.load(tmp_path / "out" / "samples.npz")
    assert arr["model"].shape == (12, 1, 8, 8) and arr["nearest"].shape == (12, 1, 8, 8)


def test_sample_model_shares_noise(digits16, one_thread):
    """Row j of two models' samples comes from the same seeded noise: the Gaussian closed form
    sampled through sample_model is its exact flow's sample of that noise up to Euler error."""
    train, _ = digits16
    g = _loaded(gd.GaussianDenoiser.fit(train), train, "gaussian")
    x, sig = sample_model(g, 5, steps=200, grid="karras", seed=4)
    x_more, _ = sample_model(g, 7, steps=200, grid="karras", seed=4)
    assert torch.equal(x, x_more[:5])  # the noise of row j does not depend on the batch
    start = gd.seeded_noise(5, (1, 8, 8), seed=4) * sig[0]
    exact = gd.sample_heun(g.denoiser, start, gd.karras_sigmas(400, float(sig[-2]), float(sig[0])))
    # Euler is order 1: 200 steps leave a relative error of a few 1e-3 (Heun on 400 steps is ~1e-6)
    assert (x - exact).norm() / exact.norm() < 2e-2


# ---------------------------------------------------------------------------------------------
# the verbs
# ---------------------------------------------------------------------------------------------

diffusers = pytest.importorskip("diffusers")


def tiny_pipeline(path, seed=0, prediction_type="epsilon"):
    torch.manual_seed(seed)  # diffusers draws its initial weights from the global generator
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    return path


def test_cli_compare_and_sample(tmp_path, capsys, one_thread):
    """``gaussdiff compare`` on a diffusers pipeline folder writes its files and prints its
    tables; ``gaussdiff sample`` gives sample_model's samples; errors are one ``error:`` line."""
    pipe = tiny_pipeline(tmp_path / "pipe")
    out = tmp_path / "cmp"
    args = ["compare", str(pipe), "--data", "digits", "--n", "16", "--points", "16", "--sigmas", "3"]
    args += ["--samples", "6", "--steps", "5", "--no-progress", "--outdir", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "memorization [95% CI]" in text and "gauss(held-out)" in text
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"]["kind"] == "diffusers" and meta["model"]["scheduler"] == "DDPMScheduler"
    assert meta["config"]["n_train"] == 16 and meta["config"]["n_heldout"] == 1797 - 16
    assert meta["versions"]["diffusers"] == diffusers.__version__
    for name in ("compare.csv", "samples.csv", "distances.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    # sample: the model's own DDIM grid, the samples of sample_model
    assert cli.main(["sample", str(pipe), "--samples", "4", "--steps", "5", "--outdir", str(tmp_path / "s")]) == 0
    arr = np.load(tmp_path / "s" / "samples.npz")
    want, sig = sample_model(load_model(pipe), 4, steps=5)
    assert np.array_equal(arr["samples"], want.numpy()) and np.array_equal(arr["sigmas"], sig.numpy())
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    # a closed form: the empirical flow returns training points
    assert (
        cli.main(
            ["sample", "empirical:digits", "--n", "16", "--samples", "5", "--steps", "30"]
            + ["--outdir", str(tmp_path / "e")]
        )
        == 0
    )
    x = torch.from_numpy(np.load(tmp_path / "e" / "samples.npz")["samples"])
    train = gd.subset(gd.load_dataset("digits")[0], 16, 0).double()
    assert float(gd.nearest_training(x, train, k=1)[0].max()) < 1e-6
    capsys.readouterr()
    # errors: the model does not fit the data; a folder that is no model
    assert cli.main(["compare", str(pipe), "--data", "gaussian:d=4", "--n", "8", "--outdir", str(tmp_path / "x")]) == 2
    assert "gaussdiff compare: error: MODEL: it takes samples of shape (1, 8, 8)" in capsys.readouterr().err
    assert cli.main(["sample", str(tmp_path), "--outdir", str(tmp_path / "y")]) == 2
    assert "error: model: " in capsys.readouterr().err
    assert (
        cli.main(["compare", str(pipe), "--data", "digits", "--n", "16", "--sigma-lo", "1e-4", "--outdir", str(out)])
        == 2
    )
    assert "error: --sigma-lo: the distance grid" in capsys.readouterr().err


def test_cli_compare_closed_form_uses_the_same_rows(tmp_path, capsys, one_thread):
    """``gaussdiff compare empirical:SPEC --n N --data-seed S --part P`` builds the closed form
    of exactly the rows it is compared with: distance 0 to the empirical denoiser, every sample
    memorized."""
    args = ["compare", "empirical:digits", "--data", "digits", "--n", "12", "--data-seed", "3", "--part", "1"]
    args += ["--points", "12", "--sigmas", "3", "--samples", "6", "--steps", "20", "--grid", "karras"]
    assert cli.main(args + ["--no-progress", "--outdir", str(tmp_path)]) == 0
    with open(tmp_path / "compare.csv") as f:
        assert all(float(r["dist_empirical_train"]) == 0.0 for r in csv.DictReader(f))
    with open(tmp_path / "samples.csv") as f:
        assert float(next(csv.DictReader(f))["memorization"]) == 1.0
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model"]["n"] == 12 and meta["model"]["data_seed"] == 3 and meta["model"]["part"] == 1


@pytest.mark.parametrize("verb", ["compare", "sample"])
def test_help_has_runnable_examples(verb, capsys):
    with pytest.raises(SystemExit):
        cli.main([verb, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and f"gaussdiff {verb} " in text.split("examples:")[1]


# ---------------------------------------------------------------------------------------------
# end to end: a diffusers model trained here, compared with its training set
# ---------------------------------------------------------------------------------------------


def train_tiny_unet(outdir, train, *, steps=600, seed=0, prediction_type="epsilon"):
    """Train a small diffusers UNet2DModel with DDPM's loss on ``train`` (N, 1, 8, 8) and save it as
    a DDPMPipeline folder. (The code of docs/guide/compare.md.)"""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x0 = train[torch.randint(0, train.shape[0], (64,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=g)
        target = noise if prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(outdir)
    return outdir


@pytest.mark.slow
def test_trained_diffusers_model_end_to_end(tmp_path, one_thread):
    """A UNet trained on 8 digits for 1500 steps (12 to 45 minutes on one CPU core) copies them:
    its samples are memorized, and at intermediate sigma (0.1 .. 0.6) its denoiser is nearer the
    empirical than the Gaussian closed form on training points, with a positive generalization
    gap. (At sigma -> 0 both closed forms tend to the identity on training points, so the
    comparison is made where they differ.) Measured in one run: memorization 1.00, distances
    0.005 / 0.009 / 0.013 to the empirical against 0.010 / 0.036 / 0.109 to the Gaussian."""
    data, _, _ = gd.load_dataset("digits")
    pipe = train_tiny_unet(tmp_path / "pipe", gd.subset(data, 8, 0), steps=1500)
    args = ["compare", str(pipe), "--data", "digits", "--n", "8", "--samples", "32", "--steps", "50"]
    assert cli.main(args + ["--no-progress", "--outdir", str(tmp_path / "cmp")]) == 0
    with open(tmp_path / "cmp" / "samples.csv") as f:
        summary = {r["sampler"]: r for r in csv.DictReader(f)}
    assert float(summary["model"]["memorization"]) > 0.5
    with open(tmp_path / "cmp" / "compare.csv") as f:
        mid = [r for r in csv.DictReader(f) if 0.1 <= float(r["sigma"]) <= 0.6]
    assert len(mid) == 3
    for r in mid:
        assert float(r["dist_empirical_train"]) < float(r["dist_gaussian_train"])
        assert float(r["generalization_gap"]) > 0
