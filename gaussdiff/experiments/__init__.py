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

============  ==================================================================================
module        what lives there
============  ==================================================================================
config        :class:`PhaseConfig` (the grid, validated before any training), cell keys, ladders
cell          :func:`run_cell`: closed forms, the two networks, the rows, the figures' material
sweep         :func:`run_sweep` (here, spawned workers or Dask; resume) and :func:`read_results`
analysis      :func:`tau_mem` and :func:`transition_size` (the transition read off the results)
============  ==================================================================================
"""

from .._io import atomic_write
from .analysis import TransitionFit, tau_mem, tau_mem_fit, transition_size
from .cell import run_cell
from .config import RESULT_COLUMNS, PhaseConfig, default_sizes, log_checkpoints
from .sweep import read_results, run_sweep

__all__ = [
    "PhaseConfig",
    "run_sweep",
    "run_cell",
    "read_results",
    "tau_mem",
    "tau_mem_fit",
    "RESULT_COLUMNS",
    "log_checkpoints",
    "default_sizes",
    "atomic_write",
    "transition_size",
    "TransitionFit",
]
