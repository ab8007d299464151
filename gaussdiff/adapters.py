r"""Other people's models as gaussdiff denoisers ``D(x, sigma)`` (DESIGN section 11).

gaussdiff's one convention (:mod:`gaussdiff.schedules`): a denoiser is called on the
*unscaled* input :math:`\hat x = x_0 + \sigma n` and returns :math:`E[x_0 \mid \hat x]`. Two
adapters bring external models to it, so that every closed form, sampler and metric applies to
them unchanged:

* :class:`CallableDenoiser` wraps an EDM / k-diffusion-style callable ``model(x, sigma)``. Such
  a model already *is* a denoiser in this convention (NVlabs/edm ``EDMPrecond.forward``,
  k-diffusion ``Denoiser``/``VDenoiser``: input ``x0 + sigma n``, output the denoised image);
  the adapter adds the checks (shape, floating dtype, finite output) and the valid sigma range.
* :class:`DiffusersDenoiser` wraps a diffusers ``UNet2DModel`` (optionally class-conditional)
  trained with a discrete DDPM noise table (the configs of ``DDPMScheduler``,
  ``DDIMScheduler`` and ``EulerDiscreteScheduler``; ``prediction_type`` ``epsilon``,
  ``v_prediction`` or ``sample``).

**Sigma and timestep** (:class:`DiffusersDenoiser`). Timestep ``i`` of the scheduler's own
alpha-bar table :math:`\bar\alpha_i` (``scheduler.alphas_cumprod``, used as stored) has
:math:`\sigma_i = \sqrt{(1 - \bar\alpha_i)/\bar\alpha_i}` and scale
:math:`s_i = \sqrt{\bar\alpha_i} = 1/\sqrt{1 + \sigma_i^2}` (:class:`~gaussdiff.VPDiscrete`).
A query at noise level :math:`\sigma` feeds the network :math:`x_t = \hat x / \sqrt{1 + \sigma^2}`
at the timestep ``t(sigma)`` given by ``timestep_rule``:

* ``"interpolate"`` (default): ``t`` is the fractional index that interpolates linearly in
  :math:`\log\sigma` between the two neighbouring trained timesteps (k-diffusion's
  ``DiscreteSchedule.sigma_to_t``); a trained sigma gives its integer timestep exactly;
* ``"nearest"``: the trained timestep nearest in :math:`\log\sigma` (what the network saw in
  training; k-diffusion's ``quantize=True``).

The network output becomes the denoiser by the DDPM definitions
:math:`x_t = \sqrt{\bar\alpha} x_0 + \sqrt{1-\bar\alpha}\,\epsilon`,
:math:`v = \sqrt{\bar\alpha}\,\epsilon - \sqrt{1-\bar\alpha}\,x_0` with
:math:`\bar\alpha = 1/(1+\sigma^2)` of the *queried* sigma (C3):

* epsilon: :math:`D = \hat x - \sigma \epsilon`;
* v_prediction: :math:`D = \sqrt{\bar\alpha}\, x_t - \sqrt{1-\bar\alpha}\, v = \hat x/(1+\sigma^2) - \sigma v/\sqrt{1+\sigma^2}`;
* sample: :math:`D` is the output.

The valid range is the table's: ``sigma_min = sigma_0``, ``sigma_max = sigma_{T-1}``; a query
outside it is refused (``ValueError`` naming ``sigma``), and :meth:`DiffusersDenoiser.sigma_grid`
builds the model's own DDIM / Euler grid (the levels diffusers itself would step through), so
that Euler on it *is* the model's DDIM loop (eta = 0, no clipping of the predicted ``x0``).

:func:`load_model` opens a model from a local folder (a diffusers pipeline folder, a bare
``UNet2DModel`` folder with a scheduler config, a gaussdiff checkpoint) or builds a closed form
(``empirical:SPEC``, ``gaussian:SPEC``); nothing is downloaded. diffusers is an optional
dependency, imported only when a diffusers model is used: ``pip install "gaussdiff[diffusers]"``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ._checks import check_batch, check_int, check_labels, check_positive, check_sigma
from .denoisers import Denoiser, GaussianDenoiser
from .empirical import EmpiricalDenoiser
from .schedules import karras_sigmas, score_from_denoiser

__all__ = ["CallableDenoiser", "DiffusersDenoiser", "LoadedModel", "load_model"]

#: the diffusers scheduler classes whose noise table the adapter reads
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler")
#: how a sigma between two trained timesteps is mapped (module docstring)
TIMESTEP_RULES = ("interpolate", "nearest")
_PREDICTIONS = ("epsilon", "v_prediction", "sample")
_INSTALL = 'pip install "gaussdiff[diffusers]"  (or: pip install "diffusers>=0.30")'
_RANGE_RTOL = 1e-6  # a sigma this close (relatively) to an end of the table is that end (float32 grids)


def _sigma_rows(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (a float or (B,)) as a (B,) tensor in the dtype and on the device of ``x``."""
    return check_sigma(sigma, x.shape[0], dtype=x.dtype, device=x.device)


