"""The filter: the index, routing rules to webhooks, and the actor shell."""

from __future__ import annotations

import dataclasses
import fnmatch
import queue
from typing import Any

import pykka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import RouterError
from router import filter as filter_module
from router.config import Config, WebhookConfig
from router.filter import Filter, FilterActor, Route, Swap
from router.messages import Accepted, Append, Event
from router.rules import OPERATORS, AllOf, AnyOf, Cond, Not, Rule
from tests.builders import cond, event, holds, rule

WAIT = 5.0


@pytest.fixture(autouse=True)
def _stop_actors():
    yield
    pykka.ActorRegistry.stop_all()


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("patterns", "type", "result"),
    [
        (["TODO_*"], "TODO_CREATED", True),
        (["TODO_*"], "TODO_", True),
        (["TODO_*"], "COMMENT_CREATED", False),
        (["TODO_*"], "todo_created", False),
        (["*.created"], "comment.created", True),
        (["*.created"], "comment.deleted", False),
        (["TODO_CREATED"], "TODO_CREATED", True),
        (["TODO_CREATED"], "TODO_CREATED_X", False),
        (["TODO_?"], "TODO_A", True),
        (["TODO_?"], "TODO_AB", False),
        (["?ODO_*"], "TODO_A", True),
        (["[AB]_X"], "B_X", True),
        (["[AB]_X"], "C_X", False),
        (["*"], "anything.at.all", True),
        ([], "anything", True),
        (["A", "B_*", "*_C"], "X_C", True),
        (["A", "B_*", "*_C"], "X_D", False),
    ],
)
def test_event_type_matches_any_glob_of_the_rule(patterns, type, result):
    f = Filter([("w", (rule(events=patterns),))])
    assert (f.match(event(type=type)) == ("w",)) is result


@pytest.mark.parametrize(
    ("projects", "companies", "project", "company", "result"),
    [
        ([], [], None, None, True),
        (["p1", "p2"], [], "p2", None, True),
        (["p1", "p2"], [], "p9", "acme", False),
        (["p1"], [], None, "acme", False),
        ([], ["acme"], "p1", "acme", True),
        ([], ["acme"], "p1", "globex", False),
        ([], ["acme"], "p1", None, False),
        (["p1"], ["acme"], "p1", "acme", True),
        (["p1"], ["acme"], "p1", "globex", False),
        (["p1"], ["acme"], "p2", "acme", False),
    ],
)
def test_project_and_company_lists_restrict_and_empty_means_any(
    projects, companies, project, company, result
):
    f = Filter([("w", (rule(projects=projects, companies=companies),))])
    assert (f.match(event(project=project, company=company)) == ("w",)) is result


def test_rules_of_one_webhook_are_ored():
    f = Filter(
        [
            (
                "audit",
                (
                    rule(events=["COMMENT_*"], projects=["p1"]),
                    rule(events=["TODO_DELETED"], companies=["globex"]),
                ),
            )
        ]
    )
    assert f.match(event(type="COMMENT_ADDED", project="p1")) == ("audit",)
    assert f.match(event(type="TODO_DELETED", project="p7", company="globex")) == ("audit",)
    assert f.match(event(type="TODO_DELETED", project="p1", company="acme")) == ()


def test_matching_webhooks_come_once_each_in_config_order():
    f = Filter(
        [
            ("zeta", (rule(events=["TODO_*"]), rule(projects=["p1"]), rule())),
            ("alpha", (rule(companies=["acme"]),)),
            ("none", (rule(events=["OTHER"]),)),
            ("mid", (rule(events=["TODO_CREATED"], where=cond("data.n", "eq", 1)),)),
            ("empty", ()),
        ]
    )
    assert f.match(event(data={"n": 1})) == ("zeta", "alpha", "mid")
    assert f.match(event(company=None, data={"n": 2})) == ("zeta",)


def test_where_is_tested_after_type_project_and_company():
    f = Filter([("w", (rule(projects=["p1"], where=cond("data.priority", "in", ["high"])),))])
    assert f.match(event(data={"priority": "high"})) == ("w",)
    assert f.match(event(data={"priority": "low"})) == ()
    assert f.match(event(project="p2", data={"priority": "high"})) == ()


