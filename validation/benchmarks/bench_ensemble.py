"""Benchmark: K networks trained as one vectorised ensemble (:func:`gaussdiff.train_ensemble`)
against K separate :func:`gaussdiff.train_denoiser` runs, time per step, on one device.

Both sides train the same K models on the digits subsets of one phase-curve cell (same draws).
Each side is timed as the difference of a long and a short run, so set-up, the first CUDA
kernels and the final copies cancel; every run is repeated and the median kept. On a CPU the
ensemble does the same arithmetic in batched form and is no faster; on a GPU one small network
leaves the device idle and the ensemble pays about one network's kernel launches for K.

Usage::

    python validation/benchmarks/bench_ensemble.py --device cpu
    python validation/benchmarks/bench_ensemble.py --device cuda --k 2 4 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gaussdiff._io import atomic_write


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _per_step(fn, short, long, repeats, device):
    def run(steps):
        _sync(device)
        t0 = time.perf_counter()
        fn(steps)
        _sync(device)
        return time.perf_counter() - t0

    run(short)  # warm-up
    diffs = [run(long) - run(short) for _ in range(repeats)]
    return statistics.median(diffs) / (long - short)


def main(argv=None) -> dict:
    import gaussdiff as gd
    from gaussdiff import data as gdata

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--k", type=int, nargs="+", default=[2], help="ensemble sizes")
    p.add_argument("--n", type=int, default=276, help="training-set size of each model")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="steps of the long run (the short: a quarter)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--outdir", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = gdata.load_dataset("digits")[0]
    kw = dict(net="mlp", width=a.width, batch_size=a.batch_size, progress=False, device=a.device)
    short, long = max(1, a.steps // 4), a.steps
    rows = []
    for K in a.k:
        sets = [gdata.disjoint_split(data, a.n, s)[s % 2] for s in range(K)]
        ens = _per_step(
            lambda st: gd.train_ensemble(sets, seeds=list(range(K)), steps=st, **kw), short, long, a.repeats, a.device
        )
        sep = _per_step(
            lambda st: [gd.train_denoiser(d, seed=s, steps=st, **kw) for s, d in enumerate(sets)],
            short,
            long,
            a.repeats,
            a.device,
        )
        rows.append(dict(k=K, ensemble_ms_per_step=1e3 * ens, separate_ms_per_step=1e3 * sep, speedup=sep / ens))
    res = dict(
        device=a.device,
        device_name=(torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"),
        torch=torch.__version__,
        threads=a.threads,
        width=a.width,
        batch_size=a.batch_size,
        n=a.n,
        rows=rows,
    )
    print(
        f"device {res['device_name']}, torch {torch.__version__}, {a.threads} thread(s), "
        f"MLP width {a.width}, batch {a.batch_size}"
    )
    print(f"{'K':>3} {'ensemble ms/step':>17} {'K separate ms/step':>19} {'speed-up':>9}")
    for r in rows:
        print(f"{r['k']:>3} {r['ensemble_ms_per_step']:17.2f} {r['separate_ms_per_step']:19.2f} {r['speedup']:9.2f}")
    if a.outdir is not None:
        a.outdir.mkdir(parents=True, exist_ok=True)
        atomic_write(a.outdir / "bench_ensemble.json", json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
