"""Loading a setup file: every section validated, every problem collected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SetupError
from ._graph import check_graph
from ._model import FAILURE_POLICIES, BufferSpec, DiskFloor, RunLimits, Setup, SetupCheck, WorkerSpec
from ._prebuilt_check import prebuilt_config_problems
from ._problems import Problems, describe
from ._values import (check_choice, check_disk_floor, check_dtype, check_int, check_keys, check_mapping,
                      check_name, check_positive, is_misspelled)
from ._workers import WorkerChecker
from ._yaml import YamlProblem, read_yaml

TOP_KEYS = ("Buffers", "Workers", "base_config", "target_directory", "run_limits",
            "on_worker_failure", "drain_timeout", "stats_interval", "min_free_disk")
BUFFER_KEYS = ("slot_count", "data_length", "data_dtype")
RUN_LIMIT_KEYS = ("max_events", "max_seconds")
ANCHOR_PREFIX = "x-"  # top-level keys like 'x-defaults' only hold YAML anchors, silently


class _Loader:
    """One pass over one setup file; ``problems`` collects everything that is wrong."""

    def __init__(self, path: Path) -> None:
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.directory = self.path.parent
        self.problems = Problems(str(path))
        self.graph_known = True  # False when a worker's buffer references are not all known
        self._templates: list[str] = []  # top-level keys holding a YAML anchor (set by _read)

    def run(self) -> Setup | None:
        """The Setup, or None when problems were found."""
        data = self._read()
        if data is None:
            return None
        if not self._looks_like_setup(data):
            return None
        self._top_level_keys(data)
        buffers = self._buffers(data)
        workers = self._workers(data, None if buffers is None else list(buffers))
        options = self._options(data)
        if buffers is not None and workers is not None and self.graph_known:
            check_graph(self.problems, buffers, workers)
        if self.problems.lines or buffers is None or workers is None:
            return None
        self._prebuilt_configs(buffers, workers, options["target_directory"])
        if self.problems.lines:
            return None
        return self._build(buffers, workers, options)

    def _prebuilt_configs(self, buffers: dict[str, dict[str, Any]], workers: dict[str, WorkerSpec],
                          target: Path) -> None:
        """Each prebuilt function's own checks of its config and buffers (the rest is valid)."""
        layouts = {name: (values["data_length"], values["data_dtype"]) for name, values in buffers.items()}
        for worker in workers.values():
            for line in prebuilt_config_problems(worker, layouts, self.directory, target):
                where, _, message = line.partition(": ")
                if message:
                    self.problems.add(where, message)
                else:
                    self.problems.add(f"Workers.{worker.name}", line)

    def _top_level_keys(self, data: dict[str, Any]) -> None:
        """Misspelled known keys are problems; other unknown keys get one note.

        Setups written for the original mimoCoRB2 keep YAML anchor holders
        (``osc_template: &osc_template``) and blocks such as ``Options:`` at the top.
        An anchor holder is a template, not a setting: it is not mentioned.
        """
        keys = {k: v for k, v in data.items() if not str(k).startswith(ANCHOR_PREFIX)}
        unused = [k for k in check_keys(self.problems, "", keys, TOP_KEYS)
                  if str(k) not in self._templates]
        if unused:
            self.problems.note("", f"not used by mimocorb2: {', '.join(unused)}")

    def _read(self) -> dict[str, Any] | None:
        try:
            data, duplicates, self._templates = read_yaml(self.path)
        except YamlProblem as err:
            self.problems.add("", str(err))
            return None
        for note in duplicates:
            self.problems.add("", note)
        if data is None:
            self.problems.add("", "the setup file is empty (it needs 'Buffers' and 'Workers')")
            return None
        if not isinstance(data, dict):
            self.problems.add("", f"a setup file must be a mapping with the sections 'Buffers' "
                              f"and 'Workers', got {describe(data)}")
            return None
        return data

    def _looks_like_setup(self, data: dict[str, Any]) -> bool:
        """False (with one problem) for a mapping with no trace of Buffers or Workers."""
        if any(name in data or is_misspelled(data, name, TOP_KEYS)
               for name in ("Buffers", "Workers")):
            return True
        keys = ", ".join(str(k) for k in list(data)[:5])
        self.problems.add("", f"not a setup file: it has no 'Buffers' and no 'Workers' section "
                          f"(its keys: {keys}{', ...' if len(data) > 5 else ''})")
        return False

    def _section(self, data: dict[str, Any], name: str, what: str) -> dict[str, Any] | None:
        if name not in data:
            if is_misspelled(data, name, TOP_KEYS):
                return None
            self.problems.add(name, f"missing section (a mapping of {what})")
            return None
        return check_mapping(self.problems, name, data[name], what)

    # --- Buffers ---------------------------------------------------------------------------
    def _buffers(self, data: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        section = self._section(data, "Buffers", "buffer name -> buffer settings")
        if section is None:
            return None
        buffers: dict[str, dict[str, Any]] = {}
        for name, raw in section.items():
            check_name(self.problems, "Buffers", name, "buffer")  # still usable as a reference
            buffers[name] = self._buffer(name, raw)
        return buffers

    def _buffer(self, name: str, raw: object) -> dict[str, Any]:
        where = f"Buffers.{name}"
        if check_mapping(self.problems, where, raw, BUFFER_KEYS_TEXT) is None:
            return {}
        check_keys(self.problems, where, raw, BUFFER_KEYS)
        for key in BUFFER_KEYS:
            if key not in raw and not is_misspelled(raw, key, BUFFER_KEYS):
                self.problems.add(f"{where}.{key}", "missing")
        values: dict[str, Any] = {"raw_dtype": raw.get("data_dtype")}
        for key in ("slot_count", "data_length"):
            if key in raw:
                values[key] = check_int(self.problems, f"{where}.{key}", raw[key], 1)
        if "data_dtype" in raw:
            values["data_dtype"] = check_dtype(self.problems, f"{where}.data_dtype",
                                               raw["data_dtype"])
        return values

    # --- Workers ---------------------------------------------------------------------------
    def _workers(self, data: dict[str, Any],
                 buffer_names: list[str] | None) -> dict[str, WorkerSpec] | None:
        section = self._section(data, "Workers", "worker name -> worker settings")
        if section is None:
            return None
        if not section:
            self.problems.add("Workers", "no workers defined")
        checker = WorkerChecker(self.problems, self.directory, buffer_names)
        checker.base_config = checker.config("base_config", data.get("base_config"))
        workers: dict[str, WorkerSpec] = {}
        for name, raw in section.items():
            check_name(self.problems, "Workers", name, "worker")
            if check_mapping(self.problems, f"Workers.{name}", raw, "worker settings "
                             "(function, file, config, sources, sinks, ...)") is None:
                self.graph_known = False
                continue
            workers[name] = checker.check(name, raw)
        self.graph_known = self.graph_known and checker.unresolved == 0
        return workers

    # --- top-level options -----------------------------------------------------------------
    def _options(self, data: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "target_directory": self._target(data.get("target_directory", "target")),
            "run_limits": self._run_limits(data.get("run_limits")),
            "on_worker_failure": "stop", "drain_timeout": 30.0, "stats_interval": 1.0,
        }
        if "on_worker_failure" in data:
            options["on_worker_failure"] = check_choice(
                self.problems, "on_worker_failure", data["on_worker_failure"], FAILURE_POLICIES)
        for key in ("drain_timeout", "stats_interval"):
            if key in data:
                options[key] = check_positive(self.problems, key, data[key])
        if "min_free_disk" in data:
            floor = check_disk_floor(self.problems, "min_free_disk", data["min_free_disk"])
            if floor is not None:
                options["min_free_disk"] = DiskFloor(*floor)
        return options

    def _target(self, value: object) -> Path:
        if not isinstance(value, str) or not value.strip():
            self.problems.add("target_directory", f"must be a directory name (string), "
                              f"got {describe(value)}")
            return self.directory / "target"
        return Path(os.path.abspath(self.directory / Path(value).expanduser()))

    def _run_limits(self, value: object) -> RunLimits:
        if value is None:
            return RunLimits()
        raw = check_mapping(self.problems, "run_limits", value, "max_events / max_seconds")
        if raw is None:
            return RunLimits()
        check_keys(self.problems, "run_limits", raw, RUN_LIMIT_KEYS)
        events = raw.get("max_events")
        seconds = raw.get("max_seconds")
        if events is not None:
            events = check_int(self.problems, "run_limits.max_events", events, 1)
        if seconds is not None:
            seconds = check_positive(self.problems, "run_limits.max_seconds", seconds)
        return RunLimits(max_events=events, max_seconds=seconds)

    # --- result ----------------------------------------------------------------------------
    def _build(self, buffers: dict[str, dict[str, Any]], workers: dict[str, WorkerSpec],
               options: dict[str, Any]) -> Setup:
        specs = {name: _buffer_spec(name, values, workers) for name, values in buffers.items()}
        setup = Setup(path=self.path, directory=self.directory, buffers=specs, workers=workers,
                      **options)
        setup.resolved = resolved_dict(setup, {n: v["raw_dtype"] for n, v in buffers.items()})
        setup.warnings = list(self.problems.warnings)
        setup.notes = list(self.problems.notes)
        return setup


BUFFER_KEYS_TEXT = "buffer settings (slot_count, data_length, data_dtype)"


def _buffer_spec(name: str, values: dict[str, Any], workers: dict[str, WorkerSpec]) -> BufferSpec:
    """A BufferSpec with its reader groups, writer count and observers filled in."""
    return BufferSpec(
        name=name,
        slot_count=values["slot_count"],
        data_length=values["data_length"],
        data_dtype=values["data_dtype"],
        reader_groups=[w.name for w in workers.values() if name in w.sources],
        writer_count=sum(w.number_of_processes for w in workers.values() if name in w.sinks),
        observers=[w.name for w in workers.values() if name in w.observes],
    )


def _worker_dict(worker: WorkerSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"function": worker.function}
    if worker.file is not None:
        entry["file"] = str(worker.file)
    entry.update(config=worker.config, number_of_processes=worker.number_of_processes,
                 sources=list(worker.sources), sinks=list(worker.sinks),
                 observes=list(worker.observes), restart=worker.restart,
                 max_restarts=worker.max_restarts, stall_timeout=worker.stall_timeout)
    return entry


def resolved_dict(setup: Setup, dtypes: dict[str, Any]) -> dict[str, Any]:
    """The setup as plain data: defaults filled in, paths absolute, config files merged in."""
    limits = {k: getattr(setup.run_limits, k) for k in RUN_LIMIT_KEYS
              if getattr(setup.run_limits, k) is not None}
    return to_plain({
        "Buffers": {name: {"slot_count": b.slot_count, "data_length": b.data_length,
                           "data_dtype": dtypes[name]} for name, b in setup.buffers.items()},
        "Workers": {name: _worker_dict(w) for name, w in setup.workers.items()},
        "target_directory": str(setup.target_directory),
        "run_limits": limits,
        "on_worker_failure": setup.on_worker_failure,
        "drain_timeout": setup.drain_timeout,
        "stats_interval": setup.stats_interval,
        "min_free_disk": str(setup.min_free_disk),
    })


def to_plain(value: Any) -> Any:
    """A deep copy of ``value`` using only types yaml.safe_dump writes (numpy, paths converted)."""
    if isinstance(value, dict):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.dtype):
        return str(value)
    return value


def _check(path: str | os.PathLike[str]) -> tuple[Setup | None, SetupCheck]:
    loader = _Loader(Path(path))
    setup = loader.run()
    found = loader.problems
    return setup, SetupCheck(found.lines, found.warnings, found.notes)


def validate_setup(path: str | os.PathLike[str]) -> tuple[Setup | None, list[str], list[str]]:
    """``(setup or None, problems, warnings)`` of a setup file, without raising."""
    setup, found = _check(path)
    return setup, found.problems, found.warnings


def load_setup(path: str | os.PathLike[str]) -> Setup:
    """Read and completely validate a setup file; raise SetupError listing every problem."""
    setup, found = _check(path)
    problems = found.problems
    if problems or setup is None:
        count = len(problems)
        raise SetupError(f"{path}: {count} problem{'s' if count != 1 else ''}", problems)
    return setup


def check_setup(path: str | os.PathLike[str]) -> list[str]:
    """The problems of a setup file (empty when it is fine), without raising."""
    return _check(path)[1].problems


def inspect_setup(path: str | os.PathLike[str]) -> SetupCheck:
    """Problems, warnings and notes of a setup file, without raising."""
    return _check(path)[1]
