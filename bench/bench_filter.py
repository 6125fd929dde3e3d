"""How fast ``Filter.match`` routes as webhooks are added: 10, 1,000 and 10,000.

Run: ``.venv/bin/python bench/bench_filter.py [--events N]``. Prints figures, asserts
nothing. Tenants (projects, companies) grow with the webhook count, as they do in
a real deployment, so an event matches a similar number of webhooks at every size;
what must not grow is the cost of finding them. Target: 10,000 webhooks route at
least half as fast as 10.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.filter import Filter
from router.messages import Event, Payload
from router.rules import AllOf, Cond, Not, Rule

SIZES = (10, 1_000, 10_000)
POOL = 20_000  # distinct events, routed round-robin
OBJECTS = ("TODO", "COMMENT", "PROJECT", "USER", "FILE", "INVOICE", "TAG", "LIST")
VERBS = ("CREATED", "UPDATED", "DELETED", "MOVED", "ARCHIVED")
TYPES = [f"{o}_{v}" for o in OBJECTS for v in VERBS] + [
    f"{o.lower()}.{v.lower()}" for o in OBJECTS[:4] for v in VERBS[:3]
]
GLOBS = ("TODO_*", "COMMENT_*", "*.created", "*_DELETED", "FILE_*", "INVOICE_?REATED")


def cond(field: str, op: str, value) -> Cond:
    if op == "regex":
        value = re.compile(value)
    return Cond(field, op, value, tuple(field.split(".")))


HIGH = cond("data.priority", "in", ("high", "urgent"))
NOT_ARCHIVED = Not(cond("data.archived", "eq", True))
BIG = cond("data.amount", "gt", 100)


def tenants(n: int) -> tuple[list[str], list[str]]:
    return [f"p{i}" for i in range(max(2, n // 4))], [f"c{i}" for i in range(max(1, n // 20))]


def company_of(project: str, companies: list[str]) -> str:
    return companies[int(project[1:]) % len(companies)]


def webhooks(n: int, rnd: random.Random) -> list[tuple[str, tuple[Rule, ...]]]:
    """A mix of exact types, globs, tenant scopes and where clauses, plus three global hooks."""
    projects, companies = tenants(n)
    out = [
        ("audit", (Rule(),)),
        ("deletions", (Rule(events=("*_DELETED",)),)),
        ("urgent", (Rule(events=("TODO_*",), where=cond("data.priority", "eq", "urgent")),)),
    ]
    for i in range(n - len(out)):
        p = frozenset(rnd.sample(projects, rnd.choice((1, 1, 2))))
        c = frozenset({rnd.choice(companies)})
        exact = tuple(rnd.sample(TYPES, rnd.randint(1, 3)))
        kind = rnd.random()
        if kind < 0.35:
            rules = (Rule(events=exact, projects=p),)
        elif kind < 0.55:
            rules = (Rule(events=(rnd.choice(GLOBS),), companies=c),)
        elif kind < 0.70:
            rules = (Rule(projects=p, where=AllOf((HIGH, NOT_ARCHIVED))),)
        elif kind < 0.80:
            rules = (
                Rule(events=("COMMENT_*",), projects=p),
                Rule(events=("TODO_DELETED",), companies=c),
            )
        elif kind < 0.90:
            rules = (Rule(events=exact, companies=c, where=BIG),)
        else:
            rules = (Rule(events=exact, projects=p, companies=c),)
        out.append((f"hook-{i}", rules))
    return out


def events(n: int, rnd: random.Random) -> list[Event]:
    projects, companies = tenants(n)
    out = []
    for i in range(POOL):
        project = rnd.choice(projects)
        etype = rnd.choice(TYPES) if rnd.random() < 0.97 else f"RARE_{i % 500}"
        data = {
            "priority": rnd.choice(("low", "normal", "high", "urgent")),
            "archived": rnd.random() < 0.1,
            "amount": rnd.randint(0, 200),
            "tags": ["a", "b"],
        }
        out.append(
            Event(
                id=str(i),
                type=etype,
                timestamp=1_700_000_000.0 + i,
                company=company_of(project, companies),
                project=project,
                data=data,
                payload=Payload(str(i), etype, "{}"),
            )
        )
    return out


def prepare(n: int) -> tuple[Filter, list[Event]]:
    rnd = random.Random(n)
    hooks = webhooks(n, rnd)
    started = time.perf_counter()
    f = Filter(hooks)
    built = time.perf_counter() - started
    pool = events(n, rnd)
    matched = sum(len(f.match(e)) for e in pool)  # warms the per-type cache
    candidates = sum(f.candidate_count(e) for e in pool)
    print(
        f"{n:>6} webhooks: build {built * 1000:6.1f} ms   "
        f"{candidates / POOL:4.1f} candidates/event   {matched / POOL:4.1f} matches/event"
    )
    return f, pool


def rate(f: Filter, pool: list[Event], count: int) -> float:
    match = f.match
    started = time.perf_counter()
    for i in range(count):
        match(pool[i % POOL])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="per size (default 1M)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved; the median counts")
    args = parser.parse_args()
    setups = {n: prepare(n) for n in SIZES}
    rates: dict[int, list[float]] = {n: [] for n in SIZES}
    for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits every size
        for n, (f, pool) in setups.items():
            rates[n].append(rate(f, pool, args.events // args.rounds))
    # The median of long rounds: the best of short ones flattered the fastest size most.
    median = {n: statistics.median(r) for n, r in rates.items()}
    for n in SIZES:
        print(
            f"{n:>6} webhooks: {median[n]:>10,.0f} events/s "
            f"({1e9 / median[n]:,.0f} ns/event; median of {args.rounds} rounds, "
            f"range {min(rates[n]):,.0f}-{max(rates[n]):,.0f})"
        )
    print(f"ratio 10,000/10: {median[10_000] / median[10]:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
