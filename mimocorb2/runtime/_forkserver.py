"""A warm forkserver for worker processes, bound to the life of the process that started it.

Starting a worker with the ``spawn`` method costs a fresh interpreter that
imports NumPy and the data path again (about 0.1 s of CPU each, far more on a
busy machine). Instead, the first :func:`worker_context` call starts
multiprocessing's *forkserver*: a fresh interpreter (``fork`` + ``exec`` of the
Python executable, so nothing of the caller's state or event loop is in it)
that imports this module once. This module then imports what every worker
needs (:data:`WARM_MODULES`) and every worker is forked from that warm process.

Guarantees kept from ``spawn``:

* nothing of the starting process is inherited (the forkserver is exec'd);
* a worker never outlives the supervisor: the forkserver arms
  ``PR_SET_PDEATHSIG`` (SIGKILL) towards the process that started it (and exits
  at once if that one already died), and every worker arms it towards the
  forkserver, its parent; killing the supervisor with SIGKILL takes the
  forkserver and, through it, every worker;
* SIGINT: the forkserver ignores it (multiprocessing does so), workers too
  (:func:`mimocorb2.runtime.child_main`).

``MIMOCORB2_START_METHOD=spawn`` falls back to plain ``spawn``, and so does a
process in which something else already started multiprocessing's forkserver
(there is one per process; one without our preload and parent binding is not
shared).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

__all__ = ["WARM_MODULES", "worker_context", "start_worker_server", "forkserver_pid", "start_method"]

#: Imported once by the forkserver: what every worker process needs.
WARM_MODULES = (
    "numpy",
    "yaml",
    "structlog",
    "mimocorb2.logsetup",
    "mimocorb2.mimo_buffer",
    "mimocorb2.mimo_worker",
    "mimocorb2.worker_templates",
    "mimocorb2.setup",
    "mimocorb2.functions",
    "mimocorb2.runtime._process",
)
_PRELOAD = [__name__]  # the forkserver imports this module, which warms it up
_PARENT_ENV = "MIMOCORB2_FORKSERVER_PARENT"  # set only while the forkserver is being started
_EXIT_PARENT_GONE = 70
_PR_SET_PDEATHSIG = 1
_ours: int | None = None  # pid of the forkserver this module started


def start_method() -> str:
    """``forkserver`` (default) or ``spawn`` (``MIMOCORB2_START_METHOD=spawn``)."""
    return "spawn" if os.environ.get("MIMOCORB2_START_METHOD", "").strip().lower() == "spawn" else "forkserver"


def worker_context() -> BaseContext:
    """The multiprocessing context to start workers with; the forkserver is running when it returns.

    Call it from the thread whose life the workers' life is tied to (the main thread).
    """
    global _ours
    if start_method() == "spawn":
        return multiprocessing.get_context("spawn")
    running = forkserver_pid()
    if running is not None and running != _ours:
        return multiprocessing.get_context("spawn")  # somebody else's forkserver: not ours to share
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    os.environ[_PARENT_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()  # starts it, or a new one if ours died
    finally:
        os.environ.pop(_PARENT_ENV, None)
    _ours = forkserver_pid()
    return context


def start_worker_server(wait: bool = False) -> None:
    """Start the forkserver now, from the main thread; it warms up in the background.

    Call it as early as possible (before reading the setup, at daemon start-up):
    the first worker waits for the warm-up to finish. With ``wait`` it returns
    only once the forkserver forks (a no-op probe process came and went), so an
    event loop that starts workers later is never held up by the warm-up.
    """
    context = worker_context()
    if wait and context.get_start_method() == "forkserver":
        probe = context.Process(target=_ready_probe, name="mimocorb2-forkserver-probe", daemon=True)
        probe.start()
        probe.join()


def _ready_probe() -> None:
    """What the readiness probe runs: nothing."""


def forkserver_pid() -> int | None:
    """Pid of the running forkserver (the parent of forkserver-started workers), if any."""
    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def _die_with_parent() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _start_as_forkserver() -> None:
    """Run at import: inside the forkserver only, bind it to its starter and warm it up."""
    parent = os.environ.pop(_PARENT_ENV, None)
    if parent is None or not parent.isdigit():
        return  # an ordinary import (the supervisor, a worker, a test)
    _die_with_parent()
    if os.getppid() != int(parent):  # the starter died before the signal was armed
        os._exit(_EXIT_PARENT_GONE)
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # a worker that needs it reports the error itself


_start_as_forkserver()
