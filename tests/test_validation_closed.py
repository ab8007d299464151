"""The closed-form and lightly trained validation scripts (issue 9, items 2, 3 and 5) in their fast
mode, and the ``gaussdiff validate`` runner (item 7).

Each script test runs ``--fast`` into ``tmp_path`` and checks ``result.json``: status PASS or
FAIL, PASS exactly when every check passes, a reason for a FAIL, the figure on disk. A FAIL is an
acceptable outcome in fast mode. The runner tests use tiny stub scripts (seconds) besides one
end-to-end run of a real script through the command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gaussdiff import cli
from gaussdiff.validate import README_END, README_START, discover, run_validation

VALIDATION = Path(__file__).resolve().parent.parent / "validation"


def test_biroli_regimes_fast(tmp_path, run_fast_validation):
    import math

    res = run_fast_validation("biroli_regimes", tmp_path)
    ent, traj = res["entropy"], res["trajectories"]
    assert [e["d"] for e in ent] == [64, 256] and [r["d"] for r in traj] == [16, 64]
    for e in ent:  # the predictions recorded are the library's (R3); the estimator is exact algebra
        assert e["t_C_pred"] == pytest.approx(0.5 * math.log1p(1.0 / math.expm1(2 * math.log(e["P"]) / e["d"])))
        assert e["log_density_check"] < 1e-9  # same per-sample value as EmpiricalDenoiser.log_density
        assert min(e["f"]) >= 0 and max(e["f_se"]) < 0.05
        assert e["t_C_rule_on_theory"] == pytest.approx(e["t_C_pred"], rel=0.06)
    for r in traj:
        assert r["t_S"] == pytest.approx(0.5 * math.log(r["d"] + 1.0))
        assert 0 < r["t_C_pred"] < r["t_S"]
    # the collapse check's verdict follows from the recorded relative error and its threshold
    chk = next(c for c in res["checks"] if c["what"].startswith("collapse: |t_C,meas"))
    top = ent[-1]
    assert chk["value"] == pytest.approx(abs(top["t_C"] - top["t_C_pred"]) / top["t_C_pred"])
    assert (chk["status"] == "PASS") == (chk["value"] <= res["thresholds"]["tol_tc"])
    assert res["thresholds"]["level_spec"] == 0.775


def test_yi_empirical_optimum_fast(tmp_path, run_fast_validation):
    res = run_fast_validation("yi_empirical_optimum", tmp_path)
    mi = res["mutual_information"]
    # the plug-in MI is an entropy of a quantiser with N + 1 cells: within [0, log(N + 1)]
    import math

    for v in mi.values():
        assert -1e-12 <= v["raw"] <= math.log(129) + 1e-9
        assert v["mm"] >= v["raw"]
    rate = res["rate_table"]
    assert [r["n"] for r in rate] == sorted(r["n"] for r in rate)


def test_li_gaussian_structure_fast(tmp_path, run_fast_validation):
    res = run_fast_validation("li_gaussian_structure", tmp_path)
    # the wide model at every N, the narrow one (width >= d = 64) at the largest N only
    assert set(res["table"]) == {"N16_w128", "N256_w128", "N256_w64"}
    assert [c["what"][0] for c in res["checks"]] == ["1", "2", "3", "4", "5"]
    assert all(m["stopped"] in ("plateau", "budget reached") for m in res["models"])
    assert res["early_training_trajectory"]


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

_STUB = '''"""Stub claim for the runner tests."""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, parse_args


def main(argv=None):
    args = parse_args(__doc__, argv)
    rep = Report("{name}", claim="stub claim {name}", source="nobody 2024", expected="value >= 1", args=args)
    value = {value}
    rep.check("value", value=value, se=0.1, passed=value >= 1, expected=">= 1")
    (rep.outdir / "{name}.png").write_bytes(b"png")
    return rep.finish(figures=[rep.outdir / "{name}.png"], reason="" if value >= 1 else "too small")


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def stub_scripts(tmp_path):
    d = tmp_path / "repo" / "validation"
    d.mkdir(parents=True)
    shutil.copy(VALIDATION / "_common.py", d / "_common.py")
    (d / "good.py").write_text(_STUB.format(name="good", value=2.0))
    (d / "bad.py").write_text(_STUB.format(name="bad", value=0.5))
    (d / "crash.py").write_text("raise SystemExit('boom: no result')\n")
    (d / "own_parser.py").write_text("import argparse\nprint('not a harness script')\n")
    (d / "README.md").write_text(f"# t\n\n{README_START}\nold\n{README_END}\n\ntail text\n")
    return d


def test_discover_kinds(stub_scripts):
    kinds = {i.name: i.kind for i in discover(stub_scripts)}
    assert kinds == {"bad": "harness", "crash": "other", "good": "harness", "own_parser": "other"}
    assert {
        i.kind
        for i in discover(VALIDATION)
        if i.name in ("biroli_regimes", "yi_empirical_optimum", "li_gaussian_structure")
    } == {"harness"}
    assert [i.kind for i in discover(VALIDATION) if i.name == "inverse_reproducibility"] == ["adapter"]


def test_runner_table_and_readme(stub_scripts, tmp_path):
    out = tmp_path / "out"
    infos = run_validation(out, fast=True, scripts=stub_scripts, update_readme=True, echo=lambda s: None)
    status = {i.name: i.status for i in infos}
    assert status == {"bad": "FAIL", "crash": "NOT RUN", "good": "PASS", "own_parser": "NOT RUN"}
    table = (out / "validation_table.md").read_text()
    assert "| claim | script | expected | measured | PASS/FAIL | wall time |" in table
    assert "stub claim good" in table and "PASS" in table and "FAIL (too small)" in table
    assert table.count("not in harness format") == 2
    readme = (stub_scripts / "README.md").read_text()
    assert "old" not in readme and "stub claim bad" in readme and readme.rstrip().endswith("tail text")
    summary = json.loads((out / "validation.json").read_text())
    assert {s["name"] for s in summary} == set(status)
    # --reuse keeps finished results of the same mode without running again
    (out / "good" / "result.json").write_text(
        (out / "good" / "result.json").read_text().replace("stub claim good", "stub claim reused")
    )
    again = run_validation(out, fast=True, only="good", scripts=stub_scripts, reuse=True, echo=lambda s: None)
    assert again[0].message == "reused" and "stub claim reused" in (out / "validation_table.md").read_text()


def test_runner_crash_is_an_error(stub_scripts, tmp_path):
    # a script that looks like a harness script but dies before writing result.json
    (stub_scripts / "dies.py").write_text("from _common import Report\nReport(\nraise SystemExit(3)\n")
    infos = run_validation(tmp_path / "o", fast=True, only=["dies"], scripts=stub_scripts, echo=lambda s: None)
    assert infos[0].status == "ERROR" and "no result.json" in infos[0].message


def test_cli_only_unknown_is_refused(capsys):
    rc = cli.main(
        ["validate", "--fast", "--only", "nosuchname", "--outdir", "/tmp/unused", "--scripts", str(VALIDATION)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "no validation script named 'nosuchname'" in err and "biroli_regimes" in err


def test_cli_missing_scripts_folder(tmp_path, capsys):
    rc = cli.main(["validate", "--fast", "--outdir", str(tmp_path / "o"), "--scripts", str(tmp_path)])
    assert rc == 2
    assert "no validation/ folder" in capsys.readouterr().err


def test_cli_validate_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(VALIDATION.parent)  # found as ./validation
    rc = cli.main(["validate", "--fast", "--only", "biroli_regimes", "--outdir", str(tmp_path)])
    assert rc == 0
    table = (tmp_path / "validation_table.md").read_text()
    assert "biroli_regimes.py" in table and "Biroli" in table
    row = [ln for ln in table.splitlines() if "biroli_regimes.py" in ln][0]
    res = json.loads((tmp_path / "biroli_regimes" / "result.json").read_text())
    assert res["status"] in row and (tmp_path / "biroli_regimes" / "biroli_regimes.png").exists()
    assert (tmp_path / "biroli_regimes" / "log.txt").read_text().strip()


def test_help_has_examples():
    text = cli.build_parser()._subparsers._group_actions[0].choices["validate"].format_help()
    assert "gaussdiff validate --fast" in text and "--only" in text and "--update-readme" in text


def test_inverse_adapter_converts_its_json(tmp_path):
    from gaussdiff.validate import ADAPTERS

    (tmp_path / "inverse_reproducibility.json").write_text(
        json.dumps(
            {
                "checks": [
                    {"name": "A gaussian: heun vs euler", "value": 1.0, "verdict": "PASS"},
                    {"name": "C edm vs vp", "value": 0.5, "verdict": "FAIL"},
                ]
            }
        )
    )
    checks = ADAPTERS["inverse_reproducibility"].convert(tmp_path)
    assert [c["status"] for c in checks] == ["PASS", "FAIL"] and checks[1]["value"] == 0.5


def test_train_to_plateau_reruns_and_refuses_another_run(tmp_path, one_thread):
    """``_common.train_to_plateau``: a rerun into the same folder reads what it trained (same
    history), and a folder holding a run of other settings is refused, never silently reused."""
    import sys

    sys.path.insert(0, str(VALIDATION))
    from _common import train_to_plateau

    import gaussdiff as gd

    train = gd.load_dataset("gmm:k=2,d=4,n=64")[0]
    kw = dict(start=20, max_steps=80, tol=0.0, gap_draws=64, width=16, batch_size=16, seed=0)
    res, hist, why = train_to_plateau(train, outdir=tmp_path / "m", **kw)
    assert why in ("plateau", "budget reached") and [h["step"] for h in hist][0] == 20
    res2, hist2, why2 = train_to_plateau(train, outdir=tmp_path / "m", **kw)  # rerun: read back
    assert hist2 == hist and why2 == why and res2.step == res.step
    with pytest.raises(ValueError, match="holds a different run"):
        train_to_plateau(train, outdir=tmp_path / "m", **{**kw, "seed": 1})
