"""Benchmark: the Red Pitaya importer against the SCPI simulator on loopback.

The simulator runs as its own process (``python -m mimocorb2.sim.redpitaya``), the
importer (``importers.redpitaya.waveform``) in a spawned worker process writing into
a mimoBuffer, and this process reads the events back. For data_length 1000 and
16384 it reports the event rate, the importer's and the simulator's CPU share, the
SCPI round trips per event and the payload throughput.

Run: ``.venv/bin/python benchmarks/bench_redpitaya.py [--events N] [--events-large N]
[--os 1.04-28]`` (``--os``: the simulated board's OS release; before 2.00-18 a read
past the buffer end is split in two, so 16384-sample events take 4 reads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer
from mimocorb2.mimo_worker import BufferIO
from mimocorb2.sim.redpitaya import DEFAULT_OS, OS_PROFILES

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _importer(io: BufferIO, result_path: str) -> None:
    """Worker process body: run the importer, then record its own CPU time."""
    from mimocorb2.functions.importers.redpitaya import waveform

    wall0, cpu0 = time.perf_counter(), time.process_time()
    waveform(io)
    Path(result_path).write_text(json.dumps(
        {"cpu": time.process_time() - cpu0, "wall": time.perf_counter() - wall0}
    ))


def _start_simulator(os_version: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimocorb2.sim.redpitaya", "--port", "0", "--seed", "1", "--os", os_version,
         "--rate", "1e7", "--spectrum", "uniform", "--amplitude-min", "0.2", "--amplitude-max", "0.9"],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def run_case(data_length: int, events: int, os_version: str = DEFAULT_OS) -> dict[str, Any]:
    """One measurement: ``events`` events of ``data_length`` samples per channel."""
    sim, port = _start_simulator(os_version)
    ctx = multiprocessing.get_context("spawn")
    buf = mimoBuffer("bench_rp", slot_count=32, data_length=data_length,
                     data_dtype={"IN1": "int16", "IN2": "int16"})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = {"ip": "127.0.0.1", "port": port, "sample_rate": 1, "trigger_level": 1000,
                      "number_of_samples_before_trigger": 100, "max_events": events,
                      "set_size": 1000, "timeout": 2.0}
            io = BufferIO(name="rp", sources=[], sinks=[BufferWriter(buf)], observes=[],
                          config=config, setup_dir=tmp, run_dir=tmp)
            result_path = os.path.join(tmp, "cpu.json")
            proc = ctx.Process(target=_importer, args=(io, result_path))
            sim_cpu0 = _cpu_seconds(sim.pid)
            proc.start()
            reader = BufferReader(buf)
            received = 0
            first = last = 0.0
            while True:
                with reader as (metadata, data):
                    if data is None:
                        break
                    if received == 0:
                        first = time.perf_counter()
                    received += 1
            last = time.perf_counter()
            sim_cpu = _cpu_seconds(sim.pid) - sim_cpu0
            proc.join(60)
            own = json.loads(Path(result_path).read_text())
            status = json.loads((Path(tmp) / "status" / "rp.json").read_text())
        stats = buf.get_stats()
    finally:
        buf.close()
        sim.terminate()
        sim.wait(10)
    span = max(last - first, 1e-9)
    rate = (received - 1) / span
    return {
        "data_length": data_length,
        "events": received,
        "lost": int(stats.get("lost", 0)),
        "rate": rate,
        "importer_cpu_share": own["cpu"] / own["wall"],
        "importer_cpu_per_event_us": own["cpu"] / max(received, 1) * 1e6,
        "simulator_cpu_share": sim_cpu / span,
        "round_trips_per_event": status["round_trips"] / max(status["events"], 1),
        "payload_MB_s": rate * data_length * 2 * 2 / 1e6,
        "reconnects": status["reconnects"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run both cases and print the figures and their ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3000, help="events for data_length 1000")
    ap.add_argument("--events-large", type=int, default=1000, help="events for data_length 16384")
    ap.add_argument("--os", default=DEFAULT_OS, choices=list(OS_PROFILES), dest="os_version",
                    help="OS release the simulated board speaks")
    args = ap.parse_args(argv)
    print(f"Red Pitaya importer vs simulator (OS {args.os_version}) on loopback ({os.cpu_count()} CPUs)")
    results = [run_case(1000, args.events, args.os_version),
               run_case(16384, args.events_large, args.os_version)]
    header = (f"{'data_length':>11} {'events':>7} {'lost':>5} {'events/s':>9} {'MB/s':>7} "
              f"{'imp CPU':>8} {'us/ev':>7} {'sim CPU':>8} {'RT/ev':>6}")
    print(header)
    for r in results:
        print(f"{r['data_length']:>11} {r['events']:>7} {r['lost']:>5} {r['rate']:>9.0f} "
              f"{r['payload_MB_s']:>7.1f} {r['importer_cpu_share']:>7.0%} "
              f"{r['importer_cpu_per_event_us']:>7.0f} {r['simulator_cpu_share']:>7.0%} "
              f"{r['round_trips_per_event']:>6.2f}")
    small, large = results
    print(f"ratio rate 1000/16384: {small['rate'] / large['rate']:.2f}; "
          f"ratio importer CPU per event 16384/1000: "
          f"{large['importer_cpu_per_event_us'] / small['importer_cpu_per_event_us']:.2f}; "
          f"ratio samples per event: {16384 / 1000:.1f}")
    ok = all(r["lost"] == 0 and r["events"] > 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
