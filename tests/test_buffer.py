"""mimoBuffer with real processes and real shared memory."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimocorb2.mimo_buffer import NO_TAG, BufferObserver, BufferReader, BufferWriter, CommitWitness, mimoBuffer

CTX = mp.get_context("spawn")


@pytest.fixture
def make_buffer():
    """Create buffers that are closed (and unlinked) after the test."""
    made: list[mimoBuffer] = []

    def make(*args, **kwargs) -> mimoBuffer:
        buf = mimoBuffer(*args, **kwargs)
        made.append(buf)
        return buf

    yield make
    for buf in made:
        buf.close()


def _join_all(processes, timeout=60):
    for p in processes:
        p.join(timeout)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


# ---------------------------------------------------------------- worker bodies (module level: spawn)
def write_events(buf: mimoBuffer, writer_id: int, count: int) -> None:
    writer = BufferWriter(buf)
    for i in range(count):
        with writer as (metadata, data):
            data["writer"][:] = writer_id
            data["index"][:] = i
            metadata["counter"] = i
    writer.send_flush_event()


def read_events(buf: mimoBuffer, group: str, out) -> None:
    reader = BufferReader(buf, group)
    seen = []
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            seen.append((int(data["writer"][0]), int(data["index"][0])))
    out.put((group, os.getpid(), seen))


def killed_when_ready(target, *args):
    """Start ``target(*args, ready)`` in a process, SIGKILL it once it set ``ready``; the joined process."""
    ready = CTX.Event()
    victim = CTX.Process(target=target, args=(*args, ready))
    victim.start()
    assert ready.wait(30)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    return victim


def hold_a_slot(buf: mimoBuffer, role: str, ready) -> None:
    if role == "reader":
        with BufferReader(buf) as (metadata, data):
            ready.set()
            signal.pause()
    else:
        with BufferWriter(buf) as (metadata, data):
            ready.set()
            signal.pause()


def die_inside_lock(buf: mimoBuffer, ready) -> None:
    buf._ring._lock()
    ready.set()
    signal.pause()


WITNESS_KEY = 7


def write_witnessed(buf: mimoBuffer, stop_at: str, ready) -> None:
    """Write event 1 (announced, committed), then event 2 up to ``stop_at``; wait there to be killed."""
    writer = BufferWriter(buf)
    witness = CommitWitness(writer, WITNESS_KEY)
    with writer as (metadata, data):
        data["x"] = 1
        witness.announce(1)
    metadata, data = writer.__enter__()
    data["x"] = 2
    if stop_at != "claimed":
        witness.announce(2)
    if stop_at == "committed":
        writer.__exit__(None, None, None)
    elif stop_at == "abandoned":
        writer.__exit__(RuntimeError, RuntimeError("raised in the block"), None)
    ready.set()
    signal.pause()


def observe_then_wait(buf: mimoBuffer, got_one, release) -> None:
    observer = BufferObserver(buf)
    with observer as (metadata, data):
        assert data is not None
        got_one.set()
        release.wait(60)


# ---------------------------------------------------------------- tests
def test_write_read_end_of_stream_in_one_process(make_buffer):
    buf = make_buffer("basic", slot_count=4, data_length=10, data_dtype={"value": "f4"})
    with BufferWriter(buf) as (metadata, data):
        data["value"][:] = np.arange(10)
        metadata["deadtime"] = 0.25
    with BufferReader(buf) as (metadata, data):
        assert data["value"][3] == 3.0
    buf.send_flush_event()
    with BufferReader(buf) as (metadata, data):
        assert metadata is None and data is None
    stats = buf.get_stats()
    assert stats["event_count"] == 1
    assert stats["flush_event_received"] is True
    assert stats["average_deadtime"] == pytest.approx(0.25)
    for key in ("filled_slots", "empty_slots", "rate", "paused_count", "paused"):
        assert key in stats


def test_raw_token_api(make_buffer):
    buf = make_buffer("raw", slot_count=2, data_length=3, data_dtype={"a": "i4"})
    token, metadata, data = buf.write()
    data["a"][:] = [1, 2, 3]
    buf.return_write_token(token)
    token, metadata, data = buf.read()
    assert list(data["a"]) == [1, 2, 3]
    buf.return_read_token(token)
    buf.send_flush_event()
    assert buf.read() == [None, None, None]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_many_writers_many_readers_exactly_once_in_order(make_buffer, method):
    ctx = mp.get_context(method)
    writers, per_writer = 3, 3000
    buf = make_buffer(
        "mxn", slot_count=8, data_length=2, data_dtype={"writer": "i4", "index": "i8"},
        reader_groups=["g1", "g2"], writers=writers,
    )
    out = ctx.Queue()
    procs = [ctx.Process(target=write_events, args=(buf, w, per_writer)) for w in range(writers)]
    procs += [ctx.Process(target=read_events, args=(buf, g, out)) for g in ("g1", "g1", "g1", "g2")]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(4)]
    _join_all(procs)
    expected = {(w, i) for w in range(writers) for i in range(per_writer)}
    for group in ("g1", "g2"):
        parts = [seen for g, _, seen in results if g == group]
        merged = [item for seen in parts for item in seen]
        assert len(merged) == len(expected), f"group {group}: duplicates or losses"
        assert set(merged) == expected
        for seen in parts:  # each reader sees each writer's events in order
            for w in range(writers):
                indices = [i for ww, i in seen if ww == w]
                assert indices == sorted(indices)
    stats = buf.get_stats()
    assert stats["event_count"] == writers * per_writer
    assert stats["empty_slots"] == 1.0 and stats["lost"] == 0


def test_event_limit_is_exact(make_buffer):
    buf = make_buffer("limited", 8, 1, {"x": "f8"})
    buf.set_event_limit(3)
    for _ in range(5):
        with BufferWriter(buf) as (metadata, data):
            data["x"] = 1
    stats = buf.get_stats()
    assert stats["event_count"] == 3 and stats["rejected"] == 2 and stats["ended"]


def test_end_of_stream_counts_writers(make_buffer):
    buf = make_buffer("counted", 4, 1, {"x": "f8"}, writers=3)
    for pid in (101, 102, 102):
        buf.retire_writer(pid)
    assert not buf.ended
    buf.send_flush_event()
    assert buf.ended


def test_readers_see_end_only_after_all_events(make_buffer):
    buf = make_buffer("drain", 8, 1, {"writer": "i4", "index": "i8"})
    for i in range(5):
        with BufferWriter(buf) as (metadata, data):
            data["index"] = i
    buf.send_flush_event()
    reader = BufferReader(buf)
    got = []
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            got.append(int(data["index"][0]))
    assert got == [0, 1, 2, 3, 4]


def test_pause_discards_and_counts(make_buffer):
    buf = make_buffer("pause", 4, 1, {"x": "f8"})
    writer = BufferWriter(buf)
    buf.pause()
    for _ in range(10):
        with writer as (metadata, data):
            data["x"] = 1
    buf.resume()
    with writer as (metadata, data):
        data["x"] = 2
    stats = buf.get_stats()
    assert stats["paused_count"] == 10 and stats["event_count"] == 1 and not stats["paused"]
    with BufferReader(buf) as (metadata, data):
        assert data["x"][0] == 2


def test_exception_in_writer_discards_and_in_reader_frees(make_buffer):
    buf = make_buffer("exc", 2, 1, {"x": "f8"})
    with pytest.raises(RuntimeError):
        with BufferWriter(buf) as (metadata, data):
            data["x"] = 99
            raise RuntimeError("half-written")
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 1
    with pytest.raises(KeyError):
        with BufferReader(buf) as (metadata, data):
            assert data["x"][0] == 1
            raise KeyError("reader fails")
    assert buf.get_stats()["empty_slots"] == 1.0
    assert buf.counters()["abandoned"] == 1
    # both slots usable again, nothing half-written delivered
    for v in (2, 3):
        with BufferWriter(buf) as (metadata, data):
            data["x"] = v
    buf.send_flush_event()
    values = []
    reader = BufferReader(buf)
    while True:
        with reader as (metadata, data):
            if data is None:
                break
            values.append(data["x"][0])
    assert values == [2, 3]


def test_observer_gets_latest_copy_and_never_blocks_writer(make_buffer):
    buf = make_buffer("obs", 2, 1, {"writer": "i4", "index": "i8"})
    got_one, release = CTX.Event(), CTX.Event()
    with BufferWriter(buf) as (metadata, data):
        data["index"] = -1
    observer = CTX.Process(target=observe_then_wait, args=(buf, got_one, release))
    observer.start()
    assert got_one.wait(30)
    # the observer is inside its `with` block: a 2-slot buffer must still pass 500 events
    reader = BufferReader(buf)
    with reader as (metadata, data):
        assert data["index"][0] == -1
    for i in range(500):
        with BufferWriter(buf) as (metadata, data):
            data["index"] = i
        with reader as (metadata, data):
            assert data["index"][0] == i
    release.set()
    _join_all([observer])
    local = BufferObserver(buf)
    with local as (metadata, data):
        assert data["index"][0] == 499
    buf.send_flush_event()
    with local as (metadata, data):
        assert data is None


@pytest.mark.parametrize("role", ["reader", "writer"])
def test_reclaim_after_kill_9(make_buffer, role):
    buf = make_buffer("reclaim", 2, 1, {"x": "i8"})
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 42
    victim = killed_when_ready(hold_a_slot, buf, role)
    result = buf.reclaim(victim.pid)
    if role == "reader":
        assert result["redelivered"] == 1
        with BufferReader(buf) as (metadata, data):
            assert data["x"][0] == 42
    else:
        assert result["lost"] == 1
        with BufferReader(buf) as (metadata, data):
            assert data["x"][0] == 42
    assert buf.get_stats()["empty_slots"] == 1.0


def _kill_a_reader_holding_the_next_event(buf: mimoBuffer) -> dict:
    victim = killed_when_ready(hold_a_slot, buf, "reader")
    return buf.reclaim(victim.pid)


def test_an_event_whose_reader_died_twice_is_set_aside(make_buffer):
    buf = make_buffer("poison", 1, 2, {"x": "i8"})  # one slot: the next event reuses it
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 13
        metadata["counter"] = 13
    first = _kill_a_reader_holding_the_next_event(buf)
    assert (first["redelivered"], first["quarantined"], first["quarantined_events"]) == (1, 0, [])
    second = _kill_a_reader_holding_the_next_event(buf)
    assert (second["redelivered"], second["quarantined"]) == (0, 1)
    [event] = second["quarantined_events"]
    assert (event.buffer, event.group, event.counter) == ("poison", "default", 13)
    assert event.data["x"].tolist() == [13, 13]
    assert buf.get_stats()["quarantined"] == 1
    assert buf.get_stats()["empty_slots"] == 1.0  # the slot is free again
    # the next event in the same slot starts with a clean record: one death only redelivers it
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 14
    assert _kill_a_reader_holding_the_next_event(buf)["redelivered"] == 1
    with BufferReader(buf) as (metadata, data):
        assert data["x"][0] == 14
    assert buf.get_stats()["quarantined"] == 1


def test_reclaim_repairs_a_lock_held_by_a_dead_process(make_buffer):
    buf = make_buffer("lockdeath", 4, 1, {"x": "i8"})
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 7
    victim = killed_when_ready(die_inside_lock, buf)
    assert buf.reclaim(victim.pid)["repaired"] == 1
    with BufferReader(buf) as (metadata, data):
        assert data["x"][0] == 7
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 8
    assert buf.get_stats()["event_count"] == 2


def test_a_blocked_process_takes_over_a_lock_whose_holder_died(make_buffer):
    """No supervisor needed: a writer waiting on a dead holder's lock repairs it itself."""
    buf = make_buffer("selfheal", 4, 1, {"x": "i8"})
    victim = killed_when_ready(die_inside_lock, buf)
    with BufferWriter(buf) as (metadata, data):
        data["x"] = 9
    with BufferReader(buf) as (metadata, data):
        assert data["x"][0] == 9
    assert buf.reclaim(victim.pid)["lost"] == 0


