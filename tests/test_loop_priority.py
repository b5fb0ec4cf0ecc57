"""The daemon's event loop thread: realtime priority where allowed, and a latency meter that tells
a blocked loop from a busy machine."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mimocorb2.supervisor.loopmeter import LoopMeter
from mimocorb2.supervisor.priority import LoopPriority, parse_priority
from mimocorb2.testing import DaemonProcess, parent_of

FUNCS = """\
from mimocorb2.testing.workers import counting_source as source, draining_sink as sink
"""

SETUP = """\
Buffers:
  raw: {slot_count: 16, data_length: 4, data_dtype: {x: float64}}
Workers:
  src: {file: funcs.py, function: source, sinks: [raw], config: {rate: 200}}
  snk: {file: funcs.py, function: sink, sources: [raw], number_of_processes: 2}
"""


def realtime_allowed() -> bool:
    """What the kernel allows this user: root, or a realtime priority limit of at least 1."""
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] >= 1


def policy(tid: int) -> int:
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK


def threads_and_children(pid: int) -> tuple[list[int], list[int]]:
    """The other threads of ``pid``, and every process below it."""
    threads = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    children: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for tid in os.listdir(f"/proc/{parent}/task"):
            try:
                kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                children.append(kid)
                todo.append(kid)
    return threads, children


def test_loop_thread_is_realtime_and_everything_it_starts_is_not(daemon, tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCS)
    (tmp_path / "setup.yaml").write_text(SETUP)
    info = daemon.status()["daemon"]
    if not realtime_allowed():  # a test run by a user without LimitRTPRIO: the reason is shown
        assert info["loop_priority"] == "normal" and "LimitRTPRIO=1" in info["loop_priority_reason"]
        assert policy(daemon.pid) == os.SCHED_OTHER
        return
    assert info["loop_priority"] == "realtime", info
    assert os.sched_getscheduler(daemon.pid) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
    assert os.sched_getparam(daemon.pid).sched_priority == 1
    daemon.call("start", {"setup": str(tmp_path / "setup.yaml")})
    status = daemon.wait_for(lambda s: s["buffers"]["raw"]["event_count"] > 20, 60, "events")
    workers = [p["pid"] for w in status["workers"].values() for p in w["processes"]]
    threads, children = threads_and_children(daemon.pid)
    assert len(workers) == 3 and set(workers) <= set(children), (workers, children)
    assert threads, "the daemon has helper threads (status, buffers)"
    # the forkserver (the workers' parent) shares the loop's priority: starting a worker waits on it
    (forkserver,) = {parent_of(pid) for pid in workers}
    assert forkserver in children and forkserver != daemon.pid
    assert os.sched_getscheduler(forkserver) == os.SCHED_RR | os.SCHED_RESET_ON_FORK
    for tid in threads + [c for c in children if c != forkserver]:  # the data path competes as before
        assert policy(tid) == os.SCHED_OTHER, f"{tid} is not at normal priority"
        assert os.sched_getscheduler(tid) & os.SCHED_RESET_ON_FORK == 0
    daemon.call("stop", {})
    daemon.wait_for(lambda s: s["state"] == "finished", 60, "the run to finish")


@pytest.mark.parametrize("how", ["flag", "file"])
def test_normal_priority_on_request(tmp_path, how):
    args = ["--loop-priority", "normal"]
    if how == "file":
        (tmp_path / "mimocorb2d.yaml").write_text("loop_priority: normal\nweb: {enabled: false}\n")
        args = ["--config", str(tmp_path / "mimocorb2d.yaml")]
    with DaemonProcess(tmp_path / "control.sock", extra_args=[*args, "--no-web"]) as daemon:
        info = daemon.status()["daemon"]
        assert info["loop_priority"] == "normal" and "configured" in info["loop_priority_reason"]
        assert os.sched_getscheduler(daemon.pid) == os.SCHED_OTHER
        assert daemon.stop() == 0


def test_bad_loop_priority_is_refused_naming_the_key(tmp_path):
    config = tmp_path / "mimocorb2d.yaml"
    config.write_text("loop_priority: fast\n")
    for args, where in ((["--config", str(config)], f"{config}: loop_priority"),
                        (["--loop-priority", "fast"], "--loop-priority")):
        done = subprocess.run([sys.executable, "-m", "mimocorb2.supervisor.cli", "--socket",
                               str(tmp_path / "c.sock"), "--no-web", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done
        assert where in done.stderr and "fast" in done.stderr
    with pytest.raises(ValueError, match="x: expected realtime or normal"):
        parse_priority("rt", "x")
    assert parse_priority(" Realtime ", "x") is LoopPriority.REALTIME


def test_without_permission_the_loop_stays_normal_and_says_why():
    """A process that may not use realtime priority (no root, RLIMIT_RTPRIO 0) keeps running normally."""
    child = textwrap.dedent("""\
        import os, resource
        from mimocorb2.supervisor.priority import LoopPriority, apply_loop_priority
        resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
        if os.geteuid() == 0:  # nobody (imports done: the interpreter may live where nobody cannot read)
            os.setgid(65534)
            os.setuid(65534)
        result = apply_loop_priority(LoopPriority.REALTIME)
        print(result.priority.value, os.sched_getscheduler(0), result.reason, sep="|")
        """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    priority, scheduler, reason = done.stdout.strip().split("|")
    assert (priority, int(scheduler)) == ("normal", os.SCHED_OTHER)
    assert "LimitRTPRIO=1" in reason and "root" in reason


def test_meter_keeps_blocked_part_within_the_lag():
    meter = LoopMeter()
    meter.record(0.030, 0.028, now=100.0)  # a busy machine: the loop waited for a CPU
    assert meter.lag_last == 0.030 and abs(meter.blocked_last - 0.002) < 1e-9
    meter.record(0.050, 0.200, now=101.0)  # more waiting than lag (other wake-ups in the interval)
    assert meter.blocked_last == 0.0
    meter.record(0.400, 0.0, now=102.0)  # the loop's own code did not yield
    report = meter.report()
    assert report["loop_lag_recent_max"] == 0.4 and report["loop_blocked_recent_max"] == 0.4
    meter.record(0.001, 0.0, now=170.0)  # a minute later: the recent maxima have moved on
    report = meter.report()
    assert report["loop_lag_recent_max"] == 0.001 and report["loop_lag_max"] == 0.4


def test_meter_sees_code_that_blocks_the_loop():
    async def main() -> LoopMeter:
        meter = LoopMeter()
        task = asyncio.create_task(meter.run())
        await asyncio.sleep(0)  # the meter is asleep now
        time.sleep(0.5)  # a handler that does not yield
        deadline = time.monotonic() + 10
        while meter.lag_max == 0.0 and time.monotonic() < deadline:  # until the meter has woken
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return meter

    meter = asyncio.run(main())
    assert meter.lag_max >= 0.35
    # the thread slept, it did not wait for a CPU: nearly all of it is the loop's own doing
    assert meter.report()["loop_blocked_recent_max"] >= 0.25
