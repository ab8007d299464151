"""The validation scripts that train networks (issue 9, items 1, 4 and 6) in their fast mode.

Each test runs one script's ``--fast`` mode into ``tmp_path`` and checks that it writes
``result.json`` and its figure, that its status is PASS exactly when every check passes, and
that every check's verdict follows from the numbers it recorded (re-derived here from the stored
values, never from the printed verdict). A FAIL is an acceptable outcome in fast mode.
"""

from __future__ import annotations

import math
import re

import pytest


@pytest.fixture
def run_checked(run_fast_validation):
    """The common result.json contract, and every threshold check's verdict recomputed."""

    def run(name, outdir):
        stored = run_fast_validation(name, outdir)
        for c in stored["checks"]:
            _check_threshold_rule(c)
        return stored

    return run


_RULE = re.compile(r"^([-+]) 2 se (>=|<=|<|>) ([0-9.]+)$")


def _check_threshold_rule(c: dict) -> None:
    """Checks stated as ``value -/+ 2 se  OP  X`` or ``> 2 se``: recompute the verdict."""
    m = _RULE.match(c["expected"])
    v, se = c["value"], c["se"] or 0.0
    if m:
        sign, op, x = m.group(1), m.group(2), float(m.group(3))
        lhs = v - 2 * se if sign == "-" else v + 2 * se
        ok = {">=": lhs >= x, "<=": lhs <= x, "<": lhs < x, ">": lhs > x}[op]
    elif c["expected"] == "> 2 se":
        ok = v > 2 * se
    else:
        return
    assert (c["status"] == "PASS") == ok, c


def _find(stored: dict, prefix: str) -> dict:
    found = [c for c in stored["checks"] if c["what"].startswith(prefix)]
    assert len(found) == 1, (prefix, [c["what"] for c in stored["checks"]])
    return found[0]


def test_zhang_reproducibility_fast(tmp_path, run_checked):
    stored = run_checked("zhang_reproducibility", tmp_path)
    per_n = stored["per_n"]
    assert len(per_n) >= 2  # both ends
    assert len(stored["checks"]) == 6
    # the substitute threshold: the 0.99 quantile of distinct-digit centred cosines (0.885)
    assert 0.85 < stored["threshold"] < 0.92
    # memorization: a max over N training images needs its own, higher null (0.918 at N = 4)
    t_mem = stored["memorization_threshold"]
    assert [int(k) for k in t_mem] == [r["n"] for r in per_n]
    assert all(v > stored["threshold"] for v in t_mem.values())
    assert list(t_mem.values()) == sorted(t_mem.values())
    for r in per_n:  # every model trained to the same measured rule
        for t in r["training"].values():
            assert t["stopped"] in ("plateau", "close to the optimum", "budget reached")
            assert [h["step"] for h in t["history"]] == [150, 300][: len(t["history"])]
    lo, hi = per_n[0], per_n[-1]
    # the recorded aggregates are the means of the recorded per-model / per-pair numbers
    for r in per_n:
        mems = [v[0] for v in r["memorization"].values()]
        assert r["mean_memorization"] == pytest.approx(sum(mems) / len(mems))
        fw = [r["pairs"][k][0] for k in ("edm-mlp|vp-mlp", "edm-mlp|flow-mlp", "vp-mlp|flow-mlp")]
        assert r["rp_framework"] == pytest.approx(sum(fw) / 3)
        assert r["rp_architecture"] == r["pairs"]["edm-mlp|edm-unet"][0]
        assert all(0.0 <= v[0] <= 1.0 for v in r["pairs"].values())
    assert _find(stored, f"mean memorization at N={lo['n']}")["value"] == pytest.approx(lo["mean_memorization"])
    assert _find(stored, f"mean memorization at N={hi['n']}")["value"] == pytest.approx(hi["mean_memorization"])
    assert _find(stored, f"framework RP (EDM/VP/flow MLPs) at N={hi['n']}")["value"] == pytest.approx(
        hi["rp_framework"]
    )
    dip = stored["dip_finding"]  # a finding (fast mode has a middle N), not a check
    assert dip["lowest_middle_rp_all"] == min(r["rp_all"] for r in per_n[1:-1])


