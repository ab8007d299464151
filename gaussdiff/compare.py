r"""Is my model memorizing, and which closed form does it follow? A model of any origin
(:mod:`gaussdiff.adapters`) measured against the exact denoisers of its own training set.

:func:`compare_denoisers` takes a model and the training set it was trained on (and held-out
rows of the same data set) and measures

* per noise level, the relative distance of the model's denoiser to the empirical and to the
  Gaussian closed form of its training set (:func:`gaussdiff.denoiser_distance`, normalised by
  the training set's total variance), on noisy training points and on noisy held-out points,
  each with a band: the standard error over ``n_groups`` disjoint groups of points;
* its denoising error on training against held-out points (:func:`gaussdiff.generalization_gap`);
* from shared seeded noise (:func:`gaussdiff.seeded_noise`) and one deterministic sampler on one
  grid: the samples of the model, of the empirical and of the Gaussian denoiser, the
  memorization fraction of each with its bootstrap interval, the nearest training image of each
  model sample, the reproducibility of the model against each closed form's samples
  (:mod:`gaussdiff.metrics.samples`), and the per-image agreement of each closed form's sample
  with the model's sample of the same noise (:func:`gaussdiff.metrics.agreement.agreement_measures`:
  R², the Pearson r of the mean-centred images, the variance-normalised r2; the model's sample
  is the target), summarised by their median and mean over samples.

Local closed forms (``CompareSettings.local``, opt-in; images ``(C, H, W)`` only): the patch
machines LS, ELS and bbELS (:class:`gaussdiff.PatchDenoiser`) and the data-driven locality
masks (:class:`gaussdiff.WienerMaskDenoiser`) join the two global forms and go through every
measurement above (distances, samples, memorization, reproducibility, agreement). A patch
machine's patch size is not guessed: at each level of the distance grid it is calibrated against
the model's own denoiser (:func:`gaussdiff.calibrate_patch_size`: the size whose machine agrees
best, by median R², with the model on ``n_calibration`` noisy held-out images), as Kamb & Ganguli
calibrate ELS against their U-Nets; the closed form is then the machine with that size per sigma
(at a sampler level off the grid, the size of the nearest grid level in ``log sigma``). So the
question "which closed form does the model follow, at which noise level, and how closely?" is
answered by the distance and agreement columns of every form and the calibrated size ``k``.
Cost: a patch machine costs ``O(B H W N H W k^2 C)`` per call (every query patch against every
training patch; LS ``O(B H W N k^2 C)``), so the calibration alone makes ``n_sigmas x
len(patch_sizes)`` calls on ``n_calibration`` images per variant: meant for small images
(8x8 to 32x32) and small training sets, which is why it is off by default.

:func:`sample_model` is the sampling step on its own (``gaussdiff sample``);
:func:`write_comparison` writes a :class:`Comparison` under an output folder (``compare.csv``,
``samples.csv``, ``samples.npz``, ``config.json``, with local forms ``calibration.csv``, and the
figures ``distances.png`` and ``samples.png``); ``gaussdiff compare`` is these two calls.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._checks import check_data, check_int, check_positive
from ._io import atomic_write, make_outdir
from ._version import __version__
from .adapters import LoadedModel
from .denoisers import GaussianDenoiser
from .empirical import EmpiricalDenoiser
from .local import PatchDenoiser, WienerMaskDenoiser, calibrate_patch_size
from .local.patches import PADDINGS, _check_patch_size
from .metrics import (
    denoiser_distance,
    generalization_gap,
    memorization_fraction,
    nearest_training,
    reproducibility,
)
from .metrics.agreement import agreement_measures, coefficient_of_determination
from .plotting import _plt, _save
from .sampling import sample_euler, sample_heun, seeded_noise

__all__ = [
    "CompareSettings",
    "Comparison",
    "compare_denoisers",
    "sample_model",
    "write_comparison",
    "plot_distances",
    "plot_sample_grid",
]

#: the deterministic samplers of :func:`sample_model`
SAMPLERS = {"euler": sample_euler, "heun": sample_heun}
#: the local closed forms of :attr:`CompareSettings.local`: the patch machines (L1)-(L3) of
#: :mod:`gaussdiff.local` and the data-driven locality masks (W1)-(W3)
LOCAL_FORMS = ("ls", "els", "bbels", "wiener")
#: each closed form's colour and name in the figures (the two global forms first)
_STYLE = {
    "empirical": ("C3", "empirical"),
    "gaussian": ("C0", "Gaussian"),
    "ls": ("C4", "LS"),
    "els": ("C8", "ELS"),
    "bbels": ("C6", "bbELS"),
    "wiener": ("C9", "Wiener masks"),
}
#: the agreement measures of the samples, and their short names in the summary's columns
_AGREEMENT = {
    "pearson_correlation": "pearson_r",
    "coefficient_of_determination": "r2",
    "variance_normalised_r2": "variance_normalised_r2",
}


@dataclass(frozen=True)
class CompareSettings:
    """Every setting of :func:`compare_denoisers` (and of ``gaussdiff compare``), one place.

    Attributes
    ----------
    n_points : training points (and as many held-out points) noised for the distances.
    n_sigmas : noise levels of the distance grid, log-spaced from ``sigma_lo`` to ``sigma_hi``.
    sigma_lo, sigma_hi : ends of that grid; None: ``max(model sigma_min, 0.01)`` and
        ``min(model sigma_max, 80)``.
    n_groups : disjoint groups of points whose spread gives each distance's band.
    n_samples : samples per sampler, from shared seeded noise.
    steps : sampler steps.
    sampler : ``"euler"`` (DDIM) or ``"heun"``.
    grid : ``"own"`` (the model's own grid, e.g. its DDIM timesteps) or ``"karras"``.
    threshold : cosine-similarity threshold of the reproducibility score.
    n_boot : bootstrap replicates of every fraction.
    seed : seed of the points, the noise and the bootstraps.
    batch_size : rows per denoiser call.
    label : class label for a class-conditional model (None for an unconditional one).
    local : local closed forms to measure too, any of ``"ls"``, ``"els"``, ``"bbels"`` (the patch
        machines of :class:`gaussdiff.PatchDenoiser`) and ``"wiener"``
        (:class:`gaussdiff.WienerMaskDenoiser`), in the outputs in the order given; a list or a
        comma-separated string is accepted, a tuple is stored. Default none: they cost
        ``O(B H W N H W k^2 C)`` a call (module docstring) and need image data.
    padding : padding of the patch machines, ``"zeros"``, ``"circular"`` or ``"reflect"``.
        Match the network: most U-Nets pad their convolutions with zeros, which lets border
        pixels know where they are, and then bbELS (the boundary-broken ELS) is the machine
        that matches them; ELS with circular padding matches a circularly padded network.
    patch_sizes : odd candidate patch sizes of the calibration (ELS skips those larger than
        the image).
    n_calibration : images the patch sizes are calibrated on: held-out rows when there are any
        (as the calibration wants inputs the model did not train on), else training rows.
    """

    n_points: int = 256
    n_sigmas: int = 12
    sigma_lo: float | None = None
    sigma_hi: float | None = None
    n_groups: int = 8
    n_samples: int = 64
    steps: int = 50
    sampler: str = "euler"
    grid: str = "own"
    threshold: float = 0.6
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 512
    label: int | None = None
    local: tuple[str, ...] = ()
    padding: str = "zeros"
    patch_sizes: tuple[int, ...] = (1, 3, 5, 7, 9, 11)
    n_calibration: int = 16

    def __post_init__(self):
        for name in ("n_points", "n_sigmas", "n_samples", "steps", "n_boot", "batch_size"):
            check_int(getattr(self, name), name)
        check_int(self.n_groups, "n_groups", minimum=2)
        check_int(self.seed, "seed", minimum=0)
        for name in ("sigma_lo", "sigma_hi"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.grid not in ("own", "karras"):
            raise ValueError(f"grid: expected 'own' or 'karras', got {self.grid!r}")
        if not -1 <= float(self.threshold) <= 1:
            raise ValueError(f"threshold: a cosine threshold lies in [-1, 1], got {self.threshold!r}")
        local = self.local
        if isinstance(local, str):  # "els,bbels", as on the command line
            local = [v.strip() for v in local.split(",") if v.strip()]
        if not isinstance(local, (list, tuple)):
            raise ValueError(f"local: expected a list of names from {', '.join(LOCAL_FORMS)}, got {local!r}")
        for name in local:
            if not isinstance(name, str) or name not in LOCAL_FORMS:
                raise ValueError(f"local: expected names from {', '.join(LOCAL_FORMS)}, got {name!r}")
        if len(set(local)) != len(local):
            raise ValueError(f"local: each form at most once, got {tuple(local)}")
        object.__setattr__(self, "local", tuple(local))
        if self.padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {', '.join(PADDINGS)}, got {self.padding!r}")
        sizes = self.patch_sizes
        if not isinstance(sizes, (list, tuple)) or not sizes:
            raise ValueError(f"patch_sizes: expected a non-empty list of odd sizes, got {sizes!r}")
        object.__setattr__(self, "patch_sizes", tuple(_check_patch_size(k, "patch_sizes") for k in sizes))
        check_int(self.n_calibration, "n_calibration")


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_denoisers` returns.

    The closed forms are ``"empirical"``, ``"gaussian"`` and then the local forms of
    ``settings.local`` in their order (:attr:`forms`).

    Attributes
    ----------
    sigmas : (S,) noise levels of the distance grid.
    distance : ``{f"{form}_train", f"{form}_heldout"}`` for each closed form -> ``(values, se)``,
        two (S,) float64 tensors: relative distance and its standard error (held-out entries
        absent without held-out points).
    mse_train, mse_heldout : (S,) per-coordinate denoising MSE of the model on training and
        held-out points (``mse_heldout`` None without held-out points).
    sample_sigmas : the sampling grid.
    samples : ``{"model", *forms}`` -> (B, *event_shape) float64 samples.
    nearest : ``{name: (dist (B, 2), idx (B, 2))}`` two nearest training points of each sample.
    nearest_images : (B, *event_shape) nearest training image of each model sample.
    memorization : ``{name: Fraction}`` gap-ratio memorization of each sampler's samples.
    reproducibility : ``{form: ReproducibilityResult}``, the model against that closed form.
    settings : the :class:`CompareSettings` used.
    provenance : the model's (:class:`gaussdiff.adapters.LoadedModel`).
    agreement : ``{form: {measure: (B,) float64}}``: per sample pair, the agreement of the closed
        form's sample (prediction) with the model's sample of the same noise (target), for the
        measures ``"pearson_correlation"``, ``"coefficient_of_determination"`` and
        ``"variance_normalised_r2"`` of :mod:`gaussdiff.metrics.agreement`; NaN for a pair with a
        constant image, where they are undefined. Empty for samples of fewer than 2 entries.
    calibration : ``{variant: table}`` for each patch machine of ``settings.local``: the table of
        :func:`gaussdiff.calibrate_patch_size` (``"sigmas"``, the candidate ``"sizes"``, the
        ``"scores"``, one list per sigma: median R² against the model) and ``"patch_size"``,
        the calibrated size at each sigma of the grid.
    """

    sigmas: torch.Tensor
    distance: dict
    mse_train: torch.Tensor
    mse_heldout: torch.Tensor | None
    sample_sigmas: torch.Tensor
    samples: dict
    nearest: dict
    nearest_images: torch.Tensor
    memorization: dict
    reproducibility: dict
    settings: CompareSettings
    provenance: dict
    agreement: dict = dataclasses.field(default_factory=dict)
    calibration: dict = dataclasses.field(default_factory=dict)

    @property
    def forms(self) -> tuple[str, ...]:
        """The closed forms measured, in order: ``"empirical"``, ``"gaussian"``, the local ones."""
        return tuple(name for name in self.samples if name != "model")

    def table(self) -> list[dict]:
        """One row per noise level: distances with standard errors, MSEs and their gap, and the
        calibrated patch size ``k_<variant>`` of each patch machine."""
        rows = []
        for i, s in enumerate(self.sigmas.tolist()):
            row = {"sigma": s}
            for key, (val, se) in self.distance.items():
                row[f"dist_{key}"] = float(val[i])
                row[f"dist_{key}_se"] = float(se[i])
            row["mse_train"] = float(self.mse_train[i])
            if self.mse_heldout is not None:
                row["mse_heldout"] = float(self.mse_heldout[i])
                row["generalization_gap"] = float(self.mse_heldout[i] - self.mse_train[i])
            for variant, tab in self.calibration.items():
                row[f"k_{variant}"] = int(tab["patch_size"][i])
            rows.append(row)
        return rows

    def summary(self) -> list[dict]:
        """One row per sampler (the model, then each closed form): memorization with its
        interval, median distance to the nearest training point; for a closed form the
        reproducibility of the model against it and the agreement of its samples with the
        model's, median and mean over sample pairs (``median_pearson_r``, ``mean_pearson_r``,
        ``median_r2``, ``mean_r2``, ``median_variance_normalised_r2``,
        ``mean_variance_normalised_r2``; pairs with a constant image left out)."""
        rows = []
        for name in ("model", *self.forms):
            row = {"sampler": name, **self.memorization[name].as_dict("memorization")}
            row["median_nn_distance"] = float(self.nearest[name][0][:, 0].median())
            rep = self.reproducibility.get(name)
            if rep is not None:
                row.update(rep.fraction.as_dict("reproducibility"))
                row["mean_similarity"] = rep.mean_similarity
            for measure, values in self.agreement.get(name, {}).items():
                v = values[~torch.isnan(values)]
                col = _AGREEMENT[measure]
                row[f"median_{col}"] = float(torch.quantile(v, 0.5)) if v.numel() else math.nan
                row[f"mean_{col}"] = float(v.mean()) if v.numel() else math.nan
            rows.append(row)
        return rows


# =============================================================================================
# Sampling
# =============================================================================================


def _as_loaded(model, event_shape=None) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if not callable(model):
        raise ValueError(f"model: expected a denoiser D(x, sigma) or a LoadedModel, got {type(model).__name__}")
    shape = getattr(model, "event_shape", None) or event_shape
    if shape is None:
        raise ValueError("model: its event_shape is unknown; wrap it in gaussdiff.adapters.CallableDenoiser")
    return LoadedModel(
        model,
        "callable",
        tuple(shape),
        float(getattr(model, "sigma_min", 0.0)),
        float(getattr(model, "sigma_max", math.inf)),
        dict(getattr(model, "provenance", {}) or {}),
    )


def _conditioned(model: LoadedModel, label):
    den = model.denoiser
    conditional = getattr(den, "num_classes", None) is not None
    if label is None:
        if conditional:
            raise ValueError(f"label: the model is class-conditional ({den.num_classes} classes); give a label")
        return den
    if not conditional:
        raise ValueError("label: the model is unconditional; give no label")
    return den.conditioned(int(label))


def sample_model(
    model,
    n_samples: int,
    *,
    steps: int = 50,
    sampler: str = "euler",
    grid: str = "own",
    seed: int = 0,
    label: int | None = None,
    progress: bool = False,
    dtype=torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Samples of a model from seeded noise with a deterministic sampler.

    Row ``j`` starts from ``seeded_noise(..., seed)[j]`` (so any two models sampled with one
    seed share their noise row by row) scaled to the first level of the grid: by
    :math:`\sqrt{1 + \sigma_0^2}` for a diffusers model (the VP prior :math:`x_T \sim N(0, I)`
    of its own DDIM loop), by :math:`\sigma_0` otherwise (EDM's).

    Parameters
    ----------
    model : a :class:`~gaussdiff.adapters.LoadedModel` or a denoiser with ``event_shape``.
    n_samples : number of samples.
    steps, sampler, grid : ``steps`` steps of ``"euler"`` / ``"heun"`` on the grid ``"own"`` /
        ``"karras"`` (:meth:`~gaussdiff.adapters.LoadedModel.sigma_grid`).
    seed : noise seed.
    label : class of a class-conditional model.
    progress : show a progress bar over the steps.
    dtype : dtype of the state (float64 by default; the model computes in its own).

    Returns
    -------
    samples : (n_samples, *event_shape).
    sigmas : (steps + 1,) float64 grid used.
    """
    m = _as_loaded(model)
    n_samples = check_int(n_samples, "n_samples")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    sigmas = m.sigma_grid(check_int(steps, "steps"), grid)
    den = _conditioned(m, label)
    noise = seeded_noise(n_samples, m.event_shape, seed=seed, dtype=dtype)
    s0 = float(sigmas[0])
    x = noise * (math.sqrt(1 + s0**2) if m.kind == "diffusers" else s0)
    from tqdm.auto import tqdm

    with tqdm(total=len(sigmas) - 1, disable=not progress, desc=f"sampling {m.kind}", leave=False) as bar:
        out = SAMPLERS[sampler](den, x, sigmas, callback=lambda info: bar.update(1))
    return out, sigmas


# =============================================================================================
# The comparison
# =============================================================================================


def _groups(points: torch.Tensor, n_groups: int) -> list[torch.Tensor]:
    g = min(n_groups, points.shape[0])
    return [c for c in torch.tensor_split(points, g) if c.shape[0] > 0]


def _banded_distance(den, ref, points, sigmas, z, seed, settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance per sigma, pooled over groups of points, and its standard error over groups.

    Each group is noised from its own seeded generator, the same for every reference, so the
    model and both closed forms see identical noisy inputs."""
    vals, sizes = [], []
    for g, chunk in enumerate(_groups(points, settings.n_groups)):
        gen = torch.Generator().manual_seed(seed + 7919 * g)
        prof = denoiser_distance(
            den, ref, chunk, sigmas, generator=gen, normalize="none", batch_size=settings.batch_size
        )
        vals.append(prof.values / z)
        sizes.append(chunk.shape[0])
    v = torch.stack(vals)  # (G, S)
    w = torch.tensor(sizes, dtype=torch.float64)[:, None]
    mean = (v * w).sum(0) / w.sum()  # = the distance over all points
    se = v.std(0, unbiased=True) / math.sqrt(v.shape[0]) if v.shape[0] > 1 else torch.zeros_like(mean)
    return mean, se


def _check_fit(m: LoadedModel, den, train: torch.Tensor) -> None:
    """A model whose shape, output or sigma range does not fit the data fails here, clearly."""
    if tuple(m.event_shape) != tuple(train.shape[1:]):
        raise ValueError(
            f"model: it takes samples of shape {tuple(m.event_shape)} but the data have shape "
            f"{tuple(train.shape[1:])}; compare it with the data set it was trained on"
        )
    x = train[:2].to(torch.float64)
    s = min(max(1.0, m.sigma_min), m.sigma_max)  # a level every model supports
    with torch.no_grad():
        y = den(x, s)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"model: returned shape {tuple(getattr(y, 'shape', ()))} for input {tuple(x.shape)}")
    if not y.is_floating_point() or not bool(torch.isfinite(y).all()):
        raise ValueError(f"model: returned a non-floating or non-finite output (dtype {y.dtype})")


def _local_forms(den, train, heldout, sigmas, settings, progress) -> tuple[dict, dict]:
    """The local closed forms of ``settings.local`` for the training images ``train``: each
    patch machine with its patch size calibrated at every level of ``sigmas`` against the model's
    denoiser ``den`` (:func:`gaussdiff.calibrate_patch_size`, median R² over
    ``n_calibration`` noisy images, held-out if any), the Wiener masks with their defaults.
    Every variant is calibrated on the same images and the same noise (seeded from
    ``settings.seed``). Returns ``({name: denoiser}, {variant: calibration table})``."""
    if train.ndim != 4:
        raise ValueError(
            f"local: the local closed forms need images (C, H, W), the data have shape {tuple(train.shape[1:])}"
        )
    H, W = train.shape[2:]
    pool = heldout if heldout is not None else train
    pick = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(settings.seed + 5))
    x0 = pool[pick[: settings.n_calibration]]
    from tqdm.auto import tqdm

    forms, tables = {}, {}
    for name in tqdm(settings.local, disable=not progress, desc="local closed forms", leave=False):
        if name == "wiener":
            forms[name] = WienerMaskDenoiser(train)
            continue
        if name == "els" and min(settings.patch_sizes) > min(H, W):
            raise ValueError(
                f"patch_sizes: ELS needs a size of at most {min(H, W)} on {H} x {W} images, got {settings.patch_sizes}"
            )
        with torch.no_grad():  # the model's denoiser is the reference: no graph through a network
            schedule, table = calibrate_patch_size(
                train,
                den,
                x0,
                sigmas,
                sizes=settings.patch_sizes,
                variant=name,
                padding=settings.padding,
                agreement=_calibration_score,
                generator=torch.Generator().manual_seed(settings.seed + 11),  # the same noise for every variant
            )
        forms[name] = PatchDenoiser(train, schedule, variant=name, padding=settings.padding)
        tables[name] = {**table, "patch_size": list(schedule.sizes)}
    return forms, tables


def _nonconstant(x: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which images of ``x`` are not constant (the agreement module's own test)."""
    f = x.reshape(x.shape[0], -1).double()
    c = f - f.mean(1, keepdim=True)
    return (c * c).sum(1) > 0


def _calibration_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The calibration's agreement: the median over images of R² (as
    :func:`gaussdiff.calibrate_patch_size` by default), leaving out images where the model's
    output is constant (R² undefined) instead of failing; -inf if all are."""
    ok = _nonconstant(target)
    if not bool(ok.any()):
        return -math.inf
    return coefficient_of_determination(pred[ok], target[ok]).median


def _sample_agreement(closed: torch.Tensor, model: torch.Tensor) -> dict:
    """``{measure: (B,)}``: the agreement of each closed-form sample (prediction) with the
    model's sample of the same noise (target), :func:`~gaussdiff.metrics.agreement.agreement_measures`.
    A pair where either image is constant gets NaN (the measures divide by its variance, as
    the agreement module refuses); samples of fewer than 2 entries get no measures at all."""
    if model[0].numel() < 2:
        return {}
    ok = _nonconstant(closed) & _nonconstant(model)
    out = {m: torch.full((model.shape[0],), math.nan, dtype=torch.float64) for m in _AGREEMENT}
    if bool(ok.any()):
        for m, a in agreement_measures(closed[ok], model[ok], measures=tuple(_AGREEMENT)).items():
            out[m][ok] = a.values
    return out


def compare_denoisers(
    model,
    train,
    heldout=None,
    *,
    settings: CompareSettings | None = None,
    progress: bool = False,
    **overrides,
) -> Comparison:
    """Measure a model against the empirical and Gaussian denoisers of its training set (and,
    with ``settings.local``, against the local closed forms, their patch sizes calibrated
    against the model).

    See the module docstring for what is measured. The closed forms are built in float64 from
    ``train``; the model computes in its own dtype.

    Parameters
    ----------
    model : a :class:`~gaussdiff.adapters.LoadedModel` (:func:`gaussdiff.adapters.load_model`)
        or a denoiser ``D(x, sigma)`` with ``event_shape`` (and optionally ``sigma_min``,
        ``sigma_max``).
    train : (N, *event_shape) the rows the model was trained on, N >= 2.
    heldout : (M, *event_shape) rows of the same data set it never saw, or None (then no
        held-out distances and no generalization gap).
    settings : :class:`CompareSettings`; keyword ``overrides`` replace its fields.
    progress : progress bars on the long parts.

    Returns
    -------
    :class:`Comparison`
    """
    settings = dataclasses.replace(settings or CompareSettings(), **overrides)
    train = check_data(train, "train", min_rows=2).to(torch.float64)
    m = _as_loaded(model, tuple(train.shape[1:]))
    den = _conditioned(m, settings.label)
    _check_fit(m, den, train)
    if heldout is not None:
        heldout = check_data(heldout, "heldout").to(torch.float64)
        if tuple(heldout.shape[1:]) != tuple(train.shape[1:]):
            raise ValueError(f"heldout: rows of shape {tuple(heldout.shape[1:])} differ from train's")
    lo = settings.sigma_lo if settings.sigma_lo is not None else max(m.sigma_min, 0.01)
    hi = settings.sigma_hi if settings.sigma_hi is not None else min(m.sigma_max, 80.0)
    if lo < m.sigma_min * (1 - 1e-6) or hi > m.sigma_max * (1 + 1e-6) or not lo < hi:
        raise ValueError(
            f"sigma_lo: the distance grid [{lo:.4g}, {hi:.4g}] must be increasing and lie inside the model's "
            f"range [{m.sigma_min:.4g}, {m.sigma_max:.4g}]"
        )
    sigmas = torch.logspace(math.log10(lo), math.log10(hi), settings.n_sigmas, dtype=torch.float64)
    refs = {"empirical": EmpiricalDenoiser(train), "gaussian": GaussianDenoiser.fit(train)}
    calibration = {}
    if settings.local:
        local, calibration = _local_forms(den, train, heldout, sigmas, settings, progress)
        refs.update(local)
    gen = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(train.shape[0], generator=gen)[: settings.n_points]
    sets = {"train": train[pick]}
    if heldout is not None:
        sets["heldout"] = heldout[torch.randperm(heldout.shape[0], generator=gen)[: settings.n_points]]
    z = float(((train - train.mean(0)) ** 2).reshape(train.shape[0], -1).sum(1).mean())
    if z <= 0:
        raise ValueError("train: all rows are equal; their variance cannot normalise the distances")

    from tqdm.auto import tqdm

    distance = {}
    jobs = [(r, part) for part in sets for r in refs]
    for i, (r, part) in enumerate(tqdm(jobs, disable=not progress, desc="denoiser distances", leave=False)):
        seed = settings.seed + 1000 * (list(sets).index(part) + 1)  # the same noise for every reference
        distance[f"{r}_{part}"] = _banded_distance(den, refs[r], sets[part], sigmas, z, seed, settings)
    if heldout is not None:
        gap = generalization_gap(
            den,
            sets["train"],
            sets["heldout"],
            sigmas,
            generator=torch.Generator().manual_seed(settings.seed + 3),
            batch_size=settings.batch_size,
        )
        mse_train, mse_heldout = gap.train.values, gap.heldout.values
    else:
        mse_heldout = None
        x0 = sets["train"]
        g2 = torch.Generator().manual_seed(settings.seed + 3)
        mse_train = generalization_gap(den, x0, x0, sigmas, generator=g2, batch_size=settings.batch_size).train.values

    samples = {}
    kw = dict(steps=settings.steps, sampler=settings.sampler, grid=settings.grid, seed=settings.seed)
    samples["model"], grid = sample_model(m, settings.n_samples, label=settings.label, progress=progress, **kw)
    for r, ref in refs.items():
        closed = LoadedModel(ref, m.kind, m.event_shape, m.sigma_min, m.sigma_max, {})
        # the closed forms follow the model's own grid and prior: sampled as the model is
        closed = dataclasses.replace(closed, denoiser=_OnGrid(ref, m)) if settings.grid == "own" else closed
        samples[r], _ = sample_model(closed, settings.n_samples, progress=progress, **kw)
    nearest, memo = {}, {}
    for name, x in samples.items():
        nearest[name] = nearest_training(x, train, k=2)
        memo[name] = memorization_fraction(
            x, train, neighbors=nearest[name], n_boot=settings.n_boot, seed=settings.seed
        )
    rep = {
        r: reproducibility(
            samples["model"], samples[r], threshold=settings.threshold, n_boot=settings.n_boot, seed=settings.seed
        )
        for r in refs
    }
    agreement = {r: _sample_agreement(samples[r], samples["model"]) for r in refs}
    return Comparison(
        sigmas=sigmas,
        distance=distance,
        mse_train=mse_train,
        mse_heldout=mse_heldout,
        sample_sigmas=grid,
        samples=samples,
        nearest=nearest,
        nearest_images=train[nearest["model"][1][:, 0]],
        memorization=memo,
        reproducibility=rep,
        settings=settings,
        provenance=dict(m.provenance),
        agreement=agreement,
        calibration=calibration,
    )


class _OnGrid:
    """A closed form that samples on another model's own grid (:meth:`LoadedModel.sigma_grid`)."""

    def __init__(self, den, like: LoadedModel):
        self.den, self.like = den, like
        self.event_shape = like.event_shape

    def __call__(self, x, sigma):
        return self.den(x, sigma)

    def sigma_grid(self, n):
        return self.like.sigma_grid(n, "own")


# =============================================================================================
# Writing
# =============================================================================================


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _versions() -> dict:
    out = {"gaussdiff": __version__, "torch": torch.__version__, "numpy": np.__version__}
    try:
        import diffusers

        out["diffusers"] = diffusers.__version__
    except ImportError:
        out["diffusers"] = None
    return out


def _log_floor(arrays) -> float:
    """Lower end of a log axis for ``arrays``: their smallest positive value, but at most ten
    decades below their largest (a rounding-level 1e-26 would otherwise squash the curves)."""
    vals = np.concatenate([np.ravel(a) for a in arrays])
    pos = vals[np.isfinite(vals) & (vals > 0)]
    if pos.size == 0:
        return 1e-12
    return max(float(pos.min()), float(pos.max()) * 1e-10) / 2


def _log_curve(ax, s, v, floor, **kw) -> bool:
    """Plot ``v`` over ``s`` on a log axis; values below ``floor`` (exact zeros included) are
    drawn on it as open down-triangles. Returns whether any was."""
    low = ~(v >= floor)
    ax.plot(s, np.where(low, np.nan, v), **{"marker": "o", "ls": "-", "ms": 3, **kw})
    if low.any():
        ax.plot(s[low], np.full(int(low.sum()), floor), "v", ms=5, mfc="none", color=kw.get("color"), clip_on=False)
    return bool(low.any())


def plot_distances(comp: Comparison, path) -> None:
    """The figure of :func:`_draw_distances` written to ``path`` (atomically)."""
    _save(_draw_distances(comp), path, dpi=120)


def _draw_distances(comp: Comparison):
    """Distance profiles over sigma with 95 % bands (1.96 standard errors over groups of
    points), on training and held-out points (one shared y axis), one colour per closed form
    (a patch machine's legend gives the range of its calibrated patch size), and the model's
    denoising MSE on training and held-out points. Values below the axis, exact zeros included
    (the distance of a closed form to itself), are drawn on its lower edge as open triangles."""
    plt = _plt()
    parts = [p for p in ("train", "heldout") if f"empirical_{p}" in comp.distance]
    forms = [f for f in comp.forms if f"{f}_train" in comp.distance]
    fig, axes = plt.subplots(
        1, len(parts) + 1, figsize=(3.6 * (len(parts) + 1), 3.5), squeeze=False, constrained_layout=True
    )
    s = comp.sigmas.numpy()
    dist = {k: (v.numpy(), se.numpy()) for k, (v, se) in comp.distance.items()}
    floor = _log_floor([v for v, _ in dist.values()] + [v + 1.96 * se for v, se in dist.values()])
    clipped = False
    for i, (ax, part) in enumerate(zip(axes[0], parts)):
        for r in forms:
            color, name = _STYLE[r]
            label = f"model vs {name}"
            if r in comp.calibration:
                k = comp.calibration[r]["patch_size"]
                label += f" (k = {min(k)})" if min(k) == max(k) else f" (k = {min(k)}..{max(k)})"
            v, se = dist[f"{r}_{part}"]
            clipped |= _log_curve(ax, s, v, floor, color=color, label=label)
            lo, hi = np.maximum(v - 1.96 * se, floor), np.maximum(v + 1.96 * se, floor)
            ax.fill_between(s, lo, hi, color=color, alpha=0.25, lw=0)
        ax.set(xscale="log", yscale="log", xlabel="sigma")
        ax.set_ylim(bottom=floor)
        if i == 0:
            ax.set_ylabel("relative distance\n(squared, / total variance of the training set)", fontsize=8)
            ax.legend(fontsize=7)
        else:
            ax.sharey(axes[0, 0])
            ax.tick_params(labelleft=True)
        ax.set_title(f"on noisy {'training' if part == 'train' else 'held-out'} points", fontsize=9)
    ax = axes[0, -1]
    mse = [comp.mse_train.numpy()] + ([comp.mse_heldout.numpy()] if comp.mse_heldout is not None else [])
    mfloor = _log_floor(mse)
    clipped |= _log_curve(ax, s, mse[0], mfloor, color="C2", label="training points")
    if len(mse) > 1:
        clipped |= _log_curve(ax, s, mse[1], mfloor, color="C1", ls="--", label="held-out points")
    ax.set(xscale="log", yscale="log", xlabel="sigma")
    ax.set_ylim(bottom=mfloor)
    ax.set_ylabel("model's denoising MSE per coordinate", fontsize=8)
    ax.set_title("generalization gap (held-out - training)" if len(mse) > 1 else "denoising error", fontsize=9)
    ax.legend(fontsize=7)
    n = comp.provenance.get("n")
    title = "the model against the exact denoisers of its training set"
    title += f" (N = {n})" if n is not None else ""
    title += f"; bands: 95% over disjoint groups of points (at most {comp.settings.n_groups})"
    if clipped:
        title += "\n\u25bd on the lower edge: a value below the axis (0 included)"
    fig.suptitle(title, fontsize=8)
    return fig


def _image(x: np.ndarray) -> np.ndarray:
    img = np.transpose(x, (1, 2, 0)) if x.ndim == 3 and x.shape[0] == 3 else x.reshape(x.shape[-2], x.shape[-1])
    return np.clip((img + 1) / 2, 0, 1)


#: most image tiles :func:`plot_sample_grid` draws (128 samples of one set, 32 of four)
MAX_TILES = 128


def plot_sample_grid(
    rows: dict, path, *, columns: int = 8, max_samples: int | None = None, title: str | None = None
) -> None:
    """The figure of :func:`_draw_sample_grid` written to ``path`` (atomically)."""
    fig = _draw_sample_grid(rows, columns=columns, max_samples=max_samples, title=title)
    _save(fig, path, dpi=120 if next(iter(rows.values())).ndim != 4 else 110)


def _draw_sample_grid(rows: dict, *, columns: int = 8, max_samples: int | None = None, title: str | None = None):
    """A grid of sample images, returned open.

    ``rows``: label -> (B, C, H, W) tensor in ``[-1, 1]``, sample ``j`` of every entry made
    from the same noise. The samples are wrapped into blocks of ``columns``: each block holds
    one row of tiles per entry (labelled on the left; a single entry has no labels, only rows),
    so samples ``j`` of all entries sit in one column. At most ``max_samples`` samples are drawn
    (default: ``MAX_TILES // len(rows)`` rounded down to whole rows, at least one row); the title
    says how many were drawn out of how many. Sizes are fixed in inches (0.8 in tiles), so the
    margins do not change with the number of rows. Vector samples are drawn as a scatter of their
    first two coordinates instead."""
    plt = _plt()
    columns = check_int(columns, "columns")
    first = next(iter(rows.values()))
    if first.ndim != 4:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for lab, x in rows.items():
            xx = x.reshape(x.shape[0], -1).double().numpy()
            ax.scatter(xx[:, 0], xx[:, 1] if xx.shape[1] > 1 else np.zeros(len(xx)), s=10, label=lab)
        ax.legend(fontsize=7)
        ax.set_title(title or "samples (first two coordinates)", fontsize=9)
        fig.tight_layout()
        return fig
    n_total = max(int(x.shape[0]) for x in rows.values())
    if max_samples is None:
        max_samples = max(columns, MAX_TILES // len(rows) // columns * columns)
    shown = min(n_total, check_int(max_samples, "max_samples"))
    cols = max(1, min(columns, shown))
    blocks = -(-shown // cols)
    labelled = len(rows) > 1
    # fixed sizes in inches: tiles, the gap between blocks, the label column, the title band
    tile, gap, pad = 0.8, 0.16, 0.08
    lines = [ln for ln in (title or "").split("\n") if ln]
    count = f"first {shown} of {n_total} samples" if shown < n_total else f"{n_total} samples"
    left = pad + (0.06 * max(len(ln) for lab in rows for ln in str(lab).split("\n")) + 0.1 if labelled else 0)
    width = left + cols * tile + pad
    chars = max(20, int((width - 0.2) / 0.055))  # characters per title line at 8 pt
    head = [w for ln in lines or [""] for w in textwrap.wrap(ln, chars)]
    head = [*head[:-1], f"{head[-1]} ({count})" if head and head[-1] else count]
    head = [w for ln in head for w in textwrap.wrap(ln, chars)]
    top = 0.1 + 0.16 * len(head)
    ratios = []
    for b in range(blocks):
        ratios += ([gap] if b else []) + [tile] * len(rows)
    height = top + sum(ratios) + pad
    fig = plt.figure(figsize=(width, height))
    gs = fig.add_gridspec(
        len(ratios),
        cols,
        height_ratios=ratios,
        left=left / width,
        right=1 - pad / width,
        top=1 - top / height,
        bottom=pad / height,
        hspace=0.06,
        wspace=0.06,
    )
    arrays = {lab: x.detach().double().cpu().numpy() for lab, x in rows.items()}
    for b in range(blocks):
        for r, (lab, arr) in enumerate(arrays.items()):
            grow = b * (len(rows) + 1) + r
            for c in range(cols):
                j = b * cols + c
                ax = fig.add_subplot(gs[grow, c])
                ax.axis("off")
                if j < shown and j < arr.shape[0]:
                    img = _image(arr[j])
                    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
                if c == 0 and labelled:
                    ax.text(-0.08, 0.5, str(lab), transform=ax.transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle("\n".join(head), fontsize=8, y=1 - 0.06 / height, va="top")
    return fig


def write_comparison(comp: Comparison, outdir, *, config: dict | None = None) -> list[Path]:
    """Write a :class:`Comparison` under ``outdir`` (each file atomically): ``compare.csv``
    (per sigma), ``samples.csv`` (per sampler), ``samples.npz`` (samples, nearest training
    images, grid), ``config.json`` (settings, ``config``, versions, the model's provenance)
    and the figures ``distances.png`` and ``samples.png``. Returns the paths written.

    With local closed forms also ``calibration.csv``: one row per (sigma, variant, candidate
    patch size) with its calibration score (median R² against the model) and whether it was
    chosen (``chosen`` 1); the same tables are in ``config.json`` under ``"calibration"``."""
    outdir = make_outdir(outdir, "outdir")
    paths = [outdir / n for n in ("compare.csv", "samples.csv", "samples.npz", "config.json")]
    atomic_write(paths[0], _csv_text(comp.table()))
    atomic_write(paths[1], _csv_text(comp.summary()))
    buf = io.BytesIO()
    arrays = {k: v.numpy() for k, v in comp.samples.items()}
    np.savez(buf, nearest=comp.nearest_images.numpy(), sigmas=comp.sample_sigmas.numpy(), **arrays)
    atomic_write(paths[2], buf.getvalue())
    meta = {
        "settings": dataclasses.asdict(comp.settings),
        "config": dict(config or {}),
        "model": comp.provenance,
        "versions": _versions(),
        "sample_sigmas": comp.sample_sigmas.tolist(),
    }
    if comp.calibration:
        meta["calibration"] = comp.calibration
        cal = [
            {"sigma": sigma, "variant": variant, "k": k, "score": score, "chosen": int(k == best)}
            for variant, tab in comp.calibration.items()
            for sigma, scores, best in zip(tab["sigmas"], tab["scores"], tab["patch_size"])
            for k, score in zip(tab["sizes"], scores)
        ]
        paths.append(outdir / "calibration.csv")
        atomic_write(paths[-1], _csv_text(cal))
    atomic_write(paths[3], json.dumps(meta, indent=2, default=str))
    plot_distances(comp, outdir / "distances.png")
    rows = {"model": comp.samples["model"], "its nearest\ntraining image": comp.nearest_images}
    rows.update({_STYLE[f][1]: comp.samples[f] for f in comp.forms})
    mem = comp.memorization["model"]
    plot_sample_grid(
        rows,
        outdir / "samples.png",
        title=f"one noise per column; model memorization {mem.value:.2f} [{mem.ci_low:.2f}, {mem.ci_high:.2f}]",
    )
    return [*paths, outdir / "distances.png", outdir / "samples.png"]
