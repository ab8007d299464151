"""The verbs ``gaussdiff compare`` and ``gaussdiff sample``: other people's models (and the
package's own) measured against the closed forms, and sampled. Thin layers over
:func:`gaussdiff.adapters.load_model`, :func:`gaussdiff.compare.compare_denoisers`,
:func:`gaussdiff.compare.write_comparison` and :func:`gaussdiff.compare.sample_model`;
registered in :mod:`gaussdiff.cli`'s verb list.
"""

from __future__ import annotations

import argparse
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int
from ._io import atomic_write, make_outdir
from .adapters import TIMESTEP_RULES, load_model
from .compare import SAMPLERS, CompareSettings, compare_denoisers, plot_sample_grid, sample_model, write_comparison

__all__: list[str] = []

_MODEL_HELP = (
    "a diffusers pipeline folder (model_index.json, unet/, scheduler/), a bare UNet2DModel folder "
    "(with --scheduler), a gaussdiff checkpoint folder (gaussdiff train --outdir), "
    "or a closed form empirical:SPEC / gaussian:SPEC"
)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _load(args, **extra):
    """``load_model`` with the command line's names in its errors."""
    try:
        return load_model(
            args.model, scheduler=args.scheduler, timestep_rule=args.timestep_rule, step=args.step, **extra
        )
    except ModuleNotFoundError as exc:  # diffusers missing: say how to install it
        raise ValueError(f"MODEL: {exc}") from exc


def _add_model_options(p):
    p.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    p.add_argument("--scheduler", type=Path, default=None, help="scheduler folder or scheduler_config.json (bare UNet)")
    p.add_argument(
        "--timestep-rule",
        choices=TIMESTEP_RULES,
        default="interpolate",
        help="sigma between two trained timesteps: interpolate in log sigma, or the nearest (default interpolate)",
    )
    p.add_argument("--step", type=int, default=None, help="checkpoint step of a gaussdiff model (default: final)")
    p.add_argument("--label", type=int, default=None, help="class label of a class-conditional model")


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------

_C = CompareSettings()


def _add_compare(sub):
    p = sub.add_parser(
        "compare",
        formatter_class=_formatter,
        help="measure a model (diffusers, gaussdiff) against the closed forms of its training set",
        description=textwrap.dedent("""\
            Compare MODEL with the exact empirical and Gaussian denoisers of the training set it was
            trained on: the relative distance of its denoiser to each, per sigma, on noisy training
            and held-out points (with bands over groups of points) and its generalization gap; then,
            from shared seeded noise and one deterministic sampler, the memorization fraction of
            its samples with a bootstrap interval, their nearest training images, and the
            reproducibility of the model against each closed form's samples. Writes compare.csv,
            samples.csv, samples.npz, config.json (settings, versions, the model's provenance),
            distances.png and samples.png to --outdir, and prints the tables.

            The training set is --data (a data set spec or a file) restricted to the --n rows picked
            by --data-seed (as gaussdiff train --n N --data-seed S chose them; --part 1 for the
            second of two disjoint subsets); held-out points are other rows of the same data set.
            Without --n the whole data set is the training set and nothing is held out.

            examples:
              gaussdiff compare out/ddpm_pipeline --data digits --n 64 --outdir out/cmp
              gaussdiff compare out/unet --scheduler out/scheduler --data digits --n 64 --outdir out/cmp
              gaussdiff compare out/d64 --data digits --n 64 --samples 256 --steps 40 --outdir out/cmp_net
              gaussdiff compare empirical:digits --data digits --n 64 --grid karras --outdir out/cmp_exact
            """),
    )
    _add_model_options(p)
    p.add_argument("--data", required=True, help="the training data: a data set spec or a path")
    p.add_argument("--n", type=int, default=None, help="training rows (default: the whole data set)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the permutation that picked the rows (default 0)")
    p.add_argument("--part", type=int, choices=(0, 1), default=0, help="which of two disjoint subsets (default 0)")
    p.add_argument("--points", type=int, default=_C.n_points, help=f"noised points per set (default {_C.n_points})")
    p.add_argument("--sigmas", type=int, default=_C.n_sigmas, help=f"noise levels (default {_C.n_sigmas})")
    p.add_argument("--sigma-lo", type=float, default=None, help="smallest level (default max(model's, 0.01))")
    p.add_argument("--sigma-hi", type=float, default=None, help="largest level (default min(model's, 80))")
    p.add_argument("--samples", type=int, default=_C.n_samples, help=f"samples per sampler (default {_C.n_samples})")
    p.add_argument("--steps", type=int, default=_C.steps, help=f"sampler steps (default {_C.steps})")
    p.add_argument(
        "--sampler", choices=tuple(SAMPLERS), default=_C.sampler, help=f"deterministic sampler (default {_C.sampler})"
    )
    p.add_argument(
        "--grid", choices=("own", "karras"), default=_C.grid, help=f"the model's own grid or EDM's (default {_C.grid})"
    )
    p.add_argument(
        "--threshold", type=float, default=_C.threshold, help=f"reproducibility threshold (default {_C.threshold})"
    )
    p.add_argument("--seed", type=int, default=_C.seed, help=f"seed of points, noise and bootstrap (default {_C.seed})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--outdir", type=Path, required=True, help="where to write the tables and figures")
    p.set_defaults(func=_run_compare)


