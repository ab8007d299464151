r"""The memorization -> generalization phase sweep over training-set size N and training time.

For every cell ``(n, seed, width, framework)`` of the grid, :func:`run_cell`

1. draws two *disjoint* training subsets ``A`` and ``B`` of size ``n`` (one seeded permutation);
2. samples the closed forms of each subset — the exact empirical denoiser and the fitted
   Gaussian — from the shared noise;
3. trains one network on ``A`` and one on ``B`` and, at log-spaced training steps, samples both
   from the same noise with Heun's method and records every metric: the memorization fraction
   (gap ratio 1/3), the reproducibility of the two networks (Kadkhodaie et al., ICLR 2024), their
   distances to the empirical and Gaussian denoisers of their own training subset on noisy
   training and held-out points, and the similarity of their samples to the Gaussian's.

One row per ``(n, seed, width, framework, step)``. Each cell is written atomically to
``cells/<key>.json`` (plus a small ``cells/<key>.npz`` of sample images for the figures) and a
rerun skips every cell whose file exists with the same settings, so an interrupted sweep
resumes with nothing lost or duplicated. Cells are independent: they run in this process, in a
pool of spawned processes (never fork: numba's threading layer is not fork-safe), or on a Dask
cluster.

Training time matters as much as N: the memorization onset tau_mem grows linearly with N
(Bonnaire, Urfin, Biroli & Mezard 2025), so :func:`tau_mem` reads it off every N's checkpoints.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._checks import check_int
from ._io import atomic_write
from ._version import __version__
from .data import disjoint_split, load_dataset
from .denoisers import GaussianDenoiser
from .empirical import EmpiricalDenoiser
from .kernels import nearest_neighbors
from .metrics import bootstrap_fraction, denoiser_distance, get_similarity, memorized, reproducibility
from .networks import FRAMEWORKS, NETS
from .sampling import sample_heun, seeded_noise
from .schedules import karras_sigmas
from .training import TrainSettings, train_denoiser, train_ensemble

__all__ = ["PhaseConfig", "run_sweep", "run_cell", "read_results", "tau_mem", "RESULT_COLUMNS",
           "log_checkpoints", "default_sizes", "atomic_write",
           "transition_size", "TransitionFit"]


#: The columns of ``results.csv``, in order (more may follow).
RESULT_COLUMNS = [
    "n", "seed", "width", "framework", "step",
    "memorization", "memorization_se", "memorization_ci_low", "memorization_ci_high",
    "memorization_a", "memorization_b",
    "reproducibility", "reproducibility_se", "reproducibility_ci_low", "reproducibility_ci_high",
    "similarity_ab",
    "dist_empirical", "dist_empirical_heldout", "dist_gaussian", "dist_gaussian_heldout",
    "similarity_gaussian",
    "empirical_memorization", "gaussian_memorization", "gaussian_reproducibility", "empirical_reproducibility",
    "train_seconds", "eval_seconds",
]


def default_sizes(n_max: int, count: int = 5, n_min: int = 8) -> tuple[int, ...]:
    """``count`` log-spaced sizes from ``n_min`` to ``n_max`` (distinct integers)."""
    sizes = sorted({int(round(v)) for v in np.geomspace(n_min, n_max, count)})
    return tuple(sizes)


def log_checkpoints(steps: int, count: int) -> tuple[int, ...]:
    """``count`` log-spaced training steps ending at ``steps`` (distinct, increasing)."""
    if count < 1 or steps < 1:
        raise ValueError(f"checkpoints: need steps >= 1 and count >= 1, got {steps}, {count}")
    lo = max(1, steps / 2 ** (count - 1))
    pts = sorted({int(round(v)) for v in np.geomspace(lo, steps, count)})
    return tuple(pts)


@dataclass(frozen=True)
class PhaseConfig:
    """Every setting of a phase sweep (defaults: the README's main job on the digits).

    Attributes
    ----------
    data : data set spec (see :func:`gaussdiff.data.load_dataset`).
    sizes : increasing training-set sizes N; each cell needs ``2 N`` points.
    seeds, widths, frameworks : the other grid axes (frameworks in ``edm``, ``vp``, ``flow``).
    net : ``"mlp"`` or ``"unet"``.
    steps : training steps per network; ``checkpoints`` log-spaced steps are evaluated.
    batch_size, lr : training settings (``None``: the trainer's defaults).
    n_samples : samples per network and checkpoint, all from the same noise.
    sample_steps : Heun steps on the Karras grid (2 * steps - 1 denoiser calls).
    dist_points : clean points per distance estimate; ``dist_sigmas`` its noise grid.
    similarity, threshold : the pairwise similarity and the threshold of reproducibility.
    noise_seed : seed of the shared sampling noise (row j is the same in every cell).
    device : ``"cpu"`` or ``"cuda"``.
    ensemble : train the two networks of a cell together as one vectorised model
        (:func:`gaussdiff.training.train_ensemble`: same draws, same result up to floating-point
        order) instead of one after the other; ``None`` (default): on CUDA only, where one
        small network leaves the GPU idle. Like ``device`` it is not part of
        :meth:`cell_hash`.
    """

    data: str = "digits"
    sizes: tuple = (8, 26, 85, 276, 896)
    seeds: tuple = (0,)
    widths: tuple = (256,)
    frameworks: tuple = ("edm",)
    net: str = "mlp"
    steps: int = 4000
    checkpoints: int = 6
    batch_size: int | None = 128
    lr: float | None = None
    n_samples: int = 256
    sample_steps: int = 18
    dist_points: int = 128
    dist_sigmas: tuple = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
    similarity: str = "cosine"
    threshold: float = 0.9
    noise_seed: int = 12345
    device: str = "cpu"
    ensemble: bool | None = None

    def use_ensemble(self) -> bool:
        """Whether cells train their two networks as one ensemble (``ensemble``, or CUDA when None)."""
        return str(self.device).startswith("cuda") if self.ensemble is None else bool(self.ensemble)

    def checkpoint_steps(self) -> tuple[int, ...]:
        return log_checkpoints(self.steps, self.checkpoints)

    def cells(self) -> list[dict]:
        return [dict(n=n, seed=s, width=w, framework=f)
                for n in self.sizes for s in self.seeds for w in self.widths for f in self.frameworks]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def cell_hash(self) -> str:
        """Hash of every setting that changes a cell's result (not the grid, not the device, not
        ``ensemble``: both change the result only by floating-point order)."""
        d = self.as_dict()
        for k in ("sizes", "seeds", "widths", "frameworks", "device", "ensemble"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self, n_total: int) -> None:
        """Refuse a bad grid before any training starts."""
        sizes = list(self.sizes)
        if not sizes:
            raise ValueError("sizes: give at least one training-set size")
        if any(int(n) != n or n < 2 for n in sizes):
            raise ValueError(f"sizes: every size must be an integer >= 2, got {sizes}")
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes: must be strictly increasing, got {sizes}")
        if 2 * sizes[-1] > n_total:
            raise ValueError(f"sizes: N = {sizes[-1]} needs 2N = {2 * sizes[-1]} points for two disjoint "
                             f"subsets, but the data set has {n_total} (largest possible N: {n_total // 2})")
        for f in self.frameworks:
            if f not in FRAMEWORKS:
                raise ValueError(f"frameworks: unknown framework {f!r}; choose from {FRAMEWORKS}")
        if not self.frameworks or not self.widths or not self.seeds:
            raise ValueError("frameworks, widths, seeds: each needs at least one value")
        if any(int(w) != w or w < 1 for w in self.widths):
            raise ValueError(f"widths: must be positive integers, got {list(self.widths)}")
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {NETS}, got {self.net!r}")
        if self.steps < 1 or self.checkpoints < 1:
            raise ValueError("steps, checkpoints: must be >= 1")
        if self.n_samples < 2 or self.sample_steps < 1 or self.dist_points < 2:
            raise ValueError("n_samples, sample_steps, dist_points: n_samples >= 2, sample_steps >= 1, dist_points >= 2")
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.ensemble not in (None, True, False):
            raise ValueError(f"ensemble: must be True, False or None (auto: CUDA only), got {self.ensemble!r}")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device: CUDA was requested but no CUDA device is available")


def cell_key(cell: dict) -> str:
    return f"n{cell['n']:06d}_s{cell['seed']}_w{cell['width']}_{cell['framework']}"


# =============================================================================================
# Atomic files
# =============================================================================================

def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# =============================================================================================
# One cell
# =============================================================================================

def _pooled_memorization(samples_list, trains, seed):
    """Memorization over the samples of both networks, each against its own training set:
    the pooled fraction and each network's own."""
    indicators = [memorized(samples, train) for samples, train in zip(samples_list, trains)]
    parts = [bootstrap_fraction(ind, seed=seed) for ind in indicators]
    return bootstrap_fraction(torch.cat(indicators), seed=seed), parts


def _sample(denoiser, noise, sigmas):
    with torch.no_grad():
        return sample_heun(denoiser, noise, sigmas)


def run_cell(config: PhaseConfig | dict, cell: dict, outdir: str | Path, *, progress: bool = False,
             threads: int | None = None) -> dict:
    """Train and evaluate one cell, write ``cells/<key>.json`` atomically, return its record.

    Skips the work (and returns the stored record) when the file exists with the same settings.
    The steps: the closed forms of the two disjoint subsets and their samples
    (:func:`_closed_form_references`), the two networks trained with every checkpoint evaluated
    as it comes (:func:`_train_pair`, :class:`_CheckpointEvaluator`), one table row per
    checkpoint (:func:`_cell_rows`), and the figures' material (:func:`_write_cell_images`).
    """
    if isinstance(config, dict):
        config = PhaseConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    if threads:
        torch.set_num_threads(int(threads))
        import numba
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    outdir = Path(outdir)
    key = cell_key(cell)
    path = outdir / "cells" / f"{key}.json"
    chash = config.cell_hash()
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("cell_hash") == chash:
            return stored

    t_start = time.perf_counter()
    data, _, info = load_dataset(config.data)
    n, seed = int(cell["n"]), int(cell["seed"])
    train_a, train_b = disjoint_split(data, n, seed)
    sigmas = karras_sigmas(config.sample_steps)
    noise = seeded_noise(config.n_samples, tuple(data.shape[1:]), seed=config.noise_seed,
                         dtype=torch.float32) * float(sigmas[0])
    closed, closed_samples, refs = _closed_form_references(config, train_a, train_b, noise, sigmas, seed)
    evaluate = _CheckpointEvaluator(config, closed, train_a, train_b, noise, sigmas, seed)
    train_seconds = _train_pair(config, cell, train_a, train_b, evaluate, progress=progress)
    train_seconds -= evaluate.seconds                 # the checkpoint evaluations ran inside

    t_eval = time.perf_counter()
    rows = _cell_rows(config, cell, evaluate.snapshots, closed_samples, refs, train_a, train_b)
    eval_seconds = time.perf_counter() - t_eval + evaluate.seconds
    for row in rows:
        row["train_seconds"], row["eval_seconds"] = train_seconds, eval_seconds
    _write_cell_images(outdir / "cells" / f"{key}.npz", evaluate.snapshots, closed_samples, train_a,
                       min(16, config.n_samples))
    record = {"cell": dict(cell), "key": key, "cell_hash": chash, "rows": rows,
              "data_info": {k: v for k, v in info.items() if k != "truth"},
              "wall_seconds": time.perf_counter() - t_start}
    atomic_write(path, json.dumps(record, indent=1, default=_json_default))
    return record


def _closed_form_references(config: PhaseConfig, train_a, train_b, noise, sigmas, seed):
    """The exact empirical and Gaussian denoisers of each subset (float64), their samples from
    the cell's noise, and the closed forms' own memorization and reproducibility."""
    closed = {}
    for name, train in (("a", train_a), ("b", train_b)):
        t64 = train.to(torch.float64)
        closed[name] = {"empirical": EmpiricalDenoiser(t64), "gaussian": GaussianDenoiser.fit(t64)}
    noise64 = noise.to(torch.float64)
    closed_samples = {(k, m): _sample(den, noise64, sigmas.to(torch.float64)).float()
                      for k in ("a", "b") for m, den in closed[k].items()}
    sims = get_similarity(config.similarity)
    refs = {}
    for kind in ("empirical", "gaussian"):
        mem, _ = _pooled_memorization([closed_samples[("a", kind)], closed_samples[("b", kind)]],
                                      [train_a, train_b], seed)
        refs[f"{kind}_memorization"] = mem.value
    for kind in ("gaussian", "empirical"):
        refs[f"{kind}_reproducibility"] = reproducibility(
            closed_samples[("a", kind)], closed_samples[("b", kind)], similarity=sims, threshold=config.threshold,
            seed=seed).fraction.value
    return closed, closed_samples, refs


class _CheckpointEvaluator:
    """``evaluate(which, step, denoiser)``: a network's samples from the cell's noise and its
    distances to the closed forms of its own subset (on its own and on held-out points), stored
    in ``snapshots[step][which]``; ``seconds`` is the time spent here (it runs inside training)."""

    def __init__(self, config: PhaseConfig, closed: dict, train_a, train_b, noise, sigmas, seed: int):
        self.config, self.closed, self.trains = config, closed, {"a": (train_a, train_b), "b": (train_b, train_a)}
        self.noise, self.sigmas, self.seed = noise, sigmas.to(torch.float32), seed
        self.dist_sigmas = torch.tensor(config.dist_sigmas, dtype=torch.float32).to(torch.float64)
        self.m = min(config.dist_points, train_a.shape[0])
        self.snapshots: dict[int, dict] = {}
        self.seconds = 0.0

    def __call__(self, which: str, step: int, denoiser):
        t0 = time.perf_counter()
        den = denoiser.to(device="cpu") if hasattr(denoiser, "to") and self.config.device != "cpu" else denoiser
        samples = _sample(den, self.noise, self.sigmas)
        own, other = self.trains[which]
        g = torch.Generator().manual_seed(self.seed * 1000 + step)
        dist = {}
        for ref_name in ("empirical", "gaussian"):
            ref = self.closed[which][ref_name]
            for where, pts in (("", own[:self.m]), ("_heldout", other[:self.m])):
                prof = denoiser_distance(den, ref, pts.to(torch.float64), self.dist_sigmas, generator=g)
                dist[f"dist_{ref_name}{where}"] = prof.mean
        self.snapshots.setdefault(step, {})[which] = {"samples": samples, **dist}
        self.seconds += time.perf_counter() - t0


def _train_pair(config: PhaseConfig, cell: dict, train_a, train_b, evaluate: _CheckpointEvaluator, *,
                progress: bool) -> float:
    """Train the cell's two networks (seeds ``2 seed`` and ``2 seed + 1``) on the two subsets,
    calling ``evaluate`` at every checkpoint; returns the wall seconds (evaluations included)."""
    seed = int(cell["seed"])
    opts = {k: v for k, v in (("batch_size", config.batch_size), ("lr", config.lr)) if v is not None}
    opts.update(steps=config.steps, net=config.net, width=int(cell["width"]), framework=cell["framework"],
                device=config.device, checkpoint_steps=config.checkpoint_steps(), progress=progress)
    t0 = time.perf_counter()
    if config.use_ensemble():          # A and B as one vectorised model (the same draws as below)
        train_ensemble([train_a, train_b], seeds=[seed * 2, seed * 2 + 1],
                       callback=lambda step, dens: [evaluate(w, step, d) for w, d in zip("ab", dens)], **opts)
    else:
        for which, train in (("a", train_a), ("b", train_b)):
            train_denoiser(train, seed=seed * 2 + (which == "b"),
                           callback=lambda step, den, w=which: evaluate(w, step, den), **opts)
    return time.perf_counter() - t0


def _cell_rows(config: PhaseConfig, cell: dict, snapshots: dict, closed_samples: dict, refs: dict,
               train_a, train_b) -> list[dict]:
    """One row per checkpoint: pooled memorization, reproducibility of the two networks, their
    similarity to the Gaussian's samples, the mean distances to the closed forms, and ``refs``."""
    n, seed = int(cell["n"]), int(cell["seed"])
    sims = get_similarity(config.similarity)
    rows = []
    for step in sorted(snapshots):
        sa, sb = snapshots[step]["a"], snapshots[step]["b"]
        mem, (mem_a, mem_b) = _pooled_memorization([sa["samples"], sb["samples"]], [train_a, train_b], seed)
        rep = reproducibility(sa["samples"], sb["samples"], similarity=sims, threshold=config.threshold, seed=seed)
        sim_g = 0.5 * (float(sims(sa["samples"], closed_samples[("a", "gaussian")]).mean())
                       + float(sims(sb["samples"], closed_samples[("b", "gaussian")]).mean()))
        row = dict(n=n, seed=seed, width=int(cell["width"]), framework=cell["framework"], step=int(step),
                   **{k: v for k, v in mem.as_dict("memorization").items() if not k.endswith("_n")},
                   memorization_a=mem_a.value, memorization_b=mem_b.value,
                   **{k: v for k, v in rep.fraction.as_dict("reproducibility").items() if not k.endswith("_n")},
                   similarity_ab=rep.mean_similarity,
                   similarity_gaussian=sim_g, **refs)
        for k in ("dist_empirical", "dist_empirical_heldout", "dist_gaussian", "dist_gaussian_heldout"):
            row[k] = 0.5 * (sa[k] + sb[k])
        rows.append(row)
    return rows


def _write_cell_images(path: Path, snapshots: dict, closed_samples: dict, train_a, k: int):
    """The figures' material: ``k`` samples of network A, network B and the closed forms at the
    last checkpoint, and each A sample's nearest training image."""
    last = snapshots[max(snapshots)]
    _, nn_idx = nearest_neighbors(last["a"]["samples"][:k], train_a, 1)
    atomic_write(path, _npz_bytes(
        net_a=last["a"]["samples"][:k].numpy(), net_b=last["b"]["samples"][:k].numpy(),
        empirical=closed_samples[("a", "empirical")][:k].numpy(),
        gaussian=closed_samples[("a", "gaussian")][:k].numpy(),
        nearest=train_a[nn_idx[:, 0]].numpy()))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


# =============================================================================================
# The sweep
# =============================================================================================

def _cell_worker(config_dict, cell, outdir, threads):
    return run_cell(config_dict, cell, outdir, progress=False, threads=threads)


def run_sweep(config: PhaseConfig, outdir: str | Path, *, workers: int = 1, dask_scheduler: str | None = None,
              progress: bool = True) -> list[dict]:
    """Run every cell of ``config`` (skipping finished ones) and write ``results.csv``,
    ``tau_mem.csv`` and ``config.json`` under ``outdir``. Returns all rows.

    Parameters
    ----------
    workers : 1 runs the cells here; K > 1 fans them out to K spawned processes (each with
        ``cpu_count // K`` torch threads); 0 picks ``min(cpu_count, number of cells)``.
    dask_scheduler : address of a Dask scheduler (``tcp://host:8786``) or a
        ``dask.distributed.Client``; the cells then run on that cluster.
    """
    from tqdm.auto import tqdm


    outdir = Path(outdir)
    _check_outdir(outdir)
    data, _, info = load_dataset(config.data)
    config.validate(data.shape[0])
    workers = check_int(workers, "workers", minimum=0)
    if workers == 0:
        workers = max(1, min(os.cpu_count() or 1, len(config.cells())))
    t0 = time.perf_counter()
    cfg_path = outdir / "config.json"
    meta = {"config": config.as_dict(), "checkpoint_steps": list(config.checkpoint_steps()),
            "gaussdiff_version": __version__, "torch_version": torch.__version__,
            "numpy_version": np.__version__, "device": config.device, "workers": workers,
            "dask_scheduler": str(dask_scheduler) if dask_scheduler else None,
            "data_info": {k: v for k, v in info.items() if k != "truth"}, "cell_hash": config.cell_hash()}
    atomic_write(cfg_path, json.dumps({**meta, "status": "running"}, indent=1, default=_json_default))

    cells = config.cells()
    todo = [c for c in cells if not _cell_done(outdir, c, config.cell_hash())]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="phase sweep cells", disable=not progress)
    cfg_dict = config.as_dict()
    try:
        if dask_scheduler is not None:
            _run_dask(dask_scheduler, cfg_dict, todo, outdir, bar)
        elif workers == 1:
            for cell in todo:
                run_cell(config, cell, outdir, progress=progress)
                bar.update(1)
                _write_tables(outdir, cells)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = multiprocessing.get_context("spawn")       # never fork: numba kernels are not fork-safe
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = [pool.submit(_cell_worker, cfg_dict, c, str(outdir), threads) for c in todo]
                for fut in as_completed(futs):
                    fut.result()
                    bar.update(1)
                    _write_tables(outdir, cells)
    finally:
        bar.close()
    rows = _write_tables(outdir, cells)
    wall = time.perf_counter() - t0
    cell_records = [json.loads((outdir / "cells" / f"{cell_key(c)}.json").read_text()) for c in cells]
    meta.update(status="finished", wall_seconds=wall,
                train_seconds=sum(r["rows"][0]["train_seconds"] for r in cell_records),
                eval_seconds=sum(r["rows"][0]["eval_seconds"] for r in cell_records),
                cell_seconds=sum(r["wall_seconds"] for r in cell_records))
    atomic_write(cfg_path, json.dumps(meta, indent=1, default=_json_default))
    return rows


