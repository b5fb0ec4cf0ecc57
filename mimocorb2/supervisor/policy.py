"""Pure decisions of the supervisor: restart or not, backoff, who is stuck at the drain timeout.

Nothing here touches a process, a buffer or the event loop: every function takes
the facts and the time and returns a decision, so the rules are unit-tested in
microseconds (``tests/test_supervisor_policy.py``) and read in one place.

Rules:

* A process that exits with :data:`EXIT_SETUP_FAILED` could not load its
  function: restarting cannot help, the worker fails at once. So does a
  process that ends in any other way before it reached its function (its
  heartbeat stage: ``os._exit`` or a signal while importing its file), unless
  the supervisor ended it for the run's sake (abort, drain timeout), and one
  that stays before its function longer than :func:`import_timeout` (it is
  killed: "stuck importing funcs.py for 60 s").
* Once the run aborts or its drain timeout has passed, nothing is restarted:
  the process is retired (a writer counts as flushed).
* ``restart: never`` never restarts; a failure then fails the worker.
  ``on-failure`` (default) restarts a failed process. ``always`` also restarts
  a reader that returned normally before its sources ended, unless stopping.
* Every restart of a worker is counted in a sliding window of
  :data:`RESTART_WINDOW` seconds; more than ``max_restarts`` in it fails the worker.
* The backoff belongs to the *process* (one slot of ``number_of_processes``):
  0.5 s doubling to 30 s with its own recent failures, so one crashing process
  never delays the restart of another process of the same worker.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field

from pathlib import Path

from mimocorb2.datapath.heartbeat import Stage
from mimocorb2.runtime._process import EXIT_SETUP_FAILED

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "IMPORT_TIMEOUT",
    "IMPORT_TIMEOUT_MIN",
    "RESTART_WINDOW",
    "STUCK_AFTER",
    "Backoff",
    "Decision",
    "ExitContext",
    "RestartBudget",
    "Verdict",
    "decide_exit",
    "describe_exit",
    "drain_victims",
    "import_timeout",
    "loading_what",
    "stuck_after",
    "stuck_message",
    "HeldEvent",
]

RESTART_WINDOW = 60.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
#: an event held longer than this (or than the drain timeout, if shorter) is "stuck"
STUCK_AFTER = 10.0
#: how long a process may take from its spawn to its function (import, load) without stall_timeout
IMPORT_TIMEOUT = 60.0
#: the least time to reach the function with a stall_timeout: importing big libraries takes seconds,
#: more on a loaded machine, and a wrong verdict fails the worker for the rest of the run
IMPORT_TIMEOUT_MIN = 20.0


class Verdict(enum.Enum):
    """What becomes of a process that exited."""

    RESTART = "restart"  # start it again after Decision.delay seconds
    RETIRE = "retire"  # done for good, normally (or the run is ending): its sinks count it as flushed
    FAIL = "fail"  # done for good and its worker has failed (Decision.why says why)


@dataclass(frozen=True)
class Decision:
    """The verdict on one exit (:func:`decide_exit`).

    ``delay`` (seconds) matters only for RESTART; for FAIL ``why`` says why the worker
    failed, for the status and the log.
    """

    verdict: Verdict
    delay: float = 0.0
    why: str = ""


@dataclass(frozen=True)
class ExitContext:
    """The facts about one exit that the decision depends on."""

    exitcode: int
    restart: str  # the worker's policy: on-failure | always | never
    max_restarts: int
    has_sources: bool
    sources_ended: bool  # every source buffer of the worker has ended
    restarts_allowed: bool  # the run neither aborts nor is past its drain timeout, the worker has not failed
    stopping: bool  # the run is stopping (a stop, a limit, or a failure asked it to)
    how: str = ""  # the exit in words (describe_exit)
    setup_failed: bool = False  # it never reached its function, and the supervisor did not end it for the run


class RestartBudget:
    """Restarts of one worker within the last RESTART_WINDOW seconds (counted whatever the cause)."""

    def __init__(self, window: float = RESTART_WINDOW) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def record(self, now: float) -> int:
        """Count one more restart at ``now``; return how many fall within the window."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times)


