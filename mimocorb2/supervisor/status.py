"""The status reply, built in one place from the daemon, its run and the run's latest samples.

:func:`build_status` is what ``mimoctl status`` (and the web page) shows; its
keys are only ever added to (``docs/daemon.md`` lists them). Nothing here calls
into a buffer: buffer figures come from the run's sampler.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from mimocorb2.supervisor import policy
from mimocorb2.supervisor.devices import DeviceFile, device_summary, stale_reason
from mimocorb2.supervisor.processes import WorkerState

if TYPE_CHECKING:
    from mimocorb2.supervisor.processes import ProcessRecord, WorkerRecord
    from mimocorb2.supervisor.run import Run

__all__ = ["build_status", "run_status", "summary_line"]

_BUFFER_DEFAULTS = (("event_count", 0), ("filled_slots", 0.0), ("empty_slots", 1.0),
                    ("flush_event_received", False), ("rate", 0.0), ("average_deadtime", 0.0),
                    ("paused_count", 0), ("paused", False), ("lost", 0), ("redelivered", 0), ("quarantined", 0),
                    ("ended", False), ("pending", 0))


def build_status(state: str, daemon_info: dict[str, Any], run: "Run | None") -> dict[str, Any]:
    """The whole status reply: ``state``, ``daemon``, ``run``, ``buffers``, ``workers``."""
    status: dict[str, Any] = {"state": state, "daemon": daemon_info, "run": None, "buffers": {}, "workers": {}}
    if run is not None:
        status.update(run_status(run))
    return status


def run_status(run: "Run") -> dict[str, Any]:
    """``state``, ``run``, ``buffers`` and ``workers`` of one run."""
    return {"state": run.state, "run": _run_part(run), "buffers": _buffers_part(run),
            "workers": _workers_part(run)}


def _run_part(run: "Run") -> dict[str, Any]:
    now = time.time()
    disk = run.sampler.disk.as_dict() if run.sampler and run.sampler.disk else None
    floor = None
    if disk is not None:
        floor = run.setup.min_free_disk.bytes_for(disk["total_bytes"])
        disk["min_free_bytes"] = floor
    return {
        "directory": str(run.directory) if run.directory else None,
        "setup": str(run.setup.path),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "uptime": round((run.ended_at or now) - run.started_at, 3),
        "stop_reason": run.stop_reason,
        "error": run.error,
        "limits": {"max_events": run.max_events, "max_seconds": run.max_seconds},
        "roots": list(run.roots),
        "lost": run.total_lost(),
        "lost_in_buffers": run.lost_at_end,
        "lost_in_crashes": run.lost_in_crashes,
        "lost_by_buffer": dict(run.lost_by_buffer),
        "redelivered": run.redelivered,
        "quarantined": run.quarantined,
        "disk": disk,
    }


def _buffers_part(run: "Run") -> dict[str, Any]:
    stats = run.sampler.stats if run.sampler else {}
    counters = run.sampler.counters if run.sampler else {}
    buffers: dict[str, Any] = {}
    for name, spec in run.setup.buffers.items():
        entry = dict(stats.get(name) or {})
        fresh = counters.get(name)
        if not run.phase.terminal and fresh:  # terminal: the final sample is in stats
            ended = bool(fresh.get("ended", False))
            entry.update({
                "event_count": fresh.get("events", entry.get("event_count", 0)),
                "paused_count": fresh.get("paused_count", entry.get("paused_count", 0)),
                "paused": bool(fresh.get("paused", False)),
                "ended": ended,
                "flush_event_received": ended,
                "lost": fresh.get("lost", entry.get("lost", 0)),
                "redelivered": fresh.get("redelivered", entry.get("redelivered", 0)),
                "quarantined": fresh.get("quarantined", entry.get("quarantined", 0)),
                "pending": fresh.get("pending", entry.get("pending", 0)),
                "abandoned": fresh.get("abandoned", entry.get("abandoned", 0)),
                "rejected": fresh.get("rejected", entry.get("rejected", 0)),
                "filled_slots": (spec.slot_count - fresh.get("free", 0)) / spec.slot_count,
                "empty_slots": fresh.get("free", 0) / spec.slot_count,
            })
        for key, default in _BUFFER_DEFAULTS:
            entry.setdefault(key, default)
        entry["root"] = name in run.roots
        buffers[name] = entry
    return buffers


def _workers_part(run: "Run") -> dict[str, Any]:
    workers: dict[str, Any] = {}
    mono = time.monotonic()
    devices = run.sampler.devices if run.sampler else {}
    for name, w in run.workers.items():
        procs = []
        for rec in w.processes:
            entry = _process_part(run, w, rec, mono)
            entry["device"], entry["device_stale"] = _device_of(
                run, devices.get(f"{name}.{rec.index}"), [rec.started_wall] if rec.alive else [])
            procs.append(entry)
        own, own_stale = _device_of(run, devices.get(name), [r.started_wall for r in w.processes if r.alive])
        device, stale = _worker_device(own, own_stale, procs)
        state = w.state
        if state is WorkerState.RUNNING and any(p["loading"] for p in procs):
            state = WorkerState.STARTING  # a process has not reached its function yet
        workers[name] = {
            "state": state.value, "restarts": w.restarts, "configured": w.spec.number_of_processes,
            "alive": sum(1 for p in procs if p["alive"]), "restart_policy": w.spec.restart,
            "last_exit": w.last_exit, "error": w.error, "processes": procs,
            "device": device, "device_stale": stale, "device_summary": device_summary(device, stale),
        }
    return workers


def _process_part(run: "Run", w: "WorkerRecord", rec: "ProcessRecord", mono: float) -> dict[str, Any]:
    """One process's entry (without its device): heartbeat, held event, stage."""
    age, held, held_for, stuck, stage, loading = None, None, None, None, None, None
    if rec.alive and run.heartbeats is not None and not run.done:
        with contextlib.suppress(Exception):
            row = run.heartbeats.read(rec.row)
            age = round(row.age_seconds, 3)
            stage = row.stage.name.lower()
            if row.held_counter is not None:
                held, held_for = int(row.held_counter), round(row.held_seconds, 3)
                stuck = policy.stuck_message(held, row.held_seconds, run.stuck_after)
            if row.stage.before_function:
                what = policy.loading_what(row.stage, w.spec.file, w.spec.function)
                loading = f"{what} for {mono - rec.started:.0f} s"
    return {
        "index": rec.index, "pid": rec.pid, "alive": rec.alive, "exitcode": rec.exitcode,
        "heartbeat_age": age, "cpu": round(rec.cpu_percent, 1) if rec.alive else 0.0,
        "uptime": round(mono - rec.started, 3) if rec.alive else None,
        "restart_pending": rec.restart_handle is not None,
        "holding_event": held, "holding_seconds": held_for, "stuck": stuck,
        "stage": stage, "loading": loading,
    }


