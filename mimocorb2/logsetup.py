"""structlog configuration shared by the daemon and the worker processes.

- Daemon: every event goes to stderr, one line per event (console renderer on a
  terminal, JSON otherwise so that journald gets clean lines; the foreground
  ``mimocorb2 run`` always gets the console form, colored on a terminal), and while a run
  is active also as a JSON line into ``RUN_DIR/daemon.log``
  (:func:`attach_run_log`). Records pass through a queue to a writer thread so
  that a slow disk never stalls the daemon's event loop.
- Worker processes (:func:`configure_worker_logging`): plain text lines tagged
  with worker and pid into ``RUN_DIR/logs/WORKER.log``; the process's stdout and
  stderr are redirected to the same file (opened ``O_APPEND`` so the processes of
  one worker never overwrite each other's lines).

Python's standard ``logging`` is the transport, so records of libraries and of
users' own ``logging`` calls get the same treatment as structlog events.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import threading
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = [
    "configure_daemon_logging",
    "attach_run_log",
    "detach_run_log",
    "configure_worker_logging",
    "shutdown_logging",
]

_TIMESTAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True)


def _capture_exception(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``exc_info=True`` now, in the logging thread, and add ``error="Type: message"``.

    The daemon's records are formatted in a writer thread, where ``sys.exc_info()``
    is empty: without this, ``log.exception`` lost the type, message and traceback.
    """
    exc_info = event_dict.get("exc_info")
    if not exc_info:
        event_dict.pop("exc_info", None)
        return event_dict
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    if exc_info[0] is None:
        event_dict.pop("exc_info", None)
        return event_dict
    event_dict["exc_info"] = exc_info
    event_dict.setdefault("error", f"{exc_info[0].__name__}: {exc_info[1]}")
    return event_dict


# processors applied to structlog events before they are handed to logging
_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _TIMESTAMPER,
    _capture_exception,
]

_listener: logging.handlers.QueueListener | None = None
_queue_handler: logging.handlers.QueueHandler | None = None
_sinks: list[logging.Handler] = []


def _formatter(renderer: Any) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _TIMESTAMPER,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def _json_renderer() -> Any:
    return structlog.processors.JSONRenderer(default=str)


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            *_PRE_CHAIN,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _level(level: int | str) -> int:
    if isinstance(level, str):
        return logging.getLevelName(level.upper()) if not level.isdigit() else int(level)
    return level


#: the supervisor's notes on its own timing (a busy machine, a slow fork): its user cannot
#: act on them, and on a terminal they read like faults of the run
LOOP_LATE = "event loop was late"
SLOW_SPAWN = "spawning a process held the event loop"
#: what the run engine also says in its own words on a foreground run's terminal (echo)
PROCESS_ENDED = "process ended"
WORKER_FAILED = "worker failed"
#: events a foreground run (``mimocorb2 run``) keeps off its terminal: they still go to
#: the run's daemon.log, and a daemon logs them to stderr (the journal) as usual
FOREGROUND_HIDDEN = frozenset({LOOP_LATE, SLOW_SPAWN, PROCESS_ENDED, WORKER_FAILED})


def _event_filter(hidden: frozenset[str]) -> Any:
    """A logging filter refusing the records of the events in ``hidden``."""
    def keep(record: logging.LogRecord) -> bool:
        event = record.msg.get("event") if isinstance(record.msg, dict) else record.msg
        return event not in hidden
    return keep


def configure_daemon_logging(level: int | str = "INFO", stream: TextIO | None = None,
                             console: bool | None = None, stderr_level: int | str | None = None,
                             stderr_hides: frozenset[str] = frozenset()) -> None:
    """stderr sink for the daemon (and the foreground runner); call once at startup.

    ``stderr_level`` keeps the terminal quieter than the run's ``daemon.log``
    (the foreground runner shows warnings and errors only). ``stderr_hides``: events kept
    off stderr (the foreground runner passes :data:`FOREGROUND_HIDDEN`); they still go to
    ``daemon.log``. ``console``: readable lines instead of JSON (default: when ``stream`` is
    a terminal); colored only on a terminal.
    """
    global _listener, _queue_handler, _run_handler
    shutdown_logging()
    _configure_structlog()
    stream = stream or sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    if console is None:
        console = terminal
    renderer = structlog.dev.ConsoleRenderer(colors=terminal) if console else _json_renderer()
    stderr_handler = logging.StreamHandler(stream)
    stderr_handler.setFormatter(_formatter(renderer))
    stderr_handler.addFilter(lambda record: not hasattr(record, _SWITCH))
    if stderr_level is not None:
        stderr_handler.setLevel(_level(stderr_level))
    if stderr_hides:
        stderr_handler.addFilter(_event_filter(stderr_hides))
    _run_handler = _RunLogHandler()
    _run_handler.setFormatter(_formatter(_json_renderer()))
    _sinks[:] = [stderr_handler, _run_handler]
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _queue_handler = _PassThroughQueueHandler(q)
    _listener = logging.handlers.QueueListener(q, stderr_handler, _run_handler, respect_handler_level=True)
    _listener.start()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_queue_handler)
    root.setLevel(_level(level))
    atexit.register(shutdown_logging)


