"""Jobs that die cleanly (issue 16, problem 2): SIGTERM and SIGINT end `gaussdiff phase-curve`
with one line and exit 130, no process left behind, finished cells kept, config.json saying
"interrupted", and a rerun resumes to the same numbers; SIGKILL of the main process takes its
spawned workers with it. Linux only (the processes are found through /proc)."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

ARGS = [
    "--data",
    "gmm:k=2,d=4,n=400",
    "--sizes",
    "4,8,16,32,64",
    "--widths",
    "16",
    "--steps",
    "400",
    "--checkpoints",
    "2",
    "--samples",
    "16",
    "--workers",
    "2",
    "--no-progress",
]


def _marked(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ``mark``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark.encode() in (d / "environ").read_bytes():
                    stat = (d / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":  # not a zombie
                        pids.append(int(d.name))
            except OSError:
                pass
    return pids


def _start(outdir: Path, mark: str) -> subprocess.Popen:
    env = dict(os.environ, GAUSSDIFF_TEST_MARK=mark)
    return subprocess.Popen(
        [sys.executable, "-m", "gaussdiff.cli", "phase-curve", *ARGS, "--outdir", str(outdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_cells(outdir: Path, proc: subprocess.Popen, k: int, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while len(list((outdir / "cells").glob("*.json"))) < k:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no cell finished in time"
        time.sleep(0.2)


def _diagnosis(proc: subprocess.Popen, mark: str, log: Path) -> str:
    """What a failed process count saw: the marked processes with their state and parent, the
    runner's children, the script's log and (if the runner ended) its output."""
    lines = [f"runner pid {proc.pid}, returncode {proc.poll()}"]
    for pid in _marked(mark):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"marked {pid}: state {stat[0]}, parent {stat[1]}, {cmd[:200]}")
        except OSError as exc:
            lines.append(f"marked {pid}: {exc}")
    try:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        lines.append(f"children of the runner: {kids}")
    except OSError as exc:
        lines.append(f"children of the runner: {exc}")
    lines.append("log: " + (log.read_text(errors="replace")[-2000:] if log.exists() else "(none)"))
    if proc.poll() is not None:
        out, err = proc.communicate()
        lines.append(f"runner stdout: {out[-2000:]}\nrunner stderr: {err[-2000:]}")
    return "\n".join(lines)


def _gone(mark: str, timeout: float = 15) -> list[int]:
    t0 = time.monotonic()
    while _marked(mark) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    return _marked(mark)


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_signal_stops_everything_keeps_the_cells_and_resumes(tmp_path, sig):
    mark = uuid.uuid4().hex
    proc = _start(tmp_path, mark)
    _wait_for_cells(tmp_path, proc, 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines and "interrupted" in lines[-1] and "Traceback" not in err, err
    assert _gone(mark) == []
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "interrupted"
    kept = {p.name: p.read_bytes() for p in (tmp_path / "cells").glob("*.json")}
    assert kept
    if sig == signal.SIGINT:  # resume (the slow variant; the path after the signal is the same)
        done = subprocess.run(
            [sys.executable, "-m", "gaussdiff.cli", "phase-curve", *ARGS, "--outdir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert all((tmp_path / "cells" / name).read_bytes() == raw for name, raw in kept.items())
        assert json.loads((tmp_path / "config.json").read_text())["status"] == "finished"


def test_sigkill_of_the_main_process_takes_the_workers_with_it(tmp_path):
    mark = uuid.uuid4().hex
    proc = _start(tmp_path, mark)
    _wait_for_cells(tmp_path, proc, 1)
    assert len(_marked(mark)) >= 3  # main, two workers (and the resource tracker)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(mark) == []


# -- train, validate and inverse (issue 16, problem 2) ------------------------------------------------
#
# Each verb is started as ``python -m gaussdiff.cli VERB ...`` in a process whose environment
# carries a unique mark (inherited by anything it starts), signalled once it has finished some
# work, and checked: exit 130, one "interrupted" line and no traceback, no marked process left,
# the finished work kept whole (train: state.pt/model.pt/config.json of one step, and the same
# command resumes to the numbers of an uninterrupted run; validate: the finished scripts' results
# and a table saying INTERRUPTED; inverse: its result files all there or none).


def _cli(args: list, mark: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, GAUSSDIFF_TEST_MARK=mark, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "gaussdiff.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} did not appear in time"
        time.sleep(0.05)


def _stopped_cleanly(proc: subprocess.Popen, sig, mark: str) -> str:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err
    assert _gone(mark) == []
    return lines[0]


TRAIN = [
    "train",
    "--data",
    "gaussian:d=4,n=64",
    "--width",
    "16",
    "--depth",
    "1",
    "--batch-size",
    "16",
    "--save-every",
    "40",
    "--log-every",
    "20",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_train_stops_keeps_its_last_state_and_resumes_to_the_same_numbers(tmp_path, sig):
    import torch

    from gaussdiff.cli import main

    run = tmp_path / "run"
    mark = uuid.uuid4().hex
    proc = _cli([*TRAIN, "--steps", "1000000", "--outdir", str(run)], mark)
    _wait_for(run / "state.pt", proc)
    time.sleep(0.3)  # let it pass a few more saves, so the signal may land in one
    line = _stopped_cleanly(proc, sig, mark)
    assert str(run) in line
    meta = json.loads((run / "config.json").read_text())
    assert meta["status"] == "interrupted"
    state = torch.load(run / "state.pt", weights_only=False)
    model = torch.load(run / "model.pt", weights_only=False)
    step = meta["step"]
    assert step == state["step"] == model["step"] and step % 40 == 0 and step >= 40  # one step's files
    assert all(torch.equal(model["ema"][k], state["ema"][k]) for k in model["ema"])
    # the same command with a reachable --steps resumes; an uninterrupted run gives the same weights
    target = step + 40
    assert main([*TRAIN, "--steps", str(target), "--outdir", str(run)]) == 0
    assert main([*TRAIN, "--steps", str(target), "--outdir", str(tmp_path / "ref")]) == 0
    a = torch.load(run / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "ref" / "model.pt", weights_only=False)
    assert a["step"] == b["step"] == target
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    ra, rb = json.loads((run / "config.json").read_text()), json.loads((tmp_path / "ref" / "config.json").read_text())
    assert ra["loss_history"] == rb["loss_history"] and ra["status"] == rb["status"] == "finished"


_FAKE_COMMON = "# a stand-in for validation/_common.py: the runner only looks for this file\n"
_FAKE_SCRIPT = '''"""A harness-format stand-in (from _common import ...; Report(...)) that {what}."""
import json, sys, time
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--outdir") + 1])
out.mkdir(parents=True, exist_ok=True)
time.sleep({sleep})
check = {{"what": "x", "value": 1.0, "status": "PASS", "expected": "1"}}
res = {{"name": "{name}", "claim": "c", "expected": "e", "measured": "m", "status": "PASS",
       "checks": [check], "mode": "full", "wall_seconds": 0.0}}
(out / "result.json").write_text(json.dumps(res))
'''


def _fake_validation(folder: Path, slow: float) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "_common.py").write_text(_FAKE_COMMON)
    (folder / "a_quick.py").write_text(_FAKE_SCRIPT.format(what="finishes at once", sleep=0, name="a_quick"))
    (folder / "b_slow.py").write_text(_FAKE_SCRIPT.format(what="takes long", sleep=slow, name="b_slow"))
    return folder


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_validate_stops_its_script_keeps_the_finished_results_and_says_interrupted(tmp_path, sig):
    from gaussdiff.cli import main

    scripts = _fake_validation(tmp_path / "validation", slow=300)
    out = tmp_path / "out"
    mark = uuid.uuid4().hex
    proc = _cli(["validate", "--scripts", str(scripts), "--outdir", str(out)], mark)
    _wait_for(out / "b_slow" / "log.txt", proc)
    assert (out / "a_quick" / "result.json").is_file()
    time.sleep(0.3)
    assert len(_marked(mark)) >= 2  # the runner and its running script
    line = _stopped_cleanly(proc, sig, mark)
    assert "--reuse" in line
    kept = (out / "a_quick" / "result.json").read_bytes()
    summary = {r["name"]: r["status"] for r in json.loads((out / "validation.json").read_text())}
    assert summary == {"a_quick": "PASS", "b_slow": "INTERRUPTED"}
    assert "INTERRUPTED" in (out / "validation_table.md").read_text()
    assert not (out / "b_slow" / "result.json").exists()
    # rerun with --reuse: the finished script is not run again
    _fake_validation(scripts, slow=0)
    assert main(["validate", "--scripts", str(scripts), "--outdir", str(out), "--reuse"]) == 0
    assert (out / "a_quick" / "result.json").read_bytes() == kept
    summary = {r["name"]: r["status"] for r in json.loads((out / "validation.json").read_text())}
    assert summary == {"a_quick": "PASS", "b_slow": "PASS"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_inverse_stops_and_leaves_its_files_whole_or_absent(tmp_path, sig):
    out = tmp_path / "inv"
    mark = uuid.uuid4().hex
    args = ["inverse", "--data", "gaussian:d=16,n=300", "--operator", "project:4", "--sampler", "exact,dps"]
    args += ["--steps", "5,400", "--samples", "200", "--n-meas", "2", "--n-train", "100", "--outdir", str(out)]
    proc = _cli(args, mark)
    first = proc.stdout.readline()  # the first measured row: work is under way
    assert "sigma_y" in first, (first, proc.poll())
    _stopped_cleanly(proc, sig, mark)
    names = ("measurements.csv", "measurements.json", "inverse.png")
    assert not any((out / n).exists() for n in names)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_deferred_interrupts_hold_a_signal_until_the_group_is_written(tmp_path):
    """The mechanism behind "whole or absent": a signal inside ``deferred_interrupts`` lets the
    block finish and is raised right after it (SIGINT as KeyboardInterrupt; SIGTERM as
    KeyboardInterrupt under ``terminate_as_interrupt``, as in every CLI verb)."""
    from gaussdiff._procs import deferred_interrupts, terminate_as_interrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        written = []
        with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
            with deferred_interrupts():
                os.kill(os.getpid(), sig)
                time.sleep(0.05)
                written.append(1)
                written.append(2)
            written.append("after")  # never reached: the signal is raised on leaving the block
        assert written == [1, 2]


def test_sigkill_of_validate_takes_its_running_script_with_it(tmp_path):
    scripts = _fake_validation(tmp_path / "validation", slow=300)
    out = tmp_path / "out"
    mark = uuid.uuid4().hex
    proc = _cli(["validate", "--scripts", str(scripts), "--outdir", str(out), "--only", "b_slow"], mark)
    _wait_for(out / "b_slow" / "log.txt", proc)
    t0 = time.monotonic()
    while len(_marked(mark)) < 2 and time.monotonic() - t0 < 30:  # the runner and its script
        time.sleep(0.05)
    assert len(_marked(mark)) >= 2, _diagnosis(proc, mark, out / "b_slow" / "log.txt")
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(mark) == []
