"""The daemon's configuration file (``mimocorb2d --config FILE`` or ``$MIMOCORB2_CONFIG``), read once.

Top-level keys: ``web`` (the page, see docs/web.md) and ``loop_priority`` (realtime or
normal, see docs/daemon.md). The reference sections of ``daemon/defaults.yaml``
(``daemon``, ``run``, ``worker``) are accepted and ignored, so that a copy of that file
works as a starting point; any other key is refused, naming the likely intended key,
because a misspelled setting that silently does nothing is the mistake an operator
makes most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mimocorb2.setup._problems import did_you_mean
from mimocorb2.supervisor.priority import LoopPriority, parse_priority
from mimocorb2.web import WebConfig, WebConfigError, config_from_mapping, read_config_mapping

__all__ = ["DaemonConfig", "KNOWN_KEYS", "REFERENCE_KEYS", "read_daemon_config"]

#: the keys the daemon reads
KNOWN_KEYS = ("web", "loop_priority")
#: sections of daemon/defaults.yaml that document defaults; accepted and not read
REFERENCE_KEYS = ("daemon", "run", "worker")


@dataclass(frozen=True)
class DaemonConfig:
    """What a configuration file sets; flags given on the command line override it."""

    web: WebConfig = field(default_factory=WebConfig)
    #: None when the file does not set it (the daemon then asks for realtime)
    loop_priority: LoopPriority | None = None
    #: reference sections present in the file and not read (logged at start)
    ignored: tuple[str, ...] = ()


def read_daemon_config(path: Path | str) -> DaemonConfig:
    """Read and check ``path``; a WebConfigError (a ValueError) names the file and the key."""
    where = str(path)
    data = read_config_mapping(Path(path))
    unknown = [str(k) for k in data if k not in KNOWN_KEYS and k not in REFERENCE_KEYS]
    if unknown:
        raise WebConfigError("; ".join(
            f"{where}: unknown key '{key}'{did_you_mean(key, KNOWN_KEYS)}" for key in unknown)
            + f" (known: {', '.join(KNOWN_KEYS)})")
    priority = None
    if "loop_priority" in data:
        priority = parse_priority(data["loop_priority"], f"{where}: loop_priority")
    return DaemonConfig(web=config_from_mapping(data, where), loop_priority=priority,
                        ignored=tuple(k for k in REFERENCE_KEYS if k in data))
