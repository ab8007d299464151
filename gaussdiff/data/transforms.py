r"""What is done to a loaded data set: images scaled to ``[-1, 1]`` and shrunk by area
averaging, seeded subsets and disjoint splits, and the fingerprint that recognises a training set.

Subsets are drawn by one seeded permutation: ``subset(data, n, seed)`` is the first ``n`` rows
of it and ``disjoint_split(data, n, seed)`` its first two blocks of ``n``. Hence
``subset(data, n, seed)`` equals ``disjoint_split(data, n, seed)[0]`` and subsets of one seed are
nested (``n1 < n2`` gives ``subset(n1)`` inside ``subset(n2)``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_data, check_finite, check_int

__all__ = ["subset", "disjoint_split", "split_indices", "resize_images", "to_unit_range", "data_fingerprint"]


def _as_data(data, name: str = "data") -> torch.Tensor:
    """Validated float32 copy of a data set (N, *event_shape): finite, non-empty, >= 2-D."""
    return check_data(data, name).to(torch.float32)


def to_unit_range(images: np.ndarray) -> tuple[np.ndarray, str]:
    """Scale an image array to ``[-1, 1]``; returns ``(float32 array, how)``.

    ``uint8`` is read as ``[0, 255]``, other integers as ``[0, max]``, floats already in
    ``[0, 1]`` or ``[-1, 1]`` as such, any other float range by its global min and max."""
    a = np.asarray(images)
    if a.size == 0:
        raise ValueError(f"images: is empty (shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == bool):
        raise ValueError(f"images: expected real numbers (integers or floats), got dtype {a.dtype}")
    if a.dtype == np.uint8:
        return (a.astype(np.float32) / 127.5 - 1.0), "uint8 [0, 255] -> [-1, 1]"
    if (np.issubdtype(a.dtype, np.integer) and int(a.min()) >= 0) or a.dtype == bool:  # negative: min-max below
        top = max(int(a.max()), 1)
        return (a.astype(np.float32) * (2.0 / top) - 1.0), f"integer [0, {top}] -> [-1, 1]"
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("data: contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a * 2.0 - 1.0, "float [0, 1] -> [-1, 1]"
    if lo >= -1.0 and hi <= 1.0:
        return a, "float already in [-1, 1]"
    span = hi - lo if hi > lo else 1.0
    return (a - lo) * (2.0 / span) - 1.0, f"float min-max [{lo:.4g}, {hi:.4g}] -> [-1, 1]"


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``(N, C, size, size)`` by area averaging.

    Each output pixel is the mean over its (possibly fractional-edged) input area
    (``torch.nn.functional.interpolate(mode="area")``, i.e. adaptive average pooling);
    enlarging is refused."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images: expected a (N, C, H, W) torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images: resizing needs images (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating dtype, got {images.dtype}")
    check_finite(images, "images")
    size = check_int(size, "size")
    H, W = images.shape[-2:]
    if size < 1 or size > min(H, W):
        raise ValueError(
            f"size: must be between 1 and the image size {min(H, W)} (area averaging only shrinks), got {size}"
        )
    if (H, W) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def split_indices(n_total: int, n: int, seed: int, *, parts: int = 1) -> list[torch.Tensor]:
    """``parts`` disjoint index blocks of size ``n`` from one seeded permutation of ``n_total``."""
    n = check_int(n, "n")
    n_total, parts = check_int(n_total, "n_total", minimum=0), check_int(parts, "parts")
    seed = check_int(seed, "seed", minimum=None)
    if parts * n > n_total:
        if parts == 1:
            raise ValueError(f"n: asked for {n} rows but the data set has only {n_total}")
        raise ValueError(
            f"n: {parts} disjoint subsets of n = {n} need {parts * n} rows but the data "
            f"set has only {n_total} (n can be at most {n_total // parts})"
        )
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))
    return [perm[i * n : (i + 1) * n] for i in range(parts)]


def subset(data, n: int, seed: int = 0, *, labels=None):
    """``n`` rows of ``data`` chosen by a seeded permutation (without replacement).

    Equal to ``disjoint_split(data, n, seed)[0]``; with one seed, smaller subsets are nested in
    larger ones. With ``labels`` given returns ``(rows, labels_rows)``."""
    data = _check_rows(data)
    _check_labels_rows(labels, data.shape[0])
    (idx,) = split_indices(data.shape[0], n, seed)
    return data[idx] if labels is None else (data[idx], _take(labels, idx))


def disjoint_split(data, n: int, seed: int = 0, *, labels=None):
    """Two non-overlapping subsets of ``n`` rows each (for models trained on disjoint data).

    Returns ``(a, b)``, or ``((a, labels_a), (b, labels_b))`` with ``labels``. Refuses
    ``2 n > N`` naming ``n``."""
    data = _check_rows(data)
    _check_labels_rows(labels, data.shape[0])
    ia, ib = split_indices(data.shape[0], n, seed, parts=2)
    if labels is None:
        return data[ia], data[ib]
    return (data[ia], _take(labels, ia)), (data[ib], _take(labels, ib))


def _check_rows(data) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(np.asarray(data))
    if data.ndim < 1 or data.shape[0] == 0:
        raise ValueError(f"data: expected a non-empty (N, ...) array, got shape {tuple(data.shape)}")
    return data


def _take(labels, idx):
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    return t[idx]


def _check_labels_rows(labels, n: int) -> None:
    """Labels go with the rows of the data: one per row."""
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} labels, one per row of data, got {len(labels)}")


def data_fingerprint(data: torch.Tensor) -> str:
    """A short SHA-1 of the float32 bytes and shape of ``data`` (to recognise a training set)."""
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"data: expected a torch.Tensor, got {type(data).__name__}")
    if data.is_complex() or data.is_meta:
        raise ValueError(f"data: expected real values with data, got a {data.dtype} tensor on {data.device}")
    a = np.ascontiguousarray(data.detach().to("cpu", torch.float32).numpy())
    h = hashlib.sha1(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]
