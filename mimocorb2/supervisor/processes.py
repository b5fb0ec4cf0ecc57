"""Process records of a run: spawn, reap, kill; one record per process slot of a worker.

A :class:`ProcessRecord` is slot ``index`` of a worker's ``number_of_processes``
and survives restarts; a :class:`WorkerRecord` groups them with the worker's
restart budget and state. :func:`spawn` starts a process (the ``spawn`` start
method, never a fork of the daemon) and watches its sentinel on the event
loop; when it closes, the zombie is reaped and ``on_exit(record, pid,
exitcode)`` is called on the loop.

Invariants of a ProcessRecord:

* ``proc is not None`` exactly while the process is alive (not yet reaped);
  ``pid`` is its pid, or the last one's after it ended.
* ``restart_handle`` is set exactly while a restart is scheduled; then
  ``proc is None`` and ``retired`` is False.
* ``retired`` is final: the slot will not be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path

import structlog

from mimocorb2.datapath.heartbeat import HeartbeatTable
from mimocorb2.logsetup import SLOW_SPAWN as SLOW_SPAWN_EVENT
from mimocorb2.mimo_buffer import mimoBuffer
from mimocorb2.runtime import WorkerLaunch, spawn_worker
from mimocorb2.setup import Setup, WorkerSpec
from mimocorb2.supervisor.policy import Backoff, RestartBudget

log = structlog.get_logger("mimocorb2.run")

__all__ = ["ProcessRecord", "WorkerRecord", "WorkerState", "spawn", "kill", "signame", "warm_up"]

#: spawning slower than this is logged: it held the event loop
SLOW_SPAWN = 0.05


class WorkerState(str, enum.Enum):
    """A worker's state as the status shows it."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class ProcessRecord:
    """One process slot of a worker (see the module docstring for its invariants)."""

    worker: str
    index: int
    row: int  # heartbeat table row
    proc: BaseProcess | None = None
    pid: int | None = None
    exitcode: int | None = None
    started: float = 0.0  # monotonic time of the last spawn
    started_wall: float = 0.0  # the same moment in wall-clock time (to compare with file times)
    retired: bool = False
    restart_handle: asyncio.TimerHandle | None = None
    backoff: Backoff = field(default_factory=Backoff)
    killed_for: str | None = None  # why the supervisor killed it ("stalled", ...)
    setup_failure: str | None = None  # set with killed_for when it was killed as a setup failure (stuck importing)
    cpu_last: tuple[float, float] | None = None  # (monotonic, cpu seconds)
    cpu_percent: float = 0.0

    @property
    def alive(self) -> bool:
        """True from spawn until the process is reaped; a pending restart is not alive."""
        return self.proc is not None

    @property
    def name(self) -> str:
        """``worker#index``, as log and terminal lines name the process."""
        return f"{self.worker}#{self.index}"


@dataclass
class WorkerRecord:
    """A worker of the setup and its process slots.

    ``failed`` is final and implies ``state == FAILED``; ``error`` says why.
    """

    spec: WorkerSpec
    processes: list[ProcessRecord]
    budget: RestartBudget = field(default_factory=RestartBudget)
    restarts: int = 0
    failed: bool = False
    state: WorkerState = WorkerState.STARTING
    last_exit: str | None = None
    error: str | None = None
    exit_codes: list[int] = field(default_factory=list)
    detached: bool = False  # its reader groups were given up (final)

    @property
    def touched(self) -> list[str]:
        """Every buffer the worker reads, writes or observes."""
        s = self.spec
        return list(dict.fromkeys([*s.sources, *s.sinks, *s.observes]))

    @property
    def any_alive(self) -> bool:
        """Whether a process of the worker is alive or scheduled to restart: the worker may still act."""
        return any(p.alive or p.restart_handle is not None for p in self.processes)


def make_launch(setup: Setup, worker: WorkerSpec, buffers: dict[str, mimoBuffer], run_dir: Path,
                rec: ProcessRecord, heartbeats: HeartbeatTable) -> WorkerLaunch:
    """What :func:`spawn` needs to start slot ``rec`` of ``worker``; no side effect.

    It carries only the buffers the worker reads, writes or observes, its directories and
    its heartbeat row.
    """
    used = dict.fromkeys([*worker.sources, *worker.sinks, *worker.observes])
    return WorkerLaunch(worker=worker, setup_dir=setup.directory, run_dir=run_dir, index=rec.index,
                        buffers={name: buffers[name] for name in used}, heartbeats=heartbeats, row=rec.row)


def spawn(launch: WorkerLaunch, rec: ProcessRecord, heartbeats: HeartbeatTable,
          on_exit: Callable[[ProcessRecord, int, int], None]) -> None:
    """Start the process of ``rec`` and watch it; call from the loop's (main) thread.

    The child's parent-death signal is tied to the thread that starts it.
    """
    loop = asyncio.get_running_loop()
    heartbeats.reset(rec.row, 0)
    t0 = time.monotonic()
    proc = spawn_worker(launch)
    took = time.monotonic() - t0
    if took > SLOW_SPAWN:
        log.warning(SLOW_SPAWN_EVENT, worker=rec.worker, seconds=round(took, 3))
    rec.proc, rec.pid, rec.exitcode, rec.restart_handle = proc, proc.pid, None, None
    rec.started, rec.cpu_last, rec.cpu_percent, rec.killed_for = time.monotonic(), None, 0.0, None
    rec.started_wall, rec.setup_failure = time.time(), None
    heartbeats.set_pid(rec.row, proc.pid)  # not a reset: the process may have attached and beaten already

    def on_sentinel() -> None:
        loop.remove_reader(proc.sentinel)
        _reap(loop, rec, proc, on_exit, 0)

    loop.add_reader(proc.sentinel, on_sentinel)
    log.info("process started", worker=rec.worker, index=rec.index, pid=proc.pid)


def _reap(loop: asyncio.AbstractEventLoop, rec: ProcessRecord, proc: BaseProcess,
          on_exit: Callable[[ProcessRecord, int, int], None], attempt: int) -> None:
    proc.join(0)  # waitpid(WNOHANG): the sentinel says it is gone, reap the zombie
    if proc.exitcode is None:
        # the pipe closes a moment before the kernel makes the process waitable
        loop.call_later(min(0.001 * 2 ** attempt, 0.1), _reap, loop, rec, proc, on_exit, attempt + 1)
        return
    pid, exitcode = proc.pid, proc.exitcode
    with contextlib.suppress(Exception):
        proc.close()
    rec.proc, rec.exitcode, rec.cpu_percent = None, exitcode, 0.0
    on_exit(rec, pid, exitcode)


def kill(rec: ProcessRecord, why: str | None = None) -> None:
    """SIGKILL the process of ``rec`` if it is alive; remember why (shown in its exit)."""
    if rec.proc is not None and rec.pid:
        if why and rec.killed_for is None:
            rec.killed_for = why
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)


def signame(num: int) -> str:
    """The name of signal ``num`` (``SIGKILL``), or ``signal N`` for a number Python does not know."""
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def warm_up() -> None:
    """Start multiprocessing's resource tracker before the loop needs it (it is itself
    a spawned process; starting it lazily inside the first run would block the loop)."""
    from multiprocessing import resource_tracker

    from mimocorb2.runtime import start_worker_server

    resource_tracker.ensure_running()
    start_worker_server(wait=True)  # warm before the loop starts any worker: spawning never waits for it
