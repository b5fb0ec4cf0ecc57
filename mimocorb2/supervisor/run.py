"""One run: its buffers, its worker processes, and how it starts, stops and ends.

The same :class:`Run` is driven by the daemon (``mimoctl start``) and by the
foreground runner (``mimocorb2 run``, :mod:`mimocorb2.supervisor.foreground`),
each on its own uvloop event loop, so limits, end of run, drain, accounting,
``stats.csv``, ``daemon.log`` and status mean the same everywhere.

Everything here runs on the event loop and never blocks it: process exits
arrive through each process's sentinel (:mod:`.processes`), every buffer call
goes through the :class:`~.gateway.BufferGateway` (threads), file work goes to
threads. Decisions are made by the pure functions of :mod:`.policy`; samples
are kept by the :class:`~.sampler.Sampler`; status is built by :mod:`.status`.

End of a run, in one place:

* **Run limits** are exact: ``max_events`` is set on every root buffer in the
  data path (writes beyond it are rejected), so each root takes exactly N
  events; once every root has ended with some root at the limit, the run stops
  with reason ``max_events=N reached``. ``max_seconds`` is a timer.
* **Stop** (command, signal, limit, failed worker with ``on_worker_failure:
  stop``, disk guard) ends the root buffers; the graph drains.
* **The drain timer** (``drain_timeout``) starts when the run stops, or when
  every buffer has ended by itself. When it fires, only the processes that
  block the drain are killed (:func:`.policy.drain_victims`: holding one event
  too long, or a stale heartbeat); they are retired, the groups they leave
  without readers are detached (what they drop is counted lost, per buffer),
  and everyone else gets its end of stream and finishes normally. The check is
  repeated after a grace period (an event a killed process held goes to
  another reader of its group); in the third round everything left is killed.
* **A writer is retired** (counted as flushed in its sinks) when its process
  exits and will not be restarted; a normal return has flushed already.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from mimocorb2 import logsetup
from mimocorb2.datapath.heartbeat import HeartbeatTable
from mimocorb2.diskfull import human_bytes
from mimocorb2.runtime import build_buffers, read_setup_failure, root_buffers, save_quarantined, write_setup_failure
from mimocorb2.setup import Setup
from mimocorb2.supervisor import policy
from mimocorb2.supervisor.blocking import BlockingTimeout, in_daemon_thread
from mimocorb2.supervisor.errors import RunError
from mimocorb2.supervisor.gateway import BufferGateway
from mimocorb2.supervisor.logs import last_error_line, read_logs
from mimocorb2.supervisor.policy import ExitContext, HeldEvent, Verdict
from mimocorb2.supervisor.processes import (
    ProcessRecord,
    WorkerRecord,
    WorkerState,
    kill,
    make_launch,
    signame,
    spawn,
)
from mimocorb2.supervisor.sampler import Sampler

log = structlog.get_logger("mimocorb2.run")

__all__ = ["Run", "Phase", "Ending", "load_setup_async", "TICK"]

#: how often counters, limits, stalls and the end of the stream are checked
TICK = 0.1
#: how long a process may take to exit after SIGKILL at the start before it is given up
START_KILL_WAIT = 5.0
#: rounds of "kill what blocks the drain" before everything left is killed
DRAIN_ROUNDS = 3
#: how long reading and validating a setup (or making a run directory) may take
SETUP_LOAD_TIMEOUT = 30.0

Echo = Callable[[str], None]


async def load_setup_async(path: Path) -> Setup:
    """Load and validate a setup in a thread, bounded by SETUP_LOAD_TIMEOUT.

    Validation never runs user code (worker files are parsed, not imported). A
    SetupError becomes a RunError listing every problem; warnings are logged.
    """
    from mimocorb2.errors import SetupError
    from mimocorb2.setup import load_setup

    try:
        setup = await in_daemon_thread(load_setup, path, timeout=SETUP_LOAD_TIMEOUT,
                                       what=f"reading setup {path}")
    except SetupError as exc:
        raise RunError(f"setup {exc.message}", exc.problems) from None  # "setup PATH: N problems"
    except BlockingTimeout as exc:
        raise RunError(f"{exc}: is its file system responding?") from None
    except OSError as exc:
        raise RunError(f"cannot read setup {path}: {exc}") from None
    for warning in setup.warnings:
        log.warning("setup warning", warning=warning)
    return setup


class Phase(str, enum.Enum):
    """The state of a run as the status shows it (``idle``: the daemon has no run yet)."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """FINISHED or FAILED: the run is over and its state will not change again."""
        return self in (Phase.FINISHED, Phase.FAILED)


class Ending(enum.IntEnum):
    """How far the run has gone towards its end; only ever increases."""

    NONE = 0  # nobody asked the run to end
    DRAINING = 1  # the roots were ended (stop, limit, failure): the graph drains, restarts still allowed
    OVERDUE = 2  # the drain timeout passed: stuck processes were killed, nothing is restarted
    ABORTED = 3  # abort: every process was killed, nothing is restarted


class Run:
    """One run of a setup (see the module docstring).

    Invariants:

    * ``phase`` is STARTING until :meth:`start` returns; then RUNNING or
      PAUSED while ``ending`` is NONE (PAUSED exactly when a root buffer is
      paused), STOPPING while ``ending`` > NONE, and FINISHED or FAILED once
      :meth:`wait` returns. FAILED exactly when ``error`` is set.
    * ``ending`` only increases; ``stop_reason`` is set by the first stop or abort.
    * In a terminal phase the buffers and the heartbeat table are closed,
      ``final`` holds the summary and no process of the run is alive.
    * ``lost_by_buffer`` counts every event the run could not deliver, per
      buffer: slots a killed writer held, groups detached with unread events,
      events left unread at the end.
    """

    def __init__(self, setup: Setup, *, max_events: int | None = None, max_seconds: float | None = None,
                 directory: Path | None = None, echo: Echo | None = None, restarts: bool = True,
                 on_worker_failure: str | None = None,
                 on_finished: Callable[["Run"], None] | None = None) -> None:
        self.setup = setup
        self.restarts = restarts  # False: a process that exits is never started again (foreground)
        self.on_worker_failure = on_worker_failure or setup.on_worker_failure
        limits = setup.run_limits
        self.max_events = max_events if max_events is not None else limits.max_events
        self.max_seconds = max_seconds if max_seconds is not None else limits.max_seconds
        self.echo: Echo = echo or (lambda line: None)
        self.on_finished = on_finished
        self.phase = Phase.STARTING
        self.ending = Ending.NONE
        self.directory: Path | None = directory
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.roots: list[str] = root_buffers(setup)
        self.workers: dict[str, WorkerRecord] = {}
        self.gateway: BufferGateway | None = None
        self.heartbeats: HeartbeatTable | None = None
        self.sampler: Sampler | None = None
        self.stuck_after = policy.stuck_after(setup.drain_timeout)
        self.redelivered = 0
        self.quarantined = 0  # poison events set aside (a second reader died holding them)
        self.lost_in_crashes = 0  # slots killed writers held, events of failed groups dropped
        self.lost_at_end = 0  # events still unread when the run ended, or dropped at the drain timeout
        self.lost_by_buffer: dict[str, int] = {}
        self.final: dict[str, Any] | None = None
        self._paused: set[str] = set()
        self._exits_in_progress = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._periodic: list[asyncio.Task[Any]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._drain_timer: asyncio.TimerHandle | None = None
        self._finishing: asyncio.Task[None] | None = None  # set once, when the last process is gone
        self._done = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ properties
    @property
    def state(self) -> str:
        """The phase as the status shows it."""
        return self.phase.value

    @property
    def done(self) -> bool:
        """True once the run has ended: terminal phase, ``final`` set, buffers closed, no process left."""
        return self._done.is_set()

    async def wait(self) -> None:
        """Wait until :attr:`done`; no timeout of its own.

        After :meth:`stop` the drain timer bounds it: about :meth:`longest_stop`, plus reaping
        and closing; after :meth:`abort` as long as the killed processes take to be reaped.
        """
        await self._done.wait()

    @property
    def stopping(self) -> bool:
        """A stop or abort has begun (``ending`` > NONE); stays True after the run has ended."""
        return self.ending > Ending.NONE

    def processes(self) -> list[ProcessRecord]:
        """Every process slot of every worker, in setup order, alive or not."""
        return [p for w in self.workers.values() for p in w.processes]

    def total_lost(self) -> int:
        """Events lost so far: in crashes plus left unread at the end (final once :attr:`done`)."""
        return self.lost_in_crashes + self.lost_at_end

    def _count_lost(self, buffer: str, n: int) -> None:
        if n:
            self.lost_by_buffer[buffer] = self.lost_by_buffer.get(buffer, 0) + n

    def _later(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task the run keeps a reference to."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Run directory, buffers, heartbeat table, stats.csv, every worker's processes."""
        setup = self.setup
        try:
            from mimocorb2.setup import create_run_directory

            if self.directory is None:
                self.directory = await in_daemon_thread(
                    create_run_directory, setup, timeout=SETUP_LOAD_TIMEOUT,
                    what=f"creating the run directory in {setup.target_directory}")
            logs = self.directory / "logs"
            await in_daemon_thread(lambda: logs.mkdir(parents=True, exist_ok=True),
                                   timeout=SETUP_LOAD_TIMEOUT, what=f"creating {logs}")
            logsetup.attach_run_log(self.directory / "daemon.log")
            log.info("run starting", directory=str(self.directory), setup=str(setup.path),
                     max_events=self.max_events, max_seconds=self.max_seconds)
            for warning in setup.warnings:
                log.warning("setup warning", warning=warning)
            for note in setup.notes:
                log.info("setup note", note=note)
            self.gateway = BufferGateway(build_buffers(setup))
            if self.max_events:  # exact: the data path rejects writes past the limit
                self.gateway.set_event_limit_now(self.roots, int(self.max_events))
            rows = sum(w.number_of_processes for w in setup.workers.values())
            self.heartbeats = HeartbeatTable(rows)
            self.sampler = await asyncio.to_thread(Sampler, self.gateway, self.directory)  # opens stats.csv
            row = 0
            for name, spec in setup.workers.items():
                procs = []
                for index in range(spec.number_of_processes):
                    procs.append(ProcessRecord(name, index, row))
                    row += 1
                self.workers[name] = WorkerRecord(spec, procs)
            # readers first, so that every group is consuming before the sources produce
            for worker in sorted(self.workers.values(), key=lambda w: 0 if w.spec.sources else 1):
                for rec in worker.processes:
                    self._spawn(worker, rec)
                worker.state = WorkerState.RUNNING
        except RunError as exc:
            await self._fail_start(exc.message)
            raise
        except Exception as exc:
            log.exception("run failed to start")
            await self._fail_start(f"{type(exc).__name__}: {exc}")
            raise RunError(f"run failed to start: {type(exc).__name__}: {exc}") from None
        if self.stopping:  # a stop arrived while the processes were starting: end the roots now they exist
            self.phase = Phase.STOPPING
            await self.gateway.end(self.roots)
        else:
            self.phase = Phase.RUNNING
        self._periodic.append(asyncio.create_task(self._tick_loop(), name="tick"))
        self._periodic.append(asyncio.create_task(self._stats_loop(), name="stats"))
        if self.max_seconds:
            self._timers.append(self._loop.call_later(
                self.max_seconds, self._limit_reached, f"max_seconds={self.max_seconds} reached"))
        log.info("run started", directory=str(self.directory), roots=self.roots)
        self._check_done()

    async def _fail_start(self, reason: str) -> None:
        self.error = reason
        for rec in self.processes():
            kill(rec, "the run failed to start")
        deadline = time.monotonic() + START_KILL_WAIT
        while any(r.alive for r in self.processes()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._finish()

    # ------------------------------------------------------------------ processes
    def _spawn(self, worker: WorkerRecord, rec: ProcessRecord) -> None:
        assert self.gateway is not None and self.heartbeats is not None and self.directory is not None
        rec.restart_handle = None
        launch = make_launch(self.setup, worker.spec, self.gateway.buffers, self.directory, rec, self.heartbeats)
        spawn(launch, rec, self.heartbeats, self._on_exit)
        self.echo(f"started {rec.name} (pid {rec.pid})")

    def _on_exit(self, rec: ProcessRecord, pid: int, exitcode: int) -> None:
        self._exits_in_progress += 1
        self._later(self._handle_exit_guarded(self.workers[rec.worker], rec, pid, exitcode), f"exit-{pid}")

    async def _handle_exit_guarded(self, worker: WorkerRecord, rec: ProcessRecord, pid: int, exitcode: int) -> None:
        try:
            await self._handle_exit(worker, rec, pid, exitcode)
        except Exception:
            log.exception("handling a process exit failed", worker=worker.spec.name, pid=pid)
            rec.retired = True
        finally:
            self._exits_in_progress -= 1
            self._check_done()

    async def _handle_exit(self, worker: WorkerRecord, rec: ProcessRecord, pid: int, exitcode: int) -> None:
        """Reclaim, record, then restart / retire / fail as the policy decides."""
        assert self.gateway is not None
        name = worker.spec.name
        unloaded = self._ended_before_function(rec, exitcode)  # read the row before anything can reset it
        await self._reclaim(worker, pid)
        how = await self._record_exit(worker, rec, pid, exitcode, unloaded)
        decision = policy.decide_exit(self._exit_context(worker, exitcode, how, unloaded is not None),
                                      worker.budget, rec.backoff, time.monotonic())
        if decision.verdict is Verdict.RESTART:
            worker.restarts += 1
            worker.state = WorkerState.RESTARTING
            log.info("restarting process", worker=name, index=rec.index, delay=decision.delay,
                     restarts=worker.restarts)
            rec.restart_handle = self._loop.call_later(decision.delay, self._respawn, worker, rec)
            return
        rec.retired = True
        # a writer that will not come back must not hold its buffers open
        await self.gateway.retire(worker.spec.sinks, [pid])
        if decision.verdict is Verdict.FAIL or (exitcode and not self.restarts and self.ending < Ending.OVERDUE):
            await self._worker_failed(worker, decision.why or how)
        elif not worker.failed and not worker.any_alive:
            worker.state = WorkerState.FINISHED
        await self._detach_if_abandoned(worker)

    async def _reclaim(self, worker: WorkerRecord, pid: int) -> None:
        """Give back what a dead process held, in every buffer it touched.

        In a thread: if it died holding a buffer's lock, reclaim waits for and
        repairs that lock. Read slots are redelivered, write slots counted lost.
        """
        assert self.gateway is not None
        reclaimed = await self.gateway.reclaim(worker.touched, pid)
        poison: list[Any] = []
        for bname, got in reclaimed.items():
            poison.extend(got.pop("quarantined_events", ()))
            if got.get("lost") or got.get("redelivered") or got.get("repaired") or got.get("quarantined"):
                log.warning("slots reclaimed from dead process", worker=worker.spec.name, pid=pid, buffer=bname, **got)
            self.lost_in_crashes += int(got.get("lost", 0))
            self._count_lost(bname, int(got.get("lost", 0)))
            self.redelivered += int(got.get("redelivered", 0))
            self.quarantined += int(got.get("quarantined", 0))
        if poison:
            await self._quarantine(worker.spec.name, pid, poison)

    async def _quarantine(self, worker: str, pid: int, events: list[Any]) -> None:
        """Log every poison event a reclaim set aside; keep it in RUN_DIR/quarantine/ when possible."""
        for event in events:
            log.error("poison event set aside: a second reader died holding it", worker=worker, pid=pid,
                      buffer=event.buffer, group=event.group, counter=event.counter)
        if self.directory is None:
            return
        try:
            paths = await asyncio.to_thread(save_quarantined, self.directory, events)
            log.info("poison events saved", files=[str(p) for p in paths])
        except Exception as exc:
            log.error("poison events could not be saved", error=f"{type(exc).__name__}: {exc}")

    def _ended_before_function(self, rec: ProcessRecord, exitcode: int) -> str | None:
        """The setup failure of a process that ended before its function, in words; else None.

        ``"stuck importing funcs.py for 60 s"`` when the supervisor killed it for
        that; ``"exited with code 3 while importing funcs.py"`` when it ended by
        itself (or by a signal not ours) before its heartbeat stage said RUNNING.
        None for a process that reached its function, one that reported its own
        setup failure (exit code 78), and one the supervisor ended for the run's
        sake (abort, drain timeout, failed start).
        """
        if rec.setup_failure:
            return rec.setup_failure
        if (exitcode == policy.EXIT_SETUP_FAILED or rec.killed_for or self.ending is Ending.ABORTED
                or self.heartbeats is None):
            return None
        stage = self.heartbeats.read(rec.row).stage
        if not stage.before_function:
            return None
        spec = self.workers[rec.worker].spec
        how = policy.describe_exit(exitcode, signame(-exitcode) if exitcode < 0 else None)
        return f"{how} while {policy.loading_what(stage, spec.file, spec.function)}"

    async def _record_exit(self, worker: WorkerRecord, rec: ProcessRecord, pid: int, exitcode: int,
                           unloaded: str | None = None) -> str:
        """Log and remember an exit; return it in words (with the reason if it could not load).

        ``unloaded``: the process ended before its function (see
        :meth:`_ended_before_function`); the reason goes to
        ``logs/WORKER.setup-failure`` as if the process had written it.
        """
        name = worker.spec.name
        how = policy.describe_exit(exitcode, signame(-exitcode) if exitcode < 0 else None)
        if rec.killed_for:
            how += f" ({rec.killed_for})"
        elif unloaded:
            how = unloaded
        if unloaded and self.directory is not None:
            await asyncio.to_thread(write_setup_failure, self.directory, name, unloaded)
        worker.last_exit = how
        worker.exit_codes.append(exitcode)
        (log.warning if exitcode else log.info)(logsetup.PROCESS_ENDED, worker=name, index=rec.index, pid=pid, how=how)
        if exitcode:
            self.echo(f"{rec.name} (pid {pid}) {how}; see {self._log_path(name)}")
        if exitcode == policy.EXIT_SETUP_FAILED:
            message = await asyncio.to_thread(read_setup_failure, self.directory, name)
            if not message:
                message = await asyncio.to_thread(last_error_line, self._log_path(name))
            if message:
                how = f"{how}: {message}"
                worker.last_exit = how
        return how

    def _exit_context(self, worker: WorkerRecord, exitcode: int, how: str, setup_failed: bool = False) -> ExitContext:
        sources = worker.spec.sources
        buffers = self.gateway.buffers if self.gateway else {}
        # reading the ended flag is one word of the control block, no lock: fine on the loop
        return ExitContext(
            exitcode=exitcode, restart=worker.spec.restart, max_restarts=worker.spec.max_restarts,
            has_sources=bool(sources),
            sources_ended=bool(sources) and all(s in buffers and buffers[s].ended for s in sources),
            restarts_allowed=self.restarts and self.ending < Ending.OVERDUE and not worker.failed and not self.done,
            stopping=self.stopping, how=how, setup_failed=setup_failed,
        )

    def _log_path(self, worker: str) -> Path:
        return (self.directory or Path(".")) / "logs" / f"{worker}.log"

    def _respawn(self, worker: WorkerRecord, rec: ProcessRecord) -> None:
        rec.restart_handle = None
        if self.ending >= Ending.OVERDUE or self.done or worker.failed:
            rec.retired = True
            self._check_done()
            return
        try:
            self._spawn(worker, rec)
            if not worker.failed and all(p.alive or p.retired for p in worker.processes):
                worker.state = WorkerState.RUNNING
        except Exception as exc:
            log.exception("respawn failed", worker=worker.spec.name)
            rec.retired = True
            self._later(self._worker_failed(worker, f"respawn failed: {exc}"), "worker-failed")
            self._check_done()

    async def _worker_failed(self, worker: WorkerRecord, why: str) -> None:
        if worker.failed:
            return
        worker.failed = True
        worker.state = WorkerState.FAILED
        worker.error = why
        name = worker.spec.name
        on_failure = self.on_worker_failure
        log.error(logsetup.WORKER_FAILED, worker=name, why=why, on_worker_failure=on_failure)
        self.echo(f"worker '{name}' failed: {why}; see {self._log_path(name)}")
        if self.error is None:
            self.error = f"worker {name} failed: {why}"
        retire = []
        for rec in worker.processes:
            if rec.restart_handle is not None:
                rec.restart_handle.cancel()
                rec.restart_handle = None
                rec.retired = True
                if rec.pid:
                    retire.append(rec.pid)
        if retire and self.gateway is not None:
            await self.gateway.retire(worker.spec.sinks, retire)
        await self._detach_if_abandoned(worker)
        if on_failure == "stop":
            await self.stop(f"worker {name} failed")
        self._check_done()

    async def _detach_if_abandoned(self, worker: WorkerRecord) -> None:
        """Nobody will read for ``worker`` again: stop keeping events for its reader groups.

        That is the case once none of its processes is left and either it failed
        with ``on_worker_failure: continue`` or the drain timeout has passed.
        """
        if not worker.spec.sources or worker.any_alive or worker.detached:
            return
        if self.ending >= Ending.OVERDUE:
            await self._detach(worker, count_as_end=True)
        elif worker.failed and self.on_worker_failure == "continue":
            await self._detach(worker, count_as_end=False)

    async def _detach(self, worker: WorkerRecord, *, count_as_end: bool) -> None:
        """Give up ``worker``'s reader groups; what they had not read is counted lost, per buffer."""
        assert self.gateway is not None
        worker.detached = True
        dropped = await self.gateway.detach(worker.spec.name, worker.spec.sources)
        for bname, n in dropped.items():
            if not n:
                continue
            self._count_lost(bname, n)
            if count_as_end:
                self.lost_at_end += n
            else:
                self.lost_in_crashes += n
            log.error("events of a reader group without readers dropped", worker=worker.spec.name,
                      buffer=bname, lost=n)

    # ------------------------------------------------------------------ pause / resume
    def _buffer_names(self, names: list[str] | None) -> list[str]:
        names = names or self.roots
        known = self.setup.buffers
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RunError(f"unknown buffer(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return names

    async def pause(self, names: list[str] | None) -> list[str]:
        """Discard writes into ``names`` (default: the roots), counted as ``paused_count``."""
        return await self._set_paused(names, True)

    async def resume(self, names: list[str] | None) -> list[str]:
        """Accept writes into ``names`` again (default: the roots); return the names.

        Raises RunError while the run starts or stops, or for an unknown buffer.
        """
        return await self._set_paused(names, False)

    async def _set_paused(self, names: list[str] | None, paused: bool) -> list[str]:
        if self.phase is Phase.STARTING or self.gateway is None:
            raise RunError("the run is starting; try again when it runs")
        if self.stopping or self.done:
            raise RunError("the run is stopping")
        names = self._buffer_names(names)
        await self.gateway.set_paused(names, paused)
        assert self.sampler is not None
        self.sampler.invalidate_counters()
        for n in names:
            (self._paused.add if paused else self._paused.discard)(n)
            self.sampler.counters.setdefault(n, {})["paused"] = paused
        if self.phase in (Phase.RUNNING, Phase.PAUSED):
            self.phase = Phase.PAUSED if any(n in self._paused for n in self.roots) else Phase.RUNNING
        log.info("buffers paused" if paused else "buffers resumed", buffers=names)
        return names

    # ------------------------------------------------------------------ stop / abort
    async def stop(self, reason: str) -> None:
        """Graceful: end the root buffers, let the graph drain, start the drain timer."""
        if self.done or self.stopping:
            return
        self.ending = Ending.DRAINING
        self.stop_reason = reason
        if self.phase is not Phase.STARTING:
            self.phase = Phase.STOPPING
        log.info("run stopping", reason=reason, drain_timeout=float(self.setup.drain_timeout))
        self.echo(f"stopping ({reason}): ending root buffers {self.roots}")
        self._arm_drain_timer()
        if self.gateway is not None and self.phase is not Phase.STARTING:
            await self.gateway.end(self.roots)
        self._check_done()

    def drain_grace(self) -> float:
        """Seconds between the rounds of the drain timeout."""
        return max(1.0, min(float(self.setup.drain_timeout), 10.0))

    def longest_stop(self) -> float:
        """The longest a graceful stop can take until every process is gone."""
        return float(self.setup.drain_timeout) + (DRAIN_ROUNDS - 1) * self.drain_grace()

    def _arm_drain_timer(self) -> None:
        if self._drain_timer is None and not self.done:
            self._drain_timer = self._loop.call_later(float(self.setup.drain_timeout), self._on_drain_timeout)

    def _on_drain_timeout(self, round_: int = 1) -> None:
        """Kill only what blocks the drain (policy.drain_victims); the rest finishes normally.

        Repeated every grace period: an event a killed process held is handed to
        another reader of its group, which may get stuck on it in turn. After
        DRAIN_ROUNDS rounds everything left is killed.
        """
        if self.done:
            return
        self.ending = max(self.ending, Ending.OVERDUE)
        if self.phase in (Phase.RUNNING, Phase.PAUSED):
            self.phase = Phase.STOPPING
        self._cancel_restarts()
        live = [rec for rec in self.processes() if rec.alive]
        held = [self._held_event(rec) for rec in live]
        victims = set(policy.drain_victims(held, self.stuck_after)) if round_ < DRAIN_ROUNDS else {
            h.key for h in held}
        for rec, h in zip(live, held):
            if (rec.worker, rec.index) not in victims:
                continue
            if h.held_counter is not None and h.held_seconds >= self.stuck_after:
                what = f"stuck on event {h.held_counter} for {h.held_seconds:.0f} s"
            elif h.heartbeat_age >= self.stuck_after:
                what = f"no heartbeat for {h.heartbeat_age:.0f} s"
            else:
                what = "still running"
            log.error("drain timeout: killing a process that blocks the drain", worker=rec.worker,
                      index=rec.index, pid=rec.pid, why=what, round=round_)
            self.echo(f"drain timeout: killing {rec.name} (pid {rec.pid}): {what}")
            kill(rec, "killed at the drain timeout: " + what)
        if live and round_ < DRAIN_ROUNDS:
            self._timers.append(self._loop.call_later(self.drain_grace(), self._on_drain_timeout, round_ + 1))
        self._check_done()

    def _held_event(self, rec: ProcessRecord) -> HeldEvent:
        assert self.heartbeats is not None
        row = self.heartbeats.read(rec.row)
        return HeldEvent((rec.worker, rec.index), row.age_seconds, row.held_counter, row.held_seconds)

    async def abort(self, reason: str) -> None:
        """Kill every process now; events still in buffers are counted lost."""
        if self.done:
            return
        self.ending = Ending.ABORTED
        self.stop_reason = self.stop_reason or reason
        if self.phase is not Phase.STARTING:
            self.phase = Phase.STOPPING
        log.warning("run aborted", reason=reason)
        self.echo(f"aborting ({reason})")
        self._cancel_restarts()
        for rec in self.processes():
            kill(rec)
        if self.gateway is not None:
            await self.gateway.end(list(self.gateway.buffers))
        self._check_done()

    def _cancel_restarts(self) -> None:
        for rec in self.processes():
            if rec.restart_handle is not None:
                rec.restart_handle.cancel()
                rec.restart_handle = None
                rec.retired = True

    def _limit_reached(self, why: str) -> None:
        if not self.stopping and not self.done:
            log.info("run limit reached", limit=why)
            self._later(self.stop(why), "limit-stop")

    # ------------------------------------------------------------------ periodic work
    async def _tick_loop(self) -> None:
        """Every TICK: fresh counters, exact event limit reached?, stream ended?, stalled processes."""
        assert self.sampler is not None
        while True:
            await asyncio.sleep(TICK)
            counters = await self.sampler.refresh_counters()
            ended = {name: bool(c.get("ended")) for name, c in counters.items()}
            if self.max_events and self.roots and not self.stopping and all(ended.get(r) for r in self.roots):
                if any(int(counters[r].get("events", 0)) >= self.max_events for r in self.roots):
                    self._limit_reached(f"max_events={self.max_events} reached")
            if counters and all(ended.values()):
                self._arm_drain_timer()  # the stream ended everywhere: processes have drain_timeout to exit
            self._check_loading()
            self._check_stalls()

    def _check_loading(self) -> None:
        """Kill, as a setup failure, a process that has not reached its function within its import bound."""
        assert self.heartbeats is not None
        now = time.monotonic()
        for worker in self.workers.values():
            bound = policy.import_timeout(worker.spec.stall_timeout)
            for rec in worker.processes:
                if not rec.alive or rec.killed_for or now - rec.started <= bound:
                    continue
                stage = self.heartbeats.read(rec.row).stage
                if not stage.before_function:
                    continue
                what = policy.loading_what(stage, worker.spec.file, worker.spec.function)
                why = f"stuck {what} for {now - rec.started:.0f} s"
                log.error("process did not reach its function: killing it", worker=worker.spec.name,
                          pid=rec.pid, why=why, bound=bound)
                kill(rec, why)
                rec.setup_failure = why

    def _check_stalls(self) -> None:
        assert self.heartbeats is not None
        now = time.monotonic()
        for worker in self.workers.values():
            timeout = worker.spec.stall_timeout
            if not timeout or any(n in self._paused for n in worker.spec.sinks):
                continue  # writes into a paused buffer do not beat (data path); not a stall
            for rec in worker.processes:
                if not rec.alive or rec.killed_for or now - rec.started < timeout:
                    continue
                beat = self.heartbeats.read(rec.row)
                if beat.stage.before_function:
                    continue  # not a stall: _check_loading bounds the way to the function
                if beat.age_seconds > timeout:
                    log.error("process stalled: killing it", worker=worker.spec.name, pid=rec.pid,
                              heartbeat_age=round(beat.age_seconds, 2), stall_timeout=timeout)
                    kill(rec, "stalled")

    async def _stats_loop(self) -> None:
        """Every stats_interval: stats.csv rows, CPU per process, free disk (and its guard), device state."""
        assert self.sampler is not None
        interval = max(0.05, float(self.setup.stats_interval))
        while True:
            await self.sampler.refresh_disk()
            self._check_disk()
            await asyncio.sleep(interval)
            await self.sampler.refresh_stats()
            self.sampler.sample_cpu(self.processes())
            await self.sampler.refresh_devices()

    def _check_disk(self) -> None:
        assert self.sampler is not None
        disk = self.sampler.disk
        if disk is None or self.stopping:
            return
        floor = self.setup.min_free_disk.bytes_for(disk.total_bytes)
        if disk.free_bytes < floor:
            log.error("disk nearly full: stopping the run", path=disk.path, free_bytes=disk.free_bytes,
                      min_free_bytes=floor)
            self._later(self.stop(f"disk nearly full: {human_bytes(disk.free_bytes)} free on {disk.path}, "
                                  f"min_free_disk is {human_bytes(floor)}"), "disk-stop")

    # ------------------------------------------------------------------ completion
    def _check_done(self) -> None:
        if self.done or self._finishing is not None or self.phase is Phase.STARTING:
            return
        if self._exits_in_progress or any(p.alive or p.restart_handle is not None for p in self.processes()):
            return
        self._finishing = asyncio.create_task(self._finish(), name="finish")

    async def _finish(self) -> None:
        if self._done.is_set():
            return
        for timer in self._timers:
            timer.cancel()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        for task in self._periodic:
            task.cancel()
        await asyncio.gather(*self._periodic, return_exceptions=True)
        if self.sampler is not None:
            await self.sampler.refresh_stats()  # its rates cover the last partial interval (stats.csv)
            for stats in self.sampler.stats.values():
                stats["rate"] = 0.0  # an ended run moves nothing: no status shows it flowing
            # events still in buffers now will never be read: report them as lost
            for name, stats in self.sampler.stats.items():
                pending = int(stats.get("pending", 0))
                self.lost_at_end += pending
                self._count_lost(name, pending)
            if any(int(s.get("pending", 0)) for s in self.sampler.stats.values()):
                log.error("events left unread in buffers are lost", lost=self.lost_at_end,
                          per_buffer={n: s.get("pending") for n, s in self.sampler.stats.items() if s.get("pending")})
            with contextlib.suppress(OSError):
                await self.sampler.refresh_disk()
            await self.sampler.refresh_devices()  # the last word of every device (e.g. "failed")
            if self.stop_reason is None and self._roots_at_limit(self.sampler.stats):
                # the graph drained before a tick saw the limit: the limit still ended the run
                self.stop_reason = f"max_events={self.max_events} reached"
        await asyncio.to_thread(self._close_blocking)
        for worker in self.workers.values():
            if worker.state is not WorkerState.FAILED:
                worker.state = WorkerState.STOPPED if self.ending is Ending.ABORTED else WorkerState.FINISHED
        self.phase = Phase.FAILED if self.error else Phase.FINISHED
        self.ended_at = time.time()
        self.final = self.final_summary()
        log.info("run ended", **{k: v for k, v in self.final.items() if k != "events"}, events=self.final["events"])
        # the run's daemon.log is complete when anyone learns that the run ended
        await asyncio.to_thread(logsetup.detach_run_log, 5.0)
        self._done.set()
        if self.on_finished is not None:
            try:
                self.on_finished(self)
            except Exception:
                log.exception("on_finished callback failed")

    def _roots_at_limit(self, stats: dict[str, dict[str, Any]]) -> bool:
        """True when ``max_events`` is set and a root buffer took that many events."""
        return bool(self.max_events) and any(
            int(stats.get(r, {}).get("event_count", 0)) >= int(self.max_events or 0) for r in self.roots)

    def _close_blocking(self) -> None:
        if self.gateway is not None:
            self.gateway.close_blocking()
        if self.heartbeats is not None:
            try:
                self.heartbeats.close()
            except Exception:
                log.exception("closing the heartbeat table failed")
        if self.sampler is not None:
            self.sampler.close()

    def final_summary(self) -> dict[str, Any]:
        """What ``stop``/``abort`` reply and ``daemon.log`` records when the run ended."""
        stats = self.sampler.stats if self.sampler else {}
        return {
            "state": self.state,
            "directory": str(self.directory) if self.directory else None,
            "reason": self.stop_reason,
            "error": self.error,
            "events": {n: int(s.get("event_count", 0)) for n, s in stats.items()},
            "lost": self.total_lost(),
            "lost_in_buffers": self.lost_at_end,
            "lost_in_crashes": self.lost_in_crashes,
            "lost_by_buffer": dict(self.lost_by_buffer),
            "redelivered": self.redelivered,
            "quarantined": self.quarantined,
            "restarts": sum(w.restarts for w in self.workers.values()),
        }

    # ------------------------------------------------------------------ logs
    async def read_logs(self, worker: str | None, offsets: dict[str, int], max_bytes: int) -> dict[str, Any]:
        """Chunks of the worker logs from the given offsets (``mimoctl logs``)."""
        if self.directory is None:
            raise RunError("the run has no directory")
        if worker is not None and worker not in self.setup.workers:
            raise RunError(f"unknown worker {worker!r}; known: {', '.join(self.setup.workers)}")
        names = [worker] if worker else list(self.setup.workers)
        files = await read_logs(self.directory / "logs", names, offsets, max_bytes)
        return {"files": files, "run_done": self.done}
