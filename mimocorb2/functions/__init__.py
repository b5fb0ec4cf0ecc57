"""The prebuilt function library: workers callable by name from a setup file.

A worker without ``file`` names a function here as ``module.function``
(``function: exporters.histogram``). Modules: :mod:`.exporters`, :mod:`.visualizers`,
:mod:`.analyzers`, :mod:`.data`, :mod:`.misc`, :mod:`.observers` and the
:mod:`.importers` package. Submodules are imported on demand, so importing this
package is cheap.

:func:`describe_all` lists every prebuilt function with its config keys, read
from the functions' docstrings (the manual's "mimoCoRB2 Function:" format).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FunctionDoc", "MODULES", "describe_all", "iter_functions", "parse_docstring"]

#: The modules of the library, in listing order.
MODULES = ("exporters", "visualizers", "analyzers", "data", "misc", "observers", "importers")

_MARK = "mimoCoRB2 Function:"
_SECTIONS = ("Type", "Buffers", "Configs", "Examples")


@dataclass
class ConfigKey:
    """One documented config key."""

    name: str
    type: str
    description: str = ""

    @property
    def optional(self) -> bool:
        """Whether the docstring marks the key as optional."""
        return "optional" in self.type


@dataclass
class FunctionDoc:
    """A prebuilt function's documentation, parsed from its docstring."""

    name: str
    summary: str = ""
    description: str = ""
    type: str = ""
    buffers: dict[str, str] = field(default_factory=dict)
    configs: list[ConfigKey] = field(default_factory=list)
    examples: str = ""
    aliases: list[str] = field(default_factory=list)


def _split_sections(lines: list[str]) -> dict[str, list[str]]:
    """Split cleaned docstring lines into the head and the underlined sections."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() in _SECTIONS and re.fullmatch(r"\s*-{3,}\s*", nxt or ""):
            current = line.strip()
            sections[current] = []
            i += 2
            continue
        sections[current].append(line)
        i += 1
    return sections


def _entries(lines: list[str]) -> list[tuple[str, str]]:
    """``(head, description)`` pairs: unindented head lines, indented descriptions."""
    out: list[tuple[str, list[str]]] = []
    for line in lines:
        if not line.strip():
            continue
        if not line[0].isspace():
            out.append((line.strip(), []))
        elif out:
            out[-1][1].append(line.strip())
    return [(head, " ".join(desc)) for head, desc in out]


def parse_docstring(name: str, doc: str | None) -> FunctionDoc | None:
    """Parse a docstring in the manual's format; None if it is not a mimoCoRB2 function."""
    if not doc:
        return None
    text = inspect.cleandoc(doc)
    if not text.startswith(_MARK):
        return None
    lines = text.splitlines()
    sections = _split_sections(lines)
    head = sections[""]
    summary = head[0][len(_MARK):].strip() if head else ""
    description = " ".join(line.strip() for line in head[1:] if line.strip())
    info = FunctionDoc(name=name, summary=summary, description=description)
    info.type = " ".join(line.strip() for line in sections.get("Type", []) if line.strip())
    for key, desc in _entries(sections.get("Buffers", [])):
        info.buffers[key] = desc
    for head_line, desc in _entries(sections.get("Configs", [])):
        if head_line.startswith("("):  # "(none)"
            continue
        key, _, typ = head_line.partition(":")
        info.configs.append(ConfigKey(key.strip(), typ.strip(), desc))
    info.examples = "\n".join(sections.get("Examples", [])).strip()
    return info


def _modules() -> Iterator[tuple[str, Any]]:
    """``(dotted name, module)`` of every library module (skipping ones that fail to import)."""
    for mod_name in MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{mod_name}")
        except ImportError:
            continue
        yield mod_name, module
        path = getattr(module, "__path__", None)
        if path is not None:  # a package such as importers: list its submodules
            for sub in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
                if sub.name.startswith("_"):
                    continue
                try:
                    yield f"{mod_name}.{sub.name}", importlib.import_module(f"{module.__name__}.{sub.name}")
                except ImportError:
                    continue


def iter_functions() -> list[tuple[str, Callable[..., Any], FunctionDoc]]:
    """Every prebuilt function as ``(name, function, doc)``; aliases are folded into ``doc.aliases``."""
    found: dict[int, tuple[str, Callable[..., Any], FunctionDoc]] = {}
    order: list[int] = []
    for mod_name, module in _modules():
        for attr, value in vars(module).items():
            if attr.startswith("_") or not callable(value) or inspect.isclass(value):
                continue
            info = parse_docstring(f"{mod_name}.{attr}", getattr(value, "__doc__", None))
            if info is None:
                continue
            home = f"{__name__}.{mod_name}"
            key = id(value)
            if key in found:
                existing = found[key]
                # prefer the module that defines the function; the other name is an alias
                if getattr(value, "__module__", "") == home and existing[2].name != info.name:
                    info.aliases = existing[2].aliases + [existing[2].name]
                    found[key] = (info.name, value, info)
                else:
                    existing[2].aliases.append(info.name)
                continue
            found[key] = (info.name, value, info)
            order.append(key)
    return [found[k] for k in order]


def describe_all() -> str:
    """A text listing of every prebuilt function: name, type, summary, buffers, config keys."""
    parts: list[str] = []
    entries = sorted(iter_functions(), key=lambda e: (MODULES.index(e[0].split(".")[0])
                                                       if e[0].split(".")[0] in MODULES else 99, e[0]))
    for name, _func, info in entries:
        title = f"{name}"
        if info.aliases:
            title += f"  (also: {', '.join(info.aliases)})"
        lines = [title, f"    {info.summary}"]
        if info.type:
            lines.append(f"    type: {info.type}")
        if info.buffers:
            lines.append("    buffers:")
            lines.extend(f"      {k}: {v}" for k, v in info.buffers.items())
        if info.configs:
            lines.append("    configs:")
            for key in info.configs:
                lines.append(f"      {key.name} : {key.type}")
        else:
            lines.append("    configs: (none)")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
