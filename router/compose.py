"""YAML composed into nodes from the parser's events, one webhook at a time.

``yaml.compose`` builds the whole file's node tree before anything reads it: for
10,000 webhooks that is about a million objects (~50 MB), and the memory they
leave fragmented stays with the daemon for its whole life. Here the items of one
list (the ``webhooks:`` of a main file, or an included file's top-level list) are
handed to ``each`` as soon as each is composed, and only what ``each`` returns is
kept: the nodes of one webhook are garbage before the next one is read.

Everything else is composed exactly as PyYAML's ``Composer`` does (same nodes,
tags, marks, anchors), so a reader sees the same tree. Errors are PyYAML's own
(``yaml.YAMLError``); a caller that wants them worded the same on every machine
parses again with the pure-Python loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: 5x faster

Each = Callable[[yaml.Node], yaml.Node]
_STR = "tag:yaml.org,2002:str"  # Resolver.DEFAULT_SCALAR_TAG


class _Composer:
    """PyYAML's ``Composer`` over ``LOADER``'s events, with one list streamed to ``each``."""

    def __init__(self, loader: Any, key: str | None, each: Each | None):
        if loader.yaml_path_resolvers:  # tags by position: not what a safe loader does
            raise RuntimeError("path resolvers are not supported")
        self._get = loader.get_event
        self._resolve = loader.resolve
        # A plain scalar whose first character starts no implicit type (no int, bool, null,
        # ...) is a string: what ``resolve`` would say, without asking it. The others
        # are asked once per distinct text (keys repeat a lot).
        implicit = loader.yaml_implicit_resolvers
        self._typed_starts = None if None in implicit else frozenset(implicit)
        self._tags: dict[str, str] = {}
        self._anchors: dict[str, yaml.Node] = {}
        self._key = key  # None: the root list is streamed; a name: that key of the root mapping
        self._each = each

    def document(self) -> yaml.Node | None:
        """The single document's root node (None for an empty stream), as ``get_single_node``."""
        get = self._get
        get()  # StreamStartEvent
        event = get()
        if type(event) is StreamEndEvent:
            return None
        root = self._node(get(), root=True)
        get()  # DocumentEndEvent
        if type(event := get()) is not StreamEndEvent:
            raise ComposerError("expected a single document in the stream", root.start_mark,
                                "but found another document", event.start_mark)  # fmt: skip
        return root

    def _node(self, event: Any, root: bool = False, stream: bool = False) -> yaml.Node:
        kind = type(event)
        if kind is AliasEvent:
            if event.anchor not in self._anchors:
                raise ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            return self._anchors[event.anchor]
        anchor = event.anchor
        if anchor is not None and anchor in self._anchors:
            raise ComposerError(f"found duplicate anchor {anchor!r}; first occurrence",
                                self._anchors[anchor].start_mark, "second occurrence",
                                event.start_mark)  # fmt: skip
        tag = event.tag
        if kind is ScalarEvent:
            node: yaml.Node = self._scalar(event)
        elif kind is SequenceStartEvent:
            if tag is None or tag == "!":
                tag = self._resolve(SequenceNode, None, event.implicit)
            node = SequenceNode(tag, [], event.start_mark, None, flow_style=event.flow_style)
            each = self._each
            stream = stream or (root and self._key is None)
            stream = stream and each is not None and anchor is None  # aliases need real nodes
            if anchor is not None:
                self._anchors[anchor] = node
            items, get = node.value, self._get
            while type(event := get()) is not SequenceEndEvent:
                if type(event) is ScalarEvent and event.anchor is None:
                    item = self._scalar(event)
                else:
                    item = self._node(event)
                items.append(each(item) if stream else item)
            node.end_mark = event.end_mark
            return node
        elif kind is MappingStartEvent:
            if tag is None or tag == "!":
                tag = self._resolve(MappingNode, None, event.implicit)
            node = MappingNode(tag, [], event.start_mark, None, flow_style=event.flow_style)
            if anchor is not None:
                self._anchors[anchor] = node
            pairs, get, want = node.value, self._get, self._key if root else None
            while type(event := get()) is not MappingEndEvent:
                if type(event) is ScalarEvent and event.anchor is None:
                    key = self._scalar(event)
                else:
                    key = self._node(event)
                found = want is not None and type(key) is ScalarNode and key.value == want
                if type(event := get()) is ScalarEvent and event.anchor is None:
                    pairs.append((key, self._scalar(event)))
                else:
                    pairs.append((key, self._node(event, stream=found)))
                if found:
                    want = None  # a duplicate of the key is reported, not read
            node.end_mark = event.end_mark
            return node
        else:  # pragma: no cover - the parser emits nothing else here
            raise ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)
        if anchor is not None:
            self._anchors[anchor] = node
        return node

    def _scalar(self, event: Any) -> ScalarNode:
        """The node of a scalar without an anchor (the caller looked), as ``Composer`` makes it."""
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            implicit, starts = event.implicit, self._typed_starts
            if not implicit[0] or (starts is not None and value[:1] not in starts):
                tag = _STR  # quoted, or plain text that no implicit type could match
            elif (tag := self._tags.get(value)) is None:
                tag = self._tags[value] = self._resolve(ScalarNode, value, implicit)
        return ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)


def compose(text: str, key: str | None = None, each: Each | None = None) -> yaml.Node | None:
    """Compose ``text`` (one document) into nodes; the list at ``key`` goes through ``each``.

    ``key`` names the root mapping's key whose list is streamed (its first occurrence,
    when it is a list without an anchor); None streams the root list itself. Each item's
    node is replaced in the list by what ``each`` returns. Without ``each``, nothing is.
    """
    loader = LOADER(text)
    try:
        return _Composer(loader, key, each).document()
    finally:
        loader.dispose()
