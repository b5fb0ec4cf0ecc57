"""SCPI header matching and the error codes the simulated server queues.

A pattern such as ``ACQ:SOUR#:DATA:STArt:N?`` matches every spelling the board
accepts: short (``STA``) or long (``START``) mnemonic, any case, a numeric suffix
for ``#`` (default 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["CommandTable", "Handler", "Pattern", "ScpiFailure", "bad_value", "out_of_range", "undefined"]

#: A command handler: ``(suffixes, parameters) -> answer`` (no terminator; None: no answer).
Handler = Callable[[list[int], list[str]], object]


class ScpiFailure(Exception):
    """A command failed; ``code``/``message`` go into the error queue."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code},{message}")
        self.code = code
        self.message = message


def undefined() -> ScpiFailure:
    """-113: the header is not a command of this server."""
    return ScpiFailure(-113, "Undefined header")


def bad_value(what: str) -> ScpiFailure:
    """-224: a parameter outside the allowed choices."""
    return ScpiFailure(-224, f"Illegal parameter value: {what}")


def out_of_range(what: str) -> ScpiFailure:
    """-222: a number outside the allowed range."""
    return ScpiFailure(-222, f"Data out of range: {what}")


def one_parameter(params: Sequence[str], what: str) -> str:
    """The single parameter of a set command (-109 missing / -108 too many)."""
    if len(params) != 1:
        raise ScpiFailure(-109 if not params else -108, f"{what} takes one parameter")
    return params[0]


def int_parameters(params: Sequence[str], n: int) -> list[int]:
    """Exactly ``n`` integer parameters."""
    if len(params) != n:
        raise ScpiFailure(-109 if len(params) < n else -108, f"expected {n} parameters")
    try:
        return [int(p) for p in params]
    except ValueError:
        raise ScpiFailure(-104, "Data type error") from None


class _Token:
    """One SCPI mnemonic like ``TRig`` (short ``TR``, long ``TRIG``) or ``SOUR#``."""

    def __init__(self, text: str) -> None:
        self.numeric = text.endswith("#")
        word = text.rstrip("#")
        self.long = word.upper()
        short = re.match(r"[A-Z_]*", word)
        self.short = short.group(0) if short and short.group(0) else self.long

    def match(self, token: str) -> int | None | bool:
        """Return False on mismatch; else the numeric suffix (or None)."""
        word = token.upper()
        suffix: int | None = None
        if self.numeric:
            m = re.fullmatch(r"([A-Z_]+)(\d*)", word)
            if not m:
                return False
            word, digits = m.group(1), m.group(2)
            suffix = int(digits) if digits else 1
        if word in (self.short, self.long):
            return suffix
        return False


class Pattern:
    """One command header pattern and its handler."""

    def __init__(self, text: str, handler: Handler) -> None:
        self.text = text
        self.query = text.endswith("?")
        self.tokens = [_Token(t) for t in text.rstrip("?").split(":")]
        self.handler = handler

    def match(self, header: str) -> list[int] | None:
        """The numeric suffixes if ``header`` (upper case) matches, else None."""
        if header.endswith("?") != self.query:
            return None
        parts = header.rstrip("?").lstrip(":").split(":")
        if len(parts) != len(self.tokens):
            return None
        suffixes: list[int] = []
        for tok, part in zip(self.tokens, parts):
            res = tok.match(part)
            if res is False:
                return None
            if tok.numeric:
                assert isinstance(res, int)
                suffixes.append(res)
        return suffixes


class CommandTable:
    """The commands of one server; lookups are cached (clients repeat their headers)."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.patterns = list(patterns)
        self._cache: dict[str, tuple[Pattern, list[int]] | None] = {}

    def lookup(self, header: str) -> tuple[Pattern, list[int]] | None:
        """The pattern matching ``header`` and its suffixes, or None."""
        key = header.upper()
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        for pattern in self.patterns:
            suffixes = pattern.match(key)
            if suffixes is not None:
                found = (pattern, suffixes)
                break
        if len(self._cache) > 4096:  # bound the cache against junk headers
            self._cache.clear()
        self._cache[key] = found
        return found
