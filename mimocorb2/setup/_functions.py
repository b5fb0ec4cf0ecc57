"""Finding a worker's function: in a user file or in the prebuilt ``mimocorb2.functions``.

:func:`check_function` is what validation uses: it checks a user file statically
(never running it) and imports only our own prebuilt modules. :func:`find_function`
imports the user's file and is called only inside a worker process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import re
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import SetupError
from ._model import WorkerSpec
from ._problems import did_you_mean
from ._source import SourceProblem, check_source_function

PREBUILT_PACKAGE = "mimocorb2.functions"

_user_modules: dict[tuple[str, int, int], ModuleType] = {}
_user_modules_lock = threading.RLock()  # a worker's own threads may resolve too


class FunctionProblem(Exception):
    """The function of a worker cannot be found; ``key`` is 'file' or 'function'."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def user_module_name(path: Path) -> str:
    """A module name unique to ``path``: ``mimocorb2_user_<stem>_<hash of the path>``."""
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"mimocorb2_user_{stem}_{digest}"


def _failure(err: BaseException, path: Path) -> str:
    """One line describing an exception raised while importing ``path``."""
    if isinstance(err, SyntaxError):
        return f"{type(err).__name__}: {err.msg} (line {err.lineno})"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def _exec_user_file(path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module, its directory on sys.path while it loads."""
    name = user_module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FunctionProblem("file", f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    directory = str(path.parent)
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(name, None)
        raise
    except BaseException as err:  # user code may raise anything, even SystemExit
        sys.modules.pop(name, None)
        raise FunctionProblem("file", f"importing {path} failed: {_failure(err, path)}") from err
    finally:
        if directory in sys.path:
            sys.path.remove(directory)
    return module


def load_user_module(path: Path) -> ModuleType:
    """Import a user's function file, reusing it while the file is unchanged."""
    try:
        stat = path.stat()
    except OSError:
        raise FunctionProblem("file", f"file not found: {path}") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _user_modules_lock:
        if key not in _user_modules:
            module = _exec_user_file(path)
            for stale in [k for k in _user_modules if k[0] == key[0]]:
                del _user_modules[stale]
            _user_modules[key] = module
        sys.modules[user_module_name(path)] = _user_modules[key]
        return _user_modules[key]


def _callables(module: ModuleType) -> list[str]:
    return [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]


def _attribute(module: ModuleType, attr: str, where: str) -> Callable[..., Any]:
    """``module.attr`` if it is callable, else a FunctionProblem with a did-you-mean."""
    value = getattr(module, attr, None)
    if value is None:
        hint = did_you_mean(attr, _callables(module))
        raise FunctionProblem("function", f"function '{attr}' not found in {where}{hint}")
    if not callable(value):
        raise FunctionProblem("function", f"'{attr}' in {where} is not callable")
    return value


def _sibling_modules(module_name: str) -> list[str]:
    """Names of the modules next to ``module_name`` (for a did-you-mean)."""
    parent, _, _ = module_name.rpartition(".")
    try:
        package = importlib.import_module(parent)
    except Exception:
        return []
    prefix = parent[len(PREBUILT_PACKAGE) + 1:]
    found = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
    return [f"{prefix}.{n}" if prefix else n for n in found]


def _is_missing(err: ModuleNotFoundError, module_name: str) -> bool:
    """Whether the module itself (or a parent package) does not exist."""
    missing = err.name or ""
    return module_name == missing or module_name.startswith(missing + ".")


def _full_name_hint(function: str) -> str:
    """`` (did you mean 'importers.redpitaya.waveform'?)`` for a prebuilt name given without its
    first parts ('redpitaya.waveform', as the manual's headings show it, or 'pha'); else ''."""
    from ..functions import iter_functions

    names = [name for _, _, doc in iter_functions() for name in (doc.name, *doc.aliases)]
    matches = [name for name in names if name.endswith("." + function)]
    return f" (did you mean '{matches[0]}'?)" if len(matches) == 1 else ""


def _prebuilt(function: str) -> Callable[..., Any]:
    """The prebuilt function ``module.function`` from ``mimocorb2.functions``."""
    module_part, _, attr = function.rpartition(".")
    if not module_part or not attr:
        raise FunctionProblem("function", f"unknown prebuilt function '{function}': prebuilt "
                              "names are 'module.function' (e.g. 'exporters.drain'); "
                              f"set 'file' to use a function of your own{_full_name_hint(function)}")
    module_name = f"{PREBUILT_PACKAGE}.{module_part}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if not _is_missing(err, module_name):
            raise FunctionProblem("function", f"prebuilt module {module_name} "
                                  f"failed to import: {err}") from err
        hint = _full_name_hint(function) or did_you_mean(module_part, _sibling_modules(module_name))
        raise FunctionProblem("function", f"unknown prebuilt function '{function}': "
                              f"no module '{module_part}' in {PREBUILT_PACKAGE}{hint}") from None
    except Exception as err:
        raise FunctionProblem("function", f"prebuilt module {module_name} failed to import: "
                              f"{type(err).__name__}: {err}") from err
    try:
        return _attribute(module, attr, f"prebuilt module {module_name}")
    except FunctionProblem as err:
        raise FunctionProblem("function", f"unknown prebuilt function '{function}': {err}") from None


def check_function(worker: WorkerSpec) -> list[str]:
    """Check, without running user code, that ``worker``'s function can be found.

    A prebuilt function is imported (our own code); a user file is parsed and must
    bind the name at top level. Returns warnings; raises FunctionProblem.
    """
    if worker.file is None:
        _prebuilt(worker.function)
        return []
    try:
        return check_source_function(Path(worker.file), worker.function)
    except SourceProblem as err:
        raise FunctionProblem(err.key, str(err)) from None


def prebuilt_function(name: str) -> Callable[..., Any]:
    """The prebuilt function ``module.function``; raises FunctionProblem when unknown."""
    return _prebuilt(name)


def find_function(worker: WorkerSpec) -> Callable[..., Any]:
    """The callable named by ``worker``, importing its file: only in a worker process.

    Raises FunctionProblem when it cannot be found.
    """
    if worker.file is None:
        return _prebuilt(worker.function)
    module = load_user_module(Path(worker.file))
    return _attribute(module, worker.function, str(worker.file))


def resolve_function(worker: WorkerSpec) -> Callable[..., Any]:
    """Import and return the function of ``worker`` (user file or prebuilt library).

    Works from the (pickled) WorkerSpec alone, so it can be called inside a spawned worker
    process. Raises SetupError naming the worker, the file and the function when not found.
    """
    try:
        return find_function(worker)
    except FunctionProblem as err:
        source = str(worker.file) if worker.file else PREBUILT_PACKAGE
        raise SetupError(
            f"worker '{worker.name}': cannot load function '{worker.function}' from {source}",
            problems=[f"Workers.{worker.name}.{err.key}: {err}"],
        ) from None
