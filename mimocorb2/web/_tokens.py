"""The page's two tokens: viewer (read-only) and operator (may act on runs).

Generated at daemon start and kept in ``web-tokens.json`` (mode 0600) in the
daemon's runtime directory, next to the control socket. A file left by an
earlier daemon in the same directory is reused, so an open page reconnects
after a restart; systemd empties the runtime directory when the service stops,
which gives new tokens. Tokens from the configuration file replace both.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("mimocorb2.web")

TOKENS_FILE = "web-tokens.json"
VIEWER = "viewer"
OPERATOR = "operator"


@dataclass(frozen=True)
class Tokens:
    """The two secrets. Invariant: they differ."""

    viewer: str
    operator: str

    def role_of(self, token: str | None) -> str | None:
        """``operator``, ``viewer`` or None, compared in constant time."""
        if not token:
            return None
        if secrets.compare_digest(token, self.operator):
            return OPERATOR
        if secrets.compare_digest(token, self.viewer):
            return VIEWER
        return None


def load_or_create(directory: Path) -> Tokens:
    """Reuse the tokens file in ``directory`` if it is ours and private, else write new tokens."""
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)  # the socket's directory, made early
    path = directory / TOKENS_FILE
    try:
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            data = json.loads(path.read_text(encoding="ascii"))
            tokens = Tokens(str(data[VIEWER]), str(data[OPERATOR]))
            if len(tokens.viewer) >= 16 and len(tokens.operator) >= 16 and tokens.viewer != tokens.operator:
                return tokens
        log.warning("web tokens file not private or not ours: writing new tokens", path=str(path))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("web tokens file unreadable: writing new tokens", path=str(path), error=str(exc))
    tokens = Tokens(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    write(path, tokens)
    return tokens


def write(path: Path, tokens: Tokens) -> None:
    """Write atomically with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps({VIEWER: tokens.viewer, OPERATOR: tokens.operator}).encode("ascii"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
