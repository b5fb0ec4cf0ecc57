"""Reading YAML files safely, with line numbers for syntax errors and duplicate keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._files import MAX_YAML_BYTES, FileProblem, read_small_file

MERGE_TAG = "tag:yaml.org,2002:merge"
#: the most nodes a document may have once its aliases are expanded (an alias bomb has 10**9;
#: a legitimate setup a few thousand, and writing 250,000 into the run copy takes ~3 s)
MAX_EXPANDED_NODES = 250_000


class _Loader(yaml.SafeLoader):
    """A SafeLoader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self.anchored: set[int] = set()  # id() of every node that carries an anchor

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        anchored = not isinstance(event, yaml.AliasEvent) and getattr(event, "anchor", None) is not None
        node = super().compose_node(parent, index)
        if anchored:
            self.anchored.add(id(node))
        return node

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
    if "'\\t'" in reason:  # a tab in the indentation: the most common slip in a first setup
        reason += " (YAML indents with spaces only)"
    if mark is None:
        return f"YAML syntax error: {reason}"
    return f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {reason}"


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """How many nodes ``root`` has with every alias expanded; YamlProblem past ``limit``.

    Aliases make the composed graph share nodes, so the count is memoised per node
    (linear in the distinct nodes) while the expanded total may be astronomical. A
    node that contains itself (``&a [*a]``) is refused too: it cannot be expanded.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                line = node.start_mark.line + 1 if node.start_mark else "?"
                raise YamlProblem(f"line {line}: the document grows past {limit:,} values "
                                  "when its aliases (*name) are expanded; refused (an alias bomb?)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise YamlProblem(f"line {line}: an anchor (&name) is used inside itself "
                              "(a recursive alias); refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def read_yaml(path: Path) -> tuple[Any, list[str], list[str]]:
    """Parse ``path``; return ``(data, duplicate-key notes, templates)``; raise YamlProblem on failure.

    ``templates`` are the top-level keys whose value carries a YAML anchor
    (``osc_template: &osc_template``): holders of shared settings, not settings.

    Only a regular file of at most ``MAX_YAML_BYTES`` is read, and a document whose
    aliases would expand past ``MAX_EXPANDED_NODES`` values is refused before it is built.
    """
    try:
        text = read_small_file(path, MAX_YAML_BYTES).decode("utf-8")
    except FileProblem as err:
        raise YamlProblem(str(err)) from None
    except UnicodeDecodeError as err:
        raise YamlProblem(f"cannot read file: not UTF-8 text ({err.reason} at byte "
                          f"{err.start})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loader.duplicates, []
        expanded_size(node)
        data = loader.construct_document(node)
        templates = [str(key.value) for key, value in node.value if id(value) in loader.anchored
                     and isinstance(key, yaml.ScalarNode)] if isinstance(node, yaml.MappingNode) else []
    except yaml.YAMLError as err:
        raise YamlProblem(_syntax_message(err)) from None
    except RecursionError:
        raise YamlProblem("the document is nested too deeply to read") from None
    finally:
        loader.dispose()
    return data, loader.duplicates, templates


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper writing repeated objects out in full (no anchors) for a self-contained copy."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML, keeping key order and writing no aliases."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
