"""The grid of the phase sweep: :class:`PhaseConfig` (validated before any training), its
cells and their keys, the checkpoint and size ladders, and the columns of ``results.csv``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_int
from ..metrics import get_similarity
from ..networks import FRAMEWORKS, NETS

__all__ = ["PhaseConfig", "RESULT_COLUMNS", "log_checkpoints", "default_sizes", "cell_key"]


#: The columns of ``results.csv``, in order (more may follow). Wall times are not among them
#: (they go to ``timings.csv``), so two runs of the same settings give identical files.
RESULT_COLUMNS = [
    "n",
    "seed",
    "width",
    "framework",
    "step",
    "memorization",
    "memorization_se",
    "memorization_ci_low",
    "memorization_ci_high",
    "memorization_a",
    "memorization_b",
    "reproducibility",
    "reproducibility_se",
    "reproducibility_ci_low",
    "reproducibility_ci_high",
    "similarity_ab",
    "dist_empirical",
    "dist_empirical_heldout",
    "dist_gaussian",
    "dist_gaussian_heldout",
    "similarity_gaussian",
    "empirical_memorization",
    "gaussian_memorization",
    "gaussian_reproducibility",
    "empirical_reproducibility",
    "empirical_memorization_se",
    "gaussian_memorization_se",
    "gaussian_reproducibility_se",
    "empirical_reproducibility_se",
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


# The quick preset: a smaller run of the same shape as the default.
_QUICK = dict(sizes=(8, 24, 72, 216), steps=1000, checkpoints=4, n_samples=128, dist_points=64)


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

    @classmethod
    def quick(cls, **changes) -> "PhaseConfig":
        """A smaller run of the same shape (``gaussdiff phase-curve --quick``, under 2 minutes on
        2 cores): 4 sizes, 1000 steps, 4 checkpoints, fewer samples; ``changes`` on top."""
        return dataclasses.replace(cls(), **{**_QUICK, **changes})

    def use_ensemble(self) -> bool:
        """Whether cells train their two networks as one ensemble (``ensemble``, or CUDA when None)."""
        return str(self.device).startswith("cuda") if self.ensemble is None else bool(self.ensemble)

    def checkpoint_steps(self) -> tuple[int, ...]:
        return log_checkpoints(self.steps, self.checkpoints)

    def cells(self) -> list[dict]:
        return [
            dict(n=n, seed=s, width=w, framework=f)
            for n in self.sizes
            for s in self.seeds
            for w in self.widths
            for f in self.frameworks
        ]

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
        sizes = [check_int(n, "sizes", minimum=2) for n in sizes]
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes: must be strictly increasing, got {sizes}")
        if 2 * sizes[-1] > n_total:
            raise ValueError(
                f"sizes: N = {sizes[-1]} needs 2N = {2 * sizes[-1]} points for two disjoint "
                f"subsets, but the data set has {n_total} (largest possible N: {n_total // 2})"
            )
        for f in self.frameworks:
            if f not in FRAMEWORKS:
                raise ValueError(f"frameworks: unknown framework {f!r}; choose from {FRAMEWORKS}")
        if not self.frameworks or not self.widths or not self.seeds:
            raise ValueError("frameworks, widths, seeds: each needs at least one value")
        for w in self.widths:
            check_int(w, "widths")
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {NETS}, got {self.net!r}")
        if self.steps < 1 or self.checkpoints < 1:
            raise ValueError("steps, checkpoints: must be >= 1")
        if self.n_samples < 2 or self.sample_steps < 1 or self.dist_points < 2:
            raise ValueError(
                "n_samples, sample_steps, dist_points: n_samples >= 2, sample_steps >= 1, dist_points >= 2"
            )
        get_similarity(self.similarity).check_threshold(self.threshold)  # before config.json records it
        if self.device not in ("cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.ensemble not in (None, True, False):
            raise ValueError(f"ensemble: must be True, False or None (auto: CUDA only), got {self.ensemble!r}")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device: CUDA was requested but no CUDA device is available")


def cell_key(cell: dict) -> str:
    return f"n{cell['n']:06d}_s{cell['seed']}_w{cell['width']}_{cell['framework']}"
