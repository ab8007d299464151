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
    if t.is_meta:
        raise ValueError(f"{name}: is on the meta device, which holds no values")
    if t.is_complex():  # also where a dtype is given: casting would drop the imaginary part
        raise ValueError(f"{name}: complex values are not supported")
    if dtype is not None:
        t = t.to(dtype=dtype)
    elif not t.is_floating_point():
        t = t.to(torch.float64)
    if device is not None:
        t = t.to(device)
    return t


def check_float_dtype(t: torch.Tensor, name: str) -> torch.Tensor:
    """The parameters of a closed form are float32 or float64: half precision (float16, bfloat16)
    is refused rather than computed with a unit round-off of 1e-3 (and ``sigma**2`` underflowing
    float16 below sigma = 7.8e-3)."""
    if t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: expected float32 or float64 values, got {t.dtype}; cast it with .float()")
    return t


def check_generator(generator, name: str = "generator", *, allow_none: bool = True):
    """A ``torch.Generator`` (or ``None`` where allowed): randomness is passed in as a torch
    generator, so a numpy generator or an integer seed is refused here, by name, instead of deep
    inside a torch sampling call."""
    if generator is None and allow_none:
        return None
    if not isinstance(generator, torch.Generator):
        what = "a torch.Generator" + (" or None" if allow_none else "")
        raise ValueError(f"{name}: expected {what}, got {type(generator).__name__}")
    return generator


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.is_meta:
        raise ValueError(f"{name}: is on the meta device, which holds no values")
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


def _check_sigma_tensor(s: torch.Tensor, name: str) -> None:
    """A noise-level tensor holds real numbers with values: not bool, not complex, not on "meta"."""
    if s.dtype == torch.bool:
        raise ValueError(f"{name}: expected real noise levels, got a bool tensor")
    if s.is_complex():
        raise ValueError(f"{name}: complex values are not supported")
    if s.is_meta:
        raise ValueError(f"{name}: is on the meta device, which holds no values")


