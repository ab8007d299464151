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
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Report", "parse_args", "fmt", "set_threads", "save_figure"]


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

    def check(self, what: str, *, value: float, passed: bool, expected: str, se: float | None = None,
              note: str = "") -> bool:
        """Record one measured number against its expected outcome; returns ``passed``."""
        passed = bool(passed)
        self.checks.append({"what": what, "value": _num(value), "se": _num(se), "expected": expected,
                            "status": "PASS" if passed else "FAIL", "note": note})
        print(f"   [{'PASS' if passed else 'FAIL'}] {what}: measured {fmt(value, se)}; expected {expected}"
              + (f"  ({note})" if note else ""))
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
        result = {"name": self.name, "claim": self.claim, "source": self.source, "expected": self.expected,
                  "measured": measured, "status": self.status, "checks": self.checks, "mode": self.mode,
                  "wall_seconds": wall, "figures": [str(Path(f).name) for f in figures], "reason": reason,
                  **self.extra}
        path = self.outdir / "result.json"
        fd, tmp = tempfile.mkstemp(dir=self.outdir, prefix=".result.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=1, default=_json_default)
        os.replace(tmp, path)
        print(f"== {self.name}: {self.status} ({len([c for c in self.checks if c['status'] == 'PASS'])}"
              f"/{len(self.checks)} checks) in {wall:.1f} s" + (f" — {reason}" if reason else ""))
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