def test_kadkhodaie_disjoint_fast(tmp_path, run_checked):
    from gaussdiff.experiments import transition_size

    stored = run_checked("kadkhodaie_disjoint", tmp_path)
    curves = stored["curves"]
    assert {k.split("_w")[0] for k in curves} == {"digits", "patches"}
    assert len({k.split("_w")[1] for k in curves}) >= 2  # at least two widths
    assert len(stored["checks"]) == 4 * len(curves) + 2 + 2
    assert stored["im_set_corr_max_abs_diff"] < 1e-5  # centred cosine == im_set_corr
    for key, c in curves.items():
        name, w = key.split("_w")
        assert c["threshold"] == pytest.approx(stored["thresholds"][name]["pair"])
        # a sample's maximum over its N training images has its own, higher null threshold
        t_mem = stored["thresholds"][name]["memorization"]
        assert [int(n) for n in t_mem] == c["ns"] and all(v > c["threshold"] for v in t_mem.values())
        a = _find(stored, f"{name} width {w}: memorization")
        assert a["value"] == pytest.approx(c["mem"][0]) == pytest.approx(c["mem_k"][0] / c["n_mem"])
        b = _find(stored, f"{name} width {w}: reproducibility")
        assert b["value"] == pytest.approx(c["rp"][-1]) == pytest.approx(c["rp_k"][-1] / c["n_pairs"])
        assert (a["status"] == "PASS") == (a["value"] - 2 * a["se"] >= 0.5)
        assert (b["status"] == "PASS") == (b["value"] - 2 * b["se"] >= 0.5)
        p = _find(stored, f"{name} width {w}: pair-cosine median")
        assert p["value"] == pytest.approx(c["med_pair"][-1] - c["med_pair"][0])
        assert (p["status"] == "PASS") == (p["value"] - 2 * p["se"] > 0)
        q = _find(stored, f"{name} width {w}: train-cosine median")
        assert q["value"] == pytest.approx(c["med_train"][0] - c["med_train"][-1])
        assert (q["status"] == "PASS") == (q["value"] - 2 * q["se"] > 0)
        # N* is the logistic fit of the recorded RP counts over all N (not a first crossing)
        fit = transition_size(c["ns"], c["rp_k"], [c["n_pairs"]] * len(c["ns"]), level=0.5, n_boot=10)
        if c["nstar"] is None:
            assert math.isnan(fit.n_star)
        else:
            assert c["nstar"] == pytest.approx(fit.n_star, rel=1e-6)
    for c in stored["checks"]:
        if "N*(" in c["what"]:
            share = float(re.search(r"ordered in ([0-9.]+)% of draws", c["note"]).group(1))
            assert (c["status"] == "PASS") == (share >= 97.5)


def test_bonnaire_tau_mem_fast(tmp_path, run_checked):
    import numpy as np

    stored = run_checked("bonnaire_tau_mem", tmp_path)
    assert len(stored["checks"]) == 4
    assert 0.5 < stored["classifier_accuracy"] <= 1.0
    assert stored["training"]["warmup"] == 0 and stored["training"]["ema"] == 0.0
    null = stored["fd_null"]
    for kind in ("classifier", "pixel"):
        assert null[kind]["tol"] == pytest.approx(null[kind]["mean"] + 2 * null[kind]["sd"])
    em, eg = stored["exponent_mem"], stored["exponent_gen"]
    c1 = _find(stored, "exponent of tau_mem")
    ok1 = (
        em["ci_low"] is not None
        and not math.isnan(em["ci_low"])
        and em["ci_low"] <= 1.0 <= em["ci_high"]
        and em["ci_low"] > 0.5
    )
    assert (c1["status"] == "PASS") == ok1
    c2 = _find(stored, "exponent of tau_gen")
    ok2 = not math.isnan(eg["ci_low"]) and eg["ci_low"] > -0.5 and eg["ci_high"] < 0.5
    assert (c2["status"] == "PASS") == ok2
    # the time scales follow from the recorded curves by the docstring's rules
    sizes = sorted({r["n"] for r in stored["rows"]})
    assert len(sizes) >= 3
    for t in stored["time_scales"]:
        rs = sorted((r for r in stored["rows"] if r["n"] == t["n"] and r["seed"] == t["seed"]), key=lambda r: r["step"])
        # tau_mem: first checkpoint from which the bootstrap lower bound of f_mem stays > 0
        pos = [r["memorization_ci_low"] > 0 for r in rs]
        if not pos[-1]:
            assert t["tau_mem"] is None
        else:
            i = len(pos) - 1
            while i > 0 and pos[i - 1]:
                i -= 1
            assert t["tau_mem"] == rs[i]["step"]
        # tau_gen: first checkpoint whose 3-point running median of FD_c is within tol of the
        # median of the last half of the checkpoints
        fd = [r["fd_classifier"] for r in rs]
        plateau = float(np.median(fd[len(fd) // 2 :]))
        assert t["fd_plateau"] == pytest.approx(plateau)
        med = [float(np.median(fd[max(0, i - 1) : i + 2])) for i in range(len(fd))]
        hit = [r["step"] for r, v in zip(rs, med) if v <= plateau + null["classifier"]["tol"]]
        assert t["tau_gen"] == (hit[0] if hit else None)
    big = [r for r in stored["rows"] if r["n"] == max(sizes)]
    last = [r for r in big if r["step"] == max(r["step"] for r in big)]
    assert _find(stored, "large net")["value"] == pytest.approx(np.mean([r["memorization"] for r in last]))
    small = _find(stored, "small net")
    assert small["value"] == pytest.approx(max(r["memorization"] for r in stored["rows_small"]))
    assert (small["status"] == "PASS") == all(r["memorization_ci_low"] <= 0 for r in stored["rows_small"])
