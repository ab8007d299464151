"""Readers of user files: every corrupt, truncated, misnamed or unreadable file is refused with a
``ValueError`` that names it (CLI: one ``error:`` line, exit code 2), never a traceback from
zipfile, gzip, pickle, PIL, numpy or the OS; and an image folder of any size is read whatever
the open-file limit (issue 16, problem 5)."""

import functools
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import gaussdiff as gd
from gaussdiff.cli import main

_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- valid files, as bytes ----------------------------------------------------------------------------


def _npy(a, **kw):
    buf = io.BytesIO()
    np.save(buf, a, **kw)
    return buf.getvalue()


def _npz(compressed=False, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _idx(a, gz=False):
    raw = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def _png(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@functools.cache
def _valid():
    """``{file name: bytes}`` of one small valid file of every format the readers take."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    return {
        "vectors.npy": _npy(rng.normal(size=(5, 3))),
        "images.npy": _npy(rng.integers(0, 256, size=(4, 6, 6), dtype=np.uint8)),
        "pair.npz": _npz(x=rng.normal(size=(4, 2)), y=np.arange(4)),
        "packed.npz": _npz(compressed=True, images=rng.integers(0, 256, size=(3, 5, 5), dtype=np.uint8)),
        "train-images-idx3-ubyte": _idx(imgs),
        "train-images-idx3-ubyte.gz": _idx(imgs, gz=True),
        "data_batch_1": pickle.dumps(
            {b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), b"labels": [3, 7]}, protocol=2
        ),
    }


_NAMES = sorted(_valid())


def _write(folder, name, raw):
    path = folder / name
    path.write_bytes(raw)
    return path


def _refused(path, load=gd.load_dataset, arg=None):
    """``load(arg or path)`` raises a ValueError whose message names ``path``; returns it."""
    with pytest.raises(ValueError) as err:
        load(str(path) if arg is None else arg)
    assert path.name in str(err.value), f"{path.name} not named in: {err.value}"
    assert "\n" not in str(err.value)
    return str(err.value)


def test_valid_files_read(tmp_path):
    """The fixtures themselves are good: each reads (so that every failure below is the damage's)."""
    for name, raw in _valid().items():
        x, _, info = gd.load_dataset(str(_write(tmp_path, name, raw)))
        assert x.shape[0] >= 2 and torch.isfinite(x).all(), name


# -- truncated and damaged files of every format ------------------------------------------------------


@pytest.mark.parametrize("name", _NAMES)
@pytest.mark.parametrize("where", ["empty", "1 byte", "header", "half", "all but 1"])
def test_truncated_file_is_refused_by_name(tmp_path, name, where):
    raw = _valid()[name]
    keep = {"empty": 0, "1 byte": 1, "header": 12, "half": len(raw) // 2, "all but 1": len(raw) - 1}[where]
    _refused(_write(tmp_path, name, raw[:keep]))


@_FAST
@given(name=st.sampled_from(_NAMES), frac=st.floats(0, 1, exclude_max=True))
def test_truncated_anywhere_is_refused_by_name(tmp_path, name, frac):
    raw = _valid()[name]
    _refused(_write(tmp_path, name, raw[: int(frac * len(raw))]))


@_FAST
@given(name=st.sampled_from(_NAMES), data=st.data())
def test_damaged_file_reads_or_is_refused_by_name(tmp_path, name, data):
    """Bytes changed anywhere: either a result (the damage may be in the pixels) or a named ValueError."""
    raw = bytearray(_valid()[name])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255).filter(lambda b, old=raw[i]: b != old))
    path = _write(tmp_path, name, bytes(raw))
    try:
        x, _, _ = gd.load_dataset(str(path))
    except ValueError as exc:
        assert name in str(exc), str(exc)
    else:
        assert x.ndim >= 2 and x.dtype == torch.float32


@pytest.mark.parametrize("name", _NAMES)
@pytest.mark.parametrize(
    "content",
    [b"", b"hello, world\n", bytes(range(256)) * 4, "png", "pickle"],
    ids=["empty", "text", "noise", "png", "pickle"],
)
def test_wrong_contents_are_refused_by_name(tmp_path, name, content):
    if content == "png":
        content = _png(np.zeros((4, 4), np.uint8))
    elif content == "pickle":
        content = pickle.dumps({"not": "data"})
    _refused(_write(tmp_path, name, content))


@pytest.mark.parametrize("name", _NAMES)
def test_folder_where_a_file_is_expected(tmp_path, name):
    """A folder named like the file: given itself (.npy, .npz) or found in the folder given."""
    path = tmp_path / "data" / name
    path.mkdir(parents=True)
    if name.endswith((".npy", ".npz")):
        assert "folder" in _refused(path, gd.read_array)
    else:
        assert "folder" in _refused(path, arg=str(path.parent))


def test_missing_file_is_refused_by_name(tmp_path):
    for read, name in [(gd.read_array, "gone.npy"), (gd.read_idx, "gone-idx3-ubyte"), (gd.read_cifar10, "gone")]:
        path = tmp_path / name
        with pytest.raises(ValueError, match=name):
            read(path)


# -- .npy / .npz ----------------------------------------------------------------------------------------


def test_npy_pickles_and_object_arrays_are_refused(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[:] = [{"a": 1}, None]
    msg = _refused(_write(tmp_path, "objects.npy", _npy(obj, allow_pickle=True)))
    assert "numpy.save" in msg
    _refused(_write(tmp_path, "pickled.npy", pickle.dumps(np.zeros((3, 2)))))


def test_npy_and_npz_swapped(tmp_path):
    msg = _refused(_write(tmp_path, "archive.npy", _valid()["pair.npz"]))
    assert ".npz" in msg
    msg = _refused(_write(tmp_path, "single.npz", _valid()["vectors.npy"]))
    assert ".npy" in msg


def test_npz_with_a_member_that_is_not_an_array(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", b"not an array")
        z.writestr("README", b"hello")
    _refused(_write(tmp_path, "odd.npz", buf.getvalue()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", _valid()["vectors.npy"])
        z.writestr("y", b"not an array")
    path = _write(tmp_path, "odd_labels.npz", buf.getvalue())
    _refused(path, arg=f"{path}:labels=y")


@pytest.mark.parametrize("y", [np.array(["a", "b", "c", "d"]), np.array(3)], ids=["strings", "scalar"])
def test_npz_labels_that_are_not_labels(tmp_path, y):
    path = _write(tmp_path, "labelled.npz", _npz(x=np.zeros((4, 2)), y=y))
    assert "labels" in _refused(path)


def test_npz_member_with_bad_crc(tmp_path):
    raw = bytearray(_valid()["pair.npz"])
    i = raw.index(b"\x93NUMPY") + 130  # inside the first member's data, stored uncompressed
    raw[i] ^= 0xFF
    _refused(_write(tmp_path, "crc.npz", bytes(raw)))


def test_npy_header_claims_more_data(tmp_path):
    raw = _valid()["vectors.npy"].replace(b"(5, 3)", b"(9, 3)")
    msg = _refused(_write(tmp_path, "short.npy", raw))
    assert "truncated" in msg or "corrupt" in msg


# -- MNIST IDX --------------------------------------------------------------------------------------------


def test_idx_wrong_magic_and_header(tmp_path):
    good = _valid()["train-images-idx3-ubyte"]
    for name, raw, what in [
        ("magic-idx3-ubyte", b"\x01\x02" + good[2:], "not an IDX file"),
        ("type-idx3-ubyte", good[:2] + b"\x07" + good[3:], "not an IDX file"),
        ("empty-idx3-ubyte", b"", "empty"),
        ("head-idx3-ubyte", good[:4] + good[4:10], "truncated"),
        ("dims-idx3-ubyte", good[:3] + b"\xff" + good[4:], "truncated"),
        ("zipped-idx3-ubyte", gzip.compress(good), ".gz"),
    ]:
        path = _write(tmp_path, name, raw)
        assert what in _refused(path, gd.read_idx)
        _refused(path)


def test_idx_huge_sizes_are_refused_without_allocating(tmp_path):
    good = _valid()["train-images-idx3-ubyte"]
    raw = good[:4] + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + good[16:]
    assert "truncated" in _refused(_write(tmp_path, "huge-idx3-ubyte", raw), gd.read_idx)


def test_idx_bad_gzip(tmp_path):
    good = _valid()["train-images-idx3-ubyte"]
    msg = _refused(_write(tmp_path, "train-images-idx3-ubyte.gz", good), gd.read_idx)
    assert "gzip" in msg
    _refused(tmp_path / "train-images-idx3-ubyte.gz")
    _refused(tmp_path / "train-images-idx3-ubyte.gz", arg=str(tmp_path))  # the folder reader


def test_idx_bad_labels_file_in_a_folder(tmp_path):
    _write(tmp_path, "train-images-idx3-ubyte", _valid()["train-images-idx3-ubyte"])
    path = _write(tmp_path, "train-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00")
    _refused(path, arg=str(tmp_path))


# -- CIFAR-10 python batches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        {b"data": "a string", b"labels": [1]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": ["a", "b"]},
        {b"data": [[1, 2], [3]], b"labels": [1, 2]},
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": object()},
    ],
    ids=["data-str", "labels-str", "ragged", "labels-object"],
)
def test_cifar_batch_with_bad_contents(tmp_path, content):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    path = _write(folder, "data_batch_1", pickle.dumps(content))
    _refused(path)
    _refused(path, arg=str(folder))


def test_cifar_folder_with_a_truncated_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _write(folder, "data_batch_1", _valid()["data_batch_1"])
    bad = _write(folder, "data_batch_2", _valid()["data_batch_1"][:-100])
    _refused(bad, arg=str(folder))


class _Payload:
    """What a crafted pickle does on loading: writes a file (here harmlessly)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_of_every_pickle_protocol_reads_the_same(tmp_path, protocol):
    """The restricted unpickler takes every spelling numpy and pickle use for a uint8 array."""
    rng = np.random.default_rng(3)
    data, labels = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8), [1, 0, 9]
    raw = pickle.dumps({b"data": data, b"labels": labels, b"filenames": [b"a", b"b", b"c"]}, protocol=protocol)
    x, y, _ = gd.read_cifar10(_write(tmp_path, "data_batch_1", raw))
    assert torch.equal(x, gd.read_cifar10(_write(tmp_path, "test_batch", pickle.dumps({b"data": data}, 2)))[0])
    assert torch.equal(y, torch.tensor(labels))
    assert torch.equal(x, torch.from_numpy(gd.to_unit_range(data.reshape(3, 3, 32, 32))[0]))


@pytest.mark.parametrize("where", ["top", "inside-dict"])
def test_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path, where):
    """A pickle is a program: one that asks for any callable a CIFAR batch does not hold is refused
    by name before it runs (the payload's file is never created)."""
    target = tmp_path / "pwned"
    payload = _Payload(target)
    content = payload if where == "top" else {b"data": np.zeros((1, 3072), np.uint8), b"labels": payload}
    path = _write(tmp_path, "data_batch_1", pickle.dumps(content, protocol=2))
    msg = _refused(path)
    assert "io.open" in msg or "builtins.open" in msg, msg
    assert not target.exists()


# -- folders of images ----------------------------------------------------------------------------------


def _image_folder(folder, n=4, size=5):
    rng = np.random.default_rng(1)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image", "truncated", "header only"],
    ids=["empty", "text", "truncated", "header-only"],
)
def test_image_folder_with_a_bad_image_file(tmp_path, content):
    folder = _image_folder(tmp_path / "imgs")
    good = (folder / "000.png").read_bytes()
    content = {"truncated": good[: len(good) // 2], "header only": good[:40]}.get(content, content)
    bad = _write(folder, "bad.png", content)
    msg = _refused(bad, arg=str(folder))
    assert "image" in msg
    _refused(bad, gd.read_image_folder, folder)
    _refused(bad, lambda f: gd.read_image_folder(f, mode="RGB"), folder)


def test_image_folder_skips_files_that_are_not_images_by_suffix(tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    x, y, info = gd.load_dataset(str(folder))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00" * 10)
    (folder / "README.txt").write_text("my images")
    (folder / "labels.csv").write_text("0,1\n")
    x2, y2, info2 = gd.load_dataset(str(folder))
    assert torch.equal(x, x2) and y is None and y2 is None and info2["files"] == info["files"] == 4


def test_image_folder_broken_link(tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    _refused(folder / "gone.png", arg=str(folder))


@_FAST
@given(frac=st.floats(0, 1, exclude_max=True))
def test_truncated_png_reads_the_same_or_is_refused(tmp_path, frac):
    """PNG keeps its pixels before its end chunk: a file cut after them may read (identically)."""
    folder = tmp_path / "imgs"
    if not folder.exists():
        _image_folder(folder)
    x, _, _ = gd.read_image_folder(folder)
    raw = (folder / "001.png").read_bytes()
    _write(folder, "001.png", raw[: int(frac * len(raw))])
    try:
        x2, _, _ = gd.read_image_folder(folder)
    except ValueError as exc:
        assert "001.png" in str(exc), str(exc)
    else:
        assert torch.equal(x, x2)
    finally:
        _write(folder, "001.png", raw)


def test_image_folder_larger_than_the_open_file_limit(tmp_path):
    """300 images under a limit of (open now + 40) files: each file is closed before the next opens."""
    folder = _image_folder(tmp_path / "many", n=300, size=3)
    code = (
        "import os, resource, sys, gaussdiff as gd\n"
        "n = len(os.listdir('/proc/self/fd')) if os.path.isdir('/proc/self/fd') else 64\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (n + 40, hard))\n"
        "x, _, info = gd.load_dataset(sys.argv[1])\n"
        "assert tuple(x.shape) == (300, 1, 3, 3), x.shape\n"
        "x, _, info = gd.read_image_folder(sys.argv[1], mode='RGB')\n"
        "assert tuple(x.shape) == (300, 3, 3, 3), x.shape\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# -- the command line -----------------------------------------------------------------------------------


def _bad_files(tmp_path):
    """``(path to give --data, file the message must name)`` for one bad file of each reader."""
    v = _valid()
    folder = _image_folder(tmp_path / "imgs")
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    out = [
        (_write(tmp_path, "cut.npy", v["vectors.npy"][:-7]),) * 2,
        (_write(tmp_path, "cut.npz", v["pair.npz"][:-7]),) * 2,
        (folder, _write(folder, "notes.png", b"my notes")),
        (cifar, _write(cifar, "data_batch_1", v["data_batch_1"][:50])),
        (mnist, _write(mnist, "train-images-idx3-ubyte.gz", v["train-images-idx3-ubyte"])),
    ]
    return out


def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    for given_path, bad in _bad_files(tmp_path):
        outdir = tmp_path / f"out-{bad.name}"
        code = main(["train", "--data", str(given_path), "--outdir", str(outdir), "--no-progress"])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2, err
        assert len(lines) == 1 and "error:" in lines[0] and bad.name in lines[0], err
        assert "Traceback" not in err
