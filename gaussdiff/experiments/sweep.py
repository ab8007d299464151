"""The sweep: every cell of a :class:`PhaseConfig` here, in spawned worker processes or on a
Dask cluster, skipping finished cells, and the tables ``results.csv`` / ``tau_mem.csv`` rebuilt
from the cell files."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from .._checks import check_int
from .._io import atomic_write
from .._version import __version__
from ..data import load_dataset
from ..training import TrainSettings
from .analysis import tau_mem
from .cell import _json_default, run_cell
from .config import RESULT_COLUMNS, PhaseConfig, cell_key

__all__ = ["run_sweep", "read_results"]


def _cell_worker(config_dict, cell, outdir, threads):
    return run_cell(config_dict, cell, outdir, progress=False, threads=threads)


def run_sweep(
    config: PhaseConfig,
    outdir: str | Path,
    *,
    workers: int = 1,
    dask_scheduler: str | None = None,
    progress: bool = True,
) -> list[dict]:
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
    meta = {
        "config": config.as_dict(),
        "checkpoint_steps": list(config.checkpoint_steps()),
        "gaussdiff_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "device": config.device,
        "workers": workers,
        "dask_scheduler": str(dask_scheduler) if dask_scheduler else None,
        "data_info": {k: v for k, v in info.items() if k != "truth"},
        "cell_hash": config.cell_hash(),
    }
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
            ctx = multiprocessing.get_context("spawn")  # never fork: numba kernels are not fork-safe
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
    meta.update(
        status="finished",
        wall_seconds=wall,
        train_seconds=sum(r["rows"][0]["train_seconds"] for r in cell_records),
        eval_seconds=sum(r["rows"][0]["eval_seconds"] for r in cell_records),
        cell_seconds=sum(r["wall_seconds"] for r in cell_records),
    )
    atomic_write(cfg_path, json.dumps(meta, indent=1, default=_json_default))
    return rows


def _run_dask(scheduler, cfg_dict, todo, outdir, bar):
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - message path
        raise ValueError("dask_scheduler: needs dask.distributed; pip install 'gaussdiff[dask]'") from exc
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futs = client.map(
            _cell_worker, [cfg_dict] * len(todo), todo, [str(outdir)] * len(todo), [None] * len(todo), pure=False
        )
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

    warmup = TrainSettings().warmup  # the sweep trains with the trainer's warm-up
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
