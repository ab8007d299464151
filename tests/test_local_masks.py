"""Data-driven locality masks (gaussdiff.local.masks): the masks against a direct numpy
computation of the Wiener filter, the denoiser against a brute-force loop over pixels and
training images, the identities (all-ones mask = empirical, identity mask = per-pixel marginal)
and bad inputs."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from gaussdiff.denoisers import GaussianDenoiser
from gaussdiff.empirical import EmpiricalDenoiser
from gaussdiff.local.masks import WienerMaskDenoiser, wiener_masks

SHAPE = (2, 3, 3)  # (C, H, W): d = 18
D = 18


def _data(rng, n=40):
    """Images with local correlations and a full-rank covariance: white noise mixed by a
    random upper-triangular map with a dominant diagonal, plus an offset."""
    mix = np.eye(D) * 2.0 + np.triu(rng.normal(size=(D, D)), 1) * np.exp(-np.abs(np.subtract.outer(range(D), range(D))))
    return torch.from_numpy((rng.normal(size=(n, D)) @ mix + 0.5).reshape(n, *SHAPE))


def _spread(X):
    return float(X.reshape(len(X), -1).std(0).mean())


# -- references written from the formula, independent of the module ---------------------------
def np_mask(X, sigma, threshold):
    """(W1)-(W2) from a linear solve: W = (Sigma + s^2 I)^-1 Sigma (= Sigma (Sigma + s^2 I)^-1, the
    two commute), rows divided by their diagonal, one global threshold."""
    Xf = X.reshape(len(X), -1).numpy()
    C = np.cov(Xf, rowvar=False, ddof=1)
    W = np.linalg.solve(C + sigma**2 * np.eye(len(C)), C)
    A = W / np.diag(W)[:, None]
    if threshold == 0:
        return A
    return (np.abs(A) >= threshold * np.abs(A).max()).astype(float)


def brute_force(X, x, sigma, M, temperature=1.0):
    """(W3) with loops over queries, output entries and training images (float64)."""
    Xf = X.reshape(len(X), -1).numpy()
    xf = x.reshape(len(x), -1).numpy()
    out = np.empty_like(xf)
    for b in range(len(xf)):
        for m in range(xf.shape[1]):
            logits = np.empty(len(Xf))
            for i in range(len(Xf)):
                logits[i] = -np.sum(M[:, m] * (xf[b] - Xf[i]) ** 2) / (2 * sigma**2 * temperature)
            w = np.exp(logits - logsumexp(logits))  # per-pixel log-sum-exp
            out[b, m] = np.sum(w * Xf[:, m])
    return out.reshape(x.shape)


# -- the masks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.1])
def test_masks_match_direct_computation(rng, threshold):
    X = _data(rng)
    den = WienerMaskDenoiser(X, threshold=threshold)
    for sigma in (0.05, 0.5, 2.0, 20.0):
        ref = np_mask(X, sigma, threshold)
        got = den.mask(sigma).numpy()
        if threshold == 0:  # a linear solve against an eigendecomposition: cond(Sigma + s^2 I) * eps
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
        else:
            A = np_mask(X, sigma, 0.0)
            close = np.abs(np.abs(A) - threshold * np.abs(A).max()) < 1e-9  # on the edge: rounding decides
            assert not close.any()
            np.testing.assert_array_equal(got, ref)
        C = np.cov(X.reshape(len(X), -1).numpy(), rowvar=False, ddof=1)
        W = np.linalg.solve(C + sigma**2 * np.eye(D), C)
        np.testing.assert_allclose(den.wiener_filter(sigma).numpy(), W, rtol=0, atol=1e-10)
        np.testing.assert_allclose(wiener_masks(torch.from_numpy(C), sigma, threshold=threshold).numpy(), got)
    G = GaussianDenoiser.fit(X, unbiased=True)  # (W1) is the Gaussian denoiser's Jacobian (G2)
    np.testing.assert_allclose(den.wiener_filter(0.5).numpy(), G.jacobian(0.5).numpy(), rtol=0, atol=1e-10)


def test_mask_limits(rng):
    """sigma -> 0, full-rank covariance: W -> I, each entry's mask is itself. sigma -> inf:
    W -> Sigma / sigma^2, the mask of the covariance's normalised rows, exact at 1e150."""
    X = _data(rng)
    den = WienerMaskDenoiser(X)
    np.testing.assert_array_equal(den.mask(1e-4 * _spread(X)).numpy(), np.eye(D))
    C = np.cov(X.reshape(len(X), -1).numpy(), rowvar=False, ddof=1)
    A = C / np.diag(C)[:, None]
    ref = (np.abs(A) >= 0.02 * np.abs(A).max()).astype(float)
    for big in (1e4, 1e150):
        np.testing.assert_array_equal(den.mask(big).numpy(), ref)
    w0 = WienerMaskDenoiser(X, threshold=0.0)
    np.testing.assert_allclose(w0.mask(1e150).numpy(), A, rtol=0, atol=1e-12)


