"""Prebuilt importers: workers that bring data from hardware or the network into a buffer.

- :mod:`.redpitaya`: ``importers.redpitaya.waveform``, a Red Pitaya STEMlab 125-14
  read over its SCPI server.
- :func:`nats`: ``importers.nats``, the events of a NATS JetStream stream written by
  ``exporters.nats`` (implemented in :mod:`mimocorb2.net`).

Submodules are imported on demand (importing this package is cheap).
"""

from __future__ import annotations

from typing import Any

from .._common import with_nats_connection_configs

__all__ = ["nats"]


def nats(buffer_io: Any) -> None:
    """mimoCoRB2 Function: Import the events of a NATS JetStream stream into the sink buffer.

    Reads the blocks that exporters.nats published to a stream and writes their
    events into the sink, with counter, timestamp and deadtime restored unchanged.
    The worker is one reader group of the stream (a durable consumer named after the
    worker, or group): its processes share the group's events, and every group gets
    every event. A block is acknowledged only after its events are in the sink; a
    block delivered again after a server restart is skipped, and the block a killed
    process was writing is resumed after its last event in the sink (exactly, even
    for a kill right after a commit). The stream's dtype must
    be the sink's (checked at start: a SetupError names both). The group ends, and the
    sink with it, when every exporter run (session) it has seen a start marker or a
    block of has sent all its end markers, at least producers of them, and everything
    before them is in the sink; end markers of an earlier run it saw nothing of are
    ignored. Every process reads every marker for itself, so workers on several hosts
    that share one group all end after the last event. While the server or
    the stream is missing the worker waits and retries ("waiting for NATS at URL" in
    RUN_DIR/status/<worker>.json). Needs nats-py (pip install 'mimocorb2[nats]').
    Details: docs/network.md.

    Type
    ----
    Importer

    Buffers
    -------
    sources
        0
    sinks
        1 with the data_dtype and data_length of the exporting buffer
    observes
        0

    Configs
    -------
    stream : str, optional (default=sink buffer name)
        Name of the JetStream stream.
    group : str, optional (default=worker name)
        Name of the reader group (the durable consumer); workers on other hosts with the same group share its events, and each of them ends after the group's last event.
    producers : int, optional (default=1)
        Number of exporter runs (sessions) that must have ended before the group ends: the exporting workers feeding the stream, or the runs a replay must read.
    deliver : str, optional (default='all')
        Where a new group starts: 'all' (everything the stream keeps), 'new' (from now on) or 'start_time'.
    start_time : str, optional (default=None)
        With deliver 'start_time': an ISO time (2026-11-27T18:00:00Z) or epoch seconds to replay from.
    batch : int, optional (default=1)
        Blocks fetched per request. A request waits until it has them all (at most 0.25 s), so more than 1 adds latency on a slow stream.
    ack_wait : float, optional (default=5.0)
        Seconds before the server re-sends an unacknowledged block (kept alive while the sink is full); set when the group is created.

    Examples
    --------
    >>> # Workers:
    >>> #   from_network:
    >>> #     function: importers.nats
    >>> #     config: {url: nats://analysis-pc:4222, stream: waveforms}
    >>> #     sinks: [waveforms]
    """
    from ...net import run_importer

    run_importer(buffer_io)


# url and the login/TLS keys, the same for both NATS functions, come from functions._common
nats.__doc__ = with_nats_connection_configs(nats.__doc__)
