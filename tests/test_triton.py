"""The fused Triton kernels of the exact empirical denoiser (gaussdiff.kernels._triton), without a GPU.

Two routes that need no device: every kernel is compiled ahead of time to GPU machine code for
Hopper (sm_90) and Ampere (sm_80), with the argument types the host code passes (this catches
what the CPU interpreter does not: non-constexpr globals, unsupported float64 maths, type
mismatches in loops); and the whole backend runs under Triton's CPU interpreter
(``TRITON_INTERPRET=1``, a subprocess) against the float64 brute force from exact differences.
On a CUDA machine ``tests/test_kernels.py`` runs the same backend for real.
"""

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _signatures(ptr):
    """Argument types of each kernel as ``_triton`` launches them, data pointers ``ptr``."""
    f64, i32, i64 = "*fp64", "i32", "*i64"
    # the selection kernel serves the posterior (K = 8 candidates, marking them) and k-NN
    select = dict(G=ptr, sg=i32, YSQ=f64, A=f64, PMAX=f64, CL=f64, CI=i64, n=i32, c0=i32, span=i32, S=i32)
    select.update(K="constexpr", BLOCK="constexpr", MARK="constexpr")
    return {
        "_prep_kernel": (
            {
                "X": ptr,
                "sx": i32,
                "C": f64,
                "S": f64,
                "XQ": ptr,
                "sxq": i32,
                "XSQ": f64,
                "A": f64,
                "EPS": f64,
                "COEF": f64,
                "d": i32,
                "BLOCK_D": "constexpr",
            },
            {"BLOCK_D": 1024},
        ),
        "_select_kernel": (
            select,
            {"K": 8, "BLOCK": 1024, "MARK": True},
        ),
        "_weights_kernel": (
            {
                "G": ptr,
                "sg": i32,
                "YSQ": f64,
                "A": f64,
                "PMAX": f64,
                "W": ptr,
                "sw": i32,
                "MC": f64,
                "ZP": f64,
                "HP": f64,
                "n": i32,
                "c0": i32,
                "span": i32,
                "S": i32,
                "SP": "constexpr",
                "BLOCK": "constexpr",
            },
            {"SP": 4, "BLOCK": 1024},
        ),
        "_refine_kernel": (
            {
                "X": ptr,
                "sx": i32,
                "Y": ptr,
                "sy": i32,
                "C": f64,
                "A": f64,
                "XSQ": f64,
                "EPS": f64,
                "MC": f64,
                "ZP": f64,
                "HP": f64,
                "S": i32,
                "ACC": ptr,
                "sacc": i32,
                "CI": i64,
                "M": i32,
                "TOP": f64,
                "MEAN": f64,
                "smean": i32,
                "LSE": f64,
                "ENT": f64,
                "CERT": f64,
                "d": i32,
                "SP": "constexpr",
                "MP": "constexpr",
                "BLOCK_D": "constexpr",
            },
            {"SP": 4, "MP": 32, "BLOCK_D": 256},
        ),
        "_select_kernel (k-NN)": (
            select,
            {"K": 32, "BLOCK": 1024, "MARK": False},
        ),
    }


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("ptr", ["*fp32", "*fp64"])
def test_kernels_compile_for_gpu(arch, ptr):
    """Ahead-of-time compilation to a cubin (no GPU needed); no register spills to local memory."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("interpreter mode: kernels are not compiled")
    from triton.backends.compiler import GPUTarget
    from gaussdiff.kernels import _triton as T

    for name, (sig, consts) in _signatures(ptr).items():
        fn = getattr(T, name.split()[0])
        assert list(sig) == fn.arg_names, name  # the table follows the kernel
        k = triton.compile(
            triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", arch, 32)
        )
        assert len(k.asm["cubin"]) > 0, name
        assert ".local" not in k.asm["ptx"], f"{name}: spills to local memory"


_INTERPRETED = textwrap.dedent(r"""
    import numpy as np, torch
    import gaussdiff as gd
    from _naive_kernels import empirical_posterior_naive, nearest_neighbors_naive
    from gaussdiff import kernels as K
    from gaussdiff.kernels import _triton as T
    from gaussdiff.kernels._triton import empirical_posterior_triton as ET

    rng = np.random.default_rng(5)
    rel = lambda a, b: float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())

    # the running top-K keeps the lower index among equal logits (l' = 2 G - |y|^2 with |y|^2 = 0)
    G = torch.full((1, 2048), -100.0, dtype=torch.float64)
    G[0, :4] = torch.tensor([2.5, 1.5, 1.5, 1.5], dtype=torch.float64)
    G[0, 1024] = 2.0
    f64 = dict(dtype=torch.float64)
    pmax, cl, ci = torch.empty(1, 1, **f64), torch.empty(1, 4, **f64), torch.empty(1, 4, dtype=torch.long)
    T._select_kernel[(1, 1)](G, 2048, torch.zeros(2048, **f64), torch.ones(1, **f64), pmax, cl, ci, 2048, 0, 2048, 1,
                             K=4, BLOCK=1024, MARK=True)
    assert sorted(ci[0].tolist()) == [0, 1, 2, 1024] and float(pmax) == 5.0
    assert torch.isinf(G[0, [0, 1, 2, 1024]]).all() and G[0, 3] == 1.5         # candidates marked

    # float64: the maths is exact (1e-10); one chunk, many chunks with candidate merging, N = 1,
    # and chunks split into 2-3 column ranges per query (uneven last range; with several chunks)
    assert T._split_plan(3, 5000) == (2, 3072) and T._split_plan(2, 9000) == (3, 3072)
    for N, d, B, chunk in [(203, 9, 11, None), (300, 5, 4, 16), (1, 4, 3, None), (50, 4, 1, 7),
                           (5000, 6, 3, None), (9000, 4, 2, None), (9000, 4, 2, 4500)]:
        y = rng.standard_normal((N, d)) * 3 + 50
        x = y[rng.integers(0, N, B)] + rng.standard_normal((B, d))
        prep = K.prepare_data(torch.from_numpy(y), backend="triton")
        for s in (1e-3, 0.3, 3.0, 1e3):
            m, l, ne = ET(torch.from_numpy(x), prep, s, chunk_size=chunk)
            rm, rl, rn = empirical_posterior_naive(x, y, s)
            assert rel(m, rm) < 1e-10 and rel(l, rl) < 1e-10 and rel(ne, rn) < 1e-9, (N, chunk, s)

    # float32 pixel data with near-duplicate pairs: error far below the gap, sigma 1e-3..1e3 spread
    N, d, half = 200, 24, 100
    y = rng.uniform(0, 255, (N, d)).astype(np.float32)
    y[half:] = y[:half]
    y[half:, 0] += np.float32(1e-2)
    gap, spread = float(np.abs(y[half:] - y[:half]).max()), float(y.std())
    E = gd.EmpiricalDenoiser(torch.from_numpy(y), backend="triton")
    for srel in (1e-3, 1e-1, 1.0, 10.0, 1e3):
        s = srel * spread
        pick = rng.integers(0, half, 8)
        x = (0.5 * (y[pick] + y[pick + half]) + min(s, 1e-3) * rng.standard_normal((8, d))).astype(np.float32)
        err = float(np.abs(E(torch.from_numpy(x), s).numpy().astype(np.float64)
                           - empirical_posterior_naive(x, y, s)[0]).max())
        assert err < 1e-2 * gap and err < 1e-4, (srel, err)

    # the float64 fallback (forced with rtol < 0) is exact for float32 data
    x = (y[:5] + rng.standard_normal((5, d))).astype(np.float32)
    prep = K.prepare_data(torch.from_numpy(y), backend="triton")
    info = {}
    m, l, _ = ET(torch.from_numpy(x), prep, 0.7 * spread, rtol=-1.0, info=info)
    rm, rl, _ = empirical_posterior_naive(x, y, 0.7 * spread)
    assert info["n_fallback"] == 5 and rel(m, rm) < 1e-10 and rel(l, rl) < 1e-10

    # the certificate (a broad posterior, fallback off) is the numba backend's formula: the two
    # differ only through the float32 GEMMs' rounding of the approximate logits (different BLAS)
    x = (y[:6] + 10 * spread * rng.standard_normal((6, d))).astype(np.float32)
    it, inb = {}, {}
    ET(torch.from_numpy(x), prep, 10 * spread, rtol=np.inf, info=it)
    K.empirical_posterior_numba(x, K.prepare_data(y), 10 * spread, rtol=np.inf, info=inb)
    ct, cn = it["cert"].numpy(), inb["cert"]
    assert (cn > 0).all() and np.allclose(ct, cn, rtol=1e-3), (ct, cn)

    # images (B, C, H, W), per-query sigma, the same bits twice, and agreement with numba
    img = (rng.standard_normal((13, 2, 3, 3)) * 60 + 120).astype(np.float32)
    q = torch.from_numpy(img[:4] + rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    sig = torch.tensor([0.5, 5.0, 50.0, 500.0], dtype=torch.float32)
    Et = gd.EmpiricalDenoiser(torch.from_numpy(img), backend="triton", chunk_size=5)
    En = gd.EmpiricalDenoiser(torch.from_numpy(img), backend="numba")
    a, b = Et(q, sig), Et(q, sig)
    assert a.shape == q.shape and a.dtype == torch.float32 and torch.equal(a, b)
    assert rel(a.numpy(), En(q, sig).numpy()) < 2e-6
    # exact nearest neighbours (ties by the lower index), through the fused candidate pass
    for N, d, B, chunk in [(400, 12, 9, None), (300, 5, 7, 16), (5, 3, 4, None), (9000, 4, 2, None)]:
        y = (rng.uniform(0, 255, (N, d))).astype(np.float32)
        y[N // 2] = y[1]                                          # an exact tie
        x = (y[rng.integers(0, N, B)] + rng.standard_normal((B, d)).astype(np.float32)).astype(np.float32)
        x[0] = y[1]
        k = min(3, N)
        E = gd.EmpiricalDenoiser(torch.from_numpy(y), backend="triton", chunk_size=chunk)
        info = {}
        dist, idx = T.nearest_neighbors_triton(torch.from_numpy(x), E._prep, k, chunk_size=chunk, info=info)
        dr, ir = nearest_neighbors_naive(x, y, k)
        assert np.array_equal(idx.numpy(), ir) and np.allclose(dist.numpy(), dr, rtol=1e-12), (N, chunk)
        assert torch.equal(E.nearest_neighbors(torch.from_numpy(x), k)[1], idx)
    print("OK")
""")


def test_backend_under_the_interpreter():
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        PYTHONPATH=os.pathsep.join([os.path.abspath(ROOT), os.path.abspath(os.path.dirname(__file__))]),
    )
    r = subprocess.run(
        [sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-4000:]
