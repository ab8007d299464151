"""Agreement measures (gaussdiff.metrics.agreement): each against a direct numpy computation,
their invariances, the relations between them, the per-sigma profile and bad inputs."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussdiff.denoisers import GaussianDenoiser
from gaussdiff.metrics.agreement import (
    Agreement,
    agreement_measures,
    agreement_profile,
    coefficient_of_determination,
    cosine_similarity,
    pearson_correlation,
    variance_normalised_r2,
)

TOL = 1e-12  # float64 against float64 numpy: a few roundings of sums of 36 terms


def _pair(rng, B=7, shape=(2, 3, 6)):
    t = rng.normal(size=(B, *shape))
    p = 0.8 * t + 0.3 * rng.normal(size=t.shape) + 0.1
    return torch.from_numpy(p), torch.from_numpy(t)


# -- numpy references, written from the definitions ------------------------------------------
def np_r2(p, t):
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    return np.array([1 - np.sum((a - b) ** 2) / np.sum((b - b.mean()) ** 2) for a, b in zip(p, t)])


def np_pearson(p, t):
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    return np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(p, t)])


def np_lukoianov(p, t):
    """calculate_r2_score(x=p, y=t) of Lukoianov et al.: unbiased variance of y times D."""
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    return np.array([1 - np.sum((a - b) ** 2) / (np.var(b, ddof=1) * b.size) for a, b in zip(p, t)])


def test_each_measure_matches_numpy(rng):
    p, t = _pair(rng)
    P, T = p.numpy(), t.numpy()
    np.testing.assert_allclose(coefficient_of_determination(p, t).values.numpy(), np_r2(P, T), rtol=0, atol=TOL)
    np.testing.assert_allclose(pearson_correlation(p, t).values.numpy(), np_pearson(P, T), rtol=0, atol=TOL)
    np.testing.assert_allclose(variance_normalised_r2(p, t).values.numpy(), np_lukoianov(P, T), rtol=0, atol=TOL)
    cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(P.reshape(7, -1), T.reshape(7, -1))]
    np.testing.assert_allclose(cosine_similarity(p, t).values.numpy(), cos, rtol=0, atol=TOL)


def test_summaries_are_numpy_mean_and_median(rng):
    for B in (6, 7):  # even count: the median is the midpoint of the two middle values
        p, t = _pair(rng, B=B)
        a = pearson_correlation(p, t)
        vals = np_pearson(p.numpy(), t.numpy())
        assert abs(a.median - np.median(vals)) < TOL and abs(a.mean - vals.mean()) < TOL
    assert isinstance(a, Agreement) and a.measure == "pearson_correlation"


def test_float32_input_is_measured_in_float64(rng):
    p, t = _pair(rng)
    a = coefficient_of_determination(p.float(), t.float()).values
    assert a.dtype == torch.float64
    ref = np_r2(p.float().double().numpy(), t.float().double().numpy())
    np.testing.assert_allclose(a.numpy(), ref, rtol=0, atol=TOL)


def test_perfect_agreement_is_one(rng):
    _, t = _pair(rng)
    for f in (coefficient_of_determination, pearson_correlation, variance_normalised_r2, cosine_similarity):
        np.testing.assert_allclose(f(t, t).values.numpy(), 1.0, rtol=0, atol=TOL)


def test_constant_mean_prediction_has_r2_zero(rng):
    _, t = _pair(rng)
    mean = t.reshape(len(t), -1).mean(1).reshape(-1, 1, 1, 1).expand_as(t)
    np.testing.assert_allclose(coefficient_of_determination(mean, t).values.numpy(), 0.0, rtol=0, atol=TOL)


def test_invariances(rng):
    """Pearson: invariant under positive affine maps of either image, odd under a sign flip,
    symmetric. R^2: changes when the prediction alone is rescaled, unchanged under one affine map
    applied to both. Neither is changed by permuting the entries of both alike."""
    p, t = _pair(rng)
    r = pearson_correlation(p, t).values
    for a, b in ((3.0, 2.5), (-1.0, 0.01)):
        np.testing.assert_allclose(pearson_correlation(a + b * p, t).values, r, rtol=0, atol=TOL)
        np.testing.assert_allclose(pearson_correlation(p, a + b * t).values, r, rtol=0, atol=TOL)
    np.testing.assert_allclose(pearson_correlation(-p, t).values, -r, rtol=0, atol=TOL)
    np.testing.assert_allclose(pearson_correlation(t, p).values, r, rtol=0, atol=TOL)
    r2 = coefficient_of_determination(p, t).values
    assert (coefficient_of_determination(2.0 * p, t).values - r2).abs().min() > 0.1
    assert (coefficient_of_determination(p + 1.0, t).values - r2).abs().min() > 0.1
    np.testing.assert_allclose(coefficient_of_determination(3 + 2 * p, 3 + 2 * t).values, r2, rtol=0, atol=TOL)
    perm = torch.from_numpy(rng.permutation(36))
    pp, tp = p.reshape(7, -1)[:, perm], t.reshape(7, -1)[:, perm]
    np.testing.assert_allclose(coefficient_of_determination(pp, tp).values, r2, rtol=0, atol=TOL)
    assert (coefficient_of_determination(t, p).values - r2).abs().max() > 1e-3  # not symmetric


images = st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed))


@settings(max_examples=60, deadline=None)
@given(gen=images, D=st.integers(2, 40), B=st.integers(1, 5), scale=st.floats(1e-3, 1e3), noise=st.floats(0, 3))
def test_relations_hold(gen, D, B, scale, noise):
    """For every prediction: R^2 <= r^2; the least-squares affine fit of the target on the
    prediction reaches R^2 = r^2; the variance-normalised r2 is 1 - (D-1)/D (1 - R^2)."""
    t = scale * gen.normal(size=(B, D))
    p = gen.normal() * t + noise * scale * gen.normal(size=(B, D)) + gen.normal(size=(B, 1))
    if np.any(np.ptp(p, axis=1) < 1e-9 * scale):  # a (numerically) constant prediction
        return
    P, T = torch.from_numpy(p), torch.from_numpy(t)
    r2 = coefficient_of_determination(P, T).values.numpy()
    r = pearson_correlation(P, T).values.numpy()
    assert np.all(r2 <= r**2 + 1e-12)
    fitted = np.stack([np.polyval(np.polyfit(a, b, 1), a) for a, b in zip(p, t)])
    r2_fit = coefficient_of_determination(torch.from_numpy(fitted), T).values.numpy()
    np.testing.assert_allclose(r2_fit, r**2, rtol=0, atol=1e-9)  # polyfit's own rounding
    luk = variance_normalised_r2(P, T).values.numpy()
    np.testing.assert_allclose(luk, 1 - (D - 1) / D * (1 - r2), rtol=1e-12, atol=1e-12)


def test_agreement_measures_gives_the_three(rng):
    p, t = _pair(rng)
    out = agreement_measures(p, t)
    assert list(out) == ["coefficient_of_determination", "pearson_correlation", "variance_normalised_r2"]
    assert torch.equal(out["pearson_correlation"].values, pearson_correlation(p, t).values)
    assert list(agreement_measures(p, t, measures="cosine_similarity")) == ["cosine_similarity"]


def test_profile_uses_the_same_noisy_inputs(rng):
    """Against a direct loop: the same noise for both denoisers at each level, drawn from the
    generator level by level as (S, B, *shape)."""
    data = torch.from_numpy(rng.normal(size=(40, 1, 2, 3)) @ np.diag([1.0, 0.5, 0.2])[None, None])
    g1, g2 = GaussianDenoiser.fit(data), GaussianDenoiser.fit(data[:20])
    x0 = data[:6]
    sig = [0.1, 1.0, 4.0]
    prof = agreement_profile(g1, g2, x0, sig, generator=torch.Generator().manual_seed(3))
    noise = torch.randn((3, *x0.shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for s, v in enumerate(sig):
        x = x0 + v * noise[s]
        ref = np_pearson(g1(x, v).numpy(), g2(x, v).numpy())
        np.testing.assert_allclose(prof.values["pearson_correlation"][s].numpy(), ref, rtol=0, atol=TOL)
        ref = np_lukoianov(g1(x, v).numpy(), g2(x, v).numpy())
        np.testing.assert_allclose(prof.at(s, "variance_normalised_r2").values.numpy(), ref, rtol=0, atol=TOL)
    med = prof.profile("coefficient_of_determination")
    assert torch.equal(med.sigmas, torch.tensor(sig, dtype=torch.float64))
    assert med.values.shape == (3,)
    same = agreement_profile(g1, g1, x0, sig, generator=torch.Generator().manual_seed(3))
    for m in same.values:
        np.testing.assert_allclose(same.values[m].numpy(), 1.0, rtol=0, atol=TOL)


def test_bad_inputs_name_the_argument(rng):
    p, t = _pair(rng)
    with pytest.raises(ValueError, match="^target: expected the shape"):
        coefficient_of_determination(p, t[:3])
    bad = p.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^prediction: contains NaN"):
        pearson_correlation(bad, t)
    with pytest.raises(ValueError, match="^target: contains NaN"):
        variance_normalised_r2(t, bad)
    const = t.clone()
    const[2] = 0.5
    for f in (coefficient_of_determination, pearson_correlation, variance_normalised_r2):
        with pytest.raises(ValueError, match="^target: image 2 is constant"):
            f(p, const)
    with pytest.raises(ValueError, match="^prediction: image 2 is constant"):
        pearson_correlation(const, t)
    with pytest.raises(ValueError, match="^prediction: expected a torch.Tensor"):
        pearson_correlation(p.numpy(), t)
    with pytest.raises(ValueError, match="^target: expected a batch"):
        pearson_correlation(p, t[:, :0])  # images without entries
    with pytest.raises(ValueError, match="^prediction: expected a batch"):
        pearson_correlation(p[:, :1, :1, :1], t[:, :1, :1, :1])  # one entry: no variance
    with pytest.raises(ValueError, match="^measures:"):
        agreement_measures(p, t, measures=["r2"])
    g = GaussianDenoiser.fit(t.reshape(7, -1)[:, :4].reshape(7, 1, 2, 2))
    x0 = t.reshape(7, -1)[:, :4].reshape(7, 1, 2, 2)
    with pytest.raises(ValueError, match="^generator:"):
        agreement_profile(g, g, x0, [1.0], generator=None)
    with pytest.raises(ValueError, match="^sigmas:"):
        agreement_profile(g, g, x0, [1.0, -1.0], generator=torch.Generator())
    with pytest.raises(ValueError, match="^reference: image 0 is constant"):
        agreement_profile(g, lambda x, s: torch.zeros_like(x), x0, [1.0], generator=torch.Generator())
