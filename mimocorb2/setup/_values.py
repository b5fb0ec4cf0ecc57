"""Checks of single values; each records a problem and returns None when the value is bad."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._problems import Problems, describe, did_you_mean, likely_misspelling

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")

COMMON_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128", "i1", "i2", "i4", "i8",
    "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16", "S16", "U16", "<f4", "<f8",
)


def is_int(value: object) -> bool:
    """An int that is not a bool (YAML ``true`` must not count as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite int or float that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def check_int(problems: Problems, where: str, value: object, minimum: int) -> int | None:
    """``value`` if it is an integer >= ``minimum``."""
    if is_int(value) and value >= minimum:
        return value
    problems.add(where, f"must be an integer >= {minimum}, got {describe(value)}")
    return None


def check_positive(problems: Problems, where: str, value: object) -> float | None:
    """``value`` as float if it is a number > 0."""
    if is_number(value) and value > 0:
        return float(value)
    problems.add(where, f"must be a number > 0, got {describe(value)}")
    return None


def check_choice(problems: Problems, where: str, value: object,
                 choices: Sequence[str]) -> str | None:
    """``value`` if it is one of ``choices``."""
    if isinstance(value, str) and value in choices:
        return value
    allowed = " | ".join(choices)
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    problems.add(where, f"must be one of {allowed}, got {describe(value)}{hint}")
    return None


def check_keys(problems: Problems, where: str, mapping: Mapping[Any, Any],
               known: Iterable[str]) -> list[str]:
    """Sort the keys of ``mapping`` that are not in ``known``; return the ignored ones.

    A likely misspelling of a known key is a problem with a did-you-mean (the
    typo would otherwise silently lose a setting). Any other unknown key is
    ignored, as the original mimoCoRB2 does, with a warning naming the place
    when ``where`` is a section inside the file (a buffer, a worker, ...);
    unknown top-level keys (``where == ""``) are only returned, for one note.
    """
    known = list(known)
    ignored: list[str] = []
    for key in mapping:
        if key in known:
            continue
        place = f"{where}.{key}" if where else str(key)
        typo = likely_misspelling(key, known)
        if typo is not None:
            problems.add(place, f"unknown key (did you mean '{typo}'?)")
            continue
        ignored.append(str(key))
        if where:
            hint = did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
            problems.warn(place, f"unknown key, ignored{hint}")
    return ignored


def is_misspelled(mapping: Mapping[Any, Any], key: str, known: Iterable[str]) -> bool:
    """Whether an unknown key of ``mapping`` was already reported as a misspelling of ``key``.

    Used to avoid a second, redundant "missing" problem for the same typo.
    """
    known = list(known)
    return any(likely_misspelling(k, known) == key for k in mapping if k not in known)


def check_mapping(problems: Problems, where: str, value: object, what: str) -> dict | None:
    """``value`` if it is a mapping; otherwise a problem saying what it should be."""
    if isinstance(value, dict):
        return value
    problems.add(where, f"must be a mapping of {what}, got {describe(value)}")
    return None


def check_name(problems: Problems, where: str, name: object, kind: str) -> bool:
    """Whether ``name`` is usable as a buffer or worker name (file and memory names)."""
    if isinstance(name, str) and NAME_PATTERN.match(name):
        return True
    problems.add(f"{where}.{name}", f"invalid {kind} name {describe(name)}: use letters, "
                 "digits, '_', '-', '.' and '+', starting with a letter, digit or '_'")
    return False


def check_field_dtype(problems: Problems, where: str, value: object) -> np.dtype | None:
    """The numpy dtype named by the string ``value`` (no object dtypes)."""
    if not isinstance(value, str) or not value.strip():
        problems.add(where, f"must be a numpy dtype string such as 'float64', "
                     f"got {describe(value)}")
        return None
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError, SyntaxError):
        problems.add(where, f"unknown numpy dtype '{value}'{did_you_mean(value, COMMON_DTYPES)}")
        return None
    if dtype.hasobject:
        problems.add(where, f"dtype '{value}' holds Python objects, which cannot live in "
                     "shared memory")
        return None
    return dtype


def check_dtype(problems: Problems, where: str, value: object) -> np.dtype | None:
    """A structured dtype built, in order, from a mapping of field name -> dtype string."""
    mapping = check_mapping(problems, where, value, "field name -> numpy dtype string")
    if mapping is None:
        return None
    if not mapping:
        problems.add(where, "must name at least one field (field name -> numpy dtype string)")
        return None
    fields: list[tuple[str, np.dtype]] = []
    ok = True
    for field_name, field_type in mapping.items():
        if not isinstance(field_name, str) or not field_name:
            problems.add(f"{where}.{field_name}", f"field name must be a non-empty string, "
                         f"got {describe(field_name)}")
            ok = False
            continue
        dtype = check_field_dtype(problems, f"{where}.{field_name}", field_type)
        ok = ok and dtype is not None
        if dtype is not None:
            fields.append((field_name, dtype))
    if not ok:
        return None
    try:
        return np.dtype(fields)
    except (TypeError, ValueError) as err:
        problems.add(where, f"cannot build a structured dtype: {err}")
        return None


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*|%)\s*$")


def check_disk_floor(problems: Problems, where: str, value: object) -> tuple[int | None, float | None] | None:
    """``"500 MB"``, ``"2%"``, ``"1.5 GiB"`` or a number of bytes -> (bytes, percent)."""
    if is_int(value) and int(value) >= 0:  # type: ignore[arg-type]
        return int(value), None  # type: ignore[arg-type]
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if match:
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "%":
            if number <= 100:
                return None, number
        elif unit in _SIZE_UNITS:
            return int(number * _SIZE_UNITS[unit]), None
    problems.add(where, f"must be a size like \"500 MB\", \"2 GiB\", a percentage like \"2%\" "
                        f"(at most 100) or a number of bytes, got {describe(value)}")
    return None
