"""One cell of the sweep: the closed forms of two disjoint subsets, two networks trained and
evaluated at every checkpoint from the same noise, one table row per checkpoint, written
atomically to ``cells/<key>.json`` (and the figures' material to ``cells/<key>.npz``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from .._threads import cpu_threads
from ..data import disjoint_split, load_dataset
from ..denoisers import GaussianDenoiser
from ..empirical import EmpiricalDenoiser
from ..kernels import nearest_neighbors
from ..metrics import bootstrap_fraction, denoiser_distance, get_similarity, memorized, reproducibility
from ..sampling import sample_heun, seeded_noise
from ..schedules import karras_sigmas
from ..training import train_denoiser, train_ensemble
from .config import PhaseConfig, cell_key

__all__ = ["run_cell"]


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _pooled_memorization(samples_list, trains, seed):
    """Memorization over the samples of both networks, each against its own training set:
    the pooled fraction and each network's own."""
    indicators = [memorized(samples, train) for samples, train in zip(samples_list, trains)]
    parts = [bootstrap_fraction(ind, seed=seed) for ind in indicators]
    return bootstrap_fraction(torch.cat(indicators), seed=seed), parts


def _sample(denoiser, noise, sigmas):
    with torch.no_grad():
        return sample_heun(denoiser, noise, sigmas)


def run_cell(
    config: PhaseConfig | dict, cell: dict, outdir: str | Path, *, progress: bool = False, threads: int | None = None
) -> dict:
    """Train and evaluate one cell, write ``cells/<key>.json`` atomically, return its record.

    Skips the work (and returns the stored record) when the file exists with the same settings.
    The steps: the closed forms of the two disjoint subsets and their samples
    (:func:`_closed_form_references`), the two networks trained with every checkpoint evaluated
    as it comes (:func:`_train_pair`, :class:`_CheckpointEvaluator`), one table row per
    checkpoint (:func:`_cell_rows`), and the figures' material (:func:`_write_cell_images`).
    ``threads``: torch and numba CPU threads for the cell (restored afterwards); None keeps them.
    """
    if isinstance(config, dict):
        config = PhaseConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    with cpu_threads(threads or None, numba=True):
        return _run_cell(config, cell, Path(outdir), progress=progress)


def _run_cell(config: PhaseConfig, cell: dict, outdir: Path, *, progress: bool) -> dict:
    key = cell_key(cell)
    path = outdir / "cells" / f"{key}.json"
    chash = config.cell_hash()
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            stored = {}  # unreadable (e.g. a disk error): the cell is recomputed and rewritten
        if isinstance(stored, dict) and stored.get("cell_hash") == chash and "rows" in stored:
            return stored

    t_start = time.perf_counter()
    data, _, info = load_dataset(config.data)
    n, seed = int(cell["n"]), int(cell["seed"])
    train_a, train_b = disjoint_split(data, n, seed)
    sigmas = karras_sigmas(config.sample_steps)
    noise = seeded_noise(config.n_samples, tuple(data.shape[1:]), seed=config.noise_seed, dtype=torch.float32) * float(
        sigmas[0]
    )
    closed, closed_samples, refs = _closed_form_references(config, train_a, train_b, noise, sigmas, seed)
    evaluate = _CheckpointEvaluator(config, closed, train_a, train_b, noise, sigmas, seed)
    train_seconds = _train_pair(config, cell, train_a, train_b, evaluate, progress=progress)
    train_seconds -= evaluate.seconds  # the checkpoint evaluations ran inside

    t_eval = time.perf_counter()
    rows = _cell_rows(config, cell, evaluate.snapshots, closed_samples, refs, train_a, train_b)
    eval_seconds = time.perf_counter() - t_eval + evaluate.seconds
    for row in rows:
        row["train_seconds"], row["eval_seconds"] = train_seconds, eval_seconds
    _write_cell_images(
        outdir / "cells" / f"{key}.npz", evaluate.snapshots, closed_samples, train_a, min(16, config.n_samples)
    )
    record = {
        "cell": dict(cell),
        "key": key,
        "cell_hash": chash,
        "rows": rows,
        "data_info": {k: v for k, v in info.items() if k != "truth"},
        "wall_seconds": time.perf_counter() - t_start,
    }
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
    closed_samples = {
        (k, m): _sample(den, noise64, sigmas.to(torch.float64)).float()
        for k in ("a", "b")
        for m, den in closed[k].items()
    }
    sims = get_similarity(config.similarity)
    refs = {}
    for kind in ("empirical", "gaussian"):
        mem, _ = _pooled_memorization(
            [closed_samples[("a", kind)], closed_samples[("b", kind)]], [train_a, train_b], seed
        )
        refs[f"{kind}_memorization"] = mem.value
        refs[f"{kind}_memorization_se"] = mem.se
    for kind in ("gaussian", "empirical"):
        rep = reproducibility(
            closed_samples[("a", kind)],
            closed_samples[("b", kind)],
            similarity=sims,
            threshold=config.threshold,
            seed=seed,
        ).fraction
        refs[f"{kind}_reproducibility"] = rep.value
        refs[f"{kind}_reproducibility_se"] = rep.se
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
            for where, pts in (("", own[: self.m]), ("_heldout", other[: self.m])):
                prof = denoiser_distance(den, ref, pts.to(torch.float64), self.dist_sigmas, generator=g)
                dist[f"dist_{ref_name}{where}"] = prof.mean
        self.snapshots.setdefault(step, {})[which] = {"samples": samples, **dist}
        self.seconds += time.perf_counter() - t0