def _run_dask(scheduler, cfg_dict, todo, outdir, bar):
    try:
        from dask.distributed import Client, as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - message path
        raise ValueError("dask_scheduler: needs dask.distributed; pip install 'gaussdiff[dask]'") from exc
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futs = client.map(_cell_worker, [cfg_dict] * len(todo), todo, [str(outdir)] * len(todo),
                          [None] * len(todo), pure=False)
        for fut in dask_completed(futs):
            fut.result()
            bar.update(1)
    finally:
        if client is not scheduler:
            client.close()


def _check_outdir(outdir: Path) -> None:
    try:
        (outdir / "cells").mkdir(parents=True, exist_ok=True)
        probe = outdir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"outdir: {outdir} is not writable ({exc.strerror or exc})") from exc


def _cell_done(outdir: Path, cell: dict, chash: str) -> bool:
    path = outdir / "cells" / f"{cell_key(cell)}.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("cell_hash") == chash
    except (json.JSONDecodeError, OSError):
        return False


def _write_tables(outdir: Path, cells: list[dict] | None = None) -> list[dict]:
    """Rebuild ``results.csv`` and ``tau_mem.csv`` from the finished cell files (atomically)."""
    rows = read_results(outdir, cells)
    if not rows:
        return rows
    cols = RESULT_COLUMNS + [c for c in rows[0] if c not in RESULT_COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write(outdir / "results.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")

    warmup = TrainSettings().warmup              # the sweep trains with the trainer's warm-up
    w.writerow(["n", "width", "framework", "tau_mem", "inside_warmup"])
    for (n, width, fw), t in sorted(tau_mem(rows).items()):
        # a tau inside the learning-rate warm-up is set by the ramp, not by the dynamics: flagged
        w.writerow([n, width, fw, "" if t is None else f"{t:.6g}", "" if t is None else int(t <= warmup)])
    atomic_write(outdir / "tau_mem.csv", buf.getvalue())
    return rows


def read_results(outdir: str | Path, cells: list[dict] | None = None) -> list[dict]:
    """All rows of the finished cells under ``outdir`` (a finished or partial sweep), sorted."""
    outdir = Path(outdir)
    if cells is None:
        paths = sorted((outdir / "cells").glob("*.json"))
    else:
        paths = [outdir / "cells" / f"{cell_key(c)}.json" for c in cells]
    rows = []
    for p in paths:
        if p.exists():
            rows.extend(json.loads(p.read_text())["rows"])
    rows.sort(key=lambda r: (r["n"], r["seed"], r["width"], r["framework"], r["step"]))
    return rows


def tau_mem(rows: list[dict], *, level: float = 0.5) -> dict:
    """The memorization onset per ``(n, width, framework)``: the training step at which the
    memorization fraction (averaged over seeds) first reaches ``level``, interpolated linearly
    in log(step) between checkpoints; ``None`` when it is never reached within the budget."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["n"], r["width"], r["framework"]), {}).setdefault(r["step"], []).append(r["memorization"])
    out = {}
    for key, by_step in groups.items():
        steps = sorted(by_step)
        mem = [float(np.mean(by_step[s])) for s in steps]
        out[key] = None
        for i, (s, m) in enumerate(zip(steps, mem)):
            if m >= level:
                if i == 0:
                    out[key] = float(s)
                else:
                    s0, m0 = steps[i - 1], mem[i - 1]
                    frac = (level - m0) / (m - m0)
                    out[key] = float(math.exp(math.log(s0) + frac * (math.log(s) - math.log(s0))))
                break
    return out


@dataclass(frozen=True)
class TransitionFit:
    """What :func:`transition_size` returns.

    Attributes
    ----------
    n_star : the size at which the fitted curve crosses ``level`` (nan when the fit does not
        move in the expected direction). ci : its ``(low, high)`` bootstrap percentile interval.
    slope, intercept : the logistic fit ``p(N) = 1 / (1 + exp(-(intercept + slope log N)))``.
    inside_grid : ``n_star`` lies between the smallest and the largest N measured.
    draws : the bootstrap values of ``log N*`` (nan for draws with no crossing).
    separated : the shares jump from one end (0 or 1) to the other between two neighbouring sizes
        with nothing in between: ``n_star`` then only says "between those two sizes" (the slope
        is set by a tiny ridge) and ``ci`` is degenerate.
    """

    n_star: float
    ci: tuple
    slope: float
    intercept: float
    inside_grid: bool
    draws: np.ndarray = dataclasses.field(repr=False)
    separated: bool = False


def _logistic_fit(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    """Binomial maximum likelihood of ``logit p = a + b x`` (Newton, with a small ridge so
    that a perfectly separated curve still gives a finite, steep fit)."""
    a, b, ridge = 0.0, 0.0, 1e-6
    xc = x - x.mean()
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a + b * xc)))
        w = n * p * (1 - p)
        g = np.array([np.sum(k - n * p) - ridge * a, np.sum((k - n * p) * xc) - ridge * b])
        h = np.array([[w.sum() + ridge, (w * xc).sum()], [(w * xc).sum(), (w * xc * xc).sum() + ridge]])
        step = np.linalg.solve(h, g)
        a, b = a + step[0], b + step[1]
        if np.abs(step).max() < 1e-10:
            break
    return a - b * x.mean(), b


def transition_size(ns, successes, trials, *, level: float = 0.5, increasing: bool = True,
                    n_boot: int = 2000, seed: int = 0) -> TransitionFit:
    r"""The training-set size at which a share crosses ``level``, from a logistic fit in
    ``log N`` across *all* sizes (not a first crossing, which a non-monotone curve fools).

    At each size :math:`N_j` the share is ``successes[j]`` out of ``trials[j]`` (e.g. the pairs
    whose similarity passes a threshold); the fit :math:`\mathrm{logit}\, p = a + b \log N` is
    binomial maximum likelihood and :math:`N^* = \exp((\mathrm{logit}(level) - a)/b)`. Its
    interval: ``n_boot`` refits with each point's successes redrawn from
    :math:`\mathrm{Binomial}(n_j, k_j / n_j)`, percentiles 2.5 and 97.5 of :math:`\log N^*`.
    A share that never moves (all zero, or all full) gives ``n_star = nan``; a perfectly
    separated one is flagged (``separated``).

    Parameters
    ----------
    ns : sizes (at least two distinct). successes, trials : counts per size.
    level : the share that defines the transition, in (0, 1).
    increasing : the share is expected to rise with N (reproducibility) or fall (memorization);
        a fit going the other way gives ``n_star = nan``.
    n_boot, seed : bootstrap draws and their seed.
    """
    sizes = np.asarray(ns, dtype=float)
    if sizes.ndim == 1 and not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise ValueError("ns: sizes must be finite and > 0")
    x = np.log(sizes)
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if x.ndim != 1 or not (x.shape == k.shape == n.shape) or np.unique(x).size < 2:
        raise ValueError("ns: need at least two distinct sizes, with one count of successes and trials each")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("successes: must lie between 0 and trials (trials >= 1)")
    if not 0 < level < 1:
        raise ValueError(f"level: must lie in (0, 1), got {level!r}")
    target = math.log(level / (1 - level))
    sign = 1.0 if increasing else -1.0

    def crossing(kk):
        a, b = _logistic_fit(x, kk, n)
        return (target - a) / b if sign * b > 0 else float("nan"), a, b

    if np.all(k == 0) or np.all(k == n):       # the share never moves: no crossing to locate
        return TransitionFit(float("nan"), (float("nan"), float("nan")), 0.0, float("nan"), False,
                             np.full(n_boot, np.nan), False)
    order = np.argsort(x)
    ks, ns_ = k[order], n[order]
    lo_side, hi_side = (ks == 0, ks == ns_) if increasing else (ks == ns_, ks == 0)
    # perfectly separated: every size below some point at one end, every size above at the other;
    # the fit's slope is then set by the ridge and the bootstrap cannot widen the interval
    separated = any(lo_side[:j].all() and hi_side[j:].all() for j in range(1, x.size))
    log_star, a, b = crossing(k)
    rng = np.random.default_rng(seed)
    draws = np.array([crossing(rng.binomial(n.astype(int), k / n).astype(float))[0] for _ in range(n_boot)])
    finite = draws[np.isfinite(draws)]
    ci = (float(np.exp(np.percentile(finite, 2.5))), float(np.exp(np.percentile(finite, 97.5)))) \
        if finite.size > n_boot // 2 else (float("nan"), float("nan"))
    n_star = float(math.exp(log_star)) if math.isfinite(log_star) else float("nan")
    inside = bool(math.isfinite(log_star) and x.min() <= log_star <= x.max())
    return TransitionFit(n_star, ci, float(b), float(a), inside, draws, separated)
