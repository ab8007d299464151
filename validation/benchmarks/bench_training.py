"""Benchmark: the cost of one training step of gaussdiff's loop against the bare step.

A phase sweep trains many small networks, so on a CPU the per-step overhead of the training
loop (sampling indices, sigma and noise from a seeded generator, preconditioning, the loss,
gradient clipping, Adam, the EMA update, loss bookkeeping) decides its wall time. This script
measures, in one run and on the same network:

* ``full``: :func:`gaussdiff.train_denoiser` per step, as the difference of two runs
  (``steps_long - steps_short`` steps) so that set-up and the final copy cancel;
* ``bare``: forward + backward + ``Adam.step`` of the same network on pre-drawn inputs (the
  ceiling: no data sampling, no preconditioning, no clipping, no EMA);

and prints their ratio (target: at most 1.3). With ``--phase quick|default`` it also runs
``gaussdiff phase-curve`` and splits its wall time into training, evaluation (sampling and
metrics) and the rest (data, closed forms, process start-up).

Usage::

    python validation/benchmarks/bench_training.py --outdir out/bench_training
    python validation/benchmarks/bench_training.py --outdir out/bench_training --phase default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from gaussdiff._io import atomic_write


def _time_full(data, steps_short, steps_long, batch_size, width, threads):
    import gaussdiff as gd

    def run(steps):
        t0 = time.perf_counter()
        gd.train_denoiser(
            data, steps=steps, batch_size=batch_size, width=width, progress=False, num_threads=threads, seed=0
        )
        return time.perf_counter() - t0

    run(10)  # warm-up (allocator, kernels)
    # per-step cost as the difference of two run lengths (the fixed setup cancels); each length
    # best of three, since a single pair of wall times can even give a negative difference
    long_, short = min(run(steps_long) for _ in range(3)), min(run(steps_short) for _ in range(3))
    return (long_ - short) / (steps_long - steps_short)


def _time_bare(data, steps, batch_size, width, threads):
    from gaussdiff.networks import build_network

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_network("mlp", data.shape[1:], width=width, framework="edm", sigma_data=0.5)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        g = torch.Generator().manual_seed(0)
        x = data[torch.randint(data.shape[0], (batch_size,), generator=g)]
        c_noise = torch.randn(batch_size, generator=g)
        target = torch.randn(x.shape, generator=g)
        net = model.net

        def step():
            out = net(x, c_noise)
            loss = ((out - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(10):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps
    finally:
        torch.set_num_threads(old)


def _phase(mode: str, outdir: Path) -> dict:
    target = outdir / f"phase_{mode}"
    cmd = [sys.executable, "-m", "gaussdiff.cli", "phase-curve", "--outdir", str(target), "--no-progress"]
    if mode == "quick":
        cmd.append("--quick")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    meta = json.loads((target / "config.json").read_text())
    cells = meta.get("cell_seconds", float("nan"))
    return {
        "mode": mode,
        "wall_seconds": wall,
        "workers": meta.get("workers"),
        "train_seconds_summed": meta.get("train_seconds"),
        "eval_seconds_summed": meta.get("eval_seconds"),
        "cell_seconds_summed": cells,
        "other_seconds_summed": cells - meta.get("train_seconds", 0) - meta.get("eval_seconds", 0),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=128, help="the phase sweep's batch size (default 128)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a sweep worker uses 1)")
    p.add_argument("--steps", type=int, default=300, help="steps timed per measurement")
    p.add_argument(
        "--phase",
        choices=["none", "quick", "default"],
        default="none",
        help="also time gaussdiff phase-curve (--quick or the default run)",
    )
    args = p.parse_args(argv)
    import gaussdiff as gd

    data = gd.load_dataset("digits")[0][:256]
    full = _time_full(data, 20, 20 + args.steps, args.batch_size, args.width, args.threads)
    bare = _time_bare(data, args.steps, args.batch_size, args.width, args.threads)
    result = {
        "batch_size": args.batch_size,
        "width": args.width,
        "threads": args.threads,
        "full_ms_per_step": full * 1e3,
        "bare_ms_per_step": bare * 1e3,
        "ratio_full_over_bare": full / bare,
        "torch_version": torch.__version__,
    }
    print(f"MLP width {args.width}, batch {args.batch_size}, {args.threads} thread(s), digits (d = 64)")
    print(f"  full training loop : {full * 1e3:7.2f} ms/step")
    print(f"  bare fwd+bwd+Adam  : {bare * 1e3:7.2f} ms/step")
    print(f"  ratio full / bare  : {full / bare:7.3f}   (target <= 1.3)")
    if args.phase != "none":
        ph = _phase(args.phase, args.outdir)
        result["phase_curve"] = ph
        print(
            f"phase-curve ({args.phase}): wall {ph['wall_seconds']:.1f} s with {ph['workers']} worker(s); "
            f"summed over cells: training {ph['train_seconds_summed']:.1f} s, evaluation "
            f"{ph['eval_seconds_summed']:.1f} s, other {ph['other_seconds_summed']:.1f} s"
        )
    args.outdir.mkdir(parents=True, exist_ok=True)
    atomic_write(args.outdir / "bench_training.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
