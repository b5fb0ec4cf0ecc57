"""mimocorb2: multiple-in multiple-out configurable ring buffers for data acquisition.

User-facing names are importable from here: ``import mimocorb2 as mi2; mi2.Importer``.
"""

from .errors import SetupError, UfuncError
from .mimo_buffer import BufferObserver, BufferReader, BufferWriter, mimoBuffer
from .mimo_worker import BufferIO
from .worker_templates import Exporter, Filter, Importer, IsAlive, Observer, Processor

__version__ = "0.1.0"


def read_mimo_file(path):  # noqa: ANN001, ANN201 - thin re-export, typed in mimocorb2.mimofile
    """Read a mimo file written by ``data.export``: ``(metadata, data)`` structured arrays (memory-mapped)."""
    from .mimofile import read_mimo_file as _read

    return _read(path)


__all__ = [
    "BufferIO",
    "BufferObserver",
    "BufferReader",
    "BufferWriter",
    "Exporter",
    "Filter",
    "Importer",
    "IsAlive",
    "Observer",
    "Processor",
    "SetupError",
    "UfuncError",
    "mimoBuffer",
    "read_mimo_file",
    "__version__",
]
