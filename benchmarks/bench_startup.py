"""End to end: a small pipeline of nine processes, from the command to the last process's exit.

The pipeline of the original's examples: importer -> filter (2 processes) ->
processor (3 processes) -> exporter, plus an observer and an is-alive worker;
nine worker processes in all. Two cases: 200 000 small events, and 100 events
(almost only starting and ending the nine processes). Peers, interleaved round
by round:

* ``ours``        this repository, ``mimocorb2 run``: workers forked from a warm forkserver (the default)
* ``ours-daemon`` the same run started through a running ``mimocorb2d`` (its forkserver already warm);
                  wall = from the ``start`` request until the status says finished
* ``ours-spawn``  this repository with ``MIMOCORB2_START_METHOD=spawn`` (a fresh interpreter per worker)
* ``v004``        the published mimocorb2 0.0.4 (the original), in benchmarks/.venv-v004

``wall`` is the time of the whole command (interpreter, imports, run, exit) as
a user sees it; ``run`` excludes the interpreter start and the imports; ``cpu``
is the CPU time (user + system) of every process of the command, forkserver
and workers included (this benchmark makes itself their subreaper to count
them). On a shared machine ``cpu`` moves far less than the times do.

    python benchmarks/bench_startup.py [--rounds 3] [--events 200000]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_buffer import v004_python

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "_startup_run.py"

FUNCTIONS = '''
import time
import numpy as np
from mimocorb2.worker_templates import Importer, Filter, Processor, Exporter, Observer, IsAlive

def source(io):
    imp = Importer(io)
    n = int(io["n_events"])
    def gen():
        d = np.zeros(imp.data_example.shape, imp.data_example.dtype)
        for i in range(n):
            d["x"][0] = i
            yield d
        yield None
    imp(gen)

def keep(io):
    Filter(io)(lambda data: True)

def height(io):
    out = np.zeros(1, dtype=[("h", "f8")])
    def ufunc(data):
        out["h"][0] = data["x"][0]
        return [out]
    Processor(io)(ufunc)

def drain(io):
    for data, metadata in Exporter(io):
        if data is None:
            break

def look(io):
    for data, metadata in Observer(io)():
        if data is None:
            break
        time.sleep(0.1)

def alive(io):
    is_alive = IsAlive(io)
    while is_alive():
        time.sleep(0.1)
'''

SETUP = '''target_directory: target
Buffers:
  raw: {{slot_count: 128, data_length: 16, data_dtype: {{x: float64}}}}
  kept: {{slot_count: 128, data_length: 16, data_dtype: {{x: float64}}}}
  heights: {{slot_count: 128, data_length: 1, data_dtype: {{h: float64}}}}
Workers:
  source: {{file: funcs.py, function: source, number_of_processes: 1, sinks: [raw], config: {{n_events: {events}}}}}
  keep: {{file: funcs.py, function: keep, number_of_processes: 2, sources: [raw], sinks: [kept]}}
  height: {{file: funcs.py, function: height, number_of_processes: 3, sources: [kept], sinks: [heights]}}
  drain: {{file: funcs.py, function: drain, number_of_processes: 1, sources: [heights]}}
  look: {{file: funcs.py, function: look, number_of_processes: 1, observes: [raw]}}
  alive: {{file: funcs.py, function: alive, number_of_processes: 1, observes: [heights]}}
'''


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants (a forkserver outliving its starter) are reparented to us (Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(timeout: float = 30.0) -> None:
    """Wait for descendants reparented to us, so that their CPU time is counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(python: Path, impl: str, setup: Path) -> dict | None:
    env = dict(os.environ)
    if impl.startswith("ours"):
        env["PYTHONPATH"] = str(HERE.parent)
        env["MIMOCORB2_START_METHOD"] = "spawn" if impl == "ours-spawn" else "forkserver"
    driver = "v004" if impl == "v004" else "ours"
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run([str(python), str(DRIVER), driver, str(setup)], capture_output=True, text=True,
                          env=env, cwd=setup.parent, timeout=900)
    wall = time.perf_counter() - t0
    reap_orphans()
    cpu = children_cpu() - cpu0
    if done.returncode != 0:
        print(f"  {impl} failed: {done.stderr.strip()[-400:]}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": wall, "run": result["seconds"], "events": result["events"], "cpu": cpu}


