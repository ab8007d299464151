r"""The patch denoisers LS, ELS and bbELS ((L1)-(L5) of :mod:`gaussdiff.local`): the posterior
per pixel over k x k training patches.

How it is computed
------------------
Queries of the same candidate set are stacked into ``(G, Q, k^2 C)`` blocks (ELS: one block of
all ``B H W`` query patches; LS: ``H W`` blocks of ``B``, one per pixel; bbELS: one per region)
and the training patches are streamed through in chunks. Per chunk, one float64 GEMM on data
centred by the per-channel training mean gives every logit (augmented rows, :func:`_stream`),
one ``exp`` pass, and a second small GEMM accumulates the ``C`` centre entries and the
normaliser together: an online log-sum-exp per query row, never a maximum shared between pixels
or images. A block's candidate patches are stored once per denoiser and patch size (float64,
row-major ``[y - c, |y - c|^2, log n, 1]``, at most ``cache_bytes``, 1 GiB by default), else
gathered from the training images chunk by chunk; identical stored patches of an ELS block are
merged, with their multiplicity as a log-weight (exact: ``n`` equal logits are one logit plus
``log n``).

Two backends run this one algorithm. ``"numba"`` (the CPU default,
:mod:`gaussdiff.local._patch_numba`) fuses it per cache-sized tile: each thread takes up to 256
query rows, and per 512 candidates calls single-threaded BLAS for the logit GEMM, a vectorised
float64 ``exp`` (Cody-Waite reduction and a degree-11 Chebyshev interpolant with fused
multiply-adds, within 2 ulp of libm) and the
weight GEMM while the tile is in cache; the torch route (CUDA, autograd, ``backend="torch"``)
makes three passes over 64 MiB logit tiles, which made it memory bound. Both use the same
augmented rows and the same per-row update, and agree with the brute force at ``1e-10``.

Cost: ``O(B H W M (k^2 C + 3))`` flops for the GEMM plus ``B H W M`` ``exp``, ``M`` the
(merged) candidate count; memory ``O(G Q (k^2 C + chunk))`` beyond the data and the stored
candidates. No pruning: a weight is dropped only below ``exp(-708)`` of its row's running
shift, far under float64 rounding of the sums. Measured (``validation/benchmarks/README.md``:
2 cores shared with other jobs, load average 5-8, sigma = 0.5, ELS on one 28 x 28 image with
N = 2000 or one 16 x 16 colour image with N = 5000, k = 3, 5, 7; two back-to-back runs):
1.1-3.8 s a call, 0.8-6.8x the rate of the bare float64 patch GEMM (which at ``k = 3``, inner
dimension 9, is bound by writing its logits, while the kernel keeps them in cache, and which
streams the unmerged windows) and 10-58x a plain ``unfold`` + ``cdist`` + ``softmax`` in
float32; before this kernel (the torch route) 3.0-18.6 s, 0.2-1.5x and 2.9-7.6x. On a quiet
machine, where the bare GEMM gains more than the kernel, the faster ``exp`` (0.77 instead of
0.92 ns an entry) gives 0.26-1.0 s a call, 0.60-1.78x the GEMM and 9.3-41x the plain route
(colour k = 5, the weakest point: 9.3x and 10.3x in two runs). At ``k = 3`` the ``exp`` and the
logit GEMM take about equal time; from ``k^2 C >= 25`` the GEMM dominates. Not done, and why: pruning of
negligible candidates (at the benchmark's sigma, half the data spread, ~73% of the 3 x 3
candidates of a 28 x 28 query lie within ``exp(-37)`` of the best, so a certified bound would
skip almost nothing; it would pay only at small sigma) and a float32 logit GEMM (its rounding,
``~u32 |x||y| / sigma^2 ~ 1e-6`` in a logit, would need an exact float64 recomputation of every
candidate that carries weight, most of them at that sigma, to keep ``1e-10``).

Float32 data are evaluated in float64 and the result rounded, so a float32 call gives the
float64 answer on the same values to half an ulp, at every sigma from ``1e-3`` to ``1e3`` times
the data spread (``tests/test_local.py``).

Score and density: ``score = (D - x) / sigma^2`` (Tweedie's form, the local score of Kamb &
Ganguli) for every variant. It is the gradient of a log density only where one exists:
``k = 1`` (L4, all variants: a product of per-pixel marginals) and (L5). For other patch sizes
the local score is not a gradient field and :meth:`PatchDenoiser.log_density` raises
``NotImplementedError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .._checks import as_tensor, check_batch, check_data, check_int
from ..denoisers import Denoiser
from ..metrics.agreement import coefficient_of_determination

__all__ = ["PatchDenoiser", "PatchSizeSchedule", "calibrate_patch_size"]

VARIANTS = ("ls", "els", "bbels")
PADDINGS = ("zeros", "circular", "reflect")
_LOG_2PI = math.log(2 * math.pi)
_TILE = 1 << 23  # elements of one (G, Q, chunk) logit tile: 64 MiB in float64 (larger measured faster)
_MIN_CHUNK = 16  # candidate rows per chunk, at least
_MAX_QUERIES = 8192  # query rows per block
_NUMBA_CHUNK = 512  # candidate rows per tile of the numba kernel
# query rows per tile at most: larger tiles pack each candidate chunk for more rows. Measured, one
# thread, process time (colour 16 x 16 k = 3 / 28 x 28 k = 7): 1.18 / 4.2 s at 32 rows, 0.89 / 2.8 s
# at 128, - / 2.47 s at 256, - / 2.30 s at 512 (chunk 512-1024 within noise)
_NUMBA_QBLOCK = 256
BACKENDS = ("auto", "numba", "torch")


def _check_patch_size(k, name: str = "patch_size") -> int:
    k = check_int(k, name, minimum=1)
    if k % 2 == 0:
        raise ValueError(f"{name}: must be odd (a patch centred on its pixel), got {k}")
    return k


# =============================================================================================
# patch geometry
# =============================================================================================


def _source_rows(n: int, r: int, padding: str) -> torch.Tensor:
    """For padded coordinates ``u = -r .. n + r - 1``: the source index in ``0..n-1``, or ``-1``
    for a zero (``padding="zeros"``). ``circular``: ``u mod n``; ``reflect``: mirror without
    repeating the edge (torch's ``reflect``), for any ``r``."""
    u = torch.arange(-r, n + r)
    if padding == "zeros":
        return torch.where((u >= 0) & (u < n), u, torch.full_like(u, -1))
    if padding == "circular":
        return u % n
    if n == 1:
        return torch.zeros_like(u)
    period = 2 * (n - 1)
    v = u % period
    return torch.where(v < n, v, period - v)


def _patch_index(H: int, W: int, k: int, padding: str, pixels: torch.Tensor) -> torch.Tensor:
    """``(P, k*k)`` flat indices into an image flattened to ``H W + 1`` entries (the last one a
    zero) of the k x k patches centred at ``pixels`` (flat ``i W + j``), padded by ``padding``."""
    r = k // 2
    rows, cols = _source_rows(H, r, padding), _source_rows(W, r, padding)
    i, j = pixels // W, pixels % W
    a = torch.arange(k)
    ri = rows[i[:, None] + a[None, :]]  # (P, k): padded coordinate i + a - r, shifted by r
    cj = cols[j[:, None] + a[None, :]]
    flat = ri[:, :, None] * W + cj[:, None, :]
    zero = (ri[:, :, None] < 0) | (cj[:, None, :] < 0)
    return torch.where(zero, torch.full_like(flat, H * W), flat).reshape(len(pixels), k * k)


def _gather_patches(img: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Patches of images ``img`` (n, C, H, W) at ``index`` (..., k*k): ``(n, ..., C k^2)``, the
    entries ordered channel-major as ``F.unfold`` orders them."""
    n, C = img.shape[:2]
    flat = torch.cat([img.reshape(n, C, -1), img.new_zeros(n, C, 1)], 2)
    p = flat[:, :, index]  # (n, C, ..., k*k)
    p = p.movedim(1, -2)  # (n, ..., C, k*k)
    return p.reshape(*p.shape[:-2], -1)


def _groups(variant: str, H: int, W: int, k: int):
    """The candidate structure as blocks ``(pixels (G, P), positions (G, R))`` of flat pixel
    indices: block ``g`` holds ``P`` query pixels that share the candidate patches centred at
    ``R`` positions (of every training image). Blocks of equal ``(P, R)`` are stacked."""
    r = k // 2
    if variant == "ls":  # (L1) one block per pixel, the same pixel
        pix = torch.arange(H * W)[:, None]
        return [(pix, pix.clone())]
    if variant == "els":  # (L2) one block: all pixels, the interior windows
        if k > H or k > W:
            raise ValueError(f"patch_size: ELS needs a k x k window inside the {H} x {W} images, got k = {k}")
        ii, jj = torch.arange(r, H - r), torch.arange(r, W - r)
        pos = (ii[:, None] * W + jj[None, :]).reshape(1, -1)
        return [(torch.arange(H * W)[None, :], pos)]

    # (L3) a row is a class of its own within r of the border, the interior rows one class
    def classes(n):
        inner = list(range(r, n - r))
        out = [([i], [i]) for i in range(n) if i < r or i >= n - r]
        if inner:
            out.append((inner, inner))
        return out

    by_shape: dict = {}
    for rq, rc in classes(H):
        for cq, cc in classes(W):
            pix = (torch.tensor(rq)[:, None] * W + torch.tensor(cq)[None, :]).reshape(-1)
            pos = (torch.tensor(rc)[:, None] * W + torch.tensor(cc)[None, :]).reshape(-1)
            by_shape.setdefault((len(pix), len(pos)), []).append((pix, pos))
    return [(torch.stack([p for p, _ in b]), torch.stack([q for _, q in b])) for b in by_shape.values()]


# =============================================================================================
# the streamed posterior
# =============================================================================================


def _merge_duplicates(y: torch.Tensor):
    """Identical rows of ``y`` (M, d) merged: ``(unique rows (M', d), counts (M',))``. Rows are
    sorted by a fixed projection and runs of bit-identical neighbours merged: exact whatever the
    projection (rows with equal projections but different values stay apart), O(M log M)."""
    if y.shape[0] < 2:
        return y, torch.ones(y.shape[0], dtype=torch.float64, device=y.device)
    proj = torch.sqrt(torch.arange(2, y.shape[1] + 2, dtype=y.dtype, device=y.device))  # fixed, irrational
    order = torch.argsort((y * proj).sum(-1), stable=True)
    ys = y[order]
    new = torch.ones(ys.shape[0], dtype=torch.bool, device=y.device)
    new[1:] = (ys[1:] != ys[:-1]).any(-1)
    starts = torch.nonzero(new).flatten()
    counts = torch.diff(torch.cat([starts, starts.new_tensor([ys.shape[0]])]))
    return ys[starts], counts.to(torch.float64)


class _Block:
    """One stacked block of a :class:`PatchDenoiser` at one patch size: ``G`` groups of ``P``
    query pixels sharing ``R`` candidate positions. The candidates enter the GEMM as augmented
    rows ``[y - c, |y - c|^2, log n]`` (``n`` the multiplicity of a merged patch) beside the
    right-hand side ``[centre(y) - c, 1]``; they are stored once (float64) when they fit
    ``cache_bytes``, with identical patches merged for a one-group block, or else gathered from
    the training images chunk by chunk."""

    def __init__(self, den: "PatchDenoiser", k: int, pixels, positions):
        self.k, self.pixels, self.positions = k, pixels, positions
        H, W = den.event_shape[1:]
        dev = den.device
        self.q_index = _patch_index(H, W, k, den.padding, pixels.reshape(-1)).reshape(*pixels.shape, k * k).to(dev)
        self.c_index = _patch_index(H, W, k, den.padding, positions.reshape(-1)).reshape(*positions.shape, k * k)
        self.c_index = self.c_index.to(dev)
        C = den.event_shape[0]
        self.centre = (k * k) // 2 + k * k * torch.arange(C, device=dev)
        G, R = positions.shape
        d = C * k * k
        self.store = None
        if G * den.n * R * (d + C + 3) * 8 <= den.cache_bytes:
            y = _gather_patches(den._train64, self.c_index).transpose(0, 1).reshape(G, den.n * R, d)
            counts = None
            if den.merge_duplicates and G == 1:
                y, counts = _merge_duplicates(y[0])
                y, counts = y[None], counts[None]
            self.store = self._augment(den, y, counts)
        self.n_rows = den.n * R if self.store is None else self.store[1].shape[1]

    def _augment(self, den, y, counts):
        y = y - den._centre_vec(self.k)
        logw = torch.zeros_like(y[..., 0]) if counts is None else torch.log(counts)
        ones = torch.ones_like(y[..., :1])
        ya = torch.cat([y, (y * y).sum(-1, keepdim=True), logw[..., None], ones], -1)  # (G, m, d + 3)
        v = torch.cat([y[..., self.centre], ones], -1)  # (G, m, C + 1)
        return ya.contiguous(), v.contiguous()

    def chunks(self, den: "PatchDenoiser", rows: int):
        """``(Ya (G, m, d + 3), V (G, m, C + 1))`` chunk by chunk (row-major, contiguous rows)."""
        if self.store is not None:
            ya, v = self.store
            for a in range(0, v.shape[1], rows):
                yield ya[:, a : a + rows], v[:, a : a + rows]
            return
        G, R = self.positions.shape
        step = max(1, rows // R)
        for a in range(0, den.n, step):
            y = _gather_patches(den._train64[a : a + step], self.c_index).transpose(0, 1)
            yield self._augment(den, y.reshape(G, -1, y.shape[-1]), None)


def _redo_rows(xa, ya_t, v, bad, m, av):  # ya_t (G, d + 3, m), a transposed view
    """The textbook online update, in place, for the rows ``bad`` (G, Q) of a chunk whose
    shifted weights overflowed: their logits recomputed unshifted, the new maximum taken."""
    gi, qi = torch.nonzero(bad, as_tuple=True)
    xb = xa[gi, qi].clone()
    xb[:, -1] = 0.0
    if xa.shape[0] == 1:
        logit = xb @ ya_t[0]  # (nb, m)
    else:
        logit = torch.bmm(xb[:, None, :], ya_t[gi])[:, 0]
    mb = torch.maximum(m[gi, qi], logit.amax(-1))
    w = logit.sub_(mb[:, None]).exp_()
    ak = w @ v[0] if xa.shape[0] == 1 else torch.bmm(w[:, None, :], v[gi])[:, 0]
    av[gi, qi] = av[gi, qi] * torch.exp(m[gi, qi] - mb)[:, None] + ak
    m[gi, qi] = mb


def _stream(X, inv2s2, den, block, chunk, differentiable):
    """Online log-sum-exp per query row over the block's candidates: float64
    ``(mean of the centred centres (G, Q, C), lse (G, Q))`` for centred queries ``X`` (G, Q, d)
    and ``inv2s2 = 1 / (2 sigma^2)`` per row (G, Q).

    (L1)-(L3) one GEMM per chunk gives ``-(|y|^2 - 2 x.y) / 2 sigma^2 + log n - m`` from the
    augmented rows ``[2 x / 2 sigma^2, -1 / 2 sigma^2, 1, -m]`` and ``[y, |y|^2, log n, 1]``;
    the per-row constant ``-|x|^2 / 2 sigma^2`` is added to the lse at the end. Each row keeps
    its own shift ``m``: the maximum of its first chunk, then raised by ``log z_chunk`` whenever a
    chunk's weights sum above 1, so that ``m`` stays at or above the row's running maximum and
    below its running log-sum-exp (no weight that matters can underflow). ``exp(l - m)`` times
    ``[centre(y), 1]`` (a second GEMM) updates the weighted sum and the normaliser together.
    The rows of a chunk whose weights overflow (a logit more than ~709 above ``m``: small sigma,
    a much closer patch) are redone with their own maximum, the textbook online update
    (:func:`_redo_rows`)."""
    xsq = (X * X).sum(-1)
    one = torch.ones_like(inv2s2)[..., None]
    xa = torch.cat([X * (2 * inv2s2)[..., None], -inv2s2[..., None], one, 0 * one], -1)
    m = av = None
    for ya, v in block.chunks(den, chunk):
        ya_t = ya.transpose(1, 2)
        if m is not None and not differentiable:  # the shift rides in the GEMM: no max pass
            xa[..., -1] = -m
            w = torch.bmm(xa, ya_t).exp_()
            ak = torch.bmm(w, v)
            fin = torch.isfinite(ak).all(-1)  # (G, Q)
            everywhere = bool(fin.all())
            if not everywhere:
                ak = torch.where(fin[..., None], ak, torch.zeros_like(ak))
            m_new = m + torch.log(ak[..., -1].clamp_min(1.0))  # per row
            av = (av + ak) * torch.exp(m - m_new)[..., None]
            m = m_new
            if not everywhere:
                _redo_rows(xa, ya_t, v, ~fin, m, av)
            continue
        logit = torch.bmm(xa, ya_t)  # (G, Q, m): the logits, unshifted
        cmax = logit.amax(-1)
        m_new = cmax if m is None else torch.maximum(m, cmax)
        if differentiable:
            w = torch.exp(logit - m_new[..., None])
        else:
            w = logit.sub_(m_new[..., None]).exp_()
        ak = torch.bmm(w, v)  # (G, Q, C + 1): weighted centres and the normaliser
        av = ak if m is None else av * torch.exp(m - m_new)[..., None] + ak  # per-row rescale
        m = m_new
    z = av[..., -1]
    return av[..., :-1] / z[..., None], m + torch.log(z) - xsq * inv2s2


def _stream_numba(X, inv2s2, den, block):
    """:func:`_stream` on the CPU by the compiled kernel of :mod:`gaussdiff.local._patch_numba`:
    the same augmented rows and the same online update per row, fused per cache-sized tile
    (logit GEMM, vectorised ``exp``, weight GEMM) instead of three passes over a large tile."""
    import numba

    from ..kernels._numba import _single_threaded_blas
    from ._patch_numba import _stream_kernel

    G, Q, _ = X.shape
    xsq = (X * X).sum(-1)
    one = torch.ones_like(inv2s2)[..., None]
    xa = torch.cat([X * (2 * inv2s2)[..., None], -inv2s2[..., None], one, 0 * one], -1).contiguous().numpy()
    m = np.full((G, Q), -np.inf)
    acc = np.zeros((G, Q, len(block.centre) + 1))
    chunk = den.chunk_size or _NUMBA_CHUNK
    nt = numba.get_num_threads()
    if G == 1:  # tasks: a multiple of the threads, tiles of at most _NUMBA_QBLOCK rows
        qblock = -(-Q // (nt * -(-Q // (nt * _NUMBA_QBLOCK))))
    else:
        qblock = min(Q, _NUMBA_QBLOCK)
    rows = block.n_rows if block.store is not None else max(_MIN_CHUNK, _TILE // (X.shape[-1] + 3))
    with _single_threaded_blas():
        for ya, v in block.chunks(den, rows):
            _stream_kernel(xa, ya.contiguous().numpy(), v.contiguous().numpy(), m, acc, qblock, chunk)
    m, acc = torch.from_numpy(m), torch.from_numpy(acc)
    z = acc[..., -1]
    return acc[..., :-1] / z[..., None], m + torch.log(z) - xsq * inv2s2


# =============================================================================================
# the denoiser
# =============================================================================================


@dataclass(frozen=True)
class PatchSizeSchedule:
    """A patch size per noise level: ``sizes[i]`` at ``sigmas[i]``, piecewise constant in
    ``log sigma`` (the nearest grid point in ``log sigma`` decides; a tie takes the larger sigma).

    Parameters
    ----------
    sigmas : increasing positive noise levels.
    sizes : odd patch sizes, one per level.
    """

    sigmas: tuple
    sizes: tuple

    def __post_init__(self):
        s = tuple(float(v) for v in self.sigmas)
        k = tuple(_check_patch_size(v, "sizes") for v in self.sizes)
        if not s or len(s) != len(k):
            raise ValueError(f"sizes: expected one size per sigma ({len(s)}), got {len(k)}")
        if any(not math.isfinite(v) or v <= 0 for v in s) or any(b <= a for a, b in zip(s, s[1:])):
            raise ValueError(f"sigmas: must be positive, finite and strictly increasing, got {s}")
        object.__setattr__(self, "sigmas", s)
        object.__setattr__(self, "sizes", k)

    def __call__(self, sigma: float) -> int:
        ls = math.log(float(sigma))
        best = min(range(len(self.sigmas)), key=lambda i: (abs(math.log(self.sigmas[i]) - ls), -i))
        return self.sizes[best]


class PatchDenoiser(Denoiser):
    r"""The local closed-form denoisers LS, ELS and boundary-broken ELS (table (L1)-(L5) of
    :mod:`gaussdiff.local`): at every pixel, the posterior mean of the centre pixels of candidate
    training patches given the query's patch,
    :math:`D(x, \sigma)_p = \sum_P \mathrm{softmax}_P(-\|P_p(x) - P\|^2 / 2\sigma^2)\,\mathrm{centre}(P)`.

    Exact in float64 (and in float32, evaluated in float64): a per-pixel online log-sum-exp over
    streamed training patches, never one maximum over pixels or the batch.

    Parameters
    ----------
    train : (N, C, H, W) training images, float32 or float64 (integers become float64).
    patch_size : odd ``k``; or a :class:`PatchSizeSchedule` / any callable ``sigma -> k``
        (a patch size per noise level; queries of a batch with different sigma may get different
        sizes).
    variant : ``"ls"`` (L1), ``"els"`` (L2, needs ``k <= min(H, W)``) or ``"bbels"`` (L3).
    padding : ``"zeros"``, ``"circular"`` or ``"reflect"``: how the query (and, for LS and the
        bbELS border, the training images) are padded.
    merge_duplicates : merge identical candidate patches of the ELS blocks, with multiplicities
        (exact; saves most of the work on data with flat backgrounds such as digits).
    chunk_size : candidate rows per streamed chunk; ``None``: chosen so that one float64 logit
        tile holds about 2^23 entries.
    cache_bytes : a block's candidate patches are stored (float64) when they take at most this
        many bytes (1 GiB: the 28 x 28, N = 2000 and 16 x 16 colour, N = 5000 sets of the
        benchmark fit at k <= 7), else gathered from the training images chunk by chunk.
    backend : ``"numba"`` (CPU: the fused kernel), ``"torch"`` (CPU or CUDA) or ``"auto"``
        (numba for CPU data, torch otherwise). Autograd (a query that requires grad) always
        takes the torch route. The numba kernel is ``parallel=True``: not fork-safe once run.
    """

    _sigma_float64 = True  # the terms form 1/(2 sigma^2) in float64 whatever the dtype

    def __init__(
        self,
        train,
        patch_size,
        *,
        variant: str = "els",
        padding: str = "zeros",
        merge_duplicates: bool = True,
        chunk_size: int | None = None,
        cache_bytes: int = 1 << 30,
        backend: str = "auto",
    ):
        train = check_data(train, "train")
        if train.ndim != 4:
            raise ValueError(f"train: expected images of shape (N, C, H, W), got {tuple(train.shape)}")
        if train.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"train: expected float32 or float64 values, got {train.dtype}")
        if variant not in VARIANTS:
            raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
        if callable(patch_size):
            self._size_of = patch_size
            self.patch_size = patch_size
        else:
            k = _check_patch_size(patch_size)
            self._size_of = lambda sigma, k=k: k
            self.patch_size = k
            if variant == "els":
                _groups(variant, train.shape[2], train.shape[3], k)  # refuses k > min(H, W) now
        if not isinstance(merge_duplicates, bool):
            raise ValueError(f"merge_duplicates: expected a bool, got {merge_duplicates!r}")
        self.chunk_size = None if chunk_size is None else check_int(chunk_size, "chunk_size")
        self.cache_bytes = check_int(cache_bytes, "cache_bytes", minimum=0)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if backend == "numba" and train.device.type != "cpu":
            raise ValueError(f"backend: 'numba' runs on CPU data only, train is on {train.device}")
        self.backend = backend
        self.variant, self.padding, self.merge_duplicates = variant, padding, merge_duplicates
        self.train = train
        self.event_shape = tuple(train.shape[1:])
        self.dtype, self.device = train.dtype, train.device
        self._train64 = train.to(torch.float64)
        self._mean_c = self._train64.mean(dim=(0, 2, 3))  # (C,) the centring constant
        self._blocks: dict = {}

    @property
    def n(self) -> int:
        return self.train.shape[0]

    def to(self, *, dtype=None, device=None) -> "PatchDenoiser":
        """A copy with the training images in ``dtype`` on ``device`` (this one is unchanged)."""
        return PatchDenoiser(
            self.train.to(dtype=dtype or self.dtype, device=device or self.device),
            self.patch_size,
            variant=self.variant,
            padding=self.padding,
            merge_duplicates=self.merge_duplicates,
            chunk_size=self.chunk_size,
            cache_bytes=self.cache_bytes,
            backend="auto"
            if self.backend == "numba" and torch.device(device or self.device).type != "cpu"
            else self.backend,
        )

    @property
    def _numba(self) -> bool:
        """Whether calls run the numba kernel (``backend`` "numba", or "auto" on the CPU)."""
        return self.backend == "numba" or (self.backend == "auto" and self.device.type == "cpu")

    def patch_size_at(self, sigma: float) -> int:
        """The patch size used at noise level ``sigma``."""
        return _check_patch_size(self._size_of(float(sigma)), "patch_size")

    def _centre_vec(self, k: int) -> torch.Tensor:
        return self._mean_c.repeat_interleave(k * k)

    def _blocks_for(self, k: int):
        if k not in self._blocks:
            H, W = self.event_shape[1:]
            groups = _groups(self.variant, H, W, k)
            self._blocks[k] = [_Block(self, k, pix, pos) for pix, pos in groups]
        return self._blocks[k]

    def _chunk_rows(self, G: int, Q: int, d: int) -> int:
        """Candidate rows per chunk: ``chunk_size``, or as many as keep both the ``(G, Q, m)``
        logit tile and the ``(G, m, d + 2)`` candidate chunk near ``_TILE`` entries."""
        if self.chunk_size is not None:
            return self.chunk_size
        return max(_MIN_CHUNK, _TILE // max(1, G * max(Q, d + 2)))

    def _posterior(self, x, s, k, differentiable=False):
        """float64 ``(mean (B, C, H, W), lse (B, H, W))`` for queries ``x`` (B, C, H, W) at one
        patch size ``k``; ``s`` (B,) the noise levels."""
        B, C, H, W = x.shape
        x64 = x.to(torch.float64)
        s64 = s.to(torch.float64)
        cvec = self._centre_vec(k)
        mean = x64.new_zeros(B, H * W, C)
        lse = x64.new_zeros(B, H * W)
        pieces_mean, pieces_lse, pieces_pix = [], [], []
        for block in self._blocks_for(k):
            G, P = block.pixels.shape
            xp = _gather_patches(x64, block.q_index) - cvec  # (B, G, P, d)
            X = xp.permute(1, 0, 2, 3).reshape(G, B * P, -1)
            inv = (0.5 / s64**2)[:, None].expand(B, P).reshape(1, B * P).expand(G, -1)
            bq = max(1, _MAX_QUERIES // P) * P  # whole images per query block
            outs = []
            for a in range(0, B * P, bq):
                Xa, inva = X[:, a : a + bq], inv[:, a : a + bq]
                chunk = self._chunk_rows(G, Xa.shape[1], Xa.shape[2])
                if self._numba and not differentiable:
                    outs.append(_stream_numba(Xa, inva, self, block))
                else:
                    outs.append(_stream(Xa, inva, self, block, chunk, differentiable))
            mu = torch.cat([o[0] for o in outs], 1).reshape(G, B, P, C) + self._mean_c
            ls = torch.cat([o[1] for o in outs], 1).reshape(G, B, P)
            pieces_mean.append(mu.permute(1, 0, 2, 3).reshape(B, G * P, C))
            pieces_lse.append(ls.permute(1, 0, 2).reshape(B, G * P))
            pieces_pix.append(block.pixels.reshape(-1).to(x.device))
        pix = torch.cat(pieces_pix)
        if differentiable:
            order = torch.argsort(pix)
            mean = torch.cat(pieces_mean, 1)[:, order]
            lse = torch.cat(pieces_lse, 1)[:, order]
        else:
            mean[:, pix] = torch.cat(pieces_mean, 1)
            lse[:, pix] = torch.cat(pieces_lse, 1)
        return mean.transpose(1, 2).reshape(B, C, H, W), lse.reshape(B, H, W)

    def _sizes(self, s):
        """Patch size per query: ``{k: rows}`` (one device sync for a sigma tensor)."""
        sizes = [self.patch_size_at(v) for v in s.tolist()]
        out: dict = {}
        for b, k in enumerate(sizes):
            out.setdefault(k, []).append(b)
        return out

    def _by_size(self, x, s, fn):
        groups = self._sizes(s)
        if len(groups) == 1:
            (k,) = groups
            return fn(x, s, k)
        res = None
        for k, rows in groups.items():
            idx = torch.tensor(rows, device=x.device)
            part = fn(x[idx], s[idx], k)
            if res is None:
                res = part.new_zeros((x.shape[0], *part.shape[1:]))
            res[idx] = part
        return res

    def _denoise(self, xf, s):
        x = xf.reshape(-1, *self.event_shape)
        diff = torch.is_grad_enabled() and x.requires_grad
        out = self._by_size(x, s, lambda x, s, k: self._posterior(x, s, k, differentiable=diff)[0])
        return out.reshape(xf.shape).to(self.dtype)

    def _has_density(self, k: int) -> bool:
        H, W = self.event_shape[1:]
        return k == 1 or (self.variant == "ls" and self.padding == "zeros" and k >= 2 * max(H, W) - 1)

    def _log_density(self, xf, s):
        x = xf.reshape(-1, *self.event_shape)

        def one(x, s, k):
            if not self._has_density(k):
                raise NotImplementedError(
                    f"PatchDenoiser: variant {self.variant!r} with patch_size {k} has no log density "
                    "(its local score is not a gradient field; only k = 1 (L4) and LS with zero padding "
                    "and k >= 2 max(H, W) - 1 (L5) have one)"
                )
            diff = torch.is_grad_enabled() and x.requires_grad
            _, lse = self._posterior(x, s, k, differentiable=diff)
            C, H, W = self.event_shape
            s64 = s.to(torch.float64)
            if k == 1:  # (L4) a product of per-pixel marginals, each over its candidates
                counts = self._candidate_counts(k).to(x.device)
                per_pixel = lse - torch.log(counts) - 0.5 * C * (_LOG_2PI + 2 * torch.log(s64))[:, None, None]
                return per_pixel.sum((1, 2))
            # (L5) every pixel's patch holds the image: the (E1) density of the empirical denoiser
            return lse[:, 0, 0] - math.log(self.n) - 0.5 * C * H * W * (_LOG_2PI + 2 * torch.log(s64))

        return self._by_size(x, s, one).to(self.dtype)

    def _candidate_counts(self, k: int) -> torch.Tensor:
        """Number of candidate patches (with multiplicity) per pixel: ``(H, W)`` float64."""
        H, W = self.event_shape[1:]
        counts = torch.zeros(H * W, dtype=torch.float64)
        for pix, pos in _groups(self.variant, H, W, k):
            counts[pix.reshape(-1)] = float(self.n * pos.shape[1])
        return counts.reshape(H, W)

    def __repr__(self) -> str:
        return (
            f"PatchDenoiser(N={self.n}, shape={self.event_shape}, patch_size={self.patch_size!r}, "
            f"variant={self.variant!r}, padding={self.padding!r})"
        )


# =============================================================================================
# calibration of the patch size against a given denoiser
# =============================================================================================


def _median_r_squared(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The default agreement of :func:`calibrate_patch_size`: the median over images of the
    coefficient of determination (:func:`~gaussdiff.metrics.agreement.coefficient_of_determination`)."""
    return coefficient_of_determination(pred, target).median


def calibrate_patch_size(
    train,
    reference,
    x0,
    sigmas,
    *,
    sizes=(1, 3, 5, 7, 9, 11),
    variant: str = "els",
    padding: str = "zeros",
    agreement: Callable | None = None,
    generator: torch.Generator,
    **kwargs,
):
    r"""For each noise level, the patch size whose :class:`PatchDenoiser` best agrees with the
    denoiser ``reference`` (a trained network, say) on held-out noisy inputs, as Kamb & Ganguli
    calibrate ELS against the trained U-Net (``henhen724/convolutional_diffusion``,
    ``scripts/scales_calibration.py``).

    At each ``sigma`` the inputs are ``x = x0 + sigma n`` with ``n ~ N(0, I)`` drawn from
    ``generator``; the score of size ``k`` is ``agreement(D_k(x, sigma), reference(x, sigma))``
    (higher is better), by default the median over images of the coefficient of determination
    ``R^2 = 1 - SS_res / SS_tot`` (SS_tot about each target image's mean;
    :func:`gaussdiff.metrics.agreement.coefficient_of_determination`). Ties go to the smaller
    patch.

    Parameters
    ----------
    train : (N, C, H, W) training images.
    reference : a denoiser ``reference(x, sigma)`` on (B, C, H, W).
    x0 : (B, C, H, W) held-out clean images (not in ``train``).
    sigmas : noise levels to calibrate at.
    sizes : odd candidate patch sizes (ELS skips those larger than the image).
    variant, padding, **kwargs : passed to :class:`PatchDenoiser`.
    agreement : ``agreement(pred, target) -> float``, higher is better.
    generator : torch generator of the noise (library code never seeds a global one).

    Returns
    -------
    (schedule, table): a :class:`PatchSizeSchedule` over the sorted ``sigmas`` and a dict with
    ``"sigmas"``, ``"sizes"`` (the candidates scored) and ``"scores"`` (one list per sigma).
    """
    train = check_data(train, "train")
    if train.ndim != 4:
        raise ValueError(f"train: expected images of shape (N, C, H, W), got {tuple(train.shape)}")
    x0 = check_batch(as_tensor(x0, "x0", dtype=train.dtype, device=train.device), train.shape[1:], "x0")
    if not callable(reference):
        raise ValueError(f"reference: expected a denoiser reference(x, sigma), got {type(reference).__name__}")
    sig = sorted(float(v) for v in as_tensor(sigmas, "sigmas").reshape(-1).tolist())
    if not sig or any(not math.isfinite(v) or v <= 0 for v in sig) or len(set(sig)) != len(sig):
        raise ValueError(f"sigmas: expected distinct positive finite noise levels, got {sig}")
    H, W = train.shape[2:]
    ks = sorted({_check_patch_size(k, "sizes") for k in sizes})
    if variant == "els":
        ks = [k for k in ks if k <= min(H, W)]
    if not ks:
        raise ValueError(f"sizes: no usable patch size for {H} x {W} images, got {tuple(sizes)}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    agree = _median_r_squared if agreement is None else agreement
    dens = {k: PatchDenoiser(train, k, variant=variant, padding=padding, **kwargs) for k in ks}
    scores, best = [], []
    for sigma in sig:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device="cpu").to(x0.device)
        x = x0 + sigma * noise
        target = reference(x, sigma)
        row = [float(agree(dens[k](x, sigma), target)) for k in ks]
        scores.append(row)
        best.append(ks[max(range(len(ks)), key=lambda i: (row[i], -i))])
    return PatchSizeSchedule(tuple(sig), tuple(best)), {"sigmas": sig, "sizes": ks, "scores": scores}