def _run_compare(args):
    from .data import load_dataset, split_indices

    make_outdir(args.outdir, "--outdir")
    data, _, info = load_dataset(args.data)
    if args.n is not None:
        n = check_int(args.n, "--n", minimum=2)
        perm = split_indices(data.shape[0], data.shape[0], args.data_seed)[0]  # the same permutation
        if (args.part + 1) * n > data.shape[0]:
            raise ValueError(
                f"--n: part {args.part} of n = {n} rows needs {(args.part + 1) * n}, the data have {data.shape[0]}"
            )
        inside = perm[args.part * n : (args.part + 1) * n]
        train = data[inside]
        heldout = data[torch.cat([perm[: args.part * n], perm[(args.part + 1) * n :]])]  # every other row
        heldout = heldout if heldout.shape[0] else None
    else:
        train, heldout = data, None
    model = _load(args, n=args.n, data_seed=args.data_seed, part=args.part)  # a closed form: of the same rows
    try:
        settings = CompareSettings(
            n_points=args.points,
            n_sigmas=args.sigmas,
            sigma_lo=args.sigma_lo,
            sigma_hi=args.sigma_hi,
            n_samples=args.samples,
            steps=args.steps,
            sampler=args.sampler,
            grid=args.grid,
            threshold=args.threshold,
            seed=args.seed,
            label=args.label,
        )
        comp = compare_denoisers(model, train, heldout, settings=settings, progress=not args.no_progress)
    except ValueError as exc:  # name the option, not the function's argument
        name, sep, rest = str(exc).partition(":")
        if sep and name in _COMPARE_OPTIONS:
            raise ValueError(f"{_COMPARE_OPTIONS[name]}:{rest}") from exc
        raise
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    config["data_info"] = {k: v for k, v in info.items() if k != "truth"}
    config["n_train"], config["n_heldout"] = int(train.shape[0]), 0 if heldout is None else int(heldout.shape[0])
    paths = write_comparison(comp, args.outdir, config=config)
    _print_tables(comp)
    print("wrote " + ", ".join(str(p) for p in paths))


_COMPARE_OPTIONS = {
    "model": "MODEL",
    "train": "--data",
    "heldout": "--data",
    "sigma_lo": "--sigma-lo",
    "sigma_hi": "--sigma-hi",
    "n_points": "--points",
    "n_sigmas": "--sigmas",
    "n_samples": "--samples",
    "steps": "--steps",
    "threshold": "--threshold",
    "seed": "--seed",
    "label": "--label",
    "n": "--steps",
}


