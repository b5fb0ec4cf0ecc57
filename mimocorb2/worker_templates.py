"""Worker templates: the common ways a worker moves events between buffers.

Each template checks the worker's buffers when it is built (a :class:`SetupError`
naming the worker and the rule broken) and runs the user's function ("ufunc")
in a loop. A failing ufunc raises :class:`UfuncError` naming the worker and the
original exception (chained, with its traceback).

End of stream has one owner (see docs/ARCHITECTURE.md, "End of stream"): under
mimocorb2's runner (``BufferIO.stream_end`` is ``StreamEnd.BY_RUNNER``) a template
never flushes; the process runner flushes the sinks when the worker's function
returns, and the supervisor retires a process it gives up. Used standalone
(plain Python, ``StreamEnd.BY_TEMPLATES``) a template flushes its sinks itself
when its source ends, its generator is exhausted, or it fails.

Heartbeats: the buffers beat whenever a slot moves or a wait times out.
Templates whose process holds no event while user code runs (an importer's
generator, an observer between events, an is-alive loop) mark that stretch
with :func:`mimocorb2.datapath.heartbeat.waiting`, so a process that sleeps
or waits there on purpose stays alive while one that spins does not.

Events are copied between buffers as raw bytes whenever source and sink have
the same dtype: structured-array assignment in NumPy is about 20 times slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np

from .datapath import heartbeat as _heartbeat
from .diskfull import find_disk_full as _find_disk_full
from .errors import SetupError, UfuncError
from .mimo_buffer import BufferReader, BufferWriter
from .mimo_worker import BufferIO

__all__ = ["BUFFER_COUNTS", "Importer", "Exporter", "Filter", "Processor", "Observer", "IsAlive",
           "SetupError", "UfuncError"]


#: the buffers each template takes: kind -> buffer list -> (at least, at most or None).
#: Templates check these when built; setup validation checks prebuilt functions against them.
BUFFER_COUNTS: dict[str, dict[str, tuple[int, int | None]]] = {
    "Importer": {"sources": (0, 0), "sinks": (1, 1), "observes": (0, 0)},
    "Exporter": {"sources": (1, 1), "sinks": (0, None), "observes": (0, 0)},
    "Filter": {"sources": (1, 1), "sinks": (1, None), "observes": (0, 0)},
    "Processor": {"sources": (1, 1), "sinks": (1, None), "observes": (0, 0)},
    "Observer": {"sources": (0, 0), "sinks": (0, 0), "observes": (1, 1)},
    "IsAlive": {"sources": (0, 0), "sinks": (0, 0), "observes": (1, 1)},
}


def count_rule(low: int, high: int | None, what: str) -> str:
    """``low..high`` buffers in the list ``what``, in words: 'exactly 1 buffer in sinks',
    'no buffer in sources', 'at least 1 buffer in sinks', '1 to 3 buffers in sources'."""
    if high is None:
        count = f"at least {low} buffer"
    elif low == high:
        count = "no buffer" if low == 0 else f"exactly {low} buffer{'' if low == 1 else 's'}"
    else:
        count = f"{low} to {high} buffers"
    return f"{count} in {what}"


def buffer_count_problems(kind: str, counts: dict[str, int]) -> list[tuple[str, str]]:
    """``(buffer list, rule)`` for each count of ``counts`` the template ``kind`` refuses."""
    found = []
    for what, (low, high) in BUFFER_COUNTS.get(kind, {}).items():
        count = counts.get(what, 0)
        if count < low or (high is not None and count > high):
            found.append((what, count_rule(low, high, what)))
    return found


class Base:
    """Common parts: the BufferIO's attributes, buffer-count checks, failure handling."""

    kind = "Worker"

    def __init__(self, io: BufferIO) -> None:
        self.io = io
        self.read = io.read
        self.write = io.write
        self.observe = io.observe
        self.config = io.config
        self.logger = io.logger
        self.name = io.name
        self.run_dir = io.run_dir
        self.setup_dir = io.setup_dir
        self.shutdown_sinks = io.shutdown_sinks

    def _require(self, what: str, buffers: list[Any], low: int, high: int | None) -> None:
        """Check that the worker has between ``low`` and ``high`` buffers of one kind."""
        count = len(buffers)
        if count >= low and (high is None or count <= high):
            return
        names = [b.name for b in buffers]
        self._setup_failed(f"{self.kind} must have {count_rule(low, high, what)}, "
                           f"got {count} {names}")

    def _require_buffers(self) -> None:
        """Check the worker's sources, sinks and observes against BUFFER_COUNTS[kind]."""
        lists = {"sources": self.read, "sinks": self.write, "observes": self.observe}
        for what, (low, high) in BUFFER_COUNTS[self.kind].items():
            self._require(what, lists[what], low, high)

    def _require_same_layout(self, source: Any, sinks: list[BufferWriter]) -> None:
        for sink in sinks:
            if sink.data_example.dtype != source.data_example.dtype or sink.data_example.shape != source.data_example.shape:
                self._setup_failed(
                    f"{self.kind} sink '{sink.name}' must have the same data_dtype and data_length as "
                    f"source '{source.name}' ({source.data_example.dtype}, {source.data_example.shape[0]}), "
                    f"got ({sink.data_example.dtype}, {sink.data_example.shape[0]})"
                )

    def _setup_failed(self, message: str) -> None:
        text = f"worker '{self.name}': {message}"
        self.logger.error(text)
        self.io.flush_sinks_if_standalone()
        raise SetupError(text)

    def _ufunc_failed(self, message: str, exc: BaseException | None = None) -> UfuncError:
        text = f"worker '{self.name}': {message}"
        if exc is not None:
            text += f": {type(exc).__name__}: {exc}"
        # a full disk is reported in one line by the process runner: no traceback here
        self.logger.error(text, exc_info=None if _find_disk_full(exc) else exc)
        self.io.flush_sinks_if_standalone()
        return UfuncError(text)

    def drain_sources(self) -> None:
        """Read and discard every source until its stream ends."""
        for reader in self.read:
            while True:
                with reader as (metadata, data):
                    if data is None:
                        break


