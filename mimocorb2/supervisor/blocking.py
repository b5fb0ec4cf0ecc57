"""Blocking work the daemon must do, bounded in time, and an exit that always happens.

The event loop never blocks; file work goes to a thread. A thread can still hang
(a setup on a dead network mount, a ``stat`` in uninterruptible sleep), so:

* :func:`in_daemon_thread` runs a call in its own *daemon* thread and gives up
  waiting after a timeout: the caller gets :class:`BlockingTimeout`, the thread is
  left behind (logged) and cannot keep the process alive at exit;
* :func:`arm_exit_guard` is armed once the daemon has shut down: if the process
  has not ended ``grace`` seconds later (a wedged thread being joined at
  interpreter exit), it logs what is still running and ends the process anyway.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("mimocorb2.daemon")

T = TypeVar("T")

#: seconds the process may take to exit after the daemon shut down
EXIT_GRACE = 10.0


class BlockingTimeout(Exception):
    """A call in a thread did not finish in time (the thread is abandoned)."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"{what} took longer than {timeout:g} s; gave up waiting")
        self.what = what
        self.timeout = timeout


async def in_daemon_thread(fn: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
    """``fn(*args)`` in a fresh daemon thread; BlockingTimeout after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as err:  # noqa: B036 - handed to the awaiting coroutine
            outcome: tuple[bool, Any] = (False, err)
        else:
            outcome = (True, result)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    thread = threading.Thread(target=work, name=f"blocking: {what}"[:60], daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
        log.error("blocking call timed out; its thread is abandoned", what=what, timeout=timeout,
                  thread=thread.name)
        raise BlockingTimeout(what, timeout) from None


def arm_exit_guard(exit_code: int, grace: float = EXIT_GRACE) -> threading.Thread:
    """End the process with ``exit_code`` if it is still alive ``grace`` seconds from now."""

    def guard() -> None:
        threading.Event().wait(grace)  # a normal exit ends this daemon thread first
        busy = [t.name for t in threading.enumerate()
                if t is not threading.current_thread() and t.is_alive()]
        log.error("process did not exit after shutdown: exiting anyway", grace=grace,
                  threads=busy, exit_code=exit_code)
        _flush_logs()
        os._exit(exit_code)

    thread = threading.Thread(target=guard, name="exit-guard", daemon=True)
    thread.start()
    return thread


def _flush_logs() -> None:
    try:
        from mimocorb2 import logsetup

        logsetup.shutdown_logging()
    except Exception:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
