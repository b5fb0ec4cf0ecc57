"""The live web dashboard served by the daemon (see docs/web.md).

A thin adapter: :class:`WebServer` needs only a :class:`Backend`;
:class:`DaemonBackend` adapts ``mimocorb2d``, :class:`ForegroundBackend` a
foreground run (``mimocorb2 run --web``, see ``supervisor/foreground_web.py``). ``start_web(daemon, config)``
is the daemon's single hook.
"""

from __future__ import annotations

from typing import Any

from mimocorb2.web._backend import Backend, DaemonBackend, ForegroundBackend, describe_setup
from mimocorb2.web._config import (PublicUrl, WebConfig, WebConfigError, apply_flags, config_from_file,
                                   config_from_mapping, parse_listen, parse_public_url, read_config_mapping)
from mimocorb2.web._server import WebServer

__all__ = ["Backend", "DaemonBackend", "ForegroundBackend", "PublicUrl", "WebConfig", "WebConfigError", "WebServer",
           "apply_flags", "config_from_file", "config_from_mapping", "describe_setup", "parse_listen",
           "parse_public_url", "read_config_mapping", "start_web"]


async def start_web(daemon: Any, config: WebConfig) -> WebServer | None:
    """Serve the page for ``daemon`` on its loop; None when disabled.

    A port already taken is fatal when the web was asked for (flag or config file),
    else logged and the daemon runs without a page.
    """
    if not config.enabled:
        return None
    server = WebServer(DaemonBackend(daemon), config)
    try:
        await server.start()
    except OSError as exc:
        where = f"{config.host}:{config.port}"
        if config.explicit:
            raise WebConfigError(f"web page: cannot listen on {where}: {exc.strerror or exc}") from None
        import structlog

        structlog.get_logger("mimocorb2.web").error(
            "web page disabled: cannot listen on the default address (use --web PORT or --no-web)",
            address=where, error=str(exc))
        return None
    return server
