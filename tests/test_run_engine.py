"""The run engine on a real daemon and in the foreground: exact limits, stop that spares the
innocent, setup failures that are not restarted, the disk guard."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

FUNCS = '''
import logging, os, sys, time
from mimocorb2.worker_templates import Exporter
from mimocorb2.testing.workers import counting_source as source, recording_sink as sink

def measure(io):
    """Copies events; process 0 hangs for good on its 20th event (holding it, no beats)."""
    reader, writer = io.read[0], io.write[0]
    n = 0
    while True:
        with reader as (meta, data):
            if meta is None:
                return
            n += 1
            if io.process_index == 0 and n == 20:
                while True:
                    time.sleep(0.05)
            with writer as (wmeta, wdata):
                wdata[:] = data

def count(io):
    n = 0
    for data, meta in Exporter(io):
        n += 1
    (io.run_dir / "count.txt").write_text(str(n))  # written only at a normal end of stream

def stubborn(io):
    while True:  # never reads, never ends by itself
        time.sleep(0.05)

def cannot_load(io):
    logging.getLogger("user").error("cannot load function 'analyse' from analysis.py: no such file")
    sys.stderr.flush()
    os._exit(78)
'''


def write_setup(tmp_path: Path, workers: str, top: str = "", rate: int = 2000) -> Path:
    (tmp_path / "funcs.py").write_text(FUNCS)
    p = tmp_path / "setup.yaml"
    p.write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 32, data_length: 4, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw], config: {{rate: {rate}}}}}
        """) + textwrap.indent(textwrap.dedent(workers), "  ") + "stats_interval: 0.2\n" + textwrap.dedent(top))
    return p


def sinked(run_dir: Path) -> list[int]:
    return [int(x) for f in sorted(run_dir.glob("sink-*.txt")) for x in f.read_text().split()]


def ended(s):
    return s["state"] in ("finished", "failed")


def test_max_events_is_exact_under_the_daemon(daemon, tmp_path):
    setup = write_setup(tmp_path, "snk: {file: funcs.py, function: sink, sources: [raw], number_of_processes: 2}\n",
                        rate=0)
    run_dir = Path(daemon.call("start", {"setup": str(setup), "max_events": 1000})["directory"])
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "finished" and st["run"]["stop_reason"] == "max_events=1000 reached"
    assert st["buffers"]["raw"]["event_count"] == 1000
    assert sorted(sinked(run_dir)) == list(range(1000))
    assert st["run"]["lost"] == 0


def test_max_events_with_two_roots_gives_each_root_exactly_n(daemon, tmp_path):
    setup = write_setup(tmp_path, """\
        snk: {file: funcs.py, function: sink, sources: [raw]}
        src2: {file: funcs.py, function: source, sinks: [raw2], config: {rate: 0}}
        snk2: {file: funcs.py, function: sink, sources: [raw2]}
        """, rate=0)
    setup.write_text(setup.read_text().replace(
        "Workers:", "  raw2: {slot_count: 32, data_length: 4, data_dtype: {x: float64}}\nWorkers:"))
    daemon.call("start", {"setup": str(setup), "max_events": 600})
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "finished" and st["run"]["stop_reason"] == "max_events=600 reached"
    assert st["run"]["roots"] == ["raw", "raw2"]
    assert st["buffers"]["raw"]["event_count"] == st["buffers"]["raw2"]["event_count"] == 600


def test_foreground_run_is_the_same_engine(tmp_path):
    setup = write_setup(tmp_path, "snk: {file: funcs.py, function: sink, sources: [raw], number_of_processes: 2}\n",
                        rate=0)
    done = subprocess.run([sys.executable, "-m", "mimocorb2", "run", str(setup), "--max-events", "700", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stopped: max_events=700 reached" in done.stdout
    run_dir = Path(done.stdout.split("run directory: ")[1].split()[0])
    assert sorted(sinked(run_dir)) == list(range(700))
    # the same records as under the daemon
    records = [json.loads(line) for line in (run_dir / "daemon.log").read_text().splitlines()]
    end = [r for r in records if r["event"] == "run ended"]
    assert end and end[0]["events"] == {"raw": 700} and end[0]["lost"] == 0
    rows = list(csv.DictReader((run_dir / "stats.csv").open()))
    assert rows and rows[-1]["buffer"] == "raw" and int(rows[-1]["event_count"]) == 700


def test_stop_with_a_hung_middle_process_spares_the_innocent(daemon, tmp_path):
    setup = write_setup(tmp_path, """\
        measure: {file: funcs.py, function: measure, sources: [raw], sinks: [results], number_of_processes: 3}
        count: {file: funcs.py, function: count, sources: [results]}
        """, "drain_timeout: 2\n", rate=1000)
    setup.write_text(setup.read_text().replace(
        "Workers:", "  results: {slot_count: 32, data_length: 4, data_dtype: {x: float64}}\nWorkers:"))
    run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])

    def hung(s):
        return s["workers"]["measure"]["processes"][0]["stuck"]

    st = daemon.wait_for(hung, 90, "status flags the hung process")
    proc = st["workers"]["measure"]["processes"][0]
    assert proc["stuck"].startswith(f"stuck on event {proc['holding_event']} for ")
    assert st["workers"]["measure"]["processes"][1]["stuck"] is None

    summary = daemon.call("stop", {})
    st = daemon.status()
    assert summary["state"] == "finished", summary
    workers = st["workers"]
    # only the hung process was killed; everyone downstream ended normally and wrote its results
    assert "drain timeout" in workers["measure"]["last_exit"] or any(
        p["exitcode"] == -9 for p in workers["measure"]["processes"])
    assert [p["exitcode"] for p in workers["measure"]["processes"]].count(-9) == 1
    assert [p["exitcode"] for p in workers["count"]["processes"]] == [0]
    counted = int((run_dir / "count.txt").read_text())
    raw = st["buffers"]["raw"]["event_count"]
    # every event is either counted downstream or reported lost in a named buffer
    assert counted + summary["lost"] == raw, (counted, summary)
    assert sum(summary["lost_by_buffer"].values()) == summary["lost"]


