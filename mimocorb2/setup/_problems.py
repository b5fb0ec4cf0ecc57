"""Collecting problems and phrasing them (did-you-mean, type names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: object, choices: Iterable[object]) -> str | None:
    """The choice closest to ``word`` (difflib), or None if none is close enough."""
    names = [str(c) for c in choices]
    matches = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or ``""`` if none is close."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""


def type_name(value: object) -> str:
    """A YAML-flavoured name of the type of ``value`` for error messages."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def describe(value: object) -> str:
    """``value`` for a message: its repr, shortened, with its type."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type_name(value)})"


class Problems:
    """An ordered list of problem lines, each prefixed with the setup file's name.

    ``warnings`` hold doubts that do not stop a run (same line format).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def _line(self, where: str, message: str) -> str:
        parts = [self.source, where, message] if where else [self.source, message]
        return ": ".join(parts)

    def add(self, where: str, message: str) -> None:
        """Record ``<source>: <where>: <message>`` (``where`` may be empty)."""
        self.lines.append(self._line(where, message))

    def warn(self, where: str, message: str) -> None:
        """Record a warning in the same format as a problem."""
        self.warnings.append(self._line(where, message))

    def extend(self, lines: Iterable[str]) -> None:
        """Record lines that already carry their prefix."""
        self.lines.extend(lines)

    def __len__(self) -> int:
        return len(self.lines)
