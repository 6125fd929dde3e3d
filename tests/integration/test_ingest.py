"""Bad input on both sockets is refused with a reason and never stops good events."""

import msgpack
import pytest

from tests.integration.conftest import wait_until

BAD = [
    ("not_msgpack", [b"\xc1\xc1 not msgpack"]),
    ("not_map", [msgpack.packb([1, 2, 3])]),
    ("missing_type", [msgpack.packb({"data": {}})]),
    ("bad_type", [msgpack.packb({"type": ""})]),
    ("bad_type", [msgpack.packb({"type": "x" * 201})]),
    ("bad_id", [msgpack.packb({"type": "T", "id": 7})]),
    ("bad_company", [msgpack.packb({"type": "T", "company": 1})]),
    ("bad_project", [msgpack.packb({"type": "T", "project": ["p"]})]),
    ("bad_timestamp", [msgpack.packb({"type": "T", "timestamp": "yesterday"})]),
    ("bad_data", [msgpack.packb({"type": "T", "data": [1]})]),
    ("bad_data", [msgpack.packb({"type": "T", "data": {"b": b"\x00bytes"}})]),
    ("bad_data", [msgpack.packb({"type": "T", "data": {1: "int key"}}, strict_types=False)]),
    ("unknown_key", [msgpack.packb({"type": "T", "extra": 1})]),
    ("too_large", [msgpack.packb({"type": "T", "data": {"x": "y" * 2048}})]),
    ("multipart", [msgpack.packb({"type": "T"}), msgpack.packb({"type": "T"})]),
]


@pytest.fixture
def router(hooks, daemon_factory):
    d = daemon_factory([{"name": "all", "url": hooks.url("/all")}])
    d.settings["ingest"]["max_event_bytes"] = 1024
    d.write()
    return d.start()


def test_every_bad_event_is_answered_with_its_reason_on_the_acked_socket(router, hooks):
    for reason, frames in BAD:
        reply = router.send_raw(*frames)
        assert reply["ok"] is False, (reason, reply)
        assert reply["error"].startswith(reason), (reason, reply)
    assert router.send({"type": "T", "id": "good"}) == {"ok": True, "id": "good"}
    wait_until(lambda: hooks.ids("/all") == ["good"], what="the good event")
    status = router.status()["events"]
    assert status["rejected"] == len(BAD)


def test_bad_events_on_the_pull_socket_are_dropped_and_good_ones_still_go(router, hooks):
    # One socket, so the first ten to arrive, the ones logged, are the first ten of BAD.
    good = [msgpack.packb({"type": "T", "id": "after"})]
    router.push_in_order(*(frames for _, frames in BAD), good)
    wait_until(lambda: hooks.ids("/all") == ["after"], what="the good event")
    wait_until(lambda: router.status()["events"]["rejected"] == len(BAD), what="the count")
    # Logged once each, rate-limited: the first ten by reason, then a count of the rest.
    first = "rejected an event on the push socket: not_msgpack"  # counted, then logged
    wait_until(lambda: first in router.log(), what="the first rejection logged")
    wait_until(lambda: "5 more bad events were not logged" in router.log(), what="the summary")


def test_a_duplicate_id_is_acked_but_not_delivered_again(router, hooks):
    assert router.send({"type": "T", "id": "once"}) == {"ok": True, "id": "once"}
    again = router.send({"type": "T", "id": "once"})
    assert again["ok"] is True and again["id"] == "once"
    router.send({"type": "T", "id": "marker"})  # attempts run side by side: either may be first
    wait_until(lambda: {"once", "marker"} <= set(hooks.ids("/all")), what="both events")
    assert hooks.ids("/all").count("once") == 1
    assert router.status()["events"]["duplicates"] == 1


def test_events_without_id_get_unique_time_sortable_ids(router, hooks):
    acks = [router.send({"type": "T"})["id"] for _ in range(5)]
    assert len(set(acks)) == 5 and acks == sorted(acks)
    wait_until(lambda: sorted(hooks.ids("/all")) == acks, what="five deliveries")
