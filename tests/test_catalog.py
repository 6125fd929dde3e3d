"""The catalog of what the router has seen: counts, paths without values, tenants, bounds."""

from __future__ import annotations

import logging
import queue
import random

import pykka
import pytest

from router import catalog as catalog_module
from router.catalog import Catalog
from router.clock import Clock
from router.filter import Filter, FilterActor, Route
from router.messages import Accepted
from tests.builders import event, rule

WAIT = 5.0


class SetClock(Clock):
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _stop_actors():
    yield
    pykka.ActorRegistry.stop_all()


def note(c: Catalog, *events) -> None:
    c.note([Accepted(e, None) for e in events])


def types(view: dict) -> dict[str, dict]:
    return {t["type"]: t for t in view["event_types"]}


def test_each_type_has_its_count_last_seen_and_data_paths_but_no_values():
    clock = SetClock()
    c = Catalog(clock)
    data = {"priority": "urgent", "owner": {"id": 41953, "email": "x@y.z"}, "tags": ["a", {"b": 1}]}
    note(c, event("TODO_CREATED", data=data), event("COMMENT_ADDED", project="p2"))
    clock.now += 60
    note(c, event("TODO_CREATED", data={"priority": "low", "due": None}))
    view = c.view()
    todo = types(view)["TODO_CREATED"]
    assert todo == {
        "type": "TODO_CREATED",
        "count": 2,
        "last_seen": "2027-01-15T08:01:00.000Z",
        "paths": ["data.due", "data.owner", "data.owner.email", "data.owner.id", "data.priority",
                  "data.tags"],
    }  # fmt: skip
    assert types(view)["COMMENT_ADDED"]["paths"] == []
    assert list(types(view)) == ["COMMENT_ADDED", "TODO_CREATED"]  # sorted by name
    assert (view["projects"], view["companies"], view["truncated"]) == (
        ["p1", "p2"],
        ["acme"],
        False,
    )
    for value in ("urgent", "low", "x@y.z", "41953"):  # paths and names only
        assert value not in repr(view)


def test_a_company_token_sees_only_what_was_seen_with_its_companies():
    c = Catalog(SetClock())
    note(
        c,
        event("SHARED", company="acme", project="acme-p", data={"a": 1}),
        event("SHARED", company="acme", project="acme-p"),
        event("SHARED", company="globex", project="globex-secret", data={"merger_plan": 1}),
        event("GLOBEX_ONLY", company="globex"),
        event("NOBODYS", company=None, project="internal"),
        event("INITECH", company="initech"),
    )
    acme = c.view(frozenset({"acme"}))
    assert types(acme) == {"SHARED": {"type": "SHARED", "count": 2, "paths": ["data.a"],
                                      "last_seen": types(acme)["SHARED"]["last_seen"]}}  # fmt: skip
    assert (acme["projects"], acme["companies"]) == (["acme-p"], ["acme"])
    for other in ("globex", "merger_plan", "GLOBEX_ONLY", "NOBODYS", "internal", "initech"):
        assert other not in repr(acme), other
    both = c.view(frozenset({"acme", "globex", "absent"}))
    assert types(both)["SHARED"]["count"] == 3
    assert types(both)["SHARED"]["paths"] == ["data.a", "data.merger_plan"]
    assert both["companies"] == ["acme", "globex"]  # "absent" was never seen: not named
    everything = c.view()
    assert set(types(everything)) == {"SHARED", "GLOBEX_ONLY", "NOBODYS", "INITECH"}
    assert everything["companies"] == ["acme", "globex", "initech"]
    assert everything["projects"] == ["acme-p", "globex-secret", "internal", "p1"]


def test_data_is_walked_for_the_first_events_of_a_type_then_one_in_walk_every():
    c = Catalog(SetClock())
    first = catalog_module.WALK_FIRST
    for i in range(1, catalog_module.WALK_EVERY + 1):
        note(c, event("T", data={f"k{i}": 1}))
    paths = types(c.view())["T"]["paths"]
    assert paths == sorted([f"data.k{i}" for i in range(1, first + 1)]
                           + [f"data.k{catalog_module.WALK_EVERY}"])  # fmt: skip


def test_paths_stop_at_the_depth_bound_and_skip_keys_no_dotted_path_reaches():
    c = Catalog(SetClock())
    deep: dict = {"leaf": 1}
    for level in range(12, 0, -1):
        deep = {f"l{level}": deep}
    note(c, event("T", data={**deep, "a.b": 1, "": 2, "x" * 300: 3, "ok": {"fine": 1}}))
    paths = types(c.view())["T"]["paths"]
    chain = [".".join(["data"] + [f"l{i}" for i in range(1, n + 1)]) for n in range(1, 9)]
    assert paths == sorted([*chain, "data.ok", "data.ok.fine"])
    assert max(p.count(".") for p in paths) == catalog_module.MAX_DEPTH


