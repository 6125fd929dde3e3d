"""POST /api/v1/events and GET /api/v1/event-types over real HTTP against the running daemon.

An event published over HTTP takes the ack socket's way (receiver, filter, journal) and
gets its ack after the commit; the catalog behind event-types is fed by the filter from
both ways in. The journal failing or stuck is shown in-process (its test hook caps the
file; a stopped journal never commits), still over real HTTP.
"""

from __future__ import annotations

import json

import msgpack
import pytest
import yaml
import zmq
from standardwebhooks.webhooks import Webhook

from router import catalog, config, metrics
from router.app import App
from router.clock import Clock
from router.config import IngestConfig
from router.envelope import BadEvent
from router.messages import Committed
from router.receiver import BUSY, AckChannel, Bind, Publish, Receiver, Waiter
from tests.integration.conftest import SECRET, JournalDB, wait_until
from tests.integration.test_api import ACME, ADMIN, READ, TOKENS, URL_SECRET, Client, _free_port
from tests.integration.test_api import start as start_daemon

EVENTS = "/api/v1/events"
TYPES = "/api/v1/event-types"


def publish(api: Client, event, token: str | None = ADMIN) -> tuple[int, dict]:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    status, _, answer = api.call("POST", EVENTS, token, body)
    return status, answer


def test_a_published_event_is_delivered_signed_to_the_webhooks_the_filter_chose(
    hooks, daemon_factory
):
    d, api = start_daemon(daemon_factory, hooks)
    event = {"type": "B_DONE", "id": "http-1", "company": "acme", "project": "p1",
             "timestamp": "2026-11-27T16:38:33.123Z", "data": {"who": {"id": "u7"}}}  # fmt: skip
    assert publish(api, event) == (201, {"ok": True, "id": "http-1"})
    (req,) = wait_until(lambda: hooks.at("/b"), what="the delivery to b")
    Webhook(SECRET).verify(req.body, req.headers)
    assert req.headers["webhook-id"] == "http-1"
    assert req.json == {**event, "webhook": "b"}
    status, answer = publish(api, {"type": "A_NO_ID"})  # no id: the router gives one
    assert status == 201 and answer["ok"] is True and len(answer["id"]) == 26
    wait_until(lambda: hooks.ids(f"/a/{URL_SECRET}") == ["http-1", answer["id"]], what="to a")
    assert hooks.ids("/b") == ["http-1"]  # the filter decided: A_NO_ID is not B_*
    assert d.status()["events"]["received"] == 2  # counted as ZeroMQ events are


def test_an_acked_event_is_in_the_journal_when_the_daemon_is_killed_at_once(hooks, daemon_factory):
    d, api = start_daemon(daemon_factory, hooks)
    ids = [f"kept-{i}" for i in range(5)]
    for eid in ids:
        assert publish(api, {"type": "C_ANY", "id": eid})[0] == 201
    d.kill9()
    journal = JournalDB(d)
    try:
        stored = [row[0] for row in journal.rows("SELECT id FROM events ORDER BY seq")]
    finally:
        journal.close()
    assert stored == ids


def test_a_repeated_id_is_acked_as_a_duplicate_and_not_delivered_again(hooks, daemon_factory):
    d, api = start_daemon(daemon_factory, hooks)
    assert publish(api, {"type": "B_X", "id": "dup-1"}) == (201, {"ok": True, "id": "dup-1"})
    again = {"ok": True, "id": "dup-1", "duplicate": True}
    assert publish(api, {"type": "B_X", "id": "dup-1"}) == (201, again)
    assert d.send({"type": "B_X", "id": "dup-1"}) == again  # one journal, whichever way in
    d.send({"type": "B_X", "id": "dup-2"})  # attempts run side by side: either may be first
    wait_until(lambda: sorted(hooks.ids("/b")) == ["dup-1", "dup-2"], what="each id once")
    events = d.status()["events"]
    assert (events["received"], events["duplicates"]) == (4, 2)
    assert "event dup-1 is a duplicate: acked, not delivered again" in d.log()


BAD = [  # the body, the status, the error's path (ingest's reason code) and its message
    (b'{"id": "no-type"}', 422, "missing_type", "the event has no 'type'"),
    (b'{"type": "T", "color": 1}', 422, "unknown_key", "unknown top-level key(s) 'color'"),
    (b'{"type": "T", "data": [1]}', 422, "bad_data", "data must be a map, not an array"),
    (b'{"type": "T", "id": "a b"}', 422, "bad_id", "id may hold only visible ASCII"),
    (b'{"type": "T", "timestamp": "soon"}', 422, "bad_timestamp", "not ISO-8601"),
    (b'{"type": "T", "data": {"x": NaN}}', 422, "bad_data", "data.x: the float nan"),
    (b'{"type": "T", "data": {"n": 1e999999}}', 422, "bad_data", "data.n: the float inf"),
    (b"[1, 2]", 422, "not_map", "the frame holds an array, not a map"),
    (b"", 422, "not_map", "the frame holds nil, not a map"),
    (b'{"type": "T", "data": {"n": 99999999999999999999999}}', 422, "body", "out of range"),
    (b"{not json", 400, "body", "the body is not JSON"),
]