def test_from_config_keeps_every_webhook_and_its_rules():
    config = Config(
        path="/x/router.yaml",
        state_dir="/x/var",
        webhooks=(
            WebhookConfig(name="a", url="http://127.0.0.1/a", rules=(rule(events=["A"]),)),
            WebhookConfig(name="b", url="http://127.0.0.1/b", enabled=False),
        ),
    )
    f = Filter.from_config(config)
    assert f.names == ("a", "b")
    assert f.match(event(type="A")) == ("a", "b")


def test_duplicate_webhook_names_are_refused():
    with pytest.raises(RouterError):
        Filter([("w", ()), ("w", ())])


# --------------------------------------------------------------------------- the index


def test_routing_tests_only_the_rules_that_could_match():
    webhooks = []
    for i in range(10_000):
        kind = i % 4
        if kind == 0:
            r = rule(events=[f"T{i}_CREATED"])
        elif kind == 1:
            r = rule(events=["TODO_*"], projects=[f"p{i}"])
        elif kind == 2:
            r = rule(events=["*.created"], companies=[f"c{i}"], where=cond("data.n", "gt", 0))
        else:
            r = rule(projects=[f"p{i}"], where=cond("data.n", "gt", 0))
        webhooks.append((f"w{i}", (r,)))
    f = Filter(webhooks)
    assert f.candidate_count(event(type="TODO_CREATED", project="p5", company="c6")) == 1
    assert f.match(event(type="TODO_CREATED", project="p5", company="c6")) == ("w5",)
    ev = event(type="x.created", project="p7", company="c6", data={"n": 1})
    assert f.candidate_count(ev) == 2
    assert f.match(ev) == ("w6", "w7")
    assert f.candidate_count(event(type="T8_CREATED", project="p0", company="c0")) == 1
    assert f.candidate_count(event(type="NOTHING", project="p2", company="c2")) == 0


def test_routing_stays_correct_past_the_type_cache_size(monkeypatch):
    monkeypatch.setattr(filter_module, "TYPE_CACHE_SIZE", 2)
    f = Filter([("a", (rule(events=["A*"]),)), ("b", (rule(events=["*B"]),))])
    for _ in range(3):
        for type, want in [("AX", ("a",)), ("XB", ("b",)), ("AB", ("a", "b")), ("X", ())]:
            assert f.match(event(type=type)) == want


# --------------------------------------------------------------------------- the actor


class Exploding:
    """A data value whose comparison raises, to make matching one event fail."""

    def __eq__(self, other):
        raise RuntimeError("boom")

    __hash__ = None  # type: ignore[assignment]


def accepted(id: str, **kw) -> Accepted:
    return Accepted(event=event(id=id, **kw), reply=None)


def start_actor(f: Filter, sink=None):
    out: queue.Queue = queue.Queue()
    ref = FilterActor.start(f, sink or out.put)
    return ref, out


def test_route_sends_one_append_with_targets_per_batch():
    f = Filter([("crm", (rule(events=["TODO_*"]),)), ("audit", (rule(projects=["p2"]),))])
    ref, out = start_actor(f)
    ref.tell(Route((accepted("1"), accepted("2", project="p2"), accepted("3", type="X"))))
    append = out.get(timeout=WAIT)
    assert isinstance(append, Append)
    assert [(i.event.id, i.targets) for i in append.items] == [
        ("1", ("crm",)),
        ("2", ("crm", "audit")),
        ("3", ()),
    ]


def test_routing_lets_go_of_the_data_and_keeps_every_other_field():
    """Every field of ``Event`` and ``Accepted``, present and future, survives the filter."""
    values = {f.name: object() for f in dataclasses.fields(Event)}
    values |= {"type": "T", "project": None, "company": None, "data": {"big": [1] * 1000}}
    others = {f.name: object() for f in dataclasses.fields(Accepted)}
    del others["event"], others["targets"]
    ref, out = start_actor(Filter([("w", (rule(),))]))
    ref.tell(Route((Accepted(event=Event(**values), **others),)))
    routed = out.get(timeout=WAIT).items[0]
    assert routed.targets == ("w",)
    assert not routed.event.data
    for name, value in {**values, **others}.items():
        if name != "data":
            kept = getattr(routed.event if name in values else routed, name)
            assert kept is value, name


def test_swap_applies_between_routes():
    ref, out = start_actor(Filter([("old", (rule(),))]))
    ref.tell(Route((accepted("1"),)))
    ref.tell(Swap(Filter([("new", (rule(),))])))
    ref.tell(Route((accepted("2"),)))
    assert out.get(timeout=WAIT).items[0].targets == ("old",)
    assert out.get(timeout=WAIT).items[0].targets == ("new",)


