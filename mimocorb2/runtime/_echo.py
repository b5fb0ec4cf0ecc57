"""Live echo of the workers' own output on the terminal of a foreground run.

Every worker process writes its stdout, its stderr and its log records into
``RUN_DIR/logs/<worker>.log`` (see :mod:`mimocorb2.logsetup`). :class:`LogEcho`
follows those files from the parent process, like ``tail -f``, and prints what an
operator wants to see, each line prefixed with the worker's name (and the process
index when the worker has several processes), aligned and, on a terminal, coloured:

    accept#0      | threshold 0.05, 1200 events so far
    accept#1      | threshold 0.05, 1187 events so far
    save_csv      | [warning] disk is 91 % full [user] path=/data

What is shown:

* everything a worker printed to stdout or stderr (``print()`` in user code);
* lines written below Python (C libraries, the interpreter's last words);
* log records at level warning and above, ours included, with their traceback;
* log records of any level from the worker's own logger (``io.logger``, which the
  worker templates also use: "filter started") and from loggers outside
  ``mimocorb2`` (the user's own ``logging`` calls).

Not shown: mimocorb2's internal info/debug records ("worker process started", ...):
the runner reports process starts and ends itself, and they stay in the log file.

The workers never wait for the echo: they write to their files as always, and the
echo reads what is there. A slow terminal only makes the echo lag behind; no line is
lost or shown twice (each file is read once, from its start, in order). ``stop()``
reads the files to their end and prints partial last lines too.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = ["LogEcho"]

_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"
#: a line written through a worker's sys.stdout / sys.stderr (logsetup._TaggedStream); the
#: tag is missing only from a last line cut short (a process killed while writing)
_STREAM_LINE = re.compile(rf"^{_STAMP} \[(?:stdout|stderr)\s*\] (?P<text>.*?)"
                          r"(?: \[(?:stdout|stderr)\] pid=(?P<pid>\d+) worker=\S+)?$")
#: a structured log record (logsetup's console renderer), possibly followed by a traceback
_RECORD_LINE = re.compile(rf"^{_STAMP} \[(?P<level>[a-z]+)\s*\] (?P<rest>.*)$")
#: mimocorb2's own loggers; not mimocorb2.worker.<name>, which is the worker's ``io.logger``
_OWN_LOGGER = re.compile(r" \[mimocorb2(?:\.(?!worker\.)[\w.]+)?\]")
_TAG_FIELDS = re.compile(r" (?:pid=\d+|worker=\S+)(?= |$)")
_PID = re.compile(r" pid=(\d+)(?= |$)")
_PROCESS_STARTED = re.compile(r"^worker process started \[mimocorb2\.worker\].* index=(\d+)")
_LOUD_LEVELS = frozenset({"warning", "error", "critical", "exception", "fatal"})
_COLORS = (36, 33, 32, 35, 34, 91, 96, 93, 92, 95, 94)  # ANSI foreground colours, cycled
_CHUNK = 4 << 20  # bytes read from one file per pass, so memory stays bounded


@dataclass
class _Follower:
    """Reading position in one worker's log file."""

    worker: str
    path: Path
    handle: BinaryIO | None = None
    partial: bytes = b""  # bytes after the last newline read so far
    show_continuation: bool = True  # whether untagged lines belong to something shown
    last_pid: int | None = None  # pid of the last tagged line (labels untagged lines)


