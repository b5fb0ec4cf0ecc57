"""Helpers shared by the prebuilt functions: config checks, buffer checks, atomic files."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import SetupError

__all__ = [
    "ChecksPassed",
    "ConfigChecker",
    "atomic_save_npy",
    "atomic_write_bytes",
    "copy_event",
    "is_int",
    "is_number",
    "resolve_path",
    "with_nats_connection_configs",
]

_MISSING = object()


class ChecksPassed(Exception):
    """Raised by :meth:`ConfigChecker.done` when its BufferIO has ``checks_only`` set.

    Setup validation calls a prebuilt function with such a BufferIO (buffers that are
    only names and empty examples): every prebuilt function checks its config and
    buffers, then calls ``done()`` before it touches a buffer, a file or a device, so
    the function stops right there and no problem is left to report.
    """


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _type_name(value: Any) -> str:
    return type(value).__name__


def is_number(value: Any) -> bool:
    """True for finite int/float (and numpy scalars); False for bool, NaN and infinities."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, int | np.integer):
        return True
    if isinstance(value, float | np.floating):
        return math.isfinite(float(value))
    return False


def is_int(value: Any) -> bool:
    """True for integers (not bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


class ConfigChecker:
    """Collects every problem of a worker's config and buffers, then raises one SetupError.

    Every problem line names the worker, the key and what was expected, e.g.
    ``Workers.hist.config.bins: expected a mapping channel -> [min, max, bins], got list``.

    Examples:
        >>> check = ConfigChecker(io, "exporters.histogram")  # doctest: +SKIP
        >>> interval = check.number("update_interval", default=1, positive=True)  # doctest: +SKIP
        >>> check.done()  # doctest: +SKIP
    """

    def __init__(self, io: Any, function: str) -> None:
        self.io = io
        self.name = str(getattr(io, "name", "?"))
        self.function = function
        config = getattr(io, "config", None)
        self.config: dict[str, Any] = dict(config) if isinstance(config, Mapping) else {}
        self.problems: list[str] = []

    @classmethod
    def for_config(cls, config: Mapping[str, Any], name: str, function: str) -> ConfigChecker:
        """A checker for a bare ``config`` mapping of worker ``name`` (no BufferIO at hand)."""
        return cls(SimpleNamespace(name=name, config=dict(config)), function)

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Record a problem for every config key not in ``known`` (a misspelt key is never ignored)."""
        allowed = sorted(known)
        for key in sorted(set(self.config) - set(allowed), key=str):
            self.problem(str(key), f"unknown key (got {self.config[key]!r}); allowed keys: {', '.join(allowed)}")

    def expected(self, key: str, what: str, value: Any) -> None:
        """Record the standard problem line ``<where>: expected <what>, got <value>``."""
        self.problem(key, f"expected {what}, got {value!r}")

    # -- reporting -----------------------------------------------------------------
    def problem(self, key: str | None, message: str) -> None:
        """Record a problem with config key ``key`` (None: a buffer problem)."""
        where = f"Workers.{self.name}.config.{key}" if key else f"Workers.{self.name}"
        self.problems.append(f"{where}: {message}")

    def buffer_problem(self, kind: str, message: str) -> None:
        """Record a problem with the worker's ``sources``/``sinks``/``observes``."""
        self.problems.append(f"Workers.{self.name}.{kind}: {message}")

    def done(self) -> None:
        """Raise SetupError listing every recorded problem (if any).

        Without problems, a BufferIO with ``checks_only`` (setup validation) stops the
        function here with :class:`ChecksPassed`.
        """
        if self.problems:
            raise SetupError(
                f"worker '{self.name}' ({self.function}): invalid setup", problems=self.problems
            )
        if getattr(self.io, "checks_only", False):
            raise ChecksPassed(self.name)

    # -- config values ---------------------------------------------------------------
    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key``; a problem (and ``None``) when missing without default."""
        if key in self.config:
            return self.config[key]
        if default is _MISSING:
            self.problem(key, "required key is missing")
            return None
        return default

    def has(self, key: str) -> bool:
        """Whether the config sets ``key`` to something other than None."""
        return self.config.get(key) is not None

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        integer: bool = False,
        positive: bool = False,
        non_negative: bool = False,
        allow_none: bool = False,
    ) -> Any:
        """A numeric value, checked; returns ``default`` (or None) when invalid."""
        value = self.raw(key, default)
        if value is None and (allow_none or key not in self.config):
            return value
        kind = "an integer" if integer else "a number"
        ok = is_int(value) if integer else is_number(value)
        if not ok:
            self.problem(key, f"expected {kind}, got {value!r} ({_type_name(value)})")
            return None if default is _MISSING else default
        if positive and not value > 0:
            self.problem(key, f"expected {kind} > 0, got {value!r}")
        elif non_negative and not value >= 0:
            self.problem(key, f"expected {kind} >= 0, got {value!r}")
        return int(value) if integer else float(value)

    def string(self, key: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> Any:
        """A string value, optionally one of ``choices``."""
        value = self.raw(key, default)
        if value is None and key not in self.config:
            return value
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {value!r} ({_type_name(value)})")
            return None if default is _MISSING else default
        if choices is not None:
            options = list(choices)
            if value not in options:
                self.problem(key, f"expected one of {options}, got {value!r}")
                return None if default is _MISSING else default
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        """A boolean value."""
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r} ({_type_name(value)})")
            return None if default is _MISSING else default
        return value

    def number_list(
        self, key: str, default: Any = _MISSING, *, length: int | None = None, allow_none: bool = True
    ) -> Any:
        """A list/tuple of numbers (of ``length`` items when given)."""
        value = self.raw(key, default)
        if value is None and allow_none:
            return None
        if not isinstance(value, list | tuple) or not all(is_number(v) for v in value):
            self.problem(key, f"expected a list of numbers, got {value!r}")
            return None if default is _MISSING else default
        if length is not None and len(value) != length:
            self.problem(key, f"expected {length} numbers, got {len(value)}: {value!r}")
            return None if default is _MISSING else default
        return [float(v) for v in value]

    def scaling(self, key: str, default: tuple[float, float, str]) -> tuple[float, float, str]:
        """A ``(scaling, offset, unit)`` triple (unit may be omitted)."""
        value = self.raw(key, default)
        if value is None:
            return default
        if (
            not isinstance(value, list | tuple)
            or len(value) not in (2, 3)
            or not is_number(value[0])
            or not is_number(value[1])
            or (len(value) == 3 and not isinstance(value[2], str))
        ):
            self.problem(key, f"expected [scaling, offset, unit] (two numbers and a string), got {value!r}")
            return default
        unit = value[2] if len(value) == 3 else default[2]
        return float(value[0]), float(value[1]), unit

    # -- buffers ---------------------------------------------------------------------
    def buffer_count(self, kind: str, names: list[str], expected: int | tuple[int, int | None]) -> None:
        """Check how many buffers the worker lists in ``kind`` (sources/sinks/observes)."""
        n = len(names)
        if isinstance(expected, int):
            if n != expected:
                self.buffer_problem(kind, f"{self.function} needs exactly {expected} buffer(s), got {n}: {names}")
            return
        lo, hi = expected
        if n < lo or (hi is not None and n > hi):
            want = f"at least {lo}" if hi is None else f"{lo} to {hi}"
            self.buffer_problem(kind, f"{self.function} needs {want} buffer(s), got {n}: {names}")


def single_process(check: ConfigChecker, io: Any, why: str) -> None:
    """Record a problem when the worker runs more than one process (``why``: what would break)."""
    n = int(getattr(io, "number_of_processes", 1) or 1)
    if n > 1:
        check.problems.append(
            f"Workers.{check.name}.number_of_processes: {check.function} needs exactly 1 process "
            f"({why}), got {n}"
        )


def resolve_path(io: Any, filename: str) -> Path:
    """``filename`` as an absolute path: relative names are taken relative to the setup directory."""
    path = Path(filename).expanduser()
    if path.is_absolute():
        return path
    base = getattr(io, "setup_dir", None)
    return (Path(base) if base is not None else Path.cwd()) / path


def output_path(io: Any, filename: str, suffix: str) -> Path:
    """Where an exporter writes ``filename``: ``suffix`` added if missing, relative to the run directory.

    The parent directory is created.
    """
    if not filename.endswith(suffix):
        filename += suffix
    path = Path(filename)
    if not path.is_absolute():
        path = Path(io.run_dir) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, writer: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` atomically: ``writer(file)`` writes a temporary file that then replaces it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            writer(fh)
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    atomic_write_bytes(path, lambda fh: np.save(fh, array))


def same_layout(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two slot arrays can be copied byte for byte."""
    return a.dtype == b.dtype and a.shape == b.shape


