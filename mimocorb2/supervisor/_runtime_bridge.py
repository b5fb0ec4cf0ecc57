"""Adapter to the core's data path and worker runtime (``mimocorb2.runtime``).

The daemon builds buffers, heartbeat tables and worker processes only through
these functions, so that a change of the core's interfaces is absorbed here.
Worker processes are started by :func:`mimocorb2.runtime.spawn_worker` (the
``spawn`` method; in the child: parent-death signal, no systemd variables,
logging into ``RUN_DIR/logs/WORKER.log``, heartbeat, the user's function).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimocorb2 import runtime


def build_buffers(setup: Any) -> dict[str, Any]:
    return runtime.build_buffers(setup)


def root_buffers(setup: Any) -> list[str]:
    return runtime.root_buffers(setup)


def make_heartbeat_table(rows: int) -> Any:
    from mimocorb2.datapath.heartbeat import HeartbeatTable

    return HeartbeatTable(rows)


def make_launch(*, setup: Any, worker: Any, buffers: dict[str, Any], run_dir: Path | None,
                index: int, heartbeats: Any, row: int) -> Any:
    used = dict.fromkeys([*worker.sources, *worker.sinks, *worker.observes])
    return runtime.WorkerLaunch(
        worker=worker,
        setup_dir=setup.directory,
        run_dir=Path(run_dir) if run_dir is not None else Path("."),
        index=index,
        buffers={name: buffers[name] for name in used},
        heartbeats=heartbeats,
        row=row,
    )


def spawn(launch: Any) -> Any:
    """Start one worker process; call from the event loop's (main) thread, whose life
    the child's parent-death signal is tied to."""
    return runtime.spawn_worker(launch)


def save_quarantined(run_dir: Path | None, events: list[Any]) -> list[Path]:
    """Keep poison events set aside by a reclaim in ``RUN_DIR/quarantine/<buffer>.npy`` (blocking)."""
    if run_dir is None:
        return []
    return runtime.save_quarantined(Path(run_dir), events)
