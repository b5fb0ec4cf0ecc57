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
* :class:`Runner` is ``mimocorb2 run``: start everything, wait for the end of
  stream to propagate, report.
"""

from ._launch import WorkerLaunch, build_buffers, launches_for, root_buffers
from ._forkserver import start_worker_server
from ._quarantine import quarantine_path, save_quarantined
from ._process import child_main, run_worker, set_parent_death_signal, spawn_worker
from ._runner import Runner, RunReport

__all__ = [
    "RunReport",
    "Runner",
    "WorkerLaunch",
    "build_buffers",
    "child_main",
    "launches_for",
    "quarantine_path",
    "root_buffers",
    "run_worker",
    "save_quarantined",
    "start_worker_server",
    "set_parent_death_signal",
    "spawn_worker",
]
