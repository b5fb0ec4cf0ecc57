"""The web page's configuration: where it listens, who may see and act, what it may start.

Sources, later ones winning: built-in defaults, the ``web:`` section of the
daemon's configuration file (``mimocorb2d --config FILE``), command-line flags
(``--web [HOST:]PORT``, ``--no-web``, ``--web-setup PATH``, ``--web-public-url URL``).

::

    web:
      enabled: true
      listen: 127.0.0.1:8765     # [HOST:]PORT
      setups: [/srv/daq/muon/setup.yaml, /srv/daq/setups/]   # what Start may offer
      tokens: generate           # generate | off (loopback only) | {viewer: ..., operator: ...}
      public_url: https://daq.lab.example/   # optional: the address users type (a reverse proxy in front)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: shortest token accepted from configuration
MIN_TOKEN_LENGTH = 16


#: a DNS name as a public URL may hold it (ASCII labels: letters, digits, hyphens)
_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebConfigError(ValueError):
    """A web setting that cannot be used; the message names the key or flag."""


@dataclass(frozen=True)
class PublicUrl:
    """The address users type when a reverse proxy (usually terminating HTTPS) stands in front of the page.

    Invariants (kept by ``parse_public_url``): ``scheme`` is http or https, ``host`` is a
    lower-case DNS name or a bracketed IPv6 / plain IPv4 literal, ``port`` is None for the
    scheme's default port, the path is "/" (no prefix), no user, query or fragment.
    """

    scheme: str
    host: str
    port: int | None

    @property
    def origin(self) -> str:
        """The ``Origin`` header a browser sends from a page at this address."""
        return f"{self.scheme}://{self.netloc}"

    @property
    def netloc(self) -> str:
        """``host[:port]``, the port only when it is not the scheme's default."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The page's address, ending in "/"."""
        return f"{self.origin}/"

    @property
    def secure(self) -> bool:
        """True for https: cookies given out under this address carry ``Secure``."""
        return self.scheme == "https"


def parse_public_url(text: str, where: str = "--web-public-url") -> PublicUrl:
    """``http[s]://HOST[:PORT][/]`` -> PublicUrl; anything else is a WebConfigError naming ``where``."""
    raw = str(text).strip()
    if not raw or any(c.isspace() for c in raw) or "?" in raw or "#" in raw:
        raise WebConfigError(f"{where}: expected http[s]://HOST[:PORT]/ without spaces, query or fragment, "
                             f"got {text!r}")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise WebConfigError(f"{where}: not a usable URL {text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise WebConfigError(f"{where}: the scheme must be http or https, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise WebConfigError(f"{where}: no user or password in the address, got {text!r}")
    if parts.path not in ("", "/"):
        raise WebConfigError(f"{where}: the page must be served at the root of its address (no path prefix "
                             f"such as {parts.path!r}); got {text!r}")
    host = _public_host(parts.hostname or "", where, text)
    if port == 0:
        raise WebConfigError(f"{where}: port 0 is not an address users can type, got {text!r}")
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    return PublicUrl(scheme, host, port)


def _public_host(name: str, where: str, text: str) -> str:
    """The host part as browsers write it in ``Origin``: lower case, IPv6 in brackets."""
    name = name.lower()
    if not name:
        raise WebConfigError(f"{where}: no host in {text!r}")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if not _HOSTNAME.fullmatch(name):
            raise WebConfigError(f"{where}: {name!r} is not a host name (ASCII letters, digits, hyphens, dots; "
                                 f"write an international name in its xn-- form)") from None
        return name
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


@dataclass
class WebConfig:
    """Settings of the web page. ``explicit``: asked for by flag or file, so a bind failure is fatal.
    ``start_offered``: False for a foreground run (the page has no Start; the verb is refused)."""

    enabled: bool = True
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    explicit: bool = False
    setups: list[Path] = field(default_factory=list)
    auth: bool = True
    viewer_token: str | None = None
    operator_token: str | None = None
    start_offered: bool = True
    public_url: PublicUrl | None = None

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect."""
        return is_loopback(self.host)

    def validate(self) -> None:
        """Refuse settings that would expose the page: raises WebConfigError."""
        if not self.enabled:
            return
        if not self.auth and not self.loopback:
            raise WebConfigError(f"web: listening on {self.host} (not loopback) requires tokens; "
                                 "remove 'tokens: off' or listen on 127.0.0.1")
        if not self.auth and self.public_url is not None:
            raise WebConfigError(f"web.public_url: a page reached through {self.public_url.url} requires tokens; "
                                 "remove 'tokens: off'")
        for key in ("viewer_token", "operator_token"):
            token = getattr(self, key)
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise WebConfigError(f"web.tokens.{key.split('_')[0]}: at least {MIN_TOKEN_LENGTH} characters")
        if self.viewer_token is not None and self.viewer_token == self.operator_token:
            raise WebConfigError("web.tokens: the viewer and operator tokens must differ")
        for path in self.setups:
            if not path.is_absolute():
                raise WebConfigError(f"web.setups: {path} is not an absolute path")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, where: str = "--web") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    text = str(text).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise WebConfigError(f"{where}: expected [HOST:]PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise WebConfigError(f"{where}: port {port} out of range")
    return host, port


def read_config_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a daemon configuration file (YAML; an empty file is ``{}``)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: expected a mapping at the top")
    return data


def config_from_file(path: Path) -> WebConfig:
    """The ``web:`` section of a daemon configuration file (YAML)."""
    return config_from_mapping(read_config_mapping(path), str(path))


def config_from_mapping(data: dict[str, Any], where: str) -> WebConfig:
    """The ``web:`` section of a configuration file's top-level mapping (``where`` names the file)."""
    section = data.get("web", {}) or {}
    if not isinstance(section, dict):
        raise WebConfigError(f"{where}: web: expected a mapping")
    return _from_section(section, where)


def _from_section(section: dict[str, Any], where: str) -> WebConfig:
    known = {"enabled", "listen", "setups", "tokens", "public_url"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise WebConfigError(f"{where}: web: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = WebConfig()
    if "enabled" in section:
        if not isinstance(section["enabled"], bool):
            raise WebConfigError(f"{where}: web.enabled: expected true or false")
        cfg.enabled = section["enabled"]
        cfg.explicit = True
    if "listen" in section:
        cfg.host, cfg.port = parse_listen(str(section["listen"]), f"{where}: web.listen")
        cfg.explicit = True
    setups = section.get("setups", [])
    if not isinstance(setups, list) or not all(isinstance(s, str) for s in setups):
        raise WebConfigError(f"{where}: web.setups: expected a list of paths")
    cfg.setups = [Path(s) for s in setups]
    tokens = section.get("tokens", "generate")
    if tokens == "off" or tokens is False:
        cfg.auth = False
    elif isinstance(tokens, dict):
        if set(tokens) != {"viewer", "operator"} or not all(isinstance(v, str) for v in tokens.values()):
            raise WebConfigError(f"{where}: web.tokens: expected {{viewer: ..., operator: ...}} strings")
        cfg.viewer_token, cfg.operator_token = tokens["viewer"], tokens["operator"]
    elif tokens != "generate":
        raise WebConfigError(f"{where}: web.tokens: expected generate, off or {{viewer, operator}}")
    public_url = section.get("public_url")
    if public_url is not None:
        if not isinstance(public_url, str):
            raise WebConfigError(f"{where}: web.public_url: expected an address such as https://daq.lab.example/")
        cfg.public_url = parse_public_url(public_url, f"{where}: web.public_url")
    return cfg


def apply_flags(cfg: WebConfig, *, listen: str | None, disabled: bool, setups: list[str] | None,
                public_url: str | None = None) -> WebConfig:
    """Command-line flags over the file's settings."""
    if public_url is not None:
        cfg.public_url = parse_public_url(public_url)
    if listen is not None:
        cfg.host, cfg.port = parse_listen(listen)
        cfg.enabled, cfg.explicit = True, True
    if disabled:
        cfg.enabled = False
    for setup in setups or []:
        cfg.setups.append(Path(setup).absolute())
    cfg.validate()
    return cfg


def allowed_setups(cfg: WebConfig) -> dict[str, Path]:
    """The setups Start may offer: each configured file, and each ``*.yaml`` with Workers in a configured folder.

    Keys are the names shown in the page (the path itself); the page sends a key back,
    never a path of its own.
    """
    out: dict[str, Path] = {}
    for entry in cfg.setups:
        if entry.is_dir():
            for candidate in sorted(entry.glob("*/setup*.y*ml")) + sorted(entry.glob("*.y*ml")):
                if _looks_like_setup(candidate):
                    out[str(candidate)] = candidate
        elif entry.is_file():
            out[str(entry)] = entry
    return out


def _looks_like_setup(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    return "Workers:" in head and "Buffers:" in head
