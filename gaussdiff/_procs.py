"""Jobs that die cleanly: SIGTERM handled like Ctrl-C, and worker processes that end with their
parent.

* :func:`terminate_as_interrupt` makes SIGTERM raise :class:`KeyboardInterrupt` in the main
  thread for the duration of a job, so one ``except KeyboardInterrupt`` path (stop the workers,
  keep every finished result, mark the run "interrupted") serves Ctrl-C and ``kill`` alike.
* :func:`die_with_parent` is the initializer of every spawned worker: on Linux the kernel sends
  the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every platform a
  daemon thread checks once a second that the parent is still there. So ``kill -9`` of the main
  process cannot leave workers running on, finishing queued cells and holding its stdout open.
* :func:`deferred_interrupts` holds SIGINT and SIGTERM back while a group of files that belong
  together is written (a training state, its model and its config.json; an experiment's tables
  and figure), and delivers them right after: an interrupted job leaves the whole group or none
  of it, never one file of one step beside another of an earlier step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

__all__: list[str] = []


@contextmanager
def terminate_as_interrupt():
    """Inside the block, SIGTERM raises ``KeyboardInterrupt`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def deferred_interrupts():
    """Inside the block, SIGINT and SIGTERM are recorded instead of handled; on leaving it the
    previous handlers are restored and the first recorded signal is raised again, so that it
    has exactly the effect it would have had (``KeyboardInterrupt``, or termination).
    Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def hold(signum, frame):
        got.append(signum)

    old = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if got:
            signal.raise_signal(got[0])


def kill_with_parent():
    """A ``preexec_fn`` for a child command (Linux; elsewhere None): the kernel sends the child
    SIGKILL when the process that started it dies, so ``kill -9`` of a runner leaves no script
    behind.

    ``prctl`` is looked up here, in the parent: the child of ``fork`` in a multithreaded process
    (torch starts threads) may only make async-signal-safe calls before ``exec``, and an
    ``import`` or ``dlopen`` there can deadlock on a lock another thread held at the fork. The
    child only calls the resolved function, then checks that its parent is still the one that
    started it (a parent that died before ``prctl`` took effect sends no signal)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` is gone (see the module docstring).
    Ctrl-C in a terminal reaches the whole process group; the workers leave it to the parent,
    which stops them, so they ignore SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="gaussdiff-parent-watch", daemon=True).start()
