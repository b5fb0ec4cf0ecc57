"""Adapter between the daemon and the worker-process runtime.

The daemon spawns every worker process with the ``spawn`` start method (a fresh
interpreter: nothing of the daemon's event loop is inherited) from the loop's
own thread, so that the parent-death signal set in the child refers to the
daemon's main thread, which lives as long as the daemon.

In the child, :func:`child_main` first sets ``PR_SET_PDEATHSIG`` (SIGKILL) and
checks that the daemon has not died in the meantime, then hands over to the
runtime's worker entry point.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1

_CTX = multiprocessing.get_context("spawn")


@dataclass
class ChildLaunch:
    """Everything one worker process needs; pickled into the spawned child."""

    parent_pid: int
    runtime_launch: Any  # the runtime's own launch description (WorkerLaunch)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_main(launch: ChildLaunch) -> None:
    set_parent_death_signal()
    if os.getppid() != launch.parent_pid:  # the daemon died before prctl took effect
        os._exit(70)
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        os.environ.pop(key, None)
    from mimocorb2.supervisor import _runtime_bridge

    code = _runtime_bridge.run_worker(launch.runtime_launch)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code or 0)


def spawn(runtime_launch: Any, name: str) -> multiprocessing.process.BaseProcess:
    """Start one worker process (call from the event loop's thread)."""
    proc = _CTX.Process(
        target=child_main,
        args=(ChildLaunch(os.getpid(), runtime_launch),),
        name=name,
        daemon=False,
    )
    proc.start()
    return proc


def warm_up() -> None:
    """Start multiprocessing's helper (resource tracker) before the loop needs it."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def run_dir_logs(run_dir: Path) -> Path:
    return Path(run_dir) / "logs"