# (slots, reader groups, where the writer is killed, expected settled tag, events committed)
WITNESS_CASES = [
    (2, ["default"], "claimed", 1, 1),  # killed before announcing: the earlier commit is named
    (2, ["default"], "announced", NO_TAG, 1),  # announced, not committed: the slot is lost
    (2, ["default"], "committed", 2, 2),  # the worst moment: committed, not yet recorded by the writer
    (2, ["default"], "abandoned", NO_TAG, 1),  # the block raised: its announcement was withdrawn
    (1, [], "claimed", NO_TAG, 1),  # event 1's slot, freed at once, claimed again for event 2
    (1, [], "committed", 2, 2),  # committed and freed at once: still known as committed
]


@pytest.mark.parametrize("settled_by", ["reclaim", "next process"])
@pytest.mark.parametrize(("slots", "groups", "stop_at", "tag", "committed"), WITNESS_CASES)
def test_a_witness_tells_whether_a_killed_writers_announced_event_was_committed(
        make_buffer, settled_by, slots, groups, stop_at, tag, committed):
    buf = make_buffer("witness", slots, 1, {"x": "i8"}, reader_groups=groups)
    victim = killed_when_ready(write_witnessed, buf, stop_at)
    if settled_by == "reclaim":  # what the supervisor does before it restarts the process
        assert buf.reclaim(victim.pid)["lost"] == (1 if stop_at in ("claimed", "announced") else 0)
    bystander = CommitWitness(BufferWriter(buf), WITNESS_KEY + 1)  # a sibling writer asks first
    assert bystander.settled_under(WITNESS_KEY) == tag
    successor = CommitWitness(BufferWriter(buf), WITNESS_KEY)
    assert successor.settled == tag
    assert buf.get_stats()["event_count"] == committed
    if settled_by == "next process":
        buf.reclaim(victim.pid)  # settled already: the verdict stays
        assert successor.settled_under(WITNESS_KEY) == tag


