"""The filter: which webhooks an event goes to, found through an index, not a scan.

Rules (router.rules) are compiled once into closures (router.predicates) when a
``Filter`` is built; matching an event never walks the rule tree. Routing must not
cost more with every webhook configured, so rules are indexed by event type (exact
names, literal glob prefixes, the few patterns without one), and each type's rules
are partitioned by project and company. One event tests only the rules that could
match it. ``FilterActor`` is the thin pykka shell the data path talks to.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pykka

from router import RouterError
from router.actor import Actor
from router.catalog import Catalog
from router.clock import Clock
from router.messages import Accepted, Append, Event
from router.predicates import Explanation, Test, compile_pred, explain_webhooks
from router.rules import Rule

logger = logging.getLogger(__name__)

TYPE_CACHE_SIZE = 4096  # distinct event types whose candidate rules are kept
ROUTE_CACHE_SIZE = 65536  # distinct (type, project, company) whose routing is kept
_WILDCARDS = re.compile(r"[*?\[]")

# (webhook index, companies still to check or None, where or None)
Entry = tuple[int, frozenset[str] | None, Test | None]
Candidates = tuple[Entry, ...]

# --------------------------------------------------------------------------- index


@functools.lru_cache(maxsize=TYPE_CACHE_SIZE)
def _glob(pattern: str) -> Callable[[str], Any]:
    """A pattern's compiled test: thousands of webhooks share a few patterns (``TODO_*``)."""
    return re.compile(fnmatch.translate(pattern)).match


def _entry(index: int, rule: Rule, memo: dict) -> Entry:
    """What is left to test once the index vouched for type and project or company.

    A rule with projects is found by project, so its companies are still to check;
    a rule without is found by company (or has none), so only ``where`` is left.
    Companies depend only on the envelope; ``where`` is the one part that depends on
    the payload, so it is kept apart and is all that runs per event once cached.
    """
    where = compile_pred(rule.where, memo) if rule.where is not None else None
    companies = rule.companies if rule.companies and rule.projects else None
    return (index, companies, where)


@dataclass(frozen=True, slots=True)
class _Route:
    """The answer for one (type, project, company): fixed matches, and the ones that hinge
    on the payload (``where``)."""

    fixed: frozenset[int]
    names: tuple[str, ...]  # the answer when ``conditional`` is empty
    conditional: tuple[tuple[int, Test], ...]


@dataclass(frozen=True, slots=True)
class _Part:
    """Rules split by what the index can look up directly, each list in config order."""

    by_project: dict[str, Candidates]
    by_company: dict[str, Candidates]
    rest: Candidates


_NOTHING = _Part({}, {}, ())


def _partition(rule_ids: Iterable[int], rules: list[tuple[Rule, tuple]]) -> _Part:
    """Split rules (ids into ``rules``: each rule with its compiled candidate entry)."""
    by_project: dict[str, list] = {}
    by_company: dict[str, list] = {}
    rest: list = []
    for rid in sorted(set(rule_ids)):
        rule, entry = rules[rid]
        if rule.projects:
            for project in rule.projects:
                by_project.setdefault(project, []).append(entry)
        elif rule.companies:
            for company in rule.companies:
                by_company.setdefault(company, []).append(entry)
        else:
            rest.append(entry)
    if not (by_project or by_company or rest):
        return _NOTHING
    return _Part(
        {k: tuple(v) for k, v in by_project.items()},
        {k: tuple(v) for k, v in by_company.items()},
        tuple(rest),
    )


