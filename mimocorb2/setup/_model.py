"""Data classes describing a validated setup file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESTART_POLICIES = ("on-failure", "always", "never")
FAILURE_POLICIES = ("stop", "continue")


@dataclass(frozen=True)
class RunLimits:
    """Optional limits of a run: stop gracefully after so many root events or seconds."""

    max_events: int | None = None
    max_seconds: float | None = None


@dataclass(frozen=True)
class DiskFloor:
    """``min_free_disk``: the run stops gracefully when less than this is free on its filesystem.

    Either an absolute number of bytes or a percentage of the filesystem's size.
    """

    bytes: int | None = 100_000_000
    percent: float | None = None

    def bytes_for(self, total_bytes: int) -> int:
        """The floor in bytes for a filesystem of ``total_bytes``."""
        if self.percent is not None:
            return int(total_bytes * self.percent / 100.0)
        return int(self.bytes or 0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.bytes} B"


@dataclass
class BufferSpec:
    """One entry of the ``Buffers`` section, with the workers attached to it."""

    name: str
    slot_count: int
    data_length: int
    data_dtype: np.dtype
    reader_groups: list[str] = field(default_factory=list)
    writer_count: int = 0
    observers: list[str] = field(default_factory=list)


@dataclass
class WorkerSpec:
    """One entry of the ``Workers`` section; ``config`` holds the merged configuration."""

    name: str
    function: str
    file: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    number_of_processes: int = 1
    sources: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    observes: list[str] = field(default_factory=list)
    restart: str = "on-failure"
    max_restarts: int = 5
    stall_timeout: float | None = None


@dataclass
class Setup:
    """A completely validated setup file."""

    path: Path
    directory: Path
    target_directory: Path
    buffers: dict[str, BufferSpec]
    workers: dict[str, WorkerSpec]
    run_limits: RunLimits = field(default_factory=RunLimits)
    on_worker_failure: str = "stop"
    drain_timeout: float = 30.0
    stats_interval: float = 1.0
    min_free_disk: DiskFloor = field(default_factory=DiskFloor)
    resolved: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # ignored keys that may matter
    notes: list[str] = field(default_factory=list)  # ignored on purpose (anchor holders)


@dataclass
class SetupCheck:
    """What checking a setup file found; ``problems`` empty means it can run."""

    problems: list[str]
    warnings: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        """True when the file has no problems (warnings and notes do not stop a run)."""
        return not self.problems
