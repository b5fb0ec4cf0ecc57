"""One run of the start-up benchmark's pipeline, in a fresh interpreter (see bench_startup.py).

    python _startup_run.py ours|v004 SETUP.yaml

Prints one JSON line: ``seconds`` (from before the setup is read until every
process ended, imports excluded) and ``events`` (what reached the last buffer).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def run_ours(path: Path) -> int:
    from mimocorb2.runtime import Runner
    from mimocorb2.setup import load_setup

    report = Runner(load_setup(path)).run()
    if not report.ok:
        raise SystemExit(f"run failed: {report.failed_workers}")
    return report.event_counts["heights"]


def run_v004(path: Path) -> int:
    import contextlib
    import io

    import yaml
    from mimocorb2.control import Control

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its log path and a graphviz warning
        control = Control(yaml.safe_load(path.read_text()), path.parent, mode="")
        control.start_workers()
    processes = [p for worker in control.workers.values() for p in worker.processes]
    while any(p.is_alive() for p in processes):
        time.sleep(0.005)
    return control.buffers["heights"].get_stats()["event_count"]


if __name__ == "__main__":
    impl, setup = sys.argv[1], Path(sys.argv[2])
    if impl == "v004":
        import mimocorb2.control  # noqa: F401  (imports are not part of the run)
    else:
        import mimocorb2.runtime  # noqa: F401
    t0 = time.perf_counter()
    events = run_v004(setup) if impl == "v004" else run_ours(setup)
    print(json.dumps({"seconds": time.perf_counter() - t0, "events": events}))
