"""The foreground runner behind ``mimocorb2 run SETUP.yaml``.

One run, in the terminal, no restarts: validate, create the run directory and
the buffers, start every worker's processes, then wait until the end of stream
has propagated through the graph and every process has ended.

Stopping: the first Ctrl-C (or a run limit) ends the *root* buffers, those
written by importers; importers notice and stop, and the graph drains
naturally. A second Ctrl-C aborts: every process is terminated.

A process that fails is not restarted here (that is the daemon's job): its
slots are reclaimed, it is retired as a writer so its sinks can still end, and
when no process of its worker is left its reader groups are detached so the
writers upstream are not blocked by a reader that will never come.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from ..datapath.heartbeat import HeartbeatTable
from ..mimo_buffer import mimoBuffer
from ._launch import WorkerLaunch, build_buffers, launches_for, root_buffers
from ._process import spawn_worker
from ._forkserver import start_worker_server
from ._quarantine import save_quarantined

__all__ = ["Runner", "RunReport"]

_TICK = 0.2  # seconds between checks of limits and signals
_KILL_GRACE = 3.0


@dataclass
class RunReport:
    """What a finished run tells its caller."""

    run_dir: Path
    event_counts: dict[str, int]
    stats: dict[str, dict[str, Any]]
    failed_workers: dict[str, list[int]] = field(default_factory=dict)  # worker -> exit codes
    aborted: bool = False
    stop_reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when every process ended normally and nothing was aborted."""
        return not self.failed_workers and not self.aborted


class Runner:
    """Run one validated setup in the foreground (see the module docstring)."""

    def __init__(
        self,
        setup: Any,
        *,
        max_events: int | None = None,
        max_seconds: float | None = None,
        run_dir: Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.setup = setup
        self.max_events = max_events if max_events is not None else setup.run_limits.max_events
        self.max_seconds = max_seconds if max_seconds is not None else setup.run_limits.max_seconds
        self.run_dir = run_dir
        self.echo = echo or (lambda line: None)
        self._interrupts = 0
        self._stop_reason: str | None = None

    # ------------------------------------------------------------ lifecycle
    def run(self) -> RunReport:
        """Start, supervise until everything ended, clean up; return the report."""
        from ..setup import create_run_directory

        start_worker_server()  # warms up while the run directory and the buffers are made
        run_dir = self.run_dir or create_run_directory(self.setup)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        buffers = build_buffers(self.setup)
        launches = launches_for(self.setup, buffers, run_dir, None)
        heartbeats = HeartbeatTable(len(launches))
        for launch in launches:
            launch.heartbeats = heartbeats
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        previous_term = signal.signal(signal.SIGTERM, self._on_interrupt)
        try:
            failed, aborted = self._supervise(buffers, launches)
            stats = {name: buf.get_stats() for name, buf in buffers.items()}
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
            for buf in buffers.values():
                buf.close()
            heartbeats.close()
        counts = {name: s["event_count"] for name, s in stats.items()}
        return RunReport(run_dir, counts, stats, failed, aborted, self._stop_reason)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._stop_reason is None:
            self._stop_reason = "interrupted" if signum == signal.SIGINT else "terminated"

    # ------------------------------------------------------------ supervision
    def _supervise(self, buffers: dict[str, mimoBuffer], launches: list[WorkerLaunch]) -> tuple[dict[str, list[int]], bool]:
        running: dict[Any, tuple[Any, WorkerLaunch]] = {}
        for launch in launches:
            process = spawn_worker(launch)
            running[process.sentinel] = (process, launch)
            self.echo(f"started {launch.process_name} (pid {process.pid})")
        alive_per_worker = {w: self.setup.workers[w].number_of_processes for w in self.setup.workers}
        roots = root_buffers(self.setup)
        if self.max_events is not None:
            for name in roots:  # exact: the data path rejects writes past the limit
                buffers[name].set_event_limit(self.max_events)
        failed: dict[str, list[int]] = {}
        started = time.monotonic()
        stopping = False
        all_ended_at: float | None = None
        while running:
            for sentinel in wait(list(running), timeout=_TICK):
                process, launch = running.pop(sentinel)
                process.join()
                self._account_exit(process, launch, buffers, alive_per_worker, failed)
            if self._interrupts >= 2:
                self.echo("second interrupt: aborting")
                self._terminate([p for p, _ in running.values()])
                return failed, True
            if not stopping and self._limit_reached(buffers, roots, started):
                stopping = True
                self.echo(f"stopping ({self._stop_reason}): ending root buffers {roots}")
                for name in roots:
                    buffers[name].shutdown()
            if running and all(b.ended for b in buffers.values()):
                all_ended_at = all_ended_at or time.monotonic()
                if time.monotonic() - all_ended_at > self.setup.drain_timeout:
                    names = sorted(launch.process_name for _, launch in running.values())
                    self.echo(f"every buffer ended but {names} did not exit: terminating them")
                    self._terminate([p for p, _ in running.values()])
                    for process, launch in running.values():
                        if launch.worker.sinks or launch.worker.sources:
                            # it held up the end of the run; a pure observer is just told to go
                            failed.setdefault(launch.worker.name, []).append(process.exitcode)
                    running.clear()
        return failed, False

    def _limit_reached(self, buffers: dict[str, mimoBuffer], roots: list[str], started: float) -> bool:
        if self._interrupts:
            return True
        if self.max_seconds is not None and time.monotonic() - started >= self.max_seconds:
            self._stop_reason = f"max_seconds={self.max_seconds}"
            return True
        if self.max_events is not None and roots and all(buffers[name].ended for name in roots):
            if any(buffers[name].get_stats()["event_count"] >= self.max_events for name in roots):
                self._stop_reason = f"max_events={self.max_events}"
                return True
        return False

    def _account_exit(
        self,
        process: Any,
        launch: WorkerLaunch,
        buffers: dict[str, mimoBuffer],
        alive_per_worker: dict[str, int],
        failed: dict[str, list[int]],
    ) -> None:
        """Give back what a finished process held and keep end of stream counting right."""
        worker = launch.worker
        alive_per_worker[worker.name] -= 1
        for name in launch.buffers:
            result = buffers[name].reclaim(process.pid)
            poison = result.pop("quarantined_events")
            if result["lost"] or result["redelivered"] or poison:
                self.echo(f"{launch.process_name}: reclaimed {result} in buffer '{name}'")
            for event in poison:
                self.echo(f"poison event {event.counter} of buffer '{name}' set aside (group '{event.group}')")
            if poison:
                try:
                    save_quarantined(launch.run_dir, poison)
                except OSError as exc:
                    self.echo(f"poison events could not be saved: {exc}")
        for name in worker.sinks:
            buffers[name].retire_writer(process.pid)
        if process.exitcode != 0:
            failed.setdefault(worker.name, []).append(process.exitcode)
            log = launch.run_dir / "logs" / f"{worker.name}.log"
            self.echo(f"worker '{worker.name}' process {launch.index} (pid {process.pid}) failed with exit code {process.exitcode}; see {log}")
            if alive_per_worker[worker.name] == 0:
                for name in worker.sources:
                    buffers[name].detach_group(worker.name)

    @staticmethod
    def _terminate(processes: list[Any]) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + _KILL_GRACE
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0.0))
            if process.is_alive():
                process.kill()
                process.join()
