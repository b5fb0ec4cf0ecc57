"""Events beyond one machine: buffers exported to and imported from NATS JetStream streams.

- :mod:`._wire`: the self-describing block format (no dependency on nats-py).
- :mod:`._config`: the checked config keys of both functions, credentials.
- :mod:`._client`: the asyncio loop thread inside a worker, connecting and JetStream API calls
  with backoff, the config and buffer checks both functions share, status files.
- :mod:`._exporter`: ``exporters.nats``; :mod:`._importer`: ``importers.nats``.
- :mod:`._session`: an exporting worker's run id; :mod:`._journal`: the exporter's blocks in
  flight; :mod:`._progress`: how far an importing process got with its block;
  :mod:`._markers`: every start and end marker of a stream, read by each importing process.

nats-py is an optional dependency (``pip install 'mimocorb2[nats]'``), imported only
when a function runs. See docs/network.md.
"""

from ._config import DEFAULT_URL, Deliver, ExporterConfig, ImporterConfig, Retention, redact_url
from ._exporter import run_exporter
from ._importer import run_importer
from ._markers import MarkerLog, MarkerView
from ._wire import (
    META_DTYPE,
    META_SIZE,
    Block,
    BlockKind,
    WireError,
    decode_block,
    describe_dtype,
    dtype_from_descr,
)

__all__ = [
    "DEFAULT_URL",
    "META_DTYPE",
    "META_SIZE",
    "Block",
    "BlockKind",
    "Deliver",
    "ExporterConfig",
    "ImporterConfig",
    "MarkerLog",
    "MarkerView",
    "Retention",
    "WireError",
    "decode_block",
    "describe_dtype",
    "dtype_from_descr",
    "redact_url",
    "run_exporter",
    "run_importer",
]