def test_zero_variance_pixel_is_in_no_mask_and_returns_its_value(rng):
    X = _data(rng)
    X[:, 1, 2, 0] = -1.0  # a border pixel that never changes (as MNIST's corners)
    den = WienerMaskDenoiser(X)
    k = 1 * 9 + 2 * 3 + 0
    for sigma in (0.1, 1.0, 10.0):
        M = den.mask(sigma).numpy()
        assert not M[k].any() and not M[:, k].any()
        x = X[:3] + torch.from_numpy(rng.normal(size=(3, *SHAPE)))
        assert torch.all(den(x, sigma)[:, 1, 2, 0] == -1.0)


# -- the denoiser ----------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,temperature", [(0.02, 1.0), (0.1, 0.5), (0.0, 1.0)])
def test_matches_brute_force(rng, threshold, temperature):
    """Both backends, float64, 1e-10, from 1e-3 to 1e3 times the data spread (the per-pixel
    log-sum-exp: one maximum per image or batch would underflow at the small end)."""
    X = _data(rng)
    dens = [
        WienerMaskDenoiser(X, threshold=threshold, temperature=temperature, chunk_size=7, backend=b)
        for b in ("torch", "numba")
    ]
    spread = _spread(X)
    for rel in (1e-3, 0.1, 0.5, 2.0, 1e3):
        sigma = rel * spread
        x = X[:3] + sigma * torch.from_numpy(rng.normal(size=(3, *SHAPE)))
        ref = brute_force(X, x, sigma, np_mask(X, sigma, threshold), temperature)
        for den in dens:
            np.testing.assert_allclose(den(x, sigma).numpy(), ref, rtol=0, atol=1e-10 * max(1.0, np.abs(ref).max()))


def test_numba_kernel_compiled_and_interpreted_agree(rng):
    """The kernel three ways: compiled, its Python source (``py_func``) and the brute force."""
    from gaussdiff.local.masks import _compressed_columns, _masked_posterior

    X = _data(rng, n=12)
    M = WienerMaskDenoiser(X, threshold=0.05).mask(0.8)
    x = X[:2] + 0.8 * torch.from_numpy(rng.normal(size=(2, *SHAPE)))
    xf, Xf = x.reshape(2, -1).numpy().copy(), X.reshape(12, -1).numpy().copy()
    args = (xf, Xf, *_compressed_columns(M), 1.0 / (2 * 0.8**2))
    compiled, interpreted = np.empty((2, D)), np.empty((2, D))
    _masked_posterior(*args, compiled)
    _masked_posterior.py_func(*args, interpreted)
    ref = brute_force(X, x, 0.8, M.numpy()).reshape(2, -1)
    np.testing.assert_allclose(compiled, ref, rtol=0, atol=1e-12)  # same sums, other order
    np.testing.assert_allclose(interpreted, compiled, rtol=0, atol=1e-13)


