"""How late the event loop wakes up, and why.

The meter sleeps :data:`INTERVAL` and measures how much later than asked it woke:
the *lag*. Two things make a loop late: code in the loop that does not yield
(ours: a bug), or a busy machine where the loop thread waits for a CPU (nobody's
code). The meter tells them apart with the kernel's count of the time the thread
spent runnable but not running (``/proc/thread-self/schedstat``, second field):
``blocked = lag - cpu wait`` is the part the loop's own code is responsible for.
"""

from __future__ import annotations

import asyncio
import collections
import os

import structlog

from mimocorb2.logsetup import LOOP_LATE

log = structlog.get_logger("mimocorb2.daemon")

#: seconds between wake-ups
INTERVAL = 0.1
#: a lag above this is logged as a warning (with its cpu-wait part)
WARN_LAG = 0.25
#: the recent maxima cover this many buckets of BUCKET seconds (one minute)
BUCKET = 10.0
BUCKETS = 6


class RunQueueClock:
    """Seconds the calling thread has spent waiting for a CPU (None where the kernel does not say)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self) -> float | None:
        """Total seconds the creating thread has waited for a CPU since it started; None if unknown.

        The file was opened through ``/proc/thread-self``, so this reads the thread that created
        the clock, whichever thread calls. A procfs read: never blocks on a disk.
        """
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """Close the procfs file (idempotent); :meth:`read` then returns None."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LoopMeter:
    """The loop-latency meter of one event loop (the daemon's or a foreground run's).

    Invariants: ``0 <= blocked_last <= lag_last``; ``lag_max`` is the worst lag since
    :meth:`run` started; the recent maxima cover the last ``BUCKETS * BUCKET`` seconds.
    """

    def __init__(self) -> None:
        self.lag_last = 0.0
        self.lag_max = 0.0
        #: of ``lag_last``, what was not waiting for a CPU (the loop's own code)
        self.blocked_last = 0.0
        #: (bucket, worst lag, worst blocked) of the buckets of the last minute, oldest first
        self._recent: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=BUCKETS)

    async def run(self) -> None:
        """Measure until cancelled; must run in the loop thread (the clock is that thread's)."""
        loop = asyncio.get_running_loop()
        clock = RunQueueClock()
        try:
            while True:
                t0, wait0 = loop.time(), clock.read()
                await asyncio.sleep(INTERVAL)
                wait1 = clock.read()
                cpu_wait = wait1 - wait0 if wait0 is not None and wait1 is not None else 0.0
                self.record(max(0.0, loop.time() - t0 - INTERVAL), cpu_wait, loop.time())
        finally:
            clock.close()

    def record(self, lag: float, cpu_wait: float, now: float) -> None:
        """Take one measurement: ``lag`` seconds late, of which up to ``cpu_wait`` waiting for a CPU."""
        blocked = max(0.0, lag - cpu_wait)
        self.lag_last, self.blocked_last = lag, blocked
        self.lag_max = max(self.lag_max, lag)
        bucket = int(now // BUCKET)
        while self._recent and self._recent[0][0] <= bucket - BUCKETS:  # older than a minute
            self._recent.popleft()
        if self._recent and self._recent[-1][0] == bucket:
            _, worst_lag, worst_blocked = self._recent[-1]
            self._recent[-1] = (bucket, max(worst_lag, lag), max(worst_blocked, blocked))
        else:
            self._recent.append((bucket, lag, blocked))
        if lag > WARN_LAG:
            log.warning(LOOP_LATE, seconds=round(lag, 3), waiting_for_cpu=round(lag - blocked, 3))

    def report(self) -> dict[str, float]:
        """The ``loop_*`` fields of the status reply (seconds)."""
        return {
            "loop_lag_max": round(self.lag_max, 6),
            "loop_lag_last": round(self.lag_last, 6),
            "loop_lag_recent_max": round(max((b[1] for b in self._recent), default=0.0), 6),
            "loop_blocked_last": round(self.blocked_last, 6),
            "loop_blocked_recent_max": round(max((b[2] for b in self._recent), default=0.0), 6),
        }