def _device_of(run: "Run", file: DeviceFile | None,
               live_starts: list[float]) -> tuple[dict[str, Any] | None, str | None]:
    """A status file's object and why it is stale (None: current, or the run's last word once it ended)."""
    if file is None:
        return None, None
    return file.content, (None if run.phase.terminal else stale_reason(file.written, live_starts))


def _worker_device(own: dict[str, Any] | None, own_stale: str | None,
                   procs: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The worker's ``<worker>.json``; else of the per-process files the first current one not running,
    the first current one, the first one (with why each is stale)."""
    if own is not None:
        return own, own_stale
    per_process = [(p["device"], p["device_stale"]) for p in procs if p["device"] is not None]
    for device, stale in per_process:
        if stale is None and device.get("state") not in ("running", "finished"):
            return device, stale
    for device, stale in per_process:
        if stale is None:
            return device, stale
    return per_process[0] if per_process else (None, None)


def summary_line(run: "Run | None") -> str:
    """One line for systemd's STATUS= and the terminal."""
    if run is None:
        return "idle"
    if run.phase.terminal:
        return f"{run.state}: {run.directory} lost={run.total_lost()}"
    parts = [run.state]
    stats = run.sampler.stats if run.sampler else {}
    for name in run.roots:
        s = stats.get(name) or {}
        parts.append(f"{name} {int(s.get('event_count', 0))} ev {float(s.get('rate', 0)):.0f}/s")
    return ", ".join(parts)
