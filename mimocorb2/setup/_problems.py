"""Collecting problems and phrasing them (did-you-mean, type names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: object, choices: Iterable[object]) -> str | None:
    """The choice closest to ``word`` (difflib), or None if none is close enough."""
    names = [str(c) for c in choices]
    matches = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return matches[0] if matches else None


MISSPELLING_CUTOFF = 0.75  # stricter than closest(): an unknown key this close is refused


def likely_misspelling(word: object, known: Iterable[str]) -> str | None:
    """The known key that ``word`` most likely misspells, or None.

    A key that differs from a known one only in case, or is a close difflib match
    (ratio >= MISSPELLING_CUTOFF: ``number_of_process``, ``data_dtyp``, ``Buffer``),
    is a typo; anything further away is a key mimocorb2 simply does not use.
    """
    names = [str(k) for k in known]
    text = str(word)
    for name in names:
        if text.lower() == name.lower():
            return name
    matches = difflib.get_close_matches(text, names, n=1, cutoff=MISSPELLING_CUTOFF)
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
    """Ordered problem lines (refuse the file), warnings and notes (tell, then go on).

    Every line is prefixed with the setup file's name.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def _line(self, where: str, message: str) -> str:
        parts = [self.source, where, message] if where else [self.source, message]
        return ": ".join(parts)

    def add(self, where: str, message: str) -> None:
        """Record the problem ``<source>: <where>: <message>`` (``where`` may be empty)."""
        self.lines.append(self._line(where, message))

    def warn(self, where: str, message: str) -> None:
        """Record a warning: something is ignored that the author may have meant to matter."""
        self.warnings.append(self._line(where, message))

    def note(self, where: str, message: str) -> None:
        """Record a note: something is ignored on purpose (e.g. YAML anchor holders)."""
        self.notes.append(self._line(where, message))

    def extend(self, lines: Iterable[str]) -> None:
        """Record lines that already carry their prefix."""
        self.lines.extend(lines)

    def __len__(self) -> int:
        return len(self.lines)
