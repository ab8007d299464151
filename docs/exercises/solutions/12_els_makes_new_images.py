"""Exercise 12: the equivariant local score (ELS) machine draws new images; the empirical one copies.

On 200 of the 8x8 digits, sample from the same noise (Heun) with the empirical denoiser, with
the local closed forms of Kamb & Ganguli (ELS with a 3x3 patch; boundary-broken ELS with a patch
that grows with sigma) and with two controls (ELS with a 1x1 patch, the fitted Gaussian). For
each sample set measure, against the training set:

* whole images: the distance to the nearest training image, and the memorization fraction;
* 3x3 patches: for every 3x3 window lying inside a sample, the distance to the nearest 3x3
  window of any training image (anywhere in it), summarised by the median over windows.

Held-out digits (not in the training set) are the yardstick: a real new digit is far from every
training image and yet made of patches that occur in the training images. The empirical samples
are copies (distance ~1e-16 at both scales); the ELS samples are not copies yet their patches
are about as close to training patches as those of real new digits, and much closer than the
Gaussian's or the 1x1 control's.

First, by hand: the local score (LS) with zero padding and a (2H - 1) x (2W - 1) patch is the
empirical denoiser (every pixel's patch holds the whole image), written here as a softmax with
torch; a smaller patch is not.
"""

import torch
import torch.nn.functional as F

import gaussdiff as gd

F64 = torch.float64


def softmax_posterior_mean(train, x, sigma):
    """The empirical denoiser written out: ``sum_i softmax_i(-|x - x_i|^2 / 2 sigma^2) x_i``,
    from exact differences (no GEMM), float64."""
    d2 = ((x[:, None] - train[None]) ** 2).flatten(2).sum(-1)  # (B, N)
    w = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    return torch.einsum("bn,nchw->bchw", w, train)


def windows(images, k=3):
    """Every k x k window lying inside the images: ``(n * (H-k+1) * (W-k+1), C k^2)``."""
    return F.unfold(images, k).transpose(1, 2).reshape(-1, images.shape[1] * k * k)


def describe(x, train, train_windows):
    """Image-level and patch-level distances of samples ``x`` to the training set."""
    dist, idx = gd.nearest_training(x, train, k=2)
    patch_dist, _ = gd.nearest_training(windows(x), train_windows, k=1)
    return {
        "memorization": gd.memorization_fraction(x, train, neighbors=(dist, idx)).value,
        "nn_distance_min": float(dist[:, 0].min()),
        "nn_distance_median": float(dist[:, 0].median()),
        "nn_distance_max": float(dist[:, 0].max()),
        "patch_distance_median": float(patch_dist[:, 0].median()),
    }


def solve(n_train=200, n_samples=16, steps=12):
    data, _, _ = gd.load_dataset("digits")  # (1797, 1, 8, 8) in [-1, 1]
    train, held = (t.to(F64) for t in gd.disjoint_split(data, n_train, seed=0))
    H, W = train.shape[2:]

    # -- (L5) by hand: LS with a full-image patch is the empirical denoiser -------------------
    g = torch.Generator().manual_seed(3)
    q = held[:4] + 0.5 * torch.randn(held[:4].shape, generator=g, dtype=F64)
    emp = gd.EmpiricalDenoiser(train)
    k_full = 2 * max(H, W) - 1
    ls_full = gd.PatchDenoiser(train, k_full, variant="ls", padding="zeros")
    identity_err = 0.0
    for s in (0.1, 1.0, 10.0):
        by_hand = softmax_posterior_mean(train, q, s)
        identity_err = max(
            identity_err,
            float((ls_full(q, s) - by_hand).abs().max()),
            float((emp(q, s) - by_hand).abs().max()),
        )
    ls_gap = {k: float((gd.PatchDenoiser(train, k, variant="ls")(q, 1.0) - emp(q, 1.0)).abs().max()) for k in (11, 13)}
    ls_gap[k_full] = float((ls_full(q, 1.0) - emp(q, 1.0)).abs().max())

    # -- sampling from the same noise ----------------------------------------------------------
    sigmas = gd.karras_sigmas(steps)
    noise = gd.seeded_noise(n_samples, train.shape[1:], seed=1) * sigmas[0]
    growing = gd.PatchSizeSchedule(sigmas=(0.3, 1.0, 3.0), sizes=(3, 5, 7))  # k grows with sigma
    models = {
        "empirical": emp,
        "els_3x3": gd.PatchDenoiser(train, 3, variant="els"),
        "bbels_growing": gd.PatchDenoiser(train, growing, variant="bbels"),
        "els_1x1": gd.PatchDenoiser(train, 1, variant="els"),  # pixel marginals: no locality left
        "gaussian": gd.GaussianDenoiser.fit(train),
    }
    train_windows = windows(train)
    out = {
        "identity_err": identity_err,
        "ls_vs_empirical_by_k": ls_gap,
        "k_full": k_full,
        "heldout": describe(held[:n_samples], train, train_windows),
    }
    for name, den in models.items():
        out[name] = describe(gd.sample_heun(den, noise, sigmas), train, train_windows)
    return out


if __name__ == "__main__":
    r = solve()
    print(f"LS (k = {r['k_full']}) = softmax by hand = EmpiricalDenoiser: max difference {r['identity_err']:.1e}")
    print("LS vs empirical at sigma = 1, by patch size:", {k: f"{v:.1e}" for k, v in r["ls_vs_empirical_by_k"].items()})
    print("               memorization  nearest image (min / median)  nearest 3x3 patch (median)")
    for name in ("empirical", "els_3x3", "bbels_growing", "els_1x1", "gaussian", "heldout"):
        m = r[name]
        print(
            "%-14s %12.2f  %12.3g / %-14.3g  %12.3g"
            % (name, m["memorization"], m["nn_distance_min"], m["nn_distance_median"], m["patch_distance_median"])
        )
