r"""The inverse-problem experiment behind ``gaussdiff inverse``: approximate posterior samplers
measured against the exact posterior on held-out rows of a data set.

:func:`run_inverse_experiment` splits a data set into ``n_train`` training rows and ``n_meas``
held-out rows, fits a closed-form prior to the training rows, measures each held-out row as
:math:`y = A x_0 + \sigma_y \epsilon`, builds the exact posterior
(:class:`~gaussdiff.inverse.posteriors.PosteriorDenoiser`) and draws ``n_samples`` samples per
measurement with every sampler, for every step count and every ``sigma_y``; each run is
measured by :func:`~gaussdiff.inverse.measurement.measure_posterior_samples`. With ``outdir``
it writes ``measurements.csv``, ``measurements.json`` and the figure ``inverse.png``
(:func:`gaussdiff.plotting.plot_inverse`), each atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .._checks import check_int
from .._io import atomic_write, make_outdir
from .._procs import deferred_interrupts
from ..conditional import ClassConditionalDenoiser
from ..data import load_dataset
from ..denoisers import GaussianDenoiser
from ..empirical import EmpiricalDenoiser
from ..sampling import seeded_noise
from .measurement import measure_posterior_samples
from .operators import make_operator
from .posteriors import PosteriorDenoiser
from .samplers import POSTERIOR_SAMPLERS, run_posterior_sampler

__all__ = ["run_inverse_experiment", "InverseExperiment", "PRIORS", "format_row"]

#: The closed-form priors the experiment fits to the training rows.
PRIORS = ("gaussian", "mixture", "empirical")


@dataclass(frozen=True)
class InverseExperiment:
    """What :func:`run_inverse_experiment` returns.

    Attributes
    ----------
    rows : one dict per ``(sigma_y, steps, sampler)``, in that loop order: ``prior``,
        ``operator``, ``sigma_y``, ``sampler``, ``steps`` and the keys of
        :func:`~gaussdiff.inverse.measurement.measure_posterior_samples`.
    shown : the figure's columns, each ``(n_meas, *event_shape)``: ``"y"`` (``A^T y``),
        ``"truth"``, ``"posterior mean"`` and one sample per sampler, all at the first
        ``sigma_y`` (the samples at the last step count).
    samplers, sigma_y : the samplers and noise levels run, in order.
    """

    rows: list
    shown: dict
    samplers: tuple
    sigma_y: tuple


def format_row(row: dict) -> str:
    """The one-line summary of a row that ``gaussdiff inverse`` prints."""
    return (
        f"sigma_y {row['sigma_y']:<6g} {row['sampler']:6s} {row['steps']:5d} steps: mean error "
        f"{row['mean_error']:.3f} (floor {row['mc_floor']:.3f}), coverage {row['coverage']:.3f} / "
        f"{row['coverage_nominal']:.3f}"
        + (f", W2/sqrt(tr C) {row['w2_rel']:.3f}" if "w2_rel" in row else "")
        + (f", TV {row['tv']:.3f}" if "tv" in row else "")
    )


def _fit_prior(kind: str, train: torch.Tensor, labels):
    if kind == "gaussian":
        return GaussianDenoiser.fit(train)
    if kind == "empirical":
        return EmpiricalDenoiser(train)
    if labels is None:
        raise ValueError("prior: mixture needs a labelled data set")
    return ClassConditionalDenoiser.from_data(train, labels, kind="gaussian", unconditional="marginal").unconditional


def run_inverse_experiment(
    *,
    data: str = "digits",
    operator: str = "inpaint:0.5",
    sigma_y=(0.1,),
    samplers=POSTERIOR_SAMPLERS,
    prior: str = "gaussian",
    steps=(30,),
    n_train: int = 500,
    n_meas: int = 4,
    n_samples: int = 100,
    seed: int = 0,
    dps_zeta: float | None = None,
    outdir: str | Path | None = None,
    config: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> InverseExperiment:
    r"""Measure approximate posterior samplers against the exact posterior (module docstring).

    Parameters
    ----------
    data : data set spec of :func:`~gaussdiff.load_dataset`; held as float64.
    operator : operator spec of :func:`~gaussdiff.inverse.operators.make_operator`
        (``inpaint:P``, ``blur:STD``, ``down:F``, ``project:M``), drawn with ``seed``.
    sigma_y : measurement noise levels, each > 0.
    samplers : some of ``POSTERIOR_SAMPLERS`` (``exact`` = Heun on the exact posterior
        denoiser; ``dps``, ``pigdm``, ``ddrm`` on the prior's denoiser).
    prior : ``"gaussian"`` (the Gaussian fitted to the training rows), ``"mixture"`` (the class
        Gaussians mixed by their frequencies; needs labels) or ``"empirical"`` (the training rows).
    steps : step counts of the Karras grid.
    n_train : training rows (at most the rows left after the held-out ones; at least 2).
    n_meas : held-out rows measured.
    n_samples : samples per measurement.
    seed : seed of the split, the operator, the measurement noise (``seed + 1000``) and the samplers.
    dps_zeta : DPS step scale, the ``scale`` of the DPS authors' configs; ``None``: 0.5 for
        inpainting (their inpainting value), 0.3 otherwise (their super-resolution and
        deblurring value).
    outdir : where to write ``measurements.csv``, ``measurements.json`` and ``inverse.png``
        (each atomically); nothing is written when None.
    config : what ``measurements.json`` records under ``config`` (default: these arguments).
    log : called with a one-line summary of every row (:func:`format_row`) as it is measured.

    Returns
    -------
    InverseExperiment
    """
    samplers, sigma_y, steps = tuple(samplers), tuple(sigma_y), tuple(steps)
    for name, values in (("samplers", samplers), ("sigma_y", sigma_y), ("steps", steps)):
        if not values:
            raise ValueError(f"{name}: give at least one value")
    steps = tuple(check_int(n, "steps") for n in steps)
    n_train = check_int(n_train, "n_train", minimum=2)
    n_meas, n_samples = check_int(n_meas, "n_meas"), check_int(n_samples, "n_samples")
    for name in samplers:
        if name not in POSTERIOR_SAMPLERS:
            raise ValueError(f"samplers: unknown {name!r}; expected some of {', '.join(POSTERIOR_SAMPLERS)}")
    for sy in sigma_y:
        if not sy > 0:
            raise ValueError(f"sigma_y: must be > 0, got {sy}")
    if dps_zeta is not None and not dps_zeta >= 0:
        raise ValueError(f"dps_zeta: must be >= 0, got {dps_zeta}")
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")
    if outdir is not None:
        make_outdir(outdir)  # a bad folder is refused before the work, not after it
    if config is None:
        config = dict(
            data=data,
            operator=operator,
            sigma_y=sigma_y,
            samplers=samplers,
            prior=prior,
            steps=steps,
            n_train=n_train,
            n_meas=n_meas,
            n_samples=n_samples,
            seed=seed,
            dps_zeta=dps_zeta,
        )
    x, labels, _ = load_dataset(data)
    x = x.to(torch.float64)
    if x.shape[0] - n_meas < 2:
        raise ValueError(
            f"n_meas: the data set has {x.shape[0]} rows; measuring {n_meas} leaves fewer than 2 to fit the prior"
        )
    n_train = min(n_train, x.shape[0] - n_meas)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    train, test = x[perm[:n_train]], x[perm[n_train : n_train + n_meas]]
    pri = _fit_prior(prior, train, None if labels is None else labels[perm[:n_train]])
    op = make_operator(operator, x.shape[1:], seed=seed)
    if dps_zeta is None:
        dps_zeta = 0.5 if operator.startswith("inpaint") else 0.3
    rows, shown = [], {}
    for sy in sigma_y:
        y = op(test) + sy * seeded_noise(test.shape[0], op.out_dim, seed=seed + 1000)
        post = PosteriorDenoiser(pri, op, y, sy)
        for n_steps in steps:
            for name in samplers:
                extra = {"zeta": dps_zeta} if name == "dps" else {}
                smp = run_posterior_sampler(
                    name, pri, op, y, sy, steps=n_steps, n_samples=n_samples, seed=seed, **extra
                )
                res = measure_posterior_samples(smp, post)
                row = dict(prior=prior, operator=operator, sigma_y=sy, sampler=name, steps=n_steps, **res)
                rows.append(row)
                if log is not None:
                    log(format_row(row))
                if sy == sigma_y[0] and n_steps == steps[-1]:
                    shown[name] = smp[:, 0]
        if sy == sigma_y[0]:
            shown["y"] = op.adjoint(y).reshape(test.shape)
            shown["truth"] = test
            shown["posterior mean"] = post.posterior_mean().reshape(test.shape)
    result = InverseExperiment(rows=rows, shown=shown, samplers=samplers, sigma_y=sigma_y)
    if outdir is not None:
        _write(result, Path(outdir), config)
    return result


def _write(result: InverseExperiment, outdir: Path, config: dict) -> None:

    with deferred_interrupts():  # the three files of one run, or none of them (a signal waits)
        _write_files(result, outdir, config)


def _write_files(result: InverseExperiment, outdir: Path, config: dict) -> None:
    from .._version import __version__
    from ..plotting import plot_inverse

    rows = result.rows
    buf = io.StringIO(newline="")
    wr = csv.DictWriter(buf, fieldnames=sorted({k for r in rows for k in r}))
    wr.writeheader()
    wr.writerows(rows)
    atomic_write(outdir / "measurements.csv", buf.getvalue())
    atomic_write(
        outdir / "measurements.json", json.dumps({"config": config, "version": __version__, "rows": rows}, indent=2)
    )
    plot_inverse(result, outdir / "inverse.png")