class LogEcho:
    """Follow ``RUN_DIR/logs/*.log`` and print the workers' output with a prefix.

    ``process_counts`` maps each worker to its number of processes (a worker with
    more than one gets ``#index`` in its prefix). Use: ``start(logs_dir)`` once the
    directory exists, :meth:`register` for each process started (optional: the
    index is also learnt from the log), ``stop()`` after the last process ended.
    """

    def __init__(self, process_counts: Mapping[str, int], out: TextIO | None = None,
                 color: bool | None = None, interval: float = 0.05) -> None:
        self.out = out if out is not None else sys.stdout
        self.color = self._is_tty(self.out) if color is None else color
        self.interval = interval
        self._counts = dict(process_counts)
        self._width = max((len(self._label(w, n - 1 if n > 1 else None))
                           for w, n in self._counts.items()), default=0)
        palette = itertools.cycle(_COLORS)
        self._color_of = {worker: next(palette) for worker in self._counts}
        self._index_of_pid: dict[int, int] = {}  # pid -> process index (register() wins)
        self._followers: dict[Path, _Follower] = {}
        self._logs_dir: Path | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass over the files at a time
        self.lines_shown = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, logs_dir: Path) -> None:
        """Begin following the ``*.log`` files in ``logs_dir`` (in a daemon thread)."""
        self._logs_dir = Path(logs_dir)
        self._thread = threading.Thread(target=self._follow, name="mimocorb2-log-echo",
                                        daemon=True)
        self._thread.start()

    def register(self, pid: int, worker: str, index: int) -> None:
        """Tell the echo that ``pid`` is process ``index`` of ``worker`` (a restart may reuse
        an index with a new pid; call this right after starting each process)."""
        self._index_of_pid[pid] = index

    def stop(self) -> None:
        """Stop following; print everything still unread, partial last lines included."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._logs_dir is not None:
            while self._pass(final=True):  # a file may hold more than one chunk
                pass
        for follower in self._followers.values():
            if follower.handle is not None:
                follower.handle.close()
                follower.handle = None

    # ------------------------------------------------------------------ following
    def _follow(self) -> None:
        while not self._stopping.is_set():
            more = self._pass(final=False)
            if not more:
                self._stopping.wait(self.interval)

    def _pass(self, final: bool) -> bool:
        """Read new bytes of every file and print them; True if a file has more unread."""
        with self._lock:
            more = False
            out: list[str] = []
            for follower in self._current_followers():
                more |= self._read(follower, out, final)
            self._write(out)
            return more

    def _current_followers(self) -> list[_Follower]:
        assert self._logs_dir is not None
        try:
            entries = sorted(os.scandir(self._logs_dir), key=lambda e: e.name)
        except OSError:
            return list(self._followers.values())
        for entry in entries:
            path = Path(entry.path)
            if entry.name.endswith(".log") and path not in self._followers:
                self._followers[path] = _Follower(entry.name[:-len(".log")], path)
        return list(self._followers.values())

    def _read(self, follower: _Follower, out: list[str], final: bool) -> bool:
        if follower.handle is None:
            try:
                follower.handle = open(follower.path, "rb")
            except OSError:
                return False
        data = follower.handle.read(_CHUNK)
        more = len(data) == _CHUNK
        data = follower.partial + data
        lines = data.split(b"\n")
        follower.partial = lines.pop()
        if final and not more and follower.partial:
            lines.append(follower.partial)
            follower.partial = b""
        for raw in lines:
            text = self._shown(follower, raw.decode("utf-8", errors="replace"))
            if text is not None:
                out.append(text)
        return more

    # ------------------------------------------------------------------ deciding and formatting
    def _shown(self, follower: _Follower, line: str) -> str | None:
        """The line as printed, or None when it is not for the operator."""
        match = _STREAM_LINE.match(line)
        if match:
            if match["pid"]:
                follower.last_pid = int(match["pid"])
            follower.show_continuation = True
            return self._prefixed(follower, match["text"])
        match = _RECORD_LINE.match(line)
        if match is None:  # a traceback line of a record, or raw output below Python
            return self._prefixed(follower, line) if follower.show_continuation else None
        level, rest = match["level"], match["rest"]
        pid = _PID.search(rest)
        if pid:
            follower.last_pid = int(pid.group(1))
            started = _PROCESS_STARTED.match(rest)
            if started:
                self._index_of_pid.setdefault(follower.last_pid, int(started.group(1)))
        follower.show_continuation = level in _LOUD_LEVELS or not _OWN_LOGGER.search(rest)
        if not follower.show_continuation:
            return None
        rest = _TAG_FIELDS.sub("", rest).replace(f" [mimocorb2.worker.{follower.worker}]", "", 1)
        return self._prefixed(follower, f"[{level}] {rest}")

    def _prefixed(self, follower: _Follower, text: str) -> str:
        worker = follower.worker
        index = None
        if self._counts.get(worker, 1) > 1:
            pid = follower.last_pid
            index = self._index_of_pid.get(pid) if pid is not None else None
            if index is None:
                return self._decorate(worker, f"{worker}(pid {pid})", text)
        return self._decorate(worker, self._label(worker, index), text)

    def _decorate(self, worker: str, label: str, text: str) -> str:
        prefix = f"{label:<{self._width}} |"
        if self.color:
            prefix = f"\x1b[{self._color_of.get(worker, 37)}m{prefix}\x1b[0m"
        return f"{prefix} {text}\n"

    @staticmethod
    def _label(worker: str, index: int | None) -> str:
        return worker if index is None else f"{worker}#{index}"

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.out.write("".join(lines))
            self.out.flush()
        except (OSError, ValueError):  # terminal gone (closed pipe): the logs still have it
            pass
        self.lines_shown += len(lines)

    @staticmethod
    def _is_tty(stream: TextIO) -> bool:
        try:
            return stream.isatty() and os.environ.get("NO_COLOR") is None
        except (AttributeError, ValueError):
            return False
