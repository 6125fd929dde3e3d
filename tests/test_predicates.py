"""Predicates: operator semantics, field resolution, and explanations."""

from __future__ import annotations

import pytest

from router.filter import Filter
from router.predicates import format_explanation
from router.rules import AllOf, AnyOf, Not
from tests.builders import cond, event, holds, rule

# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("value", "op", "expected", "result"),
    [
        ("high", "eq", "high", True),
        ("high", "eq", "low", False),
        (1, "eq", 1.0, True),
        (True, "eq", 1, False),
        (1, "eq", True, False),
        (True, "eq", True, True),
        (0, "eq", False, False),
        (None, "eq", None, True),
        ("1", "eq", 1, False),
        ([1, 2], "eq", "x", False),
        ({"a": 1}, "eq", 1, False),
        ("low", "ne", "high", True),
        ("high", "ne", "high", False),
        (True, "ne", 1, True),
        ("high", "in", ["high", "urgent"], True),
        ("low", "in", ["high", "urgent"], False),
        (True, "in", [1, 2], False),
        (1, "in", [True, 2], False),
        (2.0, "in", [1, 2], True),
        (None, "in", [None, "x"], True),
        (["high"], "in", ["high"], False),
        ("low", "nin", ["high", "urgent"], True),
        ("high", "nin", ["high", "urgent"], False),
        (True, "nin", [1], True),
        (5, "gt", 3, True),
        (3, "gt", 3, False),
        (3, "gte", 3, True),
        (2.5, "lt", 3, True),
        (3, "lte", 3.0, True),
        ("b", "gt", "a", True),
        ("a", "lt", "b", True),
        ("5", "gt", 3, False),
        (5, "gt", "3", False),
        (True, "gt", 0, False),
        (1, "gt", False, False),
        (None, "lt", 3, False),
        ([1], "gte", 0, False),
        ("todo-123", "prefix", "todo-", True),
        ("task-123", "prefix", "todo-", False),
        (123, "prefix", "1", False),
        ("report.pdf", "glob", "*.pdf", True),
        ("report.PDF", "glob", "*.pdf", False),
        ("a1", "glob", "a?", True),
        (7, "glob", "*", False),
        ("order 42 shipped", "regex", r"\d+ shipped$", True),
        ("order shipped", "regex", r"\d+", False),
        (42, "regex", r"\d+", False),
        ("x", "exists", True, True),
        (None, "exists", True, True),
        ("x", "exists", False, False),
    ],
)
def test_operator_compares_present_value_without_raising(value, op, expected, result):
    assert holds(cond("data.x", op, expected), event(data={"x": value})) is result


@pytest.mark.parametrize(
    ("op", "expected", "result"),
    [
        ("exists", False, True),
        ("exists", True, False),
        ("eq", None, False),
        ("ne", "high", False),
        ("in", ["a"], False),
        ("nin", ["a"], False),
        ("gt", 0, False),
        ("lte", 0, False),
        ("prefix", "", False),
        ("glob", "*", False),
        ("regex", "", False),
    ],
)
def test_missing_field_fails_every_operator_but_exists_false(op, expected, result):
    assert holds(cond("data.x", op, expected), event(data={"y": 1})) is result


def test_not_of_a_condition_holds_when_field_is_missing():
    assert holds(Not(cond("data.archived", "eq", True)), event(data={}))
    assert not holds(Not(cond("data.archived", "eq", True)), event(data={"archived": True}))


@pytest.mark.parametrize(
    ("field", "result"),
    [
        ("data.tags.0", "a"),
        ("data.tags.1", "b"),
        ("data.tags.2", None),
        ("data.items.1.name", "second"),
        ("data.items.x", None),
        ("data.numbered.0", "zero"),
        ("data.deep.a.b.c", 3),
        ("data.deep.a.b.c.d", None),
        ("data.tags.0.x", None),
    ],
)
def test_dotted_paths_walk_dicts_and_index_lists(field, result):
    ev = event(
        data={
            "tags": ["a", "b"],
            "items": [{"name": "first"}, {"name": "second"}],
            "numbered": {"0": "zero"},
            "deep": {"a": {"b": {"c": 3}}},
        }
    )
    if result is None:
        assert holds(cond(field, "exists", False), ev)
    else:
        assert holds(cond(field, "eq", result), ev)


def test_top_level_fields_resolve_from_the_event():
    ev = event(type="TODO_CREATED", id="abc", company="acme", project="p1", timestamp=100.0)
    assert holds(cond("type", "glob", "TODO_*"), ev)
    assert holds(cond("id", "eq", "abc"), ev)
    assert holds(cond("company", "eq", "acme"), ev)
    assert holds(cond("project", "in", ["p1", "p2"]), ev)
    assert holds(cond("timestamp", "gt", 99), ev)
    assert not holds(cond("type.x", "exists", True), ev)
    assert not holds(cond("nowhere", "exists", True), ev)


