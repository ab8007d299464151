"""Shared harness of the validation scripts: arguments, checks with PASS/FAIL, result files.

Every script in ``validation/`` states one published claim, runs the experiment, prints the
measured numbers beside the expected outcome and writes to ``--outdir``:

* ``result.json`` — ``{"name", "claim", "source", "expected", "measured", "status",
  "checks": [...], "mode": "fast"|"full", "wall_seconds", ...}``;
* its figure(s), ``<name>.png``.

A script's ``status`` is PASS only when every one of its checks passes; each check's verdict
comes from the numbers the script measured (never a constant), and each measured number
carries its uncertainty. ``gaussdiff validate`` runs the scripts and collects the table.

Usage in a script::

    from _common import Report, parse_args

    def main(argv=None):
        args = parse_args(__doc__, argv)
        rep = Report("kadkhodaie", claim="...", source="Kadkhodaie et al. 2024", expected="...",
                     args=args)
        ...
        rep.check("reproducibility rises", value=r, se=r_se, passed=r_large - 2 * se > r_small,
                  expected="> small-N value")
        return rep.finish(figures=[path])
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

__all__ = [
    "Report",
    "parse_args",
    "run_script",
    "fmt",
    "set_threads",
    "save_figure",
    "train_to_plateau",
    "pair_null_threshold",
    "max_null_threshold",
]


def parse_args(doc: str | None, argv=None, extra=None) -> argparse.Namespace:
    """``--outdir`` (required), ``--fast`` and ``--threads``; ``extra(parser)`` adds more."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", type=Path, required=True, help="where result.json and the figure go")
    p.add_argument("--fast", action="store_true", help="a smaller run of the same shape (used by the tests)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args


def run_script(doc: str | None, argv, *, full: dict, fast: dict, body) -> dict:
    """A script's ``main``: its arguments (:func:`parse_args`), its configuration (``fast`` under
    ``--fast``, else ``full``) and ``body(args, cfg, threads)`` run with torch and numba on
    ``--threads`` CPU threads (1 by default: see :class:`set_threads`), the previous counts
    restored afterwards."""
    args = parse_args(doc, argv)
    threads = args.threads or 1
    with set_threads(threads):
        return body(args, fast if args.fast else full, threads)


class set_threads:
    """torch and numba on ``k`` CPU threads from now on; used as a context manager, the previous
    counts come back on exit. On a shared CPU, numba's default thread pool makes each small
    empirical-denoiser call many times slower, so the scripts run single-threaded."""

    def __init__(self, k: int):
        import numba
        import torch

        self.prev = (torch.get_num_threads(), numba.get_num_threads())
        self._apply(k, k)

    @staticmethod
    def _apply(k_torch: int, k_numba: int) -> None:
        import numba
        import torch

        torch.set_num_threads(k_torch)
        numba.set_num_threads(max(1, min(k_numba, numba.config.NUMBA_NUM_THREADS)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._apply(*self.prev)


def train_to_plateau(
    train,
    *,
    outdir,
    start: int = 1500,
    max_steps: int = 12000,
    tol: float = 0.1,
    close: float | None = None,
    gap_draws: int = 2048,
    gap_seed: int = 0,
    checkpoint_steps=(),
    callback=None,
    fresh: bool = False,
    **train_kw,
):
    """Train until the training loss stops approaching the exact optimum's, or comes close to
    it: a measured "sufficiently trained", the same rule for every framework and architecture.

    The run trains ``start`` steps, then doubles its length (resuming in ``outdir``, so the
    result is bit-identical to one uninterrupted run) while ``max_steps`` allows. After each
    length the excess of its EMA network's training loss over the exact empirical optimum's
    (``gaussdiff.optimum_gap``, EDM's loss on ``gap_draws`` fixed draws: the same draws at every
    length, so the differences are paired) is measured. The run stops with

    * ``"plateau"`` when the excess after a doubling is more than ``(1 - tol)`` times the excess
      before it (less than a ``tol`` share gained by doubling the training);
    * ``"close to the optimum"`` when ``close`` is given and the excess is at most ``close``
      times the gap between the training set's Gaussian fit and the optimum;
    * ``"budget reached"`` when doubling again would pass ``max_steps`` (the condition is not met).

    ``checkpoint_steps`` and ``callback`` are the trainer's (each length gets the checkpoints it
    reaches). The EMA at every length is saved, so a rerun into the same ``outdir`` reads the
    lengths already trained instead of failing; ``fresh=True`` deletes ``outdir`` first (a run
    whose callbacks must all be seen again). Returns ``(TrainResult or loaded result, history,
    reason)`` with ``history`` a list of ``{"step", "excess", "excess_se", "loss",
    "loss_optimum", "loss_gaussian", "gaussian_share"}``; the result has ``.denoiser`` and
    ``.step``."""
    import json
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    import torch

    import gaussdiff as gd

    outdir = Path(outdir)
    if fresh:
        shutil.rmtree(outdir, ignore_errors=True)
    wanted = set(checkpoint_steps)
    cb = None if callback is None else (lambda step, den: callback(step, den) if step in wanted else None)
    history, steps = [], start
    while True:
        meta = outdir / "config.json"
        done = json.loads(meta.read_text())["step"] if meta.exists() else 0
        if done > steps:  # a previous run went further: its EMA at this length,
            # once the trainer has checked that the folder holds a run of these data and settings
            gd.train_denoiser(train, steps=done, outdir=outdir, progress=False, **train_kw)
            res = SimpleNamespace(denoiser=gd.load_denoiser(outdir, step=steps), step=steps)
        else:
            ck = sorted({c for c in wanted if c <= steps} | {steps})
            res = gd.train_denoiser(
                train, steps=steps, outdir=outdir, progress=False, checkpoint_steps=ck, callback=cb, **train_kw
            )
        g = gd.optimum_gap(res.denoiser, train, generator=torch.Generator().manual_seed(gap_seed), n_draws=gap_draws)
        history.append(
            {
                "step": steps,
                "excess": g.excess,
                "excess_se": g.excess_se,
                "loss": g.loss,
                "loss_optimum": g.loss_optimum,
                "loss_gaussian": g.loss_gaussian,
                "gaussian_share": g.gaussian_share,
            }
        )
        if close is not None and g.gaussian_share <= close:
            return res, history, "close to the optimum"
        if len(history) >= 2 and history[-1]["excess"] > (1 - tol) * history[-2]["excess"]:
            return res, history, "plateau"
        if 2 * steps > max_steps:
            return res, history, "budget reached"
        steps *= 2


def _unit_centred(data):
    """Rows of ``data`` flattened, each minus its own mean and scaled to unit norm (float64), so
    that a dot product is the centred cosine (``gaussdiff``'s ``similarity="cosine"``)."""
    x = data.reshape(data.shape[0], -1).double()
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True)


def pair_null_threshold(data, quantile: float = 0.99, *, max_points: int = 4000, seed: int = 0) -> float:
    """A similarity threshold fixed from data alone, for comparing *one pair* of images: the
    ``quantile`` of the centred cosine between two distinct images of ``data`` (all pairs of at
    most ``max_points`` images, a seeded subset when there are more)."""
    import numpy as np
    import torch

    if data.shape[0] > max_points:
        data = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points]]
    x = _unit_centred(data)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1)
    return float(np.quantile((x @ x.T)[iu[0], iu[1]].numpy(), quantile))


