"""Several daemons on one real PostgreSQL (SPEC §8): leases, fair shares, failover, fencing.

Each daemon is the real process with its own state_dir and sockets, the journal a
database of the session's PostgreSQL server; deliveries go to a real HTTP receiver.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon, Reply, wait_until

LEASE = 2.0  # seconds; short, so that failovers happen within a test


@pytest.fixture
def cluster(tmp_path, pg_dsn):
    """``make(node)``: a daemon on the shared database, in a directory of its own."""
    made: list[Daemon] = []
    (tmp_path / "pg.dsn").write_text(pg_dsn + "\n")

    def make(node: str, webhooks: list[dict], home: str | None = None, lease: float = LEASE,
             **top) -> Daemon:  # fmt: skip
        home = tmp_path / (home or node)
        home.mkdir()
        journal = {"backend": "postgresql", "dsn_file": str(tmp_path / "pg.dsn"), "lease": lease}
        d = Daemon(home, webhooks, node=node, journal=journal, **top)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def _hooks(hooks, n: int, **settings) -> list[dict]:
    return [{"name": f"w{i}", "url": hooks.url(f"/w{i}"), **settings} for i in range(n)]


def _owners(d: Daemon) -> dict[str, str | None]:
    return {w["name"]: w.get("owner") for w in d.status()["webhooks"]}


def _each(hooks, webhooks: list[dict], check, what: str) -> None:
    """Wait until every webhook's receiver has seen what ``check`` wants (its event ids)."""
    for w in webhooks:
        path = "/" + w["name"]
        wait_until(lambda p=path: check(hooks.ids(p)), timeout=30, what=f"{what} at {path}")


def _all_owned(d: Daemon, nodes: set[str], n: int) -> bool:
    owners = _owners(d)
    return len(owners) == n and set(owners.values()) <= nodes and None not in owners.values()


def test_one_daemon_on_postgresql_delivers_and_keeps_everything_across_kill_9(cluster, hooks):
    d = cluster("n1", _hooks(hooks, 2))
    d.start()
    for i in range(5):
        assert d.send({"type": "T", "id": f"e{i}"})["ok"]
    wait_until(lambda: sorted(hooks.ids("/w0")) == [f"e{i}" for i in range(5)], what="w0")
    wait_until(lambda: len(hooks.ids("/w1")) == 5, what="w1")
    assert set(_owners(d).values()) == {"n1"}
    assert d.cli("disable", "w1").returncode == 0
    assert d.send({"type": "T", "id": "held"})["ok"]
    wait_until(lambda: d.webhook("w1")["queued"] == 1, what="one delivery held for w1")
    d.kill9()
    d.start()  # its new run takes the leases once the old run's expire
    assert d.webhook("w1")["state"] == "disabled"  # its state, from the database
    wait_until(lambda: d.cli("enable", "w1").returncode == 0, timeout=LEASE * 5 + 10,
               what="w1 held again, and enabled")  # fmt: skip
    wait_until(lambda: d.webhook("w1")["delivered"] == 6, what="the held delivery, once enabled")
    assert Counter(hooks.ids("/w0"))["held"] == 1
    assert "cancelled" not in d.log()


def test_two_and_three_daemons_deliver_each_event_once_and_share_the_webhooks(cluster, hooks):
    webhooks = _hooks(hooks, 6)
    daemons = [cluster(f"n{i}", webhooks) for i in (1, 2, 3)]
    for d in daemons[:2]:
        d.start()
    wait_until(lambda: _all_owned(daemons[0], {"n1", "n2"}, 6), timeout=LEASE * 5 + 10,
               what="six webhooks owned by n1 and n2")  # fmt: skip
    wait_until(lambda: Counter(_owners(daemons[0]).values()) == {"n1": 3, "n2": 3},
               timeout=LEASE * 5 + 10, what="three each")  # fmt: skip
    daemons[2].start()
    wait_until(lambda: Counter(_owners(daemons[0]).values()) == {"n1": 2, "n2": 2, "n3": 2},
               timeout=LEASE * 8 + 10, what="two each once n3 joined")  # fmt: skip
    sent = []
    for i in range(30):
        d = daemons[i % 3]
        assert d.send({"type": "T", "id": f"x{i}"})["ok"]
        sent.append(f"x{i}")
    _each(hooks, webhooks, lambda ids: sorted(ids) == sorted(sent), "every event once")


