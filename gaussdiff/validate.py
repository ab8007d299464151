"""Run the ``validation/`` scripts and collect their verdicts into one table.

Each script in a repository's ``validation/`` folder reproduces one published claim and, when it
uses the harness ``validation/_common.py``, writes ``<outdir>/result.json`` with its claim,
expected outcome, measured numbers, checks and PASS/FAIL. :func:`run_validation` discovers the
scripts, runs each in its own process (``python SCRIPT --outdir DIR/NAME [--fast] --threads K``),
reads the results and writes ``DIR/validation_table.md`` (a markdown table: claim, script,
expected, measured, PASS/FAIL, wall time) and ``DIR/validation.json``; with
``update_readme=True`` it also rewrites the table of ``validation/README.md`` between the markers
``<!-- validation-table:start -->`` and ``<!-- validation-table:end -->``.

Scripts that do not use the harness are run through an adapter when one is registered in
:data:`ADAPTERS` (it converts the script's own output into ``result.json``), and are otherwise
listed as "not in harness format" and not run.

The ``validation/`` folder is not part of the installed package: it is found from ``scripts=``
(``--scripts DIR``), else ``./validation`` under the current directory, else next to the package
source of an editable install.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ._checks import check_int
from ._io import atomic_write, make_outdir
from ._procs import deferred_interrupts, kill_with_parent

__all__ = [
    "ScriptInfo",
    "find_scripts_dir",
    "discover",
    "run_validation",
    "format_table",
    "ADAPTERS",
    "README_START",
    "README_END",
]

README_START = "<!-- validation-table:start -->"
README_END = "<!-- validation-table:end -->"
STATUSES = ("PASS", "FAIL")


@dataclass(frozen=True)
class Adapter:
    """How to turn a non-harness script's own output into a harness ``result.json``.

    Attributes
    ----------
    claim, source, expected : the table's texts for the script.
    convert : ``convert(outdir) -> list of checks`` (dicts with ``what``, ``value``, ``status``,
        ``expected``), read from the files the script wrote in ``outdir``.
    """

    claim: str
    source: str
    expected: str
    convert: Callable[[Path], list]


def _inverse_checks(outdir: Path) -> list:
    """``inverse_reproducibility.json``'s ``checks`` (``name``, ``value``, ``verdict``) as harness checks;
    each check's threshold is stated in that script's docstring (parts A-D)."""
    data = json.loads((outdir / "inverse_reproducibility.json").read_text())
    return [
        {
            "what": c["name"],
            "value": c["value"],
            "se": None,
            "status": c["verdict"],
            "expected": "see validation/inverse_reproducibility.py (part " + c["name"][:1] + ")",
            "note": "",
        }
        for c in data["checks"]
    ]


#: Adapters for scripts with their own argument parser (they must accept ``--outdir``,
#: ``--fast`` and ``--threads``).
ADAPTERS: dict[str, Adapter] = {
    "inverse_reproducibility": Adapter(
        claim="exact posterior flows of inverse problems and conditional closed forms are reproducible "
        "across solvers and frameworks from the same noise",
        source="Zhang, Zhou, Lu, Guo, Wang, Shen & Qu, ICML 2024 (closed-form part; conditional and fine-tuned networks)",
        expected="exact flows: reproducibility share >= 0.95 (centred cosine >= 0.9) for every solver and "
        "framework pair, guided Gaussian flow on its exact map; networks (conditional, fine-tuned): "
        "share >= 0.9 with controls below 0.5",
        convert=_inverse_checks,
    ),
}


@dataclass
class ScriptInfo:
    """One script of ``validation/``: ``kind`` is ``"harness"``, ``"adapter"`` or ``"other"``."""

    name: str
    path: Path
    kind: str
    result: dict | None = None
    status: str = "NOT RUN"
    wall_seconds: float | None = None
    log: Path | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)


def _source_checkout() -> Path:
    """Where ``validation/`` is in a source checkout (an editable install): beside the package's
    folder. In an installed wheel this folder does not exist (the scripts are not shipped)."""
    return Path(__file__).resolve().parent.parent / "validation"


def _why_not(c: Path) -> str:
    if not c.exists():
        return "no such folder"
    if not c.is_dir():
        return "a file, not a folder"
    return "a folder without _common.py, not gaussdiff's validation scripts"


def find_scripts_dir(scripts=None) -> Path:
    """The ``validation/`` folder: ``scripts`` when given, else ``./validation``, else the one
    beside the package source (editable installs). Raises ``ValueError`` when none is found,
    saying where it looked, why each place does not qualify and what to do: the scripts live
    in the source repository, not in an installed wheel."""
    if scripts is not None:
        c = Path(scripts)
        if (c / "_common.py").is_file():
            return c.resolve()
        raise ValueError(
            f"scripts: no validation/ folder at {c} ({_why_not(c)}); give the validation/ folder of "
            "a gaussdiff source checkout (it holds _common.py and the scripts)"
        )
    cands = [Path.cwd() / "validation", _source_checkout()]
    for c in cands:
        if (c / "_common.py").is_file():
            return c.resolve()
    tried = "; ".join(f"{c} ({_why_not(c)})" for c in dict.fromkeys(cands))
    raise ValueError(
        "scripts: no validation/ folder found. The validation scripts live in the validation/ folder of "
        "the gaussdiff source repository and are not part of the installed package (gaussdiff "
        f"imported from {Path(__file__).resolve().parent}). Get the source (clone the repository "
        "or unpack the sdist), then run gaussdiff validate from its root folder, or pass "
        f"--scripts PATH/TO/validation. Looked in: {tried}"
    )


def discover(scripts_dir: Path) -> list[ScriptInfo]:
    """Every ``*.py`` of ``scripts_dir`` not starting with ``_``, sorted by name, with its kind:
    ``"harness"`` when it imports ``_common`` and builds a ``Report``, ``"adapter"`` when
    :data:`ADAPTERS` knows it, else ``"other"``."""
    out = []
    for path in sorted(Path(scripts_dir).glob("*.py")):
        if path.name.startswith("_"):
            continue
        text = path.read_text(errors="replace")
        if "from _common import" in text and "Report(" in text:
            kind = "harness"
        elif path.stem in ADAPTERS:
            kind = "adapter"
        else:
            kind = "other"
        out.append(ScriptInfo(name=path.stem, path=path, kind=kind))
    return out


def _check_result(res: dict) -> str:
    """'' when ``res`` is a harness result whose status follows from its checks, else why not."""
    for key in ("name", "claim", "expected", "status", "checks"):
        if key not in res:
            return f"result.json lacks {key!r}"
    if res["status"] not in STATUSES:
        return f"status {res['status']!r} is not PASS or FAIL"
    want = "PASS" if res["checks"] and all(c.get("status") == "PASS" for c in res["checks"]) else "FAIL"
    if res["status"] != want:
        return f"status {res['status']} contradicts its checks ({want})"
    return ""


def _adapt(info: ScriptInfo, outdir: Path, mode: str, wall: float) -> dict:
    ad = ADAPTERS[info.name]
    checks = ad.convert(outdir)
    status = "PASS" if checks and all(c["status"] == "PASS" for c in checks) else "FAIL"
    measured = "; ".join(f"{c['what']}: {c['value']:.4g}" for c in checks)
    res = {
        "name": info.name,
        "claim": ad.claim,
        "source": ad.source,
        "expected": ad.expected,
        "measured": measured,
        "status": status,
        "checks": checks,
        "mode": mode,
        "wall_seconds": wall,
        "figures": [p.name for p in outdir.glob("*.png")],
        "reason": "",
        "adapted": True,
    }
    atomic_write(outdir / "result.json", json.dumps(res, indent=1, default=str))
    return res


def _run_one(
    info: ScriptInfo,
    outdir: Path,
    *,
    fast: bool,
    threads: int,
    timeout: float | None,
    reuse: bool,
    echo: Callable[[str], None],
) -> None:
    mode = "fast" if fast else "full"
    make_outdir(outdir)
    result_file = outdir / "result.json"
    info.log = outdir / "log.txt"
    if reuse and result_file.is_file():
        try:
            res = json.loads(result_file.read_text())
        except ValueError:
            res = None
        if res is not None and res.get("mode") == mode:
            info.result, info.wall_seconds = res, res.get("wall_seconds")
            info.message = "reused"
            info.status = res.get("status", "ERROR") if not _check_result(res) else "ERROR"
            echo(f"   {info.name}: {info.status} (reused {result_file})")
            return
    if result_file.exists():
        result_file.unlink()
    # absolute: the script runs in the repository root, not in the caller's folder
    cmd = [sys.executable, str(info.path), "--outdir", str(outdir.resolve()), "--threads", str(threads)]
    if fast:
        cmd.append("--fast")
    echo(f"   {info.name}: running {' '.join(cmd[1:])}")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        with open(info.log, "w") as log:
            proc = subprocess.run(
                cmd,
                cwd=str(info.path.parent.parent),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                preexec_fn=kill_with_parent(),
            )
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = None
    info.wall_seconds = time.perf_counter() - t0
    if rc is None:
        info.status, info.message = "ERROR", f"timed out after {timeout:.0f} s"
    elif info.kind == "adapter":
        try:
            info.result = _adapt(info, outdir, mode, info.wall_seconds)
            info.status = info.result["status"]
        except (OSError, ValueError, KeyError) as exc:
            info.status, info.message = "ERROR", f"exit status {rc}; adapter failed: {exc}"
    elif not result_file.is_file():
        info.status, info.message = "ERROR", f"exit status {rc}, no result.json"
    else:
        res = json.loads(result_file.read_text())
        why = _check_result(res)
        info.result = res
        info.status = "ERROR" if why else res["status"]
        info.message = why or ("" if rc == 0 else f"exit status {rc}")
    if info.status == "ERROR":
        tail = info.log.read_text(errors="replace").strip().splitlines()[-5:] if info.log.exists() else []
        info.message += (" | " + " / ".join(tail)) if tail else ""
    echo(f"   {info.name}: {info.status} in {info.wall_seconds:.1f} s" + (f" ({info.message})" if info.message else ""))


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _wall(sec) -> str:
    if sec is None:
        return ""
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"


def format_table(infos: list[ScriptInfo]) -> str:
    """The markdown table: claim, script, expected, measured, PASS/FAIL, wall time."""
    lines = ["| claim | script | expected | measured | PASS/FAIL | wall time |", "|---|---|---|---|---|---|"]
    for info in infos:
        script = f"`validation/{info.path.name}`"
        if info.kind == "other":
            lines.append(f"| | {script} | | | not in harness format | |")
            continue
        res = info.result
        if res is None:
            lines.append(
                f"| | {script} | | | {info.status}{': ' + _cell(info.message) if info.message else ''} | "
                f"{_wall(info.wall_seconds)} |"
            )
            continue
        claim = f"**{_cell(res.get('source', ''))}**: {_cell(res.get('claim', ''))}"
        status = info.status
        if res.get("reason") and status != "PASS":
            status += f" ({_cell(res['reason'])})"
        if info.status == "ERROR" and info.message:
            status += f": {_cell(info.message)}"
        wall = info.wall_seconds if info.wall_seconds is not None else res.get("wall_seconds")
        lines.append(
            f"| {claim} | {script} ({res.get('mode', '')}) | {_cell(res.get('expected', ''))} | "
            f"{_cell(res.get('measured', ''))} | {status} | {_wall(wall)} |"
        )
    return "\n".join(lines) + "\n"


def _update_readme(readme: Path, table: str, header: str) -> None:
    if not readme.is_file():
        raise ValueError(f"update_readme: {readme} does not exist")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"update_readme: {readme} lacks the markers {README_START} ... {README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write(readme, f"{head}{README_START}\n{header}\n\n{table}{README_END}{tail}")


def run_validation(
    outdir,
    *,
    fast: bool = False,
    only=None,
    scripts=None,
    threads: int = 1,
    timeout: float | None = None,
    reuse: bool = False,
    update_readme: bool = False,
    echo: Callable[[str], None] = print,
) -> list[ScriptInfo]:
    """Run the validation scripts and write ``outdir/validation_table.md`` and ``validation.json``.

    Parameters
    ----------
    outdir : results folder; script NAME writes to ``outdir/NAME``.
    fast : pass ``--fast`` (the small runs used by the tests).
    only : names (script stems) to run, a list or a comma-separated string; None runs all.
        An unknown name is refused with the list of available ones.
    scripts : the ``validation/`` folder (see :func:`find_scripts_dir`).
    threads : ``--threads`` given to every script (1 on a shared CPU).
    timeout : seconds per script, None for no limit.
    reuse : keep an existing ``outdir/NAME/result.json`` of the same mode instead of rerunning.
    update_readme : rewrite the table in ``validation/README.md`` (between the markers), listing
        every discovered script with the results found in ``outdir``.

    Returns
    -------
    list of ScriptInfo
        The selected scripts, each with ``status`` PASS, FAIL, ERROR or NOT RUN (scripts not in
        harness format).
    """
    sdir = find_scripts_dir(scripts)
    infos = discover(sdir)
    by_name = {i.name: i for i in infos}
    if isinstance(only, str):
        only = [s.strip() for s in only.split(",") if s.strip()]
    if only is not None and not only:
        raise ValueError(f"only: give at least one script name (available: {', '.join(sorted(by_name))})")
    if only:
        unknown = [n for n in only if n.removesuffix(".py") not in by_name]
        if unknown:
            raise ValueError(
                f"only: no validation script named {', '.join(map(repr, unknown))} in {sdir}; "
                f"available: {', '.join(sorted(by_name))}"
            )
        selected = [by_name[n.removesuffix(".py")] for n in only]
    else:
        selected = infos
    threads = check_int(threads, "threads")
    if timeout is not None and (isinstance(timeout, bool) or not _positive_number(timeout)):
        raise ValueError(f"timeout: expected a positive number of seconds (or None), got {timeout!r}")
    outdir = Path(outdir)
    make_outdir(outdir)
    mode = "fast" if fast else "full"
    echo(f"gaussdiff validate: {len(selected)} script(s) from {sdir}, mode {mode}, results in {outdir}")
    header = (
        f"Mode: {mode}. Generated by `gaussdiff validate{' --fast' if fast else ''} --outdir {outdir}` "
        f"on {time.strftime('%Y-%m-%d')}; wall times on the machine that ran it."
    )
    try:
        for info in selected:
            if info.kind == "other":
                info.message = "not in harness format (no result.json): run it by hand"
                echo(f"   {info.name}: skipped, {info.message}")
                continue
            _run_one(info, outdir / info.name, fast=fast, threads=int(threads), timeout=timeout, reuse=reuse, echo=echo)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (the running script is killed by subprocess.run): the finished
        # scripts' results are kept and tabulated, the one that was running is marked
        # INTERRUPTED; a rerun with reuse=True (--reuse) skips the finished ones
        for info in selected:
            if info.kind != "other" and info.status == "NOT RUN":
                info.status, info.message = "INTERRUPTED", "interrupted: not finished"
                break
        with deferred_interrupts():
            _write_summary(selected, outdir, header.replace("Mode:", "INTERRUPTED run. Mode:", 1))
        raise
    _write_summary(selected, outdir, header)
    echo(f"wrote {outdir / 'validation_table.md'} and validation.json")
    if update_readme:
        rows = []
        for info in infos:
            if any(info is s for s in selected):
                rows.append(info)
                continue
            res_file = outdir / info.name / "result.json"
            if info.kind != "other" and res_file.is_file():
                res = json.loads(res_file.read_text())
                ok = not _check_result(res)
                info.result, info.status = res, res["status"] if ok else "ERROR"
                info.wall_seconds = res.get("wall_seconds")
            rows.append(info)
        readme = sdir / "README.md"
        _update_readme(readme, format_table(rows), header)
        echo(f"updated the table in {readme}")
    return selected


def _positive_number(v) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def _write_summary(selected: list, outdir: Path, header: str) -> None:
    """``validation_table.md`` and ``validation.json`` of the scripts ``selected``."""
    table = format_table(selected)
    atomic_write(outdir / "validation_table.md", header + "\n\n" + table)
    summary = [
        {
            "name": i.name,
            "script": i.path.name,
            "kind": i.kind,
            "status": i.status,
            "wall_seconds": i.wall_seconds,
            "message": i.message,
            "result": i.result,
        }
        for i in selected
    ]
    atomic_write(outdir / "validation.json", json.dumps(summary, indent=1, default=str))