def _copy_into(writer: BufferWriter, metadata: np.ndarray | None, data: Any, same_layout: bool, src: BufferReader | None = None) -> None:
    """Write one event into ``writer``'s current slot, as bytes when layouts match."""
    meta_dst, data_dst = writer.current_bytes()
    if src is not None and same_layout:
        meta_src, data_src = src.current_bytes()
        data_dst[:] = data_src
        meta_dst[:] = meta_src
        return
    if isinstance(data, np.ndarray) and data.dtype == writer.data_example.dtype and data.shape == writer.data_example.shape:
        data_dst[:] = data.reshape(-1).view(np.uint8)
    else:
        _, view = writer._views[writer.token] if writer.token >= 0 else writer._scratch
        view[:] = data
    if metadata is not None:
        meta_dst[:] = metadata.view(np.uint8)


def _raised(data: np.ndarray, exc: Exception) -> str:
    """'ufunc raised', with a hint when NumPy refused to compute on the whole structured event."""
    names = data.dtype.names
    if names and isinstance(exc, TypeError) and "dtype([(" in str(exc):
        return (f"ufunc raised (hint: data is a structured array with the fields "
                f"{', '.join(names)}; compute on one of them, e.g. data['{names[0]}'])")
    return "ufunc raised"


def _misfit(sink: BufferWriter, data: Any) -> str:
    """Why ``data`` could not be written to ``sink``: what it is, what the buffer holds."""
    example = sink.data_example
    if isinstance(data, np.ndarray):
        got = f"an array of shape {data.shape} and dtype {data.dtype}"
    else:
        got = f"a {type(data).__name__}"
    fields = ", ".join(f"{name}: {example.dtype[name]}" for name in example.dtype.names or ())
    return (f"does not fit buffer '{sink.name}' (data_length {example.shape[0]}, "
            f"data_dtype {{{fields}}}): got {got}")


