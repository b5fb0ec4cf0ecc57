"""Validation of one entry of the ``Workers`` section."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ._functions import FunctionProblem, check_function, prebuilt_function
from ._model import RESTART_POLICIES, WorkerSpec
from ._problems import Problems, describe, did_you_mean
from ._values import check_choice, check_int, check_keys, check_positive, is_misspelled
from ._yaml import YamlProblem, read_yaml

WORKER_KEYS = ("file", "function", "config", "number_of_processes", "sources", "sinks",
               "observes", "restart", "max_restarts", "stall_timeout")
BUFFER_LISTS = ("sources", "sinks", "observes")
_UNUSABLE_FILE = Path("/\0unusable")  # marks a bad 'file' so no function lookup is tried


class WorkerChecker:
    """Checks workers of one setup file; ``buffers`` is None when the Buffers section is broken."""

    def __init__(self, problems: Problems, directory: Path, buffers: list[str] | None) -> None:
        self.problems = problems
        self.directory = directory
        self.buffers = buffers
        self.unresolved = 0  # buffer references that could not be checked against Buffers
        self.base_config: dict[str, Any] = {}  # top-level 'base_config', under every worker's

    def check(self, name: str, raw: dict[str, Any]) -> WorkerSpec:
        """A WorkerSpec for ``raw``; problems are recorded, bad values replaced by defaults."""
        where = f"Workers.{name}"
        check_keys(self.problems, where, raw, WORKER_KEYS)
        spec = WorkerSpec(
            name=name,
            function=self._function(where, raw),
            file=self._file(where, raw.get("file")),
            config=self._worker_config(where, raw.get("config")),
            number_of_processes=self._optional_int(where, raw, "number_of_processes", 1, 1),
            restart=self._restart(where, raw),
            max_restarts=self._optional_int(where, raw, "max_restarts", 0, 5),
            stall_timeout=self._stall_timeout(where, raw.get("stall_timeout")),
        )
        for key in BUFFER_LISTS:
            setattr(spec, key, self._buffer_list(f"{where}.{key}", raw.get(key)))
        self._check_repeats(where, spec)
        self._lookup(where, spec)
        return spec

    # --- function and file -------------------------------------------------------------
    def _function(self, where: str, raw: dict[str, Any]) -> str:
        if "function" not in raw:
            if is_misspelled(raw, "function", WORKER_KEYS):
                return ""
            self.problems.add(f"{where}.function", "missing (the name of the function to run, "
                              "e.g. 'exporters.drain' or a function in 'file')")
            return ""
        value = raw["function"]
        if not isinstance(value, str) or not value.strip():
            self.problems.add(f"{where}.function", f"must be a non-empty string, "
                              f"got {describe(value)}")
            return ""
        return value.strip()

    def _file(self, where: str, value: object) -> Path | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problems.add(f"{where}.file", f"must be a file name (string), "
                              f"got {describe(value)}")
            return _UNUSABLE_FILE
        path = (self.directory / Path(value).expanduser()).resolve()
        if not os.path.isfile(path):
            state = "is not a file" if os.path.exists(path) else "not found"
            self.problems.add(f"{where}.file", f"file '{value}' {state} (looked for {path})")
            return _UNUSABLE_FILE
        return path

    def _lookup_possible(self, spec: WorkerSpec) -> bool:
        return bool(spec.function) and spec.file != _UNUSABLE_FILE

    def _lookup(self, where: str, spec: WorkerSpec) -> None:
        if not self._lookup_possible(spec):
            return
        try:
            warnings = check_function(spec)
        except FunctionProblem as err:
            self.problems.add(f"{where}.{err.key}", str(err))
            return
        for warning in warnings:
            self.problems.warn(f"{where}.function", warning)
        if spec.file is None:
            self._check_template_buffers(where, spec)

    def _check_template_buffers(self, where: str, spec: WorkerSpec) -> None:
        """A prebuilt function's template must accept the worker's buffer counts.

        (A user file's template is only known when it runs: the template then
        refuses at construction, and the worker fails to start with that reason.)
        """
        from ..functions import parse_docstring
        from ..worker_templates import buffer_count_problems

        function = prebuilt_function(spec.function)
        doc = parse_docstring(spec.function, getattr(function, "__doc__", None))
        if doc is None:
            return
        counts = {key: len(getattr(spec, key)) for key in BUFFER_LISTS}
        article = "an" if doc.type[:1] in tuple("AEIOU") else "a"
        for key, rule in buffer_count_problems(doc.type, counts):
            self.problems.add(f"{where}.{key}", f"{spec.function} is {article} {doc.type} "
                              f"worker: it takes {rule}, got {counts[key]}")

    # --- config --------------------------------------------------------------------------
    def _worker_config(self, where: str, value: object) -> dict[str, Any]:
        """``base_config`` with the worker's own config merged over it (the worker's keys win)."""
        merged = copy.deepcopy(self.base_config)
        merged.update(self.config(f"{where}.config", value))
        return merged

    def config(self, where: str, value: object) -> dict[str, Any]:
        """The merged config: a mapping, a file name or a list of those (later keys win)."""
        if value is None or value == "":
            return {}
        if isinstance(value, dict):
            return copy.deepcopy(value)
        if isinstance(value, str):
            return self._config_file(where, value)
        if isinstance(value, list):
            merged: dict[str, Any] = {}
            for index, item in enumerate(value):
                merged.update(self._config_item(f"{where}[{index}]", item))
            return merged
        self.problems.add(where, f"must be a mapping, a config file name or a list of them, "
                          f"got {describe(value)}")
        return {}

    def _config_item(self, where: str, item: object) -> dict[str, Any]:
        if isinstance(item, dict):
            return copy.deepcopy(item)
        if isinstance(item, str) and item:
            return self._config_file(where, item)
        self.problems.add(where, f"must be a config file name or a mapping, "
                          f"got {describe(item)}")
        return {}

    def _config_file(self, where: str, name: str) -> dict[str, Any]:
        path = (self.directory / Path(name).expanduser()).resolve()
        try:
            data, duplicates, _ = read_yaml(path)
        except YamlProblem as err:
            reason = f"not found (looked for {path})" if str(err) == "file not found" else err
            self.problems.add(where, f"config file '{name}': {reason}")
            return {}
        for note in duplicates:
            self.problems.add(where, f"config file '{name}': {note}")
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.problems.add(where, f"config file '{name}' must hold a mapping of keys to "
                              f"values, got {describe(data)}")
            return {}
        return data

    # --- numbers and policies --------------------------------------------------------------
    def _optional_int(self, where: str, raw: dict[str, Any], key: str, minimum: int,
                      default: int) -> int:
        if key not in raw:
            return default
        value = check_int(self.problems, f"{where}.{key}", raw[key], minimum)
        return default if value is None else value

    def _restart(self, where: str, raw: dict[str, Any]) -> str:
        if "restart" not in raw:
            return "on-failure"
        value = check_choice(self.problems, f"{where}.restart", raw["restart"], RESTART_POLICIES)
        return value or "on-failure"

    def _stall_timeout(self, where: str, value: object) -> float | None:
        if value is None:
            return None
        return check_positive(self.problems, f"{where}.stall_timeout", value)

    # --- buffer lists -----------------------------------------------------------------------
    def _buffer_list(self, where: str, value: object) -> list[str]:
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.problems.add(where, f"must be a list of buffer names, got {describe(value)}")
            self.unresolved += 1
            return []
        names: list[str] = []
        for item in items:
            if not isinstance(item, str):
                self.problems.add(where, f"buffer names must be strings, got {describe(item)}")
                self.unresolved += 1
            elif self.buffers is not None and item not in self.buffers:
                hint = did_you_mean(item, self.buffers)
                self.problems.add(where, f"unknown buffer '{item}'{hint}")
                self.unresolved += 1
            else:
                names.append(item)
        return names

    def _check_repeats(self, where: str, spec: WorkerSpec) -> None:
        first_list: dict[str, str] = {}
        for key in BUFFER_LISTS:
            for buffer in getattr(spec, key):
                if buffer not in first_list:
                    first_list[buffer] = key
                elif first_list[buffer] == key:
                    self.problems.add(f"{where}.{key}", f"buffer '{buffer}' is listed twice")
                else:
                    self.problems.add(f"{where}.{key}", f"buffer '{buffer}' is already listed "
                                      f"in {first_list[buffer]}")