def test_one_walk_visits_at_most_walk_keys_and_an_entry_keeps_at_most_max_paths():
    c = Catalog(SetClock())
    note(c, event("WIDE", data={f"k{i:05d}": i for i in range(100_000)}))
    assert len(types(c.view())["WIDE"]["paths"]) == catalog_module.MAX_PATHS
    for i in range(8):
        note(c, event("MANY", data={f"k{i}-{j}": j for j in range(30)}))
    assert len(types(c.view())["MANY"]["paths"]) == catalog_module.MAX_PATHS


def test_past_a_bound_new_names_are_left_out_old_ones_go_on_counting_and_it_is_logged_once(
    monkeypatch, caplog
):
    monkeypatch.setattr(catalog_module, "MAX_TYPES", 3)
    monkeypatch.setattr(catalog_module, "MAX_COMPANIES", 2)
    monkeypatch.setattr(catalog_module, "MAX_PROJECTS", 2)
    c = Catalog(SetClock())
    with caplog.at_level(logging.WARNING, logger="router.catalog"):
        for i in range(10):
            note(c, event(f"T{i}", company=f"c{i}", project=f"p{i}"), event("T0", company="c0"))
    view = c.view()
    assert [(t["type"], t["count"]) for t in view["event_types"]] == [("T0", 11), ("T1", 1)]
    assert (view["companies"], view["projects"], view["truncated"]) == (
        ["c0", "c1"], ["p0", "p1"], True
    )  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["event-type catalog: companies at its bound; more are counted in"
                        " metrics but not listed by GET /api/v1/event-types"]  # fmt: skip


def test_names_longer_than_max_chars_are_not_kept():
    c = Catalog(SetClock())
    long = "x" * (catalog_module.MAX_CHARS + 1)
    note(c, event("T", company=long), event("T", project=long), event("U", company=None))
    view = c.view()
    assert long not in repr(view)
    assert (view["truncated"], [t["type"] for t in view["event_types"]]) == (False, ["T", "U"])


def test_hostile_traffic_keeps_the_catalog_within_its_bytes_and_counts(monkeypatch):
    monkeypatch.setattr(catalog_module, "MAX_BYTES", 200_000)
    rnd = random.Random(7)
    c = Catalog(SetClock())

    def word() -> str:
        return "".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(1, 150)))

    for _ in range(300):
        batch = [
            event(word(), company=word(), project=word(), data={word(): {word(): 1}})
            for _ in range(20)
        ]
        note(c, *batch)
        assert c._bytes <= catalog_module.MAX_BYTES
    view = c.view()
    assert view["truncated"] is True and c.truncated == "200000 bytes"  # the bound that held
    assert c._entries <= catalog_module.MAX_ENTRIES and c._pairs <= catalog_module.MAX_PAIRS
    assert len(view["event_types"]) <= catalog_module.MAX_TYPES


def test_the_filter_actor_notes_each_batch_while_it_still_holds_its_data():
    c = Catalog(SetClock())
    out: queue.Queue = queue.Queue()
    ref = FilterActor.start(Filter([("w", (rule(events=["X"]),))]), out.put, c)
    items = (Accepted(event("X", data={"amount": 5}), None), Accepted(event("Y"), None))
    ref.tell(Route(items))
    append = out.get(timeout=WAIT)
    assert [i.targets for i in append.items] == [("w",), ()]  # routing as before
    assert {t["type"]: t["paths"] for t in c.view()["event_types"]} == {
        "X": ["data.amount"], "Y": []
    }  # fmt: skip


def test_a_catalog_that_fails_does_not_hold_events_back(caplog):
    class Broken(Catalog):
        def note(self, items) -> None:
            raise RuntimeError("a bug")

    out: queue.Queue = queue.Queue()
    ref = FilterActor.start(Filter([("w", (rule(),))]), out.put, Broken(SetClock()))
    with caplog.at_level(logging.ERROR, logger="router.filter"):
        ref.tell(Route((Accepted(event("X"), None),)))
        append = out.get(timeout=WAIT)
    assert [i.targets for i in append.items] == [("w",)]
    assert "the event-type catalog failed on a batch; routing it anyway" in caplog.text
