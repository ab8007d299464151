"""Tests of gaussdiff.quality: the Fréchet distance against independent routes (scipy's
``sqrtm`` of the non-symmetric product, as the reference FID code computes it; closed forms in
1-d and for commuting covariances), and the seeded, cached feature classifier."""

import numpy as np
import pytest
import scipy.linalg
import torch

import gaussdiff as gd


def random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


def fid_scipy(m1, s1, m2, s2):
    """The reference FID route (pytorch-fid): sqrtm of S1 S2, real part."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [1, 5, 20])
def test_frechet_matches_scipy_sqrtm(rng, d):
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    got = gd.frechet_distance((m1, s1), (m2, s2))
    assert got == pytest.approx(fid_scipy(m1, s1, m2, s2), rel=1e-10)


def test_frechet_closed_forms(rng):
    # 1-d: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations.
    assert gd.frechet_distance(([1.0], [[4.0]]), ([-2.0], [[9.0]])) == pytest.approx(9.0 + 1.0, rel=1e-14)
    # commuting (diagonal) covariances: sum (sqrt a - sqrt b)^2.
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    exact = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    q = np.linalg.qr(rng.standard_normal((6, 6)))[0]  # rotated: the distance is invariant
    got = gd.frechet_distance((np.zeros(6), q @ np.diag(a) @ q.T), (np.zeros(6), q @ np.diag(b) @ q.T))
    assert got == pytest.approx(exact, rel=1e-10)


def test_frechet_rank_deficient_and_self(rng):
    s = random_cov(rng, 12, rank=3)  # rank 3 of 12
    m = rng.standard_normal(12)
    assert gd.frechet_distance((m, s), (m, s)) < 1e-10 * np.trace(s)
    s2 = random_cov(rng, 12, rank=5)
    assert gd.frechet_distance((m, s), (m, s2)) == pytest.approx(fid_scipy(m, s, m, s2), rel=1e-7)
    # sqrtm of a singular product is itself ill-conditioned (~sqrt(eps) accuracy), hence 1e-7.


def test_feature_stats_match_numpy_cov(rng):
    f = rng.standard_normal((50, 7))
    st = gd.FeatureStats.from_features(torch.as_tensor(f))
    np.testing.assert_allclose(st.mean.numpy(), f.mean(0), rtol=1e-13)
    np.testing.assert_allclose(st.cov.numpy(), np.cov(f, rowvar=False), rtol=1e-12, atol=1e-14)
    assert st.n == 50


def test_pixel_frechet_is_frechet_of_flattened(rng):
    a = torch.as_tensor(rng.standard_normal((40, 1, 3, 3)))
    b = torch.as_tensor(rng.standard_normal((30, 1, 3, 3)) + 0.5)
    fa, fb = a.reshape(40, -1).numpy(), b.reshape(30, -1).numpy()
    ref = fid_scipy(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert gd.pixel_frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="b: features of dimension 2"):
        gd.frechet_distance(([0.0], [[1.0]]), ([0.0, 0.0], np.eye(2)))
    with pytest.raises(ValueError, match="a: covariance of shape"):
        gd.frechet_distance(([0.0, 1.0], [[1.0]]), ([0.0], [[1.0]]))
    with pytest.raises(ValueError, match="a: covariance is not symmetric"):
        gd.frechet_distance(([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]), ([0.0, 0.0], np.eye(2)))
    with pytest.raises(ValueError, match="samples: needs at least 2"):
        gd.pixel_frechet_distance(torch.zeros(1, 4), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="samples: event shape"):
        gd.pixel_frechet_distance(torch.zeros(3, 4), torch.zeros(5, 5))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAUSSDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_feature_classifier_trains_caches_and_is_deterministic(tmp_cache, one_thread):
    kw = dict(steps=150, width=8, feature_dim=16)
    clf = gd.feature_classifier("digits", **kw)
    assert clf.accuracy > 0.8 and clf.spec == "digits" and not clf.training
    files = list((tmp_cache / "classifiers").glob("*.pt"))
    assert len(files) == 1
    again = gd.feature_classifier("digits", **kw)  # read from the cache
    fresh = gd.feature_classifier("digits", cache=False, **kw)  # retrained: the same bits
    for p, q, r in zip(clf.parameters(), again.parameters(), fresh.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r)
    assert again.accuracy == clf.accuracy == fresh.accuracy
    # the caller's global RNG is untouched by the seeded initialisation
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    gd.feature_classifier("digits", cache=False, steps=1, width=4, feature_dim=4)
    assert torch.equal(torch.rand(1), before)


def test_classifier_frechet_separates_data_from_noise(tmp_cache, one_thread):
    clf = gd.feature_classifier("digits", steps=150, width=8, feature_dim=16)
    data = gd.load_dataset("digits")[0]
    g = torch.Generator().manual_seed(0)
    noise = (0.5 * torch.randn(400, 1, 8, 8, generator=g)).clamp(-1, 1)
    same = gd.classifier_frechet_distance(data[:400], data[:400], clf)
    real = gd.classifier_frechet_distance(data[:400], data[400:800], clf)
    fake = gd.classifier_frechet_distance(noise, data[400:800], clf)
    assert same < 1e-8 * fake and 10 * real < fake
    assert clf.embed(data[:3]).shape == (3, 16)


def test_feature_classifier_bad_input(tmp_cache):
    with pytest.raises(ValueError, match="data: 'gaussian' has no labels"):
        gd.feature_classifier("gaussian")
    with pytest.raises(ValueError, match="data: labels must be 4"):
        gd.feature_classifier((torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match="holdout"):
        gd.feature_classifier("digits", holdout=1.5)
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        gd.feature_classifier("digits", steps=0)
    with pytest.raises(ValueError, match="classifier: expected"):
        gd.classifier_frechet_distance(torch.zeros(3, 1, 8, 8), torch.zeros(3, 1, 8, 8), classifier=3)
    bad = tmp_cache / "classifiers"
    bad.mkdir(parents=True)
    clf = gd.feature_classifier("digits", steps=1, width=4, feature_dim=4)
    (bad / f"{clf.info['cache_key']}.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cache: .* is unreadable"):
        gd.feature_classifier("digits", steps=1, width=4, feature_dim=4)


def test_frechet_refuses_a_covariance_that_is_not_psd():
    with pytest.raises(ValueError, match="a: covariance is not positive semi-definite"):
        gd.frechet_distance(([0.0, 0.0], np.diag([1.0, -1.0])), ([0.0, 0.0], np.eye(2)))
    with pytest.raises(ValueError, match="features: needs at least 2"):
        gd.FeatureStats.from_features([[1.0, 2.0]])


def test_feature_classifier_cache_key_follows_labels_and_settings(tmp_cache):
    images = gd.load_dataset("digits")[0][:200]
    labels = gd.load_dataset("digits")[1][:200]
    kw = dict(steps=2, width=4, feature_dim=4)
    keys = {
        gd.feature_classifier((images, labels), **kw).info["cache_key"],
        gd.feature_classifier((images, 9 - labels), **kw).info["cache_key"],  # other labels
        gd.feature_classifier((images, labels), seed=1, **kw).info["cache_key"],
        gd.feature_classifier((images, labels), steps=3, width=4, feature_dim=4).info["cache_key"],
    }
    assert len(keys) == 4 and len(list((tmp_cache / "classifiers").glob("*.pt"))) == 4


def test_feature_stats_accepts_rank_deficient_covariances_in_their_own_rounding():
    """A hand-made FeatureStats is checked as a (mean, cov) pair is (symmetric, PSD), with the
    tolerance of its own dtype: a rank-deficient float32 covariance (N < D, eigenvalues at
    -1e-7 D max|cov| from rounding) is accepted, a truly indefinite one refused."""
    gen = torch.Generator().manual_seed(3)
    f = torch.randn(20, 64, generator=gen)
    cov32 = torch.cov(f.T).float()  # rank 19 of 64, rounded to float32
    assert float(torch.linalg.eigvalsh(cov32.double()).min()) < 0  # rounding made it indefinite
    gd.FeatureStats(f.mean(0).float(), cov32, 20)
    gd.FeatureStats.from_features(f)
    with pytest.raises(ValueError, match="cov: covariance is not positive semi-definite"):
        gd.FeatureStats(torch.zeros(64), cov32 - 1e-3 * float(cov32.abs().max()) * torch.eye(64), 20)
