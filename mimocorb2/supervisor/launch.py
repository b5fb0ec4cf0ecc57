"""Process start-up helpers of the daemon."""

from __future__ import annotations


def warm_up() -> None:
    """Start multiprocessing's resource tracker before the loop needs it (it is itself
    a spawned process; starting it lazily inside the first run would block the loop)."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
