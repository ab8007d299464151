"""The settings of a training run: one frozen, validated :class:`TrainSettings`, the single
home of every default (:func:`~gaussdiff.training.train_denoiser`,
:func:`~gaussdiff.training.train_ensemble` and ``gaussdiff train``'s options read them)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .._checks import check_int, check_positive
from ..networks import FRAMEWORKS, NETS, NORMS

__all__ = ["TrainSettings", "TRAIN_DEFAULTS"]


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a training run, with its default: the one place they are written.

    Construction validates and normalises each value (a bad one raises ``ValueError`` naming
    it). What depends on the data or the machine is checked when training starts: the
    network's fit to the data (e.g. ``depth`` is for the MLP only) and that a CUDA device is
    present. ``settings.replace(lr=2e-3)`` gives a changed copy.
    Each field's ``metadata["help"]`` is its one-line description (the command line's help).
    """

    # -- length and randomness
    steps: int = _setting(4000, "optimisation steps (a resumed run continues up to this number)")
    seed: int = _setting(0, "seed of the weights and of the generator of indices, sigmas and noise")
    # -- architecture
    net: str = _setting("mlp", "network: 'mlp' (vectors, or images flattened) or 'unet' (images)")
    width: int | None = _setting(None, "width (default: 256 for the MLP, 32 for the U-Net)")
    depth: int | None = _setting(None, "MLP residual blocks (default: 3)")
    norm: str = _setting("group", "U-Net normalisation: 'group' (GroupNorm) or 'none' (no layer sees the whole image)")
    framework: str = _setting("edm", "parameterisation: 'edm', 'vp' or 'flow'")
    sigma_data: float | str = _setting("auto", "EDM's sigma_data ('auto': the standard deviation of the data)")
    # -- optimisation
    batch_size: int = _setting(256, "rows per batch, drawn uniformly with replacement")
    lr: float = _setting(1e-3, "Adam learning rate")
    warmup: int = _setting(100, "steps of the linear learning-rate ramp (0: none)")
    ema: float = _setting(0.999, "EMA decay, in [0, 1)")
    grad_clip: float | None = _setting(1.0, "maximal gradient norm ('none': no clipping)")
    # -- law of sigma (EDM)
    p_mean: float = _setting(-1.2, "mean of ln(sigma) for 'edm'")
    p_std: float = _setting(1.2, "standard deviation of ln(sigma) for 'edm'")
    # -- class-conditional training
    label_dropout: float = _setting(0.1, "share of labels replaced by the 'no label' token, in [0, 1)")
    # -- where, and how often to log and save
    device: str = _setting("cpu", "'cpu' or 'cuda'")
    log_every: int = _setting(50, "steps per loss-history entry (one device sync each)")
    save_every: int = _setting(1000, "steps between resumable states (state.pt)")

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("steps", check_int(self.steps, "steps", minimum=0))
        for name in ("width", "depth"):
            if getattr(self, name) is not None:
                put(name, check_int(getattr(self, name), name))
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(
                f"device: not a torch device ('cpu', 'cuda', 'cuda:0', ...), got {self.device!r}"
            ) from None
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {NETS}, got {self.net!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: must be one of {NORMS}, got {self.norm!r}")
        if self.norm != "group" and self.net != "unet":
            raise ValueError(f"norm: {self.norm!r} is a U-Net option (net='unet'), got net={self.net!r}")
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {self.framework!r}")
        put("batch_size", check_int(self.batch_size, "batch_size"))
        put("warmup", check_int(self.warmup, "warmup", minimum=0))
        put("log_every", check_int(self.log_every, "log_every"))
        put("save_every", check_int(self.save_every, "save_every"))
        put("lr", _positive(self.lr, "lr"))
        put("ema", _unit_interval(self.ema, "ema"))
        if self.grad_clip is not None:
            put("grad_clip", _positive(self.grad_clip, "grad_clip"))
        try:
            p_mean = float(self.p_mean)
        except (TypeError, ValueError):
            p_mean = math.nan
        if not math.isfinite(p_mean) or isinstance(self.p_mean, bool):
            raise ValueError(f"p_mean: expected a finite number, got {self.p_mean!r}")
        put("p_mean", p_mean)
        put("p_std", _positive(self.p_std, "p_std"))
        if isinstance(self.sigma_data, str):
            if self.sigma_data != "auto":
                raise ValueError(f"sigma_data: 'auto' or a positive number, got {self.sigma_data!r}")
        else:
            put("sigma_data", _positive(self.sigma_data, "sigma_data"))
        put("label_dropout", _unit_interval(self.label_dropout, "label_dropout"))
        put("seed", check_int(self.seed, "seed", minimum=0))

    def replace(self, **changes) -> "TrainSettings":
        """A copy with ``changes`` (validated like a new instance)."""
        return dataclasses.replace(self, **changes)


def _positive(value, name: str) -> float:
    """``check_positive``, refusing a bool (``lr=True`` is a slip, not 1.0)."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return check_positive(value, name)


def _unit_interval(value, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name}: must be in [0, 1), got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: must be in [0, 1), got {value!r}")
    return v


_DEFAULT = TrainSettings()

#: The defaults of :class:`TrainSettings` as a read-only mapping (derived from it, not a second copy).
TRAIN_DEFAULTS = MappingProxyType(dataclasses.asdict(_DEFAULT))
