"""Model-based test of the slot ring: random operations against a plain-Python model.

Each step is one non-blocking operation (claim only when a slot is free, take
only when the group has something). After every step the ring's bookkeeping
must match the model: every slot accounted for exactly once, each group gets
exactly the events committed after it joined, in commit order.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mimocorb2.datapath._layout import H_FREE_TOP, H_WRITING
from mimocorb2.mimo_buffer import BufferReader, BufferWriter, mimoBuffer

SLOTS = 4


class RingModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.buf = mimoBuffer("model", SLOTS, 1, {"v": "i8"}, reader_groups=["g0", "g1"])
        self.readers = {g: BufferReader(self.buf, g) for g in ("g0", "g1")}
        self.next_value = 0
        self.writing: list[BufferWriter] = []  # writers inside their block
        self.reading: dict[str, list[BufferReader]] = {"g0": [], "g1": []}
        self.expected: dict[str, list[int]] = {"g0": [], "g1": []}  # committed, not yet taken
        self.received: dict[str, list[int]] = {"g0": [], "g1": []}
        self.committed: list[int] = []

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

    @precondition(lambda self: any(self.expected.values()))
    @rule(group=st.sampled_from(["g0", "g1"]))
    def take(self, group: str) -> None:
        if not self.expected[group]:
            return
        reader = BufferReader(self.buf, group)
        metadata, data = reader.__enter__()
        assert data is not None
        value = int(data["v"][0])
        assert value == self.expected[group].pop(0), "group must get events in commit order"
        self.received[group].append(value)
        self.reading[group].append(reader)

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
            unfinished.update(int(r._views[r.token][1]["v"][0]) for r in self.reading[group])
        assert self._in_use() == held_by_writers + len(unfinished)

    @invariant()
    def delivered_is_a_prefix_of_committed(self) -> None:
        for group in ("g0", "g1"):
            assert self.received[group] == self.committed[: len(self.received[group])]


# preconditions reject many steps on purpose (e.g. no claim while the ring is full)
RingModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)
TestRingModel = RingModel.TestCase
