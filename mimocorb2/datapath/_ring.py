"""Slot queues in shared memory: who may touch which slot, and when.

:class:`SlotRing` moves slot *indices* between writers and reader groups; the
bytes of the events never move. All bookkeeping lives in the control block
(:mod:`._layout`) and changes only under one process-shared lock, held for a
few microseconds and never across a blocking call.

Ownership of a slot (the invariants every method keeps):

* ``state[s] == 0``: slot ``s`` is free and listed exactly once in the free stack.
* ``state[s] == -pid``: writer ``pid`` owns ``s``; nobody else reads or writes it.
* ``state[s] == 1``: ``s`` holds committed event number ``seq[s]``, it appears in the
  commit ring at ``seq[s] % slots``, and ``refs[s]`` reader groups have not yet
  finished it. It returns to the free stack when ``refs[s]`` drops to 0.
* Reader group ``g`` is entitled to every sequence number from ``join[g]`` on; it
  has taken all numbers below ``tail[g]``. A slot taken by a reader of ``g`` is
  marked ``holders[g][s] = pid`` until that reader finishes it. Slots of readers
  that died go to ``g``'s redeliver stack and are taken before new events.

The commit ring needs only ``slots`` entries: entry ``q % slots`` can be
overwritten only by commit ``q + slots``, which needs a free slot, and while some
group has not taken ``q`` its slot and the slots of ``q+1 .. q+slots-1`` are all
in use.

Waiting: a writer with no free slot, or a reader with nothing to take,
registers in a ``waiting`` counter and sleeps on a semaphore with a timeout.
Whoever frees a slot or commits an event releases the semaphore once per
registered sleeper it consumes. Every wait is re-checked under the lock, so a
spurious or late wake-up costs a loop, never correctness; the timeout bounds the
damage of a sleeper that died registered.

End of stream: the buffer ends when ``writers`` distinct processes have
flushed (or :meth:`shutdown` forces it). A reader sees the end only when the
buffer has ended *and* its group has nothing left: no pending sequence number,
nothing to redeliver, no slot held by another reader of the group (it might
die and need redelivery) and no slot being written.

Poison events: ``kills[g][s]`` counts the readers of group ``g`` that died
holding slot ``s`` since ``g`` took it from the commit ring (a fresh take resets
it; a redelivery does not). :meth:`reclaim` redelivers a slot whose count is
below ``QUARANTINE_AFTER``; at ``QUARANTINE_AFTER`` it sets the event aside
instead: a copy of the slot's bytes goes back to the caller, the group counts
as having finished it (without counting it read) and ``H_QUARANTINED`` grows
by one. Every event a group is entitled to is therefore read, set aside, or
still pending; never handed out forever. (A reclaim done by a process that
took a dead holder's lock over redelivers only; the next death sets it aside.)

Witnesses (exactly-once writers): a writer that must know after its death
whether its last event was committed (an importer whose source hands the event
again) takes a witness entry under a key of its own (:meth:`open_witness`) and,
with the slot filled and before committing it, announces a tag for that commit
(:meth:`announce`: one store of ``tag * slots + slot``, no lock). Invariants:

* A writer announces only a slot it holds (``state[slot] == -pid``), with tags
  that grow. While it holds the slot the commit has not happened; the slot
  leaves ``-pid`` only by that commit, or by :meth:`abandon`, which withdraws
  the announcement under the lock (intent -1).
* When the writer is dead, its entry is *settled* under the lock, before any of
  its slots is freed: if ``state[slot] != -pid`` the announced commit happened
  (the slot is committed, already read and freed, or reused) and ``settled``
  becomes its tag; otherwise ``settled`` keeps its older value. A commit the
  dead writer left half done inside the critical section is first finished
  or undone by the rebuild (it finishes exactly those that set ``state = 1``),
  so the verdict is the commit's own outcome. :meth:`reclaim`, a lock
  takeover and :meth:`open_witness` / :meth:`witnessed` (whoever comes first)
  settle; settling clears the intent, so it happens once per death.
* Hence a settled tag always names a completed commit, and the last announced
  commit of a dead writer is counted in it unless the writer had already
  claimed that slot again (so it had moved past the commit and could record
  it itself): a writer that records each commit right after it and reads
  ``max(its record, settled)`` after a restart knows exactly what it committed.

Crash safety: a process killed inside the critical section leaves the lock
taken and ``lock_owner`` set. :meth:`reclaim` notices, takes the lock over and
rebuilds every derived quantity (free stack, reference counts, held counts)
from the slot states and group positions before handing slots back.
"""

from __future__ import annotations

import os
import time
from typing import Any

_yield = os.sched_yield
_monotonic = time.monotonic

