"""Where everything lives inside one buffer's shared-memory segment.

The segment starts with a control block of int64 words (plus a small area of
group names), followed by the slots. Every word is described here once; the
ring code only uses these offsets.

Control block, in words::

    header            HEADER_WORDS words (see the H_* names)
    free stack        slot_count   slot indices that are free, top at H_FREE_TOP
    commit ring       slot_count   slot of commit sequence number q at q % slot_count
    state             slot_count   0 free, -pid being written by pid, 1 committed
    refs              slot_count   reader groups that still have to finish a committed slot
    seq               slot_count   commit sequence number of a committed slot
    gen               slot_count   bumped on claim and on commit (observers' seqlock)
    flushed pids      MAX_FLUSHERS pids of writers that have flushed (end-of-stream count)
    group headers     max_groups * GROUP_WORDS
    holders           max_groups * slot_count   pid of the group's reader holding slot s, or 0
    redeliver stacks  max_groups * slot_count   slots handed back from dead readers
    kills             max_groups * slot_count   readers of the group that died holding slot s
                                                since the group took it from the commit ring
    witnesses         MAX_WITNESSES * WITNESS_WORDS   writers that announce each commit (see W_*)

Each slot is ``slot_stride`` bytes: metadata at offset 0 (24 bytes), data at
offset DATA_OFFSET, stride rounded up to a cache line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Layout"]

MAGIC = 0x6D696D6F63726232  # "mimocrb2"

# header words
H_MAGIC = 0
H_SLOTS = 1
H_HEAD = 2  # next commit sequence number
H_UNUSED_3 = 3  # (was: events; the head counts them)
H_PAUSED = 4
H_PAUSED_COUNT = 5  # events written while paused (discarded)
H_FLUSHES = 6  # distinct writers that flushed
H_WRITERS = 7  # writers expected to flush before the buffer ends
H_ENDED = 8
H_LOST = 9  # slots taken back from writers that died mid-write
H_REDELIVERED = 10  # slots taken back from readers that died mid-read
H_FREE_TOP = 11
H_DEADTIME = 12  # float64 sum of the metadata deadtime of committed events
H_LOCK_OWNER = 13  # pid inside the critical section, 0 outside
H_WAITING_WRITERS = 14
H_GROUPS = 15  # reader groups joined so far (indices 0..H_GROUPS-1)
H_LATEST_SLOT = 16
H_UNUSED_17 = 17  # (was: latest seq; it is head - 1)
H_FLUSHED_PIDS = 18  # entries used in the flushed-pid table
H_ABANDONED = 19  # writes abandoned by an exception in the writer's block
H_WRITING = 20  # slots currently held by writers
H_REJECTED = 21  # writes refused because the buffer had ended
H_MAX_GROUPS = 22
H_ATTACHED = 23  # reader groups not detached: the reference count of a new commit
H_EVENT_LIMIT = 24  # 0, or the number of events after which the buffer ends by itself
H_QUARANTINED = 25  # events set aside because readers died holding them (poison events)
HEADER_WORDS = 32

# group header words
G_TAIL = 0  # next commit sequence number this group will take
G_JOIN = 1  # first sequence number this group is entitled to
G_WAITING = 2  # readers of this group sleeping on its semaphore
G_RTOP = 3  # entries in the group's redeliver stack
G_HELD = 4  # slots held by readers of this group
G_READS = 5  # events this group has finished reading
G_DETACHED = 6  # 1 once the group was given up (its workers failed for good)
GROUP_WORDS = 8

# witness entry words (SlotRing.open_witness): a writer that must know, after it died,
# whether its last event was committed announces each commit here
W_KEY = 0  # chosen by the writer, the same for its restarted process (0: entry unused)
W_PID = 1  # process announcing under this key now (0: none, or settled after its death)
W_INTENT = 2  # tag * slot_count + slot of the commit announced last (-1: none)
W_SETTLED = 3  # highest announced tag that a dead process under the key committed (-1: none)
WITNESS_WORDS = 4
MAX_WITNESSES = 64

MAX_FLUSHERS = 256
NAME_BYTES = 48
DATA_OFFSET = 64
CACHE_LINE = 64
PAGE = 4096


@dataclass(frozen=True)
class Layout:
    """Offsets for a buffer of ``slots`` slots, ``max_groups`` reader groups and ``data_bytes`` per event."""

    slots: int
    max_groups: int
    data_bytes: int

    @property
    def free(self) -> int:
        """Word index of the free stack (slot_count entries, top at H_FREE_TOP)."""
        return HEADER_WORDS

    @property
    def ring(self) -> int:
        """Word index of the commit ring: the slot of commit q sits at ``ring + q % slots``."""
        return self.free + self.slots

    @property
    def state(self) -> int:
        """Word index of the slot states: 0 free, -pid being written by pid, 1 committed."""
        return self.ring + self.slots

    @property
    def refs(self) -> int:
        """Word index of the per-slot count of reader groups that still have to finish it."""
        return self.state + self.slots

    @property
    def seq(self) -> int:
        """Word index of the commit sequence number of each committed slot."""
        return self.refs + self.slots

    @property
    def gen(self) -> int:
        """Word index of the per-slot generation (bumped on claim and commit; the observers' seqlock)."""
        return self.seq + self.slots

    @property
    def flushed(self) -> int:
        """Word index of the table of writer pids that have flushed (MAX_FLUSHERS entries)."""
        return self.gen + self.slots

    @property
    def groups(self) -> int:
        """Word index of the first group header (GROUP_WORDS words per group, see G_*)."""
        return self.flushed + MAX_FLUSHERS

    @property
    def holders(self) -> int:
        """Word index of the holder table: pid of group g's reader holding slot s at ``holders + g * slots + s``."""
        return self.groups + self.max_groups * GROUP_WORDS

    @property
    def redeliver(self) -> int:
        """Word index of the per-group stacks of slots handed back from dead readers."""
        return self.holders + self.max_groups * self.slots

    @property
    def kills(self) -> int:
        """Word index of the per-group, per-slot count of readers that died holding the slot."""
        return self.redeliver + self.max_groups * self.slots

    @property
    def witnesses(self) -> int:
        """Word index of the witness table (MAX_WITNESSES entries of WITNESS_WORDS words, see W_*)."""
        return self.kills + self.max_groups * self.slots

    @property
    def words(self) -> int:
        """Length of the control block in int64 words."""
        return self.witnesses + MAX_WITNESSES * WITNESS_WORDS

    @property
    def names_offset(self) -> int:
        """Byte offset of the group-name area."""
        return self.words * 8

    @property
    def slots_offset(self) -> int:
        """Byte offset of slot 0 (page aligned)."""
        end = self.names_offset + self.max_groups * NAME_BYTES
        return -(-end // PAGE) * PAGE

    @property
    def slot_stride(self) -> int:
        """Bytes from one slot to the next: metadata and data, rounded up to a cache line."""
        size = DATA_OFFSET + self.data_bytes
        return -(-size // CACHE_LINE) * CACHE_LINE

    @property
    def total_bytes(self) -> int:
        """Size of the whole segment in bytes: control block, group names, slots."""
        return self.slots_offset + self.slots * self.slot_stride