def measure_daemon(daemon, setup: Path) -> dict | None:
    t0 = time.perf_counter()
    try:
        daemon.call("start", {"setup": str(setup)})
        status = daemon.wait_for(lambda s: s["state"] in ("finished", "failed"), 900, "run ended")
    except Exception as exc:  # noqa: BLE001 - report and go on with the other peers
        print(f"  ours-daemon failed: {exc}")
        return None
    wall = time.perf_counter() - t0
    if status["state"] != "finished":
        print(f"  ours-daemon run failed: {status['run']}")
        return None
    return {"wall": wall, "run": wall, "events": status["buffers"]["heights"]["event_count"], "cpu": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    counted = become_subreaper()
    peers = {"ours": Path(sys.executable), "ours-daemon": Path(sys.executable), "ours-spawn": Path(sys.executable)}
    old = v004_python()
    if old is not None:
        peers["v004"] = old
    cases = {f"{args.events} events": args.events, "100 events": 100}
    results: dict[tuple[str, str], list[dict]] = {}
    sys.path.insert(0, str(HERE.parent))
    from mimocorb2.testing import DaemonProcess

    with tempfile.TemporaryDirectory(prefix="mimocorb2-bench-startup-") as tmp, \
            DaemonProcess(Path(tmp) / "sock" / "control.sock") as daemon:
        directories = {}
        for case, events in cases.items():
            directory = Path(tmp) / str(events)
            directory.mkdir()
            (directory / "funcs.py").write_text(FUNCTIONS)
            (directory / "setup.yaml").write_text(SETUP.format(events=events))
            directories[case] = directory
        for round_index in range(args.rounds):
            for case in cases:
                for impl, python in peers.items():
                    setup = directories[case] / "setup.yaml"
                    got = measure_daemon(daemon, setup) if impl == "ours-daemon" else measure(python, impl, setup)
                    if got is not None:
                        results.setdefault((case, impl), []).append(got)
                        cpu = f"{got['cpu']:6.2f} s" if got["cpu"] is not None else "     -  "
                        print(f"round {round_index + 1} {case:>15} {impl:<12} wall {got['wall']:6.2f} s  "
                              f"run {got['run']:6.2f} s  cpu {cpu}  events {got['events']}", flush=True)
    print(f"\nmedians of {args.rounds} rounds (load average {os.getloadavg()[0]:.1f}):")
    if not counted:
        print("(cannot become a subreaper: cpu misses processes that outlive their starter)")
    print(f"{'case':>15} {'peer':<12} {'wall s':>8} {'run s':>8} {'cpu s':>8} {'events':>8} "
          f"{'v004/this wall':>15} {'v004/this cpu':>14}")
    for case in cases:
        base = results.get((case, "v004"))
        for impl in peers:
            runs = results.get((case, impl))
            if not runs:
                continue
            wall = statistics.median(r["wall"] for r in runs)
            run = statistics.median(r["run"] for r in runs)
            cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
            cpu = statistics.median(cpus) if cpus else None
            events = min(r["events"] for r in runs)
            ratio = f"{statistics.median(r['wall'] for r in base) / wall:.1f}x" if base else "-"
            base_cpu = statistics.median(r["cpu"] for r in base) if base else None
            cpu_ratio = f"{base_cpu / cpu:.1f}x" if base_cpu and cpu else "-"
            cpu_text = f"{cpu:8.2f}" if cpu is not None else f"{'-':>8}"
            print(f"{case:>15} {impl:<12} {wall:8.2f} {run:8.2f} {cpu_text} {events:>8} {ratio:>15} {cpu_ratio:>14}")


if __name__ == "__main__":
    main()
