"""One writer process -> one reader process through a 64-slot buffer; prints one JSON line.

    python _pingpong.py IMPL CASE EVENTS

IMPL: ``ours`` (mimocorb2 from this repository), ``v004`` (the published
mimocorb2 0.0.4, run with its own virtualenv's python), ``queue`` (a reference
design passing slot tokens through multiprocessing.Queue) or ``ceiling`` (the
writer's own work into 64 local arrays, no buffer, one process).
CASE: ``small`` (1 x float64) or ``scope`` (4250 x 4 float32).

The writer fills every event field by field, as importers do, stamps the
commit time (perf_counter: CLOCK_MONOTONIC, the same clock in every process)
into the metadata, and measures the time it spends inside the buffer calls
(its dead time). The reader records commit-to-read latencies. This file must
not import mimocorb2 at module level: it also runs in the 0.0.4 virtualenv.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time

import numpy as np

SLOTS = 64
CASES = {
    "small": (1, [("x", "f8")]),
    "scope": (4250, [("ch1", "f4"), ("ch2", "f4"), ("ch3", "f4"), ("ch4", "f4")]),
}
META = np.dtype([("counter", "i8"), ("timestamp", "f8"), ("deadtime", "f8")])


def sources(case: str) -> list[tuple[str, np.ndarray]]:
    length, fields = CASES[case]
    rng = np.random.default_rng(1)
    return [(name, rng.normal(size=length).astype(kind)) for name, kind in fields]


# ---------------------------------------------------------------- generic writer/reader loops
def writer_loop(writer, case: str, events: int, result) -> None:
    fields = sources(case)
    perf = time.perf_counter
    dead = 0.0
    start = perf()
    for i in range(events):
        t0 = perf()
        with writer as (metadata, data):
            t1 = perf()
            for name, src in fields:
                data[name][:] = src
            metadata["counter"] = i
            t2 = perf()
            metadata["timestamp"] = t2
        dead += (t1 - t0) + (perf() - t2)
    elapsed = perf() - start
    writer.send_flush_event() if hasattr(writer, "send_flush_event") else writer.buffer.send_flush_event()
    result.send((elapsed, dead))


def reader_loop(reader, events: int, result) -> None:
    perf = time.perf_counter
    latencies = np.empty(events)
    count = 0
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            latencies[count] = perf() - metadata["timestamp"][0]
            count += 1
            if count == events:
                break
    result.send((count, float(np.median(latencies[:count])), float(np.percentile(latencies[:count], 99))))


# ---------------------------------------------------------------- implementations
def run_ours(case: str, events: int) -> dict:
    from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer

    length, fields = CASES[case]
    buf = mimoBuffer("bench", SLOTS, length, dict(fields))
    try:
        return _two_processes(buf, BufferWriter(buf), BufferReader(buf), case, events, mp.get_context("fork"))
    finally:
        buf.close()


def run_v004(case: str, events: int) -> dict:
    from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer  # the 0.0.4 package here

    length, fields = CASES[case]
    buf = mimoBuffer("bench", SLOTS, length, np.dtype(fields))
    return _two_processes(buf, BufferWriter(buf), BufferReader(buf), case, events, mp.get_context("fork"))


class _QueueBuffer:
    """Reference design: slots in shared memory, slot tokens through multiprocessing.Queue."""

    def __init__(self, case: str, ctx) -> None:
        from multiprocessing import shared_memory

        length, fields = CASES[case]
        self.dtype = np.dtype(fields)
        self.length = length
        self.slot_bytes = META.itemsize + self.dtype.itemsize * length
        self.shm = shared_memory.SharedMemory(create=True, size=self.slot_bytes * SLOTS)
        self.empty = ctx.Queue(SLOTS)
        self.filled = ctx.Queue(SLOTS + 1)
        for i in range(SLOTS):
            self.empty.put(i)
        self.views = None

    def slot(self, i: int):
        if self.views is None:
            raw = np.ndarray((SLOTS, self.slot_bytes), np.uint8, self.shm.buf)
            self.views = [(r[: META.itemsize].view(META), r[META.itemsize :].view(self.dtype)) for r in raw]
        return self.views[i]


class _QueueWriter:
    def __init__(self, qb: _QueueBuffer) -> None:
        self.qb = qb

    def __enter__(self):
        self.token = self.qb.empty.get()
        return self.qb.slot(self.token)

    def __exit__(self, *exc) -> None:
        self.qb.filled.put(self.token)

    def send_flush_event(self) -> None:
        self.qb.filled.put(None)


class _QueueReader:
    def __init__(self, qb: _QueueBuffer) -> None:
        self.qb = qb

    def __enter__(self):
        self.token = self.qb.filled.get()
        if self.token is None:
            return (None, None)
        return self.qb.slot(self.token)

    def __exit__(self, *exc) -> None:
        if self.token is not None:
            self.qb.empty.put(self.token)


def run_queue(case: str, events: int) -> dict:
    ctx = mp.get_context("fork")
    qb = _QueueBuffer(case, ctx)
    try:
        return _two_processes(qb, _QueueWriter(qb), _QueueReader(qb), case, events, ctx)
    finally:
        qb.views = None
        qb.shm.close()
        qb.shm.unlink()


def run_ceiling(case: str, events: int) -> dict:
    length, fields = CASES[case]
    dtype = np.dtype(fields)
    slots = [(np.zeros(1, META), np.zeros(length, dtype)) for _ in range(SLOTS)]
    src = sources(case)
    perf = time.perf_counter
    start = perf()
    for i in range(events):
        metadata, data = slots[i % SLOTS]
        for name, values in src:
            data[name][:] = values
        metadata["counter"] = i
        metadata["timestamp"] = perf()
    elapsed = perf() - start
    return _result(case, events, elapsed, 0.0, 0.0, 0.0)


def _two_processes(buf, writer, reader, case: str, events: int, ctx) -> dict:
    w_recv, w_send = ctx.Pipe(False)
    r_recv, r_send = ctx.Pipe(False)
    procs = [
        ctx.Process(target=reader_loop, args=(reader, events, r_send)),
        ctx.Process(target=writer_loop, args=(writer, case, events, w_send)),
    ]
    for p in procs:
        p.start()
    elapsed, dead = w_recv.recv()
    count, median, p99 = r_recv.recv()
    for p in procs:
        p.join()
    assert count == events, f"reader got {count} of {events}"
    return _result(case, events, elapsed, dead / elapsed, median, p99)


def _result(case: str, events: int, elapsed: float, dead_fraction: float, median: float, p99: float) -> dict:
    length, fields = CASES[case]
    nbytes = length * np.dtype(fields).itemsize
    return {
        "events_per_s": events / elapsed,
        "mb_per_s": events * nbytes / elapsed / 1e6,
        "dead_fraction": dead_fraction,
        "latency_median_us": median * 1e6,
        "latency_p99_us": p99 * 1e6,
    }


if __name__ == "__main__":
    impl, case, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runner = {"ours": run_ours, "v004": run_v004, "queue": run_queue, "ceiling": run_ceiling}[impl]
    print(json.dumps(runner(case, events)))
