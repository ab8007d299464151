"""One prepared GPU check (issue 17, item 6): everything that needs a CUDA device, in one run
of at most 8 minutes, written to one JSON file and printed as one table.

Parts, each a function with its own time budget and its own ``try``/``except`` (a part that
fails or runs out of time is recorded as such and the others still run), under a total
wall-time guard (a part starts only with the time that is left, less a reserve for writing):

``tests``
    the CUDA tests (``-k cuda`` in ``tests/test_kernels.py``, ``tests/test_ensemble.py`` and the
    local closed forms' ``tests/test_local.py``, ``tests/test_local_masks.py``) and the Triton tests (``tests/test_triton.py``) in a pytest subprocess; counts from its JUnit XML.
``bench_empirical``
    ``bench_empirical.py`` on the device: the Triton and torch backends of the exact empirical
    denoiser against the float32 GEMM rate measured in the same run, and the opt-in TF32 mode
    with its error (``--tf32``), at the issue's three sizes.
``cifar_sampling``
    exact empirical sampling at CIFAR-10 size: N = 50000 training points in d = 3072, 1000
    samples, Heun on the EDM grid of 18 steps (35 denoiser evaluations), float32 on the device:
    the wall time, the distance of every sample to its nearest training point, and, on a subset,
    a float64 two-pass reference from exact differences (pass 1: distances and their maximum
    logit; pass 2: the normalised weights times the training points), both per evaluation on
    the same input and over the whole trajectory from the same noise. The data are synthetic
    Gaussian data of that shape (no download): covariance ``Q diag(l) Q^T`` with a random
    rotation ``Q`` and ``l`` the CIFAR-10 covariance spectrum when
    ``../shared/data/cifar10_cov_eigenvalues.npy`` (or ``--spectrum``) is there, else a
    power-law spectrum of the same total variance (recorded in the JSON). What is measured is
    speed and exactness, which the spectrum only shapes.
``phase_curve``
    the default ``gaussdiff phase-curve --device cuda`` (digits, N = 8 ... 896, 4000 steps),
    in a subprocess stopped at its budget (a stopped sweep keeps its finished cells; the JSON
    says how many).

``--cpu-dry-run`` (alias ``--quick``) runs every part at tiny sizes on the CPU, so that the
script itself is tested without a device: the CUDA tests are collected and skip, the Triton
tests are left to the ordinary suite (they need no device and take minutes on a small CPU),
``bench_empirical.py --quick`` runs with the numba and torch backends, the sampling uses
N = 400, d = 48 (the spectrum resampled to 48 values) and 16 samples, and the phase curve a
two-size Gaussian-mixture grid. Each skipped piece says so in the JSON and the table.

Examples
--------
    python validation/benchmarks/gpu_check.py --outdir out/gpu_check           # on a CUDA machine
    python validation/benchmarks/gpu_check.py --cpu-dry-run --outdir /tmp/gpu  # anywhere, ~1-2 min
    python validation/benchmarks/gpu_check.py --only cifar_sampling,bench_empirical --outdir out/g
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

import gaussdiff as gd
from gaussdiff._io import atomic_write

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
TOTAL_BUDGET_S = 480.0  # the 8 minutes
RESERVE_S = 5.0  # kept back for the table and the JSON
MIN_PART_S = 10.0  # a part is not started with less
#: parts in run order, each with its share of the budget in seconds (the phase curve, last,
#: gets what is left)
BUDGETS = {"tests": 100.0, "bench_empirical": 90.0, "cifar_sampling": 120.0, "phase_curve": 300.0}
SPECTRUM_FILE = "cifar10_cov_eigenvalues.npy"
#: the test files holding CUDA tests (selected by ``-k cuda``)
CUDA_TEST_FILES = (
    "tests/test_kernels.py",
    "tests/test_ensemble.py",
    "tests/test_local.py",
    "tests/test_local_masks.py",
)


class OverBudget(Exception):
    """A part ran past its time budget."""


# -- helpers ---------------------------------------------------------------------------------
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _env() -> dict:
    """The environment of the subprocesses: they import the same gaussdiff as this script."""
    pkg = str(Path(gd.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_subprocess(cmd: list, *, timeout: float, log_path: Path) -> dict:
    """Run ``cmd`` in its own session with output to ``log_path``; past ``timeout`` seconds its
    whole process group gets SIGTERM (then SIGKILL after 15 s). Returns ``returncode``,
    ``timed_out``, ``wall_s`` and the last 3000 characters of the output."""
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log_path.read_text(errors="replace")
    return dict(returncode=proc.returncode, timed_out=timed_out, wall_s=time.monotonic() - t0, output_tail=text[-3000:])


def junit_counts(path: Path) -> dict:
    """Test counts of a pytest JUnit XML file: tests, passed, failed, errors, skipped."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    c = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for s in suites
        for case in s.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return dict(
        tests=c["tests"],
        passed=c["tests"] - c["failures"] - c["errors"] - c["skipped"],
        failed=c["failures"],
        errors=c["errors"],
        skipped=c["skipped"],
        failed_names=failed,
    )


