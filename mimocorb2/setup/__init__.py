"""Setup files: loading and validating them, finding worker functions, run directories.

``load_setup(path)`` returns a :class:`Setup` or raises :class:`~mimocorb2.errors.SetupError`
listing every problem of the file at once; keys it does not use are ignored with a
warning or a note (``Setup.warnings``, ``Setup.notes``, :func:`inspect_setup`).
"""

from __future__ import annotations

from ._functions import resolve_function
from ._import_check import import_check
from ._load import check_setup, inspect_setup, load_setup, validate_setup
from ._model import BufferSpec, DiskFloor, RunLimits, Setup, SetupCheck, WorkerSpec
from ._problems import did_you_mean
from ._rundir import create_run_directory

__all__ = [
    "DiskFloor",
    "BufferSpec",
    "RunLimits",
    "Setup",
    "SetupCheck",
    "WorkerSpec",
    "check_setup",
    "create_run_directory",
    "did_you_mean",
    "inspect_setup",
    "import_check",
    "load_setup",
    "resolve_function",
    "validate_setup",
]