def test_a_bad_event_is_refused_with_the_reason_ingest_gives_and_nothing_is_sent(
    hooks, daemon_factory
):
    d, api = start_daemon(daemon_factory, hooks)
    for body, status, path, message in BAD:
        got, answer = publish(api, body)
        assert got == status, body
        (error,) = answer["errors"]
        assert error["path"] == path, body
        assert message in error["message"], (body, error)
        if path != "body":  # the receiver judged it, as it judges a frame on the ack socket
            assert error["message"].startswith("the router refused this event: ")
    judged = sum(1 for _, _, path, _ in BAD if path != "body")
    assert d.status()["events"]["rejected"] == judged
    assert "rejected an event on the HTTP API: missing_type: the event has no 'type'" in d.log()
    assert publish(api, {"type": "B_AFTER", "id": "fine"})[0] == 201
    wait_until(lambda: hooks.ids("/b") == ["fine"], what="the good event after the bad ones")
    wait_until(lambda: hooks.ids(f"/a/{URL_SECRET}") == ["fine"], what="it alone, to a")
    assert d.status()["events"]["received"] == 1


def test_only_admin_tokens_without_companies_may_publish(hooks, daemon_factory):
    d, api = start_daemon(daemon_factory, hooks)
    event = {"type": "B_X", "id": "nope", "company": "acme"}
    status, answer = publish(api, event, READ)
    assert (status, answer["errors"][0]["message"]) == (
        403, "token 'dash' may only read (scope read)"
    )  # fmt: skip
    status, answer = publish(api, event, ACME)
    assert status == 403 and "limited to companies" in answer["errors"][0]["message"]
    assert publish(api, event, None)[0] == 401
    assert publish(api, event, "wr_unknown")[0] == 401
    assert d.status()["events"]["received"] == 0
    assert hooks.at("/b") == []


def test_event_types_lists_what_came_over_zeromq_and_http_and_tenants_see_their_own(
    hooks, daemon_factory
):
    d, api = start_daemon(daemon_factory, hooks)
    assert api.get(TYPES) == (
        200, {"event_types": [], "projects": [], "companies": [], "truncated": False}
    )  # fmt: skip
    d.send({"type": "TODO_CREATED", "company": "acme", "project": "acme-web",
            "data": {"title": "secret title", "owner": {"id": 1}}})  # fmt: skip
    d.send({"type": "TODO_CREATED", "company": "globex", "project": "globex-x",
            "data": {"globex_budget": 5}}, ack=False)  # fmt: skip
    publish(api, {"type": "TODO_CREATED", "company": "acme", "data": {"due": "tomorrow"}})
    publish(api, {"type": "BILLING_RUN", "data": {"total": 3}})  # no company
    wait_until(lambda: _total(api.get(TYPES)[1]) == 4, what="the four events in the catalog")
    status, seen = api.get(TYPES, READ)  # a read token may look too
    assert status == 200
    assert [(t["type"], t["count"], t["paths"]) for t in seen["event_types"]] == [
        ("BILLING_RUN", 1, ["data.total"]),
        ("TODO_CREATED", 3, ["data.due", "data.globex_budget", "data.owner", "data.owner.id",
                             "data.title"]),
    ]  # fmt: skip
    assert (seen["projects"], seen["companies"]) == (["acme-web", "globex-x"], ["acme", "globex"])
    assert all(t["last_seen"].endswith("Z") for t in seen["event_types"])
    status, mine = api.get(TYPES, ACME)
    assert status == 200
    assert [(t["type"], t["count"], t["paths"]) for t in mine["event_types"]] == [
        ("TODO_CREATED", 2, ["data.due", "data.owner", "data.owner.id", "data.title"])
    ]
    assert (mine["projects"], mine["companies"]) == (["acme-web"], ["acme"])
    text = json.dumps(mine) + json.dumps(seen)
    assert "globex" not in json.dumps(mine) and "BILLING" not in json.dumps(mine)
    assert "secret title" not in text and "tomorrow" not in text  # no values, ever


def test_event_types_stay_within_their_bound_and_say_so(hooks, daemon_factory):
    d, api = start_daemon(daemon_factory, hooks)
    extra = 20
    sock = zmq.Context.instance().socket(zmq.REQ)  # acked one by one: none is lost on the way
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(d.ack)
        for i in range(catalog.MAX_TYPES + extra):
            sock.send(msgpack.packb({"type": f"T{i:05d}", "data": {f"k{i}": 1}}))
            assert sock.poll(10_000), "no ack"
            assert msgpack.unpackb(sock.recv())["ok"] is True
    finally:
        sock.close()
    wait_until(lambda: api.get(TYPES)[1]["truncated"], what="the catalog at its bound")
    seen = api.get(TYPES)[1]
    assert len(seen["event_types"]) == catalog.MAX_TYPES
    assert seen["event_types"][-1]["type"] == f"T{catalog.MAX_TYPES - 1:05d}"  # first kept
    assert "event-type catalog: event types at its bound" in d.log()