class Importer(Base):
    """Worker class for importing data from an external generator into one sink.

    Attributes: ``data_example`` (an empty event of the sink's layout).

    >>> def worker(buffer_io: BufferIO):
    ...     importer = Importer(buffer_io)
    ...     shape = importer.data_example.shape
    ...     def ufunc():
    ...         for i in range(buffer_io['n_events']):
    ...             yield np.random.normal(size=shape)
    ...         yield None
    ...     importer(ufunc)
    """

    kind = "Importer"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 0 sources, 1 sink, 0 observes."""
        super().__init__(io)
        self._require_buffers()
        self.data_example = io.data_out_examples[0]
        self.metadata_example = io.metadata_out_examples[0]
        self.counter = 0

    def __call__(self, ufunc: Callable[[], Iterator[Any]]) -> None:
        """Run the generator ``ufunc()`` and write each event it yields to the sink.

        The generator (or any iterable) yields arrays shaped like
        ``data_example`` and finally None; running out counts as None too.
        Metadata is added: ``counter`` (events written by this process),
        ``timestamp`` (epoch seconds when the event was yielded) and
        ``deadtime`` (the fraction of the time since the previous event spent
        waiting for and writing into the buffer).
        """
        if not callable(ufunc):
            raise self._ufunc_failed(f"ufunc must be a generator function, got {type(ufunc).__name__}")
        writer = self.write[0]
        words = writer.buffer._meta_words
        try:
            generator = iter(ufunc())  # a generator, or any iterable of events
        except Exception as exc:
            raise self._ufunc_failed("ufunc failed to start", exc) from exc
        self.logger.info("importer started")
        last_event = time.time()
        _heartbeat.begin_waiting()  # between writes the process holds no event: it waits for its source
        try:
            while True:
                try:
                    data = next(generator)
                except StopIteration:
                    data = None
                except Exception as exc:
                    raise self._ufunc_failed("ufunc raised", exc) from exc
                data_ready = time.time()
                if data is None or writer.is_shutdown.value:
                    break
                with writer as (metadata_buffer, data_buffer):
                    try:
                        _copy_into(writer, None, data, False)
                    except (ValueError, TypeError) as exc:
                        raise self._ufunc_failed(f"yielded data that {_misfit(writer, data)}", exc) from exc
                    done = time.time()
                    slot = writer.token
                    if slot >= 0:
                        ints, floats = words[slot]
                        ints[0] = self.counter
                        floats[1] = data_ready
                        floats[2] = (done - data_ready) / (done - last_event) if done > last_event else 0.0
                    else:
                        metadata_buffer["counter"] = self.counter
                        metadata_buffer["timestamp"] = data_ready
                self.counter += 1
                last_event = time.time()
        finally:
            _heartbeat.end_waiting()
            close = getattr(generator, "close", None)
            if close is not None:  # let a generator release its hardware
                close()
        self.io.flush_sinks_if_standalone()
        self.logger.info("importer finished after %d events", self.counter)


class Exporter(Base):
    """Worker class for exporting data: iterate over the events of one source.

    With sinks of the same layout, every event is first copied to them, so the
    stream can be analysed further downstream.

    >>> def worker(buffer_io: BufferIO):
    ...     for data, metadata in Exporter(buffer_io):
    ...         print(data, metadata)
    """

    kind = "Exporter"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 1 source, any sinks of the source's layout, 0 observes."""
        super().__init__(io)
        self._require_buffers()
        self._require_same_layout(self.read[0], self.write)
        self.data_example = io.data_in_examples[0]
        self.metadata_example = io.metadata_in_examples[0]

    def __iter__(self) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
        """Yield ``(data, metadata)`` of every event until the source ends.

        The arrays are views into the slot, valid until the next iteration.
        """
        reader = self.read[0]
        sinks = self.write
        while True:
            with reader as (metadata, data):
                if data is None:
                    break
                for sink in sinks:
                    with sink:
                        _copy_into(sink, metadata, data, True, reader)
                yield data, metadata
        self.io.flush_sinks_if_standalone()
        self.logger.info("exporter finished")


class Filter(Base):
    """Worker class for filtering: copy or drop each event of one source.

    ``ufunc(data)`` returns a bool (True: copy to every sink) or a list of
    bools, one per sink.

    >>> def worker(buffer_io: BufferIO):
    ...     min_height = buffer_io['min_height']
    ...     Filter(buffer_io)(lambda data: data['ch1'].max() > min_height)
    """

    kind = "Filter"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 1 source, at least 1 sink of the source's layout, 0 observes."""
        super().__init__(io)
        self._require_buffers()
        self._require_same_layout(self.read[0], self.write)
        self.data_example = io.data_in_examples[0]

    def __call__(self, ufunc: Callable[[np.ndarray], Any]) -> None:
        """Run ``ufunc`` on every event and copy it to the sinks it selects."""
        if not callable(ufunc):
            raise self._ufunc_failed(f"ufunc must be callable, got {type(ufunc).__name__}")
        reader, sinks = self.read[0], self.write
        n_sinks = len(sinks)
        self.logger.info("filter started")
        while True:
            with reader as (metadata, data):
                if data is None:
                    break
                try:
                    result = ufunc(data)
                except Exception as exc:
                    raise self._ufunc_failed(_raised(data, exc), exc) from exc
                if isinstance(result, (bool, np.bool_)):
                    if not result:
                        continue
                    chosen = sinks
                elif isinstance(result, (list, tuple, np.ndarray)) and len(result) == n_sinks:
                    chosen = [s for s, keep in zip(sinks, result) if keep]
                elif result is None:
                    continue
                else:
                    raise self._ufunc_failed(
                        f"ufunc must return a bool or a list of {n_sinks} bools, got {result!r}"
                    )
                for sink in chosen:
                    with sink:
                        _copy_into(sink, metadata, data, True, reader)
        self.io.flush_sinks_if_standalone()
        self.logger.info("filter finished")


