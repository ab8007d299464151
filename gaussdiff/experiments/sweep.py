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
from .._io import atomic_write, make_outdir
from .._procs import die_with_parent
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
    replace: bool = False,
) -> list[dict]:
    """Run every cell of ``config`` (skipping finished ones) and write ``results.csv``,
    ``tau_mem.csv``, ``timings.csv`` and ``config.json`` under ``outdir``. Returns all rows.

    A folder holds one run: its ``config.json`` records the settings. Rerunning with the same
    settings resumes; a different grid (sizes, seeds, widths, frameworks) reuses the cells it
    shares and the tables and figures show the new grid only. Settings that change a cell's
    result (:meth:`PhaseConfig.cell_hash`: steps, data, samples, ...) are refused, naming them,
    unless ``replace=True``, which moves the old run into ``outdir/superseded/<its hash>/``
    (nothing is deleted) and starts a new one.

    Parameters
    ----------
    workers : 1 runs the cells here; K > 1 fans them out to K spawned processes (each with
        ``cpu_count // K`` torch threads); 0 picks ``min(cpu_count, number of cells)``.
    dask_scheduler : address of a Dask scheduler (``tcp://host:8786``) or a
        ``dask.distributed.Client``; the cells then run on that cluster.
    replace : start a new run when ``outdir`` holds one made with other settings (see above).
    """
    from tqdm.auto import tqdm

    outdir = Path(outdir)
    _check_outdir(outdir)
    data, _, info = load_dataset(config.data)
    config.validate(data.shape[0])
    workers = check_int(workers, "workers", minimum=0)
    old = _recorded_run(outdir)
    if old is not None and old.get("cell_hash") != config.cell_hash():
        if not replace:
            raise ValueError(
                f"outdir: {outdir} holds a run made with other settings ({_differences(old, config)}); "
                "use another outdir, or replace=True (gaussdiff phase-curve --replace) to move that run into "
                f"{outdir / 'superseded'} and start a new one"
            )
        _supersede(outdir, old)
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
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
            )
            try:
                futs = [pool.submit(_cell_worker, cfg_dict, c, str(outdir), threads) for c in todo]
                for fut in as_completed(futs):
                    fut.result()
                    bar.update(1)
                    _write_tables(outdir, cells)
            except BaseException:
                _stop_pool(pool)
                raise
            pool.shutdown()
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the workers are stopped, every finished cell is kept (and in the
        # tables), and config.json says so; a rerun resumes from there
        _write_tables(outdir, cells)
        atomic_write(cfg_path, json.dumps({**meta, "status": "interrupted"}, indent=1, default=_json_default))
        raise
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


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued cells and end the workers now (a cell being computed is lost; its
    file is written atomically, so no half cell is left)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def _recorded_run(outdir: Path) -> dict | None:
    """The ``config.json`` of the run ``outdir`` holds (None when there is none); an unreadable
    one is refused, naming the file."""
    path = outdir / "config.json"
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        PhaseConfig(**_config_args(rec["config"]))
        return rec
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError) as exc:
        raise ValueError(
            f"outdir: {path} is unreadable or not a phase-sweep record ({type(exc).__name__}: {exc}); "
            "remove it, or use another outdir"
        ) from None


def _config_args(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _differences(old: dict, config: PhaseConfig) -> str:
    new, prev = config.as_dict(), old["config"]
    keys = [k for k in new if k not in _GRID and prev.get(k) != new[k]]
    return "; ".join(f"{k}: {prev.get(k)!r} there, {new[k]!r} here" for k in keys) or "another version's cells"


# Per-cell wall times: in timings.csv, not results.csv (which then compares bit for bit across runs).
_TIMINGS = ("train_seconds", "eval_seconds")

# The settings a rerun may change: the grid, and what changes a result only by floating-point order.
_GRID = ("sizes", "seeds", "widths", "frameworks", "device", "ensemble")
_RUN_FILES = (
    "cells",
    "config.json",
    "results.csv",
    "tau_mem.csv",
    "timings.csv",
    "phase_curves.png",
    "phase_diagram.png",
    "samples.png",
)


def _supersede(outdir: Path, old: dict) -> Path:
    """Move the run in ``outdir`` into ``outdir/superseded/<its cell hash>[-k]/`` (renames only)."""
    base = outdir / "superseded" / str(old.get("cell_hash", "unknown"))
    dest, k = base, 1
    while dest.exists():
        k += 1
        dest = base.with_name(f"{base.name}-{k}")
    dest.mkdir(parents=True)
    for name in _RUN_FILES:
        if (outdir / name).exists():
            os.replace(outdir / name, dest / name)
    (outdir / "cells").mkdir()
    return dest


def _run_dask(scheduler, cfg_dict, todo, outdir, bar):
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - message path
        raise ValueError("dask_scheduler: needs dask.distributed; pip install 'gaussdiff[dask]'") from exc
    try:
        client = scheduler if isinstance(scheduler, Client) else Client(scheduler, timeout="15s")
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"dask_scheduler: cannot reach {scheduler!r} ({type(exc).__name__}: {exc})") from None
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
    make_outdir(outdir)
    make_outdir(outdir / "cells")


def _cell_done(outdir: Path, cell: dict, chash: str) -> bool:
    """Whether the cell's file exists, can be read and was made with these settings (an
    unreadable one is recomputed)."""
    path = outdir / "cells" / f"{cell_key(cell)}.json"
    if not path.exists():
        return False
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(stored, dict) and stored.get("cell_hash") == chash and "rows" in stored


def _write_tables(outdir: Path, cells: list[dict] | None = None) -> list[dict]:
    """Rebuild ``results.csv`` and ``tau_mem.csv`` from the finished cell files (atomically)."""
    rows = read_results(outdir, cells)
    if not rows:
        return rows
    cols = RESULT_COLUMNS + [c for c in rows[0] if c not in RESULT_COLUMNS and c not in _TIMINGS]
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
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["n", "seed", "width", "framework", *_TIMINGS])
    seen = set()
    for r in rows:
        key = (r["n"], r["seed"], r["width"], r["framework"])
        if key not in seen:
            seen.add(key)
            w.writerow([*key, *(f"{r[k]:.3f}" for k in _TIMINGS)])
    atomic_write(outdir / "timings.csv", buf.getvalue())
    return rows


def read_results(outdir: str | Path, cells: list[dict] | None = None) -> list[dict]:
    """All rows of the finished cells of the run in ``outdir`` (finished or partial), sorted.

    Only cells of that run count: those of its grid (``cells``, default: the grid recorded in
    ``config.json``) made with its settings (same cell hash), so cells left by an earlier run
    with another grid or other settings never mix in. A cell file that cannot be read is
    refused, naming it."""
    outdir = Path(outdir)
    rec = _recorded_run(outdir)
    if rec is None:
        raise ValueError(f"outdir: {outdir} holds no phase-sweep run (no config.json)")
    if cells is None:
        cells = PhaseConfig(**_config_args(rec["config"])).cells()
    rows = []
    for c in cells:
        p = outdir / "cells" / f"{cell_key(c)}.json"
        if not p.exists():
            continue
        try:
            stored = json.loads(p.read_text())
            cell_rows, chash = stored["rows"], stored.get("cell_hash")
        except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError, TypeError) as exc:
            raise ValueError(
                f"cells: {p} is unreadable ({type(exc).__name__}: {exc}); delete it and rerun to recompute that cell"
            ) from None
        if chash == rec.get("cell_hash"):
            rows.extend(cell_rows)
    rows.sort(key=lambda r: (r["n"], r["seed"], r["width"], r["framework"], r["step"]))
    return rows
