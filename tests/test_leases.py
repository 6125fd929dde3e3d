"""Leases against a real PostgreSQL server: fair shares, expiry by the database's clock,
epochs, trust measured on this daemon's monotonic clock, giving up on any doubt."""

from __future__ import annotations

import psycopg
import pytest

from router import RouterError, pgstore
from router.leases import LeaseKeeper, fair_share
from tests.builders import HandClock
from tests.integration.conftest import wait_until

HOOKS = ["a", "b", "c", "d", "e"]


class Events:
    """What a keeper told the daemon, in order."""

    def __init__(self) -> None:
        self.gained: list[dict[str, int]] = []
        self.lost: list[list[str]] = []


@pytest.fixture
def keepers(pg_dsn):
    with pgstore.connect(pg_dsn) as conn:
        pgstore.create_schema(conn)
    made = []

    def make(node: str, lease: float = 30.0, clock=None, dsn: str = pg_dsn) -> tuple:
        seen = Events()
        k = LeaseKeeper(lambda: psycopg.connect(dsn, autocommit=True), node, lease,
                        seen.gained.append, seen.lost.append,
                        **({"monotonic": clock} if clock else {}))  # fmt: skip
        k.want(HOOKS)
        made.append(k)
        return k, seen

    yield make
    for k in made:
        k.stop()


def _owners(dsn: str) -> dict[str, tuple[str | None, int]]:
    with psycopg.connect(dsn) as conn:
        return {w: (o, e) for w, o, e in conn.execute("SELECT webhook, owner, epoch FROM leases")}


def test_fair_share_rounds_up():
    assert [fair_share(5, n) for n in (0, 1, 2, 3, 5, 9)] == [5, 5, 3, 2, 1, 1]


def test_one_daemon_alone_takes_every_webhook_with_epoch_one(keepers, pg_dsn):
    k, seen = keepers("n1")
    k.round()
    assert seen.gained == [dict.fromkeys(HOOKS, 1)]
    assert _owners(pg_dsn) == {w: ("n1", 1) for w in HOOKS}
    k.round()  # a renewal takes nothing new and loses nothing
    assert len(seen.gained) == 1 and seen.lost == []


def test_a_joining_daemon_gets_a_fair_share_and_the_first_lets_go_of_its_extras(keepers, pg_dsn):
    k1, seen1 = keepers("n1")
    k1.round()
    k2, seen2 = keepers("n2")
    k2.round()  # n2 is live now, but n1 still holds everything
    assert seen2.gained == []
    k1.round()  # n1's share is 3 of 5: it lets go of d and e, after its supervisors stopped
    assert seen1.lost == [["d", "e"]]
    k2.round()
    assert seen2.gained == [{"d": 2, "e": 2}]  # a new epoch for each
    owners = _owners(pg_dsn)
    assert sorted(w for w, (o, _) in owners.items() if o == "n1") == ["a", "b", "c"]
    assert sorted(w for w, (o, _) in owners.items() if o == "n2") == ["d", "e"]


def test_a_lease_not_renewed_expires_by_the_database_clock_and_moves_with_a_new_epoch(
    keepers, pg_dsn
):
    k1, seen1 = keepers("n1", lease=1.0)
    k1.round()
    k2, seen2 = keepers("n2", lease=1.0)

    def taken() -> bool:  # n1 has stopped renewing (it is paused); n1's heartbeat ages out too
        k2.round()
        return sum(len(g) for g in seen2.gained) == len(HOOKS)

    wait_until(taken, timeout=20, what="n2 to take every lease after n1's expired")
    assert _owners(pg_dsn) == {w: ("n2", 2) for w in HOOKS}
    k1.round()  # n1 wakes: its renewals match nothing; it stops every supervisor
    assert seen1.lost == [sorted(HOOKS)]
    assert k1.held == {}


def test_trust_ends_at_the_last_rounds_send_time_plus_lease_minus_margin(keepers):
    clock = HandClock()
    k, seen = keepers("n1", lease=10.0, clock=clock)
    k.round()
    assert k.trust.until == 1000.0 + 10.0 - k.margin
    handed = k.trust.generation  # an attempt handed to the senders now
    clock.now = k.trust.until - 0.001
    k.check()
    assert seen.lost == [] and k.trust.allows(handed)
    clock.now = k.trust.until  # paused, or the rounds stalled: stop before the next POST
    assert not k.trust.allows(handed)
    k.check()
    assert seen.lost == [HOOKS] and k.held == {}
    k.round()  # the next round succeeds: its own leases taken back, with new epochs
    assert sorted(k.held) == HOOKS and set(k.held.values()) == {2}
    assert k.trust.allows(k.trust.generation)
    assert not k.trust.allows(handed)  # what was handed over before the loss stays unsent


