"""One run under the daemon: its buffers, its worker processes and their policies.

Everything here runs on the daemon's event loop and never blocks it: process
exits arrive through each process's sentinel (``loop.add_reader``), timers
drive restarts with backoff, the stats / liveness tick and run limits, and file
work (setup loading, run directory, log reading) goes to a thread.

Every call into a buffer that takes its process-shared lock (counters, stats,
reclaim, pause, shutdown, retire) runs in a worker thread, never on the loop: a
process killed inside the buffer's critical section leaves the lock taken until
``reclaim`` repairs it, and the loop must stay free to notice that death.
Status replies are built from the latest samples (every 0.1 s).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mimocorb2 import logsetup
from mimocorb2.control.server import CommandError
from mimocorb2.supervisor import _runtime_bridge as bridge

log = structlog.get_logger("mimocorb2.run")

RESTART_WINDOW = 60.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
LIMIT_CHECK_INTERVAL = 0.1
STATS_FIELDS = ("time", "buffer", "event_count", "rate", "filled_slots", "average_deadtime",
                "paused_count", "paused", "lost", "redelivered", "pending", "ended")


async def load_setup_async(path: Path) -> Any:
    """Load and validate a setup in a thread; a SetupError becomes a refusal listing every problem."""
    from mimocorb2.errors import SetupError
    from mimocorb2.setup import load_setup

    try:
        return await asyncio.to_thread(load_setup, path)
    except SetupError as exc:
        raise CommandError(f"setup {path} has errors: {exc.message}", exc.problems) from None
    except OSError as exc:
        raise CommandError(f"cannot read setup {path}: {exc}") from None


@dataclass
class ProcessRecord:
    """One process slot of a worker (index i of number_of_processes); survives restarts."""

    worker: str
    index: int
    row: int  # heartbeat table row
    proc: Any = None
    pid: int | None = None
    alive: bool = False
    exitcode: int | None = None
    started: float = 0.0
    done: bool = False  # finished or given up: will not be started again
    restart_handle: asyncio.TimerHandle | None = None
    cpu_last: tuple[float, float] | None = None  # (monotonic, cpu seconds)
    cpu_percent: float = 0.0
    killed_for_stall: bool = False


@dataclass
class WorkerRecord:
    spec: Any
    processes: list[ProcessRecord]
    restarts: int = 0
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    failed: bool = False
    state: str = "starting"
    last_exit: str | None = None

    @property
    def touched(self) -> list[str]:
        s = self.spec
        return list(dict.fromkeys([*s.sources, *s.sinks, *s.observes]))


class Run:
    def __init__(self, setup: Any, *, max_events: int | None = None, max_seconds: float | None = None,
                 on_finished: Callable[["Run"], None] | None = None) -> None:
        self.setup = setup
        limits = setup.run_limits
        self.max_events = max_events if max_events is not None else limits.max_events
        self.max_seconds = max_seconds if max_seconds is not None else limits.max_seconds
        self.on_finished = on_finished
        self.state = "starting"
        self.directory: Path | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.stop_reason: str | None = None
        self.error: str | None = None
        self.buffers: dict[str, Any] = {}
        self.roots: list[str] = bridge.root_buffers(setup)
        self.workers: dict[str, WorkerRecord] = {}
        self.heartbeats: Any = None
        self.reclaimed = {"lost": 0, "redelivered": 0, "quarantined": 0}
        self.lost_at_end = 0
        self.final: dict[str, Any] | None = None
        self._stats: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, dict[str, Any]] = {}
        self._pending_rows: list[list[Any]] = []
        self._paused: set[str] = set()
        self._pause_generation = 0
        self._exits_in_progress = 0
        self._exit_tasks: set[asyncio.Task[Any]] = set()
        self._finishing = False
        self._buffer_calls = threading.Condition()
        self._buffers_closed = False
        self._inflight = 0
        self._stats_file: Any = None
        self._stats_writer: Any = None
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._drain_handle: asyncio.TimerHandle | None = None
        self._aborting = False
        self._stopping = False
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ properties
    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()

    def _all_processes(self) -> list[ProcessRecord]:
        return [p for w in self.workers.values() for p in w.processes]

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        setup = self.setup
        try:
            from mimocorb2.setup import create_run_directory

            self.directory = await asyncio.to_thread(create_run_directory, setup)
            await asyncio.to_thread((self.directory / "logs").mkdir, exist_ok=True)
            logsetup.attach_run_log(self.directory / "daemon.log")
            log.info("run starting", directory=str(self.directory), setup=str(setup.path),
                     max_events=self.max_events, max_seconds=self.max_seconds)
            self.buffers = bridge.build_buffers(setup)
            rows = sum(w.number_of_processes for w in setup.workers.values())
            self.heartbeats = bridge.make_heartbeat_table(rows)
            self._stats_file = open(self.directory / "stats.csv", "w", newline="", encoding="utf-8")
            self._stats_writer = csv.writer(self._stats_file)
            self._stats_writer.writerow(STATS_FIELDS)
            row = 0
            for name, spec in setup.workers.items():
                procs = []
                for index in range(spec.number_of_processes):
                    procs.append(ProcessRecord(name, index, row))
                    row += 1
                self.workers[name] = WorkerRecord(spec, procs)
            # readers first, so that every group is consuming before the sources produce
            order = sorted(self.workers.values(), key=lambda w: 0 if w.spec.sources else 1)
            for worker in order:
                for rec in worker.processes:
                    self._spawn(worker, rec)
                worker.state = "running"
        except CommandError:
            await self._fail_start("start failed")
            raise
        except Exception as exc:
            log.exception("run failed to start")
            await self._fail_start(str(exc))
            raise CommandError(f"run failed to start: {type(exc).__name__}: {exc}") from None
        if not self._stopping:
            self.state = "running"
        else:  # a stop arrived while the processes were starting: end the roots now they exist
            await self._in_thread(self._end_buffers_blocking, self.roots)
        self._tasks.append(asyncio.create_task(self._stats_loop(), name="stats"))
        self._tasks.append(asyncio.create_task(self._limit_loop(), name="limits"))
        if self.max_seconds:
            self._timers.append(self._loop.call_later(self.max_seconds, self._limit_reached,
                                                      f"max_seconds={self.max_seconds} reached"))
        log.info("run started", directory=str(self.directory), roots=self.roots)

    async def _fail_start(self, reason: str) -> None:
        self.error = reason
        for rec in self._all_processes():
            if rec.alive and rec.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(r.alive for r in self._all_processes()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._finish("failed")

    # ------------------------------------------------------------------ processes
    def _spawn(self, worker: WorkerRecord, rec: ProcessRecord) -> None:
        rec.restart_handle = None
        if self._aborting or self.done:
            rec.done = True
            return
        self.heartbeats.reset(rec.row, 0)
        runtime_launch = bridge.make_launch(
            setup=self.setup, worker=worker.spec, buffers=self.buffers, run_dir=self.directory,
            index=rec.index, heartbeats=self.heartbeats, row=rec.row,
        )
        t0 = time.monotonic()
        proc = bridge.spawn(runtime_launch)
        took = time.monotonic() - t0
        if took > 0.05:
            log.warning("spawning a process held the event loop", worker=worker.spec.name, seconds=round(took, 3))
        rec.proc, rec.pid, rec.alive, rec.exitcode = proc, proc.pid, True, None
        rec.started, rec.cpu_last, rec.cpu_percent, rec.killed_for_stall = time.monotonic(), None, 0.0, False
        self.heartbeats.reset(rec.row, proc.pid)
        self._loop.add_reader(proc.sentinel, self._on_sentinel, worker, rec, proc)
        log.info("process started", worker=worker.spec.name, index=rec.index, pid=proc.pid)

    def _on_sentinel(self, worker: WorkerRecord, rec: ProcessRecord, proc: Any) -> None:
        self._loop.remove_reader(proc.sentinel)
        self._reap(worker, rec, proc, 0)

    def _reap(self, worker: WorkerRecord, rec: ProcessRecord, proc: Any, attempt: int) -> None:
        proc.join(0)  # waitpid(WNOHANG): the sentinel says it is gone, reap the zombie
        if proc.exitcode is None:
            # the pipe closes a moment before the kernel makes the process waitable
            self._loop.call_later(min(0.001 * 2 ** attempt, 0.1), self._reap, worker, rec, proc, attempt + 1)
            return
        pid, exitcode = proc.pid, proc.exitcode
        with contextlib.suppress(Exception):
            proc.close()
        rec.alive, rec.exitcode, rec.proc = False, exitcode, None
        self._exits_in_progress += 1
        task = asyncio.create_task(self._on_exit(worker, rec, pid, exitcode), name=f"exit-{pid}")
        self._exit_tasks.add(task)
        task.add_done_callback(self._exit_tasks.discard)

    def _reclaim_blocking(self, names: list[str], pid: int) -> dict[str, dict[str, Any]]:
        out = {}
        for bname in names:
            buf = self.buffers.get(bname)
            if buf is None:
                continue
            try:
                out[bname] = dict(buf.reclaim(pid))
            except Exception:
                log.exception("reclaim failed", buffer=bname, pid=pid)
        return out

    def _retire_blocking(self, names: list[str], pids: list[int]) -> None:
        for bname in names:
            buf = self.buffers.get(bname)
            if buf is None:
                continue
            for pid in pids:
                try:
                    buf.retire_writer(pid)
                except Exception:
                    log.exception("retire_writer failed", buffer=bname, pid=pid)

    async def _quarantine(self, worker: str, pid: int, events: list[Any]) -> None:
        """Log every poison event a reclaim set aside; keep it in RUN_DIR/quarantine/ when possible."""
        for event in events:
            log.error("poison event set aside: a second reader died holding it", worker=worker, pid=pid,
                      buffer=event.buffer, group=event.group, counter=event.counter)
        try:
            paths = await asyncio.to_thread(bridge.save_quarantined, self.directory, events)
            log.info("poison events saved", files=[str(p) for p in paths])
        except Exception as exc:
            log.error("poison events could not be saved", error=f"{type(exc).__name__}: {exc}")

    async def _on_exit(self, worker: WorkerRecord, rec: ProcessRecord, pid: int, exitcode: int) -> None:
        try:
            await self._handle_exit(worker, rec, pid, exitcode)
        except Exception:
            log.exception("handling a process exit failed", worker=worker.spec.name, pid=pid)
            rec.done = True
        finally:
            self._exits_in_progress -= 1
            self._check_done()

    async def _handle_exit(self, worker: WorkerRecord, rec: ProcessRecord, pid: int, exitcode: int) -> None:
        name = worker.spec.name
        # give back what the dead process held, in every buffer it touched (in a thread:
        # if it died holding a buffer's lock, reclaim waits for and repairs that lock)
        reclaimed = await self._in_thread(self._reclaim_blocking, worker.touched, pid) or {}
        poison: list[Any] = []
        for bname, got in reclaimed.items():
            poison.extend(got.pop("quarantined_events", ()))
            if got.get("lost") or got.get("redelivered") or got.get("repaired") or got.get("quarantined"):
                log.warning("slots reclaimed from dead process", worker=name, pid=pid, buffer=bname, **got)
            self.reclaimed["lost"] += int(got.get("lost", 0))
            self.reclaimed["redelivered"] += int(got.get("redelivered", 0))
            self.reclaimed["quarantined"] += int(got.get("quarantined", 0))
        if poison:
            await self._quarantine(name, pid, poison)
        how = "exited normally" if exitcode == 0 else (
            f"killed by {_signame(-exitcode)}" if exitcode < 0 else f"exited with code {exitcode}")
        if rec.killed_for_stall:
            how += " (stalled)"
        worker.last_exit = how
        failed = exitcode != 0
        (log.warning if failed else log.info)("process ended", worker=name, index=rec.index, pid=pid, how=how)

        restart = self._wants_restart(worker, failed)
        if restart:
            now = time.monotonic()
            worker.crashes.append(now)
            while worker.crashes and now - worker.crashes[0] > RESTART_WINDOW:
                worker.crashes.popleft()
            if len(worker.crashes) > worker.spec.max_restarts:
                restart = False
                await self._worker_failed(
                    worker, f"{len(worker.crashes) - 1} restarts within {RESTART_WINDOW:.0f} s, then {how}")
            else:
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (len(worker.crashes) - 1))
                worker.restarts += 1
                worker.state = "restarting"
                log.info("restarting process", worker=name, index=rec.index, delay=delay,
                         restarts=worker.restarts)
                rec.restart_handle = self._loop.call_later(delay, self._respawn, worker, rec)
        if not restart:
            rec.done = True
            # a writer that will not come back must not hold its buffers open
            await self._in_thread(self._retire_blocking, worker.spec.sinks, [pid])
            if failed and not worker.failed and not self._aborting and not self._drain_expired:
                await self._worker_failed(worker, how)
            elif not worker.failed and all(p.done for p in worker.processes):
                worker.state = "finished"

    _drain_expired = False

    def _wants_restart(self, worker: WorkerRecord, failed: bool) -> bool:
        if self._aborting or self._drain_expired or worker.failed:
            return False
        policy = worker.spec.restart
        if policy == "never":
            return False
        if failed:
            return True
        if policy == "always":
            # a normal exit before end of stream is restarted; after it, the process is finished
            sources = worker.spec.sources
            if self._stopping or not sources:
                return False
            return not all(self.buffers[s].ended for s in sources)
        return False

    def _respawn(self, worker: WorkerRecord, rec: ProcessRecord) -> None:
        rec.restart_handle = None
        if self._aborting or self.done or self._drain_expired or worker.failed:
            rec.done = True
            self._check_done()
            return
        try:
            self._spawn(worker, rec)
            if not worker.failed and all(p.alive or p.done for p in worker.processes):
                worker.state = "running"
        except Exception as exc:
            log.exception("respawn failed", worker=worker.spec.name)
            rec.done = True
            asyncio.ensure_future(self._worker_failed(worker, f"respawn failed: {exc}"))
            self._check_done()

    async def _worker_failed(self, worker: WorkerRecord, why: str) -> None:
        if worker.failed:
            return
        worker.failed = True
        worker.state = "failed"
        name = worker.spec.name
        policy = self.setup.on_worker_failure
        log.error("worker failed", worker=name, why=why, on_worker_failure=policy)
        if self.error is None:
            self.error = f"worker {name} failed: {why}"
        retire = []
        for rec in worker.processes:
            if rec.restart_handle is not None:
                rec.restart_handle.cancel()
                rec.restart_handle = None
                rec.done = True
                if rec.pid:
                    retire.append(rec.pid)
        if retire:
            await self._in_thread(self._retire_blocking, worker.spec.sinks, retire)
        if policy == "continue" and worker.spec.sources:
            # nobody will read for this worker again: stop keeping events for its group
            await self._in_thread(self._detach_blocking, worker)
        if policy == "stop":
            await self.stop(f"worker {name} failed")
        self._check_done()

    def _detach_blocking(self, worker: WorkerRecord) -> None:
        name = worker.spec.name
        for bname in worker.spec.sources:
            buf = self.buffers.get(bname)
            if buf is None:
                continue
            try:
                groups = buf.counters().get("groups", {})
                dropped = int((groups.get(name) or {}).get("pending", 0))
                buf.detach_group(name)
                if dropped:
                    self.reclaimed["lost"] += dropped
                    log.error("events of a failed reader group dropped", worker=name, buffer=bname,
                              lost=dropped)
            except Exception:
                log.exception("detach_group failed", buffer=bname, worker=name)

    # ------------------------------------------------------------------ stop / abort
    async def stop(self, reason: str) -> None:
        """Graceful: end the root buffers, let the graph drain, kill stragglers after drain_timeout."""
        if self.done or self._stopping:
            return
        self._stopping = True
        self.stop_reason = reason
        self.state = "stopping"
        timeout = float(self.setup.drain_timeout)
        log.info("run stopping", reason=reason, drain_timeout=timeout)
        self._drain_handle = self._loop.call_later(timeout, self._drain_timeout)
        await self._in_thread(self._end_buffers_blocking, self.roots)
        self._check_done()

    def _end_buffers_blocking(self, names: list[str]) -> None:
        for name in names:
            buf = self.buffers.get(name)
            if buf is None:
                continue
            try:
                buf.resume()
                buf.shutdown()
            except Exception:
                log.exception("ending buffer failed", buffer=name)

    def _drain_timeout(self) -> None:
        if self.done:
            return
        self._drain_expired = True
        stragglers = [r for r in self._all_processes() if r.alive]
        log.error("drain timeout: killing stragglers", processes=[f"{r.worker}[{r.pid}]" for r in stragglers])
        self._kill_all()
        self._cancel_restarts()
        self._check_done()

    async def abort(self, reason: str) -> None:
        if self.done:
            return
        self._aborting = True
        self._stopping = True
        self.stop_reason = self.stop_reason or reason
        self.state = "stopping"
        log.warning("run aborted", reason=reason)
        self._cancel_restarts()
        self._kill_all()
        await self._in_thread(self._end_buffers_blocking, list(self.buffers))
        self._check_done()

    def _cancel_restarts(self) -> None:
        for rec in self._all_processes():
            if rec.restart_handle is not None:
                rec.restart_handle.cancel()
                rec.restart_handle = None
                rec.done = True

    def _kill_all(self) -> None:
        for rec in self._all_processes():
            if rec.alive and rec.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ completion
    def _check_done(self) -> None:
        if self.done or self._finishing or (self.state == "starting" and not self._stopping):
            return
        if self._exits_in_progress:
            return
        procs = self._all_processes()
        if any(p.alive or p.restart_handle is not None for p in procs):
            return
        self._finishing = True
        task = asyncio.create_task(self._finish("failed" if self.error else "finished"), name="finish")
        self._exit_tasks.add(task)
        task.add_done_callback(self._exit_tasks.discard)

    async def _finish(self, state: str) -> None:
        if self._done.is_set():
            return
        self._finishing = True
        for timer in self._timers:
            timer.cancel()
        if self._drain_handle is not None:
            self._drain_handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.buffers:
            await self._in_thread(self._sample_stats_blocking)
            self._write_stats_rows()
        # events still in buffers now will never be read: report them as lost
        self.lost_at_end = sum(int(s.get("pending", 0)) for s in self._stats.values())
        if self.lost_at_end:
            log.error("events left unread in buffers are lost", lost=self.lost_at_end,
                      per_buffer={n: s.get("pending") for n, s in self._stats.items() if s.get("pending")})
        await asyncio.to_thread(self._close_blocking)
        for worker in self.workers.values():
            if worker.state != "failed":
                worker.state = "stopped" if self._aborting else "finished"
        self.state = state
        self.ended_at = time.time()
        self.final = self.final_summary()
        log.info("run ended", **{k: v for k, v in self.final.items() if k != "events"},
                 events=self.final["events"])
        logsetup.detach_run_log()
        self._done.set()
        if self.on_finished is not None:
            with contextlib.suppress(Exception):
                self.on_finished(self)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a buffer call in a thread; None once the buffers are closed.

        Closing waits for calls in flight, so no thread ever touches an unmapped buffer.
        """

        def guarded() -> Any:
            with self._buffer_calls:
                if self._buffers_closed:
                    return None
                self._inflight += 1
            try:
                return fn(*args)
            finally:
                with self._buffer_calls:
                    self._inflight -= 1
                    self._buffer_calls.notify_all()

        return await asyncio.to_thread(guarded)

    def _close_blocking(self) -> None:
        with self._buffer_calls:
            self._buffers_closed = True
            if not self._buffer_calls.wait_for(lambda: self._inflight == 0, timeout=30):
                log.error("buffer calls still running at close; leaving the buffers mapped")
                return
        for name, buf in self.buffers.items():
            try:
                buf.close()
            except Exception:
                log.exception("closing buffer failed", buffer=name)
        if self.heartbeats is not None:
            with contextlib.suppress(Exception):
                self.heartbeats.close()
        if self._stats_file is not None:
            with contextlib.suppress(Exception):
                self._stats_file.close()

    def final_summary(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "directory": str(self.directory) if self.directory else None,
            "reason": self.stop_reason,
            "error": self.error,
            "events": {n: int(s.get("event_count", 0)) for n, s in self._stats.items()},
            "lost": self.total_lost(),
            "lost_in_buffers": self.lost_at_end,
            "lost_in_crashes": self.reclaimed["lost"],
            "redelivered": self.reclaimed["redelivered"],
            "quarantined": self.reclaimed["quarantined"],
            "restarts": sum(w.restarts for w in self.workers.values()),
        }

    def total_lost(self) -> int:
        return self.reclaimed["lost"] + self.lost_at_end

    # ------------------------------------------------------------------ pause / resume
    def _buffer_names(self, names: list[str] | None) -> list[str]:
        names = names or self.roots
        unknown = [n for n in names if n not in self.buffers]
        if unknown:
            raise CommandError(f"unknown buffer(s): {', '.join(unknown)}; known: {', '.join(self.buffers)}")
        return names

    async def pause(self, names: list[str] | None) -> list[str]:
        return await self._set_paused(names, True)

    async def resume(self, names: list[str] | None) -> list[str]:
        return await self._set_paused(names, False)

    async def _set_paused(self, names: list[str] | None, paused: bool) -> list[str]:
        if self._stopping or self.done:
            raise CommandError("the run is stopping")
        names = self._buffer_names(names)

        def apply() -> None:
            for n in names:
                (self.buffers[n].pause if paused else self.buffers[n].resume)()

        await self._in_thread(apply)
        self._pause_generation += 1
        for n in names:
            (self._paused.add if paused else self._paused.discard)(n)
            self._counters.setdefault(n, {})["paused"] = paused
        if self.state in ("running", "paused"):
            self.state = "paused" if any(n in self._paused for n in self.roots) else "running"
        log.info("buffers paused" if paused else "buffers resumed", buffers=names)
        return names

    # ------------------------------------------------------------------ periodic work
    async def _limit_loop(self) -> None:
        """Every 0.1 s: fresh counters (in a thread), run limits, stalled processes."""
        while True:
            await asyncio.sleep(LIMIT_CHECK_INTERVAL)
            generation = self._pause_generation
            sample = await self._in_thread(self._sample_counters_blocking)
            if sample and generation == self._pause_generation:  # not older than a pause/resume
                self._counters = sample
            if self.max_events and self.roots and not self._stopping:
                taken = min(int(self._counters.get(n, {}).get("events", 0)) for n in self.roots)
                if taken >= self.max_events:
                    self._limit_reached(f"max_events={self.max_events} reached")
            self._check_stalls()

    def _sample_counters_blocking(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, buf in self.buffers.items():
            try:
                out[name] = buf.counters()
            except Exception:
                log.exception("counters failed", buffer=name)
        return out

    def _limit_reached(self, why: str) -> None:
        if not self._stopping and not self.done:
            log.info("run limit reached", limit=why)
            asyncio.ensure_future(self.stop(why))

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            timeout = worker.spec.stall_timeout
            if not timeout:
                continue
            if any(n in self._paused for n in worker.spec.sinks):
                continue  # writes into a paused buffer do not beat (data path); not a stall
            for rec in worker.processes:
                if not rec.alive or rec.killed_for_stall or now - rec.started < timeout:
                    continue
                beat = self.heartbeats.read(rec.row)
                if beat.age_seconds > timeout:
                    log.error("process stalled: killing it", worker=worker.spec.name, pid=rec.pid,
                              heartbeat_age=round(beat.age_seconds, 2), stall_timeout=timeout)
                    rec.killed_for_stall = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rec.pid, signal.SIGKILL)

    async def _stats_loop(self) -> None:
        interval = max(0.05, float(self.setup.stats_interval))
        while True:
            await asyncio.sleep(interval)
            await self._in_thread(self._sample_stats_blocking)
            self._write_stats_rows()
            self._sample_cpu()

    def _sample_stats_blocking(self) -> None:
        now = time.time()
        rows = []
        for name, buf in self.buffers.items():
            try:
                stats = dict(buf.get_stats())
            except Exception:
                log.exception("get_stats failed", buffer=name)
                continue
            self._stats[name] = stats
            rows.append([round(now, 3), name, *(stats.get(k) for k in STATS_FIELDS[2:])])
        self._pending_rows.extend(rows)

    def _write_stats_rows(self) -> None:
        rows, self._pending_rows = self._pending_rows, []
        if rows and self._stats_writer is not None:
            try:
                self._stats_writer.writerows(rows)
                self._stats_file.flush()
            except (OSError, ValueError) as exc:
                log.warning("stats.csv write failed", error=str(exc))

    def _sample_cpu(self) -> None:
        now = time.monotonic()
        for rec in self._all_processes():
            if not rec.alive or not rec.pid:
                continue
            cpu = _cpu_seconds(rec.pid)
            if cpu is None:
                continue
            if rec.cpu_last is not None:
                dt = now - rec.cpu_last[0]
                if dt > 0:
                    rec.cpu_percent = 100.0 * (cpu - rec.cpu_last[1]) / dt
            rec.cpu_last = (now, cpu)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        now = time.time()
        run = {
            "directory": str(self.directory) if self.directory else None,
            "setup": str(self.setup.path),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "uptime": round((self.ended_at or now) - self.started_at, 3),
            "stop_reason": self.stop_reason,
            "error": self.error,
            "limits": {"max_events": self.max_events, "max_seconds": self.max_seconds},
            "roots": list(self.roots),
            "lost": self.total_lost(),
            "lost_in_buffers": self.lost_at_end,
            "lost_in_crashes": self.reclaimed["lost"],
            "redelivered": self.reclaimed["redelivered"],
            "quarantined": self.reclaimed["quarantined"],
        }
        buffers: dict[str, Any] = {}
        for name in self.setup.buffers:
            entry = dict(self._stats.get(name) or {})
            fresh = self._counters.get(name)
            if not self.done and fresh:
                entry.update({
                    "event_count": fresh.get("events", entry.get("event_count", 0)),
                    "paused_count": fresh.get("paused_count", entry.get("paused_count", 0)),
                    "paused": bool(fresh.get("paused", False)),
                    "ended": bool(fresh.get("ended", False)),
                    "flush_event_received": bool(fresh.get("ended", False)),
                    "lost": fresh.get("lost", entry.get("lost", 0)),
                    "redelivered": fresh.get("redelivered", entry.get("redelivered", 0)),
                    "quarantined": fresh.get("quarantined", entry.get("quarantined", 0)),
                    "pending": fresh.get("pending", entry.get("pending", 0)),
                    "abandoned": fresh.get("abandoned", entry.get("abandoned", 0)),
                    "rejected": fresh.get("rejected", entry.get("rejected", 0)),
                    "filled_slots": (self.setup.buffers[name].slot_count - fresh.get("free", 0))
                    / self.setup.buffers[name].slot_count,
                    "empty_slots": fresh.get("free", 0) / self.setup.buffers[name].slot_count,
                })
            for key, default in (("event_count", 0), ("filled_slots", 0.0), ("empty_slots", 1.0),
                                 ("flush_event_received", False), ("rate", 0.0),
                                 ("average_deadtime", 0.0), ("paused_count", 0), ("paused", False),
                                 ("lost", 0), ("redelivered", 0), ("ended", False), ("pending", 0)):
                entry.setdefault(key, default)
            entry["root"] = name in self.roots
            buffers[name] = entry
        workers: dict[str, Any] = {}
        mono = time.monotonic()
        for name, w in self.workers.items():
            procs = []
            for rec in w.processes:
                age = None
                if rec.alive and self.heartbeats is not None and not self.done:
                    with contextlib.suppress(Exception):
                        age = round(self.heartbeats.read(rec.row).age_seconds, 3)
                procs.append({
                    "index": rec.index, "pid": rec.pid, "alive": rec.alive, "exitcode": rec.exitcode,
                    "heartbeat_age": age, "cpu": round(rec.cpu_percent, 1),
                    "uptime": round(mono - rec.started, 3) if rec.alive else None,
                    "restart_pending": rec.restart_handle is not None,
                })
            workers[name] = {
                "state": w.state, "restarts": w.restarts, "configured": w.spec.number_of_processes,
                "alive": sum(1 for p in procs if p["alive"]), "restart_policy": w.spec.restart,
                "last_exit": w.last_exit, "processes": procs,
            }
        return {"state": self.state, "run": run, "buffers": buffers, "workers": workers}

    def summary_line(self) -> str:
        if self.done:
            return f"{self.state}: {self.directory} lost={self.total_lost()}"
        parts = [self.state]
        for name in self.roots:
            stats = self._stats.get(name) or {}
            parts.append(f"{name} {int(stats.get('event_count', 0))} ev {float(stats.get('rate', 0)):.0f}/s")
        return ", ".join(parts)

    # ------------------------------------------------------------------ logs
    async def read_logs(self, worker: str | None, offsets: dict[str, Any], max_bytes: int) -> dict[str, Any]:
        if self.directory is None:
            raise CommandError("the run has no directory")
        if worker is not None and worker not in self.setup.workers:
            raise CommandError(f"unknown worker {worker!r}; known: {', '.join(self.setup.workers)}")
        names = [worker] if worker else list(self.setup.workers)
        max_bytes = max(1024, min(int(max_bytes), 4 * 1024 * 1024))
        logs_dir = self.directory / "logs"

        def read_all() -> list[dict[str, Any]]:
            chunks = []
            for name in names:
                path = logs_dir / f"{name}.log"
                offset = int(offsets.get(name, 0) or 0)
                text = ""
                try:
                    with open(path, "rb") as fh:
                        fh.seek(offset)
                        data = fh.read(max_bytes)
                    # do not cut a line (or a UTF-8 sequence) in half
                    if len(data) == max_bytes and b"\n" in data:
                        data = data[: data.rindex(b"\n") + 1]
                    offset += len(data)
                    text = data.decode("utf-8", "replace")
                except FileNotFoundError:
                    pass
                chunks.append({"name": name, "path": str(path), "offset": offset, "text": text})
            return chunks

        return {"files": await asyncio.to_thread(read_all), "run_done": self.done}


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[11], fields[12] = utime, stime (the 14th, 15th of the whole line)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