class Filter:
    """The compiled subscriptions of every webhook; immutable once built, replaced on reload.

    Args:
        webhooks: (name, rules) pairs in config order; rules of one webhook are OR-ed.
    """

    def __init__(self, webhooks: Iterable[tuple[str, tuple[Rule, ...]]]):
        self._webhooks = tuple((name, tuple(rules)) for name, rules in webhooks)
        self.names = tuple(name for name, _ in self._webhooks)
        if len(set(self.names)) != len(self.names):
            raise RouterError("webhook names must be unique")
        self._rules: list[tuple[Rule, Entry]] = []
        memo: dict = {}
        any_type: list[int] = []
        self._exact: dict[str, list[int]] = {}
        self._prefixed: dict[str, list[tuple[Callable, int]]] = {}
        self._wild: list[tuple[Callable, int]] = []
        for index, (_, rules) in enumerate(self._webhooks):
            for rule in rules:
                rid = len(self._rules)
                self._rules.append((rule, _entry(index, rule, memo)))
                if not rule.events or any(p and not p.strip("*") for p in rule.events):
                    any_type.append(rid)
                    continue
                for pattern in rule.events:
                    self._index_pattern(pattern, rid)
        self._any_type = _partition(any_type, self._rules)
        self._typed = functools.lru_cache(maxsize=TYPE_CACHE_SIZE)(self._part_for_type)
        self._routes: dict[tuple[str, str | None, str | None], _Route] = {}

    @classmethod
    def from_config(cls, config: Any) -> Filter:
        """Build from a ``router.config.Config``: every webhook, enabled or not (held)."""
        return cls((w.name, w.rules) for w in config.webhooks)

    def _index_pattern(self, pattern: str, rid: int) -> None:
        wildcard = _WILDCARDS.search(pattern)
        if wildcard is None:
            self._exact.setdefault(pattern, []).append(rid)
            return
        entry = (_glob(pattern), rid)
        if wildcard.start() == 0:
            self._wild.append(entry)
        else:
            self._prefixed.setdefault(pattern[: wildcard.start()], []).append(entry)

    def _part_for_type(self, event_type: str) -> _Part:
        """The rules whose ``events`` patterns match this type; cached per type."""
        found = list(self._exact.get(event_type, ()))
        for end in range(1, len(event_type) + 1):
            for glob, rid in self._prefixed.get(event_type[:end], ()):
                if glob(event_type):
                    found.append(rid)
        found.extend(rid for glob, rid in self._wild if glob(event_type))
        return _partition(found, self._rules)

    def _route_for(self, event_type: str, project: str | None, company: str | None) -> _Route:
        """Everything about routing that the envelope decides; cached per envelope."""
        fixed: set[int] = set()
        conditional: list[tuple[int, Test]] = []
        for part in (self._any_type, self._typed(event_type)):
            if part is _NOTHING:
                continue
            for candidates in (
                part.by_project.get(project, ()),
                part.by_company.get(company, ()),
                part.rest,
            ):
                for index, companies, where in candidates:
                    if companies is not None and company not in companies:
                        continue
                    if where is None:
                        fixed.add(index)
                    elif index not in fixed:
                        conditional.append((index, where))
        conditional = [(i, w) for i, w in conditional if i not in fixed]
        names = tuple(self.names[i] for i in sorted(fixed))
        return _Route(frozenset(fixed), names, tuple(conditional))

    def match(self, event: Event) -> tuple[str, ...]:
        """Names of the webhooks this event goes to, each once, in config order."""
        key = (event.type, event.project, event.company)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= ROUTE_CACHE_SIZE:
                # Keep the newer half: cheaper than LRU bookkeeping on every hit.
                newer = list(self._routes.items())[ROUTE_CACHE_SIZE // 2 :]
                self._routes = dict(newer)
            route = self._routes[key] = self._route_for(*key)
        if not route.conditional:
            return route.names
        found = set(route.fixed)
        for index, where in route.conditional:  # a plain loop: no generator per event
            if index not in found and where(event):
                found.add(index)
        names = self.names
        return tuple([names[i] for i in sorted(found)])

    def candidate_count(self, event: Event) -> int:
        """How many rules routing this event tests: for diagnostics, benchmarks and tests."""
        return sum(
            len(part.by_project.get(event.project, ()))
            + len(part.by_company.get(event.company, ()))
            + len(part.rest)
            for part in (self._any_type, self._typed(event.type))
        )

    def explain(self, event: Event) -> list[Explanation]:
        """Why each webhook does or does not take this event (for ``check --explain``).

        Decisions come from the same compiled conditions as ``match``; this walk is
        slow and meant for people, not the data path.
        """
        return explain_webhooks(self._webhooks, event)


# --------------------------------------------------------------------------- actor


@dataclass(frozen=True, slots=True)
class Route:
    """Find the targets of these accepted events and pass them on as one ``Append``."""

    items: tuple[Accepted, ...]


@dataclass(frozen=True, slots=True)
class Swap:
    """Replace the filter (config reload); takes effect between two ``Route`` messages."""

    filter: Filter


class FilterAddress:
    """The filter actor as the receiver's sink: whichever one runs now.

    Its owner sets ``ref`` when it starts a filter actor (and again when it restarts
    one that died), so the receiver keeps one sink for its whole life.
    """

    def __init__(self) -> None:
        self.ref: pykka.ActorRef | None = None

    def route(self, items: tuple[Accepted, ...]) -> None:
        self.ref.tell(Route(items))


class FilterActor(Actor):
    """Thin shell around ``Filter``: one ``Append`` out per ``Route`` in.

    An event whose matching raises is still journaled, with no targets, and logged:
    losing the batch would lose events the producer may already count as sent. The
    ``catalog`` (router.catalog) notes each batch first, while the events still hold
    their data; it outlives the actor (a reload, a restart), so its owner passes it in
    (without one, the actor keeps a catalog of its own).
    """

    def __init__(
        self, filter: Filter, sink: Callable[[object], None], catalog: Catalog | None = None
    ):
        super().__init__()
        self._filter = filter
        self._sink = sink
        self._catalog = Catalog(Clock()) if catalog is None else catalog

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, Route):
                self._route(message)
            elif isinstance(message, Swap):
                self._filter = message.filter
                logger.info("filter replaced: %d webhooks", len(message.filter.names))
            else:
                logger.warning("filter actor ignored unexpected message %r", type(message))
        except Exception:
            ids = [i.event.id for i in getattr(message, "items", ())]
            logger.exception("filter failed on a message; event ids %s", ids)
        return None

    def _route(self, message: Route) -> None:
        try:
            self._catalog.note(message.items)
        except Exception:  # a bug in the catalog must not hold events back
            logger.exception("the event-type catalog failed on a batch; routing it anyway")
        match = self._filter.match
        routed = []
        for item in message.items:
            try:
                targets = match(item.event)
            except Exception:
                logger.exception(
                    "matching event %s failed; journaled with no targets", item.event.id
                )
                targets = ()
            routed.append(_routed(item, targets))
        self._sink(Append(tuple(routed)))


_NO_DATA: Any = MappingProxyType({})


def _routed(item: Accepted, targets: tuple[str, ...]) -> Accepted:
    """``item`` with its targets, and without its decoded data, which has served its
    purpose: from here on only the payload's text travels, so a small frame that
    decodes large does not stay large. Built field by field, as ``dataclasses.replace``
    costs several times as much per event (a test checks that no field is left out).
    """
    e = item.event
    event = Event(e.id, e.type, e.timestamp, e.company, e.project, _NO_DATA, e.payload, e.cost)
    return Accepted(event, item.reply, targets)
