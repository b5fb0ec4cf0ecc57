"""`mimocorb2d`: the supervisor daemon, in the foreground (systemd style)."""

from __future__ import annotations

import argparse
import os
import sys

from mimocorb2 import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``mimocorb2d`` argument parser; ``--log-level`` defaults to ``$MIMOCORB2_LOG_LEVEL``.

    Flags override the configuration file (``--config`` or ``$MIMOCORB2_CONFIG``).
    """
    parser = argparse.ArgumentParser(
        prog="mimocorb2d",
        description="mimocorb2 supervisor daemon: owns the buffers and worker processes of a run, "
        "controlled with mimoctl over a Unix socket.",
    )
    parser.add_argument(
        "--socket",
        help="control socket path (default: $MIMOCORB2_SOCKET, $RUNTIME_DIRECTORY/control.sock, "
        "$XDG_RUNTIME_DIR/mimocorb2/control.sock, /tmp/mimocorb2-$UID/control.sock)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("MIMOCORB2_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $MIMOCORB2_LOG_LEVEL or INFO)",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="daemon configuration (YAML); its web: section configures the page "
                        "(default: $MIMOCORB2_CONFIG if set)")
    parser.add_argument("--web", metavar="[HOST:]PORT",
                        help="serve the web page there (default: 127.0.0.1:8765; a non-loopback host "
                        "needs tokens)")
    parser.add_argument("--no-web", action="store_true", help="serve no web page")
    parser.add_argument("--web-setup", action="append", metavar="PATH",
                        help="a setup file or folder the page may start (repeatable)")
    parser.add_argument("--web-public-url", metavar="URL",
                        help="the address users open when a reverse proxy stands in front of the page, "
                        "e.g. https://daq.lab.example/ (its origin may act; printed URLs use it)")
    parser.add_argument("--loop-priority", choices=("realtime", "normal"),
                        help="the event loop thread's scheduling: realtime (SCHED_RR 1, the default where "
                        "allowed: root or LimitRTPRIO=1; workers stay at normal priority) or normal; "
                        "also loop_priority: in the configuration file")
    parser.add_argument("--version", action="version", version=f"mimocorb2d {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mimocorb2d`` until it exits; return the process exit code.

    0 after a normal shutdown, 1 if the daemon could not start (e.g. another one answers on the
    socket), 2 for a bad configuration file or flag. The systemd variables are taken out of
    the environment first, so that no worker inherits them.
    """
    args = build_parser().parse_args(argv)
    from mimocorb2 import logsetup
    from mimocorb2.control.protocol import resolve_socket_path
    from mimocorb2.supervisor.sdnotify import Notifier
    from mimocorb2.supervisor.server import Daemon

    # take NOTIFY_SOCKET / WATCHDOG_* out of the environment before any worker is spawned
    notifier = Notifier.from_environment()
    logsetup.configure_daemon_logging(args.log_level)
    socket_path = resolve_socket_path(args.socket)
    from mimocorb2.supervisor.daemon_config import DaemonConfig, read_daemon_config
    from mimocorb2.supervisor.priority import LoopPriority, parse_priority
    from mimocorb2.web import WebConfigError, apply_flags

    config_path = args.config or os.environ.get("MIMOCORB2_CONFIG")
    try:
        config = read_daemon_config(config_path) if config_path else DaemonConfig()
        web_config = apply_flags(config.web, listen=args.web, disabled=args.no_web, setups=args.web_setup,
                                 public_url=args.web_public_url)
        if args.loop_priority is not None:
            loop_priority = parse_priority(args.loop_priority, "--loop-priority")
        else:
            loop_priority = config.loop_priority or LoopPriority.REALTIME
    except (WebConfigError, ValueError) as exc:
        print(f"mimocorb2d: {exc}", file=sys.stderr)
        logsetup.shutdown_logging()
        return 2
    if config.ignored:
        import structlog

        structlog.get_logger("mimocorb2.daemon").info(
            "configuration sections kept for reference, not read", file=config_path, sections=list(config.ignored))
    from mimocorb2.supervisor.blocking import arm_exit_guard

    daemon = Daemon(socket_path, notifier, web_config, loop_priority)
    daemon.after_shutdown = arm_exit_guard  # a wedged thread never keeps the process alive
    try:
        code = daemon.run()
    finally:
        logsetup.shutdown_logging()
    return code


if __name__ == "__main__":
    sys.exit(main())
