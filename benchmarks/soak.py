#!/usr/bin/env python3
"""Soak run: a multi-stage pipeline under a real `mimocorb2d`, optionally with web pages open.

    python benchmarks/soak.py [--minutes M] [--rate R] [--pages N] [--chaos SECONDS]
    (make soak; SOAK_MINUTES=10 SOAK_RATE=0 SOAK_PAGES=0)

Pipeline (every stage a worker template, real processes, real shared memory):

    source (Importer; as fast as it can, or --rate R events/s) -> raw -> select (Filter, 2 processes) -> selected
        raw -> tap (Exporter, a second reader group: fan-out)
        selected -> relay (Exporter copying to a sink, 2 processes) -> out -> count (Exporter, 2 processes)

With ``--pages N`` (N > 0) the daemon serves its web page and the pipeline also has
the workers whose panels the page shows, so the page streams everything it can:

        raw -> scope (observers.oscilloscope: a copy of the latest event, twice a second)
        selected -> heights (Processor: pulse height of ch2) -> heights -> histogram (exporters.histogram)

and the source writes ten log lines a second (the page's log tail reaches its bound of
2000 lines within the warm-up). N headless Chromium pages (Debian's /usr/bin/chromium) open
the viewer URL for the whole soak, tall enough that every panel is in view.

Sampled once a minute (``--sample-every``) and at the start and end: the RSS of the daemon
and of each worker process, the daemon loop's lag p99 over the interval (status polled four
times a second), the pages the daemon counts; per page, after a garbage collection, the JS
heap used, DOM nodes and JS event listeners (Chromium DevTools Protocol
``Performance.getMetrics``), log lines in the DOM, WebSocket frames and bytes received;
the browser processes' PSS (with the Playwright driver). Growth per hour of each quantity
is the slope of a least-squares line through the samples after the warm-up (``--warmup``,
default a fifth of the run, at most 5 minutes), not end minus start. The samples go to
``soak-samples.json`` in the work directory as they are taken.

With ``--chaos N`` one worker process is killed with SIGKILL every N seconds to exercise
reclaim and restarts (then "lost" may be non-zero only for slots a killed *writer* held;
the report says so).
Exit status 0 when nothing was lost and every stage saw every event.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from mimocorb2.testing import DaemonProcess, descendants

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: seconds between two status polls (the loop-lag percentile is taken over these)
POLL = 0.25

FUNCS = '''
import time
import numpy as np
from mimocorb2.sim.pulses import paced
from mimocorb2.worker_templates import Importer, Exporter, Filter, Processor

def source(io):
    """ch1[0] counts the events; with panels, ch2 is a triangular pulse of random height and
    a line goes to the log ten times a second."""
    imp = Importer(io)
    rate = float(io.get("rate", 0) or 0)
    panels = bool(io.get("panels", False))
    def gen():
        d = np.zeros(imp.data_example.shape, imp.data_example.dtype)
        n = len(d)
        pulse = np.clip(1.0 - np.abs(np.arange(n) - n // 4) / 10.0, 0.0, None).astype(np.float32)
        rng = np.random.default_rng(1)
        next_line = time.monotonic()
        i = 0
        while True:
            d["ch1"][0] = i
            if panels:
                d["ch2"] = pulse * np.float32(rng.random())
                if time.monotonic() >= next_line:
                    print(f"source: {i} events written", flush=True)
                    next_line += 0.1
            yield d
            i += 1
    def events():
        yield from paced(gen(), rate)
    imp(events)

def select(io):
    Filter(io)(lambda data: True)

def relay(io):
    for data, meta in Exporter(io):
        pass

def heights(io):
    proc = Processor(io)
    out = io.data_out_examples[0]
    def height(data):
        o = np.zeros(out.shape, out.dtype)
        o["height"] = float(data["ch2"].max())
        return [o]
    proc(height)

def count(io):
    n = 0
    for data, meta in Exporter(io):
        n += 1
    (io.run_dir / f"count-{io.name}-{__import__('os').getpid()}.txt").write_text(str(n))
'''

BUFFERS = """\
Buffers:
  raw:      {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
  selected: {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
  out:      {slot_count: 128, data_length: 256, data_dtype: {ch1: float32, ch2: float32}}
"""
PANEL_BUFFERS = """\
  heights:  {slot_count: 256, data_length: 1, data_dtype: {height: float32}}
"""
WORKERS = """\
Workers:
  source: {file: funcs.py, function: source, sinks: [raw], config: {rate: RATE, panels: PANELS}}
  tap:    {file: funcs.py, function: count, sources: [raw]}
  select: {file: funcs.py, function: select, sources: [raw], sinks: [selected], number_of_processes: 2}
  relay:  {file: funcs.py, function: relay, sources: [selected], sinks: [out], number_of_processes: 2}
  count:  {file: funcs.py, function: count, sources: [out], number_of_processes: 2}
"""
PANEL_WORKERS = """\
  scope:     {function: observers.oscilloscope, observes: [raw], config: {channels: [ch1, ch2], update_interval: 0.5}}
  heights:   {file: funcs.py, function: heights, sources: [selected], sinks: [heights]}
  histogram: {function: exporters.histogram, sources: [heights],
              config: {update_interval: 2, bins: {height: [0.0, 1.0, 50]}}}
"""
SETTINGS = """\
stats_interval: 1
drain_timeout: 60
"""


def setup_text(rate: float, panels: bool, chaos: bool) -> str:
    """The soak's setup file: the base pipeline, with the panels' workers if ``panels``."""
    text = (BUFFERS + (PANEL_BUFFERS if panels else "") + WORKERS + (PANEL_WORKERS if panels else "")
            + SETTINGS)
    text = text.replace("RATE", f"{rate:g}").replace("PANELS", "true" if panels else "false")
    if chaos:  # kills are the test here, not a reason to give a worker up
        text = text.replace("function: ", "max_restarts: 1000, function: ")
    return text


# ---------------------------------------------------------------------------- processes
def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kib(pid: int) -> int | None:
    """Proportional set size: shared pages split among their users (Chromium's processes share a lot)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def snapshot(daemon: DaemonProcess, status: dict[str, Any]) -> dict[str, int | None]:
    out = {f"mimocorb2d[{daemon.pid}]": rss_kib(daemon.pid)}
    for name, w in status["workers"].items():
        for p in w["processes"]:
            if p["alive"]:
                out[f"{name}#{p['index']}[{p['pid']}]"] = rss_kib(p["pid"])
    return out


# ---------------------------------------------------------------------------- pages
class PageProbe:
    """One open page: its DevTools session and the WebSocket traffic it received."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 3000})  # every panel in view
        self.frames = 0
        self.bytes = 0
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._on_frame))
        self.page.goto(url)
        self.cdp = self.page.context.new_cdp_session(self.page)
        self.cdp.send("Performance.enable")

    def _on_frame(self, payload: str | bytes) -> None:
        self.frames += 1
        self.bytes += len(payload)

    def streaming(self) -> bool:
        """The page shows scope frames, histogram entries and log lines."""
        frames = int(self.page.get_attribute(".scope", "data-frames") or 0)
        entries = self.page.locator(".histogram[data-entries]").count()
        return frames > 0 and entries > 0 and self.page.locator("#logs .line").count() > 0

    def metrics(self) -> dict[str, float]:
        """After a garbage collection: JS heap used (KiB), DOM nodes, JS event listeners; and counters."""
        for _ in range(2):  # DOM nodes a render just replaced may survive one collection
            self.cdp.send("HeapProfiler.collectGarbage")
        m = {x["name"]: x["value"] for x in self.cdp.send("Performance.getMetrics")["metrics"]}
        return {"js_heap_kib": m["JSHeapUsedSize"] / 1024, "dom_nodes": m["Nodes"],
                "js_listeners": m["JSEventListeners"], "log_lines_in_dom": self.page.locator("#logs .line").count(),
                "ws_frames": self.frames, "ws_kib": self.bytes / 1024}


@contextmanager
def open_pages(n: int, url: str) -> Iterator[list[PageProbe]]:
    """``n`` pages of a headless Chromium on ``url``, streaming every panel; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            probes = [PageProbe(browser, url) for _ in range(n)]
            for probe in probes:
                deadline = time.monotonic() + 120
                while not probe.streaming():
                    if time.monotonic() > deadline:
                        raise TimeoutError("a page shows no scope frame, histogram or log line within 120 s")
                    probe.page.wait_for_timeout(250)
            yield probes
        finally:
            browser.close()


def pause(probes: list[PageProbe], seconds: float) -> None:
    """Wait; with pages, inside Playwright so that their WebSocket events are counted meanwhile."""
    if probes:
        probes[0].page.wait_for_timeout(seconds * 1000)
    else:
        time.sleep(seconds)


# ---------------------------------------------------------------------------- samples
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def take_sample(t: float, daemon: DaemonProcess, status: dict[str, Any], lags: list[float],
                probes: list[PageProbe]) -> dict[str, float]:
    """One row of figures (name -> value) at ``t`` seconds into the soak."""
    row: dict[str, float] = {"t": round(t, 1), "load_average_1min": os.getloadavg()[0]}
    row["daemon RSS KiB"] = rss_kib(daemon.pid) or 0
    for name, w in status["workers"].items():
        for p in w["processes"]:
            if p["alive"]:
                row[f"{name}#{p['index']} RSS KiB"] = rss_kib(p["pid"]) or 0
    row["loop lag p99 ms"] = round(1000 * percentile(lags, 0.99), 2)
    if probes:
        row["pages the daemon serves"] = daemon.call("web")["pages"]
        row["browser PSS KiB"] = sum(pss_kib(pid) or 0 for pid in descendants(os.getpid(), daemon.pid))
        for k, probe in enumerate(probes):
            for key, value in probe.metrics().items():
                row[f"page{k} {key.replace('_', ' ')}"] = round(value, 1)
    return row


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour; None for fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


#: counters: reported as a rate over the run, not as growth
COUNTERS = ("ws frames", "ws kib")


def growth_table(samples: list[dict[str, float]], warmup: float) -> list[dict[str, Any]]:
    """Per quantity: first and last value after the warm-up, and the fitted growth per hour."""
    names = [k for k in samples[0] if k not in ("t", "load_average_1min")]
    names += [k for s in samples for k in s if k not in names and k not in ("t", "load_average_1min")]
    steady = [s for s in samples if s["t"] >= warmup] or samples
    out = []
    for name in dict.fromkeys(names):
        points = [(s["t"], float(s[name])) for s in steady if name in s]
        if not points:
            continue
        if name.endswith(COUNTERS):
            span = points[-1][0] - points[0][0]
            rate = (points[-1][1] - points[0][1]) / span if span else None
            out.append({"quantity": name + " per s", "first": None, "last": None,
                        "per_hour": round(rate, 2) if rate is not None else None, "kind": "rate"})
            continue
        slope = slope_per_hour(points)
        out.append({"quantity": name, "first": points[0][1], "last": points[-1][1],
                    "per_hour": round(slope, 2) if slope is not None else None, "kind": "growth"})
    return out


def print_growth(table: list[dict[str, Any]], warmup: float) -> None:
    print(f"\nafter the warm-up ({warmup / 60:.1f} min): first -> last, growth per hour (least-squares line)")
    for row in table:
        if row["kind"] == "rate":
            print(f"  {row['quantity']:<36} {'':>23} {row['per_hour']!s:>12}  (mean over the run)")
            continue
        first, last, slope = row["first"], row["last"], row["per_hour"]
        rel = f"{100 * slope / first:+.2f} %/h" if slope is not None and first else ""
        print(f"  {row['quantity']:<36} {first:>10.1f} -> {last:>10.1f} {slope!s:>12}/h  {rel}")


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 0)),
                        help="events/s of the source (default 0: as fast as the pipeline takes them)")
    parser.add_argument("--pages", type=int, default=int(os.environ.get("SOAK_PAGES", 0)),
                        help="headless Chromium pages open on the daemon's web page (default 0)")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples (60)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="minutes left out of the growth fit (default: a fifth of the run, at most 5)")
    parser.add_argument("--chaos", type=float, default=0.0, help="kill a worker process every N s")
    parser.add_argument("--dir", help="working directory (default: new one under /tmp)")
    args = parser.parse_args(argv)
    if args.pages and not os.path.exists(CHROMIUM):
        print(f"soak: {CHROMIUM} missing (apt-get install chromium) but --pages {args.pages} asked for")
        return 2
    warmup = 60 * (args.warmup if args.warmup is not None else min(5.0, args.minutes / 5))
    panels = args.pages > 0

    work = Path(args.dir or tempfile.mkdtemp(prefix="mimocorb2-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "funcs.py").write_text(FUNCS)
    (work / "setup.yaml").write_text(setup_text(args.rate, panels, bool(args.chaos)))
    load_start = os.getloadavg()
    print(f"soak: {args.minutes} min, source {'at ' + format(args.rate, 'g') + ' events/s' if args.rate else 'unpaced'}"
          f", {args.pages} pages, in {work}; load average {load_start[0]:.2f} on {os.cpu_count()} cores", flush=True)
    web_args = ["--web", "127.0.0.1:0"] if panels else []
    daemon = DaemonProcess(work / "run" / "control.sock", log_path=work / "mimocorb2d.log", extra_args=web_args)
    daemon.start()
    samples: list[dict[str, float]] = []
    try:
        run_dir = Path(daemon.call("start", {"setup": str(work / "setup.yaml")})["directory"])
        status = daemon.wait_for(lambda s: all(w["alive"] == w["configured"] for w in s["workers"].values())
                                 and s["buffers"]["raw"]["event_count"] > 10000, 60, "pipeline running")
        with ExitStack() as stack:
            probes = stack.enter_context(open_pages(args.pages, daemon.call("web")["viewer_url"])) if panels else []
            status = daemon.status()
            rss_start = snapshot(daemon, status)
            t_start = time.monotonic()
            samples.append(take_sample(0.0, daemon, status, [status["daemon"]["loop_lag_last"]], probes))
            end = t_start + args.minutes * 60
            next_report = t_start + 30
            next_sample = t_start + args.sample_every
            next_kill = t_start + args.chaos if args.chaos else float("inf")
            kills = 0
            lags: list[float] = []
            steady_lag = 0.0  # worst loop lag seen in the one-minute windows after the start-up
            while time.monotonic() < end:
                pause(probes, POLL)
                status = daemon.status()
                lags.append(status["daemon"]["loop_lag_last"])
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
                if now >= next_sample:
                    samples.append(take_sample(now - t_start, daemon, status, lags, probes))
                    # a long soak's record so far
                    (work / "soak-samples.json").write_text(json.dumps(samples, indent=1))
                    lags = []
                    next_sample += args.sample_every
                if now >= next_report:
                    raw = status["buffers"]["raw"]
                    lag_recent = status["daemon"].get("loop_lag_recent_max", 0.0)
                    if now - t_start > 70:  # windows that no longer include the start-up
                        steady_lag = max(steady_lag, lag_recent)
                    last = samples[-1]
                    pages = "".join(f" page{k}: heap {last[f'page{k} js heap kib']:.0f} KiB, "
                                    f"{last[f'page{k} dom nodes']:.0f} nodes;" for k in range(len(probes)))
                    print(f"  t={now - t_start:6.0f}s raw={raw['event_count']} rate={raw['rate']:.0f}/s "
                          f"loop lag: last minute {lag_recent * 1e3:.1f} ms, since start "
                          f"{status['daemon']['loop_lag_max'] * 1e3:.1f} ms; daemon RSS "
                          f"{last['daemon RSS KiB']} KiB;{pages} load {os.getloadavg()[0]:.2f}", flush=True)
                    next_report = now + 30
            status = daemon.status()
            samples.append(take_sample(time.monotonic() - t_start, daemon, status, lags, probes))
            rss_end = snapshot(daemon, status)
            elapsed = time.monotonic() - t_start
        final = daemon.status()
        if final["state"] in ("running", "paused", "stopping"):
            summary = daemon.call("stop", {}, timeout=None)
            final = daemon.status()
        else:
            summary = {"state": final["state"]}
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.call("shutdown")
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait_exit(60)
        code = daemon.stop()
        (work / "soak-samples.json").write_text(json.dumps(samples, indent=1))

    counts: dict[str, int] = {}
    for f in run_dir.glob("count-*.txt"):
        worker = f.name.split("-")[1]
        counts[worker] = counts.get(worker, 0) + int(f.read_text())
    buffers = final["buffers"]
    restarts = sum(w["restarts"] for w in final["workers"].values())
    table = growth_table(samples, warmup)
    load_end = os.getloadavg()
    report = {
        "minutes": round(elapsed / 60, 2),
        "source_rate_asked": args.rate or "unpaced",
        "pages": args.pages,
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
        "daemon_loop_lag_p99_ms_worst_minute": max(s["loop lag p99 ms"] for s in samples),
        "load_average_1_5_15_start": [round(x, 2) for x in load_start],
        "load_average_1_5_15_end": [round(x, 2) for x in load_end],
        "load_average_mean_of_samples": round(sum(s["load_average_1min"] for s in samples) / len(samples), 2),
        "growth_per_hour": {row["quantity"]: row["per_hour"] for row in table},
        "note": "loop latency includes CPU starvation on a busy machine, not only blocking",
        "samples": str(work / "soak-samples.json"),
        "daemon_exit_code": code,
        "state": summary["state"],
    }
    print("\nRSS (KiB) at start -> end:")
    for key in sorted(set(rss_start) | set(rss_end)):
        a, b = rss_start.get(key), rss_end.get(key)
        delta = f"{b - a:+d}" if a is not None and b is not None else "(restarted)"
        print(f"  {key:<28} {a if a is not None else '-':>9} -> {b if b is not None else '-':>9}  {delta}")
    print_growth(table, warmup)
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
        if panels:
            ok = ok and buffers["heights"]["event_count"] == raw_n
    print("\nsoak: OK" if ok else "\nsoak: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
