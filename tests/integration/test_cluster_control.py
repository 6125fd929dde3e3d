"""Control commands and the API from a daemon that does not hold the webhook (SPEC §8).

``enable``, ``disable``, ``replay``, ``test`` (and the replay's progress the CLI follows)
asked of any daemon run on the holder of the webhook's lease, through the database, and
answer as they would there. Real daemons on the session's PostgreSQL (as in
test_cluster.py), a real HTTP receiver; and ``router.cluster.Cluster`` itself, two of
them on one database, for the holder's answers and the ways an asker gives up.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from router import RouterError, pgstore
from router.cluster import Cluster
from tests.integration.conftest import Reply, wait_until
from tests.integration.test_api import ADMIN, TOKENS, Client, _free_port, write_tokens
from tests.integration.test_cluster import LEASE, _owners, cluster  # noqa: F401  (a fixture)

OWNED = LEASE * 5 + 10  # seconds to wait for a lease to be taken


@pytest.fixture
def pair(cluster, hooks):  # noqa: F811  (the fixture imported above)
    """``make(**webhook)``: daemons ``a`` (holding webhook ``w``) and ``b``, each with its API."""

    def make(**settings: Any):
        webhooks = [{"name": "w", "url": hooks.url("/w"), **settings}]
        out = []
        for node in ("a", "b"):
            port = _free_port()
            api = {"bind": f"127.0.0.1:{port}", "tokens_file": "./tokens.yaml"}
            d = cluster(node, webhooks, api=api)
            write_tokens(d, TOKENS)
            out += [d, Client(port)]
            d.start()
            if node == "a":  # b starts once a holds w: its fair share (one) is taken already
                wait_until(lambda d=d: _owners(d) == {"w": "a"}, timeout=OWNED, what="a holds w")
        assert _owners(out[2]) == {"w": "a"}
        return out

    return make


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_cli_of_the_daemon_without_the_webhook_disables_enables_and_replays_on_its_holder(
    pair, hooks
):
    a, _, b, _ = pair()
    for i in range(3):
        assert a.send({"type": "T", "id": f"e{i}"})["ok"]
    wait_until(lambda: len(hooks.ids("/w")) == 3, what="three deliveries")

    assert _ok(b.cli("disable", "w")) == "w: disabled (disabled)\n"
    assert "webhook w: disable asked by daemon b" in a.log()
    assert "webhook w disabled by the operator" in a.log()
    assert a.webhook("w")["state"] == "disabled"  # the holder's own supervisor says so
    assert b.cli("disable", "w").stdout == a.cli("disable", "w").stdout  # as if local
    assert a.send({"type": "T", "id": "held"})["ok"]
    wait_until(lambda: a.webhook("w")["queued"] == 1, what="the event held by a")
    assert b.webhook("w")["queued"] == 1  # b reads it from the database
    assert "held" not in hooks.ids("/w")

    enabled = _ok(b.cli("enable", "w"))
    assert enabled.startswith("w: active")
    assert "webhook w: enable asked by daemon b" in a.log()
    assert "webhook w: health check passed" in a.log()
    wait_until(lambda: "held" in hooks.ids("/w"), what="the held event, once enabled")

    # The replay's progress comes from a's supervisor too (the CLI follows it to the end).
    assert _ok(b.cli("replay", "w")) == "w: 4 queued, 4 delivered, 0 failed\n"
    assert "webhook w: replay asked by daemon b" in a.log()
    assert sorted(hooks.ids("/w", "T")) == sorted(["e0", "e1", "e2", "held"] * 2)
    assert _ok(b.cli("replay", "w", "--event", "e1", "--no-wait")) == "w: 1 deliveries requeued\n"
    wait_until(lambda: hooks.ids("/w", "T").count("e1") == 3, what="e1 once more")
    assert "asked by daemon" not in b.log()  # b asked; a ran each
    assert set(_owners(b).values()) == {"a"}


def test_the_api_of_the_daemon_without_the_webhook_answers_as_its_holder_would(pair, hooks):
    a, api_a, b, api_b = pair()

    status, _, body = api_b.call("POST", "/api/v1/webhooks/w/disable", ADMIN)
    assert (status, body["ok"], body["state"]) == (200, True, "disabled")
    assert a.webhook("w")["state"] == "disabled"

    hooks.script("/w", Reply(status=503))  # the health check fails: 502, still disabled
    status, _, body = api_b.call("POST", "/api/v1/webhooks/w/enable", ADMIN)
    assert (status, body["ok"], body["state"]) == (502, False, "disabled")
    assert body["detail"] == "health check failed: HTTP 503"
    assert "webhook w: health check failed (HTTP 503); stays disabled" in a.log()
    status, _, body = api_b.call("POST", "/api/v1/webhooks/w/enable", ADMIN)
    assert (status, body["ok"], body["state"]) == (200, True, "active")
    assert a.webhook("w")["state"] == "active"

    for i in range(2):
        assert a.send({"type": "T", "id": f"r{i}"})["ok"]
    wait_until(lambda: a.webhook("w")["delivered"] == 2, what="two delivered")
    status, _, body = api_b.call("POST", "/api/v1/webhooks/w/replay", ADMIN, b"{}")
    assert (status, body) == (202, {"webhook": "w", "replayed": 2})
    wait_until(lambda: sorted(hooks.ids("/w", "T")) == ["r0", "r0", "r1", "r1"], what="again")

    hooks.script("/w", Reply(status=418))
    status, _, body = api_b.call("POST", "/api/v1/webhooks/w/test", ADMIN)
    assert (status, body["webhook"], body["ok"], body["status"]) == (200, "w", False, 418)
    (sent,) = hooks.at("/w", "WEBHOOK_TEST")
    assert sent.json["id"] == body["event"]
    assert f"webhook w: test event {body['event']}" in a.log()  # a sent it
    assert "webhook w: test asked by daemon b" in a.log()
    status, _, local = api_a.call("POST", "/api/v1/webhooks/w/test", ADMIN)
    assert (status, set(local)) == (200, set(body))  # the same answer as on the holder
    assert b.webhook("w")["owner"] == "a"


def test_a_holder_killed_while_it_runs_a_command_gives_the_asker_a_clear_error(pair, hooks):
    a, _, b, _ = pair(timeout="20s")  # the holder's own wait for enable: well over a minute
    assert _ok(a.cli("disable", "w")) == "w: disabled (disabled)\n"
    hooks.script("/w", Reply(delay=20))  # the health check is answered late
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(b.cli, "enable", "w", timeout=120)
        wait_until(lambda: hooks.at("/w", "WEBHOOK_HEALTH_CHECK"), timeout=20,
                   what="a sending the health check")  # fmt: skip
        a.kill9()
        done = asked.result(timeout=120)
    assert done.returncode == 1
    assert "webhook 'w': enable on daemon a: it stopped delivering the webhook before it" \
           " answered (" in done.stderr  # fmt: skip
    assert "delivers it now); it may have been done: look at status, then ask again" \
           in done.stderr  # fmt: skip
    assert "enable asked of daemon a: it stopped delivering" in b.log()
    wait_until(lambda: _owners(b) == {"w": "b"}, timeout=OWNED, what="b taking w over")
    assert _ok(b.cli("enable", "w")).startswith("w: ")  # now b's own, asked of b


# --------------------------------------------------------------------------- router.cluster


class Dispatcher:
    """What ``Cluster`` tells the dispatcher (no supervisors here)."""

    def acquire(self, webhooks: list) -> None:
        pass

    def release(self, names: list) -> None:
        pass

    def poke(self, names: list) -> None:
        pass


@pytest.fixture
def nodes(pg_dsn):
    """``start(node, serve)``: a ``Cluster`` on the test database wanting webhook ``w``."""
    pgstore.open_writer(pg_dsn).close()  # the schema, as a daemon's journal makes it
    made: list[Cluster] = []

    def start(node: str, serve, on_webhooks=lambda: None) -> Cluster:
        c = Cluster(pg_dsn, node, LEASE, dict, on_webhooks, serve)
        c.start(Dispatcher(), ["w"])
        made.append(c)
        return c

    yield start
    for c in made:
        c.stop()


def _sql(pg_dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def _serving() -> bool:
    return any(t.name == "cluster-request" for t in threading.enumerate())


def test_a_forwarded_command_runs_on_the_holder_and_its_result_or_error_comes_back(nodes, pg_dsn):
    ran: list[tuple] = []

    def serve(request):
        ran.append((request.webhook, request.asker, request.command, request.arguments))
        if request.command == "refuse":
            raise RouterError("webhook 'w' refuses")
        if request.command == "break":
            raise ZeroDivisionError
        return {"done": request.arguments["n"]}

    holder = nodes("n1", serve)
    asker = nodes("n2", serve)
    assert holder.owner(["w"]) == {"w": "n1"}
    assert asker.forward("w", "run", {"n": 7}, 5) == {"done": 7}
    assert ran == [("w", "n2", "run", {"n": 7})]
    with pytest.raises(RouterError, match=r"^webhook 'w' refuses$"):
        asker.forward("w", "refuse", {}, 5)
    with pytest.raises(RouterError, match=r"^break failed inside daemon n1 \(see its log\)$"):
        asker.forward("w", "break", {}, 5)
    with pytest.raises(RouterError, match="lease is changing hands"):
        holder.forward("w", "run", {"n": 1}, 5)  # its own: never asked of itself
    assert _sql(pg_dsn, "SELECT id FROM requests") == []  # each asker deleted its row


def test_an_asker_gives_up_after_the_wait_or_when_the_holder_lets_go_and_says_so(
    nodes, pg_dsn, monkeypatch
):
    release = threading.Event()
    holder = nodes("n1", lambda request: release.wait(30))
    asker = nodes("n2", lambda request: None)
    monkeypatch.setattr("router.cluster.ANSWER_MARGIN", 0.0)
    with pytest.raises(RouterError) as e:
        asker.forward("w", "enable", {}, 1.0)  # taken, and still running when the wait ends
    assert str(e.value) == ("webhook 'w': enable on daemon n1: no answer within 1s; it may have"
                            " been done: look at status, then ask again")  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(asker.forward, "w", "disable", {}, 60.0)
        wait_until(lambda: _sql(pg_dsn, "SELECT 1 FROM requests WHERE taken_at IS NOT NULL"),
                   what="n1 running it")  # fmt: skip
        holder.stop()  # lets its lease go, and n2 takes it
        with pytest.raises(RouterError) as e:
            asked.result(timeout=60)
    said = (r"webhook 'w': disable on daemon n1: it stopped delivering the webhook before it"
            r" answered \((daemon n2|no daemon) delivers it now\); it may have been done: look"
            r" at status, then ask again")  # fmt: skip
    assert re.fullmatch(said, str(e.value)), e.value
    release.set()
    wait_until(lambda: not _serving(), what="n1's requests to end")
    assert _sql(pg_dsn, "SELECT id FROM requests") == []


def test_a_request_its_holder_never_takes_was_not_done(nodes, pg_dsn, monkeypatch):
    asker = nodes("n2", lambda request: None)
    _sql(pg_dsn, "UPDATE leases SET owner = 'n3', expires_at = now() + interval '1 hour'")
    monkeypatch.setattr("router.cluster.ANSWER_MARGIN", 0.0)
    with pytest.raises(RouterError) as e:
        asker.forward("w", "replay", {"since": None}, 1.0)  # no daemon n3 is running
    assert str(e.value) == ("webhook 'w': replay on daemon n3: no answer within 1s; it was not"
                            " done: ask again")  # fmt: skip
    assert _sql(pg_dsn, "SELECT id FROM requests") == []


def test_a_request_told_of_with_other_news_in_one_commit_loses_none_of_it(nodes, pg_dsn):
    changed = threading.Event()
    nodes("n1", lambda request: "done", changed.set)
    with pgstore.connect(pg_dsn) as conn:
        with conn.transaction():  # both notifications arrive together, the request's first
            rid = pgstore.put_request(conn, "w", "n1", "n2", "test", {}, 30)
            pgstore.webhooks_changed(conn)
        wait_until(lambda: pgstore.request_state(conn, rid).answer, what="n1's answer")
        assert pgstore.request_state(conn, rid).answer == {"ok": True, "result": "done"}
    assert changed.wait(10)  # the API-made webhooks read again