def _sigma_float(sigma, batch: int, name: str) -> float:
    """A scalar noise level as a float (a bool is refused: ``True`` is not a noise level)."""
    if isinstance(sigma, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got {sigma!r}")
    try:
        return float(sigma)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got {sigma!r}") from exc


def _sigma_rows(sigma: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """A tensor sigma as one value per row: 0-d or ``(1,)`` broadcast, ``(B,)`` as it is, any other
    shape refused; the values checked by :func:`_check_sigma_tensor`."""
    s = sigma
    if s.ndim == 0:
        s = s.reshape(1).expand(batch)
    elif s.ndim != 1 or s.shape[0] not in (1, batch):
        raise ValueError(f"{name}: expected a float or a ({batch},) tensor, got shape {tuple(s.shape)}")
    _check_sigma_tensor(s, name)
    return s


def check_sigma(sigma, batch: int, *, dtype, device, name: str = "sigma", allow_zero: bool = False) -> torch.Tensor:
    """Noise level(s): a positive float or a ``(B,)`` tensor; returns a ``(B,)`` tensor."""
    if isinstance(sigma, torch.Tensor):
        s = _sigma_rows(sigma, batch, name)
        s = s.to(dtype=dtype, device=device).expand(batch)
        if s.numel() == 0:  # an empty batch: nothing to check
            return s
    else:
        v = _sigma_float(sigma, batch, name)
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


def check_sigma_values(sigma, name: str = "sigma", *, device=None) -> torch.Tensor:
    """Noise levels of any shape (a float, a sequence or a tensor) as a float64 tensor on
    ``device``; a bool, a complex or a non-numeric value and a tensor on "meta" are refused by
    name. (Range checks are the caller's.)"""
    if isinstance(sigma, torch.Tensor):
        _check_sigma_tensor(sigma, name)
    elif isinstance(sigma, (bool, np.bool_)) or sigma is None or isinstance(sigma, str):
        raise ValueError(f"{name}: expected a float or a tensor of noise levels, got {sigma!r}")
    try:
        s = torch.as_tensor(sigma)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name}: expected a float or a tensor of noise levels, got {sigma!r}") from exc
    _check_sigma_tensor(s, name)
    return s.to(dtype=torch.float64, device=device)


def sigma_squared_range(dtype) -> tuple[float, float]:
    """The sigma whose square is a normal number of ``dtype``: ``(sqrt(tiny), sqrt(max))``.

    Inside it ``sigma**2`` keeps full relative precision and ``1 / sigma**2`` is finite:
    ``1.1e-19 .. 1.8e19`` in float32, ``1.5e-154 .. 1.3e154`` in float64."""
    fi = torch.finfo(dtype)
    return math.sqrt(fi.tiny), math.sqrt(fi.max)


def sigma_working_dtype(lo: float, hi: float, dtype, name: str = "sigma") -> torch.dtype:
    """The dtype a closed form evaluates its ``sigma**2`` terms in, for noise levels in ``[lo, hi]``
    (the smallest nonzero and the largest; positive and finite, already checked).

    ``dtype`` itself when both squares are normal numbers of it (the ordinary case), float64
    when one would overflow or underflow ``dtype`` (float64 holds ``sigma**2`` for every sigma
    a float32 can hold). Where ``sigma**2`` leaves float64's normal range too there is no wider
    dtype: ``ValueError`` naming ``name`` and saying which way it fails."""
    lo64, hi64 = sigma_squared_range(torch.float64)
    if lo < lo64:
        raise ValueError(
            f"{name}: {lo:.3g} underflows float64 when squared (the closed forms compute with "
            f"sigma**2; sigma >= {lo64:.3g} is needed)"
        )
    if hi > hi64:
        raise ValueError(
            f"{name}: {hi:.3g} overflows float64 when squared (the closed forms compute with "
            f"sigma**2; sigma <= {hi64:.3g} is needed)"
        )
    a, b = sigma_squared_range(dtype)
    return dtype if a <= lo and hi <= b else torch.float64


def check_sigma_float64(lo: float, hi: float, name: str = "sigma") -> None:
    """For code that forms ``1/(2 sigma^2)`` in float64 (the empirical kernels): refuse noise levels
    whose square is not a normal float64 (:func:`sigma_working_dtype`'s rule), where that
    factor would be infinite and the answer NaN. ``lo``, ``hi``: the smallest and largest sigma,
    positive and finite."""
    sigma_working_dtype(lo, hi, torch.float64, name)


def check_sigma_squared(
    sigma, batch: int, *, dtype, device, name: str = "sigma", allow_zero: bool = False
) -> torch.Tensor:
    """Noise level(s) of a closed form that computes with ``sigma**2``: like :func:`check_sigma`
    (a positive float or a ``(B,)`` tensor; returns a ``(B,)`` tensor), with one shared
    treatment of extreme sigma.

    When every nonzero ``sigma**2`` is a normal number of ``dtype`` (:func:`sigma_squared_range`:
    ``1.1e-19 <= sigma <= 1.8e19`` in float32) the result is in ``dtype``, the very values
    :func:`check_sigma` gives. Otherwise it is the float64 value of ``sigma`` as given (not
    rounded through ``dtype``, where ``1e-46`` is 0 and ``1e39`` is inf), and the caller
    evaluates its sigma-dependent terms in float64 (:meth:`gaussdiff.Denoiser._evaluate`).
    Sigma whose square is not a normal float64 are refused (:func:`sigma_working_dtype`)."""
    if isinstance(sigma, torch.Tensor):
        s = _sigma_rows(sigma, batch, name)
        if s.numel() == 0:  # an empty batch: nothing to check
            return s.to(dtype=dtype, device=device).expand(batch)
        s64 = s.to(dtype=torch.float64, device=device)
        lo_pos, lo, hi, finite = torch.stack(
            [torch.where(s64 > 0, s64, torch.inf).min(), s64.min(), s64.max(), torch.isfinite(s64).all()]
        ).tolist()  # one device sync
        if not finite:
            raise ValueError(f"{name}: must be finite, got NaN or inf")
        if lo < 0 or (lo == 0 and not allow_zero):
            raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got min {lo}")
        work = dtype if hi == 0 else sigma_working_dtype(lo_pos, hi, dtype, name)
        return s.to(dtype=work, device=device).expand(batch)
    v = _sigma_float(sigma, batch, name)
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got min {v}")
    work = dtype if v == 0 else sigma_working_dtype(v, v, dtype, name)
    return torch.full((batch,), v, dtype=work, device=device)  # checked on the host: no sync


def check_sigma_output(out: torch.Tensor, s: torch.Tensor, what: str, name: str = "sigma") -> torch.Tensor:
    """A closed form's output ``(B, ...)`` at noise levels ``s`` (B,): returned when finite;
    otherwise ``ValueError`` naming ``name``, the first offending sigma and the dtype it
    overflows (the answer is not representable there), never a silent NaN or inf."""
    if out.numel() == 0:  # an empty batch
        return out
    bad = ~torch.isfinite(out.reshape(out.shape[0], -1)).all(1) if out.ndim else ~torch.isfinite(out).reshape(1)
    if not bool(bad.any()):
        return out
    b = int(torch.nonzero(bad)[0, 0]) if s.numel() > 1 else 0
    v = float(s.reshape(-1)[b])
    dt = str(out.dtype).removeprefix("torch.")
    hint = "" if out.dtype == torch.float64 else "; use float64"
    raise ValueError(f"{name}: at sigma = {v:.3g} the {what} is not representable in {dt} (it overflows){hint}")


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected a number, got {value!r}") from exc
    if not math.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_int(value, name: str, *, minimum: int | None = 1) -> int:
    """An integer (a bool is refused; a float with an integral value is accepted) ``>= minimum``
    (any integer when ``minimum`` is None)."""
    what = {0: "a non-negative integer", 1: "a positive integer", None: "an integer"}.get(
        minimum, f"an integer >= {minimum}"
    )
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    try:
        iv = int(value)
        ok = iv == float(value) and (minimum is None or iv >= minimum)
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


def _refuse_bool(value, name: str) -> None:
    """A grid of levels or times is numbers: bools (True/False as 1/0), in a tensor, an array or
    a list, are refused."""
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError):  # ragged or mixed: as_tensor will say so
            return
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (torch.Tensor, np.ndarray)) and value.dtype in (torch.bool, np.bool_)
    ):
        raise ValueError(f"{name}: expected real numbers, got bool values")