class Processor(Base):
    """Worker class for processing: compute new events from each event of one source.

    ``ufunc(data)`` returns None (drop the event) or a list with one entry per
    sink: None (nothing for that sink), an array for one event, or a list of
    arrays for several events. The source's metadata is copied along.

    >>> def worker(buffer_io: BufferIO):
    ...     Processor(buffer_io)(lambda data: [data['ch1'].max()])
    """

    kind = "Processor"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 1 source, at least 1 sink, 0 observes."""
        super().__init__(io)
        self._require_buffers()
        self.data_example = io.data_in_examples[0]

    def __call__(self, ufunc: Callable[[np.ndarray], Any]) -> None:
        """Run ``ufunc`` on every event and write its results to the sinks."""
        if not callable(ufunc):
            raise self._ufunc_failed(f"ufunc must be callable, got {type(ufunc).__name__}")
        reader, sinks = self.read[0], self.write
        self.logger.info("processor started")
        while True:
            with reader as (metadata, data):
                if data is None:
                    break
                try:
                    results = ufunc(data)
                except Exception as exc:
                    raise self._ufunc_failed(_raised(data, exc), exc) from exc
                if results is None:
                    continue
                if not isinstance(results, (list, tuple)) or len(results) != len(sinks):
                    raise self._ufunc_failed(
                        f"ufunc must return None or a list of {len(sinks)} results (one per sink), got {results!r}"
                    )
                for sink, result in zip(sinks, results):
                    if result is None:
                        continue
                    events = result if isinstance(result, list) else (result,)
                    for event in events:
                        try:
                            with sink:
                                _copy_into(sink, metadata, event, False)
                        except (ValueError, TypeError) as exc:
                            raise self._ufunc_failed(f"result for sink '{sink.name}' {_misfit(sink, event)}", exc) from exc
        self.io.flush_sinks_if_standalone()
        self.logger.info("processor finished")


class Observer(Base):
    """Worker class for observing: private copies of the latest events of one buffer.

    >>> def worker(buffer_io: BufferIO):
    ...     for data, metadata in Observer(buffer_io)():
    ...         if data is None:
    ...             break
    ...         print(data, metadata)
    """

    kind = "Observer"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 0 sources, 0 sinks, 1 observed buffer."""
        super().__init__(io)
        self._require_buffers()
        self.data_example = io.data_observe_examples[0]
        self.metadata_example = io.metadata_observe_examples[0]

    def __call__(self) -> Generator[tuple[Any, Any], None, None]:
        """Yield ``(data, metadata)`` copies until the buffer ends, then ``(None, None)``."""
        observer = self.observe[0]
        _heartbeat.begin_waiting()  # an observer never holds an event: between events it waits on purpose
        try:
            while True:
                with observer as (metadata, data):
                    if data is None:
                        break
                    _heartbeat.beat()
                    yield data, metadata
            self.logger.info("observer finished")
            yield None, None
        finally:
            _heartbeat.end_waiting()


class IsAlive(Base):
    """Worker class telling whether an observed buffer is still alive (not ended).

    >>> def worker(buffer_io: BufferIO):
    ...     is_alive = IsAlive(buffer_io)
    ...     while is_alive():
    ...         time.sleep(1)
    """

    kind = "IsAlive"

    def __init__(self, io: BufferIO) -> None:
        """Checks the setup: 0 sources, 0 sinks, 1 observed buffer."""
        super().__init__(io)
        self._require_buffers()
        _heartbeat.begin_waiting()  # an is-alive process never holds an event: it waits on purpose

    def __call__(self) -> bool:
        """True while the observed buffer has not ended."""
        _heartbeat.beat()
        return not self.observe[0].is_shutdown.value