def test_all_ones_mask_is_the_empirical_denoiser(rng):
    X = _data(rng)
    ones = WienerMaskDenoiser(X, mask=torch.ones(D, D))  # a dense mask: the torch path
    ones_numba = WienerMaskDenoiser(X, mask=torch.ones(D, D), backend="numba")
    emp = EmpiricalDenoiser(X)
    spread = _spread(X)
    for rel in (1e-3, 1e-2, 0.3, 3.0, 1e3):
        sigma = rel * spread
        x = X[:4] + sigma * torch.from_numpy(rng.normal(size=(4, *SHAPE)))
        # the same sums in another order (a GEMM here, the empirical kernels there): 1e-12 on
        # outputs of order 5 is a few roundings
        np.testing.assert_allclose(ones(x, sigma).numpy(), emp(x, sigma).numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ones_numba(x, sigma).numpy(), emp(x, sigma).numpy(), rtol=0, atol=1e-12)


def test_identity_mask_is_the_per_pixel_marginal_posterior(rng):
    """Each entry is the empirical denoiser of the training set's values at that entry alone."""
    X = _data(rng)
    den = WienerMaskDenoiser(X, mask=torch.eye(D))  # a sparse mask: the numba path
    den_torch = WienerMaskDenoiser(X, mask=torch.eye(D), backend="torch")
    Xf = X.reshape(len(X), -1)
    marginals = [EmpiricalDenoiser(Xf[:, m : m + 1], backend="torch") for m in range(D)]
    sig = torch.tensor([0.05, 0.7, 5.0], dtype=torch.float64)
    x = X[:3] + sig[:, None, None, None] * torch.from_numpy(rng.normal(size=(3, *SHAPE)))
    xf = x.reshape(3, -1)
    for got in (den(x, sig).reshape(3, -1), den_torch(x, sig).reshape(3, -1)):
        for m in range(D):
            ref = marginals[m](xf[:, m : m + 1], sig)[:, 0]
            np.testing.assert_allclose(got[:, m].numpy(), ref.numpy(), rtol=0, atol=1e-12)


def test_per_row_sigma_chunks_and_float32(rng):
    X = _data(rng)
    den = WienerMaskDenoiser(X)
    sig = torch.tensor([0.1, 2.0, 0.1, 0.7], dtype=torch.float64)
    x = X[:4] + sig[:, None, None, None] * torch.from_numpy(rng.normal(size=(4, *SHAPE)))
    out = den(x, sig)
    for b in range(4):
        np.testing.assert_array_equal(out[b : b + 1].numpy(), den(x[b : b + 1], float(sig[b])).numpy())
    one = WienerMaskDenoiser(X, chunk_size=1, backend="torch")(x, sig)
    many = WienerMaskDenoiser(X, chunk_size=1000, backend="torch")(x, sig)
    np.testing.assert_allclose(one.numpy(), many.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(one.numpy(), out.numpy(), rtol=0, atol=1e-12)
    # float32 data and queries: the same float64 computation, rounded once at the end; the masks
    # come from the float32-rounded data's covariance (held to the float64 ones here)
    den32 = WienerMaskDenoiser(X.float())
    assert torch.equal(den32.mask(0.7), WienerMaskDenoiser(X.float().double()).mask(0.7))
    out32 = den32(x.float(), sig.float())
    assert out32.dtype == torch.float32
    ref = WienerMaskDenoiser(X.float().double())(x.float().double(), sig.float().double())
    np.testing.assert_allclose(out32.numpy(), ref.float().numpy(), rtol=0, atol=0)
    moved = den32.to(dtype=torch.float64)
    assert moved.dtype == torch.float64 and den32.dtype == torch.float32


def test_score_is_tweedie_and_no_log_density(rng):
    X = _data(rng)
    den = WienerMaskDenoiser(X)
    x = X[:2] + 0.3 * torch.from_numpy(rng.normal(size=(2, *SHAPE)))
    np.testing.assert_allclose(den.score(x, 0.3).numpy(), ((den(x, 0.3) - x) / 0.09).numpy(), rtol=1e-13, atol=0)
    with pytest.raises(NotImplementedError):
        den.log_density(x, 0.3)


def test_mask_sizes_grow_with_sigma(rng):
    """The masks of locally correlated data widen as the noise grows (the paper's claim, on
    data built to have it): from one entry at small sigma to many at large sigma."""
    X = _data(rng, n=200)
    den = WienerMaskDenoiser(X)
    sizes = [float(den.mask_sizes(s).mean()) for s in (0.01, 0.3, 1.0, 3.0, 30.0)]
    assert sizes[0] == 1.0 and sizes[-1] > 3.0
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))


