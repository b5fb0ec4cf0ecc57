"""Prebuilt miscellaneous functions: copying events into other buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as _np

from ._common import ConfigChecker as _ConfigChecker
from ._common import copy_event as _copy_event

if TYPE_CHECKING:
    from ..mimo_worker import BufferIO

__all__ = ["copy"]


def copy(buffer_io: BufferIO) -> None:
    """mimoCoRB2 Function: Copy data from one source to multiple sinks.

    Copys data from a source buffer to multiple sink buffers. This function is
    useful for duplicating data streams within the mimoCoRB2 framework, e.g. into
    buffers of other sizes or to isolate a slow consumer. A sink with the source's
    dtype and data_length receives a byte copy; otherwise every field of the sink
    must be a field of the source, the common length is copied and the rest of a
    longer sink is zeroed. The metadata is copied unchanged.

    Type
    ----
    Filter

    Buffers
    -------
    sources
        1 source buffer containing the data to be copied
    sinks
        1 or more sink buffers that will receive the copied data
    observes
        0

    Configs
    -------
    (none)

    Examples
    --------
    >>> # Workers: {copy: {function: misc.copy, sources: [raw], sinks: [for_scope, for_disk]}}
    """
    check = _ConfigChecker(buffer_io, "misc.copy")
    check.buffer_count("sources", list(buffer_io.buffer_names_in), 1)
    check.buffer_count("sinks", list(buffer_io.buffer_names_out), (1, None))
    check.buffer_count("observes", list(buffer_io.buffer_names_observe), 0)
    if buffer_io.data_in_examples:
        source = buffer_io.data_in_examples[0]
        src_fields = source.dtype.names or ()
        for name, example in zip(buffer_io.buffer_names_out, buffer_io.data_out_examples, strict=False):
            if example.dtype == source.dtype:
                continue
            for field in example.dtype.names or ():
                if field not in src_fields:
                    check.buffer_problem(
                        "sinks", f"field '{field}' of sink '{name}' is not a field of source "
                        f"'{buffer_io.buffer_names_in[0]}' (fields: {list(src_fields)})"
                    )
                elif example.dtype[field] != source.dtype[field]:
                    # numpy casts on assignment; only flag casts that could lose the value class
                    if not _np.can_cast(source.dtype[field], example.dtype[field], casting="same_kind"):
                        check.buffer_problem(
                            "sinks", f"field '{field}' of sink '{name}' has dtype {example.dtype[field]}, "
                            f"which cannot hold source dtype {source.dtype[field]}"
                        )
    check.done()
    reader = buffer_io.read[0]
    writers = list(buffer_io.write)
    source_example = buffer_io.read[0].data_example
    byte_copy = [w.data_example.dtype == source_example.dtype and w.data_example.shape == source_example.shape
                 for w in writers]
    try:
        while True:
            with reader as (metadata, data):
                if data is None:
                    break
                meta_src, data_src = reader.current_bytes()
                for writer, same in zip(writers, byte_copy, strict=True):
                    with writer as (_metadata_out, data_out):
                        meta_dst, data_dst = writer.current_bytes()
                        meta_dst[:] = meta_src
                        if same:
                            data_dst[:] = data_src
                        else:
                            _copy_event(data, data_out)
    except BaseException:
        # under the runner a failed process is restarted (its sinks must stay
        # open for the new process) or retired by the supervisor; never flush here
        buffer_io.flush_sinks_if_standalone()
        raise
    buffer_io.flush_sinks_if_standalone()
