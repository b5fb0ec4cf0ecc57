"""Alarms: the conditions an operator must notice, evaluated from the status dict.

One evaluator for every face of the daemon: ``mimoctl status``, ``status --json``
and the web page all show the list that :meth:`AlarmMonitor.evaluate` returns
(the handlers put it in ``status["alarms"]``). The browser never decides what an
alarm is.

Conditions (thresholds are the fields of :class:`AlarmThresholds`):

- ``run_failed``            the run ended in state ``failed`` (error)
- ``worker_failed:W``       worker W failed for good (error)
- ``worker_restarts:W``     worker W was restarted; error when it keeps restarting
                            (``restart_burst`` restarts within ``restart_window`` seconds)
- ``no_events:B``           root buffer B had rate 0 for ``zero_rate_after`` s while running
- ``buffer_full:B``         buffer B was at least ``full_fraction`` full for ``full_after`` s
- ``events_lost``           the run lost events (crashes, leftovers at the end)
- ``disk_nearly_full``      the run directory's file system has less than
                            ``disk_free_fraction`` or ``disk_free_bytes`` free

An alarm is acknowledged by id; it stays acknowledged while its *value* is the
same (for example the restart count), and comes back when the value changes.
Conditions that must last ("for a while") are timed between evaluations, so
they are only as precise as the status is polled (the web page polls every second).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: severities, in increasing order
SEVERITIES = ("warning", "error")


@dataclass(frozen=True)
class AlarmThresholds:
    """When a condition becomes an alarm."""

    zero_rate_after: float = 30.0
    full_after: float = 30.0
    full_fraction: float = 0.95
    restart_burst: int = 3
    restart_window: float = 600.0
    disk_free_fraction: float = 0.05
    disk_free_bytes: int = 1 << 30
    disk_check_interval: float = 10.0


@dataclass
class Alarm:
    """One raised alarm. ``value`` fingerprints the episode: acknowledging holds while it is unchanged."""

    id: str
    severity: str
    message: str
    since: float
    value: Any = None

    def as_dict(self, acknowledged: bool) -> dict[str, Any]:
        """The alarm as one entry of ``status["alarms"]`` (``since`` in epoch seconds, to the ms).

        ``acknowledged`` is decided by the caller: the monitor compares the value stored at
        acknowledgement with :attr:`value`.
        """
        return {"id": self.id, "severity": self.severity, "message": self.message,
                "since": round(self.since, 3), "acknowledged": acknowledged}


@dataclass
class _RunMemory:
    """What the monitor remembers about one run (reset when the run directory changes)."""

    directory: str | None
    since: dict[str, float] = field(default_factory=dict)  # condition id -> first seen true
    restarts: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # worker -> (t, count)
    acks: dict[str, Any] = field(default_factory=dict)  # alarm id -> value when acknowledged


class AlarmMonitor:
    """Evaluates alarms from successive status dicts and remembers acknowledgements."""

    def __init__(self, thresholds: AlarmThresholds | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.thresholds = thresholds or AlarmThresholds()
        self._clock = clock
        self._memory = _RunMemory(None)
        self._current: list[Alarm] = []
        self._disk: tuple[float, str, bool, str] | None = None  # (checked at, dir, nearly full, text)

    # ------------------------------------------------------------------ public
    def evaluate(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        """The alarms of this status, most severe first, as JSON-able dicts."""
        now = self._clock()
        run = status.get("run") or None
        directory = run.get("directory") if run else None
        if directory != self._memory.directory:
            self._memory = _RunMemory(directory)
        alarms: list[Alarm] = []
        if run:
            alarms += self._run_alarms(status, run, now)
            alarms += self._worker_alarms(status.get("workers") or {}, now)
            alarms += self._buffer_alarms(status, run, now)
            alarms += self._disk_alarms(directory, status.get("state"), now)
        self._current = alarms
        alarms.sort(key=lambda a: (-SEVERITIES.index(a.severity), a.since))
        return [a.as_dict(self._memory.acks.get(a.id, _UNSET) == a.value) for a in alarms]

    def acknowledge(self, alarm_id: str | None) -> list[str]:
        """Acknowledge one alarm (or all when ``alarm_id`` is None); return the ids acknowledged."""
        done = []
        for alarm in self._current:
            if alarm_id is None or alarm.id == alarm_id:
                self._memory.acks[alarm.id] = alarm.value
                done.append(alarm.id)
        return done

    # ------------------------------------------------------------------ conditions
    def _lasting(self, key: str, condition: bool, now: float, after: float) -> float | None:
        """When ``condition`` has held since at least ``after`` seconds, the time it began."""
        if not condition:
            self._memory.since.pop(key, None)
            return None
        began = self._memory.since.setdefault(key, now)
        return began if now - began >= after else None

    def _run_alarms(self, status: dict[str, Any], run: dict[str, Any], now: float) -> list[Alarm]:
        out = []
        if status.get("state") == "failed":
            began = self._lasting("run_failed", True, now, 0.0) or now
            out.append(Alarm("run_failed", "error", f"run failed: {run.get('error') or 'see the daemon log'}",
                             began, run.get("error")))
        lost = int(run.get("lost") or 0)
        if lost:
            began = self._lasting("events_lost", True, now, 0.0) or now
            out.append(Alarm("events_lost", "error", f"{lost} events lost (crashed processes or events "
                             "left unread at the end)", began, lost))
        return out

    def _worker_alarms(self, workers: dict[str, Any], now: float) -> list[Alarm]:
        t = self.thresholds
        out = []
        for name, w in workers.items():
            if w.get("state") == "failed":
                began = self._lasting(f"worker_failed:{name}", True, now, 0.0) or now
                out.append(Alarm(f"worker_failed:{name}", "error",
                                 f"worker {name} failed ({w.get('last_exit') or 'no exit recorded'})", began, 1))
            restarts = int(w.get("restarts") or 0)
            if not restarts:
                continue
            history = self._memory.restarts.setdefault(name, [])
            if not history or history[-1][1] != restarts:
                history.append((now, restarts))
            # keep one entry older than the window: its count is the baseline
            while len(history) > 1 and now - history[1][0] > t.restart_window:
                history.pop(0)
            recent = restarts - (history[0][1] if now - history[0][0] > t.restart_window else 0)
            bursting = recent >= t.restart_burst
            began = history[-1][0]
            text = (f"worker {name} keeps restarting: {recent} restarts in the last "
                    f"{t.restart_window / 60:.0f} min" if bursting else
                    f"worker {name} was restarted {restarts} time{'s' if restarts > 1 else ''}")
            if w.get("last_exit"):
                text += f" (last: {w['last_exit']})"
            out.append(Alarm(f"worker_restarts:{name}", "error" if bursting else "warning", text,
                             began, restarts))
        return out

    def _buffer_alarms(self, status: dict[str, Any], run: dict[str, Any], now: float) -> list[Alarm]:
        t = self.thresholds
        state = status.get("state")
        out = []
        roots = set(run.get("roots") or [])
        for name, b in (status.get("buffers") or {}).items():
            ended = bool(b.get("ended"))
            if name in roots:
                idle = state == "running" and not ended and not b.get("paused") and not float(b.get("rate") or 0)
                began = self._lasting(f"no_events:{name}", idle, now, t.zero_rate_after)
                if began is not None:
                    out.append(Alarm(f"no_events:{name}", "warning",
                                     f"no events in root buffer {name} for {now - began:.0f} s", began, began))
            full = (state in ("running", "paused") and not ended
                    and float(b.get("filled_slots") or 0) >= t.full_fraction)
            began = self._lasting(f"buffer_full:{name}", full, now, t.full_after)
            if began is not None:
                out.append(Alarm(f"buffer_full:{name}", "warning",
                                 f"buffer {name} full for {now - began:.0f} s (back-pressure: a reader is "
                                 "too slow)", began, began))
        return out

    def _disk_alarms(self, directory: str | None, state: Any, now: float) -> list[Alarm]:
        if not directory:
            return []
        t = self.thresholds
        cached = self._disk
        if cached is None or cached[1] != directory or now - cached[0] >= t.disk_check_interval:
            try:
                usage = shutil.disk_usage(directory)  # statvfs: no disk I/O
            except OSError:
                self._disk = (now, directory, False, "")
            else:
                free_fraction = usage.free / usage.total if usage.total else 1.0
                low = free_fraction < t.disk_free_fraction or usage.free < t.disk_free_bytes
                text = (f"disk of {directory} nearly full: {usage.free / 2**30:.1f} GiB free "
                        f"({100 * free_fraction:.1f} %)")
                self._disk = (now, directory, low, text)
        _, _, low, text = self._disk  # type: ignore[misc]
        began = self._lasting("disk_nearly_full", low, now, 0.0)
        if began is None:
            return []
        return [Alarm("disk_nearly_full", "error" if state in ("running", "paused") else "warning",
                      text, began, began)]


class _Unset:
    def __eq__(self, other: object) -> bool:
        return False


_UNSET = _Unset()
