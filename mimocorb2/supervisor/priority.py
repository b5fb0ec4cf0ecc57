"""The event loop thread's CPU priority.

On a machine whose cores are saturated (workers at full speed, a browser showing
the page, a compiler), a normal-priority thread that wakes up waits in the run
queue behind them: measured 20 to 70 ms for the daemon's loop with five pages
open on two cores. The loop only needs about 1 % of a core, but it needs it on
time: it feeds the systemd watchdog, answers `mimoctl` and the page, and notices
dead workers. So the daemon asks for ``SCHED_RR`` priority 1 for its loop thread
only, with ``SCHED_RESET_ON_FORK``: every thread and process it starts (the
workers, the helper threads) runs at normal priority, and the data path competes
exactly as before. The kernel's realtime throttling (95 % of each second by
default) bounds what a runaway loop could take.

The forkserver gets the same priority (:func:`share_priority`): starting a worker
waits on it synchronously, and at normal priority it queued behind busy cores for up
to 100 ms while the loop waited (measured in the soak with a worker killed every 5 s).
It forks with reset-on-fork too, so the workers it starts run at normal priority.

Allowed for root, or for a user with ``RLIMIT_RTPRIO >= 1`` (systemd:
``LimitRTPRIO=1``); otherwise the loop stays at normal priority and says why.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

#: the lowest realtime priority: above every normal thread, below any realtime work of the system
REALTIME_PRIORITY = 1


class LoopPriority(enum.Enum):
    """How the event loop thread is scheduled."""

    REALTIME = "realtime"
    NORMAL = "normal"


@dataclass(frozen=True)
class PriorityResult:
    """What :func:`apply_loop_priority` got, and why (shown in status and the daemon log)."""

    priority: LoopPriority
    reason: str


def parse_priority(text: str, where: str) -> LoopPriority:
    """``realtime`` or ``normal`` -> LoopPriority; anything else raises ValueError naming ``where``."""
    try:
        return LoopPriority(str(text).strip().lower())
    except ValueError:
        raise ValueError(f"{where}: expected realtime or normal, got {text!r}") from None


def apply_loop_priority(wanted: LoopPriority) -> PriorityResult:
    """Give the *calling* thread the wanted priority. Call it from the loop thread before it starts
    any thread or process (those started earlier keep their own priority)."""
    if wanted is LoopPriority.NORMAL:
        return PriorityResult(LoopPriority.NORMAL, "configured (loop_priority: normal)")
    if not hasattr(os, "sched_setscheduler") or not hasattr(os, "SCHED_RESET_ON_FORK"):
        return PriorityResult(LoopPriority.NORMAL, "this system has no SCHED_RR")
    try:
        # pid 0: the calling thread only (Linux schedules threads, not processes)
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY))
    except OSError as exc:
        return PriorityResult(LoopPriority.NORMAL, f"SCHED_RR refused ({exc.strerror}): run as root or give "
                              "the service LimitRTPRIO=1")
    return PriorityResult(LoopPriority.REALTIME, f"SCHED_RR priority {REALTIME_PRIORITY} for the event loop "
                          "thread (and the forkserver); workers and helper threads run at normal priority")


def share_priority(pid: int) -> bool:
    """Give process ``pid`` (single-threaded: the forkserver, which the loop waits on when it starts
    a worker) the loop's realtime priority with reset-on-fork; False when refused or gone."""
    try:
        os.sched_setscheduler(pid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY))
    except (OSError, AttributeError):
        return False
    return True