# -- part 1: the CUDA and Triton tests --------------------------------------------------------
def part_tests(ctx: dict, budget: float) -> dict:
    """The CUDA tests (``-k cuda`` in the files that hold them, ``CUDA_TEST_FILES``) and, on a device, the
    Triton tests, in one pytest subprocess each; counts from JUnit XML."""
    outdir = ctx["outdir"]
    selections = [("cuda", [*CUDA_TEST_FILES, "-k", "cuda"])]
    notes = []
    if ctx["dry_run"]:
        notes.append("dry run: the CUDA tests are collected and skip without a device")
        notes.append("dry run: tests/test_triton.py not run here (no device needed; part of the ordinary suite)")
    else:
        selections.append(("triton", ["tests/test_triton.py"]))
    deadline = time.monotonic() + budget
    out = {"selections": {}, "notes": notes}
    status = "ok"
    for name, args in selections:
        left = deadline - time.monotonic()
        if left < MIN_PART_S:
            out["selections"][name] = {"status": "skipped", "reason": "time budget spent"}
            status = "timeout"
            continue
        xml = outdir / f"pytest_{name}.xml"
        if xml.exists():
            xml.unlink()
        cmd = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        res = run_subprocess(cmd, timeout=left, log_path=outdir / f"pytest_{name}.log")
        sel = {"command": " ".join(cmd[1:]), "returncode": res["returncode"], "wall_s": res["wall_s"]}
        if xml.exists():
            sel.update(junit_counts(xml))
        if res["timed_out"]:
            sel["status"], status = "timeout", "timeout"
        elif res["returncode"] in (0, 5) and xml.exists():  # 5: nothing selected
            sel["status"] = "ok"
        else:
            sel["status"] = "failed"
            sel["output_tail"] = res["output_tail"]
            status = "failed" if status == "ok" else status
        if not ctx["dry_run"] and sel.get("tests") and sel.get("skipped") == sel.get("tests"):
            sel["status"], status = "failed", "failed"
            sel["reason"] = "every test skipped on a CUDA machine"
        out["selections"][name] = sel
    out["status"] = status
    return out


