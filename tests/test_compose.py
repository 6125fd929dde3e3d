"""router.compose: the same nodes as PyYAML's composer, one webhook's nodes at a time."""

from __future__ import annotations

import gc
import weakref

import pytest
import yaml

from router.compose import compose

LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])

DOCUMENTS = [
    "",
    "# only a comment\n",
    "just text\n",
    "- a\n- 1\n- 1.5\n- true\n- ~\n- null\n-\n- 2026-01-02\n- '3'\n- \"no\"\n- !!str 4\n",
    "a: 1\nb: [x, {c: d}, []]\nc: {}\n'quoted key': !!int '7'\n? complex\n: value\n",
    "defaults: &d {timeout: 5s, retry: {attempts: 3}}\nother: *d\nlist: &l [1, 2]\nagain: *l\n",
    "webhooks:\n- name: a\n  url: http://x/\n  where: &w {field: data.p, eq: high}\n"
    "- name: b\n  url: http://y/\n  where: *w\nwebhooks: [dup]\n",
    "text: |\n  two\n  lines\nfolded: >\n  one\n  line\nempty: ''\n",
    "a: !custom 1\nb: ! 2\nc: !!binary aGk=\n",
    "<<: {a: 1}\nmerge: yes\noctal: 0o17\nhex: 0x1F\nsexagesimal: 1:30\ninf: .inf\n",
    "{webhooks: [{name: a, url: 'http://x/'}], bogus: 1}\n",
]


def shape(node: yaml.Node | None, seen: dict | None = None) -> object:
    """Everything a reader of the tree can see: kinds, tags, values, marks, shared nodes."""
    seen = {} if seen is None else seen
    if node is None:
        return None
    if id(node) in seen:
        return ("same as", seen[id(node)])
    seen[id(node)] = len(seen)
    marks = (node.start_mark.line, node.start_mark.column, node.end_mark.line,
             node.end_mark.column)  # fmt: skip
    if isinstance(node, yaml.ScalarNode):
        return ("scalar", node.tag, node.value, marks)
    if isinstance(node, yaml.SequenceNode):
        return ("seq", node.tag, marks, [shape(n, seen) for n in node.value])
    pairs = [(shape(k, seen), shape(v, seen)) for k, v in node.value]
    return ("map", node.tag, marks, pairs)


@pytest.mark.parametrize("loader", LOADERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("text", DOCUMENTS)
def test_the_nodes_are_the_ones_pyyaml_composes(text, loader):
    assert shape(compose(text)) == shape(yaml.compose(text, Loader=loader))


def test_the_items_of_the_first_webhooks_list_are_handed_over_as_they_are_read():
    text = DOCUMENTS[6] + "defaults: {webhooks: [nested]}\n"
    seen = []

    def each(node: yaml.Node) -> str:
        seen.append(node.value[0][1].value)  # the name
        return f"checked {len(seen)}"

    root = compose(text, "webhooks", each)
    assert seen == ["a", "b"]
    lists = [v for k, v in root.value if k.value == "webhooks"]
    assert lists[0].value == ["checked 1", "checked 2"]
    assert [n.value for n in lists[1].value] == ["dup"]  # a duplicate key is reported, not read
    nested = root.value[-1][1].value[0][1]
    assert [n.value for n in nested.value] == ["nested"]


def test_an_included_file_streams_its_own_list_and_a_main_file_does_not():
    text = "- name: a\n- name: b\n"
    assert [type(n) for n in compose(text, None, lambda n: n.value[0][1].value).value] == [str, str]
    main = compose(text, "webhooks", lambda n: "checked")
    assert all(isinstance(n, yaml.MappingNode) for n in main.value)


def test_a_list_with_an_anchor_is_composed_whole_for_its_aliases():
    text = "webhooks: &all\n- name: a\nagain: *all\n"
    root = compose(text, "webhooks", lambda n: "checked")
    assert isinstance(root.value[0][1].value[0], yaml.MappingNode)
    assert root.value[1][1] is root.value[0][1]


def test_one_webhooks_nodes_are_garbage_before_the_next_webhook_is_read():
    text = "webhooks:\n" + "".join(
        f"- name: h{i}\n  url: http://x/{i}\n  events: [A, B]\n" for i in range(50)
    )
    previous: list[weakref.ref] = []
    alive = []

    def each(node: yaml.Node) -> None:
        gc.collect()
        alive.append(sum(ref() is not None for ref in previous))
        previous[:] = [weakref.ref(node)] + [weakref.ref(n) for pair in node.value for n in pair]

    compose(text, "webhooks", each)
    assert alive == [0] * 50


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n--- \nb: 2\n",  # two documents
        "a: *nowhere\n",
        "a: &x 1\nb: &x 2\n",
        "a: [1, 2\n",
        "webhooks:\n- name: a\n- name: [\n",  # after a webhook was handed over
    ],
)
def test_what_pyyaml_refuses_is_refused_with_its_error_type(text):
    with pytest.raises(yaml.YAMLError):
        yaml.compose(text, Loader=yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        compose(text, "webhooks", lambda n: None)
