"""Private helpers shared by the sample and the denoiser metrics (a leaf: imports no metric)."""

from __future__ import annotations

import math

import torch

_WORK = torch.float64


def _same_event(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(
            f"{name_b}: expected event shape {tuple(a.shape[1:])} to match {name_a}, got {tuple(b.shape[1:])}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move one of them")


def _flat64(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).to(_WORK)  # (B, d), also for B = 0


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