def _total(view: dict) -> int:
    return sum(t["count"] for t in view["event_types"])


# --------------------------------------------------------------------------- journal trouble


@pytest.fixture
def app(tmp_path, hooks, journal_settings):
    """The daemon's parts in this process (its journal's test hook reachable), API on HTTP."""
    port = _free_port()
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump(TOKENS, sort_keys=False))
    settings = {
        "state_dir": "./state",
        "metrics": {"bind": None},
        "ingest": {"ack_bind": f"ipc://{tmp_path}/ack.sock"},
        "api": {"bind": f"127.0.0.1:{port}", "tokens_file": "./tokens.yaml"},
        "webhooks": [{"name": "w", "url": hooks.url("/w"), "secret": SECRET,
                      "allow_private_networks": True}],
    }  # fmt: skip
    if journal_settings:
        settings["journal"] = journal_settings
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(settings))
    running = App(config.load(str(tmp_path / "router.yaml")))
    running.start()
    yield running, Client(port)
    running.stop()


@pytest.mark.sqlite_only
def test_a_journal_that_cannot_write_answers_503_and_nothing_is_acked_or_sent(app, hooks):
    """SQLite only: the failed write comes from the file's page cap (``set_max_pages``)."""
    running, api = app
    big = {"blob": "x" * 200_000}  # needs new pages: the capped file has none to give
    running.journal.set_max_pages(1)
    status, got, answer = api.call(
        "POST", EVENTS, ADMIN, json.dumps({"type": "T", "id": "full-1", "data": big}).encode()
    )
    assert (status, got["retry-after"]) == (503, "1")
    message = answer["errors"][0]["message"]
    assert message.startswith("not journaled: journal write failed: ") and "full" in message
    running.journal.set_max_pages(None)
    assert publish(api, {"type": "T", "id": "full-1", "data": big}) == (
        201, {"ok": True, "id": "full-1"}
    )  # not a duplicate: the first was never journaled  # fmt: skip
    wait_until(lambda: hooks.ids("/w") == ["full-1"], what="the delivery once the disk has room")


def test_a_journal_that_does_not_commit_in_time_answers_503_naming_the_event(app, hooks, caplog):
    running, api = app
    running.publish_wait = 0.5
    running.journal.stop()  # nothing submitted from now on is ever committed
    status, _, answer = api.call("POST", EVENTS, ADMIN, b'{"type": "T", "id": "late-1"}')
    assert status == 503
    assert answer["errors"][0]["message"] == (
        "event late-1 was not journaled within 0.5s; it may still be: send it again with the"
        " same id (a duplicate is not delivered twice)"
    )
    assert hooks.at("/w") == []
    assert "api: event late-1 published over HTTP not journaled within 0.5s; answered 503" in (
        "\n".join(r.getMessage() for r in caplog.records)
    )


# --------------------------------------------------------------------------- the receiver's side


def test_the_receiver_checks_and_hands_on_a_published_event_and_refuses_it_when_full(tmp_path):
    channel = AckChannel()
    handed: list = []
    ingest = IngestConfig(ack_bind=f"ipc://{tmp_path}/ack.sock")
    ref = Receiver.start(ingest, handed.extend, channel, Clock(), max_outstanding=1)
    try:
        assert ref.ask(Bind(), timeout=5) is None
        received = metrics.REGISTRY.get_sample_value("events_received_total") or 0
        first, second, bad = Waiter(), Waiter(), Waiter()
        ref.tell(Publish(msgpack.packb({"type": "T", "id": "p-1"}), first))
        wait_until(lambda: handed, what="the event handed on")
        assert first.id == "p-1" and first.wait(0) is None  # handed on, not yet committed
        ref.tell(Publish(msgpack.packb({"type": "T", "id": "p-2"}), second))
        assert second.wait(5) == {"ok": False, "error": BUSY}  # one outstanding is the limit
        channel.committed([Committed(handed[0], 1)])  # as the journal does after the commit
        assert first.wait(5) == {"ok": True, "id": "p-1"}
        ref.tell(Publish(msgpack.packb({"type": 7}), bad))
        assert bad.wait(5) == {"ok": False, "error": "bad_type: type must be a string, not an int"}
        assert isinstance(bad.bad, BadEvent) and bad.bad.reason == "bad_type"
        assert metrics.REGISTRY.get_sample_value("events_received_total") == received + 1
    finally:
        ref.stop()
        channel.close()


def test_a_waiter_keeps_its_first_answer():
    w = Waiter()
    assert w.wait(0) is None
    w.set({"ok": True, "id": "x"})
    w.set({"ok": False, "error": "late"})
    assert w.wait(0) == {"ok": True, "id": "x"}
