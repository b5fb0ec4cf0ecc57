"""The data path: shared-memory segments, slot queues, reader groups, reclaim, heartbeats.

Nothing here imports the control plane. Events never leave shared memory: only
slot indices move, under a process-shared lock, and processes sleep on
process-shared semaphores.
"""

from ._layout import Layout
from ._ring import END_OF_STREAM, NO_TAG, NOTHING_YET, PAUSED, REJECTED, SlotRing
from ._shm import SHM_DIR, SHM_PREFIX, Segment, pid_alive, remove_stale_segments
from .heartbeat import HeartbeatTable

__all__ = [
    "END_OF_STREAM",
    "NO_TAG",
    "NOTHING_YET",
    "PAUSED",
    "REJECTED",
    "HeartbeatTable",
    "Layout",
    "SHM_DIR",
    "SHM_PREFIX",
    "Segment",
    "SlotRing",
    "pid_alive",
    "remove_stale_segments",
]
