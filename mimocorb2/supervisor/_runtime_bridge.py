"""Adapter to the core's data path and worker runtime.

The daemon builds buffers, heartbeat tables and worker launches only through
these functions, so that a change of the core's interfaces is absorbed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_buffer(spec: Any) -> Any:
    from mimocorb2.mimo_buffer import mimoBuffer

    return mimoBuffer(
        spec.name,
        spec.slot_count,
        spec.data_length,
        spec.data_dtype,
        reader_groups=tuple(spec.reader_groups),
        writers=int(spec.writer_count),
    )


def make_heartbeat_table(rows: int) -> Any:
    from mimocorb2.datapath.heartbeat import HeartbeatTable

    return HeartbeatTable(rows)


def make_launch(*, setup: Any, worker: Any, buffers: dict[str, Any], run_dir: Path | None,
                index: int, heartbeats: Any, row: int) -> Any:
    return {
        "setup": setup,
        "worker": worker,
        "buffers": {name: buffers[name] for name in dict.fromkeys([*worker.sources, *worker.sinks, *worker.observes])},
        "run_dir": run_dir,
        "index": index,
        "heartbeats": heartbeats,
        "row": row,
    }


def run_worker(launch: Any) -> int:
    """Inside the spawned child: logging, heartbeat, the worker's function. Returns the exit code."""
    import os

    from mimocorb2 import logsetup
    from mimocorb2.datapath import heartbeat

    worker = launch["worker"]
    run_dir = Path(launch["run_dir"])
    logsetup.configure_worker_logging(run_dir / "logs" / f"{worker.name}.log", worker.name, os.getpid())
    heartbeat.attach(launch["heartbeats"], launch["row"])
    import structlog

    log = structlog.get_logger("mimocorb2.worker")
    from mimocorb2.setup import resolve_function

    function = resolve_function(worker)
    buffer_io = _make_buffer_io(launch)
    log.info("worker process started", function=worker.function, index=launch["index"])
    try:
        function(buffer_io)
    except BaseException:
        # no end of stream from a failed process: the supervisor restarts it or retires it
        log.exception("worker function failed")
        return 1
    _flush_sinks(launch)
    log.info("worker process finished")
    return 0


def _make_buffer_io(launch: Any) -> Any:
    from mimocorb2.mimo_buffer import BufferObserver, BufferReader, BufferWriter
    from mimocorb2.mimo_worker import BufferIO

    worker = launch["worker"]
    buffers = launch["buffers"]
    return BufferIO(
        worker.name,
        [BufferReader(buffers[n], group=worker.name) for n in worker.sources],
        [BufferWriter(buffers[n]) for n in worker.sinks],
        [BufferObserver(buffers[n]) for n in worker.observes],
        worker.config,
        launch["setup"].directory,
        launch["run_dir"],
        process_index=launch["index"],
        number_of_processes=worker.number_of_processes,
    )


def _flush_sinks(launch: Any) -> None:
    """End of stream from this process on every sink (idempotent: counted once per pid)."""
    worker = launch["worker"]
    for name in worker.sinks:
        try:
            launch["buffers"][name].send_flush_event()
        except Exception:
            pass