def test_a_worker_that_cannot_load_its_function_fails_its_start_without_restarts(daemon, tmp_path):
    setup = write_setup(tmp_path, """\
        snk: {file: funcs.py, function: sink, sources: [raw]}
        bad: {file: funcs.py, function: cannot_load, sources: [raw], max_restarts: 5}
        """)
    daemon.call("start", {"setup": str(setup)})
    st = daemon.wait_for(ended, 90, "run ended")
    bad = st["workers"]["bad"]
    assert st["state"] == "failed" and bad["state"] == "failed"
    assert bad["restarts"] == 0
    assert "cannot load function 'analyse' from analysis.py" in bad["error"]
    assert "cannot load function 'analyse'" in st["run"]["error"]
    # no live process, no CPU
    assert all(p["cpu"] == 0.0 and not p["alive"] for w in st["workers"].values() for p in w["processes"])


def test_disk_guard_stops_the_run_with_readable_files(daemon, tmp_path):
    setup = write_setup(tmp_path, "snk: {file: funcs.py, function: sink, sources: [raw]}\n",
                        'min_free_disk: "999 TB"\n')
    run_dir = Path(daemon.call("start", {"setup": str(setup)})["directory"])
    st = daemon.wait_for(ended, 90, "run ended")
    assert st["state"] == "finished", st["run"]
    assert st["run"]["stop_reason"].startswith("disk nearly full")
    disk = st["run"]["disk"]
    assert disk["path"] == str(run_dir) and 0 < disk["free_bytes"] <= disk["total_bytes"]
    assert disk["min_free_bytes"] == 999 * 10**12
    assert len(sinked(run_dir)) == st["buffers"]["raw"]["event_count"]  # closed and complete
    rows = list(csv.DictReader((run_dir / "stats.csv").open()))
    assert rows and all(r["buffer"] == "raw" for r in rows)


def test_foreground_first_ctrl_c_drains_second_aborts(tmp_path):
    setup = write_setup(tmp_path, """\
        snk: {file: funcs.py, function: sink, sources: [raw]}
        slow: {file: funcs.py, function: stubborn, sources: [raw]}
        """, "drain_timeout: 120\n")
    proc = subprocess.Popen([sys.executable, "-m", "mimocorb2", "run", str(setup)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = 0
        for line in proc.stdout:
            started += line.startswith("started ")
            if started == 3:
                break
        proc.send_signal(signal.SIGINT)
        for line in proc.stdout:
            if line.startswith("stopping (interrupted)"):
                break
        proc.send_signal(signal.SIGINT)  # 'slow' never ends: without the abort this waits 120 s
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "run aborted" in err
    assert "stopped: interrupted" in out


def test_a_status_that_says_finished_shows_the_final_counts(tmp_path):
    """Between the run's last phase change and the close of its log, a status read used to show the
    last tick's counters (4230 of an exact 5000 seen in CI). The status is watched at every loop turn."""
    import asyncio

    from mimocorb2.setup import load_setup
    from mimocorb2.supervisor.run import Run
    from mimocorb2.supervisor.status import build_status, summary_line

    setup = load_setup(write_setup(tmp_path, "snk: {file: funcs.py, function: sink, sources: [raw]}\n", rate=0))

    async def run_and_watch() -> list[tuple[str, int, str]]:
        run = Run(setup, max_events=5000, directory=tmp_path / "run", restarts=False)
        seen: list[tuple[str, int, str]] = []

        async def watch() -> None:
            while not run.done:
                if run.phase.terminal:
                    status = build_status(run.state, {}, run)
                    seen.append((status["state"], status["buffers"]["raw"]["event_count"], summary_line(run)))
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        await run.start()
        await run.wait()
        await watcher
        return seen

    seen = asyncio.run(run_and_watch())
    assert seen, "the watcher never saw the terminal phase before the run was done"
    assert {(state, count) for state, count, _ in seen} == {("finished", 5000)}
    assert all(line.startswith("finished: ") for _, _, line in seen)
