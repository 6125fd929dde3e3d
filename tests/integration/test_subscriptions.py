"""A matrix of events through the running daemon to a dozen webhooks with different rules:
each webhook gets exactly the events its subscription names, no more, no fewer."""

import itertools

from tests.integration.conftest import wait_until

WEBHOOKS = [
    {"name": "all"},
    {"name": "todo-created", "events": ["TODO_CREATED"]},
    {"name": "todo-any", "events": ["TODO_*"]},
    {"name": "dotted", "events": ["*.created"]},
    {"name": "p1", "projects": ["p1"]},
    {"name": "acme", "companies": ["acme"]},
    {
        "name": "acme-p2-comments",
        "events": ["COMMENT_*"],
        "projects": ["p2"],
        "companies": ["acme"],
    },
    {"name": "urgent", "where": {"field": "data.priority", "in": ["high", "urgent"]}},
    {
        "name": "not-archived-todos",
        "events": ["TODO_*"],
        "where": {
            "all": [
                {"field": "data.priority", "exists": True},
                {"not": {"field": "data.archived", "eq": True}},
            ]
        },
    },
    {
        "name": "cross-company",
        "match": [
            {"events": ["COMMENT_*"], "projects": ["p1"]},
            {"events": ["TODO_DELETED"], "companies": ["globex"]},
        ],
    },
    {"name": "tagged", "where": {"field": "data.tags.0", "eq": "bug"}},
    {
        "name": "big-estimates",
        "where": {
            "any": [
                {"field": "data.estimate", "gte": 8},
                {"field": "data.title", "regex": "^URGENT"},
            ]
        },
    },
]

TYPES = ["TODO_CREATED", "TODO_DELETED", "COMMENT_CREATED", "record.created"]
PROJECTS = [None, "p1", "p2"]
COMPANIES = [None, "acme", "globex"]
DATAS = [
    {},
    {"priority": "high", "archived": False, "tags": ["bug", "ui"], "estimate": 8},
    {"priority": "low", "archived": True, "tags": ["ui"], "estimate": "8", "title": "URGENT: fix"},
]


def expected(name: str, e: dict) -> bool:
    """The rules above, written out by hand."""
    t, p, c, data = e["type"], e.get("project"), e.get("company"), e["data"]
    return {
        "all": True,
        "todo-created": t == "TODO_CREATED",
        "todo-any": t.startswith("TODO_"),
        "dotted": t.endswith(".created"),
        "p1": p == "p1",
        "acme": c == "acme",
        "acme-p2-comments": t.startswith("COMMENT_") and p == "p2" and c == "acme",
        "urgent": data.get("priority") in ("high", "urgent"),
        "not-archived-todos": t.startswith("TODO_")
        and "priority" in data
        and data.get("archived") is not True,
        "cross-company": (t.startswith("COMMENT_") and p == "p1")
        or (t == "TODO_DELETED" and c == "globex"),
        "tagged": bool(data.get("tags")) and data["tags"][0] == "bug",
        "big-estimates": (isinstance(data.get("estimate"), int) and data["estimate"] >= 8)
        or str(data.get("title", "")).startswith("URGENT"),
    }[name]


def test_each_webhook_gets_exactly_its_subscribed_events(hooks, daemon_factory):
    d = daemon_factory([dict(w, url=hooks.url("/" + w["name"])) for w in WEBHOOKS]).start()
    events = []
    for i, (t, p, c, data) in enumerate(itertools.product(TYPES, PROJECTS, COMPANIES, DATAS)):
        e = {"type": t, "id": f"m{i}", "data": data}
        if p:
            e["project"] = p
        if c:
            e["company"] = c
        events.append(e)
        assert d.send(e)["ok"] is True
    want = {w["name"]: sorted(e["id"] for e in events if expected(w["name"], e)) for w in WEBHOOKS}
    total = sum(len(v) for v in want.values())
    wait_until(lambda: len(hooks.requests) >= total, timeout=30, what=f"{total} deliveries")
    got = {w["name"]: sorted(hooks.ids("/" + w["name"])) for w in WEBHOOKS}
    assert got == want
    assert all(want.values()), "every webhook should match something in the matrix"


def test_reload_swaps_the_subscription_index_whole(hooks, daemon_factory):
    d = daemon_factory([{"name": "s", "url": hooks.url("/s"), "events": ["OLD_*"]}]).start()
    d.send({"type": "OLD_ONE", "id": "o1"})
    d.send({"type": "NEW_ONE", "id": "n1"})
    wait_until(lambda: hooks.ids("/s") == ["o1"], what="the old rule")
    d.settings["webhooks"][0]["events"] = ["NEW_*"]
    d.write()
    d.reload()
    assert d.count_notified("RELOADING=1") == 1
    d.send({"type": "OLD_ONE", "id": "o2"})
    d.send({"type": "NEW_ONE", "id": "n2"})
    wait_until(lambda: hooks.ids("/s") == ["o1", "n2"], what="the new rule")