def test_bad_inputs_name_the_argument(rng):
    X = _data(rng)
    with pytest.raises(ValueError, match="^threshold:"):
        WienerMaskDenoiser(X, threshold=-0.1)
    with pytest.raises(ValueError, match="^threshold:"):
        WienerMaskDenoiser(X, threshold=1.5)
    with pytest.raises(ValueError, match="^temperature:"):
        WienerMaskDenoiser(X, temperature=0.0)
    with pytest.raises(ValueError, match="^backend:"):
        WienerMaskDenoiser(X, backend="triton")
    with pytest.raises(ValueError, match="^chunk_size:"):
        WienerMaskDenoiser(X, chunk_size=0)
    with pytest.raises(ValueError, match="^mask:"):
        WienerMaskDenoiser(X, mask=torch.ones(D, D - 1))
    with pytest.raises(ValueError, match="^mask:"):
        WienerMaskDenoiser(X, mask=torch.ones(D, D), covariance=torch.eye(D))
    with pytest.raises(ValueError, match="^covariance:"):
        WienerMaskDenoiser(X, covariance=torch.eye(D + 1))
    with pytest.raises(ValueError, match="^covariance: is not positive semi-definite"):
        WienerMaskDenoiser(X, covariance=-torch.eye(D))
    bad = X.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^data:"):
        WienerMaskDenoiser(bad)
    with pytest.raises(ValueError, match="^data: needs at least 2"):
        WienerMaskDenoiser(X[:1])
    den = WienerMaskDenoiser(X)
    with pytest.raises(ValueError, match="^x:"):
        den(X[:2, :1], 1.0)
    with pytest.raises(ValueError, match="^x:"):
        den(X[:2].float(), 1.0)
    with pytest.raises(ValueError, match="^sigma:"):
        den(X[:2], -1.0)
    with pytest.raises(ValueError, match="^sigma:"):
        den.mask(0.0)
    with pytest.raises(ValueError, match="^covariance:"):
        wiener_masks(torch.ones(3, 4), 1.0)


def test_digits_with_constant_border_pixels_match_brute_force():
    """Real 8x8 digits (scaled to [-1, 1]): their border pixels never change, so the covariance is
    singular and those rows of the Wiener filter vanish; the masks and the denoiser still match
    the direct computation (rows with a zero diagonal dropped) and the brute force."""
    from gaussdiff.data import load_dataset

    X = torch.as_tensor(load_dataset("digits")[0][:120], dtype=torch.float64)
    Xf = X.reshape(len(X), -1).numpy()
    C = np.cov(Xf, rowvar=False, ddof=1)
    constant = np.ptp(Xf, axis=0) == 0
    assert constant.any()
    den = WienerMaskDenoiser(X)
    gen = np.random.default_rng(7)
    for sigma in (0.2, 1.0):
        W = np.linalg.solve(C + sigma**2 * np.eye(64), C)
        diag = np.diag(W)
        A = np.where(constant[:, None], 0.0, W / np.where(constant, 1.0, diag)[:, None])
        ref_mask = (np.abs(A) >= 0.02 * np.abs(A).max()).astype(float)
        np.testing.assert_array_equal(den.mask(sigma).numpy(), ref_mask)
        x = X[:2] + sigma * torch.from_numpy(gen.normal(size=(2, *X.shape[1:])))
        ref = brute_force(X, x, sigma, ref_mask)
        np.testing.assert_allclose(den(x, sigma).numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """The torch backend on CUDA data (float64 there too) equals the CPU answer at 1e-10 of the
    data's spread; "auto" picks the torch backend for CUDA data."""
    rng = np.random.default_rng(11)
    X = _data(rng)
    x = X[:4] + 0.7 * torch.from_numpy(rng.normal(size=(4, *SHAPE)))
    cpu = WienerMaskDenoiser(X)(x, 0.7)
    gpu = WienerMaskDenoiser(X.cuda())(x.cuda(), 0.7)
    assert gpu.device.type == "cuda"
    assert float((gpu.cpu() - cpu).abs().max()) <= 1e-10 * _spread(X)
