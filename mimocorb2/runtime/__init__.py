"""Worker processes and the foreground runner.

* :class:`WorkerLaunch` describes one worker process (picklable);
  :func:`spawn_worker` starts it with the ``spawn`` method (nothing of the
  parent's state, event loop included, is inherited) and :func:`run_worker` is
  what runs inside it.
* :func:`build_buffers` creates a setup's buffers with their reader groups and
  writer counts.
* :class:`Runner` is ``mimocorb2 run`` as an object; it drives the
  supervisor's Run (the daemon's engine) in the foreground.
"""

from typing import Any

from ._launch import WorkerLaunch, build_buffers, root_buffers
from ._process import EXIT_SETUP_FAILED, child_main, run_worker, set_parent_death_signal, spawn_worker
from ._runner import Runner

__all__ = [
    "EXIT_SETUP_FAILED",
    "RunReport",
    "Runner",
    "WorkerLaunch",
    "build_buffers",
    "child_main",
    "root_buffers",
    "run_worker",
    "set_parent_death_signal",
    "spawn_worker",
]


def __getattr__(name: str) -> Any:
    if name == "RunReport":  # lives with the foreground runner; loaded on demand
        from mimocorb2.supervisor.foreground import RunReport

        return RunReport
    raise AttributeError(name)