# -- part 2: bench_empirical.py on the device ---------------------------------------------------
def part_bench(ctx: dict, budget: float) -> dict:
    """``bench_empirical.py`` in a subprocess: Triton and torch against the same-run float32
    GEMM, and TF32 with its error (device); ``--quick`` with numba and torch (dry run)."""
    out_b = ctx["outdir"] / "bench_empirical"
    cmd = [sys.executable, str(BENCH / "bench_empirical.py"), "--outdir", str(out_b), "--naive-repeats", "0"]
    cmd += ["--no-compile-time", "--device", str(ctx["device"])]
    cmd += ["--quick"] if ctx["dry_run"] else ["--tf32"]
    res = run_subprocess(cmd, timeout=budget, log_path=ctx["outdir"] / "bench_empirical.log")
    out = {"command": " ".join(cmd[1:]), "returncode": res["returncode"], "wall_s": res["wall_s"]}
    path = out_b / "bench_empirical.json"
    if res["timed_out"]:
        out["status"] = "timeout"
    elif res["returncode"] != 0 or not path.exists():
        out["status"] = "failed"
        out["output_tail"] = res["output_tail"]
        return out
    else:
        out["status"] = "ok"
    if path.exists() and not res["timed_out"]:
        data = json.loads(path.read_text())
        keep = ("N", "d", "B", "backend", "time_s", "gflops", "gemm_f32_gflops", "ratio_vs_gemm")
        out["rows"] = [
            {**{k: r[k] for k in keep}, "max_err_rel_spread": r["max_err_rel_spread"], "n_fallback": r["n_fallback"]}
            for r in data["rows"]
        ]
        out["gpu"] = data["meta"].get("gpu")
    if ctx["dry_run"]:
        out["notes"] = ["dry run: CPU backends (numba, torch); Triton and TF32 need a CUDA device"]
    return out


# -- part 3: exact empirical sampling at CIFAR-10 size --------------------------------------------
def find_spectrum(path=None):
    """The CIFAR-10 covariance eigenvalues (``path``, else ``../shared/data`` beside the
    repository, else ``shared/data`` inside it), or ``None``."""
    if path:
        return Path(path) if Path(path).is_file() else None
    cands = [ROOT.parent / "shared" / "data" / SPECTRUM_FILE, ROOT / "shared" / "data" / SPECTRUM_FILE]
    for p in cands:
        if p.is_file():
            return p
    return None


def spectrum(d: int, path=None) -> tuple[np.ndarray, str]:
    """``d`` covariance eigenvalues (float64, >= 0, descending) and where they come from: the
    CIFAR-10 spectrum (resampled to ``d`` values by rank when ``d != 3072``), or, without the
    file, a power law ``l_k = c k^-2`` with CIFAR-10's total variance in [-1, 1] units (~760)."""
    p = find_spectrum(path)
    if path and p is None:
        raise ValueError(f"--spectrum: {path} is not a file")
    if p is not None:
        lam = np.sort(np.clip(np.load(p).astype(np.float64), 0.0, None))[::-1]
        src = f"CIFAR-10 covariance spectrum ({p})"
        if d != lam.size:
            lam = lam[np.round(np.linspace(0, lam.size - 1, d)).astype(int)]
            src += f", resampled by rank to {d} values"
        return lam, src
    k = np.arange(1, d + 1, dtype=np.float64)
    lam = k**-2.0
    return lam * (760.0 / lam.sum()), "synthetic power law k^-2, total variance 760 (no CIFAR-10 spectrum file found)"


def synthetic_data(n: int, d: int, *, lam: np.ndarray, device, seed: int = 0) -> torch.Tensor:
    """``n`` rows of N(0, Q diag(lam) Q^T), float32 on ``device``, Q a random rotation (QR of a
    Gaussian matrix); all randomness from one seeded generator."""
    g = torch.Generator(device=device).manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, device=device, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a uniformly random rotation
    scale = torch.as_tensor(np.sqrt(lam), device=device)
    out = torch.empty(n, d, device=device, dtype=torch.float32)
    for i in range(0, n, 8192):  # in blocks: the float64 intermediate stays small
        z = torch.randn(min(8192, n - i), d, generator=g, device=device, dtype=torch.float64)
        out[i : i + z.shape[0]] = ((z * scale) @ q.T).float()
    return out