def test_a_witness_key_is_one_live_process_and_the_table_is_bounded(make_buffer):
    buf = make_buffer("witnesskeys", 2, 1, {"x": "i8"})
    ready = CTX.Event()
    holder = CTX.Process(target=write_witnessed, args=(buf, "committed", ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RuntimeError, match=f"buffer 'witnesskeys': witness {WITNESS_KEY} is taken by process {holder.pid}"):
            CommitWitness(BufferWriter(buf), WITNESS_KEY)
    finally:
        holder.kill()
        holder.join(10)
    writer = BufferWriter(buf)
    keys = iter(range(100, 1000))
    with pytest.raises(RuntimeError, match="more than 64 witnessed writers"):
        while True:
            CommitWitness(writer, next(keys))


def test_fan_out_groups_and_back_pressure(make_buffer):
    buf = make_buffer("fan", 3, 1, {"x": "i8"}, reader_groups=["fast", "slow"])
    fast, slow = BufferReader(buf, "fast"), BufferReader(buf, "slow")
    for i in range(3):
        with BufferWriter(buf) as (metadata, data):
            data["x"] = i
    for i in range(3):
        with fast as (metadata, data):
            assert data["x"][0] == i
    assert buf.get_stats()["empty_slots"] == 0.0  # the slow group still holds all three
    with slow as (metadata, data):
        assert data["x"][0] == 0
    assert buf.get_stats()["empty_slots"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(slot_count=0, data_length=1, data_dtype={"x": "f8"}), "slot_count must be an integer >= 1"),
        (dict(slot_count=2, data_length=0, data_dtype={"x": "f8"}), "data_length must be an integer >= 1"),
        (dict(slot_count=2, data_length=1, data_dtype={"x": "float128x"}), "field 'x' has unknown dtype"),
        (dict(slot_count=2, data_length=1, data_dtype={}), "data_dtype is empty"),
    ],
)
def test_bad_arguments_name_buffer_and_problem(kwargs, message):
    with pytest.raises(ValueError) as info:
        mimoBuffer("badbuf", **kwargs)
    assert "badbuf" in str(info.value) and message in str(info.value)


DTYPES = st.sampled_from(["i1", "u2", "i4", "i8", "f4", "f8", "c8", "S7", "?"])


@settings(max_examples=25, deadline=None)
@given(
    fields=st.lists(DTYPES, min_size=1, max_size=4),
    length=st.integers(min_value=1, max_value=300),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_any_dtype_and_length(fields, length, seed):
    dtype = {f"f{i}": kind for i, kind in enumerate(fields)}
    buf = mimoBuffer("hyp", 2, length, dtype)
    try:
        rng = np.random.default_rng(seed)
        sent = np.zeros(length, buf.data_dtype)
        sent.view(np.uint8)[:] = rng.integers(0, 256, sent.nbytes, dtype=np.uint8)
        with BufferWriter(buf) as (metadata, data):
            data[:] = sent
        with BufferReader(buf) as (metadata, data):
            assert data.tobytes() == sent.tobytes()
    finally:
        buf.close()
