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
