"""The supervisor's pure decisions, without processes: restart, backoff, drain victims, disk floor."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mimocorb2.datapath.heartbeat import Stage
from mimocorb2.runtime import EXIT_SETUP_FAILED
from mimocorb2.setup import DiskFloor, check_setup, load_setup
from mimocorb2.supervisor.devices import stale_reason
from mimocorb2.supervisor.policy import (
    BACKOFF_MAX,
    IMPORT_TIMEOUT,
    IMPORT_TIMEOUT_MIN,
    Backoff,
    ExitContext,
    HeldEvent,
    RestartBudget,
    Verdict,
    decide_exit,
    drain_victims,
    import_timeout,
    loading_what,
    stuck_after,
    stuck_message,
)


def ctx(exitcode: int = 1, **kw) -> ExitContext:
    base = dict(exitcode=exitcode, restart="on-failure", max_restarts=5, has_sources=True,
                sources_ended=False, restarts_allowed=True, stopping=False, how="exited with code 1")
    base.update(kw)
    return ExitContext(**base)


def test_failure_is_restarted_with_backoff_until_the_budget_is_spent():
    budget, backoff = RestartBudget(), Backoff()
    delays = [decide_exit(ctx(max_restarts=3), budget, backoff, now=float(t)) for t in range(4)]
    assert [d.verdict for d in delays] == [Verdict.RESTART] * 3 + [Verdict.FAIL]
    assert [d.delay for d in delays[:3]] == [0.5, 1.0, 2.0]
    assert "3 restarts within 60 s, then exited with code 1" == delays[3].why


def test_backoff_belongs_to_the_process_not_the_worker():
    budget = RestartBudget()  # one worker
    first, second = Backoff(), Backoff()  # two of its processes
    for t in range(4):
        decide_exit(ctx(max_restarts=100), budget, first, now=float(t))
    # the other process of the same worker crashes for the first time: no inherited delay
    assert decide_exit(ctx(max_restarts=100), budget, second, now=4.0).delay == 0.5
    assert decide_exit(ctx(max_restarts=100), budget, first, now=5.0).delay == 8.0


def test_backoff_is_capped_and_resets_after_the_window():
    backoff = Backoff()
    delays = [backoff.next_delay(float(t)) for t in range(10)]
    assert max(delays) == BACKOFF_MAX
    assert backoff.next_delay(1000.0) == 0.5


def test_budget_window_slides():
    budget = RestartBudget(window=60.0)
    assert [budget.record(t) for t in (0.0, 10.0, 20.0)] == [1, 2, 3]
    assert budget.record(75.0) == 2  # 0 and 10 fell out of the window


def test_setup_failure_is_never_restarted():
    d = decide_exit(ctx(EXIT_SETUP_FAILED, how="could not load its function: boom"), RestartBudget(), Backoff(), 0.0)
    assert d.verdict is Verdict.FAIL and "boom" in d.why


@pytest.mark.parametrize("kw, exitcode, verdict", [
    (dict(restarts_allowed=False), 1, Verdict.RETIRE),  # aborting / past the drain timeout
    (dict(restart="never"), 1, Verdict.FAIL),
    (dict(restart="never"), 0, Verdict.RETIRE),
    (dict(), 0, Verdict.RETIRE),  # on-failure, normal exit
    (dict(restart="always"), 0, Verdict.RESTART),  # a reader returned before its sources ended
    (dict(restart="always", sources_ended=True), 0, Verdict.RETIRE),
    (dict(restart="always", stopping=True), 0, Verdict.RETIRE),
    (dict(restart="always", has_sources=False), 0, Verdict.RETIRE),  # an importer that finished
])
def test_restart_rules(kw, exitcode, verdict):
    assert decide_exit(ctx(exitcode, **kw), RestartBudget(), Backoff(), 0.0).verdict is verdict


def test_drain_victims_are_only_the_stuck():
    live = [
        HeldEvent(("measure", 0), heartbeat_age=30.0, held_counter=17, held_seconds=30.0),  # hung on an event
        HeldEvent(("measure", 1), heartbeat_age=0.1, held_counter=None, held_seconds=0.0),  # waiting, beating
        HeldEvent(("export", 0), heartbeat_age=0.2, held_counter=None, held_seconds=0.0),
        HeldEvent(("busy", 0), heartbeat_age=0.0, held_counter=99, held_seconds=0.5),  # working on an event
        HeldEvent(("user_loop", 0), heartbeat_age=12.0, held_counter=None, held_seconds=0.0),  # no beats at all
    ]
    assert drain_victims(live, threshold=10.0) == [("measure", 0), ("user_loop", 0)]
    # nobody looks stuck but the run did not end: everyone left goes (the last resort)
    assert drain_victims(live[1:3], threshold=10.0) == [("measure", 1), ("export", 0)]


def test_stuck_message_and_threshold():
    assert stuck_after(30.0) == 10.0 and stuck_after(2.0) == 2.0
    assert stuck_message(17, 33.4, 10.0) == "stuck on event 17 for 33 s"
    assert stuck_message(17, 3.0, 10.0) is None
    assert stuck_message(None, 100.0, 10.0) is None


def _setup(tmp_path, value) -> str:
    (tmp_path / "funcs.py").write_text("def source(io):\n    pass\n\ndef sink(io):\n    pass\n")
    p = tmp_path / "setup.yaml"
    p.write_text(textwrap.dedent(f"""\
        Buffers:
          raw: {{slot_count: 4, data_length: 1, data_dtype: {{x: float64}}}}
        Workers:
          src: {{file: funcs.py, function: source, sinks: [raw]}}
          snk: {{file: funcs.py, function: sink, sources: [raw]}}
        min_free_disk: {value}
        """))
    return str(p)


@pytest.mark.parametrize("value, floor", [
    ('"500 MB"', DiskFloor(500_000_000, None)),
    ('"2%"', DiskFloor(None, 2.0)),
    ('"1.5 GiB"', DiskFloor(int(1.5 * 2**30), None)),
    ("123456", DiskFloor(123456, None)),
])
def test_min_free_disk_values(tmp_path, value, floor):
    setup = load_setup(_setup(tmp_path, value))
    assert setup.min_free_disk == floor
    assert DiskFloor(None, 2.0).bytes_for(1000) == 20


@pytest.mark.parametrize("value", ['"lots"', '"150%"', "-5", '"5 parsecs"'])
def test_min_free_disk_errors_name_the_key(tmp_path, value):
    problems = check_setup(_setup(tmp_path, value))
    assert any("min_free_disk" in p for p in problems), problems


def test_default_min_free_disk_is_100_MB():
    assert DiskFloor().bytes_for(10**12) == 100_000_000


def test_cpu_of_a_slot_without_a_live_process_is_zero():
    from mimocorb2.supervisor.processes import ProcessRecord
    from mimocorb2.supervisor.sampler import Sampler

    dead = ProcessRecord("w", 0, 0, pid=12345, cpu_percent=293.0, cpu_last=(1.0, 5.0))  # its process is gone
    Sampler.sample_cpu([dead])
    assert dead.cpu_percent == 0.0 and dead.cpu_last is None


def test_last_error_line_of_a_worker_log(tmp_path):
    from mimocorb2.supervisor.logs import last_error_line

    log = tmp_path / "w.log"
    log.write_text(
        "2026-11-27T10:00:00Z [info     ] worker process started pid=7 worker=w\n"
        "2026-11-27T10:00:01Z [error    ] worker function failed pid=7 worker=w\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ModuleNotFoundError: No module named 'analysis'\n"
    )
    assert last_error_line(log) == "ModuleNotFoundError: No module named 'analysis'"
    assert last_error_line(tmp_path / "missing.log") is None


def test_an_exit_before_the_function_is_a_setup_failure_whatever_its_code():
    for exitcode in (0, 3, -9):
        d = decide_exit(ctx(exitcode, setup_failed=True, how="exited with code 3 while importing funcs.py"),
                        RestartBudget(), Backoff(), 0.0)
        assert d.verdict is Verdict.FAIL and d.why == "exited with code 3 while importing funcs.py"


def test_the_way_to_the_function_is_bounded_by_the_stall_timeout_or_a_default():
    assert import_timeout(None) == IMPORT_TIMEOUT == 60.0
    assert import_timeout(1.0) == IMPORT_TIMEOUT_MIN  # big imports take seconds on a loaded machine
    assert import_timeout(120.0) == 120.0
    assert loading_what(Stage.LOADING, Path("/x/funcs.py"), "f") == "importing funcs.py"
    assert loading_what(Stage.LOADING, None, "exporters.csv") == "loading exporters.csv"
    assert loading_what(Stage.STARTING, Path("/x/funcs.py"), "f") == "starting"


def test_a_device_file_is_current_only_if_written_by_a_live_process_since_its_start():
    assert stale_reason(100.0, []) == "its process ended"
    assert stale_reason(100.0, [101.0]) == "from an earlier process"  # written before the restart
    assert stale_reason(101.0, [101.0]) is None
    assert stale_reason(100.95, [101.0]) is None  # file times come from a coarse clock
    assert stale_reason(100.0, [101.0, 99.0]) is None  # a worker's file: one of its live processes may have