_SWITCH = "_mimocorb2_run_log"
_run_handler: "_RunLogHandler | None" = None


class _PassThroughQueueHandler(logging.handlers.QueueHandler):
    """Keep the record as it is (its msg is structlog's event dict) for the formatters."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _RunLogHandler(logging.Handler):
    """JSON lines into the current run's daemon.log; switched by records passing the queue,
    so that every event logged before a switch still lands in the right file."""

    def __init__(self) -> None:
        super().__init__()
        self._stream: TextIO | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, _SWITCH):
            self._switch(getattr(record, _SWITCH))
            done = getattr(record, "_mimocorb2_switched", None)
            if done is not None:
                done.set()
            return
        if self._stream is None:
            return
        try:
            self._stream.write(self.format(record) + "\n")
            self._stream.flush()
        except OSError as exc:  # e.g. the disk is full: say so once, keep the daemon's other logs
            self._suspend(exc)
        except Exception:
            self.handleError(record)

    def _suspend(self, exc: OSError) -> None:
        """Stop writing the run log after a write failed; one line on stderr names the file."""
        name = getattr(self._stream, "name", "daemon.log")
        sys.stderr.write(f"mimocorb2: run log {name} suspended: {exc.strerror or exc}\n")
        stream, self._stream = self._stream, None
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass

    def _switch(self, path: str | None) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except OSError:
                pass
            self._stream = None
        if path:
            try:
                self._stream = open(path, "a", encoding="utf-8")
            except OSError as exc:
                sys.stderr.write(f"mimocorb2: cannot open run log {path}: {exc}\n")

    def close(self) -> None:
        self._switch(None)
        super().close()


def _send_switch(path: str | None, wait: float = 0.0) -> None:
    record = logging.LogRecord("mimocorb2.logsetup", logging.CRITICAL, __file__, 0, "switch", None, None)
    setattr(record, _SWITCH, path)
    switched = threading.Event()
    setattr(record, "_mimocorb2_switched", switched)
    if _queue_handler is not None:
        _queue_handler.enqueue(record)
        if wait > 0:
            switched.wait(wait)
    elif _run_handler is not None:
        _run_handler.handle(record)


def attach_run_log(path: str | os.PathLike[str]) -> None:
    """From now on also write JSON lines into ``path`` (the run's ``daemon.log``)."""
    _send_switch(os.fspath(path))


def detach_run_log(wait: float = 0.0) -> None:
    """Stop writing into the run's daemon.log (after everything logged so far is written).

    With ``wait`` > 0, block up to that many seconds until the file is complete
    and closed (call it in a thread from an event loop).
    """
    _send_switch(None, wait)


def shutdown_logging() -> None:
    """Flush queued records and close files (at daemon exit)."""
    global _listener, _queue_handler, _run_handler
    if _listener is not None:
        try:
            _listener.stop()
        except Exception:
            pass
        _listener = None
    if _queue_handler is not None:
        logging.getLogger().removeHandler(_queue_handler)
        _queue_handler = None
    for handler in _sinks:
        try:
            handler.flush()
        except Exception:
            pass
    if _run_handler is not None:
        _run_handler.close()
        _run_handler = None


def configure_worker_logging(log_file: str | os.PathLike[str], worker: str, pid: int | None = None,
                             level: int | str = "INFO", redirect_std: bool = True) -> None:
    """Logging inside a worker process; call first thing in the worker's entry point.

    Every line carries ``worker=`` and ``pid=``. With ``redirect_std`` the file
    descriptors 1 and 2 are pointed at the same file, so prints and tracebacks of
    user code land there too.
    """
    pid = os.getpid() if pid is None else pid
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    if redirect_std:
        for std in (sys.stdout, sys.stderr):
            try:
                std.flush()
            except Exception:
                pass
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = _TaggedStream(
            open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False), "stdout", worker, pid)
        sys.stderr = _TaggedStream(
            open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False), "stderr", worker, pid)
    stream = open(fd, "a", buffering=1, encoding="utf-8", errors="replace")  # line buffered
    shutdown_logging()
    _configure_structlog()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        _formatter(structlog.dev.ConsoleRenderer(colors=False, pad_event=0))
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    _sinks[:] = [handler]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(worker=worker, pid=pid)
    # records from plain logging (user code) get the tags too
    old_factory = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old_factory(*args, **kwargs)
        record.worker = worker
        record.pid = pid
        return record

    logging.setLogRecordFactory(factory)


class _TaggedStream:
    """sys.stdout / sys.stderr of a worker: each line tagged like a log record.

    Writes below Python (C libraries, the interpreter's last words) reach the
    file descriptor directly and stay untagged.
    """

    def __init__(self, raw: TextIO, name: str, worker: str, pid: int) -> None:
        self._raw = raw
        self._name = name
        self._tag = f" [{name}] pid={pid} worker={worker}\n"
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        if lines:
            stamp = _utc_stamp()
            self._raw.write("".join(f"{stamp} [{self._name:<9}] {line}{self._tag}" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._raw.write(f"{_utc_stamp()} [{self._name:<9}] {self._partial}{self._tag}")
            self._partial = ""
        self._raw.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # fileno, buffer, encoding, ...
        return getattr(self._raw, name)


def _utc_stamp() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