def test_a_killed_daemons_webhooks_move_to_the_survivor_with_every_acked_event(cluster, hooks):
    webhooks = _hooks(hooks, 4)
    a, b = cluster("a", webhooks), cluster("b", webhooks)
    a.start()
    b.start()
    wait_until(lambda: Counter(_owners(a).values()) == {"a": 2, "b": 2},
               timeout=LEASE * 5 + 10, what="two each")  # fmt: skip
    acked = []
    for i in range(20):
        assert a.send({"type": "T", "id": f"k{i}"})["ok"]
        acked.append(f"k{i}")
        if i == 9:
            a.kill9()
            a = b  # the rest through the survivor
    wait_until(lambda: set(_owners(b).values()) == {"b"}, timeout=LEASE * 3 + 10,
               what="the survivor owns every webhook")  # fmt: skip
    _each(hooks, webhooks, lambda ids: set(ids) == set(acked), "every acked event")


def test_a_daemon_paused_past_its_lease_sends_nothing_for_the_webhooks_it_lost(cluster, hooks):
    webhooks = _hooks(hooks, 2)
    a, b = cluster("a", webhooks), cluster("b", webhooks)
    a.start()
    wait_until(lambda: set(_owners(a).values()) == {"a"}, timeout=LEASE * 5 + 10, what="a owns")
    b.start()
    a.signal(signal.SIGSTOP)  # frozen: its leases run out, b takes them
    try:
        wait_until(lambda: set(_owners(b).values()) == {"b"}, timeout=LEASE * 4 + 10,
                   what="b owns every webhook")  # fmt: skip
        after = [f"p{i}" for i in range(10)]
        for eid in after:
            assert b.send({"type": "T", "id": eid})["ok"]
        _each(hooks, webhooks, lambda ids: set(after) <= set(ids), "the events from b")
    finally:
        a.signal(signal.SIGCONT)
    wait_until(lambda: "leases: lost" in a.log() or "giving up" in a.log(), timeout=20,
               what="a noticing it lost its leases")  # fmt: skip
    assert b.send({"type": "T", "id": "last"})["ok"]
    for w in webhooks:
        path = "/" + w["name"]
        wait_until(lambda p=path: "last" in hooks.ids(p), what=f"{path} last")
        seen = Counter(hooks.ids(path))
        assert all(seen[e] == 1 for e in [*after, "last"]), seen  # nothing twice from a


def test_an_ordered_webhook_stays_in_order_across_a_lease_move(cluster, hooks):
    webhooks = [{"name": "fifo", "url": hooks.url("/fifo"), "ordered": True}]
    a, b = cluster("a", webhooks), cluster("b", webhooks)
    a.start()
    wait_until(lambda: _owners(a) == {"fifo": "a"}, timeout=LEASE * 5 + 10, what="a owns fifo")
    b.start()
    order = [f"o{i}" for i in range(20)]
    for i, eid in enumerate(order):
        assert (a if i < 10 else b).send({"type": "T", "id": eid})["ok"]
        if i == 9:
            a.stop()  # leaves: its lease is released and b takes it
    wait_until(lambda: _owners(b) == {"fifo": "b"}, timeout=LEASE * 5 + 10, what="b owns fifo")
    wait_until(lambda: set(hooks.ids("/fifo")) == set(order), timeout=30, what="all of them")
    got = list(dict.fromkeys(hooks.ids("/fifo")))  # first arrivals (a repeat may follow a move)
    assert got == order


def test_an_api_made_webhook_is_delivered_by_whichever_daemon_owns_it(cluster, hooks, tmp_path):
    from tests.integration.test_api import ADMIN, TOKENS, Client, _free_port, write_tokens

    clients = []
    daemons = []
    for node in ("a", "b"):
        port = _free_port()
        d = cluster(node, _hooks(hooks, 1),
                    api={"bind": f"127.0.0.1:{port}", "tokens_file": "./tokens.yaml"})  # fmt: skip
        write_tokens(d, TOKENS)
        d.start()
        daemons.append(d)
        clients.append(Client(port))
    body = b'{"name": "made", "url": "%s", "events": ["M_*"]}' % hooks.url("/made").encode()
    status, _, made = clients[0].call("POST", "/api/v1/webhooks", ADMIN, body)
    assert status == 201, made
    wait_until(lambda: clients[1].get("/api/v1/webhooks/made")[0] == 200, timeout=5,
               what="the other daemon to know it")  # fmt: skip
    wait_until(lambda: _owners(daemons[1]).get("made") in ("a", "b"), timeout=LEASE * 5 + 10,
               what="someone to own it")  # fmt: skip
    for i, d in enumerate(daemons):
        assert d.send({"type": "M_X", "id": f"m{i}"})["ok"]
    wait_until(lambda: sorted(hooks.ids("/made")) == ["m0", "m1"], timeout=30, what="both")
    assert Path(tmp_path / "pg.dsn").exists()


