"""What the daemon pushes to the pages: status, rates history, scope frames, histograms, log lines.

:class:`Feeds` owns the producer tasks. None of them waits for a page: each
offers its frame to the pages' sender tasks (see ``_hub.py``), which keep only
the latest of each kind. Everything that reads files or buffers runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
import weakref
from typing import Any

import structlog

from mimocorb2.web import _panels
from mimocorb2.web._backend import SCOPE_FUNCTIONS, Backend
from mimocorb2.web._history import RateHistory
from mimocorb2.web._hub import Hub, Page
from mimocorb2.web._logs import LogTail

log = structlog.get_logger("mimocorb2.web")

#: seconds between status frames (and history samples, alarm evaluations)
TICK = 1.0
#: shortest time between two scope frames of one buffer
SCOPE_PERIOD = 0.1
#: frame period of a buffer shown on demand (no oscilloscope worker observes it)
ON_DEMAND_PERIOD = 0.2
HISTOGRAM_PERIOD = 2.0
LOG_PERIOD = 1.0
#: how long a pending transition is shown without confirmation before it is dropped
PENDING_TIMEOUT = 120.0
#: states that confirm each verb
CONFIRMS = {
    "pause": ("paused", "stopping", "finished", "failed"),
    "resume": ("running", "stopping", "finished", "failed"),
    "stop": ("stopping", "finished", "failed"),
    "abort": ("finished", "failed"),
    "start": ("running", "paused", "stopping", "finished", "failed"),
}


class Feeds:
    """The producers of the pages' frames, and what they remember (history, pending transitions)."""

    def __init__(self, backend: Backend, hub: Hub) -> None:
        self.backend = backend
        self.hub = hub
        self.history: RateHistory | None = None
        self.pending: dict[str, dict[str, Any]] = {}  # verb -> requested_at, by, run
        self.last_status: dict[str, Any] = {}
        self.daemon_cpu = 0.0
        self.busy = 0.0  # seconds spent in the status ticker (awaits included)
        self._memory: dict[str, int] = {}
        self._history_key: Any = object()
        self._setup_key: Any = object()
        self._tasks: list[asyncio.Task[Any]] = []
        self._scope_tasks: dict[str, asyncio.Task[Any]] = {}
        self._logs = LogTail()
        self._logs_key: Any = object()
        self._tick_now = asyncio.Event()
        self._cpu_last: tuple[float, float] | None = None

    def start(self) -> None:
        """Start the ticker, histogram and log tasks on the running loop (once, after the server listens)."""
        self._tasks = [asyncio.create_task(self._ticker(), name="web-ticker"),
                       asyncio.create_task(self._histogram_loop(), name="web-histograms"),
                       asyncio.create_task(self._log_loop(), name="web-logs")]

    async def close(self) -> None:
        """Cancel every feed task, the oscilloscope tasks included, and wait until they have ended."""
        tasks = [*self._tasks, *self._scope_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def tick_now(self) -> None:
        """Send a status frame at once (after an action)."""
        self._tick_now.set()

    def requested(self, verb: str, by: str) -> None:
        """An action was asked for: shown as pending until a status confirms it."""
        if verb in CONFIRMS:
            self.pending[verb] = {"verb": verb, "requested_at": time.time(), "by": by,
                                  "run": self.backend.run_key()}
        self.tick_now()

    def refused(self, verb: str) -> None:
        """An action was refused: drop its pending mark and send a fresh status at once."""
        self.pending.pop(verb, None)
        self.tick_now()

    def welcome(self, page: Page) -> None:
        """What a page gets as soon as it connects."""
        if self.last_status:
            page.offer("status", self.status_frame(self.last_status))
        page.offer("setup", self.setup_frame())

    def setup_frame(self) -> str:
        """The ``setup`` frame: the current run's graph as JSON (``null`` without a run)."""
        return json.dumps({"type": "setup", "setup": self.backend.setup_graph()}, default=str)

    def on_view(self, page: Page) -> None:
        """A page changed what it shows."""
        self._update_scope_tasks()
        if page.view.logs and self._logs.recent:
            page.offer_lines(list(self._logs.recent))

    def histogram_dirs(self) -> dict[str, dict[str, Any]]:
        """The run's ``Histograms_<buffer>`` directories of histogram workers -> ``{path, workers}``
        (the files the page may read)."""
        return _panels.histogram_directories(self.backend.setup_graph(), self.backend.run_directory())

    def status_frame(self, status: dict[str, Any], point: dict[str, Any] | None = None) -> str:
        """The ``status`` frame: ``status`` plus pending actions, the daemon's CPU and memory, the server
        time, the run key and, when given, the newest history point.
        """
        extra = {"pending": list(self.pending.values()), "daemon_cpu": round(self.daemon_cpu, 1),
                 "memory": self._memory, "server_time": time.time(),
                 "run_key": str(self.backend.run_key())}
        return dumps({"type": "status", "status": status, "web": extra, "point": point})

    async def _ticker(self) -> None:
        """Every second (or at once after an action): status to every page, history, pending."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tick_now.wait(), TICK)
            self._tick_now.clear()
            started = time.perf_counter()
            try:
                status = await self.backend.status()
            except Exception:
                log.exception("web: status failed")
                continue
            self.last_status = status
            key = self.backend.run_key()
            if key != self._setup_key:  # a new run: its graph, scopes, histograms and logs
                self._setup_key = key
                self.hub.broadcast("setup", self.setup_frame())
            point = self._record_history(status)
            self._settle_pending(status)
            self._sample_cpu()
            self.busy += time.perf_counter() - started
            if not self.hub.pages:
                continue  # history and alarms are kept; nobody to show the rest to
            pids = [p["pid"] for w in (status.get("workers") or {}).values() for p in w.get("processes", [])
                    if p.get("alive") and p.get("pid")]
            self._memory = {str(k): v for k, v in
                            (await asyncio.to_thread(_panels.process_memory, [os.getpid(), *pids])).items()}
            started = time.perf_counter()
            self.hub.broadcast("status", self.status_frame(status, point))
            self.busy += time.perf_counter() - started

    def _record_history(self, status: dict[str, Any]) -> dict[str, Any] | None:
        key = self.backend.run_key()
        run = status.get("run")
        if key is None or not run:
            return None
        buffers = status.get("buffers") or {}
        if key != self._history_key:
            self._history_key = key
            self.history = RateHistory(list(buffers), float(run.get("started_at") or time.time()))
        if status.get("state") in ("finished", "failed") and run.get("ended_at"):
            return None  # the history ends with the run
        now = time.time()
        rates = {n: float(b.get("rate") or 0.0) for n, b in buffers.items()}
        assert self.history is not None
        self.history.add(now, rates)
        return {"t": now, "rates": rates}

    def _settle_pending(self, status: dict[str, Any]) -> None:
        state = status.get("state")
        now = time.time()
        for verb, entry in list(self.pending.items()):
            confirmed = state in CONFIRMS[verb]
            if verb == "start":
                confirmed = confirmed and entry["run"] != self.backend.run_key()
            if confirmed or now - entry["requested_at"] > PENDING_TIMEOUT:
                del self.pending[verb]

    def _sample_cpu(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu, now = usage.ru_utime + usage.ru_stime, time.monotonic()
        if self._cpu_last is not None and now > self._cpu_last[0]:
            self.daemon_cpu = 100.0 * (cpu - self._cpu_last[1]) / (now - self._cpu_last[0])
        self._cpu_last = (now, cpu)

    def _update_scope_tasks(self) -> None:
        wanted = self.hub.wanted_scopes()
        for name in list(self._scope_tasks):
            if name not in wanted:
                self._scope_tasks.pop(name).cancel()
        for name in wanted - set(self._scope_tasks):
            self._scope_tasks[name] = asyncio.create_task(self._scope_loop(name), name=f"web-scope-{name}")

    async def _scope_loop(self, buffer: str) -> None:
        """Frames of ``buffer`` (at most one per SCOPE_PERIOD) to the pages that show it."""
        def encode(metadata: Any, data: Any) -> bytes:
            return _panels.encode_scope_frame(buffer, metadata, data)

        period = self._scope_period(buffer)
        while True:
            await asyncio.sleep(period)
            if not any(buffer in p.view.scopes for p in self.hub.pages):
                self._scope_tasks.pop(buffer, None)
                return
            try:
                frame = await self.backend.observe_latest(buffer, encode)
            except Exception:
                log.exception("web: scope frame failed", buffer=buffer)
                await asyncio.sleep(1.0)
                continue
            if frame is not None:
                self.hub.broadcast(f"scope:{buffer}", frame, lambda p: buffer in p.view.scopes)

    def _scope_period(self, buffer: str) -> float:
        """Seconds between frames: the fastest update_interval of the buffer's oscilloscope workers
        (none: ON_DEMAND_PERIOD), never below SCOPE_PERIOD."""
        graph = self.backend.setup_graph() or {"workers": {}}
        intervals = []
        for w in graph["workers"].values():
            if w["function"] in SCOPE_FUNCTIONS and buffer in w["observes"]:
                value = (w.get("config") or {}).get("update_interval", 1.0)
                intervals.append(float(value) if isinstance(value, (int, float)) else 1.0)
        return max(SCOPE_PERIOD, min(intervals) if intervals else ON_DEMAND_PERIOD)

    async def _histogram_loop(self) -> None:
        """Histogram files, read when pages show them; sent when they changed or to a page that lacks them."""
        last = ""
        # pages that hold the last frame; weak, so a closed page leaves (an id() could be reused)
        have: weakref.WeakSet[Page] = weakref.WeakSet()
        while True:
            await asyncio.sleep(HISTOGRAM_PERIOD)
            if not self.hub.wants_histograms():
                last, have = "", weakref.WeakSet()
                continue
            panels = await asyncio.to_thread(_panels.read_histogram_panels, self.histogram_dirs())
            frame = dumps({"type": "histograms", "panels": panels})
            if frame != last:
                last, have = frame, weakref.WeakSet()
            for page in list(self.hub.pages):
                if page.view.histograms and page not in have:
                    page.offer("histograms", frame)
                    have.add(page)

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_PERIOD)
            key = self.backend.run_key()
            if key != self._logs_key:
                self._logs_key = key
                self._logs.reset()
            files = self.backend.log_files()
            if not files:
                continue
            try:
                lines = await asyncio.to_thread(self._logs.read_new, files)
            except OSError:
                continue
            if lines:
                for page in list(self.hub.pages):
                    if page.view.logs:
                        page.offer_lines(lines)


def dumps(obj: Any) -> str:
    """Compact JSON; numpy values and paths as the control protocol encodes them."""
    from mimocorb2.control.protocol import _default

    return json.dumps(obj, separators=(",", ":"), default=_default)