def copy_event(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy ``src`` into ``dst``: bytes when the layouts match, else field by field.

    Field-by-field copies take the common fields and the common length; elements of
    ``dst`` beyond ``len(src)`` are zeroed.
    """
    if same_layout(src, dst):
        dst.view(np.uint8)[:] = src.view(np.uint8)
        return
    n = min(len(src), len(dst))
    names = src.dtype.names or ()
    for field in dst.dtype.names or ():
        if field in names:
            dst[field][:n] = src[field][:n]
            if n < len(dst):
                dst[field][n:] = 0
        else:
            dst[field][:] = 0


#: The config keys with which exporters.nats and importers.nats reach a server, as their
#: docstrings list them (the keys are read by mimocorb2.net._config for both).
_NATS_URL_CONFIG = """\
    url : str or list, optional (default='nats://127.0.0.1:4222')
        Server URL, or a list of the URLs of a cluster.
"""
_NATS_LOGIN_CONFIGS = """\
    user : str, optional (default=None)
        User name; with password or password_file.
    password : str, optional (default=None)
        Password (better: password_file; the run directory keeps a copy of the setup).
    password_file : str, optional (default=None)
        File whose first line is the password (relative to the setup file).
    token : str, optional (default=None)
        Authentication token.
    token_file : str, optional (default=None)
        File whose first line is the token.
    creds : str, optional (default=None)
        A NATS credentials file (JWT and NKey seed; signing needs the nkeys package, which
        ``pip install mimocorb2[nats]`` installs).
    tls_ca : str, optional (default=None)
        CA certificate file for tls:// servers.
    tls_cert : str, optional (default=None)
        Client certificate file (with tls_key) for servers that verify clients.
    tls_key : str, optional (default=None)
        Private key file of tls_cert.
    connect_backoff_max : float, optional (default=5.0)
        Cap in seconds of the backoff between connection attempts.
"""


def with_nats_connection_configs(doc: str | None) -> str | None:
    """The docstring ``doc`` of a NATS function with the connection keys added to its Configs.

    ``url`` becomes the first key, the login and TLS keys the last, before Examples. None
    stays None (``python -OO`` drops docstrings).
    """
    if doc is None:
        return None
    configs_heading, examples_heading = "    Configs\n    -------\n", "\n    Examples\n"
    assert configs_heading in doc and examples_heading in doc, doc
    head, rest = doc.split(configs_heading, 1)
    own_keys, examples = rest.split(examples_heading, 1)
    return head + configs_heading + _NATS_URL_CONFIG + own_keys + _NATS_LOGIN_CONFIGS + examples_heading + examples