from . import heartbeat
from ._layout import (
    G_DETACHED,
    G_HELD,
    G_JOIN,
    G_READS,
    G_RTOP,
    G_TAIL,
    G_WAITING,
    GROUP_WORDS,
    H_ABANDONED,
    H_ATTACHED,
    H_DEADTIME,
    H_ENDED,
    H_EVENT_LIMIT,
    H_FLUSHED_PIDS,
    H_FLUSHES,
    H_FREE_TOP,
    H_GROUPS,
    H_HEAD,
    H_LATEST_SLOT,
    H_LOCK_OWNER,
    H_LOST,
    H_MAGIC,
    H_MAX_GROUPS,
    H_PAUSED,
    H_PAUSED_COUNT,
    H_QUARANTINED,
    H_REDELIVERED,
    H_REJECTED,
    H_SLOTS,
    H_WAITING_WRITERS,
    H_WRITERS,
    H_WRITING,
    MAGIC,
    MAX_FLUSHERS,
    MAX_WITNESSES,
    NAME_BYTES,
    W_INTENT,
    W_KEY,
    W_PID,
    W_SETTLED,
    WITNESS_WORDS,
    Layout,
)
from ._shm import pid_alive

__all__ = ["SlotRing", "END_OF_STREAM", "NOTHING_YET", "NO_TAG", "PAUSED", "REJECTED"]

END_OF_STREAM = -1  # take() result: nothing more will come for this group
NOTHING_YET = -2  # take(wait=False) result: nothing to take right now
PAUSED = -1  # claim() result: paused, write into a private scratch slot (counted on commit)
REJECTED = -2  # claim() result: the buffer has ended, the write is refused (counted now)
NO_TAG = -1  # witness result: no announced commit is known to have been completed

WAIT_SLICE = 0.2  # seconds a sleeper waits before re-checking (and beating)
LOCK_SPIN = 50  # sched_yield rounds spent trying a busy lock before blocking on it
DEAD_OWNER_CHECK = 0.5  # seconds blocked on the lock between checks that its holder still lives
SPIN_MAX = 64  # sched_yield rounds a waiter may spin before sleeping on a semaphore
QUICK_WAKE = 200e-6  # a sleep shorter than this says spinning would have paid off
STUCK_LOCK_SECONDS = 2.0  # a lock held this long with no owner recorded is dead
QUARANTINE_AFTER = 2  # readers of one group killed holding an event before it is set aside

_pid = os.getpid()
_WRITER, _READER = 0, 1


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


