"""Per-process heartbeats in shared memory.

A :class:`HeartbeatTable` is one segment with a row per worker process:
``(pid, last beat in CLOCK_MONOTONIC ns, slot moves, stage, counter of the
event held, held since in CLOCK_MONOTONIC ns)``. The supervisor
creates the table and gives each process its row; inside the process
:func:`attach` binds that row and :func:`beat` stamps it. The buffers call
:func:`beat` whenever they move a slot and on every timeout while waiting for
one, so a quiet heartbeat means the process is stuck outside the data path
(usually in user code), not that the stream is idle.

Readers also record which event they hold (:func:`holding` when a read slot is
taken, :func:`released` when it is given back), so the supervisor can say
"stuck on event N for 33 s" whatever the user code does about beats.
Invariant: ``held since == 0`` exactly when the process holds no read slot;
nested holds (a process reading several buffers) keep the oldest.

The process also says how far it got (:class:`Stage`, :func:`enter_stage`):
STARTING (the supervisor's reset at spawn), LOADING (logging is set up and
the process imports its file / loads its function) and RUNNING (it called
its function). The supervisor reads it to show "importing funcs.py for 12 s",
to bound that stage, and to tell a process that dies before its function (a
setup failure) from one that crashes while running.

Only the owning process writes its row; the supervisor only reads. A torn read
of one 8-byte word cannot happen on the platforms we support.

What "alive" means. A process is alive while it makes progress on the data
path (the buffers beat) or while it is away from the data path *on purpose*,
holding no event:

* :func:`working` marks bounded work that is not data-path progress but will
  end (rendering a plot, rewriting result files, a plot's pause): a helper
  thread beats every :data:`HELPER_INTERVAL` seconds while it lasts.
* :func:`waiting` marks stretches where the process holds no event and waits
  for the world (an importer's source, an observer between events, an
  is-alive loop): the helper thread beats only while the main thread is not
  computing (it used less than :data:`IDLE_CPU_SHARE` of the time since the
  helper's last look: it sleeps or is blocked). An observer that spins
  forever therefore still goes quiet.

A process that just started (importing its code, opening a plot window,
connecting to a device) gets up to :data:`START_GRACE` seconds: the helper
beats for it until its first own beat (a slot moved, a wait, a stretch above
ended); a start-up that takes longer goes quiet.

User code that runs while the process holds an event (a filter's or
processor's ufunc, an exporter's loop body) is never covered: a ufunc that
hangs there, sleeping or spinning, goes quiet and ``stall_timeout`` catches it.
Outside a supervised process (no row attached) both are no-ops.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ._shm import Segment

__all__ = ["HeartbeatTable", "HeartbeatRow", "Stage", "attach", "detach", "beat", "waiting", "working",
           "begin_waiting", "end_waiting", "holding", "released", "enter_stage"]

HELPER_INTERVAL = 0.2  # seconds between the helper thread's looks at the main thread
IDLE_CPU_SHARE = 0.05  # below this share of CPU time the main thread counts as sleeping/blocked
# (a spinning thread on a machine loaded tenfold still gets more than this)
START_GRACE = 30.0  # seconds a starting process is kept alive before its first own beat

_ROW_WORDS = 6
_PID, _LAST_NS, _MOVES, _STAGE, _HELD_COUNTER, _HELD_SINCE_NS = 0, 1, 2, 3, 4, 5


class Stage(enum.IntEnum):
    """How far a worker process got; only increases during one process's life."""

    STARTING = 0  # spawned: the supervisor reset the row, the process has not attached it yet
    LOADING = 1  # attached: importing its file, loading its function, building its BufferIO
    RUNNING = 2  # its function was called

    @property
    def before_function(self) -> bool:
        """The process has not reached its function yet."""
        return self is not Stage.RUNNING

_row: memoryview | None = None  # this process's row, or None when not supervised
_held_depth = 0  # read slots this process holds right now (only this process changes it)
_monotonic_ns = time.monotonic_ns