def check_callable(fn, name: str, *, allow_none: bool = False):
    """A callable (``D(x, sigma)``, a callback), or None where allowed."""
    if (fn is None and allow_none) or callable(fn):
        return fn
    raise ValueError(f"{name}: expected a callable{' or None' if allow_none else ''}, got {type(fn).__name__}")


def check_state(x, name: str = "x") -> torch.Tensor:
    """A sampler's state ``(B, *event_shape)``: a real floating torch tensor with finite values
    (the event shape is the denoiser's to check; an empty batch is fine)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name}: expected shape (B, *event_shape), got a scalar")
    return check_finite(x, name)


def check_sigma_grid(sigmas, name: str = "sigmas") -> torch.Tensor:
    """A non-increasing grid of noise levels, all > 0 but possibly a final 0, length >= 2."""
    _refuse_bool(sigmas, name)
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
    broadcast to ``n_rows``; integral floats are accepted; bools, strings and complex values are
    refused)."""
    if isinstance(labels, torch.Tensor) and labels.is_meta:
        raise ValueError(f"{name}: is on the meta device, which holds no values")
    try:
        t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or t.dtype == torch.bool or t.is_complex():
        what = repr(labels) if t is None or t.ndim == 0 else f"{t.dtype} values"
        raise ValueError(f"{name}: expected integer class labels, got {what}")
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