class SlotRing:
    """The shared bookkeeping of one buffer (see the module docstring)."""

    def __init__(self, mm: Any, layout: Layout, lock: Any, space: Any, group_sems: list[Any], repair: Any) -> None:
        self.layout = layout
        self.lock = lock
        self.repair = repair  # held by whoever takes the lock over from a dead process
        self.space = space
        self.group_sems = group_sems
        self.n = layout.slots
        self.mm = mm
        self.cb = memoryview(mm)[: layout.words * 8].cast("q")
        self.cbd = memoryview(mm)[: layout.words * 8].cast("d")
        self.names = memoryview(mm)[layout.names_offset : layout.names_offset + layout.max_groups * NAME_BYTES]
        L = layout
        self._free, self._ring, self._state = L.free, L.ring, L.state
        self._refs, self._seq, self._gen = L.refs, L.seq, L.gen
        self._groups, self._holders, self._redeliver, self._kills = L.groups, L.holders, L.redeliver, L.kills
        self._witnesses = L.witnesses
        # adaptive spin budgets (process-local): grow while data arrives within a
        # spin, shrink when spinning did not help, so idle waiters sleep at once
        self._spin = [8, 8]  # indexed by _WRITER / _READER
        self._last_reclaim = {"lost": 0, "redelivered": 0, "quarantined": 0}

    # ---------------------------------------------------------------- setup
    def initialize(self, writers: int) -> None:
        """Fill a fresh control block: every slot free, no groups (creator only)."""
        cb, n = self.cb, self.n
        cb[H_MAGIC] = MAGIC
        cb[H_SLOTS] = n
        cb[H_WRITERS] = writers
        cb[H_MAX_GROUPS] = self.layout.max_groups
        cb[H_LATEST_SLOT] = -1
        for s in range(n):
            cb[self._free + s] = n - 1 - s  # slot 0 is handed out first
        cb[H_FREE_TOP] = n

    def release_views(self) -> None:
        """Drop the memoryviews so the mapping can be closed."""
        for view in (self.cb, self.cbd, self.names):
            view.release()

    def _lock(self) -> None:
        if not self.lock.acquire(False):
            self._acquire_contended()
        self.cb[H_LOCK_OWNER] = _pid

    def _acquire_contended(self) -> None:
        """The lock is busy: its holder needs a microsecond, so spin briefly before sleeping.

        Sleeping in sem_wait costs a futex round trip and a context switch on
        both sides, far more than the critical section itself.
        """
        lock = self.lock
        for _ in range(LOCK_SPIN):
            if lock.acquire(False):
                return
            _yield()
        while not lock.acquire(True, DEAD_OWNER_CHECK):
            if self._take_over_from_dead_owner():
                return

    def _take_over_from_dead_owner(self, known_dead: int = 0) -> bool:
        """If the lock's holder died inside the critical section, take the lock over.

        The taker rebuilds the bookkeeping and hands back the dead process's
        slots, then holds the lock as if it had acquired it. The ``repair``
        semaphore makes sure only one process does this for one dead holder.
        """
        cb = self.cb
        owner = cb[H_LOCK_OWNER]
        if not owner or owner == _pid or (owner != known_dead and pid_alive(owner)):
            return False
        if not self.repair.acquire(False):
            return False
        try:
            if cb[H_LOCK_OWNER] != owner:  # somebody else repaired it meanwhile
                return False
            cb[H_LOCK_OWNER] = _pid
            self._rebuild_locked()
            self._reclaim_locked(owner, set_aside=False)  # copies could not reach the supervisor
            return True
        finally:
            self.repair.release()

    def _unlock(self) -> None:
        self.cb[H_LOCK_OWNER] = 0
        self.lock.release()

    # ---------------------------------------------------------------- groups
    def group_names(self) -> list[str]:
        """Names of the reader groups joined so far, by index."""
        return [self._name_at(g) for g in range(self.cb[H_GROUPS])]

    def _name_at(self, g: int) -> str:
        raw = bytes(self.names[g * NAME_BYTES : (g + 1) * NAME_BYTES])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def join_group(self, name: str) -> int:
        """Index of reader group ``name``, creating it if needed.

        A new group is entitled to events committed from now on.
        """
        encoded = name.encode("utf-8")[:NAME_BYTES]
        cb = self.cb
        self._lock()
        try:
            count = cb[H_GROUPS]
            for g in range(count):
                if self._name_at(g).encode("utf-8") == encoded:
                    return g
            if count >= self.layout.max_groups:
                raise ValueError(f"too many reader groups (at most {self.layout.max_groups})")
            base = self._groups + count * GROUP_WORDS
            for w in range(GROUP_WORDS):
                cb[base + w] = 0
            cb[base + G_TAIL] = cb[H_HEAD]
            cb[base + G_JOIN] = cb[H_HEAD]
            self.names[count * NAME_BYTES : count * NAME_BYTES + len(encoded)] = encoded
            cb[H_GROUPS] = count + 1
            cb[H_ATTACHED] += 1
            return count
        finally:
            self._unlock()

    def _wait(self, who: int, may_go: Any, waiting_word: int, semaphore: Any) -> None:
        """Wait until ``may_go()`` is worth re-checking under the lock.

        First spin (a budget per role that doubles when spinning pays off and
        halves when it does not), then register in ``waiting_word`` and sleep
        on ``semaphore`` for at most WAIT_SLICE. A quick wake-up says the
        stream is fast again, so the spin budget grows back.
        """
        spin = self._spin[who]
        if spin:
            for _ in range(spin):
                _yield()
                if may_go():
                    self._spin[who] = min(spin * 2, SPIN_MAX)
                    return
            self._spin[who] = spin >> 1
        self._lock()
        if may_go():
            self._unlock()
            return
        self.cb[waiting_word] += 1
        self._unlock()
        slept = _monotonic()
        if not semaphore.acquire(True, WAIT_SLICE):
            self._withdraw(waiting_word)
        elif _monotonic() - slept < QUICK_WAKE:
            self._spin[who] = max(self._spin[who] * 2, 4)
        heartbeat.beat()

    def _writer_may_go(self) -> bool:
        cb = self.cb
        return bool(cb[H_FREE_TOP] or cb[H_PAUSED] or cb[H_ENDED])

    def _reader_may_go(self, gbase: int) -> bool:
        cb = self.cb
        if cb[H_HEAD] > cb[gbase + G_TAIL] or cb[gbase + G_RTOP] or cb[gbase + G_DETACHED]:
            return True
        return bool(cb[H_ENDED] and cb[gbase + G_HELD] == 0 and cb[H_WRITING] == 0)

    def detach_group(self, name: str) -> None:
        """Give up reader group ``name``: release what it has not read, stop keeping events for it.

        Call it only when no live process reads for the group; slots its dead
        readers held must have been reclaimed first.
        """
        cb, n = self.cb, self.n
        self._lock()
        try:
            names = [self._name_at(g) for g in range(cb[H_GROUPS])]
            if name not in names:
                return
            g = names.index(name)
            gbase = self._groups + g * GROUP_WORDS
            if cb[gbase + G_DETACHED]:
                return
            cb[gbase + G_DETACHED] = 1
            cb[H_ATTACHED] -= 1
            released = [cb[self._redeliver + g * n + i] for i in range(cb[gbase + G_RTOP])]
            released += [cb[self._ring + q % n] for q in range(cb[gbase + G_TAIL], cb[H_HEAD])]
            released += [s for s in range(n) if cb[self._holders + g * n + s] != 0]
            for s in range(n):
                cb[self._holders + g * n + s] = 0
            cb[gbase + G_RTOP] = 0
            cb[gbase + G_HELD] = 0
            cb[gbase + G_TAIL] = cb[H_HEAD]
            for s in released:
                refs = cb[self._refs + s] - 1
                cb[self._refs + s] = refs
                if refs == 0:
                    self._free_locked(s)
            self._wake_group_locked(g)
        finally:
            self._unlock()

    # ---------------------------------------------------------------- writers
    def claim(self) -> int:
        """Take a free slot for writing, waiting for one; PAUSED or REJECTED otherwise."""
        cb, lock = self.cb, self.lock
        while True:
            if cb[H_PAUSED]:
                heartbeat.beat()  # a discarded write is still progress
                return PAUSED
            if not lock.acquire(False):
                self._acquire_contended()
            cb[H_LOCK_OWNER] = _pid
            if cb[H_ENDED]:
                cb[H_REJECTED] += 1
                cb[H_LOCK_OWNER] = 0
                lock.release()
                return REJECTED
            top = cb[H_FREE_TOP]
            limit = cb[H_EVENT_LIMIT]
            if limit and cb[H_HEAD] + cb[H_WRITING] >= limit:
                self._end_locked()
                cb[H_REJECTED] += 1
                cb[H_LOCK_OWNER] = 0
                lock.release()
                return REJECTED
            if top > 0:
                slot = cb[self._free + top - 1]
                cb[self._state + slot] = -_pid
                cb[H_FREE_TOP] = top - 1
                cb[H_WRITING] += 1
                cb[H_LOCK_OWNER] = 0
                lock.release()
                return slot
            cb[H_LOCK_OWNER] = 0
            lock.release()
            self._wait(_WRITER, self._writer_may_go, H_WAITING_WRITERS, self.space)

    def commit(self, slot: int, deadtime: float) -> None:
        """Publish the event written into ``slot`` to every reader group."""
        cb, lock, n = self.cb, self.lock, self.n
        if not lock.acquire(False):
            self._acquire_contended()
        cb[H_LOCK_OWNER] = _pid
        seq = cb[H_HEAD]
        cb[self._ring + seq % n] = slot
        cb[self._seq + slot] = seq
        groups = cb[H_GROUPS]
        refs = cb[H_ATTACHED]
        cb[self._refs + slot] = refs
        cb[self._state + slot] = 1
        cb[H_HEAD] = seq + 1
        cb[H_WRITING] -= 1
        self.cbd[H_DEADTIME] += deadtime
        cb[H_LATEST_SLOT] = slot
        if refs == 0:
            self._free_locked(slot)
        else:
            base = self._groups + G_WAITING
            for g in range(groups):
                if cb[base] > 0:
                    cb[base] -= 1
                    self.group_sems[g].release()
                base += GROUP_WORDS
        if cb[H_ENDED] and cb[H_WRITING] == 0:
            self._wake_all_readers_locked()
        cb[H_LOCK_OWNER] = 0
        lock.release()
        heartbeat.beat()

    def abandon(self, slot: int) -> None:
        """Give back a claimed slot without publishing it (writer raised)."""
        cb = self.cb
        self._lock()
        self._withdraw_announce_locked(slot)
        cb[self._gen + slot] += 1
        cb[H_WRITING] -= 1
        cb[H_ABANDONED] += 1
        self._free_locked(slot)
        if cb[H_ENDED] and cb[H_WRITING] == 0:
            self._wake_all_readers_locked()
        self._unlock()

    def count_paused_write(self) -> None:
        """Count an event written while paused (it went to the scratch slot)."""
        self._lock()
        self.cb[H_PAUSED_COUNT] += 1
        self._unlock()

    def flush(self, pid: int | None = None) -> None:
        """Count one writer process's end of stream; end the buffer when all have."""
        pid = _pid if pid is None else pid
        cb = self.cb
        self._lock()
        try:
            used = cb[H_FLUSHED_PIDS]
            table = self.layout.flushed
            for i in range(min(used, MAX_FLUSHERS)):
                if cb[table + i] == pid:
                    return
            if used < MAX_FLUSHERS:
                cb[table + used] = pid
            cb[H_FLUSHED_PIDS] = used + 1
            cb[H_FLUSHES] += 1
            if cb[H_FLUSHES] >= cb[H_WRITERS]:
                self._end_locked()
        finally:
            self._unlock()

    def shutdown(self) -> None:
        """End the buffer now, whatever the writers do (stop, run limits)."""
        self._lock()
        self._end_locked()
        self._unlock()

    def set_event_limit(self, limit: int | None) -> None:
        """End the buffer by itself once ``limit`` events were committed (None: no limit).

        Writes beyond the limit are rejected, so the buffer takes exactly
        ``limit`` events (fewer if it ends earlier).
        """
        self._lock()
        self.cb[H_EVENT_LIMIT] = int(limit or 0)
        if limit and self.cb[H_HEAD] >= limit:
            self._end_locked()
        self._unlock()

    def set_writers(self, writers: int) -> None:
        """Change how many writers must flush before the buffer ends."""
        self._lock()
        self.cb[H_WRITERS] = writers
        if self.cb[H_FLUSHES] >= writers:
            self._end_locked()
        self._unlock()

    # ---------------------------------------------------------------- readers
    def take(self, g: int, wait: bool = True) -> int:
        """Take the next slot for reader group ``g``, waiting; END_OF_STREAM at the end.

        With ``wait=False`` it returns NOTHING_YET at once instead of waiting.
        """
        cb, lock, n = self.cb, self.lock, self.n
        gbase = self._groups + g * GROUP_WORDS
        hbase = self._holders + g * n
        while True:
            if not lock.acquire(False):
                self._acquire_contended()
            cb[H_LOCK_OWNER] = _pid
            rtop = cb[gbase + G_RTOP]
            if rtop > 0:
                slot = cb[self._redeliver + g * n + rtop - 1]
                cb[hbase + slot] = _pid
                cb[gbase + G_RTOP] = rtop - 1
                cb[gbase + G_HELD] += 1
                cb[H_LOCK_OWNER] = 0
                lock.release()
                heartbeat.beat()
                return slot
            tail = cb[gbase + G_TAIL]
            if tail < cb[H_HEAD]:
                slot = cb[self._ring + tail % n]
                cb[hbase + slot] = _pid
                cb[self._kills + g * n + slot] = 0  # a fresh event: no reader died on it yet
                cb[gbase + G_TAIL] = tail + 1
                cb[gbase + G_HELD] += 1
                cb[H_LOCK_OWNER] = 0
                lock.release()
                heartbeat.beat()
                return slot
            if (cb[H_ENDED] and cb[gbase + G_HELD] == 0 and cb[H_WRITING] == 0) or cb[gbase + G_DETACHED]:
                cb[H_LOCK_OWNER] = 0
                lock.release()
                return END_OF_STREAM
            cb[H_LOCK_OWNER] = 0
            lock.release()
            if not wait:
                return NOTHING_YET
            self._wait(_READER, lambda: self._reader_may_go(gbase), gbase + G_WAITING, self.group_sems[g])

    def finish(self, g: int, slot: int) -> None:
        """Reader of group ``g`` is done with ``slot``; free it when every group is."""
        cb, lock = self.cb, self.lock
        gbase = self._groups + g * GROUP_WORDS
        if not lock.acquire(False):
            self._acquire_contended()
        cb[H_LOCK_OWNER] = _pid
        if cb[gbase + G_DETACHED]:  # its slots were already released by detach_group
            cb[H_LOCK_OWNER] = 0
            lock.release()
            return
        cb[self._holders + g * self.n + slot] = 0
        cb[gbase + G_HELD] -= 1
        cb[gbase + G_READS] += 1
        refs = cb[self._refs + slot] - 1
        cb[self._refs + slot] = refs
        if refs == 0:
            self._free_locked(slot)
        if cb[H_ENDED] and cb[gbase + G_HELD] == 0:
            self._wake_group_locked(g)
        cb[H_LOCK_OWNER] = 0
        lock.release()

    # ---------------------------------------------------------------- witnesses
    def open_witness(self, key: int) -> tuple[int, int]:
        """Take witness entry ``key`` (> 0) for this process: ``(entry, settled tag)``.

        The entry keeps ``key`` for the buffer's life; a process that died under
        it is settled first. The settled tag is the highest announced tag that
        a dead process under ``key`` committed (NO_TAG: none); it stays readable
        through :meth:`witnessed`. A key held by a live process, or a full
        table, is refused (RuntimeError).
        """
        if key <= 0:
            raise ValueError(f"witness key must be > 0, got {key}")
        cb = self.cb
        self._lock()
        try:
            base = self._witness_locked(key)
            if base is None:
                base = self._witness_locked(0)
                if base is None:
                    raise RuntimeError(f"more than {MAX_WITNESSES} witnessed writers in one buffer")
                cb[base + W_KEY] = key
                cb[base + W_INTENT] = -1
                cb[base + W_SETTLED] = NO_TAG
            owner = cb[base + W_PID]
            if owner and owner != _pid:
                if pid_alive(owner):
                    raise RuntimeError(f"witness {key} is taken by process {owner}, which is alive")
                self._settle_witness_locked(base)
            cb[base + W_INTENT] = -1
            cb[base + W_PID] = _pid
            return (base - self._witnesses) // WITNESS_WORDS, cb[base + W_SETTLED]
        finally:
            self._unlock()

    def announce(self, entry: int, tag: int, slot: int) -> None:
        """Witness ``entry`` is about to commit ``slot`` (held, filled) as commit ``tag`` (>= 0, growing).

        One store without the lock: the commit that follows orders it (its
        lock acquisition is a full barrier), and a process killed at any point
        has either stored it whole or not at all.
        """
        self.cb[self._witnesses + entry * WITNESS_WORDS + W_INTENT] = tag * self.n + slot

    def witnessed(self, key: int) -> int:
        """The highest announced tag that a dead process under ``key`` committed (NO_TAG: none).

        A dead process not yet settled is settled now.
        """
        cb = self.cb
        self._lock()
        try:
            base = self._witness_locked(key) if key > 0 else None
            if base is None:
                return NO_TAG
            owner = cb[base + W_PID]
            if owner and owner != _pid and not pid_alive(owner):
                self._settle_witness_locked(base)
            return cb[base + W_SETTLED]
        finally:
            self._unlock()

    def _witness_locked(self, key: int) -> int | None:
        """Control-block index of the witness entry with ``key`` (0: the first unused one)."""
        cb, base = self.cb, self._witnesses
        for _ in range(MAX_WITNESSES):
            if cb[base + W_KEY] == key:
                return base
            base += WITNESS_WORDS
        return None

    def _settle_witness_locked(self, base: int) -> None:
        """Record whether the dead process of entry ``base`` completed its announced commit."""
        cb = self.cb
        intent, pid = cb[base + W_INTENT], cb[base + W_PID]
        settled = NO_TAG
        if intent >= 0:
            tag, slot = divmod(intent, self.n)
            if cb[self._state + slot] != -pid:
                settled = tag
        if settled != NO_TAG:  # else the older verdict stands: tags grow, readers take the maximum
            cb[base + W_SETTLED] = settled
        cb[base + W_INTENT] = -1
        cb[base + W_PID] = 0

    def _withdraw_announce_locked(self, slot: int) -> None:
        """This process abandons ``slot``: an announced commit of it will not happen."""
        cb, base, n = self.cb, self._witnesses, self.n
        for _ in range(MAX_WITNESSES):
            intent = cb[base + W_INTENT]
            if cb[base + W_PID] == _pid and intent >= 0 and intent % n == slot:
                cb[base + W_INTENT] = -1
            base += WITNESS_WORDS

    def _settle_witnesses_of_locked(self, pid: int) -> None:
        cb, base = self.cb, self._witnesses
        for _ in range(MAX_WITNESSES):
            if cb[base + W_KEY] and cb[base + W_PID] == pid:
                self._settle_witness_locked(base)
            base += WITNESS_WORDS

    # ---------------------------------------------------------------- observers
    def latest(self) -> tuple[int, int, int, bool]:
        """``(seq, slot, gen, ended)`` of the most recent commit (seq -1: none yet)."""
        cb = self.cb
        self._lock()
        seq, slot = cb[H_HEAD] - 1, cb[H_LATEST_SLOT]  # every commit advances the head by one
        gen = cb[self._gen + slot] if slot >= 0 else 0
        ended = bool(cb[H_ENDED])
        self._unlock()
        return seq, slot, gen, ended

    def still_holds(self, slot: int, seq: int, gen: int) -> bool:
        """True if ``slot`` still holds commit ``seq`` unchanged since :meth:`latest` (observers' seqlock).

        A slot being rewritten is held by a writer (negative state); one
        rewritten and committed again has another sequence number; one
        abandoned after a partial write has another generation. A slot that was
        freed but not reused still holds the event intact. Read under the lock
        (a memory barrier).
        """
        cb = self.cb
        self._lock()
        same = cb[self._state + slot] >= 0 and cb[self._seq + slot] == seq and cb[self._gen + slot] == gen
        self._unlock()
        return same

    # ---------------------------------------------------------------- state
    @property
    def ended(self) -> bool:
        """True once the buffer has ended (all writers flushed or shut down)."""
        return bool(self.cb[H_ENDED])

    @property
    def paused(self) -> bool:
        """True while writes are discarded."""
        return bool(self.cb[H_PAUSED])

    def set_paused(self, paused: bool) -> None:
        """Pause (discard writes) or resume."""
        self.cb[H_PAUSED] = 1 if paused else 0

    def snapshot(self) -> dict[str, Any]:
        """Counters for statistics, read consistently under the lock."""
        cb = self.cb
        self._lock()
        try:
            groups = {}
            head = cb[H_HEAD]
            pending = 0
            for g in range(cb[H_GROUPS]):
                gbase = self._groups + g * GROUP_WORDS
                if cb[gbase + G_DETACHED]:
                    continue
                waiting = head - cb[gbase + G_TAIL] + cb[gbase + G_RTOP]
                pending = max(pending, waiting)
                groups[self._name_at(g)] = {"read": cb[gbase + G_READS], "pending": waiting, "held": cb[gbase + G_HELD]}
            return {
                "head": head,
                "events": cb[H_HEAD],  # every commit is one event
                "free": cb[H_FREE_TOP],
                "writing": cb[H_WRITING],
                "paused": bool(cb[H_PAUSED]),
                "paused_count": cb[H_PAUSED_COUNT],
                "flushes": cb[H_FLUSHES],
                "writers": cb[H_WRITERS],
                "ended": bool(cb[H_ENDED]),
                "lost": cb[H_LOST],
                "redelivered": cb[H_REDELIVERED],
                "quarantined": cb[H_QUARANTINED],
                "abandoned": cb[H_ABANDONED],
                "rejected": cb[H_REJECTED],
                "deadtime": self.cbd[H_DEADTIME],
                "pending": pending,
                "groups": groups,
            }
        finally:
            self._unlock()

    # ---------------------------------------------------------------- recovery
    def reclaim(self, pid: int) -> dict[str, Any]:
        """Hand back every slot held by dead process ``pid``.

        Write-held slots return to the free stack (counted as lost); read-held
        slots go to their group's redeliver stack (counted as redelivered),
        unless ``QUARANTINE_AFTER`` readers of the group died holding that event:
        then it is set aside (counted as quarantined) and ``set_aside`` lists
        ``(group name, bytes of the slot)`` for each. Must only be called once
        ``pid`` is known to be dead.
        """
        repaired = self._lock_for_recovery(pid)
        try:
            if repaired:  # the takeover already handed back pid's slots
                return {"lost": 0, "redelivered": 0, "quarantined": 0, "set_aside": [], "repaired": 1,
                        **self._last_reclaim}
            return {**self._reclaim_locked(pid), "repaired": 0}
        finally:
            self._unlock()

    def _reclaim_locked(self, pid: int, set_aside: bool = True) -> dict[str, Any]:
        cb, n = self.cb, self.n
        lost = redelivered = 0
        aside: list[tuple[str, bytes]] = []
        self._settle_witnesses_of_locked(pid)  # before its slots are freed: they are the evidence
        for s in range(n):
            if cb[self._state + s] == -pid:
                cb[H_WRITING] -= 1
                self._free_locked(s)
                lost += 1
        for g in range(cb[H_GROUPS]):
            gbase = self._groups + g * GROUP_WORDS
            for s in range(n):
                if cb[self._holders + g * n + s] != pid:
                    continue
                cb[self._holders + g * n + s] = 0
                cb[gbase + G_HELD] -= 1
                kills = cb[self._kills + g * n + s] + 1
                cb[self._kills + g * n + s] = kills
                if set_aside and kills >= QUARANTINE_AFTER:
                    aside.append((self._name_at(g), self._slot_bytes(s)))
                    self._set_aside_locked(g, s)
                else:
                    self._push_redeliver_locked(g, s)
                    redelivered += 1
        cb[H_LOST] += lost
        cb[H_REDELIVERED] += redelivered
        cb[H_QUARANTINED] += len(aside)
        if cb[H_ENDED] or aside:
            self._wake_all_readers_locked()
        self._last_reclaim = {"lost": lost, "redelivered": redelivered, "quarantined": len(aside)}
        return {**self._last_reclaim, "set_aside": aside}

    def _slot_bytes(self, slot: int) -> bytes:
        """A copy of slot ``slot`` (metadata and data) as it is in the buffer."""
        start = self.layout.slots_offset + slot * self.layout.slot_stride
        return bytes(self.mm[start : start + self.layout.slot_stride])

    def _set_aside_locked(self, g: int, slot: int) -> None:
        """Group ``g`` is done with ``slot`` without reading it (a poison event)."""
        cb = self.cb
        refs = cb[self._refs + slot] - 1
        cb[self._refs + slot] = refs
        if refs == 0:
            self._free_locked(slot)

    def _lock_for_recovery(self, dead_pid: int) -> bool:
        """Take the lock; return True if it was taken over from dead ``dead_pid``."""
        stuck_since = time.monotonic()
        while True:
            if self.lock.acquire(True, 0.25):
                self.cb[H_LOCK_OWNER] = _pid
                return False
            owner = self.cb[H_LOCK_OWNER]
            if owner and self._take_over_from_dead_owner(known_dead=dead_pid):
                return owner == dead_pid
            if not owner and time.monotonic() - stuck_since > STUCK_LOCK_SECONDS:
                # died between acquiring and recording itself: nobody else can know
                if self.repair.acquire(False):
                    try:
                        if not self.cb[H_LOCK_OWNER]:
                            self.cb[H_LOCK_OWNER] = _pid
                            self._rebuild_locked()
                            return False
                    finally:
                        self.repair.release()

    def _rebuild_locked(self) -> None:
        """Recompute everything derived from slot states and group positions.

        Used after a process died inside the critical section, when any single
        step of an update may be missing.
        """
        cb, n = self.cb, self.n
        head = cb[H_HEAD]
        # a commit that set state=1 but died before publishing the head
        for s in range(n):
            if cb[self._state + s] == 1 and cb[self._seq + s] == head and cb[self._ring + head % n] == s:
                head += 1
                cb[H_HEAD] = head
                break
        if head > 0:  # the commit may have died between the head and the latest slot
            cb[H_LATEST_SLOT] = cb[self._ring + (head - 1) % n]
        groups = cb[H_GROUPS]
        pending_redeliver: list[set[int]] = []
        for g in range(groups):
            gbase = self._groups + g * GROUP_WORDS
            hbase = self._holders + g * n
            redeliver = {cb[self._redeliver + g * n + i] for i in range(cb[gbase + G_RTOP])}
            tail = cb[gbase + G_TAIL]
            shadowed = set(redeliver)
            if tail < head:
                shadowed.add(cb[self._ring + tail % n])
            for s in shadowed:  # a take() that died before moving its cursor
                cb[hbase + s] = 0
            cb[gbase + G_HELD] = sum(1 for s in range(n) if cb[hbase + s] != 0)
            pending_redeliver.append(redeliver)
        writing = 0
        for s in range(n):
            state = cb[self._state + s]
            if state < 0:
                writing += 1
            elif state == 1:
                q = cb[self._seq + s]
                refs = 0
                for g in range(groups):
                    gbase = self._groups + g * GROUP_WORDS
                    if cb[gbase + G_DETACHED]:
                        continue
                    if (
                        (cb[gbase + G_JOIN] <= q < head and q >= cb[gbase + G_TAIL])
                        or cb[self._holders + g * n + s] != 0
                        or s in pending_redeliver[g]
                    ):
                        refs += 1
                cb[self._refs + s] = refs
                if refs == 0:
                    cb[self._state + s] = 0
        cb[H_WRITING] = writing
        top = 0
        for s in range(n):
            if cb[self._state + s] == 0:
                cb[self._free + top] = s
                top += 1
        cb[H_FREE_TOP] = top
        for _ in range(max(cb[H_WAITING_WRITERS], 1)):
            self.space.release()
        cb[H_WAITING_WRITERS] = 0
        for g in range(groups):
            self._wake_group_locked(g)

    # ---------------------------------------------------------------- helpers (lock held)
    def _free_locked(self, slot: int) -> None:
        cb = self.cb
        cb[self._state + slot] = 0
        top = cb[H_FREE_TOP]
        cb[self._free + top] = slot
        cb[H_FREE_TOP] = top + 1
        if cb[H_WAITING_WRITERS] > 0:
            cb[H_WAITING_WRITERS] -= 1
            self.space.release()

    def _push_redeliver_locked(self, g: int, slot: int) -> None:
        cb = self.cb
        gbase = self._groups + g * GROUP_WORDS
        top = cb[gbase + G_RTOP]
        cb[self._redeliver + g * self.n + top] = slot
        cb[gbase + G_RTOP] = top + 1
        if cb[gbase + G_WAITING] > 0:
            cb[gbase + G_WAITING] -= 1
            self.group_sems[g].release()

    def _wake_group_locked(self, g: int) -> None:
        cb = self.cb
        w = self._groups + g * GROUP_WORDS + G_WAITING
        for _ in range(cb[w]):
            self.group_sems[g].release()
        cb[w] = 0

    def _wake_all_readers_locked(self) -> None:
        for g in range(self.cb[H_GROUPS]):
            self._wake_group_locked(g)

    def _end_locked(self) -> None:
        if not self.cb[H_ENDED]:
            self.cb[H_ENDED] = 1
        self._wake_all_readers_locked()
        # writers waiting for space must learn that the buffer ended
        for _ in range(self.cb[H_WAITING_WRITERS]):
            self.space.release()
        self.cb[H_WAITING_WRITERS] = 0

    def _withdraw(self, word: int) -> None:
        """A sleeper timed out: take its registration back if still counted."""
        cb = self.cb
        self._lock()
        if cb[word] > 0:
            cb[word] -= 1
        self._unlock()
