"""The locality validation script (issue 18, item 5) in its fast mode, and its statistics.

The fast-mode test runs ``validation/kamb_locality.py --fast`` into ``tmp_path`` (~20 s) and
checks ``result.json``: the common contract (``run_fast_validation``), the shape of the run
(two data sets, six checks each), and that every recorded verdict follows from the recorded
numbers by the docstring's criteria. The agreement values are recomputed from the saved samples
by an independent route (numpy, float64), and the calibrated sizes from the recorded per-sample
choices. A FAIL is an acceptable outcome in fast mode (the network is far from trained).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

VALIDATION = os.path.join(os.path.dirname(__file__), "..", "validation")


@pytest.fixture(scope="module")
def kl():
    spec = importlib.util.spec_from_file_location(
        "_validation_kamb_locality", os.path.join(VALIDATION, "kamb_locality.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------
# the statistics the criteria use
# ---------------------------------------------------------------------------------------------


def test_lower_median_is_torch_median(kl, rng):
    """The authors take ``torch.median`` (the lower middle value): same numbers, odd stays odd."""
    for n in (1, 2, 5, 16):
        v = rng.choice([1, 3, 5, 7, 9, 11], size=(n, 7))
        assert np.array_equal(kl.lower_median(v, 0), torch.median(torch.tensor(v), 0).values.numpy())
        assert np.all(kl.lower_median(v, 0) % 2 == 1)


def test_spearman_matches_scipy_and_constant_is_zero(kl, rng):
    from scipy.stats import spearmanr

    for _ in range(5):
        x, y = rng.normal(size=9), rng.choice([1, 3, 5], size=9)  # ties in y
        assert kl.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert kl.spearman([1, 2, 3], [5, 5, 5]) == 0.0
    assert kl.spearman([1, 2, 3], [1, 3, 5]) == pytest.approx(1.0, abs=1e-12)


def test_paired_bootstrap(kl, rng):
    a, b = rng.normal(1.0, 0.1, 40), rng.normal(0.0, 0.1, 40)
    st = kl.paired_bootstrap(a, b, np.median, 500, np.random.default_rng(0))
    assert st["value"] == pytest.approx(np.median(a) - np.median(b), abs=1e-12)
    assert st["ci"][0] < st["value"] < st["ci"][1] and st["ci"][0] > 0.5
    # identical inputs: every replicate is 0
    z = kl.paired_bootstrap(a, a, np.mean, 200, np.random.default_rng(0))
    assert z["value"] == 0 and z["se"] == 0 and z["ci"] == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# the script, fast mode
# ---------------------------------------------------------------------------------------------


def _pearson_np(p, t):
    p = p.reshape(p.shape[0], -1).astype(np.float64)
    t = t.reshape(t.shape[0], -1).astype(np.float64)
    return np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(p, t)])


def _vn_r2_np(p, t):
    p = p.reshape(p.shape[0], -1).astype(np.float64)
    t = t.reshape(t.shape[0], -1).astype(np.float64)
    return 1.0 - ((p - t) ** 2).sum(1) / (t.var(1, ddof=1) * t.shape[1])


def test_kamb_locality_fast(tmp_path, run_fast_validation, kl):
    stored = run_fast_validation("kamb_locality", tmp_path)
    sets = stored["sets"]
    assert [s["name"] for s in sets] == ["mnist5k", "patches"]  # two image data sets
    assert len(stored["checks"]) == 6 * len(sets)  # 0a, 0b, 1 (x2), 2, 3
    checks = {c["what"]: c for c in stored["checks"]}
    for s in sets:
        n, cfg = s["name"], stored["config"]
        assert s["stopped"] in ("plateau", "close to the optimum", "budget reached")
        # --- 0: set-up
        c0a = checks[f"{n}: 0a network trained (excess training loss over the optimum)"]
        assert (c0a["status"] == "PASS") == (s["stopped"] in ("plateau", "close to the optimum"))
        mem = s["memorization"]["network"]
        c0b = checks[f"{n}: 0b network memorization (generalization regime)"]
        assert c0b["value"] == pytest.approx(mem["value"])
        assert (c0b["status"] == "PASS") == (mem["value"] + 2 * mem["se"] <= kl.MEM_MAX)
        # the empirical denoiser's samples are training images (its sampler memorizes)
        assert s["memorization"]["empirical"]["value"] >= 0.5
        # --- agreement values: recomputed from the saved samples (numpy, float64)
        x = {k: v.double().numpy() for k, v in torch.load(tmp_path / f"samples_{n}.pt").items()}
        assert set(x) == {"network", *kl.MACHINES}
        for m in kl.MACHINES:
            assert x[m].shape == (cfg["n_samples"], *s["shape"])
            # samples were stored as float32: the recomputation agrees to float32 rounding of the
            # images (a relative 6e-8 per entry), far below any difference the criteria use
            r = np.asarray(s["agreement"][m]["pearson_correlation"])
            np.testing.assert_allclose(r, _pearson_np(x[m], x["network"]), atol=1e-5)
            vn = np.asarray(s["agreement"][m]["variance_normalised_r2"])
            np.testing.assert_allclose(vn, _vn_r2_np(x[m], x["network"]), atol=1e-5)
            assert s["summary"][m]["r"]["median"] == pytest.approx(float(np.median(r)), abs=1e-12)
        # --- 1: local beats global
        r = {m: np.asarray(s["agreement"][m]["pearson_correlation"]) for m in kl.MACHINES}
        for g in kl.GLOBAL:
            c1 = checks[f"{n}: 1 median Pearson r to the network's samples, calibrated {kl.MATCHED_NAME} minus {g}"]
            st = s["claim1"][g]
            assert c1["value"] == pytest.approx(np.median(r[kl.MATCHED]) - np.median(r[g]), abs=1e-12)
            assert st["share_local_better"] == pytest.approx(np.mean(r[kl.MATCHED] > r[g]))
            assert st["ci"][0] <= c1["value"] <= st["ci"][1]
            assert (c1["status"] == "PASS") == (st["ci"][0] > 0 and st["share_local_better"] > 0.5)
        # --- 2: calibrated size grows with sigma; sizes from the recorded per-sample choices
        for v in kl.PATCH_VARIANTS:
            cal = s["calibration"][v]
            ch = np.asarray(cal["choices"])
            assert ch.shape == (cfg["n_calib"], cfg["levels"])
            assert set(np.unique(ch)) <= set(cal["sizes"])
            assert cal["median"] == torch.median(torch.tensor(ch), 0).values.tolist()
            assert cal["sigmas"] == s["grid"][:-1]  # calibrated at the sampling levels
        assert max(s["calibration"]["els"]["sizes"]) <= min(s["shape"][1:])  # ELS windows fit the image
        cal = s["calibration"][kl.MATCHED]
        c2 = checks[f"{n}: 2 Spearman(sigma, calibrated {kl.MATCHED_NAME} patch size)"]
        assert c2["value"] == pytest.approx(kl.spearman(cal["sigmas"], cal["median"]), abs=1e-12)
        st = s["claim2"]
        ok = st["ci"][0] > 0 and st["k_at_max_sigma"] > st["k_at_min_sigma"]
        assert (c2["status"] == "PASS") == ok
        assert st["k_at_max_sigma"] == cal["median"][0] and st["k_at_min_sigma"] == cal["median"][-1]
        # --- 3: data-driven masks at least as well as ELS (non-inferiority, margin fixed)
        vn = {m: np.asarray(s["agreement"][m]["variance_normalised_r2"]) for m in kl.MACHINES}
        c3 = checks[
            f"{n}: 3 mean variance-normalised r2 to the network's samples, Wiener masks minus calibrated {kl.MATCHED_NAME}"
        ]
        assert c3["value"] == pytest.approx(vn["wiener"].mean() - vn[kl.MATCHED].mean(), abs=1e-12)
        assert (c3["status"] == "PASS") == (s["claim3"]["ci"][0] > -kl.MARGIN)