def beat() -> None:
    """Stamp this process's heartbeat (a no-op outside a supervised process)."""
    row = _row
    if row is not None:
        row[_LAST_NS] = _monotonic_ns()
        row[_MOVES] += 1


def enter_stage(stage: Stage) -> None:
    """Tell the supervisor how far this process got (a no-op outside a supervised process)."""
    row = _row
    if row is not None:
        row[_STAGE] = int(stage)


def holding(counter: int) -> None:
    """This process took a read slot holding event ``counter`` (a no-op outside a supervised process)."""
    global _held_depth
    row = _row
    if row is not None:
        if _held_depth == 0:
            row[_HELD_COUNTER] = counter
            row[_HELD_SINCE_NS] = _monotonic_ns()
        _held_depth += 1


def released() -> None:
    """This process gave a read slot back; when it holds none any more, clear the mark."""
    global _held_depth
    row = _row
    if row is not None and _held_depth > 0:
        _held_depth -= 1
        if _held_depth == 0:
            row[_HELD_SINCE_NS] = 0


@dataclass(frozen=True)
class HeartbeatRow:
    """What the supervisor reads of one process's heartbeat.

    ``held_counter`` / ``held_seconds``: the event this process has held the
    longest and for how long (None / 0.0 when it holds no read slot);
    ``stage``: how far it got.
    """

    pid: int
    age_seconds: float
    moves: int
    held_counter: int | None = None
    held_seconds: float = 0.0
    stage: Stage = Stage.STARTING


class HeartbeatTable:
    """A fixed number of heartbeat rows in one shared-memory segment."""

    def __init__(self, rows: int, *, _segment: Segment | None = None) -> None:
        self.rows = rows
        self._segment = _segment or Segment.create("heartbeats", max(rows, 1) * _ROW_WORDS * 8)
        self._words = memoryview(self._segment.mm).cast("q")

    def __reduce__(self):
        return (_attach_table, (self._segment.name, self._segment.creator_pid, self.rows))

    def reset(self, index: int, pid: int) -> None:
        """Give row ``index`` to process ``pid`` (at STARTING) and stamp it now."""
        base = index * _ROW_WORDS
        self._words[base + _PID] = pid
        self._words[base + _LAST_NS] = _monotonic_ns()
        self._words[base + _MOVES] = 0
        self._words[base + _STAGE] = int(Stage.STARTING)
        self._words[base + _HELD_SINCE_NS] = 0

    def set_pid(self, index: int, pid: int) -> None:
        """Name the process of row ``index`` (after :meth:`reset`; the process may have written its row already)."""
        self._words[index * _ROW_WORDS + _PID] = pid

    def read(self, index: int) -> HeartbeatRow:
        """Read row ``index``."""
        base = index * _ROW_WORDS
        now = _monotonic_ns()
        age = (now - self._words[base + _LAST_NS]) / 1e9
        since = self._words[base + _HELD_SINCE_NS]
        stage = _stage_of(self._words[base + _STAGE])
        if since:
            return HeartbeatRow(self._words[base + _PID], age, self._words[base + _MOVES],
                                self._words[base + _HELD_COUNTER], max(0.0, (now - since) / 1e9), stage)
        return HeartbeatRow(self._words[base + _PID], age, self._words[base + _MOVES], stage=stage)

    def row_view(self, index: int) -> memoryview:
        """The writable words of row ``index`` (for :func:`attach`)."""
        base = index * _ROW_WORDS
        return self._words[base : base + _ROW_WORDS]

    def close(self) -> None:
        """Release the mapping; the creator also unlinks the segment."""
        self._words.release()
        self._segment.unlink()
        self._segment.close()


def _stage_of(word: int) -> Stage:
    try:
        return Stage(word)
    except ValueError:  # only our processes write the row; be safe anyway
        return Stage.STARTING


