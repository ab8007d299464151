"""Tests of the local closed forms LS / ELS / bbELS (:mod:`gaussdiff.local`, table (L1)-(L5)).

Every variant is checked against a slow float64 brute force written from the formula (loops
over pixels and candidate patches, exact differences, numpy padding) and against identities:
(L5) LS = EmpiricalDenoiser, (L4) the 1 x 1 marginal posterior and its density, LS = ELS on a
set of translates, extreme sigma, score = autograd of the log density where one exists.

Float64 tolerances: ``1e-10`` relative to the output's scale where two exact routes differ only
by rounding: the streamed route forms ``|x - y|^2`` from a GEMM on centred data, the brute force
from exact differences; the two differ by ~``d u |x_c| |y_c| ~ 1e-14``, magnified by
``1 / 2 sigma^2`` in the logits (at most ~``5e-9`` relative in a weight at sigma = 1e-3, where
the posterior sits on one patch and the output is that patch's centre either way).
"""

import math

import numpy as np
import pytest
import torch

import gaussdiff as gd
from gaussdiff.local import (
    PatchDenoiser,
    PatchSizeSchedule,
    calibrate_patch_size,
)

VARIANTS = ("ls", "els", "bbels")
PADDINGS = ("zeros", "circular", "reflect")
_NP_PAD = {"zeros": "constant", "circular": "wrap", "reflect": "reflect"}


def _data(seed=0, n=4, c=2, h=5, w=6, b=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    return train.to(dtype), x.to(dtype)


def _brute(train, x, sigma, k, variant, padding):
    """The formula, literally: for every query image and pixel, the list of candidate patches,
    their logits ``-|P_p(x) - P|^2 / 2 sigma^2`` from exact differences, a per-pixel softmax
    (shifted by that pixel's own maximum) and the weighted centre pixels. float64 numpy."""
    tr = train.numpy().astype(np.float64)
    xs = x.numpy().astype(np.float64)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (xs.shape[0],))
    N, C, H, W = tr.shape
    r = k // 2
    pad = lambda im: np.pad(im, ((0, 0), (r, r), (r, r)), mode=_NP_PAD[padding])  # noqa: E731
    tp = [pad(t) for t in tr]
    out = np.zeros_like(xs)
    for b in range(xs.shape[0]):
        xp = pad(xs[b])
        for i in range(H):
            for j in range(W):
                q = xp[:, i : i + k, j : j + k]
                if variant == "ls":  # (L1) the same pixel of every padded training image
                    pos = [(i, j)]
                    src = tp
                elif variant == "els":  # (L2) every window inside an unpadded training image
                    pos = [(a, c) for a in range(r, H - r) for c in range(r, W - r)]
                    src = tp  # at an interior position the padded patch is the unpadded window
                else:  # (L3) border rows/columns fixed, interior ones free
                    rows = [i] if (i < r or i >= H - r) else list(range(r, H - r))
                    cols = [j] if (j < r or j >= W - r) else list(range(r, W - r))
                    pos = [(a, c) for a in rows for c in cols]
                    src = tp
                logits, centres = [], []
                for t in src:
                    for a, c in pos:
                        P = t[:, a : a + k, c : c + k]
                        logits.append(-np.sum((q - P) ** 2) / (2 * sig[b] ** 2))
                        centres.append(P[:, r, r])
                lg = np.array(logits)
                w = np.exp(lg - lg.max())
                out[b, :, i, j] = (w[:, None] * np.array(centres)).sum(0) / w.sum()
    return torch.from_numpy(out)


def _close(a, b, rtol):
    a, b = a.to(torch.float64), b.to(torch.float64)
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max()) / scale
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.1e}"


# -- (L1)-(L3) against the brute force ------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("k", [3, 5])
def test_variants_match_brute_force(variant, padding, k):
    """(L1)-(L3): each variant x padding x k equals the loop reference (float64, 1e-10: rounding
    of the GEMM route only, see the module docstring); per-query sigma as a (B,) tensor."""
    train, x = _data()
    sigma = torch.tensor([0.6, 1.7], dtype=torch.float64)
    ref = _brute(train, x, sigma, k, variant, padding)
    _close(PatchDenoiser(train, k, variant=variant, padding=padding)(x, sigma), ref, 1e-10)
    # many chunks of 4 candidates: the shifted online update (and its overflow redo) per row
    _close(PatchDenoiser(train, k, variant=variant, padding=padding, chunk_size=4)(x, sigma), ref, 1e-10)


