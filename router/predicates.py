"""Predicates: a rule's ``where`` compiled into closures, and explained in words.

``compile_pred`` turns a condition tree (router.rules) into one closure over an
event, resolving field paths once at build time; the filter's index runs these on
the data path. ``explain_webhooks`` answers the slow, human question (``check
--explain``): why does each webhook take or refuse this event? It decides with the
same compiled conditions, so an explanation cannot disagree with routing.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from router import RouterError
from router.messages import EVENT_KEYS, Event
from router.rules import AllOf, AnyOf, Cond, Not, Pred, Rule

_MISSING = object()
_ATTRS = tuple(k for k in EVENT_KEYS if k != "data")  # fields read off the Event itself

Test = Callable[[Event], bool]

# --------------------------------------------------------------------------- compile


def _getter(path: tuple[str, ...]) -> Callable[[Event], Any]:
    """Compile a field path into a function returning its value or ``_MISSING``.

    ``company``/``project`` that are ``None`` count as missing. Under ``data`` a
    digit segment indexes a list. An unknown or over-long path is always missing.
    """
    head = path[0] if path else ""
    if head in _ATTRS:
        if len(path) != 1:
            return lambda event: _MISSING
        if head in ("company", "project"):
            return lambda event: _MISSING if (v := getattr(event, head)) is None else v
        return lambda event: getattr(event, head)
    if head != "data":
        return lambda event: _MISSING
    if len(path) == 2:
        key = path[1]
        if not key.isdigit():
            return lambda event: event.data.get(key, _MISSING)
    steps = tuple((seg, int(seg) if seg.isdigit() else None) for seg in path[1:])

    def get(event: Event) -> Any:
        value: Any = event.data
        for key, index in steps:
            if isinstance(value, dict):
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return _MISSING
            elif index is not None and isinstance(value, list | tuple) and index < len(value):
                value = value[index]
            else:
                return _MISSING
        return value

    return get


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    """Equality that keeps types apart: ``True`` is not ``1``, but ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _equal_to(expected: Any) -> Callable[[Any], bool]:
    """Compile ``_equal(value, expected)``, with fast paths for the common kinds."""
    if isinstance(expected, str):
        return lambda v: v == expected  # no non-str value equals a str
    if expected is None or isinstance(expected, bool):
        return lambda v: v is expected
    return lambda v: _equal(v, expected)


def _membership(values: Iterable[Any]) -> Callable[[Any], bool]:
    """Compile ``value in values`` with ``_equal``'s typing; strings go through a set."""
    strs = {v for v in values if isinstance(v, str)}
    rest = tuple(v for v in values if not isinstance(v, str))
    if not rest:
        return lambda v: isinstance(v, str) and v in strs
    return lambda v: v in strs if isinstance(v, str) else any(_equal(v, o) for o in rest)


def _order(op: str, expected: Any) -> Callable[[Any], bool]:
    """Compile gt/gte/lt/lte: both numbers (bools excluded) or both strings, else false."""
    compare = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}[op]
    if _is_number(expected):
        return lambda v: _is_number(v) and compare(v, expected)
    if isinstance(expected, str):
        return lambda v: isinstance(v, str) and compare(v, expected)
    return lambda v: False


def _value_test(op: str, expected: Any) -> Callable[[Any], bool]:
    """Compile the test applied to a present field value."""
    if op in ("eq", "ne"):
        equal = _equal_to(expected)
        return equal if op == "eq" else lambda v: not equal(v)
    if op in ("in", "nin"):
        contains = _membership(expected)
        return contains if op == "in" else lambda v: not contains(v)
    if op in ("gt", "gte", "lt", "lte"):
        return _order(op, expected)
    if op == "prefix":
        return lambda v: isinstance(v, str) and isinstance(expected, str) and v.startswith(expected)
    if op == "glob":
        glob = re.compile(fnmatch.translate(str(expected))).match
        return lambda v: isinstance(v, str) and glob(v) is not None
    if op == "regex":
        search = (expected if isinstance(expected, re.Pattern) else re.compile(expected)).search
        return lambda v: isinstance(v, str) and search(v) is not None
    raise RouterError(f"unknown operator {op!r}")


def compile_pred(pred: Pred, memo: dict | None = None) -> Test:
    """Compile a predicate tree into one closure over an event.

    A missing field makes ``exists: false`` true and every other operator false,
    ``ne`` and ``nin`` included: "priority ne low" should not select events that
    carry no priority at all. ``not:`` negates the whole condition, so
    ``not: {field: x, eq: 1}`` does hold when ``x`` is missing.

    With ``memo``, equal predicates (ignoring ``source``) share one closure: many
    webhooks repeat the same conditions, and shared closures stay in CPU caches.
    """
    if memo is None:
        return _compile(pred, None)
    try:
        key = _shape(pred)
        hash(key)
    except TypeError:  # an unhashable value somewhere: compile it on its own
        return _compile(pred, memo)
    if key not in memo:
        memo[key] = _compile(pred, memo)
    return memo[key]


def _shape(pred: Pred) -> tuple:
    """A predicate's meaning as a hashable value; raises TypeError for unhashable values."""
    if isinstance(pred, Cond):
        value = pred.value
        if isinstance(value, list | tuple):
            value = tuple((type(v), v) for v in value)
        return ("cond", pred.path, pred.op, type(value), value)
    if isinstance(pred, Not):
        return ("not", _shape(pred.item))
    return (type(pred).__name__, tuple(_shape(p) for p in pred.items))


