"""The control socket's wire protocol.

One request per line, one reply per line, both JSON objects encoded in UTF-8 and
terminated by ``\\n``::

    request: {"v": 1, "id": 7, "cmd": "status", "args": {}}
    reply:   {"v": 1, "id": 7, "ok": true, "result": {...}}
    error:   {"v": 1, "id": 7, "ok": false,
              "error": {"code": "refused", "message": "...", "problems": ["..."]}}

A request longer than :data:`MAX_REQUEST_BYTES` (newline included) is answered
with an error of code ``too_large`` and the connection is closed, because the
stream cannot be resynchronised cheaply. Any other bad request gets an error
reply and the connection stays usable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
#: the longest string accepted as a request id
MAX_ID_CHARS = 200
MAX_REQUEST_BYTES = 1024 * 1024  # 1 MiB, including the newline
#: replies may be larger than requests (status of a big graph, log chunks)
MAX_REPLY_BYTES = 64 * 1024 * 1024

#: every command of the protocol with its one-line help: the one list that the server
#: (unknown commands), the daemon's handlers (one per command) and mimoctl's help use
COMMAND_HELP: dict[str, str] = {
    "ping": "check that the daemon answers",
    "start": "start a run of SETUP.yaml",
    "check": "validate a setup file without starting anything",
    "stop": "stop the run gracefully (flush, drain) and wait for it",
    "abort": "kill the run's processes now; events in buffers are counted lost",
    "pause": "pause buffers (default: the root buffers)",
    "resume": "resume buffers (default: the root buffers)",
    "status": "run state, buffers and workers",
    "logs": "show worker logs of the current run",
    "shutdown": "stop the run gracefully, then the daemon exits",
    "ack": "acknowledge alarms (default: all of them)",
    "web": "the web page's address with a viewer (or operator) token",
}
COMMANDS = tuple(COMMAND_HELP)

#: error codes carried in ``error.code``
E_BAD_REQUEST = "bad_request"  # malformed JSON, not an object, wrong field types
E_TOO_LARGE = "too_large"
E_VERSION = "version"
E_UNKNOWN_COMMAND = "unknown_command"
E_REFUSED = "refused"  # valid request the daemon will not carry out now
E_PERMISSION = "permission"
E_BUSY = "busy"  # the daemon has too many connections; the request was not read, retry
E_IDLE = "idle_timeout"  # no request for too long; the daemon closes the connection
E_INTERNAL = "internal"

#: the states a daemon reports in ``status.state``
STATES = ("idle", "starting", "running", "paused", "stopping", "finished", "failed")


class ProtocolError(Exception):
    """A request or reply that does not follow the protocol."""

    def __init__(self, code: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = list(problems or [])


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line. Non-JSON values (paths, numpy scalars) are converted to str / numbers."""
    return (json.dumps(obj, separators=(",", ":"), default=_default) + "\n").encode()


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    # numpy scalars and arrays without importing numpy here
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def make_request(cmd: str, args: dict[str, Any] | None = None, req_id: int = 1) -> dict[str, Any]:
    """A request object for ``cmd``, not yet encoded (see :func:`encode`); ``args`` is copied."""
    return {"v": PROTOCOL_VERSION, "id": req_id, "cmd": cmd, "args": dict(args or {})}


def ok_reply(req_id: Any, result: Any = None) -> dict[str, Any]:
    """A success reply echoing ``req_id``; :func:`encode` converts a ``result`` that is not plain JSON."""
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": True, "result": result}


def error_reply(
    req_id: Any, code: str, message: str, problems: list[str] | None = None
) -> dict[str, Any]:
    """An error reply echoing ``req_id``; ``code`` is one of the ``E_*`` constants.

    ``problems`` (the individual findings, e.g. of a setup check) is sent only when non-empty.
    """
    error: dict[str, Any] = {"code": code, "message": message}
    if problems:
        error["problems"] = list(problems)
    return {"v": PROTOCOL_VERSION, "id": req_id, "ok": False, "error": error}


def parse_request(line: bytes) -> dict[str, Any]:
    """Decode and validate one request line; raise :class:`ProtocolError` if it is not valid."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(E_TOO_LARGE, f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(E_BAD_REQUEST, f"request is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(E_BAD_REQUEST, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(E_BAD_REQUEST, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ProtocolError(E_BAD_REQUEST, f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(E_BAD_REQUEST, "request must be a JSON object")
    version = obj.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # true == 1 is not a version
        raise ProtocolError(
            E_VERSION, f"unsupported protocol version {short_repr(version)}, "
            f"this daemon speaks {PROTOCOL_VERSION}"
        )
    if not is_request_id(obj.get("id")):
        obj.pop("id", None)  # not echoed back
        raise ProtocolError(E_BAD_REQUEST, "'id' must be null, a string of at most "
                            f"{MAX_ID_CHARS} characters or an integer below 2**63")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError(E_BAD_REQUEST, "request needs a string 'cmd'")
    args = obj.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(E_BAD_REQUEST, "'args' must be a JSON object")
    obj["args"] = args
    if cmd not in COMMANDS:
        raise ProtocolError(
            E_UNKNOWN_COMMAND, f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}"
        )
    return obj


def is_request_id(value: Any) -> bool:
    """Whether ``value`` may serve as a request id (echoed back in the reply)."""
    if value is None:
        return True
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return type(value) is int and -(2**63) <= value < 2**63


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length for an error message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def default_socket_path(environ: dict[str, str] | None = None) -> Path:
    """Where the control socket lives when ``--socket`` is not given.

    Order: ``$MIMOCORB2_SOCKET``, ``$RUNTIME_DIRECTORY/control.sock`` (systemd),
    ``$XDG_RUNTIME_DIR/mimocorb2/control.sock``, ``/tmp/mimocorb2-$UID/control.sock``.
    """
    env = os.environ if environ is None else environ
    if env.get("MIMOCORB2_SOCKET"):
        return Path(env["MIMOCORB2_SOCKET"])
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may list several directories separated by ':'; ours is the first
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "mimocorb2" / "control.sock"
    return Path(f"/tmp/mimocorb2-{os.getuid()}") / "control.sock"


def resolve_socket_path(cli_value: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Path:
    """``cli_value`` (``--socket``) when given, else :func:`default_socket_path` of ``environ``."""
    if cli_value:
        return Path(cli_value)
    return default_socket_path(environ)
