"""What a worker process is started with, and the buffers of a setup."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..datapath.heartbeat import HeartbeatTable
from ..mimo_buffer import mimoBuffer

if TYPE_CHECKING:
    from ..setup import Setup, WorkerSpec

__all__ = ["WorkerLaunch", "build_buffers", "root_buffers"]


@dataclass
class WorkerLaunch:
    """Everything one worker process needs; pickled into the spawned child.

    ``buffers`` holds only the buffers the worker uses. ``heartbeats``/``row``
    name the process's heartbeat row. ``parent_pid`` lets the child notice
    that its parent died before the parent-death signal was armed.
    ``environment`` is the starter's environment when the process was started
    (a forked worker would otherwise see the forkserver's, from its own start).
    """

    worker: WorkerSpec
    setup_dir: Path
    run_dir: Path
    index: int
    buffers: dict[str, mimoBuffer]
    heartbeats: HeartbeatTable | None = None
    row: int = 0
    parent_pid: int = field(default_factory=os.getpid)
    environment: dict[str, str] | None = None

    @property
    def process_name(self) -> str:
        """``worker#index``, used for the process title and messages."""
        return f"{self.worker.name}#{self.index}"


def build_buffers(setup: Setup) -> dict[str, mimoBuffer]:
    """Create every buffer of ``setup`` with its reader groups and writer count.

    If creating one fails, those already created are closed again.
    """
    buffers: dict[str, mimoBuffer] = {}
    try:
        for spec in setup.buffers.values():
            buffers[spec.name] = mimoBuffer(
                spec.name,
                spec.slot_count,
                spec.data_length,
                spec.data_dtype,
                reader_groups=tuple(spec.reader_groups),
                writers=int(spec.writer_count),
            )
    except BaseException:
        for buf in buffers.values():
            buf.close()
        raise
    return buffers


def root_buffers(setup: Setup) -> list[str]:
    """Buffers written by workers without sources (importers): where a stop begins."""
    roots = []
    for worker in setup.workers.values():
        if not worker.sources:
            roots.extend(name for name in worker.sinks if name not in roots)
    return roots
