r"""Readers of files: a user's ``.npy``/``.npz`` array or folder of images, MNIST-format IDX
files and CIFAR-10 python batches, and the choice of reader for a path given as a data spec.

Each reader returns ``(data, labels or None, info)`` with images ``(N, C, H, W)`` float32 scaled
to ``[-1, 1]`` (see :func:`~gaussdiff.to_unit_range`) and vectors ``(N, d)`` as given. A file
that is missing, a folder, unreadable, empty, truncated, corrupt or not in the expected format is
refused with a one-line ``ValueError`` that names it (every parse of a file's bytes goes through
one helper, ``_reading``), never an error of zipfile, gzip, pickle, PIL or numpy.
"""

from __future__ import annotations

import gzip
import math
import pickle
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch

from .transforms import to_unit_range

__all__ = ["read_array", "read_image_folder", "read_idx", "read_mnist_idx", "read_cifar10"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")
_NPY = "a NumPy .npy file"
_NPZ = "a NumPy .npz archive"
_CIFAR = "a CIFAR-10 python batch"
_NPY_HINT = "; write it with numpy.save (object arrays and pickles are not read)"
_NPZ_HINT = "; write it with numpy.savez"


@contextmanager
def _reading(path, what: str, hint: str = ""):
    """Parse ``path`` as ``what`` inside this block: any error the parser raises (zipfile, gzip,
    zlib, pickle, PIL, numpy, the OS: a bad, truncated or unreadable file can raise nearly any
    type) becomes one ``ValueError`` that names the file, says what is wrong and ends with
    ``hint``. Only third-party parsing belongs in the block; the readers' own checks raise
    their named errors outside it."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, IsADirectoryError):
            why = "it is a folder, not a file"
        elif isinstance(exc, FileNotFoundError):
            why = "it does not exist (a broken link?)"
        elif isinstance(exc, PermissionError):
            why = "permission denied"
        else:
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, whatever the parser said
            why = f"it is corrupt, truncated or not {what} ({detail})"
        raise ValueError(f"data: cannot read {path} as {what}: {why}{hint}") from exc


def _checked(a: np.ndarray, source) -> np.ndarray:
    """``a`` when it holds data (no size 0) whose floats are finite in float32, else a
    ``ValueError`` naming ``source`` (a damaged file can hold either)."""
    if 0 in a.shape:
        raise ValueError(f"data: {source} holds no data (shape {a.shape})")
    if a.dtype.kind == "f":
        with np.errstate(over="ignore"):
            finite = bool(np.isfinite(a.astype(np.float32, copy=False)).all())
        if not finite:
            raise ValueError(f"data: {source} holds NaN or infinite values (or values beyond float32's range)")
    return a


def _images_tensor(a: np.ndarray, source, *, channels_last_ok: bool = True) -> tuple[torch.Tensor, str]:
    """``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` array -> ``(N, C, H, W)`` in [-1, 1]."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and channels_last_ok and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = np.moveaxis(a, -1, 1)
    if a.ndim != 4:
        raise ValueError(f"data: images need shape (N, H, W), (N, C, H, W) or (N, H, W, C), got {a.shape} in {source}")
    scaled, how = to_unit_range(_checked(a, source))
    return torch.from_numpy(np.ascontiguousarray(_checked(scaled, source))), how


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
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"data: {path} is not a .npy or .npz file")
    npz = path.suffix == ".npz"
    with ExitStack() as files:  # np.load leaves the file open when a damaged .npz fails to open
        with _reading(path, _NPZ if npz else _NPY, _NPZ_HINT if npz else _NPY_HINT):
            arr = np.load(files.enter_context(open(path, "rb")), allow_pickle=False)
        if npz and isinstance(arr, np.ndarray):
            raise ValueError(f"data: {path} holds one .npy array, not an .npz archive; rename it to .npy")
        if not npz and not isinstance(arr, np.ndarray):
            raise ValueError(f"data: {path} is an .npz archive, not one .npy array; rename it to .npz")
        arr, labels = _npz_arrays(path, arr, key, labels_key) if npz else (arr, None)
    info = {"name": path.name, "source": str(path)}
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise ValueError(f"data: {path} must hold an (N, ...) array with N >= 1, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"data: {path} holds a non-numeric array of dtype {arr.dtype} (expected bool, integer or float)"
        )
    if arr.ndim == 2:
        x = torch.as_tensor(np.asarray(_checked(arr, path), dtype=np.float32))
        info.update(kind="vector", scaling="as given")
    else:
        x, how = _images_tensor(arr, path)
        info.update(kind="image", scaling=how)
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels: {labels.shape[0]} labels for {x.shape[0]} rows in {path}")
    return x, labels, info


def _npz_arrays(path: Path, z, key: str | None, labels_key: str | None):
    """``(data, labels or None)`` from the open archive ``z``, by name or by the usual names."""
    names = list(z.files)
    if key is None:
        key = next(
            (k for k in ("x", "data", "images", "X", "arr_0") if k in names),
            names[0] if len(names) == 1 else None,
        )
    if key is None or key not in names:
        raise ValueError(f"key: {path} holds arrays {names}; name the data with '{path}:key=NAME'")
    arr, labels = _npz_array(path, z, key), None
    lk = labels_key or next((k for k in ("y", "labels", "targets") if k in names), None)
    if lk is not None:
        if lk not in names:
            raise ValueError(f"labels_key: {path} has no array {lk!r} (it holds {names})")
        labels = _npz_array(path, z, lk)
        if labels.dtype.kind not in "biuf" or labels.ndim == 0:
            raise ValueError(
                f"labels: {lk!r} in {path} is of dtype {labels.dtype} and shape {labels.shape}; "
                "labels must be an (N,) array of numbers"
            )
        labels = torch.as_tensor(labels)
    return arr, labels


def _npz_array(path: Path, z, name: str) -> np.ndarray:
    """The array ``name`` of the open archive ``z`` (its member is read, and checked, only now)."""
    with _reading(path, f"{_NPZ} (array {name!r})", _NPZ_HINT):
        a = z[name]
    if not isinstance(a, np.ndarray):
        raise ValueError(f"data: {name!r} in {path} is not a .npy array; write the archive with numpy.savez")
    return a


def _image(path: Path, mode: str | None = None):
    """Open one image file and close it again: ``(mode, (width, height), pixels)``, the first two
    from its header, ``pixels`` ``np.asarray(image.convert(mode), uint8)`` or None without ``mode``."""
    from PIL import Image

    with _reading(path, "an image", "; remove it from the folder or replace it"), Image.open(path) as im:
        return im.mode, im.size, None if mode is None else np.asarray(im.convert(mode), dtype=np.uint8)


def read_image_folder(folder, *, mode: str | None = None):
    """Every image under ``folder`` (sorted, recursively): ``(data (N, C, H, W), labels, info)``.

    The images are the files whose suffix is one of ``.png .jpg .jpeg .bmp .gif .tif .tiff
    .pgm .ppm`` (any case); other files (``.DS_Store``, ``README.txt``, ``labels.csv``) are
    skipped, and a file with an image suffix that is not a readable image (empty, truncated,
    corrupt, a broken link) is refused by name. Each file is opened and closed before the next,
    so a folder may hold more files than the open-file limit. All images must have one size.
    ``mode`` is ``"L"`` (grey) or ``"RGB"``; by default grey when every image is grey (read from
    the headers in a first pass). With one level of sub-folders (``folder/CLASS/img.png``) the
    labels are class indices in sorted folder-name order (``info["classes"]``), else None."""
    folder = Path(folder)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode: must be 'L' or 'RGB', got {mode!r}")
    if not folder.is_dir():
        raise ValueError(f"data: {folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise ValueError(f"data: no image files ({', '.join(_IMAGE_SUFFIXES)}) under {folder}")
    if mode is None:
        mode = "L" if all(_image(p)[0] in ("1", "L", "LA") for p in files) else "RGB"
    arrays, size0 = [], None
    for p in files:
        _, size, a = _image(p, mode)
        size0 = size0 or size
        if size != size0:
            raise ValueError(
                f"data: {p} is {size[0]}x{size[1]} but {files[0]} is "
                f"{size0[0]}x{size0[1]}; all images in a folder must have one size"
            )
        arrays.append(a)
    a = np.stack(arrays)
    x, how = _images_tensor(a, folder)
    parents = sorted({p.parent for p in files})
    labels, classes = None, None
    if all(p.parent.parent == folder for p in files) and len(parents) >= 1 and parents[0] != folder:
        classes = [p.name for p in parents]
        labels = torch.tensor([classes.index(p.parent.name) for p in files])
    info = {"name": folder.name, "source": str(folder), "kind": "image", "scaling": how, "files": len(files)}
    if classes:
        info["classes"] = classes
    return x, labels, info


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format; ``.gz`` allowed): magic ``0 0 TYPE NDIM``, then
    ``NDIM`` big-endian uint32 sizes, then the data. A wrong magic number, a header or data cut
    short, or a bad ``.gz`` is refused naming the file."""
    path = Path(path)
    gz = path.suffix == ".gz"
    what = "a gzip-compressed IDX file" if gz else "an IDX file"
    with _reading(path, what), (gzip.open if gz else open)(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise ValueError(f"data: {path} is empty, not an IDX file")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        hint = "; it is gzip-compressed: name it with .gz" if raw[:2] == b"\x1f\x8b" else ""
        raise ValueError(
            f"data: {path} is not an IDX file (bad magic number {raw[:4].hex(' ')}, expected 00 00 TYPE "
            f"NDIM with TYPE one of {' '.join(f'{t:02x}' for t in _IDX_DTYPES)}){hint}"
        )
    ndim = raw[3]
    body = 4 + 4 * ndim
    if len(raw) < body:
        raise ValueError(
            f"data: {path} is truncated: its header needs {body} bytes for {ndim} sizes, the file has {len(raw)}"
        )
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    dt = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(int(n) for n in dims)  # exact: a damaged header may announce 2**32 ** NDIM values
    if len(raw) - body < count * dt.itemsize:
        shape = tuple(int(n) for n in dims) if ndim <= 8 else f"of {ndim} sizes"
        raise ValueError(
            f"data: {path} is truncated: its header announces {count} values of shape {shape} "
            f"({count * dt.itemsize} bytes), the file holds {len(raw) - body} after the header"
        )
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
        for part in ("train", "t10k") if split == "all" else ("train",) if split == "train" else ("t10k",):
            img = _find(path, f"{part}-images-idx3-ubyte")
            if img is not None:
                pairs.append((img, _find(path, f"{part}-labels-idx1-ubyte")))
        if not pairs:
            raise ValueError(
                f"data: no {split} MNIST IDX files (train-images-idx3-ubyte[.gz], "
                f"t10k-images-idx3-ubyte[.gz]) in {path}"
            )
    images, labels = [], []
    for img, lab in pairs:
        a = read_idx(img)
        if a.ndim != 3:
            raise ValueError(f"data: {img} holds shape {a.shape}, expected images (N, H, W)")
        images.append(_checked(a, img))
        if lab is not None:
            lb = read_idx(lab)
            if lb.shape != (a.shape[0],):
                raise ValueError(f"labels: {lab} has shape {lb.shape} for {a.shape[0]} images")
            labels.append(lb)
    x, how = _images_tensor(np.concatenate(images), path)
    y = torch.as_tensor(np.concatenate(labels)).long() if len(labels) == len(images) else None
    return x, y, {"name": path.name, "source": str(path), "kind": "image", "scaling": how}


# The only globals a CIFAR-10 batch (a dict of bytes, lists and one uint8 array) needs, in the
# spellings of numpy 1 and 2 and of pickle protocols 2 to 5. Anything else in a pickle would run
# code on loading; it is refused instead (a file called data_batch_1 is not trusted).
_CIFAR_GLOBALS = frozenset(
    [("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")]
    + [
        (f"numpy.{core}.{mod}", fn)
        for core in ("core", "_core")
        for mod, fn in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    ]
)


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds; any other global (a callable
    that a crafted pickle would run) is refused before it is looked up."""

    def find_class(self, module, name):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds; not loaded")
        return super().find_class(module, name)


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
        with _reading(f, _CIFAR), open(f, "rb") as fh:
            d = _CifarUnpickler(fh, encoding="bytes").load()
        if not isinstance(d, dict) or b"data" not in d:
            raise ValueError(f"data: {f} is not a CIFAR-10 python batch (no b'data' entry)")
        with _reading(f, _CIFAR):
            a = np.asarray(d[b"data"], dtype=np.uint8)
            y = np.asarray(d.get(b"labels", d.get(b"fine_labels", [])), dtype=np.int64)
        if a.ndim != 2 or a.shape[1] != 3072:
            raise ValueError(f"data: {f} has data of shape {a.shape}, expected (n, 3072)")
        xs.append(a.reshape(-1, 3, 32, 32))
        ys.append(y)
    x, how = _images_tensor(np.concatenate(xs), path, channels_last_ok=False)
    y = np.concatenate(ys)
    return (
        x,
        torch.as_tensor(y) if len(y) == x.shape[0] else None,
        {"name": path.name, "source": str(path), "kind": "image", "scaling": how},
    )


def _load_path(path: Path, opts: dict):
    """Read a local path given as a spec with the reader its name or contents call for; pops the
    options that reader takes (``split``, ``mode``, ``key``, ``labels``)."""
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
    raise ValueError(
        f"data: do not know how to read {path} (expected .npy, .npz, a folder of "
        "images, MNIST IDX files or CIFAR-10 python batches)"
    )
