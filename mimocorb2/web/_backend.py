"""What the web layer needs from the process that runs the acquisition: one small interface.

The web package talks to the daemon only through :class:`Backend`. Today's
implementation, :class:`DaemonBackend`, adapts ``mimocorb2.supervisor.server.Daemon``
and its ``Handlers``; another engine (the foreground runner) only needs another
adapter: :class:`ForegroundBackend` serves ``mimocorb2 run --web`` through
``supervisor/foreground_web.py``'s host object. Attributes of the daemon used here
(and nowhere else in ``web/``):

- ``daemon.dispatch(cmd, args, peer)``         -- the Unix socket's command path
- ``daemon.socket_path``                         -- its directory is the runtime directory
- ``daemon.current_run``                         -- current or last run, None before the first;
  of it: ``.done``, ``.directory``, ``.setup`` (``.path``, ``.buffers``, ``.workers``),
  ``.roots``, ``.gateway.buffers`` (name -> mimoBuffer) and ``.gateway.call(fn)`` (runs ``fn``
  in a thread unless the buffers are closed, and makes closing wait for it)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

#: worker functions with a panel of their own
SCOPE_FUNCTIONS = ("observers.oscilloscope",)
HISTOGRAM_FUNCTIONS = ("exporters.histogram", "visualizers.histogram", "exporters.visualize_histogram")


class Backend(Protocol):
    """The acquisition engine as the web page sees it."""

    async def status(self) -> dict[str, Any]:
        """The same dict ``mimoctl status --json`` prints (with ``alarms``)."""

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Any) -> Any:
        """Carry out a control command through the socket's handlers; ``str(peer)`` is logged."""

    async def observe_latest(self, buffer: str, transform: Callable[[Any, Any], Any] | None = None) -> Any:
        """In a thread: ``transform(metadata, data)`` of the newest unseen event of ``buffer``
        (a private copy; no slot held), or None when there is none or no run."""

    def runtime_directory(self) -> Path:
        """Where private files of the daemon live (the tokens file)."""

    def run_key(self) -> Any:
        """Identity of the current run: changes when a new run starts."""

    def run_directory(self) -> Path | None:
        """The current (or last) run's directory."""

    def log_files(self) -> dict[str, Path]:
        """Log name (``daemon`` or a worker) -> file, for the current run."""

    def setup_graph(self) -> dict[str, Any] | None:
        """Buffers and workers of the current run's setup, as wired (see DaemonBackend)."""


class DaemonBackend:
    """:class:`Backend` for ``mimocorb2d`` (``supervisor/server.py`` + ``supervisor/handlers.py``)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._observers: dict[str, Any] = {}
        self._observers_run: Any = None

    async def status(self) -> dict[str, Any]:
        """The status reply, built by the daemon's own ``status`` handler."""
        return await self.daemon.dispatch("status", {}, "web")

    async def dispatch(self, cmd: str, args: dict[str, Any], peer: Any) -> Any:
        """Run socket command ``cmd`` through the daemon's handlers (the path ``mimoctl`` takes)."""
        return await self.daemon.dispatch(cmd, args, peer)

    async def observe_latest(self, buffer: str, transform: Callable[[Any, Any], Any] | None = None) -> Any:
        """A copy of ``buffer``'s newest event (or ``transform(metadata, data)`` of it), read in a thread.

        None when there is none yet, the run has ended or the buffer is unknown; never holds a slot.
        """
        run = self.daemon.current_run
        gateway = None if run is None else run.gateway
        if run is None or run.done or gateway is None or buffer not in gateway.buffers:
            self._forget_observers()
            return None
        if self._observers_run is not run:
            self._observers, self._observers_run = {}, run  # views of an old run's buffers go

        def latest() -> Any:
            from mimocorb2.mimo_buffer import BufferObserver

            observer = self._observers.get(buffer)
            if observer is None:
                observer = self._observers[buffer] = BufferObserver(gateway.buffers[buffer])
            got = observer.latest()
            if got is None:
                return None
            metadata, data = got
            return transform(metadata, data) if transform else (metadata.copy(), data.copy())

        return await gateway.call(latest)

    def runtime_directory(self) -> Path:
        """Where the tokens file lives: the directory of the daemon's socket."""
        return Path(self.daemon.socket_path).parent

    def run_key(self) -> Any:
        """An identity of the current run (None: no run), so that feeds notice a new run.

        Also forgets the observers of a run that has ended."""
        run = self.daemon.current_run
        if run is None or run.done:
            self._forget_observers()
        return None if run is None else id(run)

    def _forget_observers(self) -> None:
        """Drop the observers of an ended run: their views keep its shared memory mapped."""
        if self._observers:
            self._observers, self._observers_run = {}, None

    def run_directory(self) -> Path | None:
        """The current run's directory, None before the first run."""
        run = self.daemon.current_run
        return None if run is None or run.directory is None else Path(run.directory)

    def log_files(self) -> dict[str, Path]:
        """``{name: path}`` of the run's logs: ``daemon`` (the run's daemon.log) and one per worker."""
        directory = self.run_directory()
        run = self.daemon.current_run
        if directory is None or run is None:
            return {}
        files = {"daemon": directory / "daemon.log"}
        for name in run.setup.workers:
            files[name] = directory / "logs" / f"{name}.log"
        return files

    def setup_graph(self) -> dict[str, Any] | None:
        """The current run's buffers and workers as wired (:func:`describe_setup`), None without a run."""
        run = self.daemon.current_run
        if run is None:
            return None
        return describe_setup(run.setup, list(run.roots))


class ForegroundBackend(DaemonBackend):
    """:class:`Backend` for ``mimocorb2 run --web``: the daemon's adapter over a host object
    (``supervisor.foreground_web.ForegroundHost``) that has ``runtime_directory`` instead of a socket."""

    def runtime_directory(self) -> Path:
        """The run's private directory (0700) that holds its tokens."""
        return Path(self.daemon.runtime_directory)


def describe_setup(setup: Any, roots: list[str]) -> dict[str, Any]:
    """Buffers and workers of a loaded Setup as plain JSON (configs only for panels that use them)."""
    buffers = {
        name: {"slot_count": b.slot_count, "data_length": b.data_length,
               "fields": list(b.data_dtype.names or ()), "root": name in roots,
               "event_bytes": int(b.data_dtype.itemsize) * int(b.data_length)}
        for name, b in setup.buffers.items()
    }
    workers = {}
    for name, w in setup.workers.items():
        entry: dict[str, Any] = {"function": w.function, "processes": w.number_of_processes,
                                 "sources": list(w.sources), "sinks": list(w.sinks),
                                 "observes": list(w.observes)}
        if w.function in SCOPE_FUNCTIONS or w.function in HISTOGRAM_FUNCTIONS:
            entry["config"] = _plain(w.config)
        workers[name] = entry
    return {"name": Path(setup.path).parent.name + "/" + Path(setup.path).name, "path": str(setup.path),
            "buffers": buffers, "workers": workers}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

