"""Reading YAML files safely, with line numbers for syntax errors and duplicate keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """A SafeLoader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                self.duplicates.append(f"line {line}: duplicate key '{key_node.value}'"
                                       " (an earlier entry with this name would be ignored)")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class YamlProblem(Exception):
    """A YAML file could not be read or parsed; ``str()`` is the one-line reason."""


def _syntax_message(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return f"YAML syntax error: {reason}"
    return f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {reason}"


def read_yaml(path: Path) -> tuple[Any, list[str]]:
    """Parse ``path``; return ``(data, duplicate-key notes)``; raise YamlProblem on failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlProblem("file not found") from None
    except IsADirectoryError:
        raise YamlProblem("is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise YamlProblem(f"cannot read file: {err}") from None
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        raise YamlProblem(_syntax_message(err)) from None
    finally:
        loader.dispose()
    return data, loader.duplicates


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper writing repeated objects out in full (no anchors) for a self-contained copy."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML, keeping key order and writing no aliases."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
