#!/usr/bin/env python3
"""Soak run: a multi-stage pipeline at high rate under a real `mimocorb2d`.

    python benchmarks/soak.py [--minutes M] [--chaos SECONDS]      (make soak; SOAK_MINUTES=10)

Pipeline (every stage a worker template, real processes, real shared memory):

    source (Importer, as fast as it can) -> raw -> select (Filter, 2 processes) -> selected
        raw -> tap (Exporter, a second reader group: fan-out)
        selected -> relay (Exporter copying to a sink, 2 processes) -> out -> count (Exporter, 2 processes)

Reports each process's RSS shortly after the start and at the end, events per
stage, events lost (must be 0), restarts, and the daemon loop's worst latency.
With --chaos N one worker process is killed with SIGKILL every N seconds to
exercise reclaim and restarts (then "lost" may be non-zero only for slots a
killed *writer* held; the report says so).
Exit status 0 when nothing was lost and every stage saw every event.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from mimocorb2.testing import DaemonProcess

FUNCS = '''
import numpy as np
from mimocorb2.worker_templates import Importer, Exporter, Filter

def source(io):
    imp = Importer(io)
    def gen():
        d = np.zeros(imp.data_example.shape, imp.data_example.dtype)
        i = 0
        while True:
            d["ch1"][0] = i
            yield d
            i += 1
    imp(gen)

def select(io):
    Filter(io)(lambda data: True)

def relay(io):
    for data, meta in Exporter(io):
        pass

def count(io):
    n = 0
    for data, meta in Exporter(io):
        n += 1
    (io.run_dir / f"count-{io.name}-{__import__('os').getpid()}.txt").write_text(str(n))
'''

SETUP = """\
Buffers:
  raw:      {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
  selected: {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
  out:      {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
Workers:
  source: {file: funcs.py, function: source, sinks: [raw]}
  tap:    {file: funcs.py, function: count, sources: [raw]}
  select: {file: funcs.py, function: select, sources: [raw], sinks: [selected], number_of_processes: 2}
  relay:  {file: funcs.py, function: relay, sources: [selected], sinks: [out], number_of_processes: 2}
  count:  {file: funcs.py, function: count, sources: [out], number_of_processes: 2}
stats_interval: 1
drain_timeout: 60
"""


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def snapshot(daemon: DaemonProcess, status: dict) -> dict[str, int | None]:
    out = {f"mimocorb2d[{daemon.pid}]": rss_kib(daemon.pid)}
    for name, w in status["workers"].items():
        for p in w["processes"]:
            if p["alive"]:
                out[f"{name}#{p['index']}[{p['pid']}]"] = rss_kib(p["pid"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--chaos", type=float, default=0.0, help="kill a worker process every N s")
    parser.add_argument("--dir", help="working directory (default: new one under /tmp)")
    args = parser.parse_args(argv)

    work = Path(args.dir or tempfile.mkdtemp(prefix="mimocorb2-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "funcs.py").write_text(FUNCS)
    setup_text = SETUP
    if args.chaos:
        # kills are the test here, not a reason to give a worker up
        setup_text = setup_text.replace("function: ", "max_restarts: 1000, function: ")
    (work / "setup.yaml").write_text(setup_text)
    print(f"soak: {args.minutes} min in {work}", flush=True)
    daemon = DaemonProcess(work / "run" / "control.sock", log_path=work / "mimocorb2d.log")
    daemon.start()
    try:
        run_dir = Path(daemon.call("start", {"setup": str(work / "setup.yaml")})["directory"])
        status = daemon.wait_for(lambda s: all(w["alive"] == w["configured"] for w in s["workers"].values())
                                 and s["buffers"]["raw"]["event_count"] > 10000, 60, "pipeline running")
        rss_start = snapshot(daemon, status)
        t_start = time.monotonic()
        end = t_start + args.minutes * 60
        next_report = t_start + 30
        next_kill = t_start + args.chaos if args.chaos else float("inf")
        kills = 0
        steady_lag = 0.0  # worst loop lag seen in the one-minute windows after the start-up
        while time.monotonic() < end:
            time.sleep(1.0)
            status = daemon.status()
            if status["state"] not in ("running", "paused"):
                print(f"run left running state: {status['state']} {status['run']}", flush=True)
                break
            now = time.monotonic()
            if now >= next_kill:
                victims = [p["pid"] for n, w in status["workers"].items() if n != "source"
                           for p in w["processes"] if p["alive"]]
                if victims:
                    os.kill(random.choice(victims), signal.SIGKILL)
                    kills += 1
                next_kill = now + args.chaos
            if now >= next_report:
                raw = status["buffers"]["raw"]
                lag_recent = status["daemon"].get("loop_lag_recent_max", 0.0)
                if now - t_start > 70:  # windows that no longer include the start-up
                    steady_lag = max(steady_lag, lag_recent)
                print(f"  t={now - t_start:6.0f}s raw={raw['event_count']} rate={raw['rate']:.0f}/s "
                      f"loop lag: last minute {lag_recent * 1e3:.1f} ms, since start "
                      f"{status['daemon']['loop_lag_max'] * 1e3:.1f} ms", flush=True)
                next_report = now + 30
        rss_end = snapshot(daemon, daemon.status())
        elapsed = time.monotonic() - t_start
        final = daemon.status()
        if final["state"] in ("running", "paused", "stopping"):
            summary = daemon.call("stop", {}, timeout=None)
            final = daemon.status()
        else:
            summary = {"state": final["state"]}
    finally:
        daemon.call("shutdown") if daemon.proc and daemon.proc.poll() is None else None
        code = daemon.stop()

    counts: dict[str, int] = {}
    for f in run_dir.glob("count-*.txt"):
        worker = f.name.split("-")[1]
        counts[worker] = counts.get(worker, 0) + int(f.read_text())
    buffers = final["buffers"]
    restarts = sum(w["restarts"] for w in final["workers"].values())
    report = {
        "minutes": round(elapsed / 60, 2),
        "events": {n: b["event_count"] for n, b in buffers.items()},
        "rate_per_s": round(buffers["raw"]["event_count"] / elapsed, 1),
        "counted": counts,
        "lost": final["run"]["lost"],
        "lost_in_crashes": final["run"]["lost_in_crashes"],
        "lost_in_buffers": final["run"]["lost_in_buffers"],
        "redelivered": final["run"]["redelivered"],
        "restarts": restarts,
        "kills": kills,
        "daemon_loop_worst_latency_ms": round(final["daemon"]["loop_lag_max"] * 1e3, 2),
        "daemon_loop_worst_latency_steady_ms": round(steady_lag * 1e3, 2),
        "note": "loop latency includes CPU starvation on a busy machine, not only blocking",
        "daemon_exit_code": code,
        "state": summary["state"],
    }
    print("\nRSS (KiB) at start -> end:")
    for key in sorted(set(rss_start) | set(rss_end)):
        a, b = rss_start.get(key), rss_end.get(key)
        delta = f"{b - a:+d}" if a is not None and b is not None else "(restarted)"
        print(f"  {key:<28} {a if a is not None else '-':>9} -> {b if b is not None else '-':>9}  {delta}")
    print("\n" + json.dumps(report, indent=2))
    raw_n, out_n = buffers["raw"]["event_count"], buffers["out"]["event_count"]
    ok = report["state"] == "finished" and code == 0
    if kills:
        # A killed reader's slot is delivered again (duplicates possible); an event a killed
        # *writer* was writing is lost and counted. Nothing may go unaccounted for, and the
        # drain must leave nothing in the buffers. (Killed counters never wrote their totals.)
        crashes = final["run"]["lost_in_crashes"]
        ok = ok and final["run"]["lost_in_buffers"] == 0
        ok = ok and raw_n - crashes <= out_n <= raw_n + report["redelivered"]
    else:
        ok = ok and report["lost"] == 0
        ok = ok and counts.get("tap") == raw_n and counts.get("count") == out_n == raw_n
    print("\nsoak: OK" if ok else "\nsoak: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
