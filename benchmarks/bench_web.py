#!/usr/bin/env python3
"""What the web page costs a running pipeline: 5 pages open vs none.

    python benchmarks/bench_web.py [--seconds 15] [--rounds 2] [--pages 5]

A real `mimocorb2d` runs the simple example (simulated pulses as fast as the
pipeline takes them; filter, pulse heights, csv, histogram, oscilloscope). Phases
without pages and with N pages (headless Debian Chromium, every panel in view, so
scopes, histograms and logs stream) alternate, round by round. Per phase:

- daemon CPU (% of one core, from /proc); the web side is the difference to the
  phases without pages ("web time": wall time in web handlers and the status ticker)
- the browser's own CPU (all its processes): it shares the machine with the pipeline
- the daemon loop's latency p99 and max (status `loop_lag_last`, sampled at 10 Hz), and
  the p99 of the part of it that was not waiting for a CPU (`loop_blocked_last`: the
  loop's own code)
- the pipeline's root event rate (events/s)

The daemon's loop runs at its default priority (realtime where allowed, see
mimocorb2/supervisor/priority.py); `--loop-priority normal` measures it without.
At full speed (`--rate 0`, the default) the pipeline takes every cycle of the machine,
so the browsers' CPU comes out of its event rate; `--rate R` paces the simulated
source at R events/s, as a detector does, and shows whether the pages cost events.

Targets (not asserted): web side < 3 % of one core, loop latency p99 < 20 ms,
event rate unchanged within noise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mimocorb2.testing import DaemonProcess, descendants

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(root: int, exclude: int) -> dict[int, float]:
    """CPU seconds of each descendant of ``root`` outside the subtree of ``exclude`` (the browser's processes)."""
    out = {}
    for pid in descendants(root, exclude):
        try:
            out[pid] = cpu_seconds(pid)
        except (OSError, ValueError):
            pass
    return out


def fresh_count(daemon: DaemonProcess, buffer: str) -> tuple[int, float]:
    """The event count of ``buffer`` and the time, taken just after the daemon sampled it anew (counts
    are sampled every stats_interval: an old sample would put a second's error on a 15 s rate)."""
    first = daemon.status()["buffers"][buffer]["event_count"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        count = daemon.status()["buffers"][buffer]["event_count"]
        if count != first:
            return count, time.monotonic()
        time.sleep(0.005)
    raise TimeoutError(f"the event count of {buffer} did not change in 10 s")


def on_schedule(daemon: DaemonProcess, rate: float) -> None:
    """Wait until a paced source has caught up (it makes up for events it could not write while
    the pages loaded; measuring that would count them as the pages' gain)."""
    root = daemon.status()["run"]["roots"][0]
    calm = 0
    deadline = time.monotonic() + 60
    while calm < 3 and time.monotonic() < deadline:
        count0, t0 = fresh_count(daemon, root)
        count1, t1 = fresh_count(daemon, root)
        calm = calm + 1 if (count1 - count0) / (t1 - t0) < 1.03 * rate else 0


def measure(daemon: DaemonProcess, seconds: float) -> dict[str, float]:
    root = daemon.status()["run"]["roots"][0]
    events0, t0 = fresh_count(daemon, root)
    cpu0 = cpu_seconds(daemon.pid)
    browser0 = tree_cpu(os.getpid(), daemon.pid)
    busy0 = daemon.call("web")["busy_seconds"]
    lags, blocked = [], []
    while time.monotonic() - t0 < seconds:
        time.sleep(0.1)
        info = daemon.status()["daemon"]
        lags.append(info["loop_lag_last"])
        blocked.append(info["loop_blocked_last"])
    events1, t1 = fresh_count(daemon, root)
    elapsed = t1 - t0
    lags.sort()
    blocked.sort()
    return {
        "daemon_cpu": 100 * (cpu_seconds(daemon.pid) - cpu0) / elapsed,
        "web_loop": 100 * (daemon.call("web")["busy_seconds"] - busy0) / elapsed,
        # processes alive at the end (a page closed meanwhile is not counted)
        "browser_cpu": 100 * sum(cpu - browser0.get(pid, 0.0)
                                 for pid, cpu in tree_cpu(os.getpid(), daemon.pid).items()) / elapsed,
        "lag_p99_ms": 1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))],
        "lag_max_ms": 1000 * lags[-1],
        "blocked_p99_ms": 1000 * blocked[min(len(blocked) - 1, int(0.99 * len(blocked)))],
        "rate": (events1 - events0) / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="events/s of the simulated source (default 0: as fast as the pipeline goes)")
    parser.add_argument("--loop-priority", choices=("realtime", "normal"), default=None,
                        help="the daemon's --loop-priority (default: the daemon's default)")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"bench_web: {CHROMIUM} missing (apt-get install chromium); skipped")
        return 0
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="mimocorb2-bench-web-"))
    shutil.copytree(ROOT / "examples" / "simple", work / "setup", ignore=shutil.ignore_patterns("target"))
    sim = work / "setup" / "simulation_config.yaml"
    text = re.sub(r"(?m)^n_events:.*$", "n_events: 100000000", sim.read_text())
    sim.write_text(re.sub(r"(?m)^rate:.*$", f"rate: {args.rate:g}", text))
    daemon = DaemonProcess(work / "run" / "control.sock", log_path=work / "mimocorb2d.log",
                           extra_args=["--web", "127.0.0.1:0", *(["--loop-priority", args.loop_priority]
                                                                 if args.loop_priority else [])]).start()
    results: dict[str, list[dict[str, float]]] = {"none": [], "pages": []}
    try:
        daemon.call("start", {"setup": str(work / "setup" / "setup.yaml")})
        daemon.wait_for(lambda s: s["buffers"]["PulseParameters"]["event_count"] > 0, 60, "events")
        priority = daemon.status()["daemon"]["loop_priority"]
        url = daemon.call("web")["viewer_url"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.rounds):
                results["none"].append(measure(daemon, args.seconds))
                pages = []
                for _ in range(args.pages):
                    page = browser.new_page(viewport={"width": 1400, "height": 3000})
                    page.goto(url)
                    pages.append(page)
                for page in pages:  # every panel in view and streaming (polled from here: the CSP forbids eval)
                    deadline = time.monotonic() + 60
                    while int(page.get_attribute(".scope", "data-frames") or 0) < 1:
                        if time.monotonic() > deadline:
                            raise TimeoutError("no scope frame on a page within 60 s")
                        time.sleep(0.2)
                if args.rate:
                    on_schedule(daemon, args.rate)
                results["pages"].append(measure(daemon, args.seconds))
                for page in pages:
                    page.close()
                daemon.wait_for(lambda s: True, 5)
            browser.close()
        daemon.call("stop", {})
    finally:
        daemon.stop()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(f"{args.rounds} rounds of {args.seconds:.0f} s, {args.pages} pages"
          f", source {'at full speed' if not args.rate else f'at {args.rate:g} events/s'}, daemon loop priority {priority}, medians:")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'phase':<10} {'daemon CPU':>11} {'web time':>9} {'browser CPU':>12} {'lag p99':>8} {'lag max':>8} "
          f"{'blocked p99':>12} {'events/s':>10}")
    for key, label in (("none", "no page"), ("pages", f"{args.pages} pages")):
        m = med[key]
        print(f"{label:<10} {m['daemon_cpu']:>10.1f}% {m['web_loop']:>8.2f}% {m['browser_cpu']:>11.1f}% "
              f"{m['lag_p99_ms']:>6.1f}ms {m['lag_max_ms']:>6.1f}ms {m['blocked_p99_ms']:>10.1f}ms "
              f"{m['rate']:>10.0f}")
    web_side = med["pages"]["daemon_cpu"] - med["none"]["daemon_cpu"]
    change = 100 * (med["pages"]["rate"] / med["none"]["rate"] - 1) if med["none"]["rate"] else 0.0
    print(f"web side: {web_side:.1f} % of one core (target < 3 %); loop latency p99 with pages "
          f"{med['pages']['lag_p99_ms']:.1f} ms (target < 20 ms); event rate {change:+.1f} % with pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
