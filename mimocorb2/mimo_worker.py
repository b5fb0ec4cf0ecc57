"""What a worker function receives: :class:`BufferIO`, its buffers and its configuration."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SetupError
from .mimo_buffer import BufferObserver, BufferReader, BufferWriter

__all__ = ["BufferIO", "Config", "ConfigKeyError", "StreamEnd"]


class StreamEnd(enum.Enum):
    """Who sends a worker process's end of stream (flush) to its sinks.

    ``BY_RUNNER``: the process runs under mimocorb2's runner (daemon or
    ``mimocorb2 run``). The runner flushes the sinks when the worker's function
    returns normally; the supervisor retires a process it gives up. Templates
    and prebuilt functions never flush.

    ``BY_TEMPLATES``: standalone use (plain Python, as in the manual's
    examples). Templates and prebuilt functions flush their sinks themselves
    when their source ends or they fail, so that downstream ends too.
    """

    BY_RUNNER = "runner"
    BY_TEMPLATES = "templates"


class ConfigKeyError(SetupError, KeyError):
    """A worker asked for a configuration key that its setup does not give."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.message


class Config(dict):
    """A worker's configuration: a plain dict of the merged ``config`` entries."""


class BufferIO:
    """The buffers, configuration and directories of one worker process.

    Attributes
    ----------
    name: the worker's name.
    read, write, observe: lists of BufferReader / BufferWriter / BufferObserver
        for the worker's ``sources``, ``sinks`` and ``observes``.
    config: the worker's configuration (``io['key']`` and ``io.get(key, default)``).
    setup_dir: directory of the setup file (load external data from here).
    run_dir: directory of this run (save output here).
    logger: a ``logging.Logger`` named after the worker.
    data_in_examples, metadata_in_examples, buffer_names_in: per source.
    data_out_examples, metadata_out_examples, buffer_names_out: per sink.
    data_observe_examples, metadata_observe_examples, buffer_names_observe: per observed buffer.
    process_index, number_of_processes: which of the worker's processes this is.
    stream_end: who flushes the sinks (:class:`StreamEnd`); ``BY_TEMPLATES``
        unless the process runner built this BufferIO.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[BufferReader],
        sinks: Sequence[BufferWriter],
        observes: Sequence[BufferObserver],
        config: Mapping[str, Any] | None,
        setup_dir: Path | str,
        run_dir: Path | str,
        *,
        process_index: int = 0,
        number_of_processes: int = 1,
        stream_end: StreamEnd = StreamEnd.BY_TEMPLATES,
    ) -> None:
        self.name = name
        self.read = list(sources)
        self.write = list(sinks)
        self.observe = list(observes)
        self.config = Config(config or {})
        self.setup_dir = Path(setup_dir)
        self.run_dir = Path(run_dir)
        self.process_index = process_index
        self.number_of_processes = number_of_processes
        self.stream_end = stream_end
        self.logger = logging.getLogger(f"mimocorb2.worker.{name}")

        self.data_in_examples: list[np.ndarray] = [b.data_example for b in self.read]
        self.metadata_in_examples: list[np.ndarray] = [b.metadata_example for b in self.read]
        self.buffer_names_in: list[str] = [b.name for b in self.read]
        self.data_out_examples: list[np.ndarray] = [b.data_example for b in self.write]
        self.metadata_out_examples: list[np.ndarray] = [b.metadata_example for b in self.write]
        self.buffer_names_out: list[str] = [b.name for b in self.write]
        self.data_observe_examples: list[np.ndarray] = [b.data_example for b in self.observe]
        self.metadata_observe_examples: list[np.ndarray] = [b.metadata_example for b in self.observe]
        self.buffer_names_observe: list[str] = [b.name for b in self.observe]

    # sources / sinks / observes are the setup's names for the same lists
    @property
    def sources(self) -> list[BufferReader]:
        """The readers of the worker's source buffers (same list as ``read``)."""
        return self.read

    @property
    def sinks(self) -> list[BufferWriter]:
        """The writers of the worker's sink buffers (same list as ``write``)."""
        return self.write

    @property
    def observes(self) -> list[BufferObserver]:
        """The observers of the worker's observed buffers (same list as ``observe``)."""
        return self.observe

    def __getitem__(self, key: str) -> Any:
        """The configuration value ``key``; a missing key raises an error naming the worker."""
        try:
            return self.config[key]
        except KeyError:
            known = ", ".join(sorted(map(str, self.config))) or "none"
            raise ConfigKeyError(
                f"worker '{self.name}': config key '{key}' is missing (keys given: {known})"
            ) from None

    def __contains__(self, key: str) -> bool:
        return key in self.config

    def get(self, key: str, default: Any = None) -> Any:
        """The configuration value ``key``, or ``default``."""
        return self.config.get(key, default)

    def shutdown_sinks(self) -> None:
        """Send this process's end of stream to every sink buffer."""
        for writer in self.write:
            writer.shutdown_buffer()

    def flush_sinks_if_standalone(self) -> None:
        """End of stream from a template or prebuilt function: flush the sinks only when standalone.

        Under mimocorb2's runner (``StreamEnd.BY_RUNNER``) this does nothing:
        the runner flushes on normal return, the supervisor retires on give-up.
        """
        if self.stream_end is StreamEnd.BY_TEMPLATES:
            self.shutdown_sinks()

    def __str__(self) -> str:
        return (
            f"BufferIO(name={self.name!r}, sources={self.buffer_names_in}, sinks={self.buffer_names_out}, "
            f"observes={self.buffer_names_observe}, config={dict(self.config)})"
        )
