"""Buffer throughput: mimocorb2 against its peers, measured side by side.

One writer process to one reader process through a 64-slot buffer, for
(a) events of 1 x float64 and (b) events of 4250 x 4 float32 (a 4-channel
oscilloscope waveform). Peers, interleaved round by round to tame the noise
of a shared machine:

* ``ours``    this repository's mimocorb2
* ``v004``    the published mimocorb2 0.0.4 in its own virtualenv (benchmarks/.venv-v004)
* ``queue``   a reference design passing slot tokens through multiprocessing.Queue
* ``ceiling`` the writer's own work (field-by-field fill of 64 local arrays), no buffer

    python benchmarks/bench_buffer.py [--rounds 3] [--events-small 40000] [--events-scope 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
V004_VENV = HERE / ".venv-v004"
PINGPONG = HERE / "_pingpong.py"


def v004_python() -> Path | None:
    """Python of a virtualenv with mimocorb2 0.0.4, created on first use; None if impossible."""
    python = V004_VENV / "bin" / "python"
    marker = V004_VENV / ".ready"
    if marker.exists():
        return python
    print("setting up mimocorb2 0.0.4 in", V004_VENV, flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(V004_VENV)],
        [str(python), "-m", "pip", "install", "-q", "numpy<2.5", "scipy", "matplotlib", "pyyaml", "psutil", "pandas", "graphviz"],
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-requires-python", "mimocorb2==0.0.4"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"cannot install mimocorb2 0.0.4 ({' '.join(step[:4])}...): {done.stderr.strip()[-300:]}")
            return None
    marker.touch()
    return python


def measure(python: Path, impl: str, case: str, events: int) -> dict | None:
    """Run one measurement in a fresh interpreter; None if it failed."""
    env = dict(os.environ)
    if impl != "v004":
        env["PYTHONPATH"] = str(HERE.parent)
    done = subprocess.run(
        [str(python), str(PINGPONG), impl, case, str(events)], capture_output=True, text=True, env=env, cwd=HERE, timeout=600
    )
    if done.returncode != 0:
        print(f"  {impl}/{case} failed: {done.stderr.strip()[-400:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events-small", type=int, default=40000)
    parser.add_argument("--events-scope", type=int, default=10000)
    args = parser.parse_args()
    peers = {"ours": Path(sys.executable), "queue": Path(sys.executable), "ceiling": Path(sys.executable)}
    old = v004_python()
    if old is not None:
        peers["v004"] = old
    cases = {"small": args.events_small, "scope": args.events_scope}
    results: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for case, events in cases.items():
            for impl, python in peers.items():  # interleaved: every peer once per round
                result = measure(python, impl, case, events)
                if result:
                    results.setdefault((impl, case), []).append(result)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    report(results, peers, cases)


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(results: dict, peers: dict, cases: dict) -> None:
    labels = {"small": "(a) 1 x float64", "scope": "(b) 4250 x 4 float32"}
    for case in cases:
        print(f"\n{labels[case]}  (median of rounds)")
        print(f"  {'peer':8} {'events/s':>12} {'MB/s':>10} {'dead time':>10} {'lat med us':>11} {'lat p99 us':>11}")
        for impl in peers:
            runs = results.get((impl, case))
            if not runs:
                print(f"  {impl:8} (no result)")
                continue
            print(
                f"  {impl:8} {_median(runs, 'events_per_s'):12.0f} {_median(runs, 'mb_per_s'):10.1f} "
                f"{_median(runs, 'dead_fraction'):10.1%} {_median(runs, 'latency_median_us'):11.1f} {_median(runs, 'latency_p99_us'):11.1f}"
            )
        ours = results.get(("ours", case))
        if not ours:
            continue
        rate = _median(ours, "events_per_s")
        for peer in ("v004", "queue", "ceiling"):
            runs = results.get((peer, case))
            if runs:
                ratio = rate / _median(runs, "events_per_s")
                print(f"  ours / {peer}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
