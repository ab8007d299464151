r"""Sample quality that works offline: Fréchet distances between Gaussian fits of features.

The Fréchet inception distance (FID, Heusel et al. 2017, eq. 6) between two sets of samples is
the squared 2-Wasserstein distance between the Gaussians fitted to their features,

.. math:: \mathrm{FD} = \|m_1 - m_2\|^2 + \operatorname{tr}\big(S_1 + S_2
          - 2\,(S_1^{1/2} S_2 S_1^{1/2})^{1/2}\big),

with the features of Inception-v3's last pooling layer. Those weights cannot be downloaded at
run time, so gaussdiff uses two substitutes, both through :func:`frechet_distance`:

* :func:`classifier_frechet_distance` — features of a small convolutional classifier that
  gaussdiff trains itself, once, on a labelled built-in image set (:func:`feature_classifier`:
  seeded, cached on disk, its held-out accuracy reported). Like Inception features for
  ImageNet, these features separate the classes of the data the samples imitate;
* :func:`pixel_frechet_distance` — the same formula on the raw pixels (the Gaussian fits of the
  images themselves; no learned features, so no choice hidden in them).

Both are biased upwards at finite sample size (as FID is); compare values computed with the
same numbers of samples.

    clf = gd.feature_classifier("digits")                # trains once (~10 s), then cached
    print(clf.accuracy)                                  # held-out accuracy of the classifier
    fd = gd.classifier_frechet_distance(samples, test_images, clf)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._checks import as_tensor, check_data, check_finite, check_int, check_positive
from .data import data_fingerprint, load_dataset
from ._io import atomic_torch_save
from ._threads import cpu_threads

__all__ = [
    "FeatureStats",
    "frechet_distance",
    "pixel_frechet_distance",
    "FeatureClassifier",
    "feature_classifier",
    "classifier_frechet_distance",
    "cache_dir",
]

_FORMAT = 1


# =============================================================================================
# The Fréchet distance of two Gaussian fits
# =============================================================================================


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``(D,)`` and covariance ``(D, D)`` (float64, unbiased ``1/(n-1)``, as ``numpy.cov``)
    of ``n`` feature vectors."""

    mean: torch.Tensor
    cov: torch.Tensor
    n: int

    def __post_init__(self):
        # a hand-made FeatureStats is checked like a fitted one: finite (D,) mean, (D, D)
        # covariance, a count n >= 0 (0: unknown, as for a (mean, cov) pair)
        mean = self.mean
        if not isinstance(mean, torch.Tensor) or mean.ndim != 1 or mean.numel() == 0:
            raise ValueError(f"mean: expected a (D,) tensor, got {getattr(mean, 'shape', type(mean).__name__)}")
        D = mean.shape[0]
        if not isinstance(self.cov, torch.Tensor) or tuple(self.cov.shape) != (D, D):
            raise ValueError(
                f"cov: expected a ({D}, {D}) tensor to match mean, got {getattr(self.cov, 'shape', type(self.cov).__name__)}"
            )
        check_finite(mean, "mean")
        check_finite(self.cov, "cov")
        check_int(self.n, "n", minimum=0)
        _check_covariance(self.cov, "cov")

    @classmethod
    def from_features(cls, features, name: str = "features") -> "FeatureStats":
        """Fit of ``(n, D)`` features, ``n >= 2``."""
        f = check_data(features, name, min_rows=2)
        f = f.reshape(f.shape[0], -1).to(torch.float64)
        mean = f.mean(0)
        c = f - mean
        cov = c.T @ c / (f.shape[0] - 1)
        return cls(mean, 0.5 * (cov + cov.T), int(f.shape[0]))


