"""``mimocorb2 run``: the daemon's :class:`~mimocorb2.supervisor.run.Run`, in the terminal.

:func:`run_in_foreground` drives the same Run object as the daemon, in this
process, on its own uvloop event loop: limits, restarts, end of run, drain,
accounting, ``stats.csv``, ``daemon.log`` (the supervisor's JSON log of the
run), worker logs and exit codes mean the same as under ``mimoctl start``.

Two differences, both because a person watches the terminal: a process that
fails is not restarted (the failure is shown at once, and the exit code is 1
naming the worker), and a failed worker does not stop the run (its reader
groups are given up once none of its processes is left, as with
``on_worker_failure: continue``).

Signals: the first Ctrl-C (or SIGTERM) stops the run gracefully (the roots
end, the graph drains); a second one aborts it (every process is killed, what
was in the buffers is counted lost).

The terminal gets one line per notable event (process started, failed,
stopping, drain timeout) unless ``quiet``, and the supervisor's warnings and
errors on stderr.

With ``web``, the daemon's web page serves this run (:mod:`.foreground_web`,
loaded only then): opened before the run starts, closed once it has ended; its
operator address is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimocorb2 import logsetup
from mimocorb2.runtime._echo import LogEcho
from mimocorb2.setup import Setup
from mimocorb2.supervisor.errors import RunError
from mimocorb2.supervisor.loopmeter import LoopMeter
from mimocorb2.supervisor.run import Ending, Phase, Run

__all__ = ["RunError", "RunReport", "run_in_foreground"]


@dataclass
class RunReport:
    """What a finished foreground run tells its caller."""

    run_dir: Path
    event_counts: dict[str, int]
    stats: dict[str, dict[str, Any]]
    failed_workers: dict[str, list[int]] = field(default_factory=dict)  # worker -> exit codes
    aborted: bool = False
    stop_reason: str | None = None
    state: str = Phase.FINISHED.value
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # Run.final_summary()

    @property
    def ok(self) -> bool:
        """True when the run finished, nothing was aborted and no process had to be killed."""
        return not self.failed_workers and not self.aborted and self.state == Phase.FINISHED.value


def run_in_foreground(setup: Setup, *, max_events: int | None = None, max_seconds: float | None = None,
                      run_dir: Path | None = None, echo: Callable[[str], None] | None = None,
                      quiet: bool = False, log_echo: LogEcho | None = None,
                      web: bool | str = False, web_public_url: str | None = None) -> RunReport:
    """Run ``setup`` to its end on a new uvloop loop in this thread (the main thread, for signals).

    ``web``: False, no page; True, the page on 127.0.0.1:8765 (a free port if taken);
    ``"[HOST:]PORT"``, there or a RunError. Its address is printed on stdout even when ``quiet``.
    ``web_public_url``: the page's address behind a reverse proxy (needs ``web``).
    """
    if web_public_url is not None and web is False:
        raise RunError("--web-public-url needs --web")
    import uvloop

    saved = _save_logging()
    logsetup.configure_daemon_logging("INFO", stderr_level="WARNING", console=True,
                                       stderr_hides=logsetup.FOREGROUND_HIDDEN)
    try:
        return uvloop.run(_main(setup, max_events, max_seconds, run_dir, echo or (lambda line: None),
                                log_echo, web, web_public_url))
    finally:
        logsetup.shutdown_logging()
        _restore_logging(saved)


async def _main(setup: Setup, max_events: int | None, max_seconds: float | None, run_dir: Path | None,
                echo: Callable[[str], None], log_echo: LogEcho | None, web: bool | str = False,
                web_public_url: str | None = None) -> RunReport:
    loop = asyncio.get_running_loop()
    # in the terminal a failure is reported at once instead of being restarted, and the
    # rest of the graph runs on (the original mimoCoRB's behaviour); all else is the daemon's
    run = Run(setup, max_events=max_events, max_seconds=max_seconds, directory=run_dir, echo=echo,
              restarts=False, on_worker_failure="continue")
    interrupts = 0
    pending: set[asyncio.Task[None]] = set()

    def on_signal(sig: signal.Signals) -> None:
        nonlocal interrupts
        interrupts += 1
        reason = "interrupted" if sig == signal.SIGINT else "terminated"
        if interrupts == 1:
            task = loop.create_task(run.stop(reason))
        else:
            echo("second interrupt: aborting")
            task = loop.create_task(run.abort(f"second {signal.Signals(sig).name}"))
        pending.add(task)
        task.add_done_callback(pending.discard)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    meter = LoopMeter()  # warns in the run's daemon.log when the loop is late; shown on the page
    meter_task = loop.create_task(meter.run(), name="loop-meter")
    echoing = False
    page = None
    try:
        if web is not False:
            from mimocorb2.supervisor.foreground_web import ForegroundPage

            page = await ForegroundPage.open(run, None if web is True else web,
                                             lambda line: print(line, flush=True), meter, web_public_url)
        await run.start()
        if log_echo is not None and run.directory is not None:
            # the workers' own output (RUN_DIR/logs/*.log), live on the terminal
            log_echo.start(run.directory / "logs")
            echoing = True
        await run.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        meter_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await meter_task
        if page is not None:
            await page.close()
        if echoing:
            assert log_echo is not None
            log_echo.stop()
    return _report(run)


def _report(run: Run) -> RunReport:
    stats = dict(run.sampler.stats) if run.sampler else {}
    failed = {name: list(w.exit_codes) for name, w in run.workers.items() if w.failed}
    for name, w in run.workers.items():  # killed at the drain timeout: it held up the end of the run
        if any(p.killed_for and "drain timeout" in p.killed_for for p in w.processes):
            failed.setdefault(name, list(w.exit_codes))
    return RunReport(
        run_dir=run.directory or Path("."),
        event_counts={n: int(s.get("event_count", 0)) for n, s in stats.items()},
        stats=stats,
        failed_workers=failed,
        aborted=run.ending is Ending.ABORTED,
        stop_reason=run.stop_reason,
        state=run.state,
        error=run.error,
        summary=run.final or {},
    )


def _save_logging() -> tuple[list[logging.Handler], int]:
    root = logging.getLogger()
    return list(root.handlers), root.level


def _restore_logging(saved: tuple[list[logging.Handler], int]) -> None:
    """Give the caller (a test, an embedding program) its logging back."""
    handlers, level = saved
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)