def _attach_table(name: str, creator_pid: int, rows: int) -> HeartbeatTable:
    return HeartbeatTable(rows, _segment=Segment.attach(name, creator_pid))


def attach(table: HeartbeatTable, index: int) -> None:
    """Bind this process's beats to ``table`` row ``index``; its stage is now LOADING."""
    global _row, _held_depth
    import os

    _row = table.row_view(index)
    _row[_PID] = os.getpid()
    _row[_STAGE] = int(Stage.LOADING)
    _row[_HELD_SINCE_NS] = 0
    _held_depth = 0
    beat()
    _helper.begin_start(_row[_MOVES])


def detach() -> None:
    """Stop stamping (used by tests)."""
    global _row, _held_depth
    _row = None
    _held_depth = 0


class _Helper:
    """The process's helper thread: beats for the main thread while it works or waits on purpose.

    Invariants: ``working``/``waiting`` count the open :func:`working` /
    :func:`waiting` stretches of the main thread (only the main thread changes
    them); ``start_moves`` is the moves word at :func:`attach` until the
    process's first own beat or ``start_deadline`` (then None). The thread
    stamps only the time word of the row (the main thread alone increments the
    moves word), and only while a stretch is open or the start-up lasts.
    """

    def __init__(self) -> None:
        self.working = 0
        self.waiting = 0
        self.start_moves: int | None = None  # the moves word when the process started
        self.start_deadline = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def begin_start(self, moves: int) -> None:
        """The process starts now: keep it alive until its first own beat, at most START_GRACE."""
        self.start_moves = moves
        self.start_deadline = _monotonic_ns() + int(START_GRACE * 1e9)
        self.ensure_started()

    def _starting(self, row: memoryview, now: int) -> bool:
        if self.start_moves is None:
            return False
        if row[_MOVES] != self.start_moves or now > self.start_deadline:
            self.start_moves = None  # its own beats took over, or the grace is spent
            return False
        return True

    def ensure_started(self) -> None:
        if self._thread is not None or _row is None:
            return
        with self._lock:
            if self._thread is None:
                main = threading.main_thread().ident
                self._thread = threading.Thread(target=self._run, args=(main,), name="heartbeat-helper", daemon=True)
                self._thread.start()

    def _run(self, main_ident: int | None) -> None:
        try:
            clock = time.pthread_getcpuclockid(main_ident)  # type: ignore[arg-type]
            main_cpu = lambda: time.clock_gettime_ns(clock)  # noqa: E731
        except (AttributeError, OSError, TypeError):
            main_cpu = None  # no per-thread CPU clock: waiting stretches are not helped
        last_wall, last_cpu = _monotonic_ns(), main_cpu() if main_cpu else 0
        while True:
            time.sleep(HELPER_INTERVAL)
            now = _monotonic_ns()
            cpu = main_cpu() if main_cpu else 0
            idle = main_cpu is not None and (cpu - last_cpu) < IDLE_CPU_SHARE * (now - last_wall)
            last_wall, last_cpu = now, cpu
            row = _row
            if row is not None and (self.working > 0 or (self.waiting > 0 and idle) or self._starting(row, now)):
                row[_LAST_NS] = now


_helper = _Helper()


@contextlib.contextmanager
def working() -> Iterator[None]:
    """Bounded work away from the data path (render a plot, rewrite result files): stay alive meanwhile."""
    _helper.working += 1
    _helper.ensure_started()
    try:
        yield
    finally:
        _helper.working -= 1
        beat()


def begin_waiting() -> None:
    """From now on the process holds no event and waits on purpose (see :func:`waiting`)."""
    _helper.waiting += 1
    _helper.ensure_started()


def end_waiting() -> None:
    """Close the stretch opened by :func:`begin_waiting`."""
    _helper.waiting -= 1
    beat()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """The process holds no event and waits (a source, an observer between events): alive while not computing."""
    begin_waiting()
    try:
        yield
    finally:
        end_waiting()
