"""The ``gaussdiff`` command line: ``gaussdiff <verb> [options]``, each verb a thin layer over
the library. Every verb writes its outputs under one ``--outdir``.

Each verb is registered by a small ``_add_<verb>(subparsers)`` function below and handled by
``_run_<verb>(args)``. Importing the package loads the whole library (about 2 s on a CPU), so
the handlers import nothing of their own but matplotlib, for a figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import textwrap
from pathlib import Path

import torch

import gaussdiff as gd

from ._cli_models import _add_compare, _add_sample
from ._checks import check_int
from ._io import atomic_write, make_outdir
from ._procs import terminate_as_interrupt
from ._version import __version__
from .experiments import PhaseConfig, run_sweep, tau_mem
from .inverse import experiment
from .inverse.experiment import PRIORS
from .networks import FRAMEWORKS, NETS
from .plotting import plot_results
from .training import TrainSettings
from .validate import run_validation

__all__ = ["main"]


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _name_options(p, **aliases):
    """Record, for ``main``'s error line, which option each library argument name stands for:
    every option's ``dest`` (``n_train`` -> ``--n-train``, a positional by its own name) and
    ``aliases`` for library names that differ from it (``spec="--data"``). Call it last in
    ``_add_<verb>``."""
    names = {}
    for a in p._actions:
        longs = [o for o in a.option_strings if o.startswith("--")]
        if a.dest != "help":
            names[a.dest] = longs[0] if longs else a.dest
    names.update(aliases)
    p.set_defaults(option_names=names)


def _name_the_option(message: str, names: dict | None) -> str:
    """A library error ``"name: ..."`` (or ``"a, b: ..."``) with each argument name the command
    line knows replaced by its option (``"n_train: ..."`` -> ``"--n-train: ..."``)."""
    head, sep, rest = message.partition(":")
    parts = [q.strip() for q in head.split(",")]
    if not names or not sep or not any(q in names for q in parts):
        return message
    return ", ".join(names.get(q, q) for q in parts) + sep + rest


# ---------------------------------------------------------------------------------------------
# demo: the exact empirical flow returns training points, the Gaussian flow does not
# ---------------------------------------------------------------------------------------------


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        formatter_class=_formatter,
        help="sample the exact empirical and Gaussian denoisers of a small training set",
        description=textwrap.dedent("""\
            Sample the exact empirical denoiser and the Gaussian denoiser fitted to the same
            training set from the same noise with Heun's method, and report how many samples
            land on a training point (memorization) for each.

            examples:
              gaussdiff demo --outdir out/demo
              gaussdiff demo --n-train 64 --dim 8 --samples 256 --steps 40 --outdir out/demo
            """),
    )
    p.add_argument("--n-train", type=int, default=32, help="training points (default 32)")
    p.add_argument("--dim", type=int, default=2, help="dimension (default 2)")
    p.add_argument("--samples", type=int, default=200, help="samples per denoiser (default 200)")
    p.add_argument("--steps", type=int, default=40, help="Heun steps on the Karras grid (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and noise (default 0)")
    p.add_argument("--outdir", type=Path, required=True, help="where to write demo.json and demo.png")
    p.set_defaults(func=_run_demo)
    _name_options(p)


def _run_demo(args):
    # the memorization gap ratio compares the two nearest training points: N >= 2
    check_int(args.n_train, "--n-train", minimum=2)
    for flag, value in (("--dim", args.dim), ("--samples", args.samples), ("--steps", args.steps)):
        check_int(value, flag)
    make_outdir(args.outdir, "--outdir")
    g = torch.Generator().manual_seed(args.seed)
    train = torch.randn(args.n_train, args.dim, generator=g, dtype=torch.float64)
    sigmas = gd.karras_sigmas(args.steps)
    noise = gd.seeded_noise(args.samples, args.dim, seed=args.seed) * sigmas[0]
    result = {}
    samples = {}
    for name, den in (("empirical", gd.EmpiricalDenoiser(train)), ("gaussian", gd.GaussianDenoiser.fit(train))):
        x = gd.sample_heun(den, noise, sigmas)
        nn = gd.nearest_training(x, train, k=2)
        mem = gd.memorization_fraction(x, train, seed=args.seed, neighbors=nn)  # gap ratio 1/3, bootstrap se
        result[name] = {
            "memorization": mem.value,
            "memorization_se": mem.se,
            "median_nn_distance": float(nn[0][:, 0].median()),
        }
        samples[name] = x
    atomic_write(args.outdir / "demo.json", json.dumps(result, indent=2))
    for name, r in result.items():
        print(
            f"{name:10s} memorization {r['memorization']:.3f} +- {r['memorization_se']:.3f}   "
            f"median distance to nearest training point {r['median_nn_distance']:.2e}"
        )
    if args.dim >= 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        ax.scatter(*samples["gaussian"][:, :2].T, s=6, alpha=0.5, label="Gaussian denoiser")
        ax.scatter(*samples["empirical"][:, :2].T, s=30, marker="x", label="empirical denoiser")
        ax.scatter(*train[:, :2].T, s=40, facecolors="none", edgecolors="k", label="training set")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set(xlabel="coordinate 1", ylabel="coordinate 2")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        proj = " (first 2 coordinates)" if args.dim > 2 else ""
        ax.set_title(
            f"Same noise, two exact denoisers: {args.samples} samples each,\n"
            f"N = {args.n_train} training points in d = {args.dim}{proj}",
            fontsize=9,
        )
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        atomic_write(args.outdir / "demo.png", buf.getvalue())
    print(f"wrote {args.outdir}/demo.json")


# ---------------------------------------------------------------------------------------------
# phase-curve and plot: the memorization -> generalization sweep (the README's main job)
# ---------------------------------------------------------------------------------------------


def _list_of(parse, what: str):
    """An argparse ``type`` for a comma-separated list of ``parse``-able values (a tuple)."""

    def parse_list(text):
        items = [v.strip() for v in text.split(",")]
        if not all(items):  # "1,,2", "1,", "" : an entry left out is a typo, not a shorter list
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} with no empty entry, got {text!r}")
        try:
            return tuple(parse(v) for v in items)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from exc

    return parse_list


def _csv(values) -> str:
    return ",".join(map(str, values))


_int_list, _float_list, _str_list = _list_of(int, "integers"), _list_of(float, "numbers"), _list_of(str, "names")


def _add_phase_curve(sub):
    P, Q = PhaseConfig(), PhaseConfig.quick()  # the defaults shown are the library's
    p = sub.add_parser(
        "phase-curve",
        formatter_class=_formatter,
        help="memorization -> generalization sweep over training-set size N and training time",
        description=textwrap.dedent("""\
            Train two networks on disjoint subsets of size N for each N (and seed, width,
            framework), evaluate them at log-spaced training steps against the exact empirical
            and Gaussian denoisers of their subsets, from the same noise, and write
            results.csv, tau_mem.csv, config.json and the figures phase_curves.png,
            phase_diagram.png and samples.png to --outdir. An interrupted run resumes: finished
            cells are skipped.

            examples:
              gaussdiff phase-curve --outdir runs/phase                      # default: digits, 5 sizes
              gaussdiff phase-curve --quick --outdir runs/quick              # smoke run, < 2 minutes
              gaussdiff phase-curve --sizes 8,32,128,512 --steps 8000 --checkpoints 8 --outdir runs/long
              gaussdiff phase-curve --widths 64,256 --frameworks edm,vp,flow --workers 2 --outdir runs/grid
              gaussdiff phase-curve --data gmm:k=4,d=16 --sizes 16,64,256 --outdir runs/gmm
              gaussdiff phase-curve --device cuda --outdir runs/gpu          # A and B train as one ensemble
              gaussdiff plot runs/phase                                      # redraw the figures
            """),
    )
    p.add_argument("--outdir", type=Path, required=True, help="results folder (created; reused to resume)")
    p.add_argument("--data", default=None, help=f"data set spec (default {P.data}; see gaussdiff.available_datasets())")
    p.add_argument(
        "--sizes", type=_int_list, default=None, help=f"increasing N, comma-separated (default {_csv(P.sizes)})"
    )
    p.add_argument("--seeds", type=_int_list, default=None, help=f"seeds, comma-separated (default {_csv(P.seeds)})")
    p.add_argument("--widths", type=_int_list, default=None, help=f"network widths (default {_csv(P.widths)})")
    p.add_argument(
        "--frameworks", type=_str_list, default=None, help=f"{_csv(FRAMEWORKS)} (default {_csv(P.frameworks)})"
    )
    p.add_argument("--net", choices=NETS, default=None, help=f"architecture (default {P.net})")
    p.add_argument("--steps", type=int, default=None, help=f"training steps per network (default {P.steps})")
    p.add_argument(
        "--checkpoints", type=int, default=None, help=f"log-spaced evaluated steps (default {P.checkpoints})"
    )
    p.add_argument(
        "--samples", type=int, default=None, help=f"samples per network and checkpoint (default {P.n_samples})"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help=f"similarity threshold of reproducibility (default {P.threshold})"
    )
    p.add_argument("--device", default=None, help=f"cpu or cuda (default {P.device})")
    p.add_argument(
        "--ensemble",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the two networks of each cell as one vectorised model (default: on cuda only)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="parallel processes (spawned); 0 = one per core, at most one per cell (default)",
    )
    p.add_argument("--dask-scheduler", default=None, help="address of a Dask scheduler to run the cells on")
    p.add_argument(
        "--quick", action="store_true", help=f"a smaller run of the same shape ({len(Q.sizes)} sizes, {Q.steps} steps)"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="when --outdir holds a run made with other settings, move it into OUTDIR/superseded/ and start anew",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_run_phase_curve)
    _name_options(p, spec="--data", n_samples="--samples")


def _run_phase_curve(args):
    settings = {}
    for arg, key in (
        ("data", "data"),
        ("sizes", "sizes"),
        ("seeds", "seeds"),
        ("widths", "widths"),
        ("frameworks", "frameworks"),
        ("net", "net"),
        ("steps", "steps"),
        ("checkpoints", "checkpoints"),
        ("samples", "n_samples"),
        ("threshold", "threshold"),
        ("device", "device"),
        ("ensemble", "ensemble"),
    ):
        val = getattr(args, arg)
        if val is not None:
            settings[key] = val
    config = PhaseConfig.quick(**settings) if args.quick else dataclasses.replace(PhaseConfig(), **settings)
    rows = run_sweep(
        config,
        args.outdir,
        workers=args.workers,
        dask_scheduler=args.dask_scheduler,
        progress=not args.no_progress,
        replace=args.replace,
    )
    plot_results(args.outdir)
    last = {}
    for r in rows:
        key = (r["n"], r["width"], r["framework"])
        if r["step"] >= last.get(key, {}).get("step", -1):
            last[key] = r
    taus = tau_mem(rows)
    print(
        f"{'n':>6} {'width':>5} {'fw':>4} {'step':>6}  {'memorization':>14}  {'reproducibility':>15}  "
        f"{'dist_emp':>9} {'dist_gauss':>10}  {'tau_mem':>8}"
    )
    for key in sorted(last):
        r = last[key]
        t = taus.get(key)
        print(
            f"{r['n']:>6} {r['width']:>5} {r['framework']:>4} {r['step']:>6}  "
            f"{r['memorization']:6.3f} +- {r['memorization_se']:5.3f}  "
            f"{r['reproducibility']:6.3f} +- {r['reproducibility_se']:5.3f}  "
            f"{r['dist_empirical']:9.4f} {r['dist_gaussian']:10.4f}  "
            f"{'never' if t is None else f'{t:8.0f}':>8}"
        )
    print(f"wrote {args.outdir}/results.csv, tau_mem.csv, config.json and figures")


def _add_plot(sub):
    p = sub.add_parser(
        "plot",
        formatter_class=_formatter,
        help="redraw the figures of a phase-curve results folder",
        description=textwrap.dedent("""\
            Redraw phase_curves.png, phase_diagram.png and samples.png from a finished or
            partial phase-curve results folder.

            examples:
              gaussdiff plot runs/phase
            """),
    )
    p.add_argument("results_dir", type=Path, help="a folder written by gaussdiff phase-curve")
    p.set_defaults(func=_run_plot)
    _name_options(p, outdir="results_dir")


def _run_plot(args):
    for path in plot_results(args.results_dir):
        print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# train: a small network as a denoiser of a data set
# ---------------------------------------------------------------------------------------------


def _none_or(parse):
    def parse_optional(text):
        return None if text.strip().lower() in ("none", "off") else parse(text)

    parse_optional.__name__ = parse.__name__
    return parse_optional


def _auto_or_float(text):
    return text if text == "auto" else float(text)


# How a settings field's annotation is read from the command line.
_PARSERS = {
    "int": int,
    "float": float,
    "str": str,
    "int | None": _none_or(int),
    "float | None": _none_or(float),
    "float | str": _auto_or_float,
}


def _add_settings(p, settings_class):
    """One option per field of a frozen settings dataclass (``--batch-size`` for ``batch_size``),
    its default and help text read from the class, so that the command line cannot drift from it."""

    choices = {"net": NETS, "framework": FRAMEWORKS}
    for f in dataclasses.fields(settings_class):
        default = f.default
        shown = "" if default is None else f" (default {default})"
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_PARSERS[f.type],
            default=default,
            choices=choices.get(f.name),
            help=f.metadata["help"] + shown,
        )


def _add_train(sub):
    p = sub.add_parser(
        "train",
        formatter_class=_formatter,
        help="train a small network (MLP or U-Net) as a denoiser of a data set",
        description=textwrap.dedent("""\
            Train a small network on N rows of a data set, chosen by a seeded permutation, and
            write config.json (configuration and loss history), model.pt (EMA weights) and a
            resumable state.pt to --outdir. Rerunning the same command resumes an interrupted
            run; a larger --steps extends a finished one. Load the result in Python with
            gaussdiff.load_denoiser(OUTDIR).

            --conditional trains a class-conditional network D(x, sigma, label) on a labelled data
            set (digits, mnist5k, an .npz with labels, a folder of class folders, ...), with label
            dropout (--label-dropout) so that the same network is also the unconditional denoiser
            of classifier-free guidance. --classes keeps only some classes (labels keep their
            values). --init-from DIR fine-tunes the model trained in DIR (same architecture) on
            this data set instead of starting from random weights.

            --data is a name (digits, mnist5k, fashion-mnist, lfw, patches:size=8, mnist1d,
            gaussian:d=8, gmm:k=4,d=16, twogauss:d=16,mu=1, circle, ...) or a path (.npy/.npz,
            a folder of images, MNIST IDX files, CIFAR-10 python batches).

            examples:
              gaussdiff train --data digits --outdir out/digits
              gaussdiff train --data digits --n 64 --steps 2000 --seed 1 --outdir out/d64
              gaussdiff train --data gaussian:d=8 --width 64 --steps 1000 --framework vp --outdir out/g
              gaussdiff train --data digits --net unet --width 16 --steps 500 --outdir out/unet
              gaussdiff train --data digits --n 8 --part 1 --checkpoint-steps 500,1000 --steps 1000 --outdir out/p1
              gaussdiff train --data digits --conditional --steps 2000 --outdir out/cond
              gaussdiff train --data mnist5k --conditional --net unet --width 16 --outdir out/mnist_cond
              gaussdiff train --data digits --classes 0,1,2,3,4 --steps 2000 --outdir out/d04
              gaussdiff train --data digits --classes 5,6,7,8,9 --init-from out/d04 --steps 500 --outdir out/ft59
            """),
    )
    p.add_argument("--data", default="digits", help="data set spec or path (default digits)")
    p.add_argument("--n", type=int, default=None, help="training rows (default: the whole data set)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the permutation that picks the N rows (default 0)")
    p.add_argument(
        "--part", type=int, choices=(0, 1), default=0, help="which of two disjoint subsets of N rows to use (default 0)"
    )
    _add_settings(p, TrainSettings)
    p.add_argument(
        "--checkpoint-steps", default="", help="comma-separated steps at which to save EMA weights (e.g. 500,1000)"
    )
    p.add_argument(
        "--conditional", action="store_true", help="class-conditional network trained on the data set's labels"
    )
    p.add_argument(
        "--classes",
        type=_int_list,
        default=None,
        help="keep only these classes, comma-separated (e.g. 0,1,2; needs labels)",
    )
    p.add_argument(
        "--init-from", type=Path, default=None, help="fine-tune: start from the model trained in this outdir"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's; 1 on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--outdir", type=Path, required=True, help="where to write config.json and model.pt")
    p.set_defaults(func=_run_train)
    _name_options(p, spec="--data", data="--data", num_threads="--threads")


def _run_train(args):
    if args.classes is not None and not args.classes:
        raise ValueError("--classes: give at least one class (comma-separated, e.g. 0,1,2)")
    data, labels, info = gd.load_dataset(args.data)
    if (args.conditional or args.classes) and labels is None:
        flag = "--conditional" if args.conditional else "--classes"
        raise ValueError(
            f"{flag}: the data set {args.data!r} has no labels (use a labelled set such as "
            "digits or mnist5k, an .npz with a 'labels' array or a folder of class folders)"
        )
    num_classes = int(labels.max()) + 1 if args.conditional else None
    if args.classes:
        keep = [c for c in args.classes if 0 <= c < int(labels.max()) + 1]
        if len(keep) != len(args.classes):
            raise ValueError(f"--classes: labels of {args.data!r} are 0..{int(labels.max())}, got {list(args.classes)}")
        rows = torch.isin(labels, torch.tensor(keep, dtype=labels.dtype))
        data, labels = data[rows], labels[rows]
    if args.n is not None and labels is None:
        data = (
            gd.disjoint_split(data, args.n, args.data_seed)[args.part]
            if args.part
            else gd.subset(data, args.n, args.data_seed)
        )
    elif args.n is not None:
        data, labels = (
            gd.disjoint_split(data, args.n, args.data_seed, labels=labels)[args.part]
            if args.part
            else gd.subset(data, args.n, args.data_seed, labels=labels)
        )
    cond = dict(labels=labels, num_classes=num_classes) if args.conditional else {}
    if args.init_from is not None:
        cond.pop("num_classes", None)  # the source model's
    try:
        items = [s.strip() for s in args.checkpoint_steps.split(",")] if args.checkpoint_steps.strip() else []
        if not all(items):
            raise ValueError
        ckpts = [int(s) for s in items]
    except ValueError:
        raise ValueError(
            f"--checkpoint-steps: expected integers separated by commas, got {args.checkpoint_steps!r}"
        ) from None
    settings = gd.TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(gd.TrainSettings)})
    res = gd.train_denoiser(
        data,
        settings=settings,
        outdir=args.outdir,
        checkpoint_steps=ckpts,
        progress=not args.no_progress,
        num_threads=args.threads,
        init_from=args.init_from,
        **cond,
    )
    meta_file = args.outdir / "config.json"
    meta = json.loads(meta_file.read_text())
    meta["config"].update(
        data=args.data,
        data_info={k: v for k, v in info.items() if k != "truth"},
        n_selected=args.n,
        data_seed=args.data_seed,
        part=args.part,
        classes=list(args.classes) if args.classes else None,
    )
    atomic_write(meta_file, json.dumps(meta, indent=2, default=str))
    last = res.loss_history["loss"][-1] if res.loss_history["loss"] else float("nan")
    kind = f", {res.config['num_classes']} classes" if res.config.get("num_classes") else ""
    kind += f", fine-tuned from {args.init_from}" if args.init_from is not None else ""
    print(
        f"trained {res.config['net']} (width {res.config['width']}, {res.config['parameters']} "
        f"parameters, {res.config['framework']}{kind}) on {res.config['n']} rows for {res.step} steps "
        f"in {res.wall_time_s:.1f} s; final loss {last:.4f}"
    )
    print(f"wrote {args.outdir}/config.json and {args.outdir}/model.pt")


# ---------------------------------------------------------------------------------------------
# inverse: approximate posterior samplers measured against the exact posterior
# ---------------------------------------------------------------------------------------------


def _add_inverse(sub):
    p = sub.add_parser(
        "inverse",
        formatter_class=_formatter,
        help="solve a linear inverse problem with exact and approximate posterior samplers",
        description=textwrap.dedent("""\
            Measure y = A x0 + sigma_y * noise of held-out rows of a data set, build the exact
            posterior of a closed-form prior fitted to N training rows (gaussian: the fitted
            Gaussian; mixture: the class Gaussians mixed, needs labels; empirical: the training
            rows), and draw --samples samples per measurement with each sampler (exact = Heun on
            the exact posterior denoiser; dps, pigdm, ddrm on the prior's denoiser) for each step
            count and sigma_y. Writes measurements.csv/.json (mean error, coverage of the exact
            90 % credible intervals, W2 for the Gaussian prior) and inverse.png (measurements,
            samples and exact posterior means side by side, and the errors against steps).

            --operator: inpaint:P (keep a share P of the pixels), blur:STD, down:F, project:M.

            examples:
              gaussdiff inverse --outdir out/inv                                  # digits, inpaint:0.5
              gaussdiff inverse --data digits --operator blur:1 --sigma-y 0.05 --sampler exact,pigdm --outdir out/blur
              gaussdiff inverse --operator down:2 --prior empirical --n-train 300 --steps 10,100 --outdir out/down
              gaussdiff inverse --operator project:16 --sigma-y 0.05,0.2,0.5 --steps 10,30,100 --outdir out/table
            """),
    )
    p.add_argument("--data", default="digits", help="data set spec (default digits)")
    p.add_argument(
        "--operator", default="inpaint:0.5", help="inpaint:P | blur:STD | down:F | project:M (default inpaint:0.5)"
    )
    p.add_argument(
        "--sigma-y", type=_float_list, default=(0.1,), help="measurement noise(s), comma-separated (default 0.1)"
    )
    p.add_argument(
        "--sampler",
        type=_str_list,
        default=("exact", "dps", "pigdm", "ddrm"),
        help="exact,dps,pigdm,ddrm (default all)",
    )
    p.add_argument("--prior", choices=PRIORS, default="gaussian", help="closed-form prior (default gaussian)")
    p.add_argument("--steps", type=_int_list, default=(30,), help="step counts, comma-separated (default 30)")
    p.add_argument("--n-train", type=int, default=500, help="training rows for the prior (default 500)")
    p.add_argument("--n-meas", type=int, default=4, help="measured held-out rows (default 4)")
    p.add_argument("--samples", type=int, default=100, help="samples per measurement (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of split, operator, measurement noise, samplers")
    p.add_argument(
        "--dps-zeta",
        type=float,
        default=None,
        help="DPS step scale, the 'scale' of the DPS authors' configs (default: 0.5 for inpaint, "
        "their inpainting value, 0.3 otherwise, their super-resolution and deblurring value)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--outdir", type=Path, required=True, help="where to write measurements.csv/.json and inverse.png")
    p.set_defaults(
        func=_run_inverse,
        interrupted="its files (measurements.csv/.json, inverse.png) are written whole at the end or not at all",
    )
    _name_options(
        p,
        spec="--data",
        samplers="--sampler",
        n_samples="--samples",
        std="--operator",
        factor="--operator",
        m="--operator",
        event_shape="--operator",
    )


def _run_inverse(args):
    torch.set_num_threads(check_int(args.threads, "--threads"))
    config = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("func", "option_names", "interrupted")
    }
    experiment.run_inverse_experiment(
        data=args.data,
        operator=args.operator,
        sigma_y=args.sigma_y,
        samplers=args.sampler,
        prior=args.prior,
        steps=args.steps,
        n_train=args.n_train,
        n_meas=args.n_meas,
        n_samples=args.samples,
        seed=args.seed,
        dps_zeta=args.dps_zeta,
        outdir=args.outdir,
        config=config,
        log=print,
    )
    print(f"wrote {args.outdir}/measurements.csv, measurements.json and inverse.png")


# ---------------------------------------------------------------------------------------------
# validate: run the validation/ scripts and collect their PASS/FAIL table
# ---------------------------------------------------------------------------------------------


def _add_validate(sub):
    p = sub.add_parser(
        "validate",
        formatter_class=_formatter,
        help="run the validation/ scripts (published claims) and write their PASS/FAIL table",
        description=textwrap.dedent("""\
            Run every script of the repository's validation/ folder that uses the harness
            (validation/_common.py), each in its own process with --outdir DIR/NAME, and write
            DIR/validation_table.md (claim, script, expected, measured, PASS/FAIL, wall time) and
            DIR/validation.json. Scripts not in harness format are listed, not run. The
            validation/ folder is found from --scripts, else ./validation: run from the
            repository root. A FAIL is a measured result; the exit status is 1 only when a
            script crashed or wrote no valid result (or, with --strict, on any FAIL).

            examples:
              gaussdiff validate --fast --outdir out/val_fast                     # all, small runs
              gaussdiff validate --only biroli_regimes --fast --outdir out/val    # one script
              gaussdiff validate --only li_gaussian_structure,yi_empirical_optimum --outdir out/val
              gaussdiff validate --outdir out/val --reuse --update-readme        # full; refresh README table
            """),
    )
    p.add_argument("--outdir", type=Path, required=True, help="results folder; script NAME writes to DIR/NAME")
    p.add_argument("--fast", action="store_true", help="run each script's --fast mode (seconds to a minute each)")
    p.add_argument("--only", default=None, help="comma-separated script names (file stems) to run")
    p.add_argument("--scripts", type=Path, default=None, help="the validation/ folder (default ./validation)")
    p.add_argument("--threads", type=int, default=1, help="torch/numba threads per script (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per script (default: no limit)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep DIR/NAME/result.json of the same mode instead of rerunning the script",
    )
    p.add_argument(
        "--update-readme", action="store_true", help="rewrite the table of validation/README.md between its markers"
    )
    p.add_argument("--strict", action="store_true", help="exit status 1 when any script FAILs")
    p.set_defaults(
        func=_run_validate,
        interrupted="the finished scripts' results are kept in {outdir}; rerun with --reuse to skip them",
    )
    _name_options(p)


def _run_validate(args):
    infos = run_validation(
        args.outdir,
        fast=args.fast,
        only=args.only,
        scripts=args.scripts,
        threads=args.threads,
        timeout=args.timeout,
        reuse=args.reuse,
        update_readme=args.update_readme,
    )
    for i in infos:
        print(f"{i.status:>8}  {i.name}" + (f"  ({i.wall_seconds:.0f} s)" if i.wall_seconds is not None else ""))
    bad = [i for i in infos if i.status == "ERROR" or (args.strict and i.status == "FAIL")]
    return 1 if bad else 0


# -- verbs --  (each verb registers itself here)
_VERBS = [_add_demo, _add_phase_curve, _add_plot, _add_train, _add_inverse, _add_validate, _add_compare, _add_sample]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaussdiff",
        formatter_class=_formatter,
        description="Exact denoisers, samplers and memorization/generalization experiments.",
    )

    parser.add_argument("--version", action="version", version=f"gaussdiff {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in _VERBS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        with terminate_as_interrupt():
            out = args.func(args)
    except (ValueError, OSError) as exc:  # one line naming the option or the file, no traceback
        if isinstance(exc, OSError) and exc.filename is not None:
            msg = f"{exc.filename}: {exc.strerror or exc}"
        else:
            msg = _name_the_option(str(exc), getattr(args, "option_names", None))
        print(f"gaussdiff {args.verb}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "outdir", None)
        kept = f"; finished results are kept in {where} and the same command resumes" if where else ""
        if getattr(args, "interrupted", None):  # the verb says what an interruption keeps
            kept = "; " + args.interrupted.format(outdir=where)
        print(f"gaussdiff {args.verb}: interrupted{kept}", file=sys.stderr)
        return 130
    return int(out or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