def test_the_schema_is_made_in_an_empty_database_and_an_unknown_one_is_refused(
    cluster, hooks, pg_dsn
):
    import psycopg

    d = cluster("n1", _hooks(hooks, 1))
    out = d.cli("migrate")  # an empty database: migrate makes the schema
    assert (out.returncode, out.stdout.strip()) == (0, "schema upgraded to version 1 (applied 1)")
    assert d.cli("migrate").stdout.strip() == "schema already at version 1: nothing to do"
    d.start()
    assert d.stop() == 0
    for version, why in ((0, "run `webhook-router migrate` first"), (99, "newer")):
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE schema_version SET version = %s", (version,))
        d.start(wait_ready=False)
        assert d.proc.wait(30) == 1
        assert why in d.log()
        d.stop()
    refused = d.cli("migrate")  # 99: newer than this router
    assert refused.returncode == 1 and "newer" in refused.stderr


@pytest.mark.sqlite_only
def test_migrate_is_for_the_postgresql_journal(daemon_factory, hooks):
    """SQLite only: migrate refuses a config whose journal is the SQLite file."""
    d = daemon_factory(_hooks(hooks, 1))
    out = d.cli("migrate")
    assert out.returncode == 1 and "migrate is for journal.backend: postgresql" in out.stderr


def test_a_webhook_added_by_a_reload_is_held_and_delivering_when_the_reload_ends(cluster, hooks):
    d = cluster("n1", _hooks(hooks, 1), lease=60.0)  # rounds 20 s apart: none comes by chance
    d.start()
    d.settings["webhooks"].append({"name": "new", "url": hooks.url("/new")})
    d.write()
    d.reload()
    assert _owners(d) == {"w0": "n1", "new": "n1"}
    assert d.send({"type": "T", "id": "e1"})["ok"]
    wait_until(lambda: hooks.ids("/new") == ["e1"], what="e1 at the added webhook")


def test_a_second_daemon_with_the_same_node_name_is_refused_until_the_first_is_gone(cluster, hooks):
    """Two daemons on one host keep the host name unless told otherwise: they would both
    think they hold the same leases and send everything twice."""
    webhooks = _hooks(hooks, 2)
    first = cluster("n1", webhooks)
    first.start()
    twin = cluster("n1", webhooks, home="twin")
    twin.start(wait_ready=False)
    assert twin.proc.wait(30) == 1
    assert "cannot start: another webhook-router runs as node 'n1' on this database" in twin.log()
    assert first.send({"type": "T", "id": "e1"})["ok"]
    wait_until(lambda: hooks.ids("/w0") == ["e1"] and hooks.ids("/w1") == ["e1"], what="e1")
    first.kill9()  # a node that crashed comes back under its own name at once
    again = cluster("n1", webhooks, home="again").start()
    assert again.send({"type": "T", "id": "e2"})["ok"]
    wait_until(lambda: hooks.ids("/w0")[-1:] == ["e2"] and hooks.ids("/w1")[-1:] == ["e2"],
               timeout=LEASE * 3 + 10, what="e2 delivered by the node again")  # fmt: skip


@pytest.mark.parametrize("processes", [0, 1], ids=["in-daemon", "sender-process"])
def test_an_attempt_that_waits_for_a_worker_past_its_leases_deadline_is_sent(
    cluster, hooks, processes
):
    """The renewals made while it waited count: the senders check the trust as it is now."""
    hooks.script("/slow", Reply(delay=LEASE * 1.5))  # holds the only worker past any deadline
    d = cluster("n1", [{"name": "slow", "url": hooks.url("/slow"), "max_in_flight": 2}],
                delivery_processes=processes, delivery_workers=1)  # fmt: skip
    d.start()
    assert d.send({"type": "T", "id": "first"})["ok"]
    assert d.send({"type": "T", "id": "second"})["ok"]  # handed over, waits for the worker
    wait_until(lambda: set(hooks.ids("/slow")) == {"first", "second"}, timeout=30, what="both")
    log = json.loads(d.cli("attempts", "slow", "--json").stdout)
    assert [(a["id"], a["attempt"], a["error"]) for a in log if a["error"]] == []


def test_the_holder_counts_what_other_daemons_journaled_for_its_webhooks(cluster, hooks):
    webhooks = _hooks(hooks, 1)
    a, b = cluster("a", webhooks), cluster("b", webhooks)
    a.start()
    wait_until(lambda: _owners(a) == {"w0": "a"}, timeout=LEASE * 5 + 10, what="a owns w0")
    b.start()
    assert a.cli("disable", "w0").returncode == 0
    for i in range(3):
        assert b.send({"type": "T", "id": f"q{i}"})["ok"]  # journaled by b, held by a
    wait_until(lambda: a.webhook("w0")["queued"] == 3, what="a counting b's three")