def max_null_threshold(data, n: int, quantile: float = 0.99, *, draws: int = 2000, seed: int = 0) -> float:
    """A similarity threshold fixed from data alone, for a sample's *largest* similarity to a
    training set of ``n`` images: the ``quantile`` of the largest centred cosine between a real
    image and ``n`` other images of ``data`` (``draws`` random draws of the image and its ``n``
    companions; every image against all the others when ``n >= len(data) - 1``). A maximum over
    ``n`` images needs this null: a pair threshold is passed far more often by a maximum."""
    import numpy as np

    x = _unit_centred(data)
    if n >= x.shape[0] - 1:
        c = x @ x.T
        c.fill_diagonal_(-2.0)
        vals = c.max(1).values.numpy()
    else:
        rng = np.random.default_rng(seed)
        vals = np.empty(draws)
        for r in range(draws):
            idx = rng.choice(x.shape[0], n + 1, replace=False)
            vals[r] = float((x[idx[1:]] @ x[idx[0]]).max())
    return float(np.quantile(vals, quantile))


def save_figure(fig, path):
    """Lay out, write (110 dpi) and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    """``value +- se`` with a fixed number of significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if se is None:
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} +- {se:.2g}"


class Report:
    """Collects the checks of one claim and writes ``result.json`` atomically."""

    def __init__(self, name: str, *, claim: str, source: str, expected: str, args: argparse.Namespace):
        self.name, self.claim, self.source, self.expected = name, claim, source, expected
        self.outdir = Path(args.outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.mode = "fast" if getattr(args, "fast", False) else "full"
        self.checks: list[dict] = []
        self.extra: dict = {}
        self.t0 = time.perf_counter()
        print(f"== {name}: {claim}\n   source: {source}\n   expected: {expected}\n   mode: {self.mode}")

    def check(
        self, what: str, *, value: float, passed: bool, expected: str, se: float | None = None, note: str = ""
    ) -> bool:
        """Record one measured number against its expected outcome; returns ``passed``."""
        passed = bool(passed)
        self.checks.append(
            {
                "what": what,
                "value": _num(value),
                "se": _num(se),
                "expected": expected,
                "status": "PASS" if passed else "FAIL",
                "note": note,
            }
        )
        print(
            f"   [{'PASS' if passed else 'FAIL'}] {what}: measured {fmt(value, se)}; expected {expected}"
            + (f"  ({note})" if note else "")
        )
        return passed

    def note(self, key: str, value) -> None:
        """Keep an extra measured quantity (tables, fits) in ``result.json``."""
        self.extra[key] = value

    @property
    def status(self) -> str:
        return "PASS" if self.checks and all(c["status"] == "PASS" for c in self.checks) else "FAIL"

    def finish(self, *, figures=(), reason: str = "") -> dict:
        """Write ``result.json`` and print the verdict. ``reason`` explains a FAIL."""
        wall = time.perf_counter() - self.t0
        measured = "; ".join(f"{c['what']}: {fmt(c['value'], c['se'])}" for c in self.checks)
        result = {
            "name": self.name,
            "claim": self.claim,
            "source": self.source,
            "expected": self.expected,
            "measured": measured,
            "status": self.status,
            "checks": self.checks,
            "mode": self.mode,
            "wall_seconds": wall,
            "figures": [str(Path(f).name) for f in figures],
            "reason": reason,
            **self.extra,
        }
        path = self.outdir / "result.json"
        from gaussdiff._io import atomic_write

        atomic_write(path, json.dumps(result, indent=1, default=_json_default))
        print(
            f"== {self.name}: {self.status} ({len([c for c in self.checks if c['status'] == 'PASS'])}"
            f"/{len(self.checks)} checks) in {wall:.1f} s" + (f" — {reason}" if reason else "")
        )
        return result


def _num(v):
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _json_default(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("this module is a helper of the validation scripts")
