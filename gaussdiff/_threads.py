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
    torch.set_num_threads(n)
    try:
        if numba:
            import numba as nb  # numba's threading layer starts on first use, not at import

            old_nb = nb.get_num_threads()
            nb.set_num_threads(max(1, min(n, nb.config.NUMBA_NUM_THREADS)))
        yield
    finally:
        torch.set_num_threads(old)
        if old_nb is not None:
            nb.set_num_threads(old_nb)
