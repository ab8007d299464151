"""CPU thread counts set for a block of work and restored after it: the one place torch's (and
numba's) process-wide thread settings are changed, so no call leaves them changed behind it."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ._checks import check_int


@contextmanager
def cpu_threads(num_threads: int | None, *, numba: bool = False):
    """Inside the block, torch (and with ``numba=True`` also numba, capped at its maximum) uses
    ``num_threads`` CPU threads; both are restored on exit, also after an error. ``None`` leaves
    everything as it is."""
    if num_threads is None:
        yield
        return
    n = check_int(num_threads, "num_threads")
    old = torch.get_num_threads()
    nb = old_nb = None
    try:
        if numba:
            # numba first: starting its threading layer (OpenMP) resets the process's OpenMP
            # thread count, torch's included, so torch's is set after it (measured: the other
            # order left torch at 2 threads in 1-thread sweep workers, 4.5x slower)
            import numba as nb

            old_nb = nb.get_num_threads()
            nb.set_num_threads(max(1, min(n, nb.config.NUMBA_NUM_THREADS)))
        torch.set_num_threads(n)
        yield
    finally:
        if old_nb is not None:
            nb.set_num_threads(old_nb)
        torch.set_num_threads(old)
