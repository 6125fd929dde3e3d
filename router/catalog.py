"""The catalog: what the router has seen, for people writing a subscription (``event-types``).

The filter actor notes every event it routes, one batch at a time; the API reads it. It
keeps, per company (events without one under none), each event type with its count, when
the router last saw it and the dotted paths of ``data`` seen with it (key names, never
values), and the projects seen. Kept per company so that a company-scoped token is shown
only what was seen with its own companies: other tenants' types, counts, paths, projects
and names stay unknown to it (``view``).

Bounded, first come first kept: an entry that is in goes on counting; one past a bound is
not kept, and the answer says ``truncated``. The bounds:

- 1,000 event types, 1,000 companies and 1,000 projects (distinct names);
- 10,000 (company, type) entries and 10,000 (company, project) pairs;
- 100 paths per (company, type) entry, 8 levels deep under ``data``;
- names and paths of at most 200 characters (longer ones are not kept);
- ``MAX_BYTES`` (8 MiB) in all, by its own estimate of what each entry holds.

Cheap on the data path: a few dict lookups per event. ``data`` is walked for the first
``WALK_FIRST`` events of an entry, then one in ``WALK_EVERY``, never once the entry holds
its 100 paths, and one walk visits at most ``WALK_KEYS`` keys: a path that only rare
events carry may be missed. Not persisted: a restart starts it empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from router.clock import Clock, iso
from router.messages import Accepted

log = logging.getLogger(__name__)

MAX_TYPES = 1_000
MAX_COMPANIES = 1_000
MAX_PROJECTS = 1_000
MAX_ENTRIES = 10_000  # (company, type)
MAX_PAIRS = 10_000  # (company, project)
MAX_PATHS = 100  # per (company, type) entry, and per type in an answer
MAX_DEPTH = 8  # key levels under data
MAX_CHARS = 200  # of a name or a path
MAX_BYTES = 8 * 1024 * 1024
WALK_FIRST = 8
WALK_EVERY = 64  # a power of two
WALK_KEYS = 256
TEXT_COST = 100  # bytes a kept string costs besides its characters (object, dict slot)
ENTRY_COST = 250  # bytes an entry or pair costs (its object, its dict or set slots)
PATH_COST = 60  # bytes a path costs in one entry's set, besides its text
_MASK = WALK_EVERY - 1


class _Seen:
    """One event type as seen with one company."""

    __slots__ = ("count", "last", "paths")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.paths: set[str] = set()


class _Tenant:
    """What was seen with one company (or with none)."""

    __slots__ = ("projects", "types")

    def __init__(self) -> None:
        self.types: dict[str, _Seen] = {}
        self.projects: set[str] = set()


class Catalog:
    """The event types, paths, projects and companies seen; see the module docstring.

    Written by the filter actor's thread, read by the API's: one lock, taken once a batch.
    """

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._tenants: dict[str | None, _Tenant] = {}
        self._names: dict[str, str] = {}  # every kept name and path, kept once
        self._types: set[str] = set()
        self._projects: set[str] = set()
        self._entries = self._pairs = 0
        self._bytes = 0
        self.truncated = ""  # the first bound that kept something out ("": none yet)

    # ------------------------------------------------------------------ the data path

    def note(self, items: Iterable[Accepted]) -> None:
        """Count the events of one batch (before the filter lets their data go)."""
        now = self._clock.time()
        tenants = self._tenants
        with self._lock:
            for item in items:
                event = item.event
                tenant = tenants.get(event.company)
                if tenant is None and (tenant := self._tenant(event.company)) is None:
                    continue
                seen = tenant.types.get(event.type)
                if seen is None and (seen := self._seen(tenant, event.type)) is None:
                    continue
                seen.count += 1
                seen.last = now
                project = event.project
                if project is not None and project not in tenant.projects:
                    self._project(tenant, project)
                count = seen.count
                if (count <= WALK_FIRST or not count & _MASK) and len(seen.paths) < MAX_PATHS:
                    self._walk(event.data, seen.paths)

    def _tenant(self, company: str | None) -> _Tenant | None:
        # Each of these first answers quickly once its bound was hit and logged: the
        # common case past a bound, for every event that brings something new.
        if company is not None:
            full = len(self._tenants) >= MAX_COMPANIES
            if full and self.truncated:
                return None
            if not self._room("companies", full, company, ENTRY_COST):
                return None
            company = self._keep(company)
        tenant = self._tenants[company] = _Tenant()
        return tenant

    def _seen(self, tenant: _Tenant, etype: str) -> _Seen | None:
        if self._entries >= MAX_ENTRIES and self.truncated:
            return None
        if etype not in self._types:
            if not self._room("event types", len(self._types) >= MAX_TYPES, etype, 0):
                return None
            self._types.add(self._keep(etype))
        if not self._room("entries", self._entries >= MAX_ENTRIES, "", ENTRY_COST):
            return None
        self._entries += 1
        seen = tenant.types[self._names[etype]] = _Seen()
        return seen

    def _project(self, tenant: _Tenant, project: str) -> None:
        if self._pairs >= MAX_PAIRS and self.truncated:
            return
        if project not in self._projects:
            full = len(self._projects) >= MAX_PROJECTS
            if full and self.truncated:
                return
            if not self._room("projects", full, project, 0):
                return
            self._projects.add(self._keep(project))
        if self._room("projects of companies", self._pairs >= MAX_PAIRS, "", ENTRY_COST):
            self._pairs += 1
            tenant.projects.add(self._names[project])

    def _walk(self, data: dict[str, Any], paths: set[str]) -> None:
        """Add the dotted paths of ``data``'s keys (lists are not entered), breadth first."""
        level = [("data", data)]
        visits = 0
        for _ in range(MAX_DEPTH):
            deeper = []
            for prefix, node in level:
                for key, value in node.items():
                    visits += 1
                    if visits > WALK_KEYS:
                        return
                    if not key or "." in key:  # no dotted path reaches it
                        continue
                    path = f"{prefix}.{key}"
                    if path not in paths:
                        if len(paths) >= MAX_PATHS:
                            return
                        if len(path) > MAX_CHARS:
                            continue
                        if not self._room("paths", False, path, PATH_COST):
                            return
                        paths.add(self._keep(path))
                    if type(value) is dict and value:
                        deeper.append((path, value))
            if not deeper:
                return
            level = deeper

    def _room(self, what: str, full: bool, text: str, cost: int) -> bool:
        """Whether one more of ``what`` fits (``full``: its count is at its bound), holding
        ``text`` and costing ``cost`` bytes more; the first bound hit is logged, once."""
        if not full:
            if len(text) > MAX_CHARS:
                return False  # too long to show anyone: not kept, and no bound was hit
            new = 0 if text in self._names else len(text) + TEXT_COST
            if self._bytes + new + cost <= MAX_BYTES:
                self._bytes += cost
                return True
        if not self.truncated:
            self.truncated = what if full else f"{MAX_BYTES} bytes"
            log.warning(
                "event-type catalog: %s at its bound; more are counted in metrics but not"
                " listed by GET /api/v1/event-types", self.truncated,
            )  # fmt: skip
        return False

    def _keep(self, text: str) -> str:
        """``text`` as kept: one copy of each name and path, however many entries use it."""
        kept = self._names.get(text)
        if kept is None:
            kept = self._names[text] = text
            self._bytes += len(text) + TEXT_COST
        return kept

    # ------------------------------------------------------------------ the API

    def view(self, companies: frozenset[str] | None = None) -> dict[str, Any]:
        """What was seen: with every company (``None``) or only with ``companies``.

        A company-scoped token passes its companies: it hears of nothing else, not even
        of events without a company.
        """
        with self._lock:
            tenants = [
                (name, tenant)
                for name, tenant in self._tenants.items()
                if companies is None or name in companies
            ]
            merged: dict[str, list] = {}
            for _, tenant in tenants:
                for etype, seen in tenant.types.items():
                    m = merged.get(etype)
                    if m is None:
                        merged[etype] = [seen.count, seen.last, set(seen.paths)]
                    else:
                        m[0] += seen.count
                        m[1] = max(m[1], seen.last)
                        m[2] |= seen.paths
            projects = sorted(set().union(*(t.projects for _, t in tenants)))
            truncated = bool(self.truncated)
        return {
            "event_types": [
                {
                    "type": etype,
                    "count": count,
                    "last_seen": iso(last),
                    "paths": sorted(paths)[:MAX_PATHS],
                }
                for etype, (count, last, paths) in sorted(merged.items())
            ],
            "projects": projects,
            "companies": sorted(name for name, _ in tenants if name is not None),
            "truncated": truncated,
        }
