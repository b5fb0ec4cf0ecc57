"""A worker process that cannot even start: its exit code and its one-line reason.

When a worker process cannot load its function (the user's file raises or exits
at import, the name is missing) or its template refuses the setup (a Filter with
no sinks), restarting it cannot help. The process then writes the reason to
``RUN_DIR/logs/WORKER.setup-failure``, logs it, and exits with
:data:`EXIT_SETUP_FAILED`; the supervisor treats that as a start failure, not a
crash, and shows the reason in its status.

A process that never gets to write its reason (it calls ``os._exit``, is
killed, or hangs while importing) is told apart by its heartbeat stage: the
supervisor then writes the reason to the same file itself ("exited with code 3
while importing funcs.py", "stuck importing funcs.py for 60 s").
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SetupError

__all__ = ["EXIT_SETUP_FAILED", "describe_setup_failure", "read_setup_failure",
           "setup_failure_path", "write_setup_failure"]

#: exit code of a worker process that failed to set up (EX_CONFIG of sysexits.h)
EXIT_SETUP_FAILED = 78
#: the longest reason kept (a user's exception message may be huge)
MAX_REASON_CHARS = 2000


def setup_failure_path(run_dir: Path, worker: str) -> Path:
    """Where the reason of ``worker``'s setup failure is written."""
    return Path(run_dir) / "logs" / f"{worker}.setup-failure"


def describe_setup_failure(err: BaseException) -> str:
    """One line: the SetupError's message and problems, or ``Type: message``."""
    if isinstance(err, SetupError):
        text = "; ".join([err.message, *err.problems])
    else:
        text = f"{type(err).__name__}: {err}"
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 3] + "..."


def write_setup_failure(run_dir: Path, worker: str, reason: str) -> None:
    """Record ``reason`` for the supervisor (atomically; several processes may race)."""
    path = setup_failure_path(run_dir, worker)
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        temporary.write_text(reason + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass  # the log line still says it


def read_setup_failure(run_dir: Path | None, worker: str) -> str | None:
    """The reason a process of ``worker`` gave for failing to set up, or None."""
    if run_dir is None:
        return None
    try:
        with open(setup_failure_path(run_dir, worker), encoding="utf-8", errors="replace") as fh:
            return fh.read(MAX_REASON_CHARS + 1).strip() or None
    except OSError:
        return None