def test_event_without_company_or_project_has_them_missing():
    ev = event(company=None, project=None)
    assert holds(cond("company", "exists", False), ev)
    assert not holds(cond("project", "ne", "p1"), ev)


def test_all_any_not_nest():
    ev = event(data={"priority": "high", "archived": False, "n": 5})
    pred = AllOf(
        (
            AnyOf((cond("data.priority", "eq", "urgent"), cond("data.n", "gte", 5))),
            Not(cond("data.archived", "eq", True)),
            Not(AnyOf((cond("data.n", "lt", 0), cond("data.missing", "exists", True)))),
        )
    )
    assert holds(pred, ev)
    assert not holds(pred, event(data={"priority": "high", "archived": True, "n": 5}))
    assert not holds(pred, event(data={"priority": "low", "archived": False, "n": 4}))
    assert holds(AllOf(()), ev)
    assert not holds(AnyOf(()), ev)


def test_conditions_equal_but_for_type_stay_apart():
    f = Filter(
        [
            ("true", (rule(where=cond("data.x", "eq", True, "a.yaml:1")),)),
            ("one", (rule(where=cond("data.x", "eq", 1, "a.yaml:2")),)),
            ("one-again", (rule(where=cond("data.x", "eq", 1.0, "a.yaml:3")),)),
            ("in-true", (rule(where=cond("data.x", "in", [True])),)),
            ("in-one", (rule(where=cond("data.x", "in", [1])),)),
        ]
    )
    assert f.match(event(data={"x": True})) == ("true", "in-true")
    assert f.match(event(data={"x": 1})) == ("one", "one-again", "in-one")


# --------------------------------------------------------------------------- explain


def test_explain_names_the_first_failed_condition_of_each_rule():
    f = Filter(
        [
            ("types", (rule(events=["TODO_CREATED", "COMMENT_*"], source="r.yaml:3"),)),
            ("projects", (rule(projects=["p2", "p1"]),)),
            ("companies", (rule(companies=["globex"]),)),
            (
                "where",
                (
                    rule(
                        where=AllOf(
                            (
                                cond("data.n", "eq", 1),
                                cond("data.priority", "in", ["high", "urgent"], "r.yaml:9"),
                            )
                        )
                    ),
                    rule(where=cond("data.gone", "exists", True)),
                ),
            ),
            ("hit", (rule(events=["NOPE"]), rule(events=["TODO_*"], source="r.yaml:20"))),
        ]
    )
    ev = event(type="TODO_DELETED", project="p9", data={"n": 1, "priority": "low"})
    by_name = {e.webhook: e for e in f.explain(ev)}
    assert [e.webhook for e in f.explain(ev)] == list(f.names)
    assert by_name["types"].reasons == (
        "rule 1 (r.yaml:3): type 'TODO_DELETED' matches none of ['TODO_CREATED', 'COMMENT_*']",
    )
    assert by_name["projects"].reasons == ("rule 1: project 'p9' not in ['p1', 'p2']",)
    assert by_name["companies"].reasons == ("rule 1: company 'acme' not in ['globex']",)
    assert by_name["where"].reasons == (
        "rule 1: where data.priority in ['high', 'urgent'] failed: value is 'low' (r.yaml:9)",
        "rule 2: where data.gone exists failed: field is missing",
    )
    assert by_name["hit"].matched and by_name["hit"].matched_by == "rule 2 (r.yaml:20)"
    assert [e.matched for e in f.explain(ev)] == [False, False, False, False, True]


def test_explain_describes_missing_project_any_and_not():
    f = Filter(
        [
            ("p", (rule(projects=["p1"]),)),
            ("any", (rule(where=AnyOf((cond("data.a", "eq", 1), cond("data.b", "gt", 2)))),)),
            ("not", (rule(where=Not(cond("data.archived", "eq", True), source="r.yaml:4")),)),
        ]
    )
    ev = event(project=None, data={"a": 2, "archived": True})
    reasons = {e.webhook: e.reasons for e in f.explain(ev)}
    assert reasons["p"] == ("rule 1: event has no project; rule needs one of ['p1']",)
    assert reasons["any"] == (
        "rule 1: where none of any held: data.a eq 1 failed: value is 2; "
        "data.b gt 2 failed: field is missing",
    )
    assert reasons["not"] == (
        "rule 1: where not (data.archived eq True) failed: data.archived eq True holds (r.yaml:4)",
    )


def test_format_explanation_shows_matches_and_reasons():
    f = Filter([("crm", (rule(events=["TODO_*"]),)), ("audit", (rule(events=["COMMENT_*"]),))])
    text = format_explanation(f.explain(event()))
    assert text.splitlines() == [
        "crm: matched by rule 1",
        "audit: no match",
        "  rule 1: type 'TODO_CREATED' matches none of ['COMMENT_*']",
    ]
    assert "no webhook matches" in format_explanation(f.explain(event(type="OTHER")))
