"""The supervisor's own error type."""

from __future__ import annotations

__all__ = ["RunError"]


class RunError(Exception):
    """A run (or the daemon on its behalf) refuses a request or failed to carry it out.

    ``problems`` lists one line per problem (e.g. every error of a setup file).
    The command dispatcher (:mod:`mimocorb2.supervisor.handlers`) is the one
    place that turns it into a reply on the wire; the foreground runner prints it.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])
