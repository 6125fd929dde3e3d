"""router.pgstore against a real PostgreSQL server (tests/postgres.py), beside router.store.

The tests of the store's semantics run on both backends (``db``): the same calls, the
same answers. Those of what only PostgreSQL has (its schema versions, the fence, the
events lock, notifications) run on the server alone.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest

from router import RouterError, pgstore, store
from router.messages import (
    AlertState,
    Append,
    Delivery,
    Outcome,
    Payload,
    Revive,
    WebhookState,
)
from tests import postgres
from tests.postgres import free_port
from tests.test_journal import DEADLINE, accepted, answer, result, wait_until

NOW = 1_800_000_000.0


class Backend:
    """One journal database and the module whose statements run on it."""

    def __init__(self, module, conn):
        self.module = module
        self.conn = conn

    @property
    def postgres(self) -> bool:
        return self.module is pgstore

    def tx(self, name: str, *args, **kwargs):
        """``module.name(conn, ...)`` in a transaction of its own."""
        fn = getattr(self.module, name)
        if self.postgres:
            with self.conn.transaction():
                return fn(self.conn, *args, **kwargs)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self.conn, *args, **kwargs)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return out

    def rows(self, sql: str, *params) -> list[tuple]:
        """A query written with ``?`` marks, on either backend."""
        if self.postgres:
            return [tuple(r) for r in self.conn.execute(sql.replace("?", "%s"), params)]
        return self.conn.execute(sql, params).fetchall()

    def read(self, name: str, *args, **kwargs):
        """``module.name(conn, ...)`` outside of any transaction of ours (a reader's)."""
        return getattr(self.module, name)(self.conn, *args, **kwargs)

    def append(self, *items, now: float = NOW) -> dict[str, int | None]:
        return {c.item.event.id: c.seq for c in self.tx("insert_events", Append(items), now)}

    def outcome(self, seq, number, at, state, ok=False, next_at=None, webhook="a", body=None):
        r = result(seq, number, at, ok=ok, webhook=webhook)
        if body is not None:
            r = replace(r, response=body)
        return Outcome(webhook, seq, r, state, next_at)

    def record(self, *outcomes, **kwargs):
        return self.tx("record_outcomes", list(outcomes), **kwargs)

    def states(self, webhook: str) -> dict[str, tuple]:
        return {
            eid: (state, n, next_at)
            for eid, state, n, next_at in self.rows(
                "SELECT e.id, d.state, d.attempts, d.next_at FROM deliveries d"
                " JOIN events e ON e.seq = d.seq WHERE d.webhook = ?",
                webhook,
            )
        }

    def kept(self) -> list[tuple[str, int]]:
        """(event id, attempt number) of every attempt row, oldest row first."""
        return self.rows("SELECT event_id, number FROM attempts ORDER BY id")

    def accounted(self) -> int:
        """The running count, checked against the rows themselves."""
        size = self.read("attempt_log_bytes")
        assert size == self.rows("SELECT coalesce(sum(size), 0) FROM attempts")[0][0]
        return size


@pytest.fixture
def pg(pg_dsn):
    conn = pgstore.open_writer(pg_dsn)
    yield Backend(pgstore, conn)
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "postgresql":
        yield request.getfixturevalue("pg")
        return
    conn = store.open_writer(str(tmp_path / "journal.db"))
    yield Backend(store, conn)
    conn.close()


# --------------------------------------------------------------------------- appends


def test_duplicate_ids_across_and_within_appends_get_no_seq_and_no_deliveries(db):
    first = db.append(accepted("e1", "a"))["e1"]
    committed = db.tx("insert_events", Append((accepted("e1", "a", "b"), accepted("e2", "a"),
                                               accepted("e2", "b"))), NOW)  # fmt: skip
    assert committed[0].seq is None and committed[2].seq is None
    second = committed[1].seq
    assert first < second
    assert db.rows("SELECT seq, webhook FROM deliveries ORDER BY seq") == [
        (first, "a"),
        (second, "a"),
    ]


def test_an_event_without_targets_is_kept_for_dedup_and_repeated_targets_count_once(db):
    db.append(accepted("lonely"), accepted("twice", "a", "a"))
    assert db.append(accepted("lonely", "a"))["lonely"] is None
    assert db.rows("SELECT webhook FROM deliveries") == [("a",)]
    assert db.rows("SELECT received_at FROM events ORDER BY seq") == [(NOW,), (NOW,)]


def test_an_empty_append_commits_nothing(db):
    assert db.tx("insert_events", Append(()), NOW) == []


# --------------------------------------------------------------------------- outcomes


def test_outcomes_update_the_delivery_and_the_attempt_log(db):
    seq = db.append(accepted("e1", "a"))["e1"]
    db.record(db.outcome(seq, 1, NOW, "pending", next_at=NOW + 10))
    db.record(db.outcome(seq, 2, NOW + 10, "done", ok=True))
    assert db.states("a")["e1"] == ("done", 2, None)
    log_ = db.read("attempts", "a", limit=10)
    assert [(a["id"], a["attempt"], a["status"], a["error"]) for a in log_] == [
        ("e1", 2, 200, None),
        ("e1", 1, 500, "HTTP 500"),
    ]
    assert log_[1]["at"] == "2027-01-15T08:00:00.000Z"
    assert log_[1]["latency_ms"] == pytest.approx(12.0)
    assert log_[1]["response"] == "boom"
    assert log_[1]["seq"] == seq
    assert db.read("attempts", "a", limit=1) == log_[:1]
    assert db.read("attempts", "a", 10, failed=True) == log_[1:]
    assert db.read("attempts", "a", 10, event="e2") == []


def test_a_repeated_outcome_for_a_done_delivery_is_harmless(db):
    seq = db.append(accepted("e1", "a"))["e1"]
    done = db.outcome(seq, 1, NOW, "done", ok=True)
    stale = db.outcome(seq, 1, NOW - 5, "pending", next_at=NOW)
    db.record(done)
    db.record(done, stale)
    assert db.states("a")["e1"] == ("done", 1, None)
    assert len(db.read("attempts", "a", 10)) == 2


def test_of_several_outcomes_of_one_delivery_in_one_call_the_first_done_wins(db):
    seqs = db.append(accepted("e1", "a"), accepted("e2", "a"), accepted("e3", "a"))
    s1, s2 = seqs["e1"], seqs["e2"]
    db.tx("cancel", "a")  # all three cancelled: only a done outcome changes them
    db.record(
        db.outcome(s1, 1, NOW, "pending", next_at=NOW + 1),
        db.outcome(s1, 2, NOW + 1, "done", ok=True),
        db.outcome(s1, 3, NOW + 2, "exhausted"),
        db.outcome(s2, 1, NOW, "exhausted"),
    )
    assert db.states("a") == {"e1": ("done", 2, None), "e2": ("cancelled", 0, None),
                              "e3": ("cancelled", 0, None)}  # fmt: skip
    s4 = db.append(accepted("e4", "a"))["e4"]  # pending: every outcome applies, in order
    db.record(
        db.outcome(s4, 1, NOW + 5, "pending", next_at=NOW + 6),
        db.outcome(s4, 2, NOW + 6, "exhausted"),
    )
    assert db.states("a")["e4"] == ("exhausted", 2, None)


def test_outcomes_of_one_delivery_in_one_call_leave_its_attempts_in_trim_order(db):
    seqs = db.append(accepted("e1", "a"), accepted("e2", "a"), accepted("e3", "a"))
    s1, s2, s3 = seqs["e1"], seqs["e2"], seqs["e3"]
    db.record(
        db.outcome(s1, 1, NOW, "pending", next_at=NOW + 1),
        db.outcome(s2, 1, NOW, "pending", next_at=NOW + 1),
        db.outcome(s1, 2, NOW + 1, "done", ok=True),
        db.outcome(s2, 2, NOW + 1, "exhausted"),
        db.outcome(s3, 1, NOW, "done", ok=True),
    )
    # 1: finished; 3: the newest attempt of an unfinished delivery; 2: its older ones.
    assert db.rows("SELECT seq, number, trim_order FROM attempts ORDER BY seq, number") == [
        (s1, 1, 1), (s1, 2, 1), (s2, 1, 2), (s2, 2, 3), (s3, 1, 1),
    ]  # fmt: skip
    db.tx("revive", Revive("a", lambda r: None, include_done=True, event="e1"))  # open again
    assert db.rows("SELECT number, trim_order FROM attempts WHERE seq = ? ORDER BY number",
                   s1) == [(1, 2), (2, 3)]  # fmt: skip
    db.record(db.outcome(s2, 3, NOW + 9, "pending", next_at=NOW + 10))  # stays unfinished
    db.tx("cancel", "a")  # finished now: every row 1
    assert db.rows("SELECT DISTINCT trim_order FROM attempts") == [(1,)]
    db.accounted()


def test_a_bad_state_is_refused_before_anything_is_written(db):
    seq = db.append(accepted("e1", "a"))["e1"]
    with pytest.raises(ValueError, match="bogus"):
        db.record(db.outcome(seq, 1, NOW, "done", ok=True), db.outcome(seq, 2, NOW, "bogus"))
    assert db.kept() == []


def test_a_success_keeps_a_prefix_of_its_response_and_a_failure_all_of_it(db):
    seq = db.append(accepted("e1", "a"))["e1"]
    failure = "f" * 65536
    success = "x" + "é" * 600  # 1201 bytes: the cut at 1024 falls inside a character
    db.record(db.outcome(seq, 1, NOW, "pending", body=failure, next_at=NOW))
    db.record(db.outcome(seq, 2, NOW + 1, "done", ok=True, body=success))
    second, first = db.read("attempts", "a", 10)
    assert second["response"] == "x" + "é" * 511
    assert first["response"] == failure
    cost = store.ROW_COST + len("e1")
    assert db.accounted() == cost * 2 + 65536 + len("HTTP 500") + len(second["response"].encode())


# --------------------------------------------------------------------------- revive, cancel


def test_revive_makes_exhausted_deliveries_pending_with_attempts_reset(db):
    seqs = db.append(*(accepted(f"e{i}", "a") for i in range(1, 5)))
    for eid, state in (("e1", "exhausted"), ("e2", "pending"), ("e3", "exhausted")):
        db.record(db.outcome(seqs[eid], 5, NOW, state, next_at=NOW + 60))
    assert db.tx("revive", Revive("a", lambda r: None)) == 2
    assert db.states("a")["e1"] == ("pending", 0, None)
    assert db.states("a")["e3"] == ("pending", 0, None)
    assert db.states("a")["e2"] == ("pending", 5, NOW + 60)
    assert db.tx("revive", Revive("a", lambda r: None)) == 0


def test_revive_with_include_done_since_until_or_one_event_picks_only_those(db):
    early = db.append(accepted("early", "a"), now=NOW)
    seqs = early | db.append(accepted("late", "a"), accepted("other", "a"), now=NOW + 50)
    db.append(accepted("b1", "b"), now=NOW + 50)
    db.record(*(db.outcome(seqs[e], 1, NOW + 60, "done", ok=True) for e in seqs))

    def revive(**kwargs) -> int:
        return db.tx("revive", Revive("a", lambda r: None, include_done=True, **kwargs))

    assert revive(since=NOW + 10, event="early") == 0  # early is before since
    assert revive(until=NOW + 10) == 1
    assert revive(event="late") == 1
    assert {e: s[0] for e, s in db.states("a").items()} == {
        "early": "pending", "late": "pending", "other": "done"}  # fmt: skip
    assert revive(since=NOW + 10) == 1
    assert db.states("b") == {"b1": ("pending", 0, None)}


def test_cancel_cancels_pending_and_exhausted_deliveries_of_one_webhook(db):
    seqs = db.append(*(accepted(f"e{i}", "a", "b") for i in range(1, 4)))
    db.record(db.outcome(seqs["e2"], 5, NOW, "exhausted"))
    db.record(db.outcome(seqs["e3"], 1, NOW, "done", ok=True))
    assert db.tx("cancel", "a") == 2
    assert {k: v[0] for k, v in db.states("a").items()} == {
        "e1": "cancelled", "e2": "cancelled", "e3": "done"}  # fmt: skip
    assert {v[0] for v in db.states("b").values()} == {"pending"}
    assert db.tx("cancel", "a") == 0


# --------------------------------------------------------------------------- reads


def test_pending_deliveries_page_by_after_seq_and_limit_or_by_seqs(db):
    seqs = db.append(*(accepted(f"e{i}", "a") for i in range(1, 7)))
    db.record(db.outcome(seqs["e2"], 1, NOW, "done", ok=True))
    db.record(db.outcome(seqs["e4"], 2, NOW, "pending", next_at=99.0))
    pages, after = [], 0
    while True:
        found, wanted = db.read("pending_deliveries", "a", after, 2)
        assert wanted == 0
        if not found:
            break
        pages.append([d.payload.id for d in found])
        after = found[-1].seq
    assert pages == [["e1", "e3"], ["e4", "e5"], ["e6"]]
    by_seq, _ = db.read("pending_deliveries", "a", 0, 10, seqs=(seqs["e4"], seqs["e2"]))
    payload = Payload("e4", "T", '{"id":"e4","type":"T"')
    assert by_seq == (Delivery(seqs["e4"], payload, 2, 99.0),)  # e2 is done


def test_pending_deliveries_stop_at_max_bytes_and_say_what_the_next_costs(db):
    db.append(accepted("small", "a"), accepted("big", "a", body="x" * 10_000))
    small, _ = db.read("pending_deliveries", "a", 0, 10)
    found, wanted = db.read("pending_deliveries", "a", 0, 10, max_bytes=5_000)
    assert found == small[:1] and wanted > 10_000


def test_one_webhook_and_unfinished_count_what_is_left(db):
    seqs = db.append(*(accepted(f"e{i}", "a", "b") for i in range(1, 5)))
    db.record(db.outcome(seqs["e1"], 5, NOW, "exhausted"))
    db.record(db.outcome(seqs["e2"], 1, NOW, "done", ok=True))
    db.tx("cancel", "b")
    db.tx("save_states", [("a", WebhookState(delivered=1))])
    assert db.read("one_webhook", "a") == (WebhookState(delivered=1), 2, 1, seqs["e4"])
    assert db.read("one_webhook", "c") == (WebhookState(), 0, 0, seqs["e4"])
    assert db.read("unfinished") == {"a": (2, 1)}


def test_save_states_keeps_every_field_and_the_last_of_a_name(db):
    older = WebhookState(state="failing", consecutive_failures=1, last_error="HTTP 500")
    alerts = AlertState(NOW - 60, "disabled", NOW + 0.25)
    newer = WebhookState("disabled", "exhausted", 5, 10, 1, NOW + 0.5, "timeout", alerts)
    db.tx("save_states", [("a", older), ("b", older), ("a", newer)])
    assert db.read("saved_states") == {"a": newer, "b": older}
    db.tx("save_states", [("b", WebhookState())])
    assert db.read("saved_states")["b"] == WebhookState()


# --------------------------------------------------------------------------- purge


def test_purge_removes_only_finished_events_older_than_the_cutoff(db):
    seqs = db.append(
        accepted("done", "a"), accepted("pending", "a"), accepted("nobody"),
        accepted("exhausted", "a"), accepted("cancelled", "c"), now=NOW,
    )  # fmt: skip
    db.record(db.outcome(seqs["done"], 1, NOW, "done", ok=True))
    db.record(db.outcome(seqs["pending"], 1, NOW, "pending", next_at=NOW + 10))
    db.record(db.outcome(seqs["exhausted"], 5, NOW + 150, "exhausted"))
    db.tx("cancel", "c")
    db.append(accepted("recent", "a"), now=NOW + 200)
    assert db.tx("purge", NOW + 100, 1000) == (3, 1)  # done, nobody, cancelled; pending's try
    assert {eid for (eid,) in db.rows("SELECT id FROM events")} == {
        "pending", "exhausted", "recent"}  # fmt: skip
    assert [a["id"] for a in db.read("attempts", "a", 10)] == ["exhausted"]
    assert db.rows("SELECT count(*) FROM deliveries WHERE webhook = 'c'") == [(0,)]
    assert db.append(accepted("done", "a"))["done"] is not None  # the id is new again
    db.accounted()


def test_purge_goes_at_most_limit_at_a_time(db):
    seqs = db.append(*(accepted(f"e{i}", "a") for i in range(5)))
    db.record(*(db.outcome(s, 1, NOW + 10, "done", ok=True) for s in seqs.values()))
    assert db.tx("purge", NOW + 1, 2) == (2, 0)  # the attempts are newer than the cutoff
    assert db.tx("purge", NOW + 1, 2) == (2, 0)
    assert db.tx("purge", NOW + 1, 2) == (1, 0)
    assert db.rows("SELECT count(*) FROM attempts") == [(0,)]
    db.accounted()


# ----------------------------------------------------------------------- the attempt log's ceiling


def tried(db: Backend, seq: int, *bodies: str, then: str, at: float) -> None:
    """A failed attempt per body, the last leaving state ``then``; for "done", a 2xx after them."""
    for number, body in enumerate(bodies, 1):
        state = then if number == len(bodies) and then != "done" else "pending"
        db.record(Outcome("a", seq, answer(seq, number, at + number, False, body), state, at + 99))
    if then == "done":
        n = len(bodies) + 1
        db.record(Outcome("a", seq, answer(seq, n, at + n, True, "ok"), "done"))


def test_over_its_ceiling_the_attempt_log_loses_the_oldest_attempts_of_finished_deliveries(db):
    seqs = db.append(accepted("held", "a"), *(accepted(f"e{i}", "a") for i in range(12)))
    tried(db, seqs["held"], "h" * 50_000, "h" * 50_000, then="exhausted", at=NOW)
    for i in range(12):
        tried(db, seqs[f"e{i}"], "f" * 50_000, then="done", at=NOW + 10 + i)
    gone, size = db.tx("trim_attempts", 300_000, 500)
    assert size == db.accounted() <= 300_000 and gone > 0
    log_ = db.kept()
    assert log_[:2] == [("held", 1), ("held", 2)]  # unfinished: kept though oldest
    every_done = [(f"e{i}", n) for i in range(12) for n in (1, 2)]
    assert len(log_) - 2 == len(every_done) - gone
    assert log_[2:] == every_done[gone:]  # the newest survived, the oldest went
    assert db.tx("trim_attempts", 300_000, 500) == (0, size)


def test_past_finished_ones_the_newest_attempt_of_each_unfinished_delivery_stays_cut_short(db):
    seqs = db.append(accepted("held", "a"), accepted("done", "a"), accepted("retry", "a"))
    tried(db, seqs["held"], "1" * 50_000, "2" * 50_000, "3" * 50_000, then="exhausted", at=0)
    tried(db, seqs["done"], "d" * 50_000, then="done", at=NOW)
    tried(db, seqs["retry"], "r" * 50_000, then="pending", at=NOW)
    _, size = db.tx("trim_attempts", 60_000, 500)
    assert db.kept() == [("held", 3), ("retry", 1)]  # each still says why it failed
    assert size == db.accounted() <= 60_000
    responses = [a["response"] for a in db.read("attempts", "a", 10)]
    assert responses == ["r" * 50_000, "3" * store.SUCCESS_RESPONSE_CAP]  # the older cut first
    _, size = db.tx("trim_attempts", 1_500, 500)  # less than their prefixes: nothing more goes
    assert size == db.accounted() > 1_500
    assert db.kept() == [("held", 3), ("retry", 1)]
    assert [a["response"] for a in db.read("attempts", "a", 10)] == [
        "r" * store.SUCCESS_RESPONSE_CAP,
        "3" * store.SUCCESS_RESPONSE_CAP,
    ]
    assert db.tx("trim_attempts", 1_500, 500) == (0, size)  # nothing left to cut


def test_the_attempts_of_a_cancelled_delivery_go_before_older_ones_of_a_held_delivery(db):
    seqs = db.append(accepted("held", "a"), accepted("gone", "b"))
    tried(db, seqs["held"], "1" * 50_000, "2" * 50_000, then="exhausted", at=NOW)
    gone = answer(seqs["gone"], 1, NOW + 5, False, "g" * 50_000)
    db.record(Outcome("b", seqs["gone"], replace(gone, webhook="b"), "pending", NOW + 99))
    db.tx("cancel", "b")
    assert db.tx("trim_attempts", db.accounted() - 1, 500)[0] == 1
    assert db.kept() == [("held", 1), ("held", 2)]


def test_trimming_stops_at_its_limit_of_rows(db):
    seqs = db.append(*(accepted(f"e{i}", "a") for i in range(5)))
    for i in range(5):
        tried(db, seqs[f"e{i}"], "f" * 10_000, then="done", at=NOW)
    assert db.tx("trim_attempts", 0, 3)[0] == 3
    assert db.kept()[0] == ("e1", 2)  # e0's two rows and e1's first went
    db.accounted()


# --------------------------------------------------------------------------- schema (PostgreSQL)


def test_open_writer_creates_the_schema_in_an_empty_database_once(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert pgstore.schema_state(conn) == pgstore.EMPTY
    first = pgstore.open_writer(pg_dsn)
    second = pgstore.open_writer(pg_dsn)  # a second daemon: nothing to do
    try:
        assert pgstore.schema_state(second) == pgstore.CURRENT
        assert second.execute("SELECT version FROM schema_version").fetchall() == [
            (pgstore.SCHEMA_VERSION,)
        ]
        tables = {r[0] for r in second.execute("SELECT tablename FROM pg_tables"
                                              " WHERE schemaname = 'public'")}  # fmt: skip
        assert tables >= {"events", "deliveries", "attempts", "webhooks", "api_webhooks",
                          "nodes", "leases", "schema_version"}  # fmt: skip
        with pytest.raises(RouterError, match="not empty"):
            pgstore.create_schema(second)
        assert pgstore.migrate(second) == []
    finally:
        first.close()
        second.close()


def test_daemons_starting_together_on_an_empty_database_make_one_schema(pg_dsn):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            pgstore.open_writer(pg_dsn).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    assert errors == []


def test_a_schema_newer_than_this_router_or_not_ours_is_refused(pg_dsn, pg):
    pg.conn.execute("UPDATE schema_version SET version = 99")
    assert pgstore.schema_state(pg.conn) == pgstore.UNKNOWN
    with pytest.raises(RouterError, match=r"schema version 99, newer .*upgrade the router"):
        pgstore.open_writer(pg_dsn)
    with pytest.raises(RouterError, match="newer"):
        pgstore.migrate(pg.conn)
    pg.conn.execute("DROP TABLE schema_version")  # tables of some other program
    assert pgstore.schema_state(pg.conn) == pgstore.UNKNOWN
    with pytest.raises(RouterError, match="not a webhook-router journal"):
        pgstore.open_writer(pg_dsn)


def test_an_older_schema_is_upgraded_by_migrate_alone_and_keeps_everything(
    pg_dsn, monkeypatch, caplog
):
    old = pgstore.open_writer(pg_dsn)  # version 1
    Backend(pgstore, old).append(accepted("e1", "a"))
    monkeypatch.setattr(pgstore, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(pgstore._UPGRADES, 2, "ALTER TABLE webhooks ADD COLUMN note text")
    assert pgstore.schema_state(old) == pgstore.OLDER
    with pytest.raises(RouterError, match=r"version 1, older .*webhook-router migrate"):
        pgstore.open_writer(pg_dsn)
    caplog.set_level("INFO", logger="router.pgstore")
    assert pgstore.migrate(old) == [2]
    assert "upgraded to schema version 2" in caplog.text
    assert pgstore.schema_state(old) == pgstore.CURRENT
    assert old.execute("SELECT count(*) FROM webhooks WHERE note IS NULL").fetchone() == (0,)
    assert old.execute("SELECT id FROM events").fetchall() == [("e1",)]
    pgstore.open_writer(pg_dsn).close()
    old.close()


def test_a_failed_upgrade_leaves_the_database_as_it_was(pg, monkeypatch):
    monkeypatch.setattr(pgstore, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(pgstore._UPGRADES, 2, "ALTER TABLE webhooks ADD COLUMN note text")
    monkeypatch.setitem(pgstore._UPGRADES, 3, "ALTER TABLE no_such_table ADD COLUMN x text")
    with pytest.raises(psycopg.errors.UndefinedTable):
        pgstore.migrate(pg.conn)
    assert pg.rows("SELECT version FROM schema_version") == [(1,)]
    assert pg.rows(
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'"
    ) == [(0,)]


def test_a_failed_connection_says_why_without_the_connection_string():
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres password=sekrit-9 connect_timeout=5"
    with pytest.raises(RouterError, match="cannot connect to the PostgreSQL journal") as e:
        pgstore.open_writer(dsn)
    assert "sekrit-9" not in str(e.value)


def test_a_reader_cannot_write(pg_dsn, pg):
    reader = pgstore.open_reader(pg_dsn)
    try:
        assert pgstore.unfinished(reader) == {}
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("DELETE FROM events")
    finally:
        reader.close()


# --------------------------------------------------------------------------- fencing


def lease(pg: Backend, webhook: str, owner: str | None, epoch: int) -> None:
    pg.conn.execute(
        "INSERT INTO leases (webhook, owner, epoch, expires_at) VALUES (%s, %s, %s, now())"
        " ON CONFLICT (webhook) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch",
        (webhook, owner, epoch),
    )


def test_a_write_with_a_stale_epoch_changes_nothing_and_names_the_webhook(pg):
    seqs = pg.append(accepted("e1", "a", "b"), accepted("e2", "a", "b"))
    lease(pg, "a", "n1", 2)  # taken over by n1 at epoch 2 since n1 had it at epoch 1
    lease(pg, "b", "n1", 1)
    stale = {"a": ("n1", 1), "b": ("n1", 1)}
    lost = pg.record(
        pg.outcome(seqs["e1"], 1, NOW, "done", ok=True),
        pg.outcome(seqs["e1"], 1, NOW, "done", ok=True, webhook="b"),
        fence=stale,
    )
    assert lost == {"a"}
    assert pg.states("a") == {"e1": ("pending", 0, None), "e2": ("pending", 0, None)}
    assert pg.states("b")["e1"] == ("done", 1, None)  # the lease still held: written
    assert pg.rows("SELECT webhook FROM attempts") == [("b",)]
    assert pg.tx("save_states", [("a", WebhookState(delivered=9)), ("b", WebhookState())],
                 fence=stale) == {"a"}  # fmt: skip
    assert set(pg.read("saved_states")) == {"b"}
    with pytest.raises(pgstore.LeaseLost) as e:
        pg.tx("cancel", "a", fence=stale)
    assert e.value.webhooks == {"a"} and "lease lost for a" in str(e.value)
    with pytest.raises(pgstore.LeaseLost):
        pg.tx("revive", Revive("a", lambda r: None, include_done=True), fence=stale)
    assert pg.states("a") == {"e1": ("pending", 0, None), "e2": ("pending", 0, None)}
    # The current epoch writes; so does an unfenced write (one daemon, no leases).
    assert pg.tx("cancel", "a", fence={"a": ("n1", 2)}) == 2
    assert pg.tx("revive", Revive("a", lambda r: None), fence={"a": ("n1", 2)}) == 0
    assert pg.tx("cancel", "b", fence={"b": ("n1", 1)}) == 1
    assert pg.tx("cancel", "b") == 0


def test_a_webhook_the_fence_does_not_name_or_another_owner_holds_is_lost(pg):
    seq = pg.append(accepted("e1", "a", "b", "c"))["e1"]
    lease(pg, "a", "n2", 1)
    lease(pg, "c", None, 4)  # let go of
    lost = pg.record(
        *(pg.outcome(seq, 1, NOW, "done", ok=True, webhook=w) for w in "abc"),
        fence={"a": ("n1", 1), "c": ("n1", 4)},
    )
    assert lost == {"a", "b", "c"}
    assert pg.kept() == []
    assert pg.record(pg.outcome(seq, 1, NOW, "done", ok=True), fence={}) == {"a"}
    assert pg.record(pg.outcome(seq, 1, NOW, "done", ok=True)) == set()
    assert pg.states("a")["e1"] == ("done", 1, None)


def test_each_write_checks_the_lease_itself_should_it_change_after_the_check(pg, monkeypatch):
    seq = pg.append(accepted("e1", "a"))["e1"]
    pg.record(pg.outcome(seq, 1, NOW, "exhausted"))
    lease(pg, "a", "n2", 2)
    stale = {"a": ("n1", 1)}
    # The check says the lease is held (as when it changes hands right after): the
    # statements' own WHERE clauses still refuse the stale epoch.
    monkeypatch.setattr(pgstore, "_lost", lambda conn, webhooks, fence: (set(), dict(fence)))
    assert pg.record(pg.outcome(seq, 2, NOW + 1, "done", ok=True), fence=stale) == set()
    assert pg.tx("save_states", [("a", WebhookState(delivered=1))], fence=stale) == set()
    assert pg.tx("revive", Revive("a", lambda r: None), fence=stale) == 0
    assert pg.tx("cancel", "a", fence=stale) == 0
    assert pg.states("a")["e1"] == ("exhausted", 1, None)
    assert pg.kept() == [("e1", 1)]
    assert pg.read("saved_states") == {}


def blocked_on_a_lock(conn: psycopg.Connection, pid: int) -> bool:
    """The backend ``pid`` waits for a lock (seen from ``conn``)."""
    row = conn.execute(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    return row is not None and row[0] == "Lock"


def in_a_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_a_takeover_waits_for_a_fenced_write_in_flight_and_then_fences_it(pg_dsn, pg):
    seqs = pg.append(accepted("e1", "a"), accepted("e2", "a"))
    lease(pg, "a", "n1", 1)
    fence = {"a": ("n1", 1)}
    taker = pgstore.connect(pg_dsn)
    taker_pid = taker.info.backend_pid

    def take() -> None:
        with taker.transaction():
            pgstore.hold_off_writers(taker)
            taker.execute("UPDATE leases SET owner = 'n2', epoch = epoch + 1 WHERE webhook = 'a'")

    try:
        with pg.conn.transaction():
            lost = pgstore.record_outcomes(
                pg.conn, [pg.outcome(seqs["e1"], 1, NOW, "done", ok=True)], fence
            )
            assert lost == set()
            thread, _ = in_a_thread(take)
            with pgstore.connect(pg_dsn) as watcher:
                wait_until(lambda: blocked_on_a_lock(watcher, taker_pid))
            # Still this transaction's: the lease has not changed hands under it.
            assert pgstore.save_states(pg.conn, [("a", WebhookState(delivered=1))], fence) == set()
        thread.join(DEADLINE)
        assert not thread.is_alive()
        assert pg.rows("SELECT owner, epoch FROM leases") == [("n2", 2)]
        assert pg.record(pg.outcome(seqs["e2"], 1, NOW, "done", ok=True), fence=fence) == {"a"}
        assert pg.states("a")["e2"] == ("pending", 0, None)
        assert pg.read("saved_states")["a"].delivered == 1
    finally:
        taker.close()


# --------------------------------------------------------------------------- several writers


def test_event_seqs_commit_in_the_order_they_are_given(pg_dsn, pg):
    other = pgstore.connect(pg_dsn)
    try:
        with pg.conn.transaction():
            (first,) = pgstore.insert_events(pg.conn, Append((accepted("e1", "a"),)), NOW)

            def insert() -> int | None:
                with other.transaction():
                    return pgstore.insert_events(other, Append((accepted("e2", "a"),)), NOW)[0].seq

            thread, out = in_a_thread(insert)
            with pgstore.connect(pg_dsn) as watcher:
                wait_until(lambda: blocked_on_a_lock(watcher, other.info.backend_pid))
        thread.join(DEADLINE)
        assert out[0] > first.seq  # e2 got its seq after e1 committed
    finally:
        other.close()


def test_daemons_writing_and_taking_leases_at_once_neither_deadlock_nor_skip_a_seq(pg_dsn, pg):
    """Three writers (events, fenced outcomes), a lease taker and a reader paging by seq."""
    lease(pg, "a", "n1", 1)
    epoch = {"a": 1}  # the taker's latest, which the writers fence with (sometimes stale)
    failures: list[BaseException] = []
    writing = threading.Event()
    read: list[int] = []

    def guarded(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                failures.append(e)

        return run

    def writer(n: int) -> None:
        with pgstore.connect(pg_dsn) as conn:
            for i in range(30):
                with conn.transaction():
                    items = (accepted(f"w{n}-{i}", "a", "b"),)
                    (c,) = pgstore.insert_events(conn, Append(items), NOW)
                    outcome = Outcome("a", c.seq, result(c.seq, 1, NOW), "done")
                    pgstore.record_outcomes(conn, [outcome], {"a": ("n1", epoch["a"])})

    def taker() -> None:
        with pgstore.connect(pg_dsn) as conn:
            for _ in range(30):
                with conn.transaction():
                    pgstore.hold_off_writers(conn)
                    conn.execute("UPDATE leases SET epoch = epoch + 1 WHERE webhook = 'a'")
                epoch["a"] += 1

    def reader() -> None:
        with pgstore.connect(pg_dsn) as conn:
            last = False
            while not last:
                last = not writing.is_set()  # one more read after the writers are done
                after = read[-1] if read else 0
                read.extend(d.seq for d in pgstore.pending_deliveries(conn, "b", after, 1000)[0])

    threads = [threading.Thread(target=guarded(lambda n=n: writer(n))) for n in range(3)]
    threads.append(threading.Thread(target=guarded(taker)))
    writing.set()
    for t in threads:
        t.start()
    paging = threading.Thread(target=guarded(reader))
    paging.start()
    for t in threads:
        t.join(60)
    writing.clear()
    paging.join(DEADLINE)
    assert failures == []
    assert not any(t.is_alive() for t in [*threads, paging])
    assert read == [seq for (seq,) in pg.rows("SELECT seq FROM deliveries WHERE webhook = 'b'"
                                              " ORDER BY seq")]  # fmt: skip
    assert len(read) == 90


def test_the_attempt_log_count_adds_up_over_many_connections(pg_dsn, pg):
    seqs = pg.append(*(accepted(f"e{i}", "a") for i in range(20)))
    conns = [pgstore.connect(pg_dsn) for _ in range(5)]
    try:
        for i, conn in enumerate(conns * 4):
            s = seqs[f"e{i}"]
            with conn.transaction():
                pgstore.record_outcomes(conn, [pg.outcome(s, 1, NOW + i, "done", ok=True,
                                                          body="x" * i)])  # fmt: skip
        with conns[0].transaction():
            pgstore.purge(conns[0], NOW + 1, 3)
    finally:
        for conn in conns:
            conn.close()
    assert pg.accounted() == sum(store.ROW_COST + len(f"e{i}") + i for i in range(3, 20))


# --------------------------------------------------------------------------- notifications


def notifications(conn: psycopg.Connection) -> list[str]:
    """Every notification ``conn`` has received so far (none waited for)."""
    return [n.payload for n in conn.notifies(timeout=0)]


def test_notify_sends_one_notification_per_commit_to_a_listener(pg_dsn, pg):
    listener = pgstore.connect(pg_dsn)
    try:
        listener.execute(f"LISTEN {pgstore.NOTIFY_CHANNEL}")
        with pg.conn.transaction():
            pg.append(accepted("e1", "b", "a"))
            pgstore.notify(pg.conn, ["b", "a", "b"])
        got: list[str] = []
        wait_until(lambda: got.extend(notifications(listener)) or got)
        assert got == ["a\nb"]
        assert pgstore.woken(got[0]) == {"a", "b"}
        with pg.conn.transaction():
            pgstore.notify(pg.conn, [])  # nothing new: nothing sent
            pgstore.notify(pg.conn, [f"webhook-{i:05}" for i in range(1000)])  # 14 KB
        wait_until(lambda: got.extend(notifications(listener)) or len(got) == 2)
        assert got[1] == pgstore.NOTIFY_ALL and pgstore.woken(got[1]) is None
        with pytest.raises(ZeroDivisionError), pg.conn.transaction():
            pgstore.notify(pg.conn, ["rolled-back"])
            raise ZeroDivisionError
        with pg.conn.transaction():
            pgstore.notify(pg.conn, ["c"])
        wait_until(lambda: got.extend(notifications(listener)) or len(got) == 3)
        assert got[2] == "c"  # the rolled-back one never came
    finally:
        listener.close()


def test_a_payload_of_just_under_the_bound_still_names_every_webhook(pg):
    names = [f"w{i:07}" for i in range(pgstore.NOTIFY_MAX // 9)]  # 8 bytes and a newline each
    with pg.conn.transaction():
        pgstore.notify(pg.conn, names)  # PostgreSQL takes it (it refuses 8000 bytes and more)
    assert len("\n".join(names).encode()) <= pgstore.NOTIFY_MAX


# --------------------------------------------------------------------------- API-made webhooks


def test_api_made_webhooks_are_created_replaced_and_deleted(pg):
    pg.tx("put_api_webhook", "b", '{"name": "b"}', NOW)
    pg.tx("put_api_webhook", "a", '{"name": "a"}', NOW)
    pg.tx("put_api_webhook", "a", '{"name": "a", "url": "https://x.test/"}', NOW + 5)
    assert pg.read("api_webhooks") == [("a", '{"name": "a", "url": "https://x.test/"}'),
                                       ("b", '{"name": "b"}')]  # fmt: skip
    assert pg.rows("SELECT created_at, updated_at FROM api_webhooks WHERE name = 'a'") == [
        (NOW, NOW + 5)
    ]
    pg.tx("delete_api_webhook", "b")
    pg.tx("delete_api_webhook", "nobody")
    assert [name for name, _ in pg.read("api_webhooks")] == ["a"]


# --------------------------------------------------------------------------- the journal's writer


def test_the_writer_commits_durably_or_not_as_asked_and_rolls_back(pg_dsn):
    writer = pgstore.Writer(pg_dsn)
    conn = writer.conn
    try:
        assert str(writer).startswith("postgresql://127.0.0.1:")
        conn.execute("SET synchronous_commit = on")  # as a production server has it
        for durable, level in ((True, "on"), (False, "off")):
            writer.begin(durable=durable)
            assert conn.execute("SHOW synchronous_commit").fetchone() == (level,)
            pgstore.insert_events(conn, Append((accepted(f"e-{level}", "a"),)), NOW)
            writer.commit()
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # LOCAL: one
        writer.begin()
        pgstore.insert_events(conn, Append((accepted("undone", "a"),)), NOW)
        writer.rollback()
        writer.rollback()  # none open: nothing to do
        assert [r[0] for r in conn.execute("SELECT id FROM events ORDER BY seq")] == [
            "e-on", "e-off"]  # fmt: skip
    finally:
        writer.close()


def test_a_bad_message_spoils_only_its_savepoint_and_is_not_a_storage_error(pg_dsn):
    writer = pgstore.Writer(pg_dsn)
    conn = writer.conn
    try:
        writer.begin()
        pgstore.insert_events(conn, Append((accepted("good", "a"),)), NOW)
        writer.savepoint()
        with pytest.raises(psycopg.Error) as e:
            pgstore.insert_events(conn, Append((accepted("bad\x00id", "a"),)), NOW)
        assert not writer.storage_error(e.value)
        writer.rollback_savepoint()
        writer.release()
        writer.commit()
        assert conn.execute("SELECT id FROM events").fetchall() == [("good",)]
    finally:
        writer.close()


def test_the_writer_connects_again_after_its_connection_broke(pg_dsn):
    writer = pgstore.Writer(pg_dsn)
    try:
        with pgstore.connect(pg_dsn) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (writer.conn.info.backend_pid,))
        with pytest.raises(psycopg.Error) as e:
            writer.begin()
            pgstore.insert_events(writer.conn, Append((accepted("lost", "a"),)), NOW)
        assert writer.storage_error(e.value)
        writer.rollback()  # the transaction went with the connection: nothing to roll back
        writer.begin()
        pgstore.insert_events(writer.conn, Append((accepted("after", "a"),)), NOW)
        writer.commit()
        reader = writer.reader()
        assert reader.execute("SELECT id FROM events").fetchall() == [("after",)]
        reader.close()
    finally:
        writer.close()


# --------------------------------------------------------------------------- the test server


def test_without_postgresql_and_no_way_to_install_it_the_tests_fail_saying_why(
    tmp_path, monkeypatch
):
    script = tmp_path / "install.sh"
    script.write_text("echo 'E: Unable to locate package postgresql' >&2\nexit 100\n")
    monkeypatch.setattr(postgres, "INSTALL", script)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(pytest.fail.Exception, match=r"could not install it \(exit 100\): E: Un"):
        postgres.binaries()


# --------------------------------------------------------------------------- control requests


def held_by(pg: Backend, webhook: str, owner: str) -> None:
    """An unexpired lease of ``webhook`` for ``owner``."""
    pg.conn.execute(
        "INSERT INTO leases (webhook, owner, epoch, expires_at)"
        " VALUES (%s, %s, 1, now() + interval '1 hour') ON CONFLICT (webhook)"
        " DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
        (webhook, owner),
    )


class Odd:
    """A value JSON does not know: it goes as its text."""

    def __str__(self) -> str:
        return "odd"


def test_a_request_reaches_its_node_once_and_the_answer_comes_back_to_the_asker(pg_dsn, pg):
    holder, asker = pgstore.connect(pg_dsn), pgstore.connect(pg_dsn)
    try:
        holder.execute(f"LISTEN {pgstore.REQUESTS_CHANNEL}")
        asker.execute(f"LISTEN {pgstore.ANSWERS_CHANNEL}")
        held_by(pg, "a", "n1")
        rid = pg.tx("put_request", "a", "n1", "n2", "replay", {"since": 1.5, "event": None}, 30)
        got: list[str] = []
        wait_until(lambda: got.extend(notifications(holder)) or got)
        assert got == ["n1"]  # the node asked
        assert pgstore.request_state(pg.conn, rid) == pgstore.RequestState(False, None, "n1")
        assert pg.tx("take_requests", "n2", 10) == []  # asked of n1, not n2
        assert pg.tx("take_requests", "n1", 10) == [
            pgstore.Request(rid, "a", "n2", "replay", {"since": 1.5, "event": None})
        ]
        assert pg.tx("take_requests", "n1", 10) == []  # taken once
        assert pgstore.request_state(pg.conn, rid).taken
        answer = {"ok": True, "result": {"requeued": 2, "at": NOW, "odd": Odd(), "t": (1, 2)}}
        assert pg.tx("answer_request", rid, answer)
        answers: list[str] = []
        wait_until(lambda: answers.extend(notifications(asker)) or answers)
        assert answers == [str(rid)]
        result = {"requeued": 2, "at": NOW, "odd": "odd", "t": [1, 2]}
        assert pgstore.request_state(pg.conn, rid).answer == {"ok": True, "result": result}
        assert pg.tx("drop_request", rid) is True  # it had been taken
        assert pgstore.request_state(pg.conn, rid) is None
        assert pg.tx("answer_request", rid, answer) is False  # the asker is gone
        assert notifications(asker) == []  # and is not told
    finally:
        holder.close()
        asker.close()


def test_requests_are_taken_oldest_first_up_to_the_limit_and_never_past_their_wait(pg):
    ids = [pg.tx("put_request", "a", "n1", "n2", "disable", {}, 60) for _ in range(3)]
    late = pg.tx("put_request", "a", "n1", "n2", "disable", {}, 0)  # its wait is over already
    assert [r.id for r in pg.tx("take_requests", "n1", 2)] == ids[:2]
    assert [r.id for r in pg.tx("take_requests", "n1", 2)] == ids[2:]
    assert pg.tx("take_requests", "n1", 2) == []  # the late one stays untaken
    assert pg.tx("drop_request", late) is False  # dropped untaken: never run
    assert pg.tx("drop_request", late) is False  # gone already


def test_the_holder_a_request_sees_is_whoever_has_the_lease_unexpired_now(pg):
    rid = pg.tx("put_request", "a", "n1", "n2", "enable", {}, 60)
    assert pgstore.request_state(pg.conn, rid).holder is None  # no lease at all
    held_by(pg, "a", "n3")
    assert pgstore.request_state(pg.conn, rid).holder == "n3"
    pg.conn.execute("UPDATE leases SET expires_at = now() - interval '1 second'")
    assert pgstore.request_state(pg.conn, rid).holder is None


def test_rows_whose_askers_are_long_gone_are_deleted_when_the_next_request_is_filed(pg):
    recent = pg.tx("put_request", "a", "n1", "n2", "enable", {}, -pgstore.REQUESTS_KEPT + 60)
    old = pg.tx("put_request", "a", "n1", "n2", "enable", {}, -pgstore.REQUESTS_KEPT - 1)
    assert pg.rows("SELECT id FROM requests ORDER BY id") == [(recent,), (old,)]
    new = pg.tx("put_request", "b", "n1", "n2", "test", {}, 10)
    assert pg.rows("SELECT id FROM requests ORDER BY id") == [(recent,), (new,)]
