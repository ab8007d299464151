"""Bad values for every CLI verb (issue 16, bad-input suite), and ``gaussdiff validate`` outside a
source checkout (issue 17, item 5).

Each case runs ``gaussdiff.cli.main([...])`` in-process and asserts a non-zero exit, exactly one
``error:`` line on stderr that names the option (or the file), and no traceback. argparse's own
refusals (``SystemExit(2)``) count. Every case fails before any real work starts.

==================  =====
verb                cases
==================  =====
``demo``           10
``phase-curve``    27
``plot``            3
``train``          37
``inverse``        27
``validate``       11
other folders       4
==================  =====
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gaussdiff
import gaussdiff.validate as gvalidate
from gaussdiff.cli import main

REPO = Path(__file__).resolve().parent.parent

# Each case: (verb, arguments, what the error line must name). FILE is a plain file, DIR an
# empty folder, OUT a fresh output folder (all under the test's tmp_path).
DEMO = [
    ("demo", ["--n-train", "0"], "--n-train"),
    ("demo", ["--n-train", "1"], "--n-train"),
    ("demo", ["--n-train", "x"], "--n-train"),
    ("demo", ["--n-train", "nan"], "--n-train"),
    ("demo", ["--samples", "-1"], "--samples"),
    ("demo", ["--steps", "0"], "--steps"),
    ("demo", ["--dim", "0"], "--dim"),
    ("demo", ["--seed", "-1", "--n-train", "4", "--samples", "4", "--steps", "2"], "--seed"),
    ("demo", ["--seed", "1.5"], "--seed"),
    ("demo", ["--outdir", "FILE"], "--outdir"),
]
PHASE = [
    ("phase-curve", ["--sizes", ""], "--sizes"),
    ("phase-curve", ["--sizes", "4,,8"], "--sizes"),
    ("phase-curve", ["--seeds", "0,"], "--seeds"),
    ("phase-curve", ["--sizes", "a,b"], "--sizes"),
    ("phase-curve", ["--sizes", "8,4"], "--sizes"),
    ("phase-curve", ["--sizes", "-4"], "--sizes"),
    ("phase-curve", ["--sizes", "1"], "--sizes"),
    ("phase-curve", ["--sizes", "4000"], "--sizes"),
    ("phase-curve", ["--seeds", ""], "--seeds"),
    ("phase-curve", ["--widths", ""], "--widths"),
    ("phase-curve", ["--widths", "0"], "--widths"),
    ("phase-curve", ["--frameworks", "ddpm"], "--frameworks"),
    ("phase-curve", ["--frameworks", ""], "--frameworks"),
    ("phase-curve", ["--net", "cnn"], "--net"),
    ("phase-curve", ["--steps", "0"], "--steps"),
    ("phase-curve", ["--steps", "x"], "--steps"),
    ("phase-curve", ["--checkpoints", "0"], "--checkpoints"),
    ("phase-curve", ["--samples", "0"], "--samples"),
    ("phase-curve", ["--threshold", "nan"], "--threshold"),
    ("phase-curve", ["--threshold", "2"], "--threshold"),
    ("phase-curve", ["--threshold", "high"], "--threshold"),
    ("phase-curve", ["--data", "no-such-set"], "--data"),
    ("phase-curve", ["--data", "/no/such/file.npz"], "--data"),
    ("phase-curve", ["--device", "tpu"], "--device"),
    ("phase-curve", ["--workers", "-1"], "--workers"),
    ("phase-curve", ["--workers", "many"], "--workers"),
    ("phase-curve", ["--outdir", "FILE"], "--outdir"),
]
PLOT = [
    ("plot", ["DIR/none"], "results_dir"),
    ("plot", ["FILE"], "results_dir"),
    ("plot", ["DIR"], "results_dir"),
]
TRAIN = [
    ("train", ["--steps", "-1"], "--steps"),
    ("train", ["--steps", "x"], "--steps"),
    ("train", ["--lr", "0"], "--lr"),
    ("train", ["--lr", "nan"], "--lr"),
    ("train", ["--lr", "-1"], "--lr"),
    ("train", ["--batch-size", "0"], "--batch-size"),
    ("train", ["--ema", "1"], "--ema"),
    ("train", ["--framework", "ddpm"], "--framework"),
    ("train", ["--net", "cnn"], "--net"),
    ("train", ["--width", "0"], "--width"),
    ("train", ["--depth", "-1"], "--depth"),
    ("train", ["--sigma-data", "nan"], "--sigma-data"),
    ("train", ["--sigma-data", "median"], "--sigma-data"),
    ("train", ["--p-mean", "nan"], "--p-mean"),
    ("train", ["--p-std", "inf"], "--p-std"),
    ("train", ["--grad-clip", "nan"], "--grad-clip"),
    ("train", ["--label-dropout", "1"], "--label-dropout"),
    ("train", ["--device", "tpu"], "--device"),
    ("train", ["--seed", "-1"], "--seed"),
    ("train", ["--warmup", "-1"], "--warmup"),
    ("train", ["--log-every", "0"], "--log-every"),
    ("train", ["--save-every", "0"], "--save-every"),
    ("train", ["--data", "no-such-set"], "--data"),
    ("train", ["--data", "/no/such/file.npy"], "--data"),
    ("train", ["--data", "FILE"], "FILE"),
    ("train", ["--n", "0", "--steps", "1"], "--n"),
    ("train", ["--n", "100000", "--steps", "1"], "--n"),
    ("train", ["--part", "2"], "--part"),
    ("train", ["--checkpoint-steps", "a,b", "--steps", "1"], "--checkpoint-steps"),
    ("train", ["--checkpoint-steps", "1,,2", "--steps", "4"], "--checkpoint-steps"),
    ("train", ["--checkpoint-steps", "5", "--steps", "1"], "--checkpoint-steps"),
    ("train", ["--classes", "", "--steps", "1"], "--classes"),
    ("train", ["--classes", "99", "--steps", "1"], "--classes"),
    ("train", ["--data", "gaussian:d=4", "--conditional", "--steps", "1"], "--conditional"),
    ("train", ["--init-from", "DIR/none", "--steps", "1"], "--init-from"),
    ("train", ["--threads", "0", "--steps", "1"], "--threads"),
    ("train", ["--outdir", "FILE", "--steps", "1"], "--outdir"),
]
INVERSE = [
    ("inverse", ["--operator", "smear:1"], "--operator"),
    ("inverse", ["--operator", "inpaint:2"], "--operator"),
    ("inverse", ["--operator", "inpaint:x"], "--operator"),
    ("inverse", ["--operator", "blur:-1"], "--operator"),
    ("inverse", ["--operator", "down:0"], "--operator"),
    ("inverse", ["--operator", "down:3"], "--operator"),
    ("inverse", ["--operator", "project:0"], "--operator"),
    ("inverse", ["--sigma-y", "0"], "--sigma-y"),
    ("inverse", ["--sigma-y", "nan"], "--sigma-y"),
    ("inverse", ["--sigma-y", ""], "--sigma-y"),
    ("inverse", ["--sigma-y", "0.1,,x"], "--sigma-y"),
    ("inverse", ["--sampler", "langevin"], "--sampler"),
    ("inverse", ["--sampler", ""], "--sampler"),
    ("inverse", ["--prior", "flat"], "--prior"),
    ("inverse", ["--prior", "mixture", "--data", "gaussian:d=4"], "--prior"),
    ("inverse", ["--steps", "0"], "--steps"),
    ("inverse", ["--steps", ""], "--steps"),
    ("inverse", ["--steps", "1.5"], "--steps"),
    ("inverse", ["--n-train", "1"], "--n-train"),
    ("inverse", ["--n-meas", "0"], "--n-meas"),
    ("inverse", ["--n-meas", "100000"], "--n-meas"),
    ("inverse", ["--samples", "0"], "--samples"),
    ("inverse", ["--dps-zeta", "nan"], "--dps-zeta"),
    ("inverse", ["--threads", "0"], "--threads"),
    ("inverse", ["--data", "no-such-set"], "--data"),
    ("inverse", ["--data", "/no/such/file.npz"], "--data"),
    ("inverse", ["--outdir", "FILE"], "--outdir"),
]
VALIDATE = [
    ("validate", ["--only", ""], "--only"),
    ("validate", ["--only", "no_such_script"], "--only"),
    ("validate", ["--scripts", "FILE"], "--scripts"),
    ("validate", ["--scripts", "DIR"], "--scripts"),
    ("validate", ["--scripts", "DIR/none"], "--scripts"),
    ("validate", ["--threads", "0"], "--threads"),
    ("validate", ["--threads", "two"], "--threads"),
    ("validate", ["--timeout", "-1"], "--timeout"),
    ("validate", ["--timeout", "nan"], "--timeout"),
    ("validate", ["--timeout", "soon"], "--timeout"),
    ("validate", ["--outdir", "FILE", "--only", "biroli_regimes"], "--outdir"),
]
CASES = DEMO + PHASE + PLOT + TRAIN + INVERSE + VALIDATE
TAKES_OUTDIR = {"demo", "phase-curve", "train", "inverse", "validate"}


def _fill(args: list, tmp: Path) -> list:
    (tmp / "FILE").write_text("not data\n")
    (tmp / "DIR").mkdir(exist_ok=True)
    return [a.replace("FILE", str(tmp / "FILE")).replace("DIR", str(tmp / "DIR")) for a in args]


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "verb, args, names", CASES, ids=[f"{v}:{' '.join(a) if any(a) else repr(a)}" for v, a, _ in CASES]
)
def test_bad_value_gives_one_error_line(verb, args, names, tmp_path, capsys, one_thread):
    argv = [verb, *_fill(args, tmp_path)]
    if verb in TAKES_OUTDIR and "--outdir" not in args:
        argv += ["--outdir", str(tmp_path / "OUT")]
    if verb == "train":
        argv.append("--no-progress")
    names = names.replace("FILE", str(tmp_path / "FILE"))
    rc, err = _run(argv, capsys)
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gaussdiff {verb}: error: "), err
    assert names in lines[0], (names, lines[0])


# -- issue 17, item 5: validate outside a source checkout ---------------------------------------------


def test_validate_from_another_folder_of_an_editable_install_finds_the_scripts(tmp_path, monkeypatch):
    """An editable install (this checkout) finds validation/ beside the package from any folder."""
    monkeypatch.chdir(tmp_path)
    assert gvalidate.find_scripts_dir() == (REPO / "validation").resolve()


def test_validate_without_the_scripts_says_where_they_are_and_what_to_do(tmp_path, monkeypatch, capsys):
    """An installed wheel has no validation/ beside the package: simulated by pointing the
    package's own candidate at a folder that does not exist, from a folder without one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gvalidate, "_source_checkout", lambda: tmp_path / "site-packages" / "validation")
    rc, err = _run(["validate", "--fast", "--outdir", str(tmp_path / "out")], capsys)
    assert rc == 2 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.strip()]
    for words in (
        "error: --scripts:",
        "not part of the installed package",
        "source repository",
        "--scripts PATH/TO/validation",
        f"{tmp_path / 'validation'} (no such folder)",
    ):
        assert words in line, line
    assert not (tmp_path / "out").exists()  # nothing written