class TwoPassReference:
    """The float64 posterior mean of the empirical distribution from exact differences, in two
    passes over chunks of the training set: pass 1 the squared distances ``||x - x_i||^2`` and
    the largest logit, pass 2 ``sum_i w_i x_i / sum_i w_i`` with
    ``w_i = exp(l_i - max l)``, ``l_i = -||x - x_i||^2 / (2 sigma^2)`` (DESIGN section 2).
    No ``||x||^2 - 2 x.x_i + ||x_i||^2`` expansion, so no cancellation at small sigma."""

    def __init__(self, train: torch.Tensor, *, elements: int = 2**25):
        self.y = train.to(torch.float64)
        self.elements = elements  # largest (B, chunk, d) difference tensor

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        x64 = x.to(self.y.device, torch.float64)
        b, n = x64.shape[0], self.y.shape[0]
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=x64.device).reshape(-1).expand(b)
        chunk = max(1, self.elements // max(1, b * self.y.shape[1]))
        d2 = torch.empty(b, n, dtype=torch.float64, device=x64.device)
        for i in range(0, n, chunk):  # pass 1: exact squared distances
            diff = x64[:, None, :] - self.y[None, i : i + chunk]
            d2[:, i : i + chunk] = (diff * diff).sum(-1)
        logits = -d2 / (2 * sig[:, None] ** 2)
        w = torch.exp(logits - logits.max(1, keepdim=True).values)  # pass 2: weights
        out = torch.zeros_like(x64)
        for i in range(0, n, chunk):
            out += w[:, i : i + chunk] @ self.y[i : i + chunk]
        return out / w.sum(1, keepdim=True)  # float64, whatever the input's dtype


class _Timed:
    """A denoiser that counts its evaluations and stops the run past ``deadline``."""

    def __init__(self, den, deadline: float):
        self.den, self.deadline, self.calls = den, deadline, 0

    def __call__(self, x, sigma):
        if time.monotonic() > self.deadline:
            raise OverBudget(f"time budget spent after {self.calls} denoiser evaluations")
        self.calls += 1
        return self.den(x, sigma)


def part_cifar(ctx: dict, budget: float) -> dict:
    """Exact empirical sampling at CIFAR-10 size (see the module docstring)."""
    deadline = time.monotonic() + budget
    device = ctx["device"]
    if ctx["dry_run"]:
        n, d, n_samples, n_ref = 400, 48, 16, 4
    else:
        n, d, n_samples, n_ref = 50000, 3072, 1000, 16
    lam, src = spectrum(d, ctx.get("spectrum"))
    out = dict(N=n, d=d, samples=n_samples, reference_subset=n_ref, data=src, device=str(device))
    t0 = time.monotonic()
    train = synthetic_data(n, d, lam=lam, device=device, seed=ctx["seed"])
    _sync(device)
    out["data_s"] = time.monotonic() - t0
    spread = float(train.double().std())
    out["data_std"] = spread
    den = gd.EmpiricalDenoiser(train)
    out["backend"] = den.backend if den.backend != "auto" else gd.kernels.auto_backend(device)
    sigmas = gd.karras_sigmas(18)  # EDM grid, 18 steps: 17 Heun steps + 1 Euler step to 0
    noise = gd.seeded_noise(n_samples, d, seed=ctx["seed"], dtype=torch.float32, device=device) * float(sigmas[0])
    t0 = time.monotonic()
    den(noise[:2], float(sigmas[0]))  # compile / warm up
    _sync(device)
    out["warmup_s"] = time.monotonic() - t0
    # 1. the timed run: float32 on the device, all samples
    timed = _Timed(den, deadline)
    _sync(device)
    t0 = time.monotonic()
    x = gd.sample_heun(timed, noise, sigmas)
    _sync(device)
    out["sampling_s"] = time.monotonic() - t0
    out["evaluations"] = timed.calls
    out["per_evaluation_s"] = out["sampling_s"] / timed.calls
    out["gflops"] = 4.0 * n_samples * n * d * timed.calls / out["sampling_s"] / 1e9  # 4 B N d per evaluation
    # 2. distances of all samples to the training set
    t0 = time.monotonic()
    dist, idx = gd.nearest_training(x, train, k=2)
    mem = gd.memorization_fraction(x, train, seed=ctx["seed"], neighbors=(dist, idx))
    out["nn_s"] = time.monotonic() - t0
    d1 = dist[:, 0].double().cpu()
    out["nn_distance"] = dict(
        median=float(d1.median()),
        max=float(d1.max()),
        median_rel_spread=float(d1.median()) / spread,
        max_rel_spread=float(d1.max()) / spread,
    )
    out["memorization"] = dict(value=mem.value, se=mem.se)
    # 3. the float64 two-pass reference on a subset: per evaluation on the same input ...
    ref = TwoPassReference(train)
    errs = []

    def both(xs, sigma):
        if time.monotonic() > deadline:
            raise OverBudget("time budget spent in the float64 reference")
        d32 = den(xs, sigma)
        d64 = ref(xs, sigma)
        errs.append(float((d32.double() - d64.double()).abs().max()))
        return d32

    gd.sample_heun(both, noise[:n_ref], sigmas)
    out["per_evaluation_max_abs_err"] = max(errs)
    out["per_evaluation_max_err_rel_spread"] = max(errs) / spread
    # ... and over the whole trajectory in float64 from the same noise
    x64 = gd.sample_heun(_Timed(ref, deadline), noise[:n_ref].double(), sigmas)
    d64, i64 = gd.nearest_training(x64, train.double(), k=1)
    diff = (x[:n_ref].double() - x64).abs().max(1).values
    out["reference"] = dict(
        max_abs_diff=float(diff.max()),
        max_diff_rel_spread=float(diff.max()) / spread,
        same_nearest_point=int((i64[:, 0].cpu() == idx[:n_ref, 0].cpu()).sum()),
        of=n_ref,
        nn_distance_f32=[float(v) for v in dist[:n_ref, 0].cpu()],
        nn_distance_f64=[float(v) for v in d64[:, 0].cpu()],
    )
    out["status"] = "ok"
    return out


# -- part 4: the default phase curve on the device ------------------------------------------------
DRY_PHASE = ["--data", "gmm:k=2,d=4,n=200", "--sizes", "4,8", "--widths", "32", "--steps", "40"]
DRY_PHASE += ["--checkpoints", "2", "--samples", "16", "--workers", "1"]


def part_phase(ctx: dict, budget: float) -> dict:
    """``gaussdiff phase-curve`` (the default grid on the device; a tiny grid in the dry run)
    in a subprocess stopped at ``budget``; what finished is read from its results folder."""
    out_p = ctx["outdir"] / "phase_curve"
    if out_p.exists():  # a fresh sweep: a rerun would skip the finished cells and time nothing
        shutil.rmtree(out_p)
    cmd = [sys.executable, "-c", "import sys; from gaussdiff.cli import main; sys.exit(main(sys.argv[1:]))"]
    cmd += ["phase-curve", "--outdir", str(out_p), "--device", str(ctx["device"]), "--no-progress"]
    if ctx["dry_run"]:
        cmd += DRY_PHASE
    res = run_subprocess(cmd, timeout=budget, log_path=ctx["outdir"] / "phase_curve.log")
    out = {"command": " ".join(cmd[3:]), "returncode": res["returncode"], "wall_s": res["wall_s"]}
    if ctx["dry_run"]:
        out["notes"] = ["dry run: a two-size Gaussian-mixture grid on the CPU instead of the default digits grid"]
    cells = sorted((out_p / "cells").glob("*.json")) if (out_p / "cells").is_dir() else []
    out["cells_finished"] = len(cells)
    config = out_p / "config.json"
    if config.exists():
        try:
            info = json.loads(config.read_text())
            c = info["config"]
            out["cells_planned"] = len(c["sizes"]) * len(c["seeds"]) * len(c["widths"]) * len(c["frameworks"])
            out["sweep_status"] = info.get("status")
            for key in ("wall_seconds", "train_seconds", "eval_seconds"):
                out[key] = info.get(key)
        except (ValueError, KeyError, TypeError):
            out["config_unreadable"] = True
    tau = out_p / "tau_mem.csv"
    if tau.exists():
        out["tau_mem_csv"] = tau.read_text()
    lines = [ln for ln in res["output_tail"].splitlines() if ln.strip()]
    out["table"] = lines[-12:]
    if res["timed_out"]:
        out["status"] = "timeout"
    elif res["returncode"] != 0:
        out["status"] = "failed"
        out["output_tail"] = res["output_tail"]
    else:
        out["status"] = "ok"
    return out


PARTS = {"tests": part_tests, "bench_empirical": part_bench, "cifar_sampling": part_cifar, "phase_curve": part_phase}


# -- the runner --------------------------------------------------------------------------------------
def run_parts(parts: dict, budgets: dict, ctx: dict, *, total_budget: float, write=None) -> dict:
    """Run ``parts`` (name -> function(ctx, budget) -> dict) in order, each with
    ``min(budgets[name], time left - RESERVE_S)`` seconds, catching its exceptions; a part is
    skipped when less than ``MIN_PART_S`` is left. ``write(results)`` is called after every part
    (so that a killed run leaves what finished). Every result has ``status`` (ok, failed,
    error, timeout, skipped), ``wall_s`` and ``budget_s``."""
    start = time.monotonic()
    results = {}
    for name, fn in parts.items():
        left = total_budget - (time.monotonic() - start) - RESERVE_S
        budget = min(budgets.get(name, left), left)
        if budget < MIN_PART_S:
            results[name] = dict(status="skipped", reason="total time budget spent", wall_s=0.0, budget_s=0.0)
        else:
            t0 = time.monotonic()
            try:
                res = fn(ctx, budget)
            except OverBudget as exc:
                res = dict(status="timeout", error=str(exc))
            except Exception as exc:  # one failing part must not hide the others
                res = dict(
                    status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:]
                )
            res["wall_s"] = time.monotonic() - t0
            res["budget_s"] = budget
            if res["status"] == "ok" and res["wall_s"] > budget:
                res["status"] = "timeout"
            results[name] = res
        if write is not None:
            write(results)
    return results


