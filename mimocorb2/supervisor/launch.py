"""Process start-up helpers of the daemon."""

from __future__ import annotations


def warm_up() -> None:
    """Start multiprocessing's resource tracker before the loop needs it (it is itself
    a spawned process; starting it lazily inside the first run would block the loop)."""
    from multiprocessing import resource_tracker

    from mimocorb2.runtime import start_worker_server

    resource_tracker.ensure_running()
    start_worker_server(wait=True)  # warm before the loop starts any worker: spawning never waits for it
