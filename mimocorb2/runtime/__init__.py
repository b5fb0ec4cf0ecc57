"""Worker processes and the foreground runner.

* :class:`WorkerLaunch` describes one worker process (picklable);
  :func:`spawn_worker` forks it from a warm forkserver (an exec'd interpreter
  with the data path imported; nothing of the parent's state, event loop
  included, is inherited; :func:`start_worker_server` starts it early) and
  :func:`run_worker` is what runs inside it.
* :func:`build_buffers` creates a setup's buffers with their reader groups and
  writer counts.
* :func:`save_quarantined` keeps the poison events a reclaim set aside in
  ``RUN_DIR/quarantine/<buffer>.npy``.
* :class:`Runner` is ``mimocorb2 run`` as an object; it drives the
  supervisor's Run (the daemon's engine) in the foreground.
* :class:`LogEcho` follows the run's worker log files and prints the workers' own
  output on the terminal, prefixed with the worker's name.
"""

from typing import Any

from ._echo import LogEcho
from ._forkserver import forkserver_pid, start_worker_server
from ._launch import WorkerLaunch, build_buffers, root_buffers
from ._quarantine import quarantine_path, save_quarantined
from ._process import child_main, run_worker, set_parent_death_signal, spawn_worker
from ._runner import Runner
from ._setup_failure import EXIT_SETUP_FAILED, read_setup_failure, write_setup_failure

__all__ = [
    "EXIT_SETUP_FAILED",
    "LogEcho",
    "RunReport",
    "Runner",
    "WorkerLaunch",
    "build_buffers",
    "child_main",
    "forkserver_pid",
    "quarantine_path",
    "read_setup_failure",
    "root_buffers",
    "run_worker",
    "save_quarantined",
    "start_worker_server",
    "set_parent_death_signal",
    "spawn_worker",
    "write_setup_failure",
]


def __getattr__(name: str) -> Any:
    if name == "RunReport":  # lives with the foreground runner; loaded on demand
        from mimocorb2.supervisor.foreground import RunReport

        return RunReport
    raise AttributeError(name)