def summary_line(name: str, r: dict) -> str:
    """One line of key numbers per part for the printed table."""
    if r["status"] in ("skipped",) or "error" in r:
        return r.get("reason") or r.get("error", "")
    if name == "tests":
        parts = []
        for sel, s in r.get("selections", {}).items():
            if "tests" in s:
                parts.append(f"{sel}: {s['passed']} passed, {s['failed'] + s['errors']} failed, {s['skipped']} skipped")
            else:
                parts.append(f"{sel}: {s.get('status')}")
        return "; ".join(parts)
    if name == "bench_empirical":
        rows = r.get("rows", [])
        return "; ".join(
            f"{x['N']}x{x['d']}x{x['B']} {x['backend'][:10]} {x['ratio_vs_gemm']:.2f}x gemm, err/spr {x['max_err_rel_spread']:.1e}"
            for x in rows
        )
    if name == "cifar_sampling":
        ref = r.get("reference", {})
        return (
            f"N={r['N']} d={r['d']} B={r['samples']}: {r['evaluations']} evals in {r['sampling_s']:.2f} s "
            f"({r['gflops']:.3g} GF/s), nn dist median {r['nn_distance']['median']:.2e} "
            f"(max {r['nn_distance']['max_rel_spread']:.1e} x spread); float64 ref: per-eval err "
            f"{r['per_evaluation_max_err_rel_spread']:.1e} x spread, trajectories "
            f"{ref.get('max_diff_rel_spread', math.nan):.1e} x spread, same nn {ref.get('same_nearest_point')}/{ref.get('of')}"
        )
    if name == "phase_curve":
        return f"{r.get('cells_finished')} of {r.get('cells_planned', '?')} cells finished"
    return ""