def _train_pair(
    config: PhaseConfig, cell: dict, train_a, train_b, evaluate: _CheckpointEvaluator, *, progress: bool
) -> float:
    """Train the cell's two networks (seeds ``2 seed`` and ``2 seed + 1``) on the two subsets,
    calling ``evaluate`` at every checkpoint; returns the wall seconds (evaluations included)."""
    seed = int(cell["seed"])
    opts = {k: v for k, v in (("batch_size", config.batch_size), ("lr", config.lr)) if v is not None}
    opts.update(
        steps=config.steps,
        net=config.net,
        width=int(cell["width"]),
        framework=cell["framework"],
        device=config.device,
        checkpoint_steps=config.checkpoint_steps(),
        progress=progress,
    )
    t0 = time.perf_counter()
    if config.use_ensemble():  # A and B as one vectorised model (the same draws as below)
        train_ensemble(
            [train_a, train_b],
            seeds=[seed * 2, seed * 2 + 1],
            callback=lambda step, dens: [evaluate(w, step, d) for w, d in zip("ab", dens)],
            **opts,
        )
    else:
        for which, train in (("a", train_a), ("b", train_b)):
            train_denoiser(
                train,
                seed=seed * 2 + (which == "b"),
                callback=lambda step, den, w=which: evaluate(w, step, den),
                **opts,
            )
    return time.perf_counter() - t0


def _cell_rows(
    config: PhaseConfig, cell: dict, snapshots: dict, closed_samples: dict, refs: dict, train_a, train_b
) -> list[dict]:
    """One row per checkpoint: pooled memorization, reproducibility of the two networks, their
    similarity to the Gaussian's samples, the mean distances to the closed forms, and ``refs``."""
    n, seed = int(cell["n"]), int(cell["seed"])
    sims = get_similarity(config.similarity)
    rows = []
    for step in sorted(snapshots):
        sa, sb = snapshots[step]["a"], snapshots[step]["b"]
        mem, (mem_a, mem_b) = _pooled_memorization([sa["samples"], sb["samples"]], [train_a, train_b], seed)
        rep = reproducibility(sa["samples"], sb["samples"], similarity=sims, threshold=config.threshold, seed=seed)
        sim_g = 0.5 * (
            float(sims(sa["samples"], closed_samples[("a", "gaussian")]).mean())
            + float(sims(sb["samples"], closed_samples[("b", "gaussian")]).mean())
        )
        row = dict(
            n=n,
            seed=seed,
            width=int(cell["width"]),
            framework=cell["framework"],
            step=int(step),
            **{k: v for k, v in mem.as_dict("memorization").items() if not k.endswith("_n")},
            memorization_a=mem_a.value,
            memorization_b=mem_b.value,
            **{k: v for k, v in rep.fraction.as_dict("reproducibility").items() if not k.endswith("_n")},
            similarity_ab=rep.mean_similarity,
            similarity_gaussian=sim_g,
            **refs,
        )
        for k in ("dist_empirical", "dist_empirical_heldout", "dist_gaussian", "dist_gaussian_heldout"):
            row[k] = 0.5 * (sa[k] + sb[k])
        rows.append(row)
    return rows


def _write_cell_images(path: Path, snapshots: dict, closed_samples: dict, train_a, k: int):
    """The figures' material: ``k`` samples of network A, network B and the closed forms at the
    last checkpoint, and each A sample's nearest training image."""
    last = snapshots[max(snapshots)]
    _, nn_idx = nearest_neighbors(last["a"]["samples"][:k], train_a, 1)
    atomic_write(
        path,
        _npz_bytes(
            net_a=last["a"]["samples"][:k].numpy(),
            net_b=last["b"]["samples"][:k].numpy(),
            empirical=closed_samples[("a", "empirical")][:k].numpy(),
            gaussian=closed_samples[("a", "gaussian")][:k].numpy(),
            nearest=train_a[nn_idx[:, 0]].numpy(),
        ),
    )


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