@dataclass
class Backoff:
    """The restart delay of one process: doubles with each restart within the window, resets after."""

    window: float = RESTART_WINDOW
    _recent: collections.deque[float] = field(default_factory=collections.deque)

    def next_delay(self, now: float) -> float:
        """Record a restart at ``now`` (monotonic seconds) and return how long to wait before it.

        0.5 s for the first restart within the window, doubling with each further one, at most 30 s.
        """
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        return min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (len(self._recent) - 1))


def describe_exit(exitcode: int, signame: str | None = None) -> str:
    """``exited normally`` / ``killed by SIGKILL`` / ``exited with code 3`` / ``setup failed`` (it could not load
    its function, its template refused its buffers or config, or its device or server refused it)."""
    if exitcode == 0:
        return "exited normally"
    if exitcode < 0:
        return f"killed by {signame or f'signal {-exitcode}'}"
    if exitcode == EXIT_SETUP_FAILED:
        return f"setup failed (exit code {EXIT_SETUP_FAILED})"
    return f"exited with code {exitcode}"


def decide_exit(ctx: ExitContext, budget: RestartBudget, backoff: Backoff, now: float) -> Decision:
    """Restart, retire or fail the process that exited (see the module docstring)."""
    failed = ctx.exitcode != 0
    if ctx.exitcode == EXIT_SETUP_FAILED or ctx.setup_failed:
        return Decision(Verdict.FAIL, why=ctx.how or "setup failed")
    if not ctx.restarts_allowed:
        return Decision(Verdict.RETIRE)
    if ctx.restart == "never":
        wanted = False
    elif failed:
        wanted = True
    else:
        wanted = ctx.restart == "always" and ctx.has_sources and not ctx.stopping and not ctx.sources_ended
    if not wanted:
        return Decision(Verdict.FAIL, why=ctx.how) if failed else Decision(Verdict.RETIRE)
    restarts = budget.record(now)
    if restarts > ctx.max_restarts:
        return Decision(Verdict.FAIL, why=f"{restarts - 1} restarts within {budget.window:.0f} s, then {ctx.how}")
    return Decision(Verdict.RESTART, delay=backoff.next_delay(now))


# ---------------------------------------------------------------------- before the function
def import_timeout(stall_timeout: float | None) -> float:
    """How long a process may stay before its function (spawn, import, load) before it is a setup failure.

    Its ``stall_timeout`` (at least IMPORT_TIMEOUT_MIN) when set, else IMPORT_TIMEOUT.
    """
    if stall_timeout:
        return max(IMPORT_TIMEOUT_MIN, float(stall_timeout))
    return IMPORT_TIMEOUT


def loading_what(stage: Stage, file: Path | None, function: str) -> str:
    """What a process before its function is doing: ``starting`` (not yet attached to its heartbeat
    row), then ``importing funcs.py`` (a user file) or ``loading exporters.csv`` (a prebuilt function)."""
    if stage is Stage.STARTING:
        return "starting"
    return f"importing {Path(file).name}" if file is not None else f"loading {function}"


# ---------------------------------------------------------------------- stuck processes
def stuck_after(drain_timeout: float) -> float:
    """How long an event may be held before the process counts as stuck on it."""
    return max(0.0, min(STUCK_AFTER, float(drain_timeout)))


@dataclass(frozen=True)
class HeldEvent:
    """What a live process is doing, as its heartbeat row tells (for drain_victims)."""

    key: tuple[str, int]  # (worker, index)
    heartbeat_age: float
    held_counter: int | None
    held_seconds: float


def stuck_message(held_counter: int | None, held_seconds: float, threshold: float) -> str | None:
    """``"stuck on event N for 33 s"`` once an event is held at least ``threshold`` seconds."""
    if held_counter is None or held_seconds < threshold:
        return None
    return f"stuck on event {held_counter} for {held_seconds:.0f} s"


def drain_victims(live: list[HeldEvent], threshold: float) -> list[tuple[str, int]]:
    """Who is killed when the drain timeout passes.

    Only the processes that block the drain: those holding one event for at
    least ``threshold`` seconds, or whose heartbeat is that old (stuck in user
    code outside the data path). Processes waiting on a buffer beat while they
    wait and are spared: once the blockage upstream of them is gone they get
    their end of stream and finish normally (exporters write their results).
    If no live process looks stuck, all of them are (the old last resort).
    """
    stuck = [p.key for p in live
             if (p.held_counter is not None and p.held_seconds >= threshold) or p.heartbeat_age >= threshold]
    return stuck or [p.key for p in live]