def print_table(results: dict, meta: dict) -> None:
    print(f"gpu_check  device={meta['device']} ({meta.get('gpu') or 'no GPU'})  mode={meta['mode']}")
    head = f"{'part':<16} {'status':<8} {'wall s':>7} {'budget':>7}  key numbers"
    print(head)
    print("-" * 100)
    for name, r in results.items():
        print(f"{name:<16} {r['status']:<8} {r['wall_s']:7.1f} {r['budget_s']:7.0f}  {summary_line(name, r)}")
    bench = results.get("bench_empirical", {}).get("rows")
    if bench:
        print("\nbench_empirical:")
        print(
            f"{'N':>6} {'d':>5} {'B':>5} {'backend':>12} {'time s':>8} {'GF/s':>8} {'gemm GF/s':>9} {'x gemm':>6} {'err/spr':>8}"
        )
        for x in bench:
            print(
                f"{x['N']:>6} {x['d']:>5} {x['B']:>5} {x['backend'][:12]:>12} {x['time_s']:8.4f} {x['gflops']:8.1f} "
                f"{x['gemm_f32_gflops']:9.1f} {x['ratio_vs_gemm']:6.2f} {x['max_err_rel_spread']:8.1e}"
            )
    phase = results.get("phase_curve", {}).get("table")
    if phase:
        print("\nphase_curve (last lines of its output):")
        print("\n".join(phase))
    for name, r in results.items():
        for note in r.get("notes", []):
            print(f"note ({name}): {note}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--outdir", default="validation/benchmarks/out/gpu_check", help="where gpu_check.json goes")
    p.add_argument(
        "--cpu-dry-run", "--quick", dest="dry_run", action="store_true", help="every part at tiny sizes on the CPU"
    )
    p.add_argument("--only", help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--total-budget", type=float, default=TOTAL_BUDGET_S, help="seconds for the whole run (default 480)")
    p.add_argument("--spectrum", help=f"path of {SPECTRUM_FILE} (default: ../shared/data beside the repository)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.total_budget <= RESERVE_S + MIN_PART_S:
        p.error(f"--total-budget: must exceed {RESERVE_S + MIN_PART_S:g} s")
    names = list(PARTS) if not a.only else [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in names if s not in PARTS]
    if unknown or not names:
        p.error(f"--only: unknown part(s) {unknown}; choose from {list(PARTS)}")
    if a.spectrum and not Path(a.spectrum).is_file():
        p.error(f"--spectrum: {a.spectrum} is not a file")
    if a.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        p.error("no CUDA device: this check needs one; --cpu-dry-run runs every part at tiny sizes on the CPU")
    outdir = Path(a.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    triton_version = None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        pass
    meta = dict(
        version=gd.__version__,
        python=platform.python_version(),
        torch=torch.__version__,
        triton=triton_version,
        device=str(device),
        gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
        cpu_count=os.cpu_count(),
        mode="cpu-dry-run" if a.dry_run else "device",
        total_budget_s=a.total_budget,
        budgets=BUDGETS,
    )
    ctx = dict(device=device, dry_run=a.dry_run, outdir=outdir, seed=a.seed, spectrum=a.spectrum)
    path = outdir / "gpu_check.json"
    t0 = time.monotonic()

    def write(results):
        atomic_write(path, json.dumps(dict(meta=meta, results=results), indent=1, default=str))

    results = run_parts({k: PARTS[k] for k in names}, BUDGETS, ctx, total_budget=a.total_budget, write=write)
    meta["wall_s"] = time.monotonic() - t0
    write(results)
    print_table(results, meta)
    print(f"total {meta['wall_s']:.1f} s; wrote {path}")
    return dict(meta=meta, results=results)


if __name__ == "__main__":
    main()
