"""`make demo`: the daemon, a run through the socket, live status, stop, outputs.

    python -m mimocorb2.demo [--seconds 20] [--dir DIR]

Starts `mimocorb2d` in the foreground (a child process of this script, not
daemonised) on a private socket, starts the bundled example on a simulated
source with `mimoctl start`, shows `mimoctl status` live, stops the run with
`mimoctl stop`, shuts the daemon down and prints where the outputs are.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import mimocorb2
from mimocorb2.control import mimoctl
from mimocorb2.control.mimoctl import format_status
from mimocorb2.testing import DaemonProcess


def bundled_example() -> Path:
    """The directory of the bundled example (examples/simple of the source tree)."""
    candidate = Path(mimocorb2.__file__).parent.parent / "examples" / "simple"
    if (candidate / "setup.yaml").exists():
        return candidate
    raise SystemExit(f"no bundled example found ({candidate / 'setup.yaml'})")


def _start_daemon(sock: Path, log_path: Path, setup: Path) -> DaemonProcess:
    """The daemon with its web page on 127.0.0.1:8765, or on a free port if that one is taken."""
    for listen in (os.environ.get("DEMO_WEB", "127.0.0.1:8765"), "127.0.0.1:0"):
        daemon = DaemonProcess(sock, log_path=log_path, extra_args=["--web", listen, "--web-setup", str(setup)])
        try:
            return daemon.start()
        except RuntimeError:
            daemon.stop()
    raise SystemExit(f"mimocorb2d did not start; see {log_path}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo (see the module docstring) in ``--dir`` or a new directory under /tmp.

    Blocks for about ``--seconds`` plus the stop. Returns 0 if the run ended ``finished``
    without losing events, else 1; the daemon is stopped in every case, the outputs are kept.
    """
    parser = argparse.ArgumentParser(prog="mimocorb2-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", 20)))
    parser.add_argument("--dir", help="working directory (default: a new one under /tmp)")
    args = parser.parse_args(argv)

    example = bundled_example()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mimocorb2-demo-"))
    setup_dir = work / "setup"
    shutil.copytree(example, setup_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("target", "__pycache__"))
    setup = setup_dir / "setup.yaml"
    sim = setup_dir / "simulation_config.yaml"
    if example.name == "simple" and sim.exists():
        # the fallback example ends after 5000 events at full speed: make it a steady source
        import re

        text = sim.read_text()
        text = re.sub(r"(?m)^n_events:.*$", "n_events: 10000000", text)
        text = re.sub(r"(?m)^rate:.*$", "rate: 2000", text)
        sim.write_text(text)
    sock = work / "run" / "control.sock"
    say = lambda text: print(f"\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"== {text}", flush=True)  # noqa: E731

    say(f"mimocorb2d on {sock} (its log: {work / 'mimocorb2d.log'})")
    daemon = _start_daemon(sock, work / "mimocorb2d.log", setup)
    ctl = ["--socket", str(sock)]
    web = daemon.call("web")
    if web.get("enabled"):
        say(f"web page while the demo runs: {web['operator_url']}")
    code = 1
    try:
        say(f"mimoctl start {setup}")
        if mimoctl.main([*ctl, "start", str(setup)]) != 0:
            return 1
        say(f"live status for {args.seconds:.0f} s (mimoctl status --watch)")
        tty = sys.stdout.isatty()
        deadline = time.monotonic() + args.seconds
        last_print = 0.0
        status = daemon.status()
        while time.monotonic() < deadline and status["state"] in ("starting", "running", "paused"):
            status = daemon.status()
            now = time.monotonic()
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + format_status(status))
                sys.stdout.flush()
            elif now - last_print >= 5:
                print(format_status(status), flush=True)
                last_print = now
            time.sleep(1.0)
        if status["state"] in ("starting", "running", "paused"):
            say("mimoctl stop")
            code = mimoctl.main([*ctl, "stop"])
        else:
            say(f"the run ended by itself: {status['state']}")
            code = 0 if status["state"] == "finished" else 1
        final = daemon.status()
        print(format_status(final), flush=True)
        say("mimoctl shutdown")
        mimoctl.main([*ctl, "shutdown"])
        daemon.wait_exit(60)
        run_dir = Path(final["run"]["directory"])
        say("outputs")
        print(f"run directory: {run_dir}")
        for path in sorted(run_dir.rglob("*")):
            if path.is_file():
                print(f"  {path.relative_to(run_dir)}  ({path.stat().st_size} bytes)")
        print(f"daemon log:    {work / 'mimocorb2d.log'}")
        if final["run"]["lost"]:
            print(f"events lost: {final['run']['lost']}")
            code = 1
    finally:
        daemon.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