def _compile(pred: Pred, memo: dict | None) -> Test:
    if isinstance(pred, Cond):
        get = _getter(pred.path)
        if pred.op == "exists":
            want = bool(pred.value)
            return lambda event: (get(event) is not _MISSING) is want
        test = _value_test(pred.op, pred.value)
        return lambda event: (v := get(event)) is not _MISSING and test(v)
    if isinstance(pred, AllOf | AnyOf):
        tests = tuple(compile_pred(p, memo) for p in pred.items)
        return _combine(tests, isinstance(pred, AllOf))
    if isinstance(pred, Not):
        inner = compile_pred(pred.item, memo)
        return lambda event: not inner(event)
    raise RouterError(f"not a predicate: {pred!r}")


def _combine(tests: tuple[Test, ...], every: bool) -> Test:
    """``all``/``any`` of compiled tests, unrolled for the short lists configs hold."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return (lambda e: a(e) and b(e)) if every else (lambda e: a(e) or b(e))

    if every:
        return lambda event: all(test(event) for test in tests)
    return lambda event: any(test(event) for test in tests)


# --------------------------------------------------------------------------- explain


@dataclass(frozen=True, slots=True)
class Explanation:
    """One webhook's verdict on one event.

    ``matched_by`` names the first rule that matched (``"rule 1 (FILE:LINE)"``);
    ``reasons`` holds, for every rule that did not match, its first failed condition.
    """

    webhook: str
    matched: bool
    matched_by: str | None
    reasons: tuple[str, ...]


def explain_webhooks(
    webhooks: Iterable[tuple[str, tuple[Rule, ...]]], event: Event
) -> list[Explanation]:
    """Why each webhook does or does not take this event, in config order.

    This walk is slow and meant for people, not the data path.
    """
    out = []
    for name, rules in webhooks:
        first, reasons = None, []
        for number, rule in enumerate(rules, 1):
            why = _why_rule_fails(rule, event)
            label = f"rule {number}" + (f" ({rule.source})" if rule.source else "")
            if why is None:
                first = first or label
            else:
                reasons.append(f"{label}: {why}")
        out.append(Explanation(name, first is not None, first, tuple(reasons)))
    return out


def format_explanation(explanations: list[Explanation]) -> str:
    """Render ``Filter.explain`` for a terminal: one line per webhook, reasons indented."""
    lines = []
    for e in explanations:
        if e.matched:
            lines.append(f"{e.webhook}: matched by {e.matched_by}")
        else:
            lines.append(f"{e.webhook}: no match")
            lines.extend(f"  {reason}" for reason in e.reasons)
    if not any(e.matched for e in explanations):
        lines.append("(no webhook matches this event)")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, re.Pattern):
        return repr(value.pattern)
    if isinstance(value, tuple | frozenset | set):
        value = sorted(value, key=repr) if not isinstance(value, tuple) else list(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _at(source: str) -> str:
    return f" ({source})" if source else ""


def _describe(pred: Pred) -> str:
    if isinstance(pred, Cond):
        if pred.op == "exists":
            return f"{pred.field} {'exists' if pred.value else 'does not exist'}"
        return f"{pred.field} {pred.op} {_show(pred.value)}"
    if isinstance(pred, Not):
        return f"not ({_describe(pred.item)})"
    joiner = " and " if isinstance(pred, AllOf) else " or "
    return "(" + joiner.join(_describe(p) for p in pred.items) + ")"


def _why_pred_fails(pred: Pred, event: Event) -> str | None:
    """The first failed condition of a predicate as a sentence, or None when it holds."""
    if isinstance(pred, Cond):
        if compile_pred(pred)(event):
            return None
        value = _getter(pred.path)(event)
        seen = "field is missing" if value is _MISSING else f"value is {_show(value)}"
        return f"{_describe(pred)} failed: {seen}{_at(pred.source)}"
    if isinstance(pred, AllOf):
        return next(filter(None, (_why_pred_fails(p, event) for p in pred.items)), None)
    if isinstance(pred, AnyOf):
        whys = [_why_pred_fails(p, event) for p in pred.items]
        if not all(whys):
            return None
        return f"none of any{_at(pred.source)} held: " + "; ".join(w for w in whys if w)
    if _why_pred_fails(pred.item, event) is not None:
        return None
    return f"{_describe(pred)} failed: {_describe(pred.item)} holds{_at(pred.source)}"


def _why_rule_fails(rule: Rule, event: Event) -> str | None:
    if rule.events and not any(fnmatch.fnmatchcase(event.type, p) for p in rule.events):
        return f"type {event.type!r} matches none of {list(rule.events)!r}"
    for what, allowed, value in (
        ("project", rule.projects, event.project),
        ("company", rule.companies, event.company),
    ):
        if allowed and value not in allowed:
            if value is None:
                return f"event has no {what}; rule needs one of {_show(allowed)}"
            return f"{what} {value!r} not in {_show(allowed)}"
    if rule.where is not None and (why := _why_pred_fails(rule.where, event)) is not None:
        return f"where {why}"
    return None
