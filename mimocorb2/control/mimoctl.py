"""`mimoctl`: the operator's client for the mimocorb2d daemon.

Exit codes: 0 ok, 1 the daemon refused or the command failed, 2 usage error,
3 daemon not reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from mimocorb2.control import protocol as P
from mimocorb2.control.client import Client, DaemonUnreachable, RequestFailed
from mimocorb2.diskfull import human_bytes

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 already; keep it explicit
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``mimoctl`` argument parser: ``check`` plus one subcommand per entry of :data:`COMMANDS`.

    A usage error prints the usage and exits with :data:`EXIT_USAGE`.
    """
    parser = _Parser(prog="mimoctl", description="Control the mimocorb2d data acquisition daemon.")
    parser.add_argument("--socket", help="control socket of the daemon (default: as mimocorb2d)")
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("start", help=P.COMMAND_HELP["start"])
    p.add_argument("setup", metavar="SETUP.yaml")
    p.add_argument("--max-events", type=_positive_int, metavar="N", help="stop gracefully after N root events")
    p.add_argument("--max-seconds", type=_positive_float, metavar="T", help="stop gracefully after T seconds")
    p.add_argument("--comment", help="a note stored as RUN_DIR/comment.txt")

    p = sub.add_parser("stop", help=P.COMMAND_HELP["stop"])
    p.add_argument("--no-wait", action="store_true", help="return once stopping has begun")
    sub.add_parser("abort", help=P.COMMAND_HELP["abort"])
    p = sub.add_parser("pause", help=P.COMMAND_HELP["pause"])
    p.add_argument("buffers", nargs="*", metavar="BUFFER")
    p = sub.add_parser("resume", help=P.COMMAND_HELP["resume"])
    p.add_argument("buffers", nargs="*", metavar="BUFFER")
    p = sub.add_parser("status", help=P.COMMAND_HELP["status"])
    p.add_argument("--json", action="store_true", help="one JSON object (stable schema)")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=_positive_float, default=1.0, metavar="T",
                   help="--watch refresh period in seconds (default 1)")
    p = sub.add_parser("logs", help=P.COMMAND_HELP["logs"])
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("worker", nargs="?", metavar="WORKER")
    p = sub.add_parser("check", help=P.COMMAND_HELP["check"])
    p.add_argument("setup", metavar="SETUP.yaml")
    sub.add_parser("shutdown", help=P.COMMAND_HELP["shutdown"])
    sub.add_parser("ping", help=P.COMMAND_HELP["ping"])
    p = sub.add_parser("web", help=P.COMMAND_HELP["web"])
    p.add_argument("--operator", action="store_true", help="the operator's address (may act on runs)")
    p = sub.add_parser("ack", help=P.COMMAND_HELP["ack"])
    p.add_argument("alarm", nargs="?", metavar="ALARM_ID")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one ``mimoctl`` command line and return its exit code (see the module docstring).

    ``check`` runs locally; every other command uses one connection to the daemon. Errors from
    the daemon and an unreachable socket are printed to stderr, never raised. Ctrl-C ends
    ``status --watch`` and ``logs -f`` with 0.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.command == "check":
            return cmd_check(args, out)
        client = Client(args.socket, timeout=args.timeout)
        with client:
            handler = COMMANDS[args.command]
            return handler(client, args, out)
    except DaemonUnreachable as exc:
        print(f"mimoctl: {exc}", file=sys.stderr)
        print(
            "hint: is the daemon running? Start it with `mimocorb2d` (foreground) or "
            "`systemctl start mimocorb2`; use --socket or $MIMOCORB2_SOCKET if it listens elsewhere.",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    except RequestFailed as exc:
        print(f"mimoctl: {args.command} refused: {exc.message}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE if exc.code in (P.E_BAD_REQUEST, P.E_UNKNOWN_COMMAND) else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK if args.command in ("status", "logs") else EXIT_FAILED
    except BrokenPipeError:  # `mimoctl status | head`
        return EXIT_OK


# ---------------------------------------------------------------------------------- commands
def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Validate ``args.setup`` in this process, no daemon needed.

    Prints the summary, warnings and notes to ``out`` and returns 0, or prints the file's
    problems to stderr and returns 1.
    """
    from mimocorb2.errors import SetupError
    from mimocorb2.setup import load_setup

    try:
        setup = load_setup(Path(args.setup))
    except SetupError as exc:
        print(exc.message, file=sys.stderr)  # "PATH: N problems"
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{args.setup}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{setup.path}: ok ({len(setup.buffers)} buffers, {len(setup.workers)} workers)", file=out)
    _print_remarks(setup.warnings, setup.notes, out)
    return EXIT_OK


def _print_remarks(warnings: list[str], notes: list[str], out: TextIO) -> None:
    """The setup's warnings and notes, one per line."""
    for warning in warnings:
        print(f"  warning: {warning}", file=out)
    for note in notes:
        print(f"  note: {note}", file=out)


def cmd_start(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Ask the daemon to start a run of ``args.setup``; print the run directory and the setup's remarks.

    The path is sent absolute: the daemon resolves it in its own working directory.
    """
    request: dict[str, Any] = {"setup": os.path.abspath(args.setup)}
    if args.max_events:
        request["max_events"] = args.max_events
    if args.max_seconds:
        request["max_seconds"] = args.max_seconds
    if args.comment:
        request["comment"] = args.comment
    result = client.call("start", request)
    print(f"run started: {result['directory']}", file=out)
    _print_remarks(result.get("warnings", []), result.get("notes", []), out)
    return EXIT_OK


def cmd_stop(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Stop the run gracefully, print its summary; return 1 if the run ended ``failed``.

    Without ``--no-wait`` this blocks, with no timeout, until the run has drained.
    """
    result = client.call("stop", {"wait": not args.no_wait}, timeout=None)
    _print_summary(result, out)
    return EXIT_OK if result.get("state") != "failed" else EXIT_FAILED


def cmd_abort(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Kill the run's processes now and print the summary; always returns 0.

    Blocks, with no timeout, until the processes are gone; events still in buffers count as lost.
    """
    result = client.call("abort", {}, timeout=None)
    _print_summary(result, out)
    return EXIT_OK


def _print_summary(result: dict[str, Any], out: TextIO) -> None:
    print(f"run {result.get('state')}: {result.get('directory')}", file=out)
    if result.get("reason"):
        print(f"  reason: {result['reason']}", file=out)
    for name, count in (result.get("events") or {}).items():
        print(f"  {name}: {count} events", file=out)
    lost = result.get("lost", 0)
    print(f"  events lost: {lost}" + ("" if not lost else "  (see daemon.log)"), file=out)


def cmd_pause(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Pause ``args.buffers`` (the root buffers when none are named); print the buffers paused."""
    result = client.call("pause", {"buffers": args.buffers})
    print("paused: " + ", ".join(result["paused"]), file=out)
    return EXIT_OK


def cmd_resume(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Resume ``args.buffers`` (the root buffers when none are named); print the buffers resumed."""
    result = client.call("resume", {"buffers": args.buffers})
    print("resumed: " + ", ".join(result["resumed"]), file=out)
    return EXIT_OK


def cmd_shutdown(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Ask the daemon to exit once the run (if any) has drained.

    Returns when the daemon has accepted the request, not when it has exited.
    """
    client.call("shutdown", {})
    print("daemon shutting down (the run, if any, drains first)", file=out)
    return EXIT_OK


def cmd_ping(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print the daemon's version, pid and socket path: proves that it answers requests."""
    result = client.call("ping", {})
    print(f"mimocorb2d {result['version']} pid {result['pid']} at {client.path}", file=out)
    return EXIT_OK


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print the status once: a table, or with ``--json`` one object of the stable schema.

    With ``--watch`` repeat every ``--interval`` seconds until Ctrl-C: redrawn in place on a
    terminal, appended otherwise (one JSON object per line with ``--json``).
    """
    if not args.watch:
        status = client.call("status", {})
        if args.json:
            out.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
        else:
            out.write(format_status(status))
        return EXIT_OK
    tty = out.isatty()
    while True:
        status = client.call("status", {})
        if args.json:
            out.write(json.dumps(status, sort_keys=True) + "\n")
        else:
            text = format_status(status)
            if tty:
                out.write("\x1b[H\x1b[2J" + text)  # home + clear: refresh in place
            else:
                out.write(text + "\n")
        out.flush()
        time.sleep(args.interval)


def cmd_logs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print the worker logs of the current run: one worker's, or all with lines prefixed ``name |``.

    Requests from the offsets already read until nothing new comes; with ``--follow`` it then
    polls every 0.5 s until Ctrl-C.
    """
    offsets: dict[str, int] = {}
    multiple = args.worker is None
    while True:
        result = client.call("logs", {"worker": args.worker, "offsets": offsets})
        got = False
        for chunk in result["files"]:
            offsets[chunk["name"]] = chunk["offset"]
            text = chunk["text"]
            if not text:
                continue
            got = True
            if multiple:
                lines = text.splitlines(keepends=True)
                text = "".join(f"{chunk['name']} | {line}" for line in lines)
            out.write(text)
            if not text.endswith("\n"):
                out.write("\n")
        out.flush()
        if got:
            continue  # more may be waiting beyond max_bytes
        if not args.follow:
            return EXIT_OK
        time.sleep(0.5)


def cmd_web(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Print the web page's viewer address, or with ``--operator`` the one that may act on runs.

    It carries its access token when the page requires tokens. Returns 1 if the daemon serves
    no web page.
    """
    info = client.call("web", {})
    if not info.get("enabled"):
        print("mimoctl: the daemon serves no web page: it was started with --no-web, or the "
              "address of its page was taken when it started (its log names the address; "
              "give it another with --web [HOST:]PORT)", file=sys.stderr)
        return EXIT_FAILED
    url = info["operator_url"] if args.operator else info["viewer_url"]
    print(url, file=out)
    return EXIT_OK


def cmd_ack(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Acknowledge ``args.alarm``, or every current alarm when none is named.

    Prints the ids acknowledged, ``nothing`` when none matched (still exit 0).
    """
    result = client.call("ack", {"alarm": args.alarm})
    print("acknowledged: " + (", ".join(result["acknowledged"]) or "nothing"), file=out)
    return EXIT_OK


COMMANDS = {
    "web": cmd_web,
    "ack": cmd_ack,
    "start": cmd_start,
    "stop": cmd_stop,
    "abort": cmd_abort,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "status": cmd_status,
    "logs": cmd_logs,
    "shutdown": cmd_shutdown,
    "ping": cmd_ping,
}


# ---------------------------------------------------------------------------------- formatting
def _fmt_rate(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f}{unit}"
    return f"{v:.1f}"


def _fmt_age(value: Any) -> str:
    if value is None:
        return "-"
    v = float(value)
    return f"{v:.1f}s" if v < 100 else f"{v / 60:.0f}m"


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_status(status: dict[str, Any]) -> str:
    """The ``status`` reply as the text ``mimoctl status`` prints, ending in a newline.

    State, run and disk, alarms, one line per buffer and per worker, then worker notes.
    Missing keys print as ``-``, ``?`` or 0, so an older daemon's status still formats.
    """
    lines: list[str] = []
    daemon = status.get("daemon") or {}
    run = status.get("run")
    head = f"state: {status.get('state')}"
    if daemon:
        head += f"   daemon pid {daemon.get('pid')} up {_fmt_duration(daemon.get('uptime', 0))}"
    lines.append(head)
    if run:
        lasted = "ran" if run.get("ended_at") else "up"  # uptime stops when the run ends
        lines.append(f"run:   {run.get('directory')}   {lasted} {_fmt_duration(run.get('uptime', 0))}")
        extra = []
        if run.get("stop_reason"):
            extra.append(f"stop reason: {run['stop_reason']}")
        if run.get("lost"):
            extra.append(f"lost: {run['lost']}")
        if run.get("error"):
            extra.append(f"error: {run['error']}")
        if extra:
            lines.append("       " + "   ".join(extra))
        disk = run.get("disk")
        if disk:
            lines.append(f"disk:  {_fmt_bytes(disk.get('free_bytes'))} free of {_fmt_bytes(disk.get('total_bytes'))}"
                         f" (the run stops below {_fmt_bytes(disk.get('min_free_bytes'))})")
    alarms = status.get("alarms") or []
    if alarms:
        lines.append("")
        for alarm in alarms:
            ack = " (acknowledged)" if alarm.get("acknowledged") else ""
            lines.append(f"ALARM {alarm.get('severity', '?').upper()}: {alarm.get('message')}{ack}"
                         f"   [{alarm.get('id')}]")
    buffers = status.get("buffers") or {}
    if buffers:
        lines.append("")
        lines.append(f"{'BUFFER':<20} {'EVENTS':>12} {'RATE/s':>9} {'FILL':>6} {'DEADTIME':>9}  FLAGS")
        for name, b in buffers.items():
            flags = [f for f in ("paused", "ended") if b.get(f)]
            if b.get("root"):
                flags.insert(0, "root")
            lines.append(
                f"{name:<20} {b.get('event_count', 0):>12} {_fmt_rate(b.get('rate')):>9} "
                f"{100 * float(b.get('filled_slots', 0) or 0):>5.0f}% "
                f"{100 * float(b.get('average_deadtime', 0) or 0):>8.2f}%  {' '.join(flags)}"
            )
    workers = status.get("workers") or {}
    if workers:
        lines.append("")
        lines.append(f"{'WORKER':<20} {'PROCS':>7} {'STATE':<11} {'RESTARTS':>8} {'HEARTBEAT':>9} {'CPU':>6}")
        for name, w in workers.items():
            procs = w.get("processes") or []
            alive = sum(1 for p in procs if p.get("alive"))
            ages = [p.get("heartbeat_age") for p in procs if p.get("alive") and p.get("heartbeat_age") is not None]
            cpu = sum(float(p.get("cpu", 0) or 0) for p in procs)
            counts = f"{alive}/{w.get('configured', len(procs))}"
            lines.append(
                f"{name:<20} {counts:>7} {w.get('state', '?'):<11} "
                f"{w.get('restarts', 0):>8} {_fmt_age(max(ages) if ages else None):>9} {cpu:>5.0f}%"
            )
        notes = []
        for name, w in workers.items():
            if w.get("error"):
                notes.append(f"  {name}: failed: {w['error']}")
            if w.get("device_summary"):
                notes.append(f"  {name}: {w['device_summary']}")
            for p in w.get("processes") or []:
                for note in (p.get("loading"), p.get("stuck")):
                    if note:
                        notes.append(f"  {name}#{p.get('index')} (pid {p.get('pid')}): {note}")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def _fmt_bytes(value: Any) -> str:
    """A byte count from the status for a person; ``?`` when the daemon sent none."""
    return human_bytes(value) if isinstance(value, (int, float)) else "?"


if __name__ == "__main__":
    sys.exit(main())
