"""Setup files: loading and validating them, finding worker functions, run directories.

``load_setup(path)`` returns a :class:`Setup` or raises :class:`~mimocorb2.errors.SetupError`
listing every problem of the file at once.
"""

from __future__ import annotations

from ._functions import resolve_function
from ._load import check_setup, load_setup
from ._model import BufferSpec, DiskFloor, RunLimits, Setup, WorkerSpec
from ._problems import did_you_mean
from ._rundir import create_run_directory

__all__ = [
    "DiskFloor",
    "BufferSpec",
    "RunLimits",
    "Setup",
    "WorkerSpec",
    "check_setup",
    "create_run_directory",
    "did_you_mean",
    "load_setup",
    "resolve_function",
]