@pytest.mark.parametrize("variant", ["ls", "bbels"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_patch_larger_than_image_matches_brute_force(variant, padding):
    """(L1), (L3) with k = 9 on 4 x 5 images: the padding reaches past the image (circular wraps
    and reflect mirrors more than once, as numpy.pad does), and every bbELS row and column is a
    border one. Brute force, float64, 1e-10 (GEMM rounding only)."""
    train, x = _data(n=3, c=1, h=4, w=5, b=1)
    den = PatchDenoiser(train, 9, variant=variant, padding=padding)
    _close(den(x, 0.9), _brute(train, x, 0.9, 9, variant, padding), 1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_streaming_paths_agree(variant):
    """The stored path (duplicates merged), the stored path unmerged and the gathered stream
    (``cache_bytes=0``) with a tiny chunk give the same answer (float64, 1e-12: the paths differ
    only in summation order). Data with many identical patches (binary images)."""
    g = torch.Generator().manual_seed(1)
    train = (torch.rand(6, 1, 7, 7, generator=g, dtype=torch.float64) > 0.7).to(torch.float64)
    x = train[:2] + 0.3 * torch.randn(2, 1, 7, 7, generator=g, dtype=torch.float64)
    ref = PatchDenoiser(train, 3, variant=variant, merge_duplicates=False, cache_bytes=0, chunk_size=5)(x, 0.4)
    for kw in ({}, {"merge_duplicates": False}, {"chunk_size": 3}):
        _close(PatchDenoiser(train, 3, variant=variant, **kw)(x, 0.4), ref, 1e-12)
    blk = PatchDenoiser(train, 3, variant="els")._blocks_for(3)[0]
    assert blk.n_rows < 6 * 25  # duplicates were merged


# -- identities -----------------------------------------------------------------------------
@pytest.mark.parametrize("k", [9, 11, 13])
def test_ls_full_patch_is_empirical(k):
    """(L5) LS with zero padding and k >= 2 max(H, W) - 1 (here H = 4, W = 5: k >= 9) is the
    empirical denoiser (E2) at every pixel; float64, 1e-10 (two GEMM routes' rounding), sigma
    from 0.05 to 20 times the data spread."""
    train, x = _data(n=7, c=2, h=4, w=5, b=3)
    den = PatchDenoiser(train, k, variant="ls", padding="zeros")
    emp = gd.EmpiricalDenoiser(train)
    for sigma in (0.05, 0.5, 2.0, 20.0):
        _close(den(x, sigma), emp(x, sigma), 1e-10)
    _close(den.log_density(x, 0.7), emp.log_density(x, 0.7), 1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_one_by_one_patch_is_marginal_posterior(padding):
    """(L4) k = 1: LS is the per-pixel marginal posterior over the N training values at that
    pixel; ELS and bbELS the marginal pooled over all N H W training pixels; the closed forms
    written with torch.softmax (float64, 1e-12: no GEMM, both from exact differences up to the
    centring's rounding). Padding is irrelevant at k = 1."""
    train, x = _data(n=5, c=3, h=4, w=3, b=2)
    s = torch.tensor([0.3, 1.1], dtype=torch.float64)[:, None, None, None]
    # LS: logits (B, N, H, W) over the training images at the same pixel
    lg = -((x[:, None] - train[None]) ** 2).sum(2) / (2 * s**2)
    ls = torch.einsum("bnhw,nchw->bchw", torch.softmax(lg, 1), train)
    # ELS: all N H W training pixels pooled, (B, H, W, NHW)
    vals = train.permute(0, 2, 3, 1).reshape(-1, 3)
    lg = -((x.permute(0, 2, 3, 1)[..., None, :] - vals) ** 2).sum(-1) / (2 * s[..., 0] ** 2)[..., None]
    els = torch.einsum("bhwm,mc->bchw", torch.softmax(lg, -1), vals)
    sig = s.reshape(-1)
    _close(PatchDenoiser(train, 1, variant="ls", padding=padding)(x, sig), ls, 1e-12)
    _close(PatchDenoiser(train, 1, variant="els", padding=padding)(x, sig), els, 1e-12)
    _close(PatchDenoiser(train, 1, variant="bbels", padding=padding)(x, sig), els, 1e-12)


def test_one_by_one_density_closed_form():
    """(L4) density: ``log p(x) = sum_p log (1/M_p) sum_P N(x_p; centre(P), sigma^2 I_C)``,
    a product of per-pixel marginals, written out with torch.logsumexp (float64, 1e-12)."""
    train, x = _data(n=5, c=2, h=3, w=4, b=2)
    sigma = 0.8
    C = 2
    lg = -((x[:, None] - train[None]) ** 2).sum(2) / (2 * sigma**2)  # (B, N, H, W)
    per = torch.logsumexp(lg, 1) - math.log(5) - 0.5 * C * math.log(2 * math.pi * sigma**2)
    _close(PatchDenoiser(train, 1, variant="ls").log_density(x, sigma), per.sum((1, 2)), 1e-12)
    vals = train.permute(0, 2, 3, 1).reshape(-1, C)
    lg = -((x.permute(0, 2, 3, 1)[..., None, :] - vals) ** 2).sum(-1) / (2 * sigma**2)
    per = torch.logsumexp(lg, -1) - math.log(vals.shape[0]) - 0.5 * C * math.log(2 * math.pi * sigma**2)
    _close(PatchDenoiser(train, 1, variant="els").log_density(x, sigma), per.sum((1, 2)), 1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_translates_ls_equals_els(k):
    """LS on a training set made of all circular translates of one image equals ELS (and bbELS)
    with circular padding, at every pixel: the LS candidates at p are every circular patch of
    the base image once, the ELS ones every such patch (H-k+1)(W-k+1) times (one per interior
    window of each translate); a common multiplicity cancels in the softmax. float64, 1e-10."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    train = torch.stack([torch.roll(base, (a, c), (1, 2)) for a in range(5) for c in range(6)])
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    ls = PatchDenoiser(train, k, variant="ls", padding="circular")(x, 0.8)
    els = PatchDenoiser(train, k, variant="els", padding="circular")(x, 0.8)
    bb = PatchDenoiser(train, k, variant="bbels", padding="circular")(x, 0.8)
    _close(els, ls, 1e-10)
    _close(bb, ls, 1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_extreme_sigma_per_pixel_logsumexp(variant):
    """Per-pixel log-sum-exp at sigma = 1e-3 .. 1e3 times the data spread: equal to the brute
    force (whose softmax is shifted per pixel) at 1e-10 in float64 (see the module docstring for
    why the GEMM route's logit rounding stays below this), and finite. At sigma = 1e-3 the logits
    of different pixels differ by ~1e5, so one maximum shared by the pixels would underflow
    (0/0) everywhere but at the pixel holding it. float32 data give the float64 answer on the
    same (float32) values rounded to float32: 1e-7 relative (half an ulp of outputs of size ~2)."""
    train, x = _data(seed=5)
    spread = float(train.std())
    for f in (1e-3, 1e-1, 1.0, 1e2, 1e3):
        sigma = f * spread
        den = PatchDenoiser(train, 3, variant=variant, padding="reflect")
        out = den(x, sigma)
        assert torch.isfinite(out).all()
        ref = _brute(train, x, sigma, 3, variant, "reflect")
        _close(out, ref, 1e-10)
        # chunks of 3: at small sigma a later chunk's best patch is far above the running shift,
        # its weights overflow and the chunk is redone with its own maximum
        _close(PatchDenoiser(train, 3, variant=variant, padding="reflect", chunk_size=3)(x, sigma), ref, 1e-10)
        out32 = PatchDenoiser(train.float(), 3, variant=variant, padding="reflect")(x.float(), sigma)
        assert out32.dtype == torch.float32
        same = PatchDenoiser(train.float().double(), 3, variant=variant, padding="reflect")(x.float().double(), sigma)
        _close(out32, same, 1e-7)


@pytest.mark.parametrize(
    "variant,k,padding", [("ls", 1, "zeros"), ("els", 1, "reflect"), ("bbels", 1, "circular"), ("ls", 7, "zeros")]
)
def test_score_is_autograd_of_log_density(variant, k, padding):
    """Where a log density exists ((L4) k = 1, every variant; (L5) LS, zeros, k >= 2H - 1, here
    H = W = 4), score = (D - x)/sigma^2 equals the autograd gradient of log_density (float64,
    1e-10 relative to the score's scale: two exact routes, rounding only)."""
    train, x = _data(n=4, c=2, h=4, w=4, b=2)
    den = PatchDenoiser(train, k, variant=variant, padding=padding)
    for sigma in (0.3, 1.5):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(den.log_density(xr, sigma).sum(), xr)
        _close(grad, den.score(x, sigma), 1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_log_density_for_larger_patches(variant):
    """For k > 1 (other than (L5)) the local score is not a gradient field: no log density."""
    train, x = _data()
    with pytest.raises(NotImplementedError, match="no log density"):
        PatchDenoiser(train, 3, variant=variant).log_density(x, 1.0)


def test_local_score_is_not_conservative():
    """Why (for k = 3 ELS) there is no density: the Jacobian of D is not symmetric, so
    ``(D - x)/sigma^2`` is no gradient (asymmetry far above the 1e-8 of finite-free autograd)."""
    train, x = _data(n=3, c=1, h=4, w=4, b=1)
    den = PatchDenoiser(train, 3, variant="els")
    J = torch.autograd.functional.jacobian(lambda z: den(z.reshape(1, 1, 4, 4), 0.8).reshape(-1), x.reshape(-1))
    assert float((J - J.T).abs().max()) > 1e-3 * float(J.abs().max())


# -- dtype, device, shapes ------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_matches_float64(variant):
    """float32 data and queries give the float64 answer on the same values, rounded (1e-7: half
    an ulp of outputs of size ~2), in float32; the float64 data themselves differ by the
    inputs' float32 rounding (1e-6 at sigma = 0.5)."""
    train, x = _data(seed=7)
    d64 = PatchDenoiser(train, 3, variant=variant)
    d32 = d64.to(dtype=torch.float32)
    out = d32(x.float(), 0.5)
    assert out.dtype == torch.float32 and out.shape == x.shape
    _close(out, d32.to(dtype=torch.float64)(x.float().double(), 0.5), 1e-7)
    _close(out, d64(x, 0.5), 1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_matches_cpu(variant):
    """The same torch code on CUDA (float64 GEMMs there too): equal to the CPU answer at 1e-10."""
    train, x = _data(seed=8)
    cpu = PatchDenoiser(train, 3, variant=variant)(x, 0.5)
    gpu = PatchDenoiser(train.cuda(), 3, variant=variant)(x.cuda(), 0.5)
    assert gpu.device.type == "cuda"
    _close(gpu.cpu(), cpu, 1e-10)


# -- patch size per sigma and calibration -----------------------------------------------------
def test_schedule_picks_size_per_sigma():
    """A schedule gives each query the size of its sigma: rows at sigma 0.1 equal the fixed
    k = 3 denoiser, rows at 2.0 the k = 5 one (float64, 1e-12: the same formula; a subset of the
    batch changes the GEMM's blocking, so the rounding may differ in the last bits)."""
    train, x = _data(n=3, h=6, w=6, b=3)
    sched = PatchSizeSchedule((0.1, 2.0), (3, 5))
    assert sched(0.05) == 3 and sched(0.3) == 3 and sched(1.0) == 5 and sched(100.0) == 5
    sigma = torch.tensor([0.1, 2.0, 0.1], dtype=torch.float64)
    out = PatchDenoiser(train, sched, variant="bbels")(x, sigma)
    d3 = PatchDenoiser(train, 3, variant="bbels")(x, sigma)
    d5 = PatchDenoiser(train, 5, variant="bbels")(x, sigma)
    _close(out[[0, 2]], d3[[0, 2]], 1e-12)
    _close(out[1], d5[1], 1e-12)
    callable_size = PatchDenoiser(train, lambda s: 3 if s < 1 else 5, variant="bbels")(x, sigma)
    assert torch.equal(callable_size, out)


def test_calibration_recovers_known_schedule():
    """Calibrating against a PatchDenoiser whose size follows a known schedule recovers that
    schedule, with R^2 = 1 (to rounding) at the true size; deterministic given the generator."""
    g = torch.Generator().manual_seed(11)
    train = torch.randn(6, 1, 7, 7, generator=g, dtype=torch.float64)
    held = torch.randn(3, 1, 7, 7, generator=g, dtype=torch.float64)
    truth = PatchSizeSchedule((0.2, 1.0, 5.0), (1, 3, 5))
    ref = PatchDenoiser(train, truth, variant="els")
    sched, table = calibrate_patch_size(
        train, ref, held, [5.0, 0.2, 1.0], sizes=(1, 3, 5), generator=torch.Generator().manual_seed(0)
    )
    assert sched == truth
    for row, k in zip(table["scores"], truth.sizes):
        assert abs(row[table["sizes"].index(k)] - 1.0) < 1e-12
    again, _ = calibrate_patch_size(
        train, ref, held, [0.2, 1.0, 5.0], sizes=(1, 3, 5), generator=torch.Generator().manual_seed(0)
    )
    assert again == sched


# -- argument checks ------------------------------------------------------------------------
def test_argument_checks_name_the_argument():
    """Bad input is a ValueError whose message starts with the argument's name (house rule of
    ``gaussdiff._checks``), for the constructor, the call, the schedule and the calibration."""
    train, x = _data()
    bad = [
        (dict(train=train[0]), "train"),
        (dict(patch_size=4), "patch_size"),
        (dict(patch_size=0), "patch_size"),
        (dict(patch_size=True), "patch_size"),
        (dict(patch_size=7, variant="els"), "patch_size"),  # larger than the 5 x 6 image
        (dict(variant="elss"), "variant"),
        (dict(padding="edge"), "padding"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(merge_duplicates=1), "merge_duplicates"),
    ]
    for kw, name in bad:
        args = dict(train=train, patch_size=3) | kw
        t, k = args.pop("train"), args.pop("patch_size")
        with pytest.raises(ValueError, match=f"^{name}"):
            PatchDenoiser(t, k, **args)
    with pytest.raises(ValueError, match="^train"):
        PatchDenoiser(train.clone().fill_(float("nan")), 3)
    den = PatchDenoiser(train, 3)
    with pytest.raises(ValueError, match="^x"):
        den(x[:, :1], 1.0)
    with pytest.raises(ValueError, match="^x"):
        den(x.float(), 1.0)
    with pytest.raises(ValueError, match="^sigma"):
        den(x, 0.0)
    with pytest.raises(ValueError, match="^sigma"):
        den(x, torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="^patch_size"):
        PatchDenoiser(train, lambda s: 2)(x, 1.0)
    with pytest.raises(ValueError, match="^sigmas"):
        PatchSizeSchedule((1.0, 0.5), (3, 5))
    with pytest.raises(ValueError, match="^sizes"):
        PatchSizeSchedule((1.0,), (4,))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="^x0"):
        calibrate_patch_size(train, den, x[:, :1], [1.0], generator=g)
    with pytest.raises(ValueError, match="^sigmas"):
        calibrate_patch_size(train, den, x, [0.0], generator=g)
    with pytest.raises(ValueError, match="^generator"):
        calibrate_patch_size(train, den, x, [1.0], generator=0)


@pytest.mark.parametrize("k", [3, 5])
def test_els_on_digits_matches_unfold_softmax(k):
    """(L2) on real data (scikit-learn digits; identical background patches merged): equal
    to an independent dense float64 route, ``F.unfold`` + a full softmax over every window
    (zero padding), at 1e-10 (GEMM vs exact-difference rounding only)."""
    import torch.nn.functional as F

    data, _, _ = gd.load_dataset("digits")
    train = data[:150].to(torch.float64)
    g = torch.Generator().manual_seed(2)
    x = data[150:152].to(torch.float64) + 0.4 * torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    r = k // 2
    xp = F.unfold(F.pad(x, (r, r, r, r)), k).transpose(1, 2)  # (B, 64, k^2)
    tp = F.unfold(train, k).transpose(1, 2).reshape(-1, k * k)  # (M, k^2)
    d2 = ((xp[:, :, None, :] - tp[None, None]) ** 2).sum(-1)  # exact differences
    ref = (torch.softmax(-d2 / (2 * 0.4**2), -1) @ tp[:, (k * k) // 2]).reshape(2, 1, 8, 8)
    den = PatchDenoiser(train, k, variant="els")
    if k == 3:  # identical 3 x 3 background windows are merged (5 x 5 windows are all distinct)
        assert den._blocks_for(k)[0].n_rows < tp.shape[0]
    _close(den(x, 0.4), ref, 1e-10)


# -- the numba kernel (CPU default) beside the torch path -------------------------------------
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_backends_match_brute_force(variant, backend):
    """Both CPU backends, on every storage path (stored and merged, tiny chunks whose shifted
    update and overflow redo run per row, gathered chunk by chunk with ``cache_bytes=0``), equal
    the loop reference at 1e-10 in float64 (rounding of the GEMM route only, module docstring),
    at sigma from 1e-3 to 1e3 times the data spread (one sigma per query). 3 variants x 2
    backends x 3 paths x 3 sigma pairs."""
    train, x = _data(seed=9)
    spread = float(train.std())
    for f in ((1e-3, 0.5), (0.6, 1.7), (1e2, 1e3)):
        sigma = torch.tensor(f, dtype=torch.float64) * spread
        ref = _brute(train, x, sigma, 3, variant, "reflect")
        for kw in ({}, {"chunk_size": 3}, {"cache_bytes": 0, "chunk_size": 5}):
            den = PatchDenoiser(train, 3, variant=variant, padding="reflect", backend=backend, **kw)
            _close(den(x, sigma), ref, 1e-10)


def test_numba_kernel_python_mode(monkeypatch):
    """The kernel three ways (compiled, ``py_func``, and the torch route as the reference):
    the kernel run as plain Python (its ``prange`` a ``range``) gives the compiled answer
    (float64, 1e-13: the same operations, BLAS blocking aside)."""
    from gaussdiff.local import _patch_numba

    train, x = _data(seed=4, n=3, h=5, w=5, b=1)
    compiled = PatchDenoiser(train, 3, variant="bbels", backend="numba", chunk_size=4)(x, 0.3)
    monkeypatch.setattr(_patch_numba, "_stream_kernel", _patch_numba._stream_kernel.py_func)
    python = PatchDenoiser(train, 3, variant="bbels", backend="numba", chunk_size=4)(x, 0.3)
    _close(python, compiled, 1e-13)
    _close(compiled, PatchDenoiser(train, 3, variant="bbels", backend="torch")(x, 0.3), 1e-12)


def test_exp_tile_is_exp():
    """The kernel's vectorised ``exp`` (compiled and as Python): within 2 ulp of libm's over
    ``[-708, 708]`` and near 0, exactly 0 below ``-708`` (weights ``< 3e-308`` of the row's
    shift, far below float64 rounding of the sums), the row shift subtracted per row."""
    from gaussdiff.local._patch_numba import _exp_tile

    rng = np.random.default_rng(0)
    # the reduced argument covers |r| <= ln(2)/2 densely (the polynomial's interval), and beyond
    L = np.concatenate(
        [
            rng.uniform(-708, 708, 4000),
            rng.uniform(-1, 1, 4000),
            np.linspace(-0.35, 0.35, 2001),
            [0.0, -708.0, 708.0, -709.0, -1e300],
        ]
    )
    L = np.stack([L, L + 3.0])
    shift = np.array([0.0, 3.0])
    t0 = L - shift[:, None]  # the argument as the kernel forms it
    ref = np.vectorize(lambda v: math.exp(v) if v >= -708 else 0.0)(t0)
    for fn in (_exp_tile, _exp_tile.py_func):
        T, K = np.empty_like(L), np.empty(L.shape[1])  # K: one row of scratch
        fn(L, shift, T, K, 2, L.shape[1])
        rel = np.abs(T - ref) / np.where(ref > 0, ref, 1.0)
        assert rel.max() <= 2 * np.finfo(np.float64).eps
        assert (T[ref == 0] == 0).all() and (ref[:, -2:] == 0).all()


def test_backend_argument():
    """``backend``: one of "auto", "numba", "torch" (a ValueError naming it otherwise); "auto"
    runs the numba kernel on the CPU; autograd always takes the torch route."""
    train, x = _data()
    with pytest.raises(ValueError, match="^backend"):
        PatchDenoiser(train, 3, backend="cuda")
    assert PatchDenoiser(train, 3)._numba and not PatchDenoiser(train, 3, backend="torch")._numba
    den = PatchDenoiser(train, 1, variant="ls", backend="numba")
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(den.log_density(xr, 0.5).sum(), xr)
    _close(grad, den.score(x, 0.5), 1e-10)