def _print_tables(comp) -> None:
    rows = comp.table()
    held = "dist_empirical_heldout" in rows[0]
    head = f"{'sigma':>9}  {'emp(train)':>16}  {'gauss(train)':>16}"
    head += f"  {'emp(held-out)':>16}  {'gauss(held-out)':>16}  {'gen. gap':>9}" if held else ""
    print(head)
    for r in rows:
        line = f"{r['sigma']:9.4g}"
        keys = ["empirical_train", "gaussian_train"] + (["empirical_heldout", "gaussian_heldout"] if held else [])
        for k in keys:
            line += f"  {r['dist_' + k]:8.3g} +- {r['dist_' + k + '_se']:<5.2g}"
        if held:
            line += f"  {r['generalization_gap']:9.3g}"
        print(line)
    print()
    print(f"{'sampler':>10}  {'memorization [95% CI]':>24}  {'median NN dist':>14}  {'reproducibility vs model':>24}")
    for r in comp.summary():
        rep = f"{r['reproducibility']:.2f} (cos {r['mean_similarity']:.2f})" if "reproducibility" in r else "-"
        mem = f"{r['memorization']:.2f} [{r['memorization_ci_low']:.2f}, {r['memorization_ci_high']:.2f}]"
        print(f"{r['sampler']:>10}  {mem:>24}  {r['median_nn_distance']:14.4g}  {rep:>24}")


# ---------------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------------


def _add_sample(sub):
    p = sub.add_parser(
        "sample",
        formatter_class=_formatter,
        help="sample a model (diffusers, gaussdiff, or a closed form) from seeded noise",
        description=textwrap.dedent("""\
            Draw --samples samples of MODEL from seeded noise (row j always gets the same noise for
            one --seed, whatever the model) with a deterministic sampler on a sigma grid, and write
            samples.npz (samples, grid, settings) and samples.png (a grid of images) to --outdir.
            --grid own is the model's own grid (a diffusers model's DDIM timesteps; EDM's rho = 7
            grid otherwise), so Euler on it is a diffusers model's own DDIM loop (eta = 0).

            MODEL empirical:SPEC / gaussian:SPEC samples the exact closed form of the data set SPEC,
            on --n rows picked by --data-seed (--part 1: the second of two disjoint subsets).

            examples:
              gaussdiff sample out/ddpm_pipeline --samples 64 --steps 50 --outdir out/smp
              gaussdiff sample out/unet --scheduler out/scheduler --sampler heun --grid karras --outdir out/smp
              gaussdiff sample out/d64 --samples 16 --steps 18 --sampler heun --outdir out/smp_net
              gaussdiff sample empirical:digits --n 64 --samples 32 --outdir out/smp_emp
              gaussdiff sample gaussian:digits --n 64 --samples 32 --seed 1 --outdir out/smp_gauss
            """),
    )
    _add_model_options(p)
    p.add_argument("--n", type=int, default=None, help="closed forms: training rows (default: all)")
    p.add_argument("--data-seed", type=int, default=0, help="closed forms: seed of the row permutation (default 0)")
    p.add_argument("--part", type=int, choices=(0, 1), default=0, help="closed forms: which disjoint subset")
    p.add_argument("--samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default="euler", help="deterministic sampler (default euler)")
    p.add_argument("--grid", choices=("own", "karras"), default="own", help="the model's own grid or EDM's")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--outdir", type=Path, required=True, help="where to write samples.npz and samples.png")
    p.set_defaults(func=_run_sample)


def _run_sample(args):
    make_outdir(args.outdir, "--outdir")
    model = _load(args, n=args.n, data_seed=args.data_seed, part=args.part)
    try:
        x, sigmas = sample_model(
            model,
            args.samples,
            steps=args.steps,
            sampler=args.sampler,
            grid=args.grid,
            seed=args.seed,
            label=args.label,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        name, sep, rest = str(exc).partition(":")
        flags = {"n_samples": "--samples", "steps": "--steps", "n": "--steps", "label": "--label", "seed": "--seed"}
        if sep and name in flags:
            raise ValueError(f"{flags[name]}:{rest}") from exc
        raise
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    buf = io.BytesIO()
    np.savez(
        buf,
        samples=x.numpy(),
        sigmas=sigmas.numpy(),
        settings=json.dumps(settings),
        model=json.dumps(model.provenance, default=str),
    )
    atomic_write(args.outdir / "samples.npz", buf.getvalue())
    plot_sample_grid(
        {model.kind: x}, args.outdir / "samples.png", title=f"{args.model}: {args.sampler}, {args.steps} steps"
    )
    print(
        f"sampled {x.shape[0]} x {tuple(x.shape[1:])} from {args.model} ({model.kind}) with {args.sampler} on "
        f"{len(sigmas) - 1} steps (sigma {float(sigmas[0]):.4g} -> {float(sigmas[-1]):.4g})"
    )
    print(f"wrote {args.outdir}/samples.npz and {args.outdir}/samples.png")