def test_letting_leases_go_to_a_joining_daemon_leaves_the_others_attempts_alone(keepers):
    k1, seen1 = keepers("n1")
    k1.round()
    handed = k1.trust.generation
    k2, _ = keepers("n2")
    k2.round()  # a second live daemon: n1's share halves
    k1.round()
    assert seen1.lost == [["d", "e"]] and sorted(k1.held) == ["a", "b", "c"]
    assert k1.trust.allows(handed)  # what n1 still holds goes on without a hiccup


def test_a_failed_round_gives_up_every_lease_at_once(keepers, caplog):
    k, seen = keepers("n1")
    assert k.step()
    k._conn.close()  # the database went away; so does every new connection
    dsn = "host=127.0.0.1 port=1 dbname=none user=router password=pw-f00 connect_timeout=2"
    k._connect = lambda: psycopg.connect(dsn)
    assert not k.step()
    assert seen.lost == [HOOKS] and k.held == {}
    assert "the round failed (OperationalError" in caplog.text
    assert "pw-f00" not in caplog.text


def test_stop_releases_the_leases_so_another_daemon_takes_them_at_once(keepers, pg_dsn):
    k1, _ = keepers("n1")
    k1.round()
    k1.stop()
    assert _owners(pg_dsn) == {w: (None, 1) for w in HOOKS}
    k2, seen2 = keepers("n2")
    k2.round()  # n1's heartbeat is still fresh: n2 counts two live daemons, takes its share
    assert seen2.gained == [{"a": 2, "b": 2, "c": 2}]


def test_a_webhook_removed_from_the_config_is_given_up_and_released(keepers, pg_dsn):
    k, seen = keepers("n1")
    k.round()
    k.want(["a", "b"])
    k.round()
    assert seen.lost == [["c", "d", "e"]]
    assert k.owners(HOOKS) == {"a": "n1", "b": "n1"}


def test_a_second_keeper_with_the_same_node_name_is_refused_while_the_first_is_live(keepers):
    first, _ = keepers("n1")
    first.round()
    twin, _ = keepers("n1")
    with pytest.raises(RouterError, match="another webhook-router runs as node 'n1'"):
        twin.claim()
    assert not twin.step() and twin.held == {}  # its rounds fail the same way: nothing taken


def test_a_node_name_whose_heartbeat_stopped_is_taken_over(keepers, pg_dsn, caplog):
    gone, seen = keepers("n1")
    gone.round()  # its machine died: the server keeps its connection (no FIN came)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '1 hour'")
    again, _ = keepers("n1")
    again.claim()  # the stale one's connection is ended; the name is the new daemon's
    assert "ended the connection of a daemon that ran as node n1" in caplog.text
    assert not gone.step()  # the old one, if it wakes, finds its connection gone
    assert seen.lost == [HOOKS]
    with pytest.raises(RouterError, match="runs as node 'n1'"):
        gone.claim()  # and the name taken


def _open_deliveries(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT webhook, count(*) FROM deliveries WHERE state IN ('pending', 'exhausted')"
            " GROUP BY webhook"
        )
        return dict(rows.fetchall())


def test_a_webhook_no_daemons_config_has_any_more_is_swept(keepers, pg_dsn, caplog):
    """Removed while nobody held it, or fed by a daemon not yet reloaded: nobody would ever
    load its deliveries, and their events would never be purged."""
    k1, _ = keepers("n1")
    k2, _ = keepers("n2")
    for k in (k1, k2):
        k.wanted_every = 0.0  # every round marks and sweeps
        k.want([*HOOKS, "old", "moving"])
        k.round()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for i, webhook in enumerate(["old", "old", "moving", "a"]):
            conn.execute("INSERT INTO events (id, type, received_at, body)"
                         " VALUES (%s, 'T', 0, '{}')", (f"e{i}",))  # fmt: skip
            conn.execute("INSERT INTO deliveries (seq, webhook, state)"
                         " SELECT seq, %s, 'pending' FROM events WHERE id = %s",
                         (webhook, f"e{i}"))  # fmt: skip
    k1.want(HOOKS)  # both reloaded without "old"; only n1 without "moving" so far
    k2.want([*HOOKS, "moving"])
    for k in (k1, k2, k1, k2):
        k.round()
    assert "old" not in {**k1.held, **k2.held}
    assert _open_deliveries(pg_dsn) == {"old": 2, "moving": 1, "a": 1}  # not for long yet
    k1.forgotten_after = k2.forgotten_after = 0.5
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE leases SET wanted_at = now() - interval '1 minute'")
    k2.round()  # "moving" is marked again by n2, whose config still has it
    k1.round()
    assert _open_deliveries(pg_dsn) == {"moving": 1, "a": 1}
    assert "webhook 'old' is in no daemon's config any more: 2 deliveries cancelled" in caplog.text
    assert "old" not in _owners(pg_dsn) and "moving" in _owners(pg_dsn)
