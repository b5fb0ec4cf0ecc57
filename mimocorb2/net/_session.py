"""The session of an exporting worker: one random id per worker and run, shared by its processes.

Every block and marker an exporter publishes names its session (``Mimo-Session``).
An importing group counts start and end markers per session, so the end markers of
an earlier run of the same setup (still in the stream: archive retention, or a group
that stopped before they reached it) end only that run, never the next one.

The id lives in ``RUN_DIR/nats/<worker>/session``. The first process of the worker
to start creates it; its siblings and any process the supervisor restarts in the same
run read it, so a re-sent block keeps its message id (the server stores it once).

Invariant: the file, once it exists, never changes (it is linked into place whole,
never rewritten), so every process of one worker in one run sees the same id.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["run_session"]

_BYTES = 8  # 16 hex digits: two runs never share a session


def run_session(directory: Path) -> str:
    """The session id in ``directory/session``, created (atomically) by the first caller."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "session"
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    tmp = directory / f".session.{os.getpid()}.tmp"
    tmp.write_text(secrets.token_hex(_BYTES) + "\n")
    try:
        os.link(tmp, path)  # fails if a sibling was first: then its id is the one
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    session = path.read_text().strip()
    if not session:
        raise ValueError(f"{path} is empty: remove it (a new run directory makes a new session)")
    return session
