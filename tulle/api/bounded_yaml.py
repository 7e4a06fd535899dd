"""PyYAML's safe loader with bounds, so that no YAML text, however small, costs more than its size.

YAML lets an alias (``*a``) repeat an anchored node (``&a``). Nine aliases of a node of nine
aliases of ... ("billion laughs") make a few hundred bytes stand for millions of nodes, and
everything that walks the data (line mapping, schema validation, storage) pays for each one.
Nesting is bounded too: the composer, the constructor and the walkers recurse once per level.

:class:`BoundedLoader` counts while it composes, before anything is expanded, and raises
:class:`YamlLimitError` (a :class:`yaml.MarkedYAMLError`, with the line) at the first node
past a bound:

- nesting deeper than :data:`MAX_DEPTH` levels, counting what aliases bring in;
- aliases that expand to more than :data:`MAX_ALIAS_NODES` nodes in all, in one text;
- an alias inside the node it names (a recursive structure, which has no plain-data form).

A scalar that YAML resolves to a value Python refuses to build (an integer of 5,000 digits, the
date ``2024-13-45``) raises a :class:`yaml.constructor.ConstructorError` at its line rather than a
``ValueError`` from deep inside PyYAML."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark

MAX_DEPTH = 64
"""Levels of nesting; the deepest field of any resource Tulle reads is about ten levels down."""

MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may add to one text, in all (anchors for shared blocks stay far below)."""


class YamlLimitError(yaml.MarkedYAMLError):
    """YAML refused for its shape (nesting, aliases), not its syntax; ``problem_mark`` is where."""

    def __init__(self, problem: str, mark: Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses nesting, alias expansion and recursion past the bounds."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._open_anchors: set[str] = set()
        self._measured: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node, counting its depth, or what the alias it is brings in."""
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(parent, index, event)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)
        return node

    def _compose_alias(self, parent: yaml.Node | None, index: Any, event: Any) -> yaml.Node | None:
        if event.anchor in self._open_anchors:
            raise YamlLimitError(
                f"alias *{event.anchor} refers to a node that contains it (a recursive structure)",
                event.start_mark,
            )
        node = super().compose_node(parent, index)
        if node is None:
            return None
        size, height = self._measure(node)
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise YamlLimitError(
                f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); write "
                "the repeated parts out, or repeat them less",
                event.start_mark,
            )
        if self._depth + height > MAX_DEPTH:
            raise YamlLimitError(
                f"nesting deeper than {MAX_DEPTH} levels (through alias *{event.anchor})",
                event.start_mark,
            )
        return node

    def _measure(self, root: yaml.Node) -> tuple[int, int]:
        """Nodes and levels of ``root`` with its aliases expanded; each node is measured once,
        so this costs what the text costs however much the aliases expand."""
        measured = self._measured
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if id(node) in measured:
                continue
            children = _children(node)
            if not children_done:
                stack.append((node, True))
                stack.extend((child, False) for child in children if id(child) not in measured)
                continue
            size = 1 + sum(measured[id(child)][0] for child in children)
            height = 1 + max((measured[id(child)][1] for child in children), default=0)
            measured[id(node)] = (size, height)
        return measured[id(root)]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Build one value; a value Python refuses becomes an error at the node's line."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError) as error:
            reason = str(error).split("; use sys.set_int_max_str_digits")[0]
            what = node.tag.rsplit(":", 1)[-1]
            raise ConstructorError(
                None, None, f"cannot read {what}: {reason}", node.start_mark
            ) from None


def compose_documents(text: str) -> list[yaml.Node | None]:
    """Every document of ``text`` as a node tree.

    Raises :class:`YamlLimitError` past a bound, and :class:`yaml.YAMLError` for bad YAML."""
    loader = BoundedLoader(text)
    try:
        nodes: list[yaml.Node | None] = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    finally:
        loader.dispose()


def construct_document(node: yaml.Node) -> Any:
    """The plain data of one composed document; raises :class:`yaml.YAMLError`."""
    loader = BoundedLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()
