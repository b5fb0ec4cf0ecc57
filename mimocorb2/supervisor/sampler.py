"""Samples of a run: buffer counters and stats, ``stats.csv``, CPU per process, free disk.

The run's periodic tasks call :meth:`Sampler.refresh_counters` (every tick) and
:meth:`Sampler.refresh_stats` (every ``stats_interval``); status replies are
built from the latest samples, never by calling into a buffer from the loop.

Invariants:

* ``counters`` is never older than the last pause/resume: a sample started
  before :meth:`invalidate_counters` is discarded (it could show a stale
  ``paused`` flag).
* ``stats`` holds the last ``get_stats()`` of every buffer; after the run's
  final sample it is the run's record (``event_count`` per buffer).
* every ``stats`` sample is also one row per buffer in ``RUN_DIR/stats.csv``.
* ``devices`` holds the status files of ``RUN_DIR/status/`` as last read (file
  stem -> :class:`~mimocorb2.supervisor.devices.DeviceFile`, its object and
  modification time); a bad file is logged once per name, never raised.
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

from mimocorb2.supervisor.devices import DeviceFile, read_status_files
from mimocorb2.supervisor.gateway import BufferGateway
from mimocorb2.supervisor.processes import ProcessRecord

log = structlog.get_logger("mimocorb2.run")

__all__ = ["Sampler", "DiskSpace", "STATS_FIELDS", "disk_space"]

STATS_FIELDS = ("time", "buffer", "event_count", "rate", "filled_slots", "average_deadtime",
                "paused_count", "paused", "lost", "redelivered", "pending", "ended")

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class DiskSpace:
    """Free and total bytes of the filesystem holding ``path``."""

    path: str
    free_bytes: int
    total_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """The ``disk`` object of the status reply (bytes); the status adds ``min_free_bytes``."""
        return {"path": self.path, "free_bytes": self.free_bytes, "total_bytes": self.total_bytes}


def disk_space(path: Path) -> DiskSpace:
    """statvfs of ``path`` (blocking: may hang on a dead network filesystem; call in a thread)."""
    st = os.statvfs(path)
    return DiskSpace(str(path), st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


class Sampler:
    """Holds the latest samples of one run and writes its ``stats.csv``."""

    def __init__(self, gateway: BufferGateway, directory: Path) -> None:
        self.gateway = gateway
        self.directory = directory
        self.counters: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.disk: DiskSpace | None = None
        self.devices: dict[str, DeviceFile] = {}
        self._complained: set[str] = set()  # status files already logged as unreadable
        self._generation = 0
        self._file: IO[str] | None = open(directory / "stats.csv", "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(STATS_FIELDS)

    # ---------------------------------------------------------------- counters
    def invalidate_counters(self) -> None:
        """A pause/resume happened: a sample in flight is older than it."""
        self._generation += 1

    async def refresh_counters(self) -> dict[str, dict[str, Any]]:
        """Take fresh counters of every buffer (in a thread) and return the latest kept sample.

        The new sample is dropped if a pause/resume happened meanwhile or the buffers are closed;
        the previous one is returned then.
        """
        generation = self._generation
        sample = await self.gateway.counters()
        if sample and generation == self._generation:
            self.counters = sample
        return self.counters

    # ---------------------------------------------------------------- stats
    async def refresh_stats(self) -> None:
        """One ``get_stats()`` of every buffer, kept and appended to stats.csv (in a thread)."""
        now = time.time()
        stats = await self.gateway.stats()
        if not stats:
            return
        self.stats.update(stats)
        rows = [[round(now, 3), name, *(s.get(k) for k in STATS_FIELDS[2:])] for name, s in stats.items()]
        await asyncio.to_thread(self._write_rows, rows)

    def _write_rows(self, rows: list[list[Any]]) -> None:
        if self._file is None:
            return
        try:
            self._writer.writerows(rows)
            self._file.flush()
        except (OSError, ValueError) as exc:
            log.warning("stats.csv write failed", error=str(exc))

    def close(self) -> None:
        """Close ``stats.csv`` (idempotent); rows sampled after that are not written."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                log.warning("closing stats.csv failed", error=str(exc))
            self._file = None

    # ---------------------------------------------------------------- devices
    async def refresh_devices(self) -> dict[str, DeviceFile]:
        """Re-read ``RUN_DIR/status/*.json`` (in a thread); keeps the last good read on error."""
        try:
            self.devices = await asyncio.to_thread(read_status_files, self.directory / "status", self._complain)
        except Exception as exc:  # noqa: BLE001 - status files are informative; never stop the run
            log.warning("cannot read worker status files", error=str(exc))
        return self.devices

    def _complain(self, name: str, reason: str) -> None:
        """Log an unreadable status file once per name (called from the reading thread)."""
        if name not in self._complained:
            self._complained.add(name)
            log.warning("ignoring unreadable worker status file", file=str(self.directory / "status" / name),
                        reason=reason)

    # ---------------------------------------------------------------- disk
    async def refresh_disk(self) -> DiskSpace | None:
        """Read the run directory's free space and return it; None if it was never read.

        In a thread: a dead network file system hangs the thread, not the loop. On OSError
        the error is logged and the previous value kept.
        """
        try:
            self.disk = await asyncio.to_thread(disk_space, self.directory)
        except OSError as exc:
            log.warning("cannot read free disk space", path=str(self.directory), error=str(exc))
        return self.disk

    # ---------------------------------------------------------------- CPU
    @staticmethod
    def sample_cpu(records: list[ProcessRecord]) -> None:
        """CPU share of each live process since the last sample (procfs reads: never block)."""
        now = time.monotonic()
        for rec in records:
            if not rec.alive or not rec.pid:
                rec.cpu_percent, rec.cpu_last = 0.0, None
                continue
            cpu = _cpu_seconds(rec.pid)
            if cpu is None:
                continue
            if rec.cpu_last is not None:
                dt = now - rec.cpu_last[0]
                if dt > 0:
                    rec.cpu_percent = 100.0 * (cpu - rec.cpu_last[1]) / dt
            rec.cpu_last = (now, cpu)


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[11], fields[12] = utime, stime (the 14th, 15th of the whole line)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
