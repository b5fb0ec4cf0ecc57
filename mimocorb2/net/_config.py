"""Config keys of ``exporters.nats`` and ``importers.nats``, checked into frozen dataclasses.

Every problem becomes one line of a :class:`~mimocorb2.errors.SetupError` naming the
worker and the key (through :class:`~mimocorb2.functions._common.ConfigChecker`).
Secrets (passwords, tokens) are read here and never put into a message, a log line
or a status file: :func:`redact_url` strips them from server URLs.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..functions._common import ConfigChecker, is_number, resolve_path

__all__ = [
    "Credentials",
    "DEFAULT_URL",
    "Deliver",
    "ExporterConfig",
    "ImporterConfig",
    "Retention",
    "exporter_config",
    "importer_config",
    "producer_identity",
    "redact_url",
]

DEFAULT_URL = "nats://127.0.0.1:4222"
#: Seconds before the server re-sends a block nobody acknowledged (a group created by an exporter gets this).
DEFAULT_ACK_WAIT = 5.0
MIB = 1 << 20
#: Largest block the exporter makes by itself; more only with an explicit block_size.
MAX_DEFAULT_BLOCK = 4 * MIB
#: Room left in a message for headers and the server's framing.
BLOCK_HEADROOM = 64 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # safe as a stream name, a consumer name and a subject token
_COMMON_KEYS = ("url", "stream", "user", "password", "password_file", "token", "token_file",
                "creds", "tls_ca", "tls_cert", "tls_key", "connect_backoff_max")


class Retention(Enum):
    """How long the server keeps a message."""

    INTEREST = "interest"  #: until every group acknowledged it; refuses new ones when full
    ARCHIVE = "archive"  #: by age and size, oldest dropped first; replayable


class Deliver(Enum):
    """Where a new group starts reading."""

    ALL = "all"
    NEW = "new"
    START_TIME = "start_time"


@dataclass(frozen=True)
class Credentials:
    """How to authenticate; repr never shows a secret."""

    user: str | None = field(default=None)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            options["user_credentials"] = str(self.creds)
        if self.tls_ca or self.tls_cert:
            options["tls"] = self.tls_context()
        return options

    def tls_context(self) -> Any:
        """An ``ssl.SSLContext`` verifying the server with ``tls_ca`` (else the system's CAs)
        and presenting ``tls_cert``/``tls_key`` when given (ssl.SSLError / OSError on a bad file)."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        if self.tls_cert:
            context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
        return context


@dataclass(frozen=True)
class _Common:
    urls: tuple[str, ...]
    stream: str
    credentials: Credentials
    connect_backoff_max: float

    @property
    def shown_url(self) -> str:
        """The server URL(s) without secrets, for messages and status files."""
        return ", ".join(redact_url(u) for u in self.urls)

    @property
    def events_subject(self) -> str:
        return f"mimocorb2.{self.stream}.events"

    @property
    def end_subject(self) -> str:
        """Subject of the start and end markers."""
        return f"mimocorb2.{self.stream}.end"


@dataclass(frozen=True)
class ExporterConfig(_Common):
    """Checked config of ``exporters.nats``."""

    block_size: int | None  #: None: min(server max_payload, MAX_DEFAULT_BLOCK) less headroom
    latency: float
    retention: Retention
    max_bytes: int
    max_age: float
    duplicate_window: float
    groups: tuple[str, ...]
    publish_timeout: float
    in_flight: int


@dataclass(frozen=True)
class ImporterConfig(_Common):
    """Checked config of ``importers.nats``."""

    group: str
    producers: int
    deliver: Deliver
    start_time: datetime | None
    batch: int
    ack_wait: float


def redact_url(url: str) -> str:
    """``url`` without user name and password (``nats://***@host:4222``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _urls(check: ConfigChecker) -> tuple[str, ...]:
    raw = check.raw("url", DEFAULT_URL)
    values = raw if isinstance(raw, list | tuple) else [raw]
    urls: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            check.problem("url", f"expected a server URL such as {DEFAULT_URL} (or a list of them), got {redact_url(str(value))!r}")
            continue
        url = value.strip()
        if "://" not in url:
            url = "nats://" + url
        scheme = urlsplit(url).scheme
        if scheme not in ("nats", "tls", "ws", "wss"):
            check.problem("url", f"unknown scheme {scheme!r} in {redact_url(url)!r}: use nats:// or tls://")
            continue
        urls.append(url)
    if not values:
        check.problem("url", "expected at least one server URL")
    return tuple(urls) or (DEFAULT_URL,)


def _name(check: ConfigChecker, key: str, default: str) -> str:
    value = check.string(key, default)
    if isinstance(value, str) and not _NAME.match(value):
        check.problem(key, f"{value!r} cannot name a NATS stream or consumer: use letters, digits, '-' and '_'")
    return value if isinstance(value, str) else default


def _secret(check: ConfigChecker, io: Any, key: str) -> str | None:
    """A secret from ``key`` or from the file named by ``key_file`` (first line, stripped)."""
    inline = check.config.get(key)
    from_file = check.config.get(f"{key}_file")
    if inline is not None and from_file is not None:
        check.problem(key, f"give either '{key}' or '{key}_file', not both")
    if inline is not None:
        if not isinstance(inline, str):
            check.problem(key, f"expected a string, got a {type(inline).__name__}")
            return None
        return inline
    if from_file is None:
        return None
    if not isinstance(from_file, str):
        check.problem(f"{key}_file", f"expected a file name, got {from_file!r}")
        return None
    path = resolve_path(io, from_file)
    try:
        return path.read_text().strip()
    except OSError as exc:
        check.problem(f"{key}_file", f"cannot read {path}: {exc.strerror}")
        return None


def _file(check: ConfigChecker, io: Any, key: str) -> Path | None:
    value = check.config.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        check.problem(key, f"expected a file name, got {value!r}")
        return None
    path = resolve_path(io, value)
    if not path.is_file():
        check.problem(key, f"file not found: {path}")
        return None
    return path


def _credentials(check: ConfigChecker, io: Any) -> Credentials:
    user = check.string("user", None)
    password = _secret(check, io, "password")
    token = _secret(check, io, "token")
    if password is not None and user is None:
        check.problem("password", "a password needs 'user'")
    if token is not None and user is not None:
        check.problem("token", "give either 'user'/'password' or 'token', not both")
    creds = _creds_file(check, io)
    if creds is not None and (user is not None or token is not None):
        check.problem("creds", "give either 'creds' or 'user'/'password' or 'token', not two of them")
    tls_key = _file(check, io, "tls_key")
    tls_cert = _file(check, io, "tls_cert")
    if tls_key is not None and tls_cert is None:
        check.problem("tls_key", "a TLS key needs 'tls_cert'")
    credentials = Credentials(user=user, password=password, token=token, creds=creds,
                              tls_ca=_file(check, io, "tls_ca"), tls_cert=tls_cert, tls_key=tls_key)
    _check_tls_files(check, credentials)
    return credentials


_CREDS_PARTS = ("-----BEGIN NATS USER JWT-----", "-----BEGIN USER NKEY SEED-----")


def _creds_file(check: ConfigChecker, io: Any) -> Path | None:
    """The ``creds`` file, if it looks like one (user JWT and seed), and nkeys is there to sign with."""
    path = _file(check, io, "creds")
    if path is None:
        return None
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        check.problem("creds", f"cannot read {path}: {exc.strerror}")
        return None
    if not all(part in text for part in _CREDS_PARTS):
        check.problem("creds", f"{path} is not a NATS credentials file (it needs a user JWT and an "
                               "NKEY seed block, as 'nsc generate creds' writes)")
        return None
    try:
        import nkeys  # noqa: F401  (nats-py signs the server's challenge with it)
    except ImportError:
        check.problem("creds", "a credentials file needs the nkeys package: pip install nkeys "
                               "(or pip install 'nats-py[nkeys]')")
    return path


def _check_tls_files(check: ConfigChecker, credentials: Credentials) -> None:
    """Load the TLS files now, so that a wrong file is a setup problem naming its key."""
    if not (credentials.tls_ca or credentials.tls_cert):
        return
    import ssl

    try:
        ssl.create_default_context(cafile=str(credentials.tls_ca) if credentials.tls_ca else None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        check.problem("tls_ca", f"{credentials.tls_ca} holds no usable CA certificate (PEM): {exc}")
        return
    try:
        credentials.tls_context()
    except (ssl.SSLError, OSError, ValueError) as exc:
        check.problem("tls_cert", f"cannot use {credentials.tls_cert} with key "
                                  f"{credentials.tls_key or '(in the same file)'}: {exc}")


def _common(check: ConfigChecker, io: Any, default_stream: str) -> dict[str, Any]:
    return {
        "urls": _urls(check),
        "stream": _name(check, "stream", default_stream),
        "credentials": _credentials(check, io),
        "connect_backoff_max": check.number("connect_backoff_max", 5.0, positive=True) or 5.0,
    }


def _unknown_keys(check: ConfigChecker, known: tuple[str, ...]) -> None:
    for key in sorted(set(check.config) - set(known), key=str):
        check.problem(str(key), f"unknown key for {check.function}; known keys: {', '.join(sorted(known))}")


_EXPORTER_KEYS = _COMMON_KEYS + ("block_size", "latency", "retention", "max_bytes", "max_age",
                                 "duplicate_window", "groups", "publish_timeout", "in_flight")
_IMPORTER_KEYS = _COMMON_KEYS + ("group", "producers", "deliver", "start_time", "batch", "ack_wait")


def exporter_config(check: ConfigChecker, io: Any) -> ExporterConfig:
    """Check the keys of ``exporters.nats`` (problems are collected in ``check``)."""
    _unknown_keys(check, _EXPORTER_KEYS)
    default_stream = io.buffer_names_in[0] if getattr(io, "buffer_names_in", None) else io.name
    common = _common(check, io, default_stream)
    retention = check.string("retention", Retention.INTEREST.value, choices=[r.value for r in Retention])
    groups_raw = check.raw("groups", [])
    groups: list[str] = []
    if not isinstance(groups_raw, list | tuple):
        check.problem("groups", f"expected a list of importing group names, got {groups_raw!r}")
    else:
        for group in groups_raw:
            if not isinstance(group, str) or not _NAME.match(group):
                check.problem("groups", f"{group!r} cannot name a consumer: use letters, digits, '-' and '_'")
            else:
                groups.append(group)
    return ExporterConfig(
        **common,
        block_size=check.number("block_size", None, integer=True, positive=True, allow_none=True),
        latency=check.number("latency", 0.02, positive=True) or 0.02,
        retention=Retention(retention or Retention.INTEREST.value),
        max_bytes=check.number("max_bytes", 1 << 30, integer=True, positive=True) or 1 << 30,
        max_age=check.number("max_age", 0, non_negative=True) or 0.0,
        duplicate_window=check.number("duplicate_window", 120, positive=True) or 120.0,
        groups=tuple(groups),
        publish_timeout=check.number("publish_timeout", 5.0, positive=True) or 5.0,
        in_flight=check.number("in_flight", 4, integer=True, positive=True) or 4,
    )


def _start_time(check: ConfigChecker) -> datetime | None:
    value = check.config.get("start_time")
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if is_number(value):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    check.problem("start_time", f"expected an ISO time (2026-11-27T18:00:00Z) or epoch seconds, got {value!r}")
    return None


def importer_config(check: ConfigChecker, io: Any) -> ImporterConfig:
    """Check the keys of ``importers.nats`` (problems are collected in ``check``)."""
    _unknown_keys(check, _IMPORTER_KEYS)
    default_stream = io.buffer_names_out[0] if getattr(io, "buffer_names_out", None) else io.name
    common = _common(check, io, default_stream)
    start_time = _start_time(check)
    deliver = check.string("deliver", Deliver.START_TIME.value if start_time else Deliver.ALL.value,
                           choices=[d.value for d in Deliver])
    if deliver == Deliver.START_TIME.value and start_time is None:
        check.problem("deliver", "deliver: start_time needs 'start_time'")
    return ImporterConfig(
        **common,
        group=_name(check, "group", io.name),
        producers=check.number("producers", 1, integer=True, positive=True) or 1,
        deliver=Deliver(deliver or Deliver.ALL.value),
        start_time=start_time,
        batch=check.number("batch", 1, integer=True, positive=True) or 1,
        ack_wait=check.number("ack_wait", DEFAULT_ACK_WAIT, positive=True) or DEFAULT_ACK_WAIT,
    )


def producer_identity(io: Any) -> str:
    """``host/run directory/worker``: the same for every process of one exporting worker in one run."""
    run = Path(getattr(io, "run_dir", ".")).resolve().name or "run"
    return f"{socket.gethostname()}/{run}/{io.name}"
