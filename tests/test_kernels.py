"""Streaming kernels of the exact empirical denoiser (gaussdiff.kernels, gaussdiff.empirical).

Routes: the numba kernel compiled, as ``.py_func`` and under ``NUMBA_DISABLE_JIT=1`` (a
subprocess), the torch backend, and the slow float64 reference from exact differences
(``tests/_naive_kernels.py``); float32 accuracy on uncentred pixel data with near-duplicates
for sigma from 1e-3 to 1e3 times the data spread.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gaussdiff as gd
from _naive_kernels import empirical_posterior_naive, nearest_neighbors_naive
from gaussdiff import kernels as K
from gaussdiff.kernels import _numba as KN

F64 = torch.float64
ROOT = os.path.join(os.path.dirname(__file__), "..")
NOJIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(1e-300, np.abs(np.asarray(b)).max()))


def _problem(rng, N=37, d=5, B=6, dtype=np.float64, offset=0.0):
    y = (rng.standard_normal((N, d)) * 2 + offset).astype(dtype)
    x = (y[rng.integers(0, N, B)] + rng.standard_normal((B, d))).astype(dtype)
    return x, y


# ---------------------------------------------------------------------------------------------
# the kernel three ways (the tests named *_jit_subset also run under NUMBA_DISABLE_JIT=1)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_compiled_pyfunc_naive_jit_subset(rng, dtype):
    x, y = _problem(rng, dtype=dtype)
    prep = K.prepare_data(y)
    sig = np.array([0.05, 0.3, 1.0, 2.0, 10.0, 100.0])
    ref = empirical_posterior_naive(x, y, sig)
    # float64 data: the maths is exact, so 1e-10 relative. float32 data: the GEMMs run in float32
    # on centred data (rounding ~1e-7 of the centred values), the top candidates are exact.
    tol = 1e-10 if dtype == np.float64 else 1e-6
    for kern in (KN._stream_kernel, getattr(KN._stream_kernel, "py_func", KN._stream_kernel)):
        out = K.empirical_posterior_numba(x, prep, sig, chunk_size=8, kernel=kern)
        for o, r in zip(out, ref):
            assert _rel(o, r) < tol
    assert np.array_equal(
        K.empirical_posterior_numba(x, prep, sig, chunk_size=8)[0],
        K.empirical_posterior_numba(
            x, prep, sig, chunk_size=8, kernel=getattr(KN._stream_kernel, "py_func", KN._stream_kernel)
        )[0],
    )


def test_float64_fallback_path_exact_jit_subset(rng):
    """rtol < 0 sends every float32 query through the float64-GEMM fallback."""
    x, y = _problem(rng, dtype=np.float32, offset=100.0)
    prep = K.prepare_data(y)
    info = {}
    out = K.empirical_posterior_numba(x, prep, 0.7, chunk_size=8, rtol=-1.0, info=info)
    assert info["n_fallback"] == len(x)
    ref = empirical_posterior_naive(x, y, 0.7)
    assert _rel(out[0], ref[0]) < 1e-10 and _rel(out[1], ref[1]) < 1e-10  # float64 GEMMs: exact


def test_exp_f32_jit_subset():
    """The vectorisable exp behind float32 weights: within one float32 ulp of exp rounded from
    float64 (and equal to it in all but a few cases per million), 0 where exp underflows float32."""
    t = np.concatenate([np.linspace(0.0, 120.0, 200_001), [0.0, 1e-300, 103.0, 104.0, 110.0, 1e300]])
    f = np.vectorize(lambda v: np.float32(KN._exp_f32(v)))
    fast = f(t).astype(np.float32)
    ref = np.exp(-t).astype(np.float32)
    ulps = np.abs(fast.view(np.int32).astype(np.int64) - ref.view(np.int32))
    assert ulps.max() <= 1 and (ulps > 0).mean() < 1e-5
    assert fast[-1] == 0.0 and fast[-2] == 0.0 and fast[-6] == 1.0


def test_knn_kernel_jit_subset(rng):
    x, y = _problem(rng, N=40, d=4, B=5)
    y[7] = y[3]  # an exact tie: the lower index wins
    x[0] = y[3]
    prep = K.prepare_data(y)
    dr, ir = nearest_neighbors_naive(x, y, 3)
    for kern in (KN._stream_kernel, getattr(KN._stream_kernel, "py_func", KN._stream_kernel)):
        dist, idx = K.nearest_neighbors_numba(x, prep, 3, chunk_size=6, kernel=kern)
        assert np.array_equal(idx, ir)
        np.testing.assert_allclose(dist, dr, rtol=1e-12, atol=1e-12)
    assert idx[0, 0] == 3 and idx[0, 1] == 7


def test_knn_certificate_fallback_is_exact(rng):
    """More tied candidates than the list holds: the certificate fails, brute force answers."""
    y = np.repeat(rng.standard_normal((1, 3)), 30, axis=0) + np.arange(30)[:, None] * 1e-9
    y = np.concatenate([y, rng.standard_normal((20, 3)) + 5])
    x = y[:2] + 1e-3
    info = {}
    dist, idx = K.nearest_neighbors_numba(x, K.prepare_data(y), 2, info=info)
    dr, ir = nearest_neighbors_naive(x, y, 2)
    assert np.array_equal(idx, ir) and np.allclose(dist, dr, rtol=1e-12)


def test_nojit_subprocess():
    """The *_jit_subset tests once more with NUMBA_DISABLE_JIT=1 (pure Python kernels)."""
    if NOJIT:
        pytest.skip("already running without JIT")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "jit_subset"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "passed" in r.stdout


# ---------------------------------------------------------------------------------------------
# backends and the denoiser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_backends_agree(gen, dtype):
    y = torch.randn(203, 9, generator=gen, dtype=F64).to(dtype) * 3 + 50
    x = y[:11] + torch.randn(11, 9, generator=gen, dtype=F64).to(dtype)
    sig = torch.logspace(-2, 2, 11, dtype=dtype)
    En = gd.EmpiricalDenoiser(y, backend="numba", chunk_size=64)
    Et = gd.EmpiricalDenoiser(y, backend="torch", chunk_size=64)
    assert gd.EmpiricalDenoiser(y).backend == "numba"  # auto on CPU
    # float64: both exact to round-off (1e-10); float32: both within float32 rounding of the
    # output (the GEMMs' summation orders differ between BLAS calls).
    tol = 1e-10 if dtype == F64 else 2e-6
    for f in ("__call__", "log_density", "effective_count"):
        a, b = getattr(En, f)(x, sig), getattr(Et, f)(x, sig)
        assert a.dtype == b.dtype == dtype
        assert _rel(a.to(F64), b.to(F64)) < tol
    da, ia = En.nearest_neighbors(x, 4)
    db, ib = Et.nearest_neighbors(x, 4)
    assert torch.equal(ia, ib) and torch.allclose(da, db, rtol=1e-12)


def test_denoiser_matches_naive_float64(gen):
    y = torch.randn(120, 6, generator=gen, dtype=F64) + 3
    x = torch.randn(9, 6, generator=gen, dtype=F64) + 3
    E = gd.EmpiricalDenoiser(y, chunk_size=32)
    for s in (1e-3, 0.1, 1.0, 1e3):
        mean, lse, neff = empirical_posterior_naive(x.numpy(), y.numpy(), s)
        assert _rel(E(x, s).numpy(), mean) < 1e-10
        lp = lse - np.log(120) - 3 * np.log(2 * np.pi * s**2)
        assert _rel(E.log_density(x, s).numpy(), lp) < 1e-10
        assert _rel(E.effective_count(x, s).numpy(), neff) < 1e-10
    # limits: one point carries the posterior at sigma -> 0, all N equally at sigma -> inf
    assert torch.allclose(E.effective_count(x, 1e-4), torch.ones(9, dtype=F64))
    assert torch.allclose(E.effective_count(x, 1e5), torch.full((9,), 120.0, dtype=F64), rtol=1e-6)


def test_odd_sizes(gen):
    one = torch.randn(1, 4, generator=gen, dtype=F64)
    x = torch.randn(3, 4, generator=gen, dtype=F64)
    for be in ("numba", "torch"):
        E = gd.EmpiricalDenoiser(one, backend=be)  # N = 1
        assert torch.allclose(E(x, 0.5), one.expand(3, 4), rtol=1e-14)
        assert torch.equal(E.nearest_neighbors(x, 1)[1], torch.zeros(3, 1, dtype=torch.long))
        y = torch.randn(50, 4, generator=gen, dtype=F64)
        E = gd.EmpiricalDenoiser(y, backend=be, chunk_size=7)  # 50 = 7 * 7 + 1
        ref = empirical_posterior_naive(x[:1].numpy(), y.numpy(), 0.8)[0]
        assert _rel(E(x[:1], 0.8).numpy(), ref) < 1e-10  # B = 1
        img = torch.randn(13, 2, 3, 3, generator=gen, dtype=torch.float32) * 60 + 120  # (B, C, H, W)
        Ei = gd.EmpiricalDenoiser(img, backend=be, chunk_size=5)
        q = img[:4] + torch.randn(4, 2, 3, 3, generator=gen)
        out = Ei(q, 10.0)
        assert out.shape == q.shape and out.dtype == torch.float32
        ref = empirical_posterior_naive(q.reshape(4, -1).numpy(), img.reshape(13, -1).numpy(), 10.0)[0]
        # float32 output of values ~120: a few ulps (7.6e-6 each)
        assert np.abs(out.reshape(4, -1).numpy() - ref).max() < 1e-4


def test_autograd_through_the_kernel(gen):
    y = torch.randn(40, 3, generator=gen, dtype=F64)
    E = gd.EmpiricalDenoiser(y, chunk_size=16)
    x = torch.randn(4, 3, generator=gen, dtype=F64).requires_grad_(True)
    (g,) = torch.autograd.grad(E.log_density(x, 0.6).sum(), x)
    torch.testing.assert_close(g, E.score(x.detach(), 0.6), rtol=1e-10, atol=1e-12)
    J = torch.autograd.functional.jacobian(lambda v: E(v[None], 0.6)[0], x[0].detach())
    torch.testing.assert_close(J, E.jacobian(x[:1].detach(), 0.6)[0], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# float32 accuracy where the norm expansion fails
# ---------------------------------------------------------------------------------------------


def _pixel_problem(rng, N=400, d=48, B=24, delta=1e-2):
    """Uncentred pixel data in [0, 255] with near-duplicate pairs at distance ~``delta``
    (exactly representable in float32), queries near the duplicates."""
    y = rng.uniform(0, 255, (N, d)).astype(np.float32)
    half = N // 2
    step = np.zeros(d, np.float32)
    step[0] = np.float32(delta)
    y[half:] = (y[:half] + step).astype(np.float32)  # y[i + half] = y[i] + delta e_0
    return y, half


@pytest.mark.parametrize(
    "backend,device",
    [
        ("numba", "cpu"),
        ("torch", "cpu"),
        pytest.param("torch", "cuda", marks=cuda),
        pytest.param("triton", "cuda", marks=[cuda, pytest.mark.skipif(not K.have_triton(), reason="needs triton")]),
    ],
)
def test_float32_accuracy_uncentred_near_duplicates(rng, backend, device):
    y, half = _pixel_problem(rng)
    gap = float(np.abs(y[half:] - y[:half]).max())  # competing distance
    spread = float(y.std())
    E = gd.EmpiricalDenoiser(torch.from_numpy(y).to(device), backend=backend)
    worst = 0.0
    for srel in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3):
        s = srel * spread
        # queries between near-duplicate pairs (at small sigma the pair competes), plus noise
        pick = rng.integers(0, half, 24)
        x = (0.5 * (y[pick] + y[pick + half]) + min(s, 1e-3) * rng.standard_normal((24, y.shape[1]))).astype(np.float32)
        mean, _, _ = empirical_posterior_naive(x, y, s)  # float64, exact differences
        out = E(torch.from_numpy(x).to(device), s).cpu().numpy().astype(np.float64)
        err = float(np.abs(out - mean).max())
        worst = max(worst, err)
        # far below the distance between the competing points, and at the float32 resolution of
        # values up to 255 (ulp 1.5e-5): the output itself is rounded to float32.
        assert err < 1e-2 * gap and err < 1e-4, (srel, err)
    # the float32 norm expansion, by contrast, is wrong by far more than the gap at small sigma
    s = 1e-3 * spread
    x = (0.5 * (y[:24] + y[half : half + 24])).astype(np.float32)
    d2 = (x**2).sum(1)[:, None] - 2 * x @ y.T + (y**2).sum(1)[None]
    w = np.exp(-(d2 - d2.min(1, keepdims=True)) / (2 * s**2))
    naive32 = (w / w.sum(1, keepdims=True)) @ y
    assert np.abs(naive32 - empirical_posterior_naive(x, y, s)[0]).max() > 0.1 * gap


def test_certificate_bounds_the_float32_error(rng):
    """The documented bound (kernels, step 5) with the fallback switched off: for float32 pixel
    data the error of D stays below 2 cert max_i|y_i - D| plus the second GEMM's own float32
    rounding (Higham-Mary form, 4 sqrt(N) u max|y_c|), from sigma = 0.01 to 100 times the spread."""
    N, d, B = 3000, 256, 16
    y = rng.uniform(0, 255, (N, d)).astype(np.float32)
    spread = float(y.std())
    prep = K.prepare_data(y)
    gemm2 = 4 * np.sqrt(N) * 2.0**-24 * prep.ymax
    certified = 0
    for srel in (1e-2, 1e-1, 1.0, 3.0, 10.0, 30.0, 100.0):
        s = srel * spread
        x = (y[rng.integers(0, N, B)] + s * rng.standard_normal((B, d))).astype(np.float32)
        info = {}
        mean, _, _ = K.empirical_posterior_numba(x, prep, s, rtol=np.inf, info=info)
        ref = empirical_posterior_naive(x, y, s)[0]
        err = np.linalg.norm(mean - ref, axis=1)
        R = np.array([np.linalg.norm(y.astype(np.float64) - r, axis=1).max() for r in ref])
        assert (err <= 2 * info["cert"] * R + gemm2).all(), (srel, err, info["cert"])
        certified += int((info["cert"] > 0).sum())
    assert certified > 0  # the broad-posterior regime was exercised


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_float32_nearest_neighbour_winner_never_changes(rng, backend):
    y, half = _pixel_problem(rng, delta=1e-3)
    x = (y[:64] + np.float32(3e-4) * rng.standard_normal((64, y.shape[1])).astype(np.float32)).astype(np.float32)
    E = gd.EmpiricalDenoiser(torch.from_numpy(y), backend=backend)
    dist, idx = E.nearest_neighbors(torch.from_numpy(x), 3)
    dr, ir = nearest_neighbors_naive(x, y, 3)
    assert np.array_equal(idx.numpy(), ir)
    np.testing.assert_allclose(dist.numpy(), dr, rtol=1e-12)
    # the public entry point, same convention
    d2, i2 = K.nearest_neighbors(torch.from_numpy(x), torch.from_numpy(y), 3)
    assert d2.dtype == F64 and i2.dtype == torch.long and np.array_equal(i2.numpy(), ir)
    # at tiny sigma the denoiser returns the winner
    s = 1e-8 * float(y.std())  # far below the gaps: the posterior sits on the winner
    out = E(torch.from_numpy(x), s).numpy()
    assert np.array_equal(np.abs(out - y[ir[:, 0]]).max(1) < 1e-9, np.ones(64, bool))


# ---------------------------------------------------------------------------------------------
# validation of input
# ---------------------------------------------------------------------------------------------


def _raises(fn, name):
    with pytest.raises(ValueError) as e:
        fn()
    assert str(e.value).startswith(name), str(e.value)


def test_bad_input_names_the_argument(rng, gen):
    y = torch.randn(10, 3, generator=gen)
    E = gd.EmpiricalDenoiser(y)
    _raises(lambda: gd.EmpiricalDenoiser(y, backend="cuda"), "backend")
    if not K.triton_interpreted():
        _raises(lambda: gd.EmpiricalDenoiser(y, backend="triton"), "backend")  # CPU data
    _raises(lambda: gd.EmpiricalDenoiser(y, chunk_size=0), "chunk_size")
    _raises(lambda: gd.EmpiricalDenoiser(y, n_candidates=0), "n_candidates")
    _raises(lambda: gd.EmpiricalDenoiser(y, rtol=-1.0), "rtol")
    _raises(lambda: gd.EmpiricalDenoiser(y.half()), "data")
    _raises(lambda: E(torch.randn(2, 4), 1.0), "x")
    _raises(lambda: E(torch.randn(2, 3), -1.0), "sigma")
    _raises(lambda: E.nearest_neighbors(torch.randn(2, 3), 11), "k")
    _raises(lambda: K.nearest_neighbors(torch.randn(2, 4), y, 1), "x")
    prep = K.prepare_data(y.numpy())
    xs = rng.standard_normal((4, 6)).astype(np.float32)
    _raises(lambda: K.empirical_posterior_numba(xs[:, ::2], prep, 1.0), "x")  # not contiguous
    _raises(lambda: K.empirical_posterior_numba(xs[:, :3].astype(np.float64), prep, 1.0), "x")  # dtype
    bad = np.ascontiguousarray(xs[:, :3])
    bad[0, 0] = np.nan
    _raises(lambda: K.empirical_posterior_numba(bad, prep, 1.0), "x")
    _raises(lambda: K.empirical_posterior_numba(np.ascontiguousarray(xs[:, :3]), prep, 0.0), "sigma")
    _raises(lambda: K.empirical_posterior_numba(np.ascontiguousarray(xs[:, :3]), prep, 1.0, chunk_size=0), "chunk_size")


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ---------------------------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_cuda_matches_cpu(gen, dtype, backend):
    y = (torch.randn(3000, 20, generator=gen, dtype=F64) * 40 + 120).to(dtype)
    x = y[:33] + torch.randn(33, 20, generator=gen, dtype=F64).to(dtype)
    Ec = gd.EmpiricalDenoiser(y.cuda(), backend=backend)
    assert Ec.backend == ("triton" if backend == "auto" and K.have_triton() else "torch")
    E = gd.EmpiricalDenoiser(y, backend="numba")
    tol = 1e-10 if dtype == F64 else 2e-6  # float32: output rounding, as on CPU
    for s in (1e-2, 1.0, 40.0, 4e3):
        assert _rel(Ec(x.cuda(), s).cpu().to(F64), E(x, s).to(F64)) < tol
    da, ia = Ec.nearest_neighbors(x.cuda(), 3)
    db, ib = E.nearest_neighbors(x, 3)
    assert torch.equal(ia.cpu(), ib)


@cuda
def test_cuda_tf32_is_opt_in(gen):
    y = torch.randn(500, 64, generator=gen).cuda()
    prep = K.prepare_data(y, backend="torch")
    prev = torch.backends.cuda.matmul.allow_tf32
    K.empirical_posterior_torch(y[:8], prep, 1.0, allow_tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 == prev


# ---------------------------------------------------------------------------------------------
# the benchmark's quick mode
# ---------------------------------------------------------------------------------------------


def test_benchmark_quick(tmp_path, capsys):
    path = os.path.join(ROOT, "validation", "benchmarks", "bench_empirical.py")
    spec = importlib.util.spec_from_file_location("bench_empirical", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--quick", "--outdir", str(tmp_path), "--no-compile-time", "--sizes", "200,8,16"])
    out = capsys.readouterr().out
    assert "GF/s" in out and "wrote" in out
    data = json.load(open(tmp_path / "bench_empirical.json"))
    assert len(data["rows"]) == len(rows) >= 1
    for r in data["rows"]:
        assert r["time_s"] > 0 and r["speedup_vs_naive"] is not None and r["max_err_rel_spread"] < 1e-5


def test_one_dispatch_gives_each_backend_and_refuses_others():
    """``kernels.stream_posterior`` and ``kernels.nearest_neighbors`` are the one dispatch
    EmpiricalDenoiser uses: torch tensors in for every backend, the same float64 torch triple
    (and the same neighbours) out (numba and torch agree to float32 rounding), and a named error
    for an unknown backend."""
    from gaussdiff import kernels

    g = torch.Generator().manual_seed(0)
    data = torch.randn(200, 16, generator=g)
    x = data[:5] + 0.3 * torch.randn(5, 16, generator=g)
    s = torch.full((5,), 0.7)
    outs = {
        b: kernels.stream_posterior(x, kernels.prepare_data(data, backend=b), s, backend=b) for b in ("numba", "torch")
    }
    for b, out in outs.items():
        assert len(out) == 3 and all(isinstance(o, torch.Tensor) and o.dtype == torch.float64 for o in out), b
    for a, b in zip(outs["numba"], outs["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # both certified to float32 rounding
    ref = empirical_posterior_naive(x.double().numpy(), data.double().numpy(), s.double().numpy())
    torch.testing.assert_close(outs["numba"][0], torch.as_tensor(ref[0]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend: expected 'numba', 'torch' or 'triton'"):
        kernels.stream_posterior(x, kernels.prepare_data(data, backend="torch"), s, backend="cupy")
    # nearest neighbours: prepared data for each backend, raw data with an explicit backend and
    # with the automatic one: all exactly the float64 brute force
    dr, ir = nearest_neighbors_naive(x.numpy(), data.numpy(), 3)
    runs = [
        kernels.nearest_neighbors(x, kernels.prepare_data(data, backend=b), 3, backend=b) for b in ("numba", "torch")
    ]
    runs += [kernels.nearest_neighbors(x, data, 3, backend="torch"), kernels.nearest_neighbors(x, data, 3)]
    for dist, idx in runs:
        assert dist.dtype == torch.float64 and idx.dtype == torch.long
        assert np.array_equal(idx.numpy(), ir) and np.allclose(dist.numpy(), dr, rtol=1e-12)
    with pytest.raises(ValueError, match="backend: expected 'numba', 'torch' or 'triton'"):
        kernels.nearest_neighbors(x, data, 3, backend="cupy")
    assert kernels.auto_backend("cpu") == "numba"
    assert kernels.auto_backend("meta") == "torch"