def test_validate_from_an_installed_copy_of_the_package(tmp_path):
    """The real thing: the package copied into a site folder (as a wheel installs it, without
    validation/), run as ``python -m gaussdiff.cli validate`` from an unrelated folder."""
    site = tmp_path / "site"
    shutil.copytree(Path(gaussdiff.__file__).parent, site / "gaussdiff", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-m", "gaussdiff.cli", "validate", "--fast", "--outdir", "out"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "not part of the installed package" in line and str(site / "gaussdiff") in line, line
    assert "--scripts PATH/TO/validation" in line


def test_validate_with_a_relative_outdir_from_another_folder(tmp_path, monkeypatch, capsys):
    """The scripts run in the repository root: a relative --outdir is the caller's folder's (it
    used to land under the repository root, and the runner then found no result.json)."""
    scripts = tmp_path / "validation"
    scripts.mkdir()
    (scripts / "_common.py").write_text("")
    (scripts / "quick.py").write_text(
        '"""from _common import ...; Report(...)"""\n'
        "import json, sys, pathlib\n"
        'out = pathlib.Path(sys.argv[sys.argv.index("--outdir") + 1])\n'
        'c = {"what": "x", "value": 1.0, "status": "PASS", "expected": "1"}\n'
        'r = {"name": "quick", "claim": "c", "expected": "e", "measured": "m", "status": "PASS", "checks": [c]}\n'
        '(out / "result.json").write_text(json.dumps(r))\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["validate", "--scripts", str(scripts), "--outdir", "rel"]) == 0, capsys.readouterr().err
    assert (work / "rel" / "quick" / "result.json").is_file()
