"""Odd event ids: refused at ingest with a reason; one the router cannot send never disables."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import JournalDB, wait_until

ODD_IDS = ["订单-1", "line\r\nX-Injected: 1", "tab\there", "nul\x00", "with space"]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_an_id_that_cannot_travel_in_a_header_is_refused_and_the_webhook_stays_healthy(
    hooks, daemon_factory, odd
):
    d = daemon_factory([{"name": "w", "url": hooks.url("/w")}]).start()
    answer = d.send({"type": "X", "id": odd})
    assert answer["ok"] is False
    assert answer["error"].startswith("bad_id: id may hold only visible ASCII characters")
    assert d.send({"type": "X", "id": "next-1"})["ok"] is True
    wait_until(lambda: hooks.ids("/w") == ["next-1"], what="the next event")
    w = d.webhook("w")
    assert (w["state"], w["health"], w["consecutive_failures"]) == ("active", "HEALTHY", 0)
    assert "\r\nX-Injected" not in d.log()  # the id never reaches a log line raw either
    assert d.stop() == 0


def test_a_delivery_the_router_cannot_build_is_its_own_fault_and_never_disables(
    hooks, daemon_factory
):
    # A journal written by an older version may hold an id that ingest now refuses.
    d = daemon_factory([{"name": "w", "url": hooks.url("/w")}]).start()
    assert d.send({"type": "X", "id": "first"})["ok"] is True
    wait_until(lambda: d.webhook("w")["delivered"] == 1, what="the first delivery")
    assert d.stop() == 0
    journal = JournalDB(d, writable=True)
    body = '{"id":"订单-1","type":"X","timestamp":"2026-12-01T00:00:00.000Z","data":{}'
    ((seq,),) = journal.rows(
        "INSERT INTO events (id, type, received_at, body) VALUES (?, 'X', 0, ?) RETURNING seq",
        "订单-1", body,
    )  # fmt: skip
    journal.rows("INSERT INTO deliveries (seq, webhook, state) VALUES (?, 'w', 'pending')", seq)
    journal.close()

    d.start()
    # Five attempts (the Daemon's retry settings), each the router's fault: kept as failed.
    wait_until(lambda: d.webhook("w")["failed"] == 1, what="the delivery to use up its attempts")
    w = d.webhook("w")
    assert (w["state"], w["health"], w["consecutive_failures"]) == ("active", "HEALTHY", 0)
    assert "internal error" in w["last_error"]
    log = json.loads(d.cli("attempts", "w", "--json").stdout)
    faults = [a for a in log if a["id"] == "订单-1"]
    assert len(faults) == 5 and all(a["status"] is None for a in faults)
    assert all(a["error"].startswith("internal error") for a in faults)
    assert "the router's fault" in d.log()
    assert d.send({"type": "X", "id": "after"})["ok"] is True
    wait_until(lambda: "after" in hooks.ids("/w"), what="the next event")
    assert hooks.ids("/w") == ["first", "after"]  # the odd one never reached the endpoint
    assert d.stop() == 0
