"""train_ensemble: K networks as one vectorised model agree with K separate train_denoiser runs
(same draws, same initial weights), the sweep's ensemble path gives the same table, and bad
input is refused. On a CPU the only difference is floating-point order."""

import dataclasses

import pytest
import torch

import gaussdiff.experiments as ex
from _helpers import TINY_GRID
from gaussdiff.training import train_denoiser, train_ensemble

TINY = TINY_GRID


pytestmark = pytest.mark.usefixtures("one_thread")


def _two_sets(shape, n=(40, 60)):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n[0], *shape, generator=g) * 0.7
    b = torch.randn(n[1], *shape, generator=g) * 1.3 + 0.5  # other size, other sigma_data
    return a, b


def _flat(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("framework, grad_clip", [("edm", 1.0), ("vp", 0.05), ("flow", None)])
def test_ensemble_matches_separate_runs_mlp(framework, grad_clip):
    # grad_clip=0.05 clips at every step, with a different factor per model: clipping must
    # act on each model's own gradient norm.
    a, b = _two_sets((8,))
    kw = dict(
        steps=50,
        net="mlp",
        width=32,
        framework=framework,
        batch_size=16,
        warmup=10,
        grad_clip=grad_clip,
        progress=False,
    )
    seen = []
    ens = train_ensemble(
        [a, b], seeds=[3, 4], checkpoint_steps=[20, 50], callback=lambda step, dens: seen.append((step, dens)), **kw
    )
    assert [s for s, _ in seen] == [20, 50] and all(len(d) == 2 for _, d in seen)
    assert len(ens) == 2
    for k, (data, seed) in enumerate(((a, 3), (b, 4))):
        ref = train_denoiser(data, seed=seed, checkpoint_steps=[20, 50], callback=lambda step, den: None, **kw)
        assert ens[k].config["sigma_data"] == ref.config["sigma_data"]
        assert ens[k].config["seed"] == seed and ens[k].config["ensemble_index"] == k
        # measured: ~5e-8 relative (float32 reordering only)
        assert _rel(_flat(ens[k].denoiser.model), _flat(ref.denoiser.model)) < 1e-5
        assert _rel(_flat(ens[k].model), _flat(ref.model)) < 1e-5
        assert _rel(_flat(seen[-1][1][k].model), _flat(ref.denoiser.model)) < 1e-5
        assert ens[k].loss_history["step"] == ref.loss_history["step"]
        assert ens[k].loss_history["loss"] == pytest.approx(ref.loss_history["loss"], rel=1e-5)
        x = data[:5]
        s = torch.full((5,), 0.5)
        torch.testing.assert_close(ens[k].denoiser(x, s), ref.denoiser(x, s), rtol=1e-5, atol=1e-5)


def test_ensemble_matches_separate_runs_unet():
    # Width 16: two channels per GroupNorm group. With one channel per group (width 8) a conv
    # bias in front of a GroupNorm has a gradient that is zero up to rounding, and Adam turns
    # that rounding noise into steps of size lr: the two runs then differ by ~1e-3 in those
    # biases, which is correct behaviour of both, not a disagreement of the ensemble.
    a, b = _two_sets((1, 8, 8))
    kw = dict(steps=30, net="unet", width=16, batch_size=8, warmup=10, progress=False)
    ens = train_ensemble([a, b], seeds=[3, 4], **kw)
    for k, (data, seed) in enumerate(((a, 3), (b, 4))):
        ref = train_denoiser(data, seed=seed, **kw)
        assert _rel(_flat(ens[k].denoiser.model), _flat(ref.denoiser.model)) < 1e-4


def test_ensemble_bad_input():
    a, b = _two_sets((8,))
    with pytest.raises(ValueError, match="datasets"):
        train_ensemble([a, torch.zeros(10, 4)], seeds=[0, 1], steps=1, progress=False)
    with pytest.raises(ValueError, match="datasets"):
        train_ensemble(a, seeds=[0], steps=1, progress=False)
    with pytest.raises(ValueError, match="datasets"):
        train_ensemble([], seeds=[], steps=1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        train_ensemble([a, b], seeds=[0], steps=1, progress=False)
    with pytest.raises(ValueError, match="seeds"):
        train_ensemble([a, b], seeds=0, steps=1, progress=False)
    with pytest.raises(ValueError, match="sigma_data"):
        train_ensemble([a, b], seeds=[0, 1], sigma_data=[0.5], steps=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_steps"):
        train_ensemble([a, b], seeds=[0, 1], steps=5, checkpoint_steps=[2], progress=False)
    with pytest.raises(ValueError, match="ensemble"):
        dataclasses.replace(TINY, ensemble="yes").validate(200)


def test_ensemble_flag_keeps_cell_hash():
    # `ensemble` changes results by floating-point order only, like `device`: finished cells
    # stay valid. 855fd7a42cd4b072 is the default config's hash before the field existed.
    default = ex.PhaseConfig()
    assert default.cell_hash() == "855fd7a42cd4b072"
    for flag in (True, False):
        assert dataclasses.replace(default, ensemble=flag).cell_hash() == default.cell_hash()
    assert not default.use_ensemble() and dataclasses.replace(default, ensemble=True).use_ensemble()


def test_sweep_with_ensemble_matches_separate(tmp_path):
    # Same draws, so the networks agree to ~1e-7; the metrics computed from their samples can
    # still differ where a sample sits on a decision boundary (gap ratio 1/3, similarity
    # threshold), so each fraction may move by one sample out of 2 * n_samples (pooled) or
    # n_samples (pairs); the distances are continuous and agree to 1e-4 relative.
    cfg = dataclasses.replace(TINY, sizes=(4, 16))
    sep = ex.run_sweep(cfg, tmp_path / "sep", progress=False)
    ens = ex.run_sweep(dataclasses.replace(cfg, ensemble=True), tmp_path / "ens", progress=False)
    assert len(sep) == len(ens) == 4
    for r, q in zip(sep, ens):
        assert list(r) == list(q)
        assert [r[k] for k in ("n", "seed", "width", "framework", "step")] == [
            q[k] for k in ("n", "seed", "width", "framework", "step")
        ]
        assert abs(r["memorization"] - q["memorization"]) <= 1 / (2 * cfg.n_samples) + 1e-12
        assert abs(r["reproducibility"] - q["reproducibility"]) <= 1 / cfg.n_samples + 1e-12
        for k in ("dist_empirical", "dist_gaussian", "dist_empirical_heldout", "dist_gaussian_heldout"):
            assert q[k] == pytest.approx(r[k], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ensemble_on_cuda():
    a, b = _two_sets((8,))
    kw = dict(steps=200, net="mlp", width=64, batch_size=32, progress=False)
    ens = train_ensemble([a, b], seeds=[3, 4], device="cuda", **kw)
    cpu = train_ensemble([a, b], seeds=[3, 4], device="cpu", **kw)
    for k, (data, seed) in enumerate(((a, 3), (b, 4))):
        assert ens[k].denoiser.device.type == "cuda"
        # same device, same draws: close (cuBLAS batched and single GEMMs may round differently)
        ref = train_denoiser(data, seed=seed, device="cuda", **kw)
        assert _rel(_flat(ens[k].denoiser.model).cpu(), _flat(ref.denoiser.model).cpu()) < 1e-3
        # CPU and CUDA generators draw different streams: only the fit is comparable
        lc, lg = cpu[k].loss_history["loss"][-1], ens[k].loss_history["loss"][-1]
        assert lg == pytest.approx(lc, rel=0.3)
        x, s = data[:16], torch.full((16,), 0.3)
        err_c = (cpu[k].denoiser(x, s) - x).square().mean()
        err_g = (ens[k].denoiser(x, s) - x).square().mean()
        assert float(err_g) == pytest.approx(float(err_c), rel=0.5, abs=0.02)


def test_bench_ensemble_smoke(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "validation" / "benchmarks" / "bench_ensemble.py"
    spec = importlib.util.spec_from_file_location("bench_ensemble", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(
        ["--steps", "4", "--width", "8", "--batch-size", "4", "--n", "8", "--repeats", "1", "--outdir", str(tmp_path)]
    )
    (row,) = res["rows"]
    assert row["k"] == 2 and row["ensemble_ms_per_step"] > 0 and row["separate_ms_per_step"] > 0
    assert (tmp_path / "bench_ensemble.json").exists()
