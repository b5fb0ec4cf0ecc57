"""Graph rules: every buffer written and read, and no cycles (end of stream must propagate)."""

from __future__ import annotations

from collections.abc import Iterable

from ._model import WorkerSpec
from ._problems import Problems


def check_graph(problems: Problems, buffers: Iterable[str],
                workers: dict[str, WorkerSpec]) -> None:
    """Record a problem for each unwritten or unread buffer and for each cycle of workers."""
    for name in buffers:
        if not any(name in w.sinks for w in workers.values()):
            problems.add(f"Buffers.{name}", "no worker writes this buffer (list it in some "
                         "worker's sinks), so it would never end")
        if not any(name in w.sources for w in workers.values()):
            problems.add(f"Buffers.{name}", "no worker reads this buffer (list it in some "
                         "worker's sources; add e.g. exporters.drain), so its writers would "
                         "block once it fills")
    _check_cycles(problems, workers)


def _downstream(worker: WorkerSpec, workers: dict[str, WorkerSpec]) -> list[tuple[str, str]]:
    """(buffer, reader) pairs: the workers reading what ``worker`` writes."""
    return [(b, w.name) for b in worker.sinks for w in workers.values() if b in w.sources]


def _cycle_from(start: str, workers: dict[str, WorkerSpec]) -> list[tuple[str, str]] | None:
    """A path of (buffer, worker) steps leading from ``start`` back to it, if there is one."""
    stack: list[tuple[str, list[tuple[str, str]]]] = [(start, [])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for buffer, reader in _downstream(workers[name], workers):
            step = [*path, (buffer, reader)]
            if reader == start:
                return step
            if reader not in seen:
                seen.add(reader)
                stack.append((reader, step))
    return None


def _check_cycles(problems: Problems, workers: dict[str, WorkerSpec]) -> None:
    reported: set[frozenset[str]] = set()
    for name in workers:
        cycle = _cycle_from(name, workers)
        if cycle is None or frozenset(w for _, w in cycle) in reported:
            continue
        reported.add(frozenset(w for _, w in cycle))
        text = name + "".join(f" -[{buffer}]-> {reader}" for buffer, reader in cycle)
        problems.add(f"Workers.{name}.sinks", f"the workers form a cycle ({text}), so end of "
                     "stream could never propagate through it")
