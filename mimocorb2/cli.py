"""``mimocorb2`` command line: run a setup in the foreground, check it, list functions.

    mimocorb2 run SETUP.yaml [--max-events N] [--max-seconds T] [--quiet] [--web [[HOST:]PORT]]
    mimocorb2 check SETUP.yaml [--import [--import-timeout T]]
    mimocorb2 functions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from .errors import SetupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimocorb2", description="mimocorb2 data acquisition")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a setup in the foreground until its stream ends")
    run.add_argument("setup", help="setup YAML file")
    run.add_argument("--max-events", type=int, metavar="N", help="stop gracefully once the root buffers took N events")
    run.add_argument("--max-seconds", type=float, metavar="T", help="stop gracefully after T seconds")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the summary (no worker output, no progress)")
    run.add_argument("--web", nargs="?", const=True, default=False, metavar="[HOST:]PORT",
                     help="serve the live web page of this run (default 127.0.0.1:8765, a free port "
                          "if that is taken); prints its address with the operator token")
    run.add_argument("--web-public-url", metavar="URL",
                     help="with --web: the address users open through a reverse proxy, e.g. "
                          "https://daq.lab.example/ (its origin may act; the printed address uses it)")
    check = sub.add_parser("check", help="validate a setup file and print every problem")
    check.add_argument("setup")
    check.add_argument("--import", dest="live_import", action="store_true",
                       help="also import each worker file, in a short-lived child process")
    check.add_argument("--import-timeout", type=float, default=30.0, metavar="T",
                       help="seconds one file may take to import (default 30)")
    sub.add_parser("functions", help="list the prebuilt functions and their config keys")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mimocorb2`` script and of ``python -m mimocorb2``."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.setup, args.import_timeout if args.live_import else None)
    if args.command == "functions":
        from .functions import describe_all

        try:
            print(describe_all(), flush=True)
        except BrokenPipeError:  # `mimocorb2 functions | head`
            sys.stdout = None  # nothing more can be written; keep exit quiet
        return EXIT_OK
    return _run(args)


def _check(path: str, import_timeout: float | None = None) -> int:
    """Validate statically; with ``import_timeout``, also import the worker files in children."""
    from .setup import import_check
    from .setup._load import _check as check_file

    setup, found = check_file(path)
    problems = found.problems
    if setup is not None and import_timeout is not None:
        absolute = f"{setup.path}: "  # shown as the user typed it, like the static problems
        problems = [f"{path}: {line[len(absolute):]}" if line.startswith(absolute) else line
                    for line in import_check(setup, import_timeout)]
    if not problems:
        print(f"{path}: ok")
    else:
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
    print_warnings(found.warnings, found.notes, sys.stdout)
    return EXIT_FAILED if problems else EXIT_OK


def print_warnings(warnings: Sequence[str], notes: Sequence[str], out: TextIO) -> None:
    """Warnings and notes of a setup, one per line (nothing when there are none)."""
    for warning in warnings:
        print(f"  warning: {warning}", file=out)
    for note in notes:
        print(f"  note: {note}", file=out)


def _run(args: argparse.Namespace) -> int:
    """The daemon's run engine in this process (``mimocorb2.supervisor.foreground``)."""
    from .runtime import LogEcho, read_setup_failure, start_worker_server
    from .setup import load_setup
    from .supervisor.foreground import RunError, run_in_foreground
    from .supervisor.logs import last_error_line

    for flag, value in (("--max-events", args.max_events), ("--max-seconds", args.max_seconds)):
        if value is not None and value <= 0:
            print(f"mimocorb2 run: {flag} must be > 0, got {value}", file=sys.stderr)
            return EXIT_USAGE
    start_worker_server()  # the worker processes' forkserver warms up while the setup is read
    try:
        setup = load_setup(args.setup)
    except SetupError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    print_warnings(setup.warnings, setup.notes, sys.stderr)
    echo = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    log_echo = None if args.quiet else LogEcho(
        {name: w.number_of_processes for name, w in setup.workers.items()})
    try:
        report = run_in_foreground(setup, max_events=args.max_events, max_seconds=args.max_seconds,
                                   echo=echo, quiet=args.quiet, log_echo=log_echo, web=args.web,
                                   web_public_url=args.web_public_url)
    except RunError as exc:
        print(f"mimocorb2 run: {exc.message}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    print(f"run directory: {report.run_dir}")
    if report.stop_reason:
        print(f"stopped: {report.stop_reason}")
    width = max((len(name) for name in report.event_counts), default=0)
    lost_by_buffer = report.summary.get("lost_by_buffer", {})
    for name, stats in report.stats.items():
        extra = ""
        lost = lost_by_buffer.get(name, 0)
        if lost or stats.get("paused_count"):
            extra = f"  (lost {lost}, discarded while paused {stats.get('paused_count', 0)})"
        print(f"  {name:<{width}}  {stats.get('event_count', 0):>10} events{extra}")
    if report.aborted:
        print("run aborted", file=sys.stderr)
        return EXIT_FAILED
    for worker, codes in report.failed_workers.items():
        print(f"worker '{worker}' failed (exit codes {codes}); see {report.run_dir / 'logs' / (worker + '.log')}",
              file=sys.stderr)
        reason = read_setup_failure(report.run_dir, worker)
        if reason:
            print(f"  it could not start: {reason}", file=sys.stderr)
        else:
            error = last_error_line(report.run_dir / "logs" / f"{worker}.log")
            if error:
                print(f"  its last error: {error}", file=sys.stderr)
    if report.error and not report.failed_workers:
        print(f"run failed: {report.error}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