def _check_covariance(cov: torch.Tensor, name: str) -> None:
    """A covariance is symmetric and positive semi-definite, up to the rounding of its own dtype:
    asymmetry within ``1e-10`` relative (float64; ``1e4 eps`` of a coarser dtype) and eigenvalues
    above ``-max(1e-10, 4 D eps) max|cov|`` (what ``eigh`` of a rank-deficient ``X^T X`` gives).
    Tested by a Cholesky factorisation of ``cov`` shifted by that tolerance (a sixth of an
    eigendecomposition's cost, which matters at D = 2048); the eigenvalues only for the message."""
    D = cov.shape[0]
    eps = torch.finfo(cov.dtype).eps if cov.is_floating_point() else torch.finfo(torch.float64).eps
    scale = float(cov.abs().max()) if cov.numel() else 0.0
    if scale == 0.0:
        return
    if not torch.allclose(cov, cov.T, rtol=0.0, atol=max(1e-10, 1e4 * eps) * scale):
        raise ValueError(f"{name}: covariance is not symmetric")
    c = (0.5 * (cov + cov.T)).to(torch.float64)
    tol = max(1e-10, 4 * D * eps) * scale
    _, info = torch.linalg.cholesky_ex(c + 2 * tol * torch.eye(D, dtype=torch.float64))
    if int(info) != 0:
        low = float(torch.linalg.eigvalsh(c).min())
        if low < -tol:
            raise ValueError(f"{name}: covariance is not positive semi-definite (smallest eigenvalue {low:.3g})")


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative rounding eigenvalues -> 0)."""
    lam, u = torch.linalg.eigh(s)
    return (u * lam.clamp_min(0).sqrt()) @ u.T


def _as_stats(a, name: str) -> FeatureStats:
    if isinstance(a, FeatureStats):
        return a
    if isinstance(a, tuple) and len(a) == 2:
        mean = check_finite(as_tensor(a[0], f"{name}[0]", dtype=torch.float64), f"{name}[0]").reshape(-1)
        cov = check_finite(as_tensor(a[1], f"{name}[1]", dtype=torch.float64), f"{name}[1]")
        if cov.shape != (mean.numel(), mean.numel()):
            raise ValueError(
                f"{name}: covariance of shape {tuple(cov.shape)} does not match a mean of length {mean.numel()}"
            )
        _check_covariance(cov, name)
        return FeatureStats(mean, cov, 0)
    raise ValueError(f"{name}: expected FeatureStats or a (mean, cov) pair, got {type(a).__name__}")


def frechet_distance(a, b) -> float:
    r"""Fréchet distance :math:`\|m_a - m_b\|^2 + \operatorname{tr}(S_a + S_b - 2 (S_a^{1/2} S_b
    S_a^{1/2})^{1/2})` between two Gaussians (the squared 2-Wasserstein distance; FID's formula).

    Parameters
    ----------
    a, b : :class:`FeatureStats` or ``(mean (D,), cov (D, D))`` pairs. Rank-deficient
        covariances are fine (the symmetric square roots clamp rounding-negative eigenvalues).

    Returns
    -------
    float, >= 0, computed in float64 from two symmetric eigendecompositions (no
    ``sqrtm`` of the non-symmetric product :math:`S_a S_b`).
    """
    a, b = _as_stats(a, "a"), _as_stats(b, "b")
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"b: features of dimension {b.mean.numel()} do not match a's {a.mean.numel()}")
    ra = _psd_sqrt(a.cov)
    cross = torch.linalg.eigvalsh(ra @ b.cov @ ra).clamp_min(0).sqrt().sum()
    fd = (a.mean - b.mean).square().sum() + torch.trace(a.cov) + torch.trace(b.cov) - 2 * cross
    return max(float(fd), 0.0)


def pixel_frechet_distance(samples, reference) -> float:
    """:func:`frechet_distance` between the Gaussian fits of two image (or vector) sets
    ``(n, *event_shape)``, flattened."""
    s = check_data(samples, "samples", min_rows=2)
    r = check_data(reference, "reference", min_rows=2)
    if s.shape[1:] != r.shape[1:]:
        raise ValueError(f"samples: event shape {tuple(s.shape[1:])} does not match reference's {tuple(r.shape[1:])}")
    return frechet_distance(
        FeatureStats.from_features(s.reshape(s.shape[0], -1), "samples"),
        FeatureStats.from_features(r.reshape(r.shape[0], -1), "reference"),
    )


# =============================================================================================
# A small classifier whose features stand in for Inception's
# =============================================================================================


class FeatureClassifier(nn.Module):
    """Small CNN for ``(B, C, H, W)`` images in ``[-1, 1]`` (H, W >= 4): two 3x3 convolutions,
    2x2 pooling, a third convolution, adaptive average pooling to 4x4, then a ``feature_dim``
    ReLU layer (the features) and a linear read-out to the classes.

    Attributes set by :func:`feature_classifier`: ``accuracy`` (held-out), ``spec``, ``info``.
    """

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, feature_dim: int = 64):
        in_channels, num_classes = check_int(in_channels, "in_channels"), check_int(num_classes, "num_classes")
        width, feature_dim = check_int(width, "width"), check_int(feature_dim, "feature_dim")
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * width, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.in_channels, self.num_classes, self.feature_dim = in_channels, num_classes, feature_dim
        self.accuracy: float = float("nan")
        self.spec: str = ""
        self.info: dict = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` penultimate activations."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def embed(self, images, *, batch_size: int = 512) -> torch.Tensor:
        """Features of ``(n, C, H, W)`` images, float64 ``(n, feature_dim)``, in eval mode."""
        x = check_data(images, "images")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"images: expected (n, {self.in_channels}, H, W) images, got {tuple(x.shape)}")
        p = next(self.parameters())
        was = self.training
        self.eval()
        try:
            out = [self.features(x[i : i + batch_size].to(p.device, p.dtype)) for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was)
        return torch.cat(out).to("cpu", torch.float64)


def cache_dir() -> Path:
    """Where trained classifiers are cached: ``$GAUSSDIFF_CACHE`` or ``~/.cache/gaussdiff``."""
    return Path(os.environ.get("GAUSSDIFF_CACHE") or Path.home() / ".cache" / "gaussdiff")


def feature_classifier(
    data="digits",
    *,
    seed: int = 0,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    width: int = 32,
    feature_dim: int = 64,
    holdout: float = 0.2,
    cache: bool = True,
    num_threads: int | None = None,
) -> FeatureClassifier:
    """A classifier trained on a labelled image set, whose features feed
    :func:`classifier_frechet_distance`.

    The data are split by a seeded permutation into a training part and a held-out part
    (``holdout`` of the rows); the network trains ``steps`` Adam steps on cross-entropy with
    batches drawn from a generator seeded with ``seed`` (weights seeded too), so the same
    arguments give the same bits on the same machine and thread count. The trained weights and
    the held-out accuracy are cached under :func:`cache_dir` (written atomically, keyed by the
    fingerprints of the images and the labels and by every argument; not by the thread count,
    which can change the last bits of a retrained network), so the classifier trains once per
    data set.

    Parameters
    ----------
    data : a data spec with labels (``"digits"``, ``"mnist5k"``, ``"fashion-mnist"``), or an
        ``(images (N, C, H, W), labels (N,))`` pair.
    seed, steps, batch_size, lr, width, feature_dim : training and architecture.
    holdout : share of rows held out for the accuracy, in (0, 1).
    cache : read and write the cache.
    num_threads : CPU threads while training (restored afterwards).

    Returns
    -------
    :class:`FeatureClassifier` in eval mode, ``.accuracy`` its held-out accuracy, ``.spec`` the
    data's name, ``.info`` the settings and the data fingerprint.
    """

    if isinstance(data, str):
        images, labels, info = load_dataset(data)
        spec = info.get("spec", data)
        if labels is None:
            raise ValueError(
                f"data: {data!r} has no labels, so no classifier can be trained on it; "
                "use pixel_frechet_distance or a labelled set (digits, mnist5k, fashion-mnist)"
            )
    elif isinstance(data, tuple) and len(data) == 2:
        images, labels = check_data(data[0], "data[0]").float(), torch.as_tensor(data[1])
        spec = "user data"
    else:
        raise ValueError(f"data: expected a data spec or an (images, labels) pair, got {type(data).__name__}")
    if images.ndim != 4:
        raise ValueError(f"data: expected images (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or labels.is_floating_point() or int(labels.min()) < 0:
        raise ValueError(f"data: labels must be {images.shape[0]} non-negative integers")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout: must lie in (0, 1), got {holdout!r}")
    seed = check_int(seed, "seed", minimum=0)
    steps, batch_size, width, feature_dim = (
        check_int(v, n)
        for v, n in ((steps, "steps"), (batch_size, "batch_size"), (width, "width"), (feature_dim, "feature_dim"))
    )
    check_positive(lr, "lr")
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    settings = dict(
        format=_FORMAT,
        fingerprint=data_fingerprint(images),
        labels=hashlib.sha1(labels.numpy().astype("int64").tobytes()).hexdigest()[:16],
        seed=int(seed),
        steps=int(steps),
        batch_size=int(batch_size),
        lr=float(lr),
        width=int(width),
        feature_dim=int(feature_dim),
        holdout=float(holdout),
        num_classes=num_classes,
    )
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "classifiers" / f"{key}.pt"
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))  # seeded weights; no generator of the caller's changes
        model = FeatureClassifier(images.shape[1], num_classes, width=width, feature_dim=feature_dim)
    if cache and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["state"])
            accuracy = float(saved["accuracy"])
        except Exception as exc:
            raise ValueError(f"cache: {path} is unreadable ({exc}); delete it to retrain") from exc
    else:
        with cpu_threads(num_threads or None):
            accuracy = _fit_classifier(model, images, labels, settings)
        if cache:
            atomic_torch_save({"state": model.state_dict(), "accuracy": accuracy, "settings": settings}, path)
    model.eval()
    model.accuracy, model.spec, model.info = accuracy, spec, settings | {"cache_key": key}
    return model


def _fit_classifier(model: FeatureClassifier, images, labels, s: dict) -> float:
    g = torch.Generator().manual_seed(s["seed"])
    perm = torch.randperm(images.shape[0], generator=g)
    n_test = max(1, int(round(s["holdout"] * images.shape[0])))
    test, train = perm[:n_test], perm[n_test:]
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    model.train()
    for _ in range(s["steps"]):
        idx = train[torch.randint(train.numel(), (s["batch_size"],), generator=g)]
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(images[test[i : i + 1024]]).argmax(1) for i in range(0, test.numel(), 1024)])
    return float((pred == labels[test]).double().mean())


def classifier_frechet_distance(samples, reference, classifier: FeatureClassifier | str = "digits") -> float:
    """:func:`frechet_distance` between the Gaussian fits of the classifier features of two image
    sets ``(n, C, H, W)`` (the offline stand-in for FID; module docstring).

    ``classifier`` is a :class:`FeatureClassifier` or a data spec for :func:`feature_classifier`.
    """
    clf = feature_classifier(classifier) if isinstance(classifier, str) else classifier
    if not isinstance(clf, FeatureClassifier):
        raise ValueError(f"classifier: expected a FeatureClassifier or a data spec, got {type(classifier).__name__}")
    fa = clf.embed(check_data(samples, "samples", min_rows=2))
    fb = clf.embed(check_data(reference, "reference", min_rows=2))
    return frechet_distance(FeatureStats.from_features(fa, "samples"), FeatureStats.from_features(fb, "reference"))
