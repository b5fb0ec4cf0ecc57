"""Cost of showing worker output live: `mimocorb2 run` with and without --quiet.

A source writes EVENTS events as fast as it can into a buffer drained by a reader,
while another worker prints LINES lines. The data path's time (first to last event
of the source, from its own clock) is compared with the echo on (output read from
a pipe, as a terminal would) and off (--quiet), and every printed line is counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = 200_000
LINES = 100_000

FUNCS = """\
import time
import numpy as np


def source(io):
    writer = io.write[0]
    start = time.perf_counter()
    for i in range(io.config["events"]):
        with writer as (_metadata, data):
            data[0]["x"] = i
    print(f"DATAPATH {time.perf_counter() - start:.3f}")


def talker(io):
    for i in range(io.config["lines"]):
        print(f"talk {i}")


def drain(io):
    reader = io.read[0]
    while True:
        with reader as (_metadata, data):
            if data is None:
                return
"""

SETUP = f"""\
Buffers:
  raw: {{slot_count: 64, data_length: 1, data_dtype: {{x: float64}}}}
  chat: {{slot_count: 4, data_length: 1, data_dtype: {{x: float64}}}}
Workers:
  source: {{file: funcs.py, function: source, config: {{events: {EVENTS}}}, sinks: [raw]}}
  drain: {{file: funcs.py, function: drain, sources: [raw]}}
  talker: {{file: funcs.py, function: talker, config: {{lines: {LINES}}}, sinks: [chat]}}
  sink: {{function: exporters.drain, sources: [chat]}}
"""


def run(directory: Path, quiet: bool) -> tuple[float, float, int]:
    """(data path seconds, wall seconds, talker lines shown)."""
    flags = ["--quiet"] if quiet else []
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mimocorb2", "run", *flags, "setup.yaml"],
                          cwd=directory, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr)
    run_dir = Path(re.search(r"run directory: (\S+)", proc.stdout).group(1))
    datapath = float(re.search(r"DATAPATH (\S+)", (run_dir / "logs" / "source.log").read_text()).group(1))
    shown = sum(1 for line in proc.stdout.splitlines() if line.startswith("talker | talk "))
    return datapath, wall, shown


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "funcs.py").write_text(FUNCS)
        (directory / "setup.yaml").write_text(SETUP)
        print(f"{EVENTS} events through one buffer while a worker prints {LINES} lines")
        for quiet in (True, False, True, False):
            datapath, wall, shown = run(directory, quiet)
            mode = "--quiet " if quiet else "echo on"
            print(f"  {mode}  data path {datapath:6.2f} s ({EVENTS / datapath:9.0f} events/s)"
                  f"  whole run {wall:6.2f} s  talker lines shown {shown}")
            if not quiet and shown != LINES:
                print(f"  LOST LINES: {LINES - shown}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
