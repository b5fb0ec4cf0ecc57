"""``Runner``: the foreground run as a small object (kept for tests and scripts).

The engine is the supervisor's :class:`~mimocorb2.supervisor.run.Run`, the same
as under the daemon; :func:`mimocorb2.supervisor.foreground.run_in_foreground`
drives it. This module imports the supervisor only when a run starts, so that
worker processes (which import :mod:`mimocorb2.runtime`) never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mimocorb2.runtime._echo import LogEcho
    from mimocorb2.setup import Setup
    from mimocorb2.supervisor.foreground import RunReport

__all__ = ["Runner"]


class Runner:
    """Run one validated setup in the foreground: ``Runner(setup).run() -> RunReport``."""

    def __init__(self, setup: "Setup", *, max_events: int | None = None, max_seconds: float | None = None,
                 run_dir: Path | None = None, echo: Callable[[str], None] | None = None,
                 quiet: bool = True, log_echo: "LogEcho | None" = None) -> None:
        self.setup = setup
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.run_dir = run_dir
        self.echo = echo
        self.quiet = quiet
        self.log_echo = log_echo

    def run(self) -> "RunReport":
        """Start, supervise until everything ended, clean up; return the report."""
        from mimocorb2.supervisor.foreground import run_in_foreground

        return run_in_foreground(self.setup, max_events=self.max_events, max_seconds=self.max_seconds,
                                 run_dir=self.run_dir, echo=self.echo, quiet=self.quiet,
                                 log_echo=self.log_echo)


def __getattr__(name: str) -> Any:
    if name == "RunReport":
        from mimocorb2.supervisor.foreground import RunReport

        return RunReport
    raise AttributeError(name)
