"""Input validation shared by every public entry point.

Every check raises ``ValueError`` whose message starts with the argument's name, so that bad
input is refused loudly instead of producing a silently wrong answer.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__: list[str] = []


def as_tensor(value, name: str, *, dtype=None, device=None) -> torch.Tensor:
    """Convert ``value`` (tensor, numpy array or nested sequence) to a floating torch tensor.

    Integer input is promoted to float64 (or ``dtype`` when given); a tensor keeps its
    floating dtype unless ``dtype`` is given.
    """
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except Exception as exc:  # pragma: no cover - message path
            raise ValueError(f"{name}: cannot be converted to a tensor ({exc})") from exc
    if dtype is not None:
        t = t.to(dtype=dtype)
    elif not t.is_floating_point():
        if t.is_complex():
            raise ValueError(f"{name}: complex values are not supported")
        t = t.to(torch.float64)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def check_data(data, name: str = "data", *, min_rows: int = 1) -> torch.Tensor:
    """A data set: at least ``min_rows`` finite rows, shape ``(N, *event_shape)``."""
    t = as_tensor(data, name)
    if t.ndim < 2:
        raise ValueError(f"{name}: expected shape (N, *event_shape) with at least 2 dimensions, got {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} row(s), got {t.shape[0]} (empty data?)")
    if t.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)})")
    return check_finite(t, name)


def check_batch(x, event_shape: Sequence[int], name: str = "x") -> torch.Tensor:
    """A query batch of shape ``(B, *event_shape)`` with finite floating values."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    event_shape = tuple(event_shape)
    if x.ndim != 1 + len(event_shape) or tuple(x.shape[1:]) != event_shape:
        raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, event_shape))}), got {tuple(x.shape)}")
    return check_finite(x, name)


def check_sigma(sigma, batch: int, *, dtype, device, name: str = "sigma", allow_zero: bool = False) -> torch.Tensor:
    """Noise level(s): a positive float or a ``(B,)`` tensor; returns a ``(B,)`` tensor."""
    if isinstance(sigma, torch.Tensor):
        s = sigma
        if s.ndim == 0:
            s = s.reshape(1).expand(batch)
        elif s.ndim != 1 or s.shape[0] not in (1, batch):
            raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got shape {tuple(s.shape)}")
        s = s.to(dtype=dtype, device=device).expand(batch)
    else:
        try:
            v = float(sigma)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got {sigma!r}") from exc
        if not math.isfinite(v) or (dtype is not None and dtype.is_floating_point and abs(v) > torch.finfo(dtype).max):
            raise ValueError(f"{name}: must be finite (in {dtype}), got {v}")
        if v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got min {v}")
        return torch.full((batch,), v, dtype=dtype, device=device)  # checked on the host: no sync
    if not bool(torch.isfinite(s).all()):
        raise ValueError(f"{name}: must be finite, got NaN or inf")
    bad = (s < 0) if allow_zero else (s <= 0)
    if bool(bad.any()):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got min {float(s.min())}")
    return s


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number, got {value!r}") from exc
    if not math.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """An integer (a bool is refused; a float with an integral value is accepted) ``>= minimum``."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    try:
        iv = int(value)
        ok = iv == float(value) and iv >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return iv


def check_same(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Refuse tensors on different devices or with different dtypes."""
    if a.device != b.device:
        raise ValueError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move one of them")
    if a.dtype != b.dtype:
        raise ValueError(f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one of them")


def check_sigma_grid(sigmas, name: str = "sigmas") -> torch.Tensor:
    """A non-increasing grid of noise levels, all > 0 but possibly a final 0, length >= 2."""
    s = as_tensor(sigmas, name)
    if s.ndim != 1 or s.shape[0] < 2:
        raise ValueError(f"{name}: expected a 1-D grid with at least 2 entries, got shape {tuple(s.shape)}")
    check_finite(s, name)
    if bool((s[:-1] <= 0).any()) or bool((s[-1] < 0)):
        raise ValueError(f"{name}: every level must be > 0 (only the last may be 0)")
    if bool((s[1:] >= s[:-1]).any()):
        raise ValueError(f"{name}: must be strictly decreasing")
    return s


def check_labels(labels, n_classes: int, n_rows: int | None, name: str = "label") -> torch.Tensor:
    """Integer class labels in ``0..n_classes-1`` as an int64 ``(n_rows,)`` tensor (a scalar is
    broadcast to ``n_rows``; integral floats are accepted)."""
    t = torch.as_tensor(labels)
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError(f"{name}: expected integer class labels, got non-integer values")
        t = t.round()
    t = t.to(torch.int64)
    if t.ndim == 0 and n_rows is not None:
        t = t.expand(n_rows)
    if t.ndim != 1 or (n_rows is not None and t.shape[0] != n_rows):
        raise ValueError(f"{name}: expected an integer or a ({n_rows},) tensor of labels, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(
            f"{name}: labels must be in [0, {n_classes - 1}], got values from {int(t.min())} to {int(t.max())}"
        )
    return t
