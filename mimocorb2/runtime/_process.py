"""Inside a worker process: from the launch description to the user's function."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..datapath import heartbeat
from ..diskfull import describe as describe_disk_full
from ..diskfull import find_disk_full
from ._forkserver import forkserver_pid, worker_context
from ._launch import WorkerLaunch
from ._setup_failure import EXIT_SETUP_FAILED, describe_setup_failure, write_setup_failure

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["EXIT_SETUP_FAILED", "spawn_worker", "child_main", "run_worker",
           "set_parent_death_signal"]

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 70


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def spawn_worker(launch: WorkerLaunch) -> multiprocessing.process.BaseProcess:
    """Start one worker process, forked from the warm forkserver (see ``_forkserver``), and return it.

    Call it from the main thread: the forkserver's life is tied to the thread that starts it.
    """
    context = worker_context()
    launch.parent_pid = (forkserver_pid() if context.get_start_method() == "forkserver" else None) or os.getpid()
    launch.environment = dict(os.environ)
    process = context.Process(target=child_main, args=(launch,), name=launch.process_name, daemon=False)
    process.start()
    return process


def child_main(launch: WorkerLaunch) -> None:
    """Entry point of a worker process: never outlive the parent (the forkserver or the supervisor), then run."""
    set_parent_death_signal()
    if os.getppid() != launch.parent_pid:  # the parent died before the signal was armed
        os._exit(EXIT_PARENT_GONE)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if launch.environment is not None:  # the starter's environment now, as with spawn
        os.environ.clear()
        os.environ.update(launch.environment)
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # only the daemon talks to systemd
        os.environ.pop(key, None)
    code = run_worker(launch)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def run_worker(launch: WorkerLaunch) -> int:
    """Logging, heartbeat, the worker's function; returns the process's exit code.

    End of stream is owned here: a normal return flushes the worker's sinks
    (counted once per process); templates and prebuilt functions running under
    this runner never flush. A failure does not flush: the parent decides
    whether the process is restarted or retired, and retiring counts its end
    of stream. A function that cannot be loaded, or a SetupError (a template
    refusing its buffers or config), returns EXIT_SETUP_FAILED: restarting
    would not help. The heartbeat row's stage tells the supervisor how far the
    process got: LOADING from :func:`heartbeat.attach` until the function is
    called (RUNNING); an exit before that is a setup failure whatever its code.
    """
    from .. import logsetup
    from ..errors import SetupError
    from ..setup import resolve_function

    worker = launch.worker
    console = _keep_console()  # the parent's stderr, before logging takes fd 2 over
    logsetup.configure_worker_logging(launch.run_dir / "logs" / f"{worker.name}.log", worker.name, os.getpid())
    if launch.heartbeats is not None:  # stage LOADING: the supervisor shows "importing FILE for N s"
        heartbeat.attach(launch.heartbeats, launch.row)
    import structlog

    log = structlog.get_logger("mimocorb2.worker")
    log.info("loading the worker's function", function=worker.function,
             file=str(worker.file) if worker.file else None)
    try:
        function = resolve_function(worker)  # the user's file is imported here, never earlier
    except BaseException as err:  # noqa: B036 - user code at import may raise anything
        return _setup_failed(launch, log, "cannot load the worker's function", err)
    try:
        buffer_io = make_buffer_io(launch)
        log.info("worker process started", function=worker.function, index=launch.index)
        heartbeat.enter_stage(heartbeat.Stage.RUNNING)  # from here on an exit is a crash, not a setup failure
        function(buffer_io)
    except SetupError as err:
        return _setup_failed(launch, log, "the worker refused its setup", err)
    except BaseException as exc:
        full = find_disk_full(exc)
        if full is None:
            log.exception("worker function failed")
        else:
            _report_disk_full(log, console, launch, full)
        return 1
    for name in worker.sinks:
        launch.buffers[name].send_flush_event()
    log.info("worker process finished")
    return 0


def _setup_failed(launch: WorkerLaunch, log: Any, what: str, err: BaseException) -> int:
    """Log and record one clear line about a failed start; the exit code saying so."""
    worker = launch.worker
    reason = describe_setup_failure(err)
    write_setup_failure(launch.run_dir, worker.name, reason)
    log.error(what, file=str(worker.file) if worker.file else None, function=worker.function,
              error=reason)
    return EXIT_SETUP_FAILED


def _keep_console() -> int | None:
    """A private copy of this process's stderr descriptor (the terminal or the journal)."""
    try:
        return os.dup(2)
    except OSError:
        return None


def _report_disk_full(log: Any, console: int | None, launch: WorkerLaunch, error: OSError) -> None:
    """One clear line, no traceback: to the worker's log (if it still fits) and to the console."""
    line = f"worker '{launch.worker.name}' (pid {os.getpid()}): {describe_disk_full(error, launch.run_dir)}; stopping"
    log.error(line)
    if console is not None:
        try:
            os.write(console, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass


def make_buffer_io(launch: WorkerLaunch) -> "BufferIO":
    """The BufferIO of one process: readers join the group named after the worker."""
    from ..mimo_buffer import BufferObserver, BufferReader, BufferWriter
    from ..mimo_worker import BufferIO, StreamEnd

    worker, buffers = launch.worker, launch.buffers
    return BufferIO(
        worker.name,
        [BufferReader(buffers[n], group=worker.name) for n in worker.sources],
        [BufferWriter(buffers[n]) for n in worker.sinks],
        [BufferObserver(buffers[n]) for n in worker.observes],
        worker.config,
        launch.setup_dir,
        launch.run_dir,
        process_index=launch.index,
        number_of_processes=worker.number_of_processes,
        stream_end=StreamEnd.BY_RUNNER,
    )
