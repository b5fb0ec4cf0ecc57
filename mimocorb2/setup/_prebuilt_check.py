"""A prebuilt function's own config and buffer checks, run at validation without running it.

`mimocorb2 check`, `mimoctl check/start` and `mimocorb2 run` then refuse a wrong
``plot_type``, a ``bins`` channel that is not a field, a ``pha`` sink field whose key
is not set, ... before any process starts. The function gets a BufferIO whose buffers
are only names and empty examples, with ``checks_only`` set: its ConfigChecker stops
it at ``done()`` (see :class:`mimocorb2.functions._common.ChecksPassed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SetupError
from ._functions import FunctionProblem, prebuilt_function
from ._model import WorkerSpec

#: prebuilt functions whose checks live with their network code (mimocorb2.net): not run here
NOT_CHECKED = frozenset({"exporters.nats", "importers.nats"})
#: the metadata every slot carries (mimocorb2.mimo_buffer.mimoBuffer.metadata_dtype)
_METADATA = np.dtype([("counter", np.int64), ("timestamp", np.float64), ("deadtime", np.float64)])


class _BufferLayout:
    """One buffer as a BufferIO sees it, without shared memory: its name and empty examples."""

    def __init__(self, name: str, data_length: int, data_dtype: np.dtype) -> None:
        self.name = name
        self.data_example = np.zeros(data_length, data_dtype)
        self.metadata_example = np.zeros(1, _METADATA)


def prebuilt_config_problems(worker: WorkerSpec, layouts: dict[str, tuple[int, np.dtype]],
                             setup_dir: Path, run_dir: Path) -> list[str]:
    """The problems (``Workers.NAME...: message``) the prebuilt function of ``worker`` finds.

    ``layouts``: buffer name -> (data_length, data_dtype). Empty for a user file, a
    function in :data:`NOT_CHECKED`, and whenever the function cannot be checked
    this way (it would say so when the worker starts).
    """
    if worker.file is not None or worker.function in NOT_CHECKED:
        return []
    from ..functions._common import ChecksPassed
    from ..mimo_worker import BufferIO

    try:
        function = prebuilt_function(worker.function)
    except FunctionProblem:
        return []  # reported by the function lookup

    def buffers(names: list[str]) -> list[Any]:
        return [_BufferLayout(name, *layouts[name]) for name in names]

    io = BufferIO(worker.name, buffers(worker.sources), buffers(worker.sinks), buffers(worker.observes),
                  worker.config, setup_dir, run_dir, number_of_processes=worker.number_of_processes)
    io.checks_only = True  # type: ignore[attr-defined]
    try:
        function(io)
    except ChecksPassed:
        return []
    except SetupError as err:
        return list(err.problems) or [err.message]
    except Exception:  # noqa: BLE001 - it needed more than a layout: its start will tell
        return []
    return []