def _diffusers():
    """The diffusers module, imported on first use; a clear message when it is missing."""
    try:
        import diffusers
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"diffusers is needed for diffusers models but is not installed; install it with: {_INSTALL}",
            name="diffusers",
        ) from exc
    return diffusers


# =============================================================================================
# Any EDM / k-diffusion-style callable
# =============================================================================================


class CallableDenoiser(Denoiser):
    r"""An EDM / k-diffusion-style model ``model(x, sigma)`` as a checked gaussdiff denoiser.

    The model must already follow gaussdiff's convention: input :math:`\hat x = x_0 + \sigma n`
    of shape ``(B, *event_shape)``, ``sigma`` a ``(B,)`` tensor, output the denoised batch
    :math:`D(\hat x, \sigma)` of the same shape (NVlabs/edm's ``EDMPrecond``, k-diffusion's
    ``Denoiser``). A model that returns an eps- or v-prediction is wrapped with
    :func:`gaussdiff.denoiser_from_eps` / :func:`gaussdiff.denoiser_from_velocity` first.

    The query is cast to ``dtype`` (the model's) and the output cast back; the output must be a
    floating tensor of the input's shape with finite values, or ``ValueError`` naming ``model``.

    Parameters
    ----------
    model : callable ``model(x, sigma) -> Tensor``; called under ``torch.no_grad``.
    event_shape : shape of one sample, e.g. ``(3, 32, 32)``.
    dtype : the dtype the model computes in (default float32).
    device : its device (default cpu).
    sigma_min, sigma_max : the noise levels the model supports (default ``(0, inf)``); queries
        outside are refused.
    provenance : free-form description kept for reports.
    """

    def __init__(
        self,
        model: Callable,
        event_shape: Sequence[int],
        *,
        dtype=torch.float32,
        device="cpu",
        sigma_min: float = 0.0,
        sigma_max: float = math.inf,
        provenance: dict | None = None,
    ):
        if not callable(model):
            raise ValueError(f"model: expected a callable model(x, sigma), got {type(model).__name__}")
        self.model = model
        self.event_shape = tuple(check_int(s, "event_shape") for s in event_shape)
        self.dtype, self.device = dtype, torch.device(device)
        lo = check_positive(sigma_min, "sigma_min", allow_zero=True)
        hi = float(sigma_max)
        if not hi > lo:
            raise ValueError(f"sigma_max: must be larger than sigma_min = {lo}, got {sigma_max!r}")
        self.sigma_min, self.sigma_max = lo, hi
        self.provenance = dict(provenance or {"kind": "callable", "model": repr(model)})

    def _check_range(self, s: torch.Tensor) -> None:
        lo, hi = float(s.min()), float(s.max())
        if lo < self.sigma_min * (1 - _RANGE_RTOL) or hi > self.sigma_max * (1 + _RANGE_RTOL):
            bad = lo if lo < self.sigma_min * (1 - _RANGE_RTOL) else hi
            raise ValueError(
                f"sigma: {bad:.4g} is outside the model's range [{self.sigma_min:.4g}, {self.sigma_max:.4g}] "
                "(build grids inside it: sigma_min / sigma_max / sigma_grid)"
            )

    def _query(self, x, sigma):
        x = check_batch(x, self.event_shape, "x")
        s = check_sigma(sigma, x.shape[0], dtype=torch.float64, device="cpu")
        self._check_range(s)
        return x, s

    def _check_output(self, y, x_in: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"model: must return a tensor, got {type(y).__name__}")
        if tuple(y.shape) != tuple(x_in.shape):
            raise ValueError(f"model: output shape {tuple(y.shape)} differs from the input's {tuple(x_in.shape)}")
        if not y.is_floating_point():
            raise ValueError(f"model: output dtype {y.dtype} is not floating")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("model: output contains NaN or infinite values")
        return y

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``D(x, sigma)``: same shape, dtype and device as ``x``."""
        x, s = self._query(x, sigma)
        xx = x.to(dtype=self.dtype, device=self.device)
        with torch.no_grad():
            y = self.model(xx, s.to(dtype=self.dtype, device=self.device))
        return self._check_output(y, xx).to(dtype=x.dtype, device=x.device)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """(T1) Tweedie: ``(D(x, sigma) - x) / sigma^2``."""
        return score_from_denoiser(self(x, sigma), x, _sigma_rows(sigma, x))

    def sigma_grid(self, n: int, *, sigma_min: float | None = None, sigma_max: float | None = None) -> torch.Tensor:
        """EDM's rho = 7 grid of ``n`` levels inside the model's range (default ends
        ``max(sigma_min, 0.002)`` and ``min(sigma_max, 80)``), then 0: ``(n + 1,)`` float64."""
        lo = sigma_min if sigma_min is not None else max(self.sigma_min, 0.002)
        hi = sigma_max if sigma_max is not None else min(self.sigma_max, 80.0)
        self._check_range(torch.tensor([lo, hi], dtype=torch.float64))
        return karras_sigmas(n, lo, hi)


# =============================================================================================
# diffusers UNet2DModel + a DDPM noise table
# =============================================================================================


def _scheduler_from(scheduler):
    """A diffusers scheduler object from an object, a config dict or a path (folder or json)."""
    if isinstance(scheduler, (str, Path)):
        path = Path(scheduler)
        f = path / "scheduler_config.json" if path.is_dir() else path
        if not f.is_file():
            raise ValueError(f"scheduler: no scheduler config at {path} (expected scheduler_config.json)")
        scheduler = json.loads(f.read_text())
    if isinstance(scheduler, dict):
        name = scheduler.get("_class_name", "DDPMScheduler")
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler: {name} is not supported; supported: {', '.join(SCHEDULERS)}")
        cls = getattr(_diffusers(), name)
        return cls.from_config({k: v for k, v in scheduler.items() if not k.startswith("_")})
    name = type(scheduler).__name__
    if name not in SCHEDULERS or not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"scheduler: {name} is not supported; supported: {', '.join(SCHEDULERS)}")
    return scheduler


class DiffusersDenoiser(Denoiser):
    r"""A diffusers ``UNet2DModel`` and its scheduler's noise table as a gaussdiff denoiser.

    ``D(x, sigma)`` (or ``D(x, sigma, label)`` for a class-conditional UNet) on the unscaled
    input, by the conversion and the sigma -> timestep rule of the module docstring. Called
    under ``torch.no_grad``; the network computes in its own dtype and device, the scaling and
    the conversion in float64, and the result has the dtype and device of ``x``.

    Parameters
    ----------
    unet : a ``UNet2DModel`` (or any module with its ``config`` and its call
        ``unet(x_t, t, class_labels=..., return_dict=False)``).
    scheduler : a ``DDPMScheduler``, ``DDIMScheduler`` or ``EulerDiscreteScheduler``, its config
        dict, or the path of its folder / ``scheduler_config.json``.
    timestep_rule : ``"interpolate"`` (default) or ``"nearest"``.
    prediction_type : override the scheduler config's ``prediction_type``.
    provenance : free-form description kept for reports (:func:`load_model` fills it).

    Attributes
    ----------
    sigmas : (T,) float64 noise level of each trained timestep, increasing.
    sigma_min, sigma_max : the ends of that table (the valid range).
    num_classes : classes of a class-conditional UNet, else None.
    """

    def __init__(
        self,
        unet,
        scheduler,
        *,
        timestep_rule: str = "interpolate",
        prediction_type: str | None = None,
        provenance: dict | None = None,
    ):
        self.scheduler = _scheduler_from(scheduler)
        if timestep_rule not in TIMESTEP_RULES:
            raise ValueError(f"timestep_rule: expected one of {', '.join(TIMESTEP_RULES)}, got {timestep_rule!r}")
        pred = prediction_type or self.scheduler.config.get("prediction_type", "epsilon")
        if pred not in _PREDICTIONS:
            raise ValueError(f"prediction_type: expected one of {', '.join(_PREDICTIONS)}, got {pred!r}")
        cfg = getattr(unet, "config", None)
        if cfg is None or not hasattr(unet, "parameters"):
            raise ValueError(f"unet: expected a diffusers UNet2DModel, got {type(unet).__name__}")
        size = cfg["sample_size"] if isinstance(cfg, dict) else cfg.sample_size
        chans = cfg["in_channels"] if isinstance(cfg, dict) else cfg.in_channels
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.unet = unet.eval()
        for p in unet.parameters():
            p.requires_grad_(False)
        self.event_shape = (int(chans), *map(int, size))
        p = next(unet.parameters())
        self.dtype, self.device = p.dtype, p.device
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        self.num_classes = get("num_class_embeds", None)
        self.timestep_rule, self.prediction_type = timestep_rule, pred
        abar = torch.as_tensor(self.scheduler.alphas_cumprod).to(torch.float64).cpu()
        self.alphas_cumprod = abar
        self.sigmas = ((1 - abar) / abar).sqrt()  # (VP) sigma_i = sqrt(1/abar_i - 1)
        if not bool((self.sigmas[1:] > self.sigmas[:-1]).all()) or float(self.sigmas[0]) <= 0:
            raise ValueError("scheduler: its alphas_cumprod must decrease strictly from below 1")
        self._log_sigmas = self.sigmas.log()
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])
        self.provenance = dict(provenance or {})
        self.provenance.setdefault("kind", "diffusers")
        self.provenance.update(
            scheduler=type(self.scheduler).__name__,
            prediction_type=pred,
            num_train_timesteps=int(abar.shape[0]),
            timestep_rule=timestep_rule,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
        )

    @property
    def T(self) -> int:
        """Number of trained timesteps."""
        return int(self.sigmas.shape[0])

    # -- sigma <-> timestep ------------------------------------------------------------------
    def timestep(self, sigma) -> torch.Tensor:
        """The timestep fed to the network at noise level ``sigma`` (float or (B,) tensor, inside
        ``[sigma_min, sigma_max]``): float64 (B,), integral for ``"nearest"`` (module docstring)."""
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).clamp(self.sigma_min, self.sigma_max)
        ls = s.log()
        hi = torch.searchsorted(self._log_sigmas, ls).clamp(1, self.T - 1)
        lo = hi - 1
        l0, l1 = self._log_sigmas[lo], self._log_sigmas[hi]
        w = ((ls - l0) / (l1 - l0)).clamp(0, 1)
        if self.timestep_rule == "nearest":
            return torch.where(w < 0.5, lo, hi).to(torch.float64)
        return lo.to(torch.float64) + w

    def sigma_of_timestep(self, t) -> torch.Tensor:
        """``sigma`` of (possibly fractional) timesteps ``t``: the inverse of :meth:`timestep`'s
        interpolation, linear in ``log sigma`` between the table entries."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).clamp(0, self.T - 1)
        lo = t.floor().long().clamp(max=self.T - 2)
        w = t - lo
        return (self._log_sigmas[lo] * (1 - w) + self._log_sigmas[lo + 1] * w).exp()

    def sigma_grid(self, n: int) -> torch.Tensor:
        """The model's own grid of ``n`` steps: the levels diffusers steps through.

        DDPM and DDIM configs: the DDIM schedule (``DDIMScheduler.from_config(config)``,
        ``set_timesteps(n)``): ``sigma`` of each of its timesteps, then the level DDIM steps to
        last (``prev = t - T // n``, or its ``final_alpha_cumprod``: 0 with the default
        ``set_alpha_to_one``). Euler configs: ``EulerDiscreteScheduler.sigmas`` (ends in 0).
        Euler on this grid is that scheduler's own deterministic loop.

        Returns
        -------
        (n + 1,) float64, decreasing.
        """
        n = check_int(n, "n")
        if n > self.T:
            raise ValueError(f"n: at most T = {self.T} steps on the model's own grid, got {n}")
        d = _diffusers()
        if type(self.scheduler).__name__ == "EulerDiscreteScheduler":
            sch = d.EulerDiscreteScheduler.from_config(self.scheduler.config)
            sch.set_timesteps(n)
            return torch.as_tensor(sch.sigmas).to(torch.float64).cpu()
        sch = d.DDIMScheduler.from_config(self.scheduler.config)
        sch.set_timesteps(n)
        ts = [int(t) for t in sch.timesteps]
        prev = ts[-1] - sch.config.num_train_timesteps // n
        abar = sch.alphas_cumprod.to(torch.float64)
        last = float(abar[prev]) if prev >= 0 else float(sch.final_alpha_cumprod)
        levels = [float(self.sigmas[t]) for t in ts] + [math.sqrt((1 - last) / last)]
        return torch.tensor(levels, dtype=torch.float64)

    # -- the denoiser --------------------------------------------------------------------------
    def _label(self, label, batch: int):
        if self.num_classes is None:
            if label is not None:
                raise ValueError("label: this UNet is unconditional (no num_class_embeds); call it as D(x, sigma)")
            return None
        if label is None:
            raise ValueError(f"label: this UNet is class-conditional ({self.num_classes} classes); pass label=")
        return check_labels(label, int(self.num_classes), batch).to(self.device)

    def raw(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """The network's own output (eps, v or x0 prediction) at ``x_t = x / sqrt(1 + sigma^2)``
        and ``t(sigma)``: same shape as ``x``, float64 on the CPU."""
        return self._raw(x, sigma, label)[0]

    def _raw(self, x, sigma, label):
        """``(output, x, sigma)``: the network output, ``x`` and ``sigma`` (B,), float64 on the CPU."""
        x = check_batch(x, self.event_shape, "x")
        s = check_sigma(sigma, x.shape[0], dtype=torch.float64, device="cpu")
        lo, hi = float(s.min()), float(s.max())
        if lo < self.sigma_min * (1 - _RANGE_RTOL) or hi > self.sigma_max * (1 + _RANGE_RTOL):
            bad = lo if lo < self.sigma_min * (1 - _RANGE_RTOL) else hi
            raise ValueError(
                f"sigma: {bad:.4g} is outside the model's trained range [{self.sigma_min:.4g}, "
                f"{self.sigma_max:.4g}] (build grids inside it: sigma_min / sigma_max / sigma_grid)"
            )
        lab = self._label(label, x.shape[0])
        t = self.timestep(s)
        t = t.long() if self.timestep_rule == "nearest" else t
        c_in = (1 + s**2).rsqrt().reshape(-1, *([1] * len(self.event_shape)))
        x_t = (x.to(torch.float64).cpu() * c_in).to(dtype=self.dtype, device=self.device)
        with torch.no_grad():
            kw = {"class_labels": lab} if lab is not None else {}
            out = self.unet(x_t, t.to(self.device), return_dict=False, **kw)[0]
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x_t.shape):
            raise ValueError(
                f"unet: output shape {tuple(getattr(out, 'shape', ()))} differs from the input's "
                f"{tuple(x_t.shape)} (out_channels must equal in_channels)"
            )
        return out.to(dtype=torch.float64, device="cpu"), x.to(torch.float64).cpu(), s

    def __call__(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """``D(x, sigma[, label])``: same shape, dtype and device as ``x``."""
        out, x64, s = self._raw(x, sigma, label)
        sig = s.reshape(-1, *([1] * len(self.event_shape)))
        if self.prediction_type == "epsilon":
            den = x64 - sig * out  # (C3)
        elif self.prediction_type == "v_prediction":
            den = x64 / (1 + sig**2) - sig * (1 + sig**2).rsqrt() * out  # sqrt(abar) x_t - sqrt(1 - abar) v
        else:
            den = out
        if not bool(torch.isfinite(den).all()):
            raise ValueError("unet: output contains NaN or infinite values")
        return den.to(dtype=x.dtype, device=x.device)

    def score(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """(T1) Tweedie: ``(D(x, sigma) - x) / sigma^2``."""
        return score_from_denoiser(self(x, sigma, label), x, _sigma_rows(sigma, x))

    def conditioned(self, label) -> Callable:
        """The denoiser ``D(., ., label)`` of a fixed label (an int or a ``(B,)`` tensor), for the
        samplers."""
        self._label(label, None if torch.as_tensor(label).ndim else 1)
        return lambda x, sigma: self(x, sigma, label)


# =============================================================================================
# Loading
# =============================================================================================


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes
    ----------
    denoiser : the model as a denoiser ``D(x, sigma)`` (``D(x, sigma, label)`` when conditional).
    kind : ``"diffusers"``, ``"gaussdiff"``, ``"empirical"``, ``"gaussian"`` or ``"callable"``.
    event_shape : shape of one sample.
    sigma_min, sigma_max : the valid noise range (``0`` and ``inf`` for closed forms).
    provenance : where it came from (path, classes, configuration, fingerprints).
    train : the training rows of a closed form (None otherwise).
    """

    denoiser: Callable
    kind: str
    event_shape: tuple
    sigma_min: float = 0.0
    sigma_max: float = math.inf
    provenance: dict = field(default_factory=dict)
    train: torch.Tensor | None = None

    def sigma_grid(self, n: int, grid: str = "own") -> torch.Tensor:
        """A sampling grid of ``n`` steps inside the model's range: ``"own"`` is the model's own
        (the denoiser's ``sigma_grid`` where it has one, e.g.
        :meth:`DiffusersDenoiser.sigma_grid`; otherwise ``"karras"``); ``"karras"`` is
        EDM's rho = 7 grid between ``max(sigma_min, 0.002)`` and ``min(sigma_max, 80)``."""
        if grid not in ("own", "karras"):
            raise ValueError(f"grid: expected 'own' or 'karras', got {grid!r}")
        if grid == "own" and callable(getattr(self.denoiser, "sigma_grid", None)):
            return self.denoiser.sigma_grid(n)
        lo, hi = max(self.sigma_min, 0.002), min(self.sigma_max, 80.0)
        return karras_sigmas(n, lo, hi)


def _diffusers_version() -> str:
    return getattr(_diffusers(), "__version__", "?")


def _load_unet(path: Path):
    d = _diffusers()
    cfg = json.loads((path / "config.json").read_text())
    name = cfg.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ValueError(f"model: {path} holds a {name}; only UNet2DModel is supported")
    return d.UNet2DModel.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)


def _weights_fingerprint(module) -> str:
    from .training import weights_fingerprint

    return weights_fingerprint(module)


def _closed_form(kind: str, spec: str, n, data_seed: int, part: int, dtype) -> LoadedModel:
    from .data import disjoint_split, load_dataset, subset

    data, _, info = load_dataset(spec)
    if n is not None:
        data = disjoint_split(data, n, data_seed)[part] if part else subset(data, n, data_seed)
    train = data.to(dtype)
    den = EmpiricalDenoiser(train) if kind == "empirical" else GaussianDenoiser.fit(train)
    prov = {"kind": kind, "data": spec, "n": int(train.shape[0]), "data_seed": data_seed, "part": part}
    prov["data_info"] = {k: v for k, v in info.items() if k != "truth"}
    return LoadedModel(den, kind, tuple(train.shape[1:]), provenance=prov, train=train)


def load_model(
    spec,
    *,
    scheduler=None,
    timestep_rule: str = "interpolate",
    step: int | None = None,
    device="cpu",
    n: int | None = None,
    data_seed: int = 0,
    part: int = 0,
    dtype=torch.float64,
) -> LoadedModel:
    """Open a model for the samplers and metrics, from local files only (no download).

    ``spec`` is one of

    * a diffusers pipeline folder as ``DDPMPipeline.save_pretrained`` / ``DDIMPipeline`` write
      it (``model_index.json``, ``unet/``, ``scheduler/``);
    * a bare ``UNet2DModel`` folder (``config.json`` with ``_class_name: UNet2DModel`` and its
      weights), with ``scheduler=`` a scheduler folder or ``scheduler_config.json`` (or that
      file inside the UNet folder);
    * a gaussdiff checkpoint folder written by :func:`gaussdiff.train_denoiser` (``step``
      picks a saved checkpoint);
    * ``empirical:SPEC`` or ``gaussian:SPEC``: the closed form of the data set ``SPEC``
      (:func:`gaussdiff.load_dataset`), on ``n`` rows picked by ``data_seed`` (``part = 1``:
      the second of two disjoint subsets, as ``gaussdiff train --part``), in ``dtype``.

    Returns
    -------
    :class:`LoadedModel`
    """
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ValueError(f"model: expected a folder or empirical:SPEC / gaussian:SPEC, got {spec!r}")
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    if sep and kind in ("empirical", "gaussian") and not Path(text).exists():
        if not rest:
            raise ValueError(f"model: {kind}: needs a data set, e.g. {kind}:digits")
        return _closed_form(kind, rest, n, data_seed, check_int(part, "part", minimum=0), dtype)
    path = Path(text)
    if not path.exists():
        raise ValueError(f"model: no such folder: {text!r} (give a diffusers or gaussdiff model folder)")
    if not path.is_dir():
        raise ValueError(f"model: {text} is a file; give the model's folder")
    if (path / "model_index.json").is_file():
        index = json.loads((path / "model_index.json").read_text())
        if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
            raise ValueError(f"model: the pipeline folder {path} needs unet/ and scheduler/ subfolders")
        unet = _load_unet(path / "unet").to(device)
        sched = scheduler if scheduler is not None else path / "scheduler"
        prov = {"kind": "diffusers", "path": str(path.resolve()), "pipeline": index.get("_class_name")}
    else:
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"model: {path} holds neither a diffusers model nor a gaussdiff checkpoint")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("_class_name") is None:  # a gaussdiff checkpoint
            from .training import load_denoiser

            den = load_denoiser(path, step, device=device)
            prov = {"kind": "gaussdiff", "path": str(path.resolve()), "step": den.config.get("loaded_step")}
            prov["config"] = den.config
            prov["weights_sha1"] = _weights_fingerprint(den.model)
            return LoadedModel(den, "gaussdiff", den.event_shape, provenance=prov)
        if scheduler is None:
            if not (path / "scheduler_config.json").is_file():
                raise ValueError(
                    f"scheduler: the bare UNet folder {path} needs a scheduler config (a scheduler folder or "
                    "scheduler_config.json; --scheduler on the command line)"
                )
            scheduler = path / "scheduler_config.json"
        unet = _load_unet(path).to(device)
        sched = scheduler
        prov = {"kind": "diffusers", "path": str(path.resolve()), "pipeline": None}
    prov.update(
        unet="UNet2DModel",
        scheduler_source=str(sched) if isinstance(sched, (str, Path)) else type(sched).__name__,
        diffusers_version=_diffusers_version(),
        weights_sha1=_weights_fingerprint(unet),
    )
    den = DiffusersDenoiser(unet, sched, timestep_rule=timestep_rule, provenance=prov)
    return LoadedModel(den, "diffusers", den.event_shape, den.sigma_min, den.sigma_max, den.provenance)
