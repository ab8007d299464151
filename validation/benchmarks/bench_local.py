"""Benchmark of the local closed forms (issue 18): ELS ``PatchDenoiser(train, k)(x, sigma)``.

For each data set and patch size it times, in the same run and interleaved:

* ``ours``: ``gaussdiff.local.PatchDenoiser(train, k, variant="els")`` on ``B`` query images
  (float64 arithmetic, identical patches merged, the default backend: the numba kernel on the
  CPU; the one-off preparation timed apart);
* ``gemm``: the same patch GEMMs alone, ``X Y^T`` for the ``Q = B H W`` centred query patches
  against all ``M = N (H-k+1)(W-k+1)`` training windows (unmerged), in float64 (the dtype ours
  computes in), by torch's BLAS with the same threads, in chunks of windows: the best of
  several chunk sizes is taken, so this is the practical ceiling of any method that forms the
  logits by GEMM (it writes the logits and does nothing with them);
* ``naive``: the straightforward torch route (``F.unfold`` + ``torch.cdist`` + ``softmax`` over
  all windows + ``weights @ windows``, the way research code writes it), in the data's float32,
  chunked over query pixels to fit memory. (Its float32 ``cdist`` loses ~1e-3 of the output
  at MNIST scale to cancellation; ``ours`` agrees with a float64 version of it to 3e-8.)

Rates are GFLOP/s counted as ``2 Q M k^2 C`` (the nominal logit GEMM) over time, so merging
duplicates can put ``ours`` above the GEMM rate; ``GF/s m`` counts only the merged rows ours
actually streams (``2 Q M' k^2 C``), the rate that compares like with like. Ours and the GEMM
are each the best of ``--repeats`` warm runs. The load average is printed and stored: on a
shared machine every rate moves with it, the ratios (measured interleaved) much less. ``gemm`` is timed on the first
``--gemm-rows`` training windows and ``naive`` on the first ``--naive-pixels`` query pixels,
both scaled linearly (both costs are linear in those counts; their unfolds are prepared outside
the GEMM timing, and the naive unfolds timed once and added unscaled); the error of ``ours``
against ``naive`` (float32) is printed as a sanity check. Targets (issue 18), on 2 cores: ours >= 0.5 x gemm and
>= 10 x naive at the two larger sizes.

Examples
--------
    python validation/benchmarks/bench_local.py --outdir out/bench
    python validation/benchmarks/bench_local.py --quick --outdir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

import gaussdiff as gd
from gaussdiff._io import atomic_write
from gaussdiff.local import PatchDenoiser

# (label, data spec, N, B)
SIZES = [
    ("digits 8x8", "digits", 1797, 8),
    ("mnist 28x28", "mnist5k", 2000, 1),
    ("colour 16x16", "patches:size=16,color=1", 5000, 1),
]
QUICK_SIZES = [("digits 8x8", "digits", 200, 2)]


def _timed(fn, repeats=1):
    fn()  # warm (allocations, lazy preparation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def naive_prepare(train, x, k):
    """The naive route's unfolds: query windows ``(B, H W, d)`` (zero padding) and every
    training window ``(M, d)``."""
    C = x.shape[1]
    r = k // 2
    xp = F.unfold(F.pad(x, (r, r, r, r)), k).transpose(1, 2)
    tp = F.unfold(train, k).transpose(1, 2).reshape(-1, C * k * k)
    return xp, tp


def naive_els(xp, tp, sigma, k, pixels, max_elems=1 << 25):
    """The straightforward ELS on prepared windows: cdist, softmax over every window, weighted
    sum of the whole windows, centre entries taken last. Returns ``(B, C, pixels)``."""
    B = xp.shape[0]
    d = tp.shape[1]
    C = d // (k * k)
    xq = xp[:, :pixels].reshape(-1, d)
    step = max(1, max_elems // tp.shape[0])
    outs = []
    for a in range(0, xq.shape[0], step):
        d2 = torch.cdist(xq[a : a + step], tp) ** 2
        w = torch.softmax(-d2 / (2 * sigma**2), dim=1)
        outs.append((w @ tp)[:, (k * k) // 2 :: k * k])
    return torch.cat(outs).reshape(B, pixels, C).transpose(1, 2)


def gemm_prepare(train, x, k, rows):
    """Centred float64 query windows ``(Q, d)`` and the first ``rows`` training windows."""
    C = x.shape[1]
    r = k // 2
    xq = F.unfold(F.pad(x.double(), (r, r, r, r)), k).transpose(1, 2).reshape(-1, C * k * k)
    tp = F.unfold(train.double(), k).transpose(1, 2).reshape(-1, C * k * k)[:rows]
    c = tp.mean(0)
    return (xq - c).contiguous(), (tp - c).contiguous()


def gemm_only(xq, tp, chunk):
    """The logit GEMMs alone (float64, ``chunk`` windows per GEMM)."""
    for a in range(0, tp.shape[0], chunk):
        xq @ tp[a : a + chunk].T
    return tp.shape[0]


GEMM_CHUNKS = (1024, 8192, 65536)  # windows per GEMM tried for the ceiling; the fastest counts


def gemm_best(xq, tp, repeats):
    """Seconds per window of the fastest chunking of :func:`gemm_only` (each timed warm)."""
    best = float("inf")
    for chunk in GEMM_CHUNKS:
        t, used = _timed(lambda c=chunk: gemm_only(xq, tp, c), repeats)
        best = min(best, t / used)
    return best


def bench(label, spec, N, B, k, sigma, *, gemm_rows, naive_pixels, gen, repeats, cache_bytes=None, backend=None):
    data, _, _ = gd.load_dataset(spec)
    train = data[:N]
    _, C, H, W = train.shape
    # held-out query images where the set has more than N, else training images (digits: all 1797)
    spare = data.shape[0] - N
    idx = torch.randperm(spare, generator=gen)[:B] + N if spare >= B else torch.randperm(N, generator=gen)[:B]
    x = data[idx] + sigma * torch.randn(B, C, H, W, generator=gen)
    M = N * (H - k + 1) * (W - k + 1)
    Q = B * H * W
    flops = 2.0 * Q * M * C * k * k
    t = time.perf_counter()
    kw = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
    if backend is not None:
        kw["backend"] = backend
    den = PatchDenoiser(train, k, variant="els", **kw)
    den._blocks_for(k)  # the one-off preparation (patches stored, duplicates merged)
    t_prep = time.perf_counter() - t
    t_ours, out = _timed(lambda: den(x, sigma), repeats)
    xq, tp64 = gemm_prepare(train, x, k, min(M, gemm_rows))
    t_gemm = gemm_best(xq, tp64, repeats) * M
    P = min(H * W, naive_pixels)
    t_unfold, (xp, tp) = _timed(lambda: naive_prepare(train, x, k))
    t_n, ref = _timed(lambda: naive_els(xp, tp, sigma, k, P))
    t_naive = t_unfold + t_n * (H * W) / P
    err = float((out.reshape(B, C, -1)[:, :, :P] - ref).abs().max())
    res = dict(
        size=label, N=N, B=B, H=H, W=W, C=C, k=k, sigma=sigma, M=M, Q=Q,
        merged_rows=den._blocks_for(k)[0].n_rows, backend=getattr(den, "backend", "torch"),
        prep_s=t_prep, ours_s=t_ours, gemm_s=t_gemm, naive_s=t_naive,
        ours_gflops=flops / t_ours / 1e9,
        ours_merged_gflops=flops * den._blocks_for(k)[0].n_rows / M / t_ours / 1e9, gemm_gflops=flops / t_gemm / 1e9, naive_gflops=flops / t_naive / 1e9,
        ours_over_gemm=t_gemm / t_ours, ours_over_naive=t_naive / t_ours, max_abs_diff_vs_naive=err,
    )  # fmt: skip
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outdir", default="out/bench_local")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, seconds)")
    ap.add_argument("--ks", type=int, nargs="+", default=None, help="patch sizes (default 3 5 7; quick: 3)")
    ap.add_argument("--sigma", type=float, default=0.5, help="noise level (data in [-1, 1])")
    ap.add_argument("--gemm-rows", type=int, default=1 << 17, help="windows the GEMM ceiling is timed on")
    ap.add_argument("--naive-pixels", type=int, default=16, help="query pixels the naive route is timed on")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    ap.add_argument("--cache-bytes", type=int, default=None, help="PatchDenoiser's cache_bytes (default: its own)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of ours and of the GEMM (best counts)")
    ap.add_argument("--backend", default=None, help="PatchDenoiser's backend (default: its own)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these data specs (e.g. mnist5k)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:  # torch's (the GEMM, the naive route) and numba's (ours on the CPU) alike
        torch.set_num_threads(args.threads)
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.only:
        sizes = [z for z in sizes if z[1] in args.only or z[0] in args.only]
    ks = args.ks or ([3] if args.quick else [3, 5, 7])
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    load = os.getloadavg()
    print(f"threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"{'size':14s} {'k':>2s} {'M':>8s} {'merged':>8s} {'prep s':>7s} {'ours s':>8s} {'GF/s':>6s} {'GF/s m':>6s} "
        f"{'gemm GF/s':>9s} {'naive s':>8s} {'xgemm':>6s} {'xnaive':>7s} {'diff':>8s}"
    )
    for label, spec, N, B in sizes:
        for k in ks:
            r = bench(
                label,
                spec,
                N,
                B,
                k,
                args.sigma,
                gemm_rows=args.gemm_rows,
                naive_pixels=args.naive_pixels,
                gen=gen,
                cache_bytes=args.cache_bytes,
                backend=args.backend,
                repeats=args.repeats,
            )
            rows.append(r)
            print(
                f"{label:14s} {k:2d} {r['M']:8d} {r['merged_rows']:8d} {r['prep_s']:7.2f} {r['ours_s']:8.3f} "
                f"{r['ours_gflops']:6.2f} {r['ours_merged_gflops']:6.2f} {r['gemm_gflops']:9.2f} {r['naive_s']:8.2f} {r['ours_over_gemm']:6.2f} "
                f"{r['ours_over_naive']:7.2f} {r['max_abs_diff_vs_naive']:8.1e}",
                flush=True,
            )
    result = dict(
        benchmark="bench_local", quick=args.quick, sigma=args.sigma, threads=torch.get_num_threads(),
        cache_bytes=args.cache_bytes, backend=args.backend, repeats=args.repeats, load_average_start=load, load_average_end=os.getloadavg(),
        torch=torch.__version__, python=sys.version.split()[0], machine=platform.machine(),
        version=gd.__version__, rows=rows,
    )  # fmt: skip
    os.makedirs(args.outdir, exist_ok=True)
    atomic_write(os.path.join(args.outdir, "bench_local.json"), json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
