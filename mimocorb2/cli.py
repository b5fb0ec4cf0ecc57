"""``mimocorb2`` command line: run a setup in the foreground, check it, list functions.

    mimocorb2 run SETUP.yaml [--max-events N] [--max-seconds T]
    mimocorb2 check SETUP.yaml
    mimocorb2 functions
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import SetupError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimocorb2", description="mimocorb2 data acquisition")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a setup in the foreground until its stream ends")
    run.add_argument("setup", help="setup YAML file")
    run.add_argument("--max-events", type=int, metavar="N", help="stop gracefully once the root buffers took N events")
    run.add_argument("--max-seconds", type=float, metavar="T", help="stop gracefully after T seconds")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    check = sub.add_parser("check", help="validate a setup file and print every problem")
    check.add_argument("setup")
    sub.add_parser("functions", help="list the prebuilt functions and their config keys")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mimocorb2`` script and of ``python -m mimocorb2``."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.setup)
    if args.command == "functions":
        from .functions import describe_all

        try:
            print(describe_all(), flush=True)
        except BrokenPipeError:  # `mimocorb2 functions | head`
            sys.stdout = None  # nothing more can be written; keep exit quiet
        return EXIT_OK
    return _run(args)


def _check(path: str) -> int:
    from .setup import check_setup

    problems = check_setup(path)
    if not problems:
        print(f"{path}: ok")
        return EXIT_OK
    print(f"{path}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")
    return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from .runtime import Runner, start_worker_server
    from .setup import load_setup

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
    echo = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    runner = Runner(setup, max_events=args.max_events, max_seconds=args.max_seconds, echo=echo)
    report = runner.run()
    print(f"run directory: {report.run_dir}")
    if report.stop_reason:
        print(f"stopped: {report.stop_reason}")
    width = max((len(name) for name in report.event_counts), default=0)
    for name, stats in report.stats.items():
        extra = ""
        if stats["lost"] or stats["paused_count"]:
            extra = f"  (lost {stats['lost']}, discarded while paused {stats['paused_count']})"
        print(f"  {name:<{width}}  {stats['event_count']:>10} events{extra}")
    if report.aborted:
        print("run aborted", file=sys.stderr)
        return EXIT_FAILED
    for worker, codes in report.failed_workers.items():
        print(f"worker '{worker}' failed (exit codes {codes}); see {report.run_dir / 'logs' / (worker + '.log')}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
