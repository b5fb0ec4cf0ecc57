"""Exception types that users of mimocorb2 may catch."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SetupError", "UfuncError"]


class SetupError(ValueError):
    """A setup file, a worker's configuration or a worker's buffers are wrong.

    ``problems`` holds one line per problem, each naming the file, the worker or
    buffer and the key involved, so that every mistake is reported at once.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)
        text = message
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)
        self.message = message


class UfuncError(RuntimeError):
    """A user function called by a worker template raised or returned something invalid."""