def test_failing_event_is_journaled_without_targets_and_actor_lives(caplog):
    f = Filter([("w", (rule(where=cond("data.x", "eq", "y")),))])
    ref, out = start_actor(f)
    ref.tell(Route((accepted("bad", data={"x": Exploding()}), accepted("good", data={"x": "y"}))))
    append = out.get(timeout=WAIT)
    assert [(i.event.id, i.targets) for i in append.items] == [("bad", ()), ("good", ("w",))]
    assert any("bad" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    ref.tell(Route((accepted("later", data={"x": "y"}),)))
    assert out.get(timeout=WAIT).items[0].targets == ("w",)


def test_failing_sink_is_logged_and_actor_lives(caplog):
    calls: queue.Queue = queue.Queue()

    def sink(message):
        calls.put(message)
        if len(message.items) == 1 and message.items[0].event.id == "first":
            raise OSError("journal gone")

    ref, _ = start_actor(Filter([("w", (rule(),))]), sink)
    ref.tell(Route((accepted("first"),)))
    ref.tell(Route((accepted("second"),)))
    assert calls.get(timeout=WAIT).items[0].event.id == "first"
    assert calls.get(timeout=WAIT).items[0].event.id == "second"
    assert ref.is_alive()
    assert any("first" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# --------------------------------------------------------------------------- property

TYPES = ["A_X", "A_Y", "B_X", "B_Y", "c.x", "c.y", "AA_X", "A_"]
PATTERNS = ["A_*", "*_X", "A_X", "?_Y", "c.*", "*", "[AB]_X", "*.y", "A_?", "B_Y", "c.x", "A*"]
PROJECTS = ["p1", "p2", "p3"]
COMPANIES = ["c1", "c2"]
FIELDS = ["data.a", "data.a", "data.b", "data.c.d", "data.a.0", "data.gone", "type", "project"]
SCALARS = st.sampled_from([None, True, False, 0, 1, 1.0, 2, -1.5, "", "x", "xy", "A_X", "p1"])
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.fixed_dictionaries({"d": SCALARS}))


@st.composite
def conds(draw):
    field = draw(st.sampled_from(FIELDS))
    op = draw(st.sampled_from(OPERATORS))
    if op in ("in", "nin"):
        value = draw(st.lists(SCALARS, max_size=3))
    elif op == "exists":
        value = draw(st.booleans())
    elif op == "regex":
        value = draw(st.sampled_from(["^x", "y$", "b", "^A_"]))
    elif op == "glob":
        value = draw(st.sampled_from(["x*", "?y", "*", "A_*"]))
    elif op == "prefix":
        value = draw(st.sampled_from(["", "x", "a", "A_"]))
    else:
        value = draw(SCALARS)
    return cond(field, op, value)


PREDS = st.recursive(
    conds(),
    lambda inner: st.one_of(
        st.builds(lambda xs: AllOf(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(lambda xs: AnyOf(tuple(xs)), st.lists(inner, max_size=3)),
        st.builds(Not, inner),
    ),
    max_leaves=5,
)
RULES = st.builds(
    rule,
    events=st.lists(st.sampled_from(PATTERNS), max_size=2),
    projects=st.lists(st.sampled_from(PROJECTS), max_size=2),
    companies=st.lists(st.sampled_from(COMPANIES), max_size=2),
    where=st.none() | PREDS,
)
EVENTS = st.builds(
    event,
    type=st.sampled_from(TYPES),
    project=st.sampled_from([None, "p1", "p2", "p4"]),
    company=st.sampled_from([None, "c1", "c2", "c3"]),
    data=st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3),
)


def ref_lookup(ev: Event, path: tuple[str, ...]) -> tuple[bool, Any]:
    if len(path) == 1 and path[0] in ("type", "id", "timestamp", "company", "project"):
        value = getattr(ev, path[0])
        return value is not None, value
    if path[0] != "data":
        return False, None
    value: Any = ev.data
    for seg in path[1:]:
        if isinstance(value, dict) and seg in value:
            value = value[seg]
        elif isinstance(value, list) and seg.isdigit() and int(seg) < len(value):
            value = value[int(seg)]
        else:
            return False, None
    return True, value


def ref_kind(v: Any) -> str:
    if type(v) is bool:
        return "bool"
    if type(v) in (int, float):
        return "number"
    return type(v).__name__


def ref_same(a: Any, b: Any) -> bool:
    if ref_kind(a) != ref_kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(ref_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(ref_same(a[k], b[k]) for k in a)
    return a == b


def ref_cond(c: Cond, ev: Event) -> bool:
    found, v = ref_lookup(ev, c.path)
    if c.op == "exists":
        return found == c.value
    if not found:
        return False
    x = c.value
    if c.op == "eq":
        return ref_same(v, x)
    if c.op == "ne":
        return not ref_same(v, x)
    if c.op == "in":
        return any(ref_same(v, y) for y in x)
    if c.op == "nin":
        return not any(ref_same(v, y) for y in x)
    if c.op in ("gt", "gte", "lt", "lte"):
        if ref_kind(v) != ref_kind(x) or ref_kind(v) not in ("number", "str"):
            return False
        return {"gt": v > x, "gte": v >= x, "lt": v < x, "lte": v <= x}[c.op]
    if not isinstance(v, str):
        return False
    if c.op == "prefix":
        return v.startswith(x)
    if c.op == "glob":
        return fnmatch.fnmatchcase(v, x)
    return x.search(v) is not None


def ref_pred(p, ev: Event) -> bool:
    if isinstance(p, Cond):
        return ref_cond(p, ev)
    if isinstance(p, AllOf):
        return all(ref_pred(i, ev) for i in p.items)
    if isinstance(p, AnyOf):
        return any(ref_pred(i, ev) for i in p.items)
    return not ref_pred(p.item, ev)


def ref_match(webhooks, ev: Event) -> tuple[str, ...]:
    out = []
    for name, rules in webhooks:
        for r in rules:
            if r.events and not any(fnmatch.fnmatchcase(ev.type, pat) for pat in r.events):
                continue
            if r.projects and ev.project not in r.projects:
                continue
            if r.companies and ev.company not in r.companies:
                continue
            if r.where is not None and not ref_pred(r.where, ev):
                continue
            out.append(name)
            break
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(RULES, max_size=3), min_size=1, max_size=6),
    st.lists(EVENTS, min_size=1, max_size=6),
)
def test_match_agrees_with_a_plain_scan_of_every_webhook(rule_lists, events):
    webhooks = [(f"w{i}", tuple(rules)) for i, rules in enumerate(rule_lists)]
    f = Filter(webhooks)
    for ev in events:
        want = ref_match(webhooks, ev)
        assert f.match(ev) == want
        assert tuple(e.webhook for e in f.explain(ev) if e.matched) == want


NARROW = st.sampled_from([None, True, False, 0, 1, 1.0, "", "x", "p1"])


@st.composite
def narrow_conds(draw):
    field = draw(st.sampled_from(["data.a", "data.a.0", "data.b.d", "project"]))
    op = draw(st.sampled_from(OPERATORS))
    if op in ("in", "nin"):
        value = draw(st.lists(NARROW, max_size=3))
    elif op == "exists":
        value = draw(st.booleans())
    elif op == "regex":
        value = draw(st.sampled_from(["^x", "y$", "1"]))
    elif op == "glob":
        value = draw(st.sampled_from(["x*", "?y", "*"]))
    elif op == "prefix":
        value = draw(st.sampled_from(["", "x", "p"]))
    else:
        value = draw(NARROW)
    return cond(field, op, value)


@settings(max_examples=1000, deadline=None)
@given(
    narrow_conds(),
    st.builds(
        event,
        project=st.sampled_from([None, "p1", "x"]),
        company=st.sampled_from([None, "xy"]),
        data=st.fixed_dictionaries(
            {},
            optional={
                "a": st.one_of(NARROW, st.lists(NARROW, max_size=2)),
                "b": st.fixed_dictionaries({}, optional={"d": NARROW}),
            },
        ),
    ),
)
def test_every_operator_agrees_with_a_plain_interpretation(c, ev):
    assert holds(c, ev) is ref_cond(c, ev)
    assert holds(Not(c), ev) is not ref_cond(c, ev)


def test_the_route_cache_keeps_answering_right_when_it_overflows(monkeypatch):
    monkeypatch.setattr(filter_module, "ROUTE_CACHE_SIZE", 4)
    f = Filter([("p1", (Rule(projects=frozenset({"p1"})),)), ("all", (Rule(),))])
    for i in range(20):
        assert f.match(event(type=f"T{i}", project="p1")) == ("p1", "all")
        assert f.match(event(type=f"T{i}", project="p2")) == ("all",)
    assert len(f._routes) <= 4
