"""Subscription rules as parsed config: what a webhook asks for. Matching lives in filter.py.

A webhook has one or more ``Rule``s, OR-ed. A rule is: the event type matches one
of ``events`` (glob patterns) AND the project is in ``projects`` AND the company
is in ``companies`` AND ``where`` holds. An empty ``events``/``projects``/
``companies`` means "any".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPERATORS = (
    "eq",
    "ne",
    "in",
    "nin",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "prefix",
    "glob",
    "regex",
)


@dataclass(frozen=True, slots=True)
class Cond:
    """``field`` (a dotted path, split into ``path``) compared with ``op`` to ``value``.

    For ``regex`` the value is the compiled ``re.Pattern``; for ``in``/``nin`` a tuple.
    """

    field: str
    op: str
    value: Any
    path: tuple[str, ...]
    source: str = ""  # "FILE:LINE" of the condition, for --explain


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Pred, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Pred, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class Not:
    item: Pred
    source: str = ""


Pred = Cond | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class Rule:
    events: tuple[str, ...] = ()
    projects: frozenset[str] = frozenset()
    companies: frozenset[str] = frozenset()
    where: Pred | None = None
    source: str = ""  # "FILE:LINE" of the rule, for --explain
