"""Model-based test of the slot ring: random operations against a plain-Python model.

Each step is one non-blocking operation (claim only when a slot is free, take
only when the group has something, a reader dying while it holds an event).
After every step the ring's bookkeeping must match the model: every slot
accounted for exactly once, each group gets exactly the events committed after
it joined, in commit order (an event a dead reader held comes back first), and
an event on which ``QUARANTINE_AFTER`` readers of a group died is set aside for
that group instead of coming back. A writer with a commit witness dies after
claiming, after announcing or after committing (under a pid no real process
has): the witness's settled tag is the highest tag committed under its key.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mimocorb2.datapath import _ring as ring_module
from mimocorb2.datapath._layout import H_FREE_TOP, H_WRITING
from mimocorb2.mimo_buffer import NO_TAG, BufferReader, BufferWriter, CommitWitness, mimoBuffer

SLOTS = 4
FIRST_FAKE_PID = 1 << 40  # readers "die" under pids no real process has
WITNESS_KEY = 99


class RingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.buf = mimoBuffer("model", SLOTS, 1, {"v": "i8"}, reader_groups=["g0", "g1"])
        self.readers = {g: BufferReader(self.buf, g) for g in ("g0", "g1")}
        self.next_value = 0
        self.writing: list[BufferWriter] = []  # writers inside their block
        self.reading: dict[str, list[BufferReader]] = {"g0": [], "g1": []}
        self.expected: dict[str, list[int]] = {"g0": [], "g1": []}  # committed, not yet taken
        self.received: dict[str, list[int]] = {"g0": [], "g1": []}  # first deliveries
        self.redeliver: dict[str, list[int]] = {"g0": [], "g1": []}  # stack: handed back by dead readers
        self.deaths: dict[tuple[str, int], int] = {}  # (group, value) -> readers died holding it
        self.set_aside: dict[str, list[int]] = {"g0": [], "g1": []}
        self.committed: list[int] = []
        self.next_pid = FIRST_FAKE_PID
        self.next_tag = 1
        self.settled = NO_TAG  # highest tag a dead witnessed writer committed

    def teardown(self) -> None:
        self.buf.close()

    def _in_use(self) -> int:
        return SLOTS - self.buf._ring.cb[H_FREE_TOP]

    @precondition(lambda self: self.buf._ring.cb[H_FREE_TOP] > 0)
    @rule()
    def claim(self) -> None:
        writer = BufferWriter(self.buf)
        metadata, data = writer.__enter__()
        data["v"] = self.next_value
        self.next_value += 1
        self.writing.append(writer)

    @precondition(lambda self: self.writing)
    @rule(index=st.integers(0, 10), fail=st.booleans())
    def finish_write(self, index: int, fail: bool) -> None:
        writer = self.writing.pop(index % len(self.writing))
        value = int(writer._views[writer.token][1]["v"][0])
        if fail:
            writer.__exit__(RuntimeError, RuntimeError("x"), None)
        else:
            writer.__exit__(None, None, None)
            self.committed.append(value)
            for group in self.expected:
                self.expected[group].append(value)

    @precondition(lambda self: self.buf._ring.cb[H_FREE_TOP] > 0)
    @rule(stop_at=st.sampled_from(["claimed", "announced", "committed"]))
    def witnessed_writer_dies(self, stop_at: str) -> None:
        fake_pid = self.next_pid
        self.next_pid += 1
        real_pid, ring_module._pid = ring_module._pid, fake_pid  # this writer is "that" pid
        try:
            writer = BufferWriter(self.buf)
            witness = CommitWitness(writer, WITNESS_KEY)
            assert witness.settled == self.settled
            metadata, data = writer.__enter__()
            data["v"] = value = self.next_value
            self.next_value += 1
            if stop_at != "claimed":
                witness.announce(self.next_tag)
            if stop_at == "committed":
                writer.__exit__(None, None, None)
        finally:
            ring_module._pid = real_pid
        result = self.buf.reclaim(fake_pid)
        if stop_at == "committed":
            assert result["lost"] == 0
            self.settled = self.next_tag
            self.committed.append(value)
            for group in self.expected:
                self.expected[group].append(value)
        else:
            assert result["lost"] == 1
        self.next_tag += 1
        assert self.buf._ring.witnessed(WITNESS_KEY) == self.settled

    @precondition(lambda self: any(self.expected.values()) or any(self.redeliver.values()))
    @rule(group=st.sampled_from(["g0", "g1"]))
    def take(self, group: str) -> None:
        if not self.expected[group] and not self.redeliver[group]:
            return
        reader = BufferReader(self.buf, group)
        reader.fake_pid = self.next_pid
        self.next_pid += 1
        real_pid, ring_module._pid = ring_module._pid, reader.fake_pid  # this take is "by" that pid
        try:
            metadata, data = reader.__enter__()
        finally:
            ring_module._pid = real_pid
        assert data is not None
        value = int(data["v"][0])
        if self.redeliver[group]:
            assert value == self.redeliver[group].pop(), "a dead reader's event comes back first"
        else:
            assert value == self.expected[group].pop(0), "group must get events in commit order"
            self.received[group].append(value)
        self.reading[group].append(reader)

    @precondition(lambda self: any(self.reading.values()))
    @rule(group=st.sampled_from(["g0", "g1"]), index=st.integers(0, 10))
    def reader_dies(self, group: str, index: int) -> None:
        if not self.reading[group]:
            return
        reader = self.reading[group].pop(index % len(self.reading[group]))
        value = int(reader._views[reader.token][1]["v"][0])
        result = self.buf.reclaim(reader.fake_pid)
        deaths = self.deaths[(group, value)] = self.deaths.get((group, value), 0) + 1
        if deaths >= ring_module.QUARANTINE_AFTER:
            assert result["quarantined"] == 1 and result["redelivered"] == 0
            [event] = result["quarantined_events"]
            assert event.group == group and int(event.data["v"][0]) == value
            self.set_aside[group].append(value)
        else:
            assert result["redelivered"] == 1 and result["quarantined"] == 0
            self.redeliver[group].append(value)

    @precondition(lambda self: any(self.reading.values()))
    @rule(group=st.sampled_from(["g0", "g1"]), fail=st.booleans())
    def finish_read(self, group: str, fail: bool) -> None:
        if not self.reading[group]:
            return
        reader = self.reading[group].pop(0)
        if fail:
            reader.__exit__(KeyError, KeyError("x"), None)
        else:
            reader.__exit__(None, None, None)

    @invariant()
    def every_slot_accounted_for(self) -> None:
        ring = self.buf._ring
        held_by_writers = len(self.writing)
        assert ring.cb[H_WRITING] == held_by_writers
        # a slot is in use while written, or while some group has not finished it
        unfinished = set()
        for group in ("g0", "g1"):
            unfinished.update(self.expected[group])
            unfinished.update(self.redeliver[group])
            unfinished.update(int(r._views[r.token][1]["v"][0]) for r in self.reading[group])
        assert self._in_use() == held_by_writers + len(unfinished)
        assert self.buf.counters()["quarantined"] == sum(len(v) for v in self.set_aside.values())

    @invariant()
    def delivered_is_a_prefix_of_committed(self) -> None:
        for group in ("g0", "g1"):
            assert self.received[group] == self.committed[: len(self.received[group])]


# preconditions reject many steps on purpose (e.g. no claim while the ring is full)
RingModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
TestRingModel = RingModel.TestCase
