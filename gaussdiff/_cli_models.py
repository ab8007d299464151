"""The verbs ``gaussdiff compare`` and ``gaussdiff sample``: other people's models (and the
package's own) measured against the closed forms, and sampled. Thin layers over
:func:`gaussdiff.adapters.load_model`, :func:`gaussdiff.compare.compare_denoisers`,
:func:`gaussdiff.compare.write_comparison` and :func:`gaussdiff.compare.sample_model`;
registered in :mod:`gaussdiff.cli`'s verb list.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int
from ._io import atomic_write, make_outdir
from .adapters import TIMESTEP_RULES, load_model
from .compare import (
    LOCAL_FORMS,
    SAMPLERS,
    CompareSettings,
    compare_denoisers,
    plot_sample_grid,
    sample_model,
    write_comparison,
)
from .local.patches import PADDINGS

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
            reproducibility of the model against each closed form's samples and their agreement
            with the model's samples (median Pearson r, R^2). Writes compare.csv, samples.csv,
            samples.npz, config.json (settings, versions, the model's provenance), distances.png
            and samples.png to --outdir, and prints the tables.

            --local adds local closed forms of images (the patch machines ls, els, bbels and the
            Wiener masks) to every measurement; each patch machine's patch size is calibrated per
            sigma against the model (the size whose machine agrees best with it, median R^2, on
            --n-calibration noisy held-out images among --patch-sizes), written as the k_<variant>
            columns of compare.csv and to calibration.csv. --padding should match the network's:
            a U-Net padding with zeros is matched by bbels. They cost O(B H W N H W k^2 C) a call:
            meant for small images and training sets.

            The training set is --data (a data set spec or a file) restricted to the --n rows picked
            by --data-seed (as gaussdiff train --n N --data-seed S chose them; --part 1 for the
            second of two disjoint subsets); held-out points are other rows of the same data set.
            Without --n the whole data set is the training set and nothing is held out.

            examples:
              gaussdiff compare out/ddpm_pipeline --data digits --n 64 --outdir out/cmp
              gaussdiff compare out/unet --scheduler out/scheduler --data digits --n 64 --outdir out/cmp
              gaussdiff compare out/d64 --data digits --n 64 --samples 256 --steps 40 --outdir out/cmp_net
              gaussdiff compare empirical:digits --data digits --n 64 --grid karras --outdir out/cmp_exact
              gaussdiff compare gaussian:digits --data digits --n 64 --local bbels,wiener --samples 16 --outdir out/cmp_local
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
    p.add_argument(
        "--local",
        default=",".join(_C.local),
        metavar="NAMES",
        help=f"local closed forms to add, comma-separated from {','.join(LOCAL_FORMS)} (default none; images only)",
    )
    p.add_argument(
        "--padding",
        choices=PADDINGS,
        default=_C.padding,
        help=f"padding of the patch machines (default {_C.padding}: a zero-padded U-Net's match is bbels)",
    )
    p.add_argument(
        "--patch-sizes",
        default=",".join(map(str, _C.patch_sizes)),
        metavar="SIZES",
        help=f"odd candidate patch sizes of the calibration (default {','.join(map(str, _C.patch_sizes))})",
    )
    p.add_argument(
        "--n-calibration",
        type=int,
        default=_C.n_calibration,
        help=f"images the patch sizes are calibrated on (default {_C.n_calibration})",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--outdir", type=Path, required=True, help="where to write the tables and figures")
    p.set_defaults(func=_run_compare)


def _names(text: str, option: str) -> tuple[str, ...]:
    """A comma-separated option value as a tuple of its items ("" is none); an empty entry
    ("els,,bbels", "els,") is refused as the other verbs' lists are."""
    if not text.strip():
        return ()
    items = tuple(v.strip() for v in text.split(","))
    if not all(items):
        raise ValueError(f"{option}: expected comma-separated values with no empty entry, got {text!r}")
    return items


@contextlib.contextmanager
def _compare_options():
    """A library error ``"name: ..."`` with ``name`` replaced by the option that sets it."""
    try:
        yield
    except ValueError as exc:  # name the option, not the function's argument
        name, sep, rest = str(exc).partition(":")
        if sep and name in _COMPARE_OPTIONS:
            raise ValueError(f"{_COMPARE_OPTIONS[name]}:{rest}") from exc
        raise


def _run_compare(args):
    from .data import load_dataset, split_indices

    try:
        sizes = tuple(int(v) for v in _names(args.patch_sizes, "--patch-sizes"))
    except ValueError:
        raise ValueError(
            f"--patch-sizes: expected odd integers separated by commas, got {args.patch_sizes!r}"
        ) from None
    with _compare_options():  # settings first: a wrong option fails before any data or model is loaded
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
            local=_names(args.local, "--local"),
            padding=args.padding,
            patch_sizes=sizes,
            n_calibration=args.n_calibration,
        )
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
    with _compare_options():
        comp = compare_denoisers(model, train, heldout, settings=settings, progress=not args.no_progress)
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
    "local": "--local",
    "padding": "--padding",
    "patch_sizes": "--patch-sizes",
    "n_calibration": "--n-calibration",
}


def _print_tables(comp) -> None:
    rows = comp.table()
    parts = ["train"] + (["heldout"] if "dist_empirical_heldout" in rows[0] else [])
    short = {"empirical": "emp", "gaussian": "gauss"}
    keys = [f"{f}_{part}" for part in parts for f in comp.forms]
    head = f"{'sigma':>9}" + "".join(
        f"  {short.get(f, f) + ('(train)' if part == 'train' else '(held-out)'):>16}"
        for part in parts
        for f in comp.forms
    )
    head += f"  {'gen. gap':>9}" if len(parts) > 1 else ""
    head += "".join(f"  {'k_' + v:>7}" for v in comp.calibration)
    print(head)
    for r in rows:
        line = f"{r['sigma']:9.4g}"
        for k in keys:
            line += f"  {r['dist_' + k]:8.3g} +- {r['dist_' + k + '_se']:<5.2g}"
        if len(parts) > 1:
            line += f"  {r['generalization_gap']:9.3g}"
        line += "".join(f"  {r['k_' + v]:7d}" for v in comp.calibration)
        print(line)
    print()
    head = f"{'sampler':>10}  {'memorization [95% CI]':>24}  {'median NN dist':>14}  {'reproducibility vs model':>24}"
    agree = bool(comp.agreement) and any(comp.agreement.values())
    print(head + (f"  {'median r, R^2 vs model':>22}" if agree else ""))
    for r in comp.summary():
        rep = f"{r['reproducibility']:.2f} (cos {r['mean_similarity']:.2f})" if "reproducibility" in r else "-"
        mem = f"{r['memorization']:.2f} [{r['memorization_ci_low']:.2f}, {r['memorization_ci_high']:.2f}]"
        line = f"{r['sampler']:>10}  {mem:>24}  {r['median_nn_distance']:14.4g}  {rep:>24}"
        if agree:
            both = f"{r['median_pearson_r']:.2f}, {r['median_r2']:.2f}" if "median_r2" in r else "-"
            line += f"  {both:>22}"
        print(line)


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
