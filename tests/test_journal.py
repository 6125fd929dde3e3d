"""The journal against real SQLite files in tmp_path, its writer thread running for real.

The tests of its semantics also run on a PostgreSQL database (``make`` on each journal
backend, as the integration suite's daemons); those about the SQLite file itself are
marked ``sqlite_only``, and say why.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from router import RouterError, journal, metrics, pgstore, store
from router.clock import Clock
from router.journal import Journal, Restored
from router.messages import (
    Accepted,
    Append,
    AttemptResult,
    Cancel,
    Delivery,
    Event,
    Loaded,
    LoadPending,
    Outcome,
    Payload,
    Rebuild,
    Revive,
    SaveState,
    WebhookState,
)
from router.store import SUCCESS_RESPONSE_CAP
from tests.integration.conftest import journal_backend, pytest_generate_tests  # noqa: F401

DEADLINE = 5.0


class FakeClock(Clock):
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


class Recorder:
    """Collects on_commit batches and on_error calls; tests wait on it with deadlines."""

    def __init__(self) -> None:
        self.commits: list[list] = []
        self.errors: list[tuple[Append, str]] = []
        self._cond = threading.Condition()

    def on_commit(self, batch) -> None:
        with self._cond:
            self.commits.append(batch)
            self._cond.notify_all()

    def on_error(self, append, reason) -> None:
        with self._cond:
            self.errors.append((append, reason))
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = DEADLINE) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, timeout), "condition not reached in time"

    @property
    def committed(self) -> list:
        return [c for batch in self.commits for c in batch]

    def seqs(self) -> dict[str, int | None]:
        return {c.item.event.id: c.seq for c in self.committed}


def accepted(eid: str, *targets: str, body: str | None = None) -> Accepted:
    payload = Payload(eid, "T", body if body is not None else f'{{"id":"{eid}","type":"T"')
    event = Event(eid, "T", 0.0, None, None, {}, payload)
    return Accepted(event, None, tuple(targets))


def result(seq: int, number: int, at: float, ok: bool = True, webhook: str = "a") -> AttemptResult:
    return AttemptResult(
        webhook, seq, number, ok, 200 if ok else 500, None if ok else "HTTP 500", None,
        0.012, "fine" if ok else "boom", at,
    )  # fmt: skip


def wait_until(predicate, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def rows(conn, sql: str, *params) -> list[tuple]:
    """A query written with ``?`` marks, on a reader of either backend."""
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(sql, params).fetchall()
    return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params)]


def _db(conn):
    """The statements of the backend ``conn`` is a reader of."""
    return store if isinstance(conn, sqlite3.Connection) else pgstore


def attempts(conn, webhook: str, limit: int, **kwargs) -> list[dict]:
    return _db(conn).attempts(conn, webhook, limit, **kwargs)


def saved_states(conn) -> dict[str, WebhookState]:
    return _db(conn).saved_states(conn)


def unfinished(conn) -> dict[str, tuple[int, int]]:
    return _db(conn).unfinished(conn)


def attempt_log_bytes(conn) -> int:
    return _db(conn).attempt_log_bytes(conn)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(request, tmp_path, clock, journal_backend):  # noqa: F811 (the fixture imported above)
    """Build opened journals on tmp_path/state/journal.db; stop them all afterwards.

    On PostgreSQL they all journal into one fresh database (unfenced: one daemon alone).
    """
    made: list[Journal] = []
    on_postgresql = journal_backend == "postgresql"
    backend = {"dsn": request.getfixturevalue("pg_dsn")} if on_postgresql else {}

    def build(
        start: bool = True, retention: float = 3600.0, on_commit=None, **kwargs
    ) -> tuple[Journal, Recorder]:
        rec = Recorder()
        j = Journal(
            str(tmp_path / "state" / "journal.db"), clock, retention, on_commit or rec.on_commit,
            rec.on_error, **backend, **kwargs,
        )  # fmt: skip
        j.open()
        made.append(j)
        if start:
            j.start()
        return j, rec

    yield build
    for j in made:
        j.stop()


def append(j: Journal, rec: Recorder, *items: Accepted) -> dict[str, int | None]:
    """Submit one Append and wait until it is committed; the seqs by event id."""
    n = len(rec.committed) + len(items)
    j.submit(Append(items))
    rec.wait(lambda: len(rec.committed) >= n)
    return rec.seqs()


def ask(j: Journal, make_msg) -> Loaded:
    replies: queue.Queue = queue.Queue()
    j.submit(make_msg(replies.put))
    return replies.get(timeout=DEADLINE)


def states(conn, webhook: str) -> dict[str, tuple]:
    return {
        eid: (state, attempts_, next_at)
        for eid, state, attempts_, next_at in rows(
            conn,
            "SELECT e.id, d.state, d.attempts, d.next_at FROM deliveries d"
            " JOIN events e USING (seq) WHERE d.webhook = ?",
            webhook,
        )
    }


# --------------------------------------------------------------------------- durability


def test_committed_deliveries_survive_an_abandoned_journal(tmp_path, clock, make):
    first, rec = make()
    seqs = append(first, rec, accepted("e1", "a", "b"), accepted("e2", "a"))
    assert seqs["e1"] < seqs["e2"]
    # A crash: the first journal is never stopped; a new one opens the same file.
    second, _ = make(start=False)
    restored = second.load(["a", "b"], limit=100)
    assert [d.seq for d in restored["a"].pending] == [seqs["e1"], seqs["e2"]]
    assert restored["a"].pending[0].payload == accepted("e1").event.payload
    assert restored["a"].queued == 2
    assert restored["b"] == Restored(
        WebhookState(), (Delivery(seqs["e1"], accepted("e1").event.payload),), 1, 0
    )


CHILD = """
import sys, threading
from router.clock import Clock
from router.journal import Journal
from router.messages import Accepted, Append, Event, Payload
done = threading.Event()
j = Journal(sys.argv[1], Clock(), 3600, lambda batch: done.set(), print)
j.open(); j.start()
p = Payload("k1", "T", '{"id":"k1"')
j.submit(Append((Accepted(Event("k1", "T", 0.0, None, None, {}, p), None, ("a",)),)))
done.wait(5)
print("committed", flush=True)
threading.Event().wait(60)
"""


@pytest.mark.sqlite_only
def test_acked_events_survive_kill_9_of_the_process(tmp_path, clock):
    """SQLite only: the file's own durability (PostgreSQL's is the server's: test_cluster)."""
    path = str(tmp_path / "journal.db")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout.readline().strip() == "committed"
    finally:
        child.kill()
        child.wait(DEADLINE)
    j = Journal(path, clock, 3600, lambda batch: None, lambda a, r: None)
    j.open()
    pending = j.load(["a"], limit=10)["a"].pending
    j.stop()
    assert [d.payload.id for d in pending] == ["k1"]


@pytest.mark.sqlite_only
def test_open_makes_an_owner_only_directory_and_file(tmp_path, make):
    """SQLite only: the file's mode and WAL (a database has neither)."""
    j, _ = make(start=False)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600
    assert rows(j.reader(), "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.sqlite_only
def test_open_refuses_a_file_that_is_not_a_journal(tmp_path, clock):
    """SQLite only: a file (test_pgstore refuses a database it does not know)."""
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database, just some junk " * 100)
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    with pytest.raises(RouterError, match=r"cannot open journal .*not a database"):
        j.open()


@pytest.mark.sqlite_only
def test_open_refuses_a_journal_from_a_newer_version(tmp_path, clock):
    """SQLite only: the file's user_version (test_pgstore has the database's version)."""
    path = tmp_path / "journal.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    with pytest.raises(RouterError, match="newer"):
        j.open()


def test_submit_after_stop_is_ignored_with_a_warning(make, caplog):
    j, rec = make()
    j.stop()
    j.submit(Append((accepted("late", "a"),)))
    assert "journal is stopped; ignored Append" in caplog.text
    assert rec.commits == []


def test_stop_writes_everything_already_submitted(make):
    j, rec = make()
    for i in range(50):
        j.submit(Append((accepted(f"e{i}", "a"),)))
    j.stop()
    assert len(rec.committed) == 50


def in_the_file_alone(db: Path, copy: Path) -> set[str]:
    """The event ids the database file holds by itself, its WAL left out (a copy of it)."""
    copy.write_bytes(db.read_bytes())
    try:
        with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as conn:
            return {eid for (eid,) in conn.execute("SELECT id FROM events")}
    except sqlite3.DatabaseError:  # copied halfway through a checkpoint: read it again
        return set()
    finally:
        copy.unlink()


@pytest.mark.sqlite_only
def test_commits_reach_the_database_file_by_a_checkpoint_beside_the_writer(make, tmp_path):
    """SQLite only: WAL checkpoints (the server checkpoints on its own)."""
    j, rec = make()
    for i in range(3):  # a few pages: SQLite's own checkpoint in COMMIT waits for 1,000
        append(j, rec, accepted(f"e{i}", "a"))
    db = tmp_path / "state" / "journal.db"
    wait_until(lambda: in_the_file_alone(db, tmp_path / "copy.db") == {"e0", "e1", "e2"})
    assert rows(j._writer.conn, "PRAGMA wal_autocheckpoint") == [(journal.WAL_BACKSTOP_PAGES,)]


@pytest.mark.sqlite_only
def test_stop_closes_the_checkpointer_first_so_no_wal_is_left(make, tmp_path):
    """SQLite only: the WAL file and the checkpointer thread."""
    j, rec = make()
    append(j, rec, accepted("e1", "a"))
    j.stop()
    assert not (tmp_path / "state" / "journal.db-wal").exists()
    assert not j.alive() and not j._checkpointer._thread.is_alive()


# --------------------------------------------------------------------------- appends


def test_duplicate_ids_across_batches_get_no_seq_and_no_deliveries(make):
    j, rec = make()
    first = append(j, rec, accepted("e1", "a"))["e1"]
    append(j, rec, accepted("e1", "a", "b"))
    assert [c.seq for c in rec.committed] == [first, None]
    assert rows(j.reader(), "SELECT seq, webhook FROM deliveries") == [(first, "a")]


def test_duplicate_ids_within_one_batch_get_no_seq(make):
    j, rec = make()
    append(j, rec, accepted("e1", "a"), accepted("e1", "a"), accepted("e2", "a"))
    seqs = [c.seq for c in rec.committed]
    assert seqs[0] is not None and seqs[1] is None and seqs[2] is not None
    assert rows(j.reader(), "SELECT count(*) FROM deliveries") == [(2,)]


def test_many_appends_commit_in_far_fewer_transactions(make):
    j, rec = make()
    for i in range(1000):
        j.submit(Append((accepted(f"e{i}", "a"),)))
    rec.wait(lambda: len(rec.committed) == 1000)
    assert len(rec.commits) < 250
    assert [c.item.event.id for c in rec.committed] == [f"e{i}" for i in range(1000)]
    assert [c.seq for c in rec.committed] == sorted(c.seq for c in rec.committed)


def test_an_event_without_targets_is_journaled_for_dedup_only(make):
    j, rec = make()
    append(j, rec, accepted("lonely"))
    append(j, rec, accepted("lonely", "a"))
    assert rec.committed[1].seq is None
    assert rows(j.reader(), "SELECT count(*) FROM deliveries") == [(0,)]


# --------------------------------------------------------------------------- outcomes


def test_outcomes_update_the_delivery_and_the_attempt_log(make, clock):
    j, rec = make()
    seq = append(j, rec, accepted("e1", "a"))["e1"]
    j.submit(Outcome("a", seq, result(seq, 1, clock.now, ok=False), "pending", clock.now + 10))
    j.submit(Outcome("a", seq, result(seq, 2, clock.now + 10), "done"))
    conn = j.reader()
    wait_until(lambda: states(conn, "a")["e1"][0] == "done")
    assert states(conn, "a")["e1"] == ("done", 2, None)
    log_ = attempts(conn, "a", limit=10)
    assert [(a["id"], a["attempt"], a["status"], a["error"]) for a in log_] == [
        ("e1", 2, 200, None),
        ("e1", 1, 500, "HTTP 500"),
    ]
    assert log_[1]["at"] == "2027-01-15T08:00:00.000Z"
    assert log_[1]["latency_ms"] == pytest.approx(12.0)
    assert log_[1]["response"] == "boom"
    assert attempts(conn, "a", limit=1) == log_[:1]


def test_a_repeated_outcome_for_a_done_delivery_is_harmless(make, clock):
    j, rec = make()
    seq = append(j, rec, accepted("e1", "a"))["e1"]
    done = Outcome("a", seq, result(seq, 1, clock.now), "done")
    stale = Outcome("a", seq, result(seq, 1, clock.now - 5, ok=False), "pending", clock.now)
    for msg in (done, done, stale):
        j.submit(msg)
    conn = j.reader()
    wait_until(lambda: len(attempts(conn, "a", 10)) == 2)
    assert states(conn, "a")["e1"] == ("done", 1, None)


def in_one_transaction(make, *messages) -> Journal:
    """A journal that finds ``messages`` all waiting when it starts: one transaction."""
    j, _ = make(start=False)
    for msg in messages:
        j.submit(msg)
    j.start()
    return j


def test_outcomes_of_one_delivery_in_one_transaction_leave_its_attempts_in_trim_order(make, clock):
    first, rec = make()
    seqs = append(first, rec, accepted("e1", "a"), accepted("e2", "a"), accepted("e3", "a"))
    first.stop()
    s1, s2, s3 = seqs["e1"], seqs["e2"], seqs["e3"]
    j = in_one_transaction(
        make,
        Outcome("a", s1, result(s1, 1, clock.now, ok=False), "pending", clock.now + 1),
        Outcome("a", s2, result(s2, 1, clock.now, ok=False), "pending", clock.now + 1),
        Outcome("a", s1, result(s1, 2, clock.now + 1), "done"),
        Outcome("a", s2, result(s2, 2, clock.now + 1, ok=False), "exhausted"),
        Outcome("a", s3, result(s3, 1, clock.now), "done"),
        SaveState("a", WebhookState(delivered=2)),
    )
    j.stop()
    conn = j.reader()
    # 1: finished; 3: the newest attempt of an unfinished delivery; 2: its older ones.
    assert rows(conn, "SELECT seq, number, trim_order FROM attempts ORDER BY seq, number") == [
        (s1, 1, 1), (s1, 2, 1), (s2, 1, 2), (s2, 2, 3), (s3, 1, 1),
    ]  # fmt: skip
    assert states(conn, "a") == {"e1": ("done", 2, None), "e2": ("exhausted", 2, None),
                                 "e3": ("done", 1, None)}  # fmt: skip
    assert saved_states(conn)["a"].delivered == 2
    accounted(conn)  # the running count matches the rows


def test_a_read_in_a_transaction_sees_the_writes_before_it_and_not_those_after(make, clock):
    first, rec = make()
    seqs = append(first, rec, *(accepted(f"e{i}", "a") for i in range(1, 4)))
    first.stop()
    replies: queue.Queue = queue.Queue()
    s1, s2 = seqs["e1"], seqs["e2"]
    j = in_one_transaction(
        make,
        Outcome("a", s1, result(s1, 1, clock.now), "done"),
        SaveState("a", WebhookState(delivered=1)),
        Rebuild("a", 10, lambda restored, newest: replies.put(restored)),
        LoadPending("a", 0, 10, replies.put),
        Outcome("a", s2, result(s2, 1, clock.now), "done"),
        Cancel("a"),
        LoadPending("a", 0, 10, replies.put),
    )
    rebuilt, before, after = (replies.get(timeout=DEADLINE) for _ in range(3))
    assert rebuilt.state.delivered == 1 and rebuilt.queued == 2
    assert [d.payload.id for d in before.deliveries] == ["e2", "e3"]
    assert after.deliveries == ()
    conn = j.reader()
    wait_until(lambda: states(conn, "a")["e3"][0] == "cancelled")
    assert states(conn, "a")["e2"][0] == "done"


def test_revive_makes_exhausted_deliveries_pending_with_attempts_reset(make, clock):
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a") for i in range(1, 5)))
    for eid, state in (("e1", "exhausted"), ("e2", "pending"), ("e3", "exhausted")):
        s = seqs[eid]
        j.submit(Outcome("a", s, result(s, 5, clock.now, ok=False), state, clock.now + 60))
    loaded = ask(j, lambda reply: Revive("a", reply))
    assert loaded == Loaded("a", (), 0, None, revived=2)  # the bodies stay in the file
    conn = j.reader()
    assert states(conn, "a")["e1"] == ("pending", 0, None)
    assert states(conn, "a")["e3"] == ("pending", 0, None)
    assert states(conn, "a")["e2"] == ("pending", 5, clock.now + 60)
    assert ask(j, lambda reply: Revive("a", reply)).revived == 0


def test_revive_with_include_done_replays_done_deliveries_since(make, clock):
    j, rec = make()
    t0 = clock.now
    seqs = append(j, rec, accepted("old", "a"))
    clock.advance(50)
    seqs = append(j, rec, accepted("new", "a"), accepted("failed", "a"), accepted("other", "b"))
    for eid, state in (("old", "done"), ("new", "done"), ("failed", "exhausted")):
        j.submit(Outcome("a", seqs[eid], result(seqs[eid], 1, clock.now), state))
    j.submit(Outcome("b", seqs["other"], result(seqs["other"], 1, clock.now, webhook="b"), "done"))
    replay = ask(j, lambda reply: Revive("a", reply, since=t0 + 10, include_done=True))
    assert replay.revived == 2
    assert {e: st[0] for e, st in states(j.reader(), "a").items()} == {
        "old": "done", "new": "pending", "failed": "pending"}  # fmt: skip
    everything = ask(j, lambda reply: Revive("a", reply, include_done=True))
    assert everything.revived == 1
    assert states(j.reader(), "a")["old"][0] == "pending"
    assert states(j.reader(), "b")["other"][0] == "done"


def test_revive_until_a_time_or_of_one_event_picks_only_those(make, clock):
    j, rec = make()
    t0 = clock.now
    seqs = append(j, rec, accepted("early", "a"))
    clock.advance(50)
    seqs |= append(j, rec, accepted("late", "a"), accepted("other", "a"))
    for eid in ("early", "late", "other"):
        j.submit(Outcome("a", seqs[eid], result(seqs[eid], 1, clock.now), "done"))
    until = ask(j, lambda reply: Revive("a", reply, include_done=True, until=t0 + 10))
    assert until.revived == 1
    one = ask(j, lambda reply: Revive("a", reply, include_done=True, event="late"))
    assert one.revived == 1
    assert {e: st[0] for e, st in states(j.reader(), "a").items()} == {
        "early": "pending", "late": "pending", "other": "done"}  # fmt: skip
    both = Revive("a", lambda r: None, include_done=True, since=t0 + 10, event="early")
    assert ask(j, lambda reply: replace(both, reply=reply)).revived == 0  # early is before since


def test_cancel_cancels_pending_and_exhausted_deliveries_of_one_webhook(make, clock, caplog):
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a", "b") for i in range(1, 4)))
    j.submit(Outcome("a", seqs["e2"], result(seqs["e2"], 5, clock.now, ok=False), "exhausted"))
    j.submit(Outcome("a", seqs["e3"], result(seqs["e3"], 1, clock.now), "done"))
    with caplog.at_level(logging.WARNING, logger="router.journal"):
        j.submit(Cancel("a"))
        wait_until(lambda: "cancelled" in caplog.text)
    conn = j.reader()
    assert {k: v[0] for k, v in states(conn, "a").items()} == {
        "e1": "cancelled",
        "e2": "cancelled",
        "e3": "done",
    }
    assert {v[0] for v in states(conn, "b").values()} == {"pending"}
    assert "webhook 'a' cancelled: 2 unfinished deliveries cancelled" in caplog.text
    # A reload on a shared journal waits for the commit (router.dispatch): told the count.
    told: list = []
    j.submit(Cancel("b", lambda n: told.append((n, set(s[0] for s in states(conn, "b").values())))))
    wait_until(lambda: told)
    assert told == [(3, {"cancelled"})]  # called after the commit


def test_load_pending_pages_by_after_seq_and_limit(make, clock):
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a") for i in range(1, 7)))
    j.submit(Outcome("a", seqs["e2"], result(seqs["e2"], 1, clock.now), "done"))
    pages, after = [], 0
    while True:
        loaded = ask(j, lambda reply, after=after: LoadPending("a", after, 2, reply))
        assert (loaded.webhook, loaded.after_seq, loaded.limit) == ("a", after, 2)
        if not loaded.deliveries:
            break
        pages.append([d.payload.id for d in loaded.deliveries])
        after = loaded.deliveries[-1].seq
    assert pages == [["e1", "e3"], ["e4", "e5"], ["e6"]]


def test_load_pending_sees_appends_submitted_before_it(make):
    j, _ = make(start=False)
    replies: queue.Queue = queue.Queue()
    j.submit(Append((accepted("e1", "a"),)))
    j.submit(LoadPending("a", 0, 10, replies.put))
    j.start()
    assert [d.payload.id for d in replies.get(timeout=DEADLINE).deliveries] == ["e1"]


# --------------------------------------------------------------------------- load and state


def test_load_cancels_deliveries_of_webhooks_no_longer_configured(make, caplog):
    j, rec = make()
    append(j, rec, accepted("e1", "a", "gone"), accepted("e2", "gone"))
    j.stop()
    second, _ = make(start=False)
    with caplog.at_level(logging.WARNING, logger="router.journal"):
        restored = second.load(["a", "new"], limit=10)
    assert set(restored) == {"a", "new"}
    assert restored["new"] == Restored(WebhookState(), (), 0, 0)
    assert unfinished(second.reader()) == {"a": (1, 0)}
    gone_logs = [r for r in caplog.records if "gone" in r.getMessage()]
    assert len(gone_logs) == 1 and "2 deliveries" in gone_logs[0].getMessage()


def test_load_returns_only_the_first_limit_pending_with_the_full_counts(make, clock):
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a") for i in range(1, 6)))
    j.submit(Outcome("a", seqs["e1"], result(seqs["e1"], 5, clock.now, ok=False), "exhausted"))
    j.submit(Outcome("a", seqs["e2"], result(seqs["e2"], 2, clock.now, ok=False), "pending", 99.0))
    j.stop()
    second, _ = make(start=False)
    restored = second.load(["a"], limit=2)["a"]
    assert (restored.queued, restored.exhausted) == (4, 1)
    assert [(d.payload.id, d.attempts, d.next_at) for d in restored.pending] == [
        ("e2", 2, 99.0),
        ("e3", 0, None),
    ]


def test_save_state_keeps_the_newest_and_survives_a_restart(make):
    j, _ = make(start=False)
    older = WebhookState(state="failing", consecutive_failures=1, last_error="HTTP 500")
    newer = WebhookState("disabled", "exhausted", 5, 10, 1, 1_800_000_000.5, "timeout")
    j.submit(SaveState("a", older))
    j.submit(SaveState("a", newer))
    j.submit(SaveState("b", older))
    j.stop()
    second, _ = make(start=False)
    restored = second.load(["a", "b", "c"], limit=10)
    assert restored["a"].state == newer
    assert restored["b"].state == older
    assert restored["c"].state == WebhookState()


# --------------------------------------------------------------------------- purge


def test_purge_removes_only_finished_events_older_than_retention(make, clock):
    j, rec = make(retention=100.0)
    seqs = append(
        j, rec, accepted("done", "a"), accepted("pending", "a"), accepted("nobody"),
        accepted("exhausted", "a"), accepted("cancelled", "c"),
    )  # fmt: skip
    j.submit(Outcome("a", seqs["done"], result(seqs["done"], 1, clock.now), "done"))
    old_try = result(seqs["pending"], 1, clock.now, ok=False)
    j.submit(Outcome("a", seqs["pending"], old_try, "pending", clock.now + 10))
    recent_try = result(seqs["exhausted"], 5, clock.now + 150, ok=False)  # within retention later
    j.submit(Outcome("a", seqs["exhausted"], recent_try, "exhausted"))
    j.submit(Cancel("c"))
    conn = j.reader()
    wait_until(lambda: len(attempts(conn, "a", 10)) == 3)
    clock.advance(200)
    append(j, rec, accepted("recent", "a"))  # wakes the writer, which then sees the purge due
    wait_until(lambda: rows(conn, "SELECT count(*) FROM events") == [(3,)])
    kept = {eid for (eid,) in rows(conn, "SELECT id FROM events")}
    assert kept == {"pending", "exhausted", "recent"}
    assert [a["id"] for a in attempts(conn, "a", 10)] == ["exhausted"]
    assert rows(conn, "SELECT count(*) FROM deliveries WHERE webhook = 'c'") == [(0,)]
    # The dedup window ends with the event row: the id is new again.
    assert append(j, rec, accepted("done", "a"))["done"] is not None


# ----------------------------------------------------------------------- the attempt log on disk


def answer(seq: int, number: int, at: float, ok: bool, body: str) -> AttemptResult:
    return AttemptResult(
        "a", seq, number, ok, 200 if ok else 500, None if ok else "HTTP 500", None, 0.01, body, at
    )


def tried(j: Journal, seq: int, *bodies: str, then: str, at: float) -> None:
    """A failed attempt per body, the last leaving state ``then``; for "done", a 2xx after them."""
    for number, body in enumerate(bodies, 1):
        last = number == len(bodies) and then != "done"
        state = then if last else "pending"
        j.submit(Outcome("a", seq, answer(seq, number, at + number, False, body), state, at + 99))
    if then == "done":
        number = len(bodies) + 1
        j.submit(Outcome("a", seq, answer(seq, number, at + number, True, "ok"), "done"))


def kept(conn) -> list[tuple[str, int]]:
    """(event id, attempt number) of every attempt row, oldest row first."""
    return rows(conn, "SELECT event_id, number FROM attempts ORDER BY id")


def accounted(conn) -> int:
    """The running count, checked against the rows themselves."""
    size = attempt_log_bytes(conn)
    assert size == rows(conn, "SELECT coalesce(sum(size), 0) FROM attempts")[0][0]
    text = "length(CAST(response AS BLOB))" if _db(conn) is store else "octet_length(response)"
    texts = f"SELECT coalesce(sum({text}), 0) FROM attempts"
    assert size >= rows(conn, texts)[0][0]
    return size


def test_a_success_keeps_a_prefix_of_its_response_and_a_failure_all_of_it(make, clock):
    j, rec = make()
    seq = append(j, rec, accepted("e1", "a"))["e1"]
    failure = "f" * 65536
    j.submit(Outcome("a", seq, answer(seq, 1, clock.now, False, failure), "pending", clock.now))
    success = "x" + "é" * 600  # 1201 bytes: the cut at 1024 falls inside a character
    j.submit(Outcome("a", seq, answer(seq, 2, clock.now + 1, True, success), "done"))
    conn = j.reader()
    wait_until(lambda: len(attempts(conn, "a", 10)) == 2)
    second, first = attempts(conn, "a", 10)
    assert second["response"] == "x" + "é" * 511
    assert len(second["response"].encode()) <= SUCCESS_RESPONSE_CAP
    assert first["response"] == failure


def test_over_its_ceiling_the_attempt_log_loses_the_oldest_attempts_of_finished_deliveries(
    make, clock, caplog
):
    caplog.set_level(logging.INFO, logger="router.journal")  # before the writer can log it
    j, rec = make(attempt_log_max=300_000)
    seqs = append(j, rec, accepted("held", "a"), *(accepted(f"e{i}", "a") for i in range(12)))
    tried(j, seqs["held"], "h" * 50_000, "h" * 50_000, then="exhausted", at=clock.now)
    for i in range(12):  # each done after a failure: every row younger than the held ones
        tried(j, seqs[f"e{i}"], "f" * 50_000, then="done", at=clock.now + 10 + i)
    conn = j.reader()
    wait_until(lambda: states(conn, "a")["e11"][0] == "done")
    assert accounted(conn) <= 300_000
    log_ = kept(conn)
    assert log_[:2] == [("held", 1), ("held", 2)]  # unfinished: kept though oldest
    every_done = [(f"e{i}", n) for i in range(12) for n in (1, 2)]
    assert 0 < len(log_[2:]) < len(every_done)
    assert log_[2:] == every_done[-len(log_[2:]) :]  # the newest survived, the oldest went
    assert "attempt log at its ceiling of 300000 bytes" in caplog.text


def test_past_finished_ones_the_newest_attempt_of_each_unfinished_delivery_stays_cut_short(
    make, clock, caplog
):
    j, rec = make(attempt_log_max=60_000)
    seqs = append(j, rec, accepted("held", "a"), accepted("done", "a"), accepted("retry", "a"))
    tried(j, seqs["held"], "1" * 50_000, "2" * 50_000, "3" * 50_000, then="exhausted", at=0)
    tried(j, seqs["done"], "d" * 50_000, then="done", at=clock.now)
    tried(j, seqs["retry"], "r" * 50_000, then="pending", at=clock.now)
    conn = j.reader()
    wait_until(lambda: states(conn, "a")["retry"][1] == 1)
    assert kept(conn) == [("held", 3), ("retry", 1)]  # each still says why it failed
    assert accounted(conn) <= 60_000
    responses = [a["response"] for a in attempts(conn, "a", 10)]
    assert responses == ["r" * 50_000, "3" * SUCCESS_RESPONSE_CAP]  # the older one cut first

    with caplog.at_level(logging.WARNING, logger="router.journal"):
        j.attempt_log_max = 1_500  # less than their prefixes: nothing more can go
        j.submit(SaveState("a", WebhookState()))
        wait_until(lambda: "over its ceiling" in caplog.text)
    assert kept(conn) == [("held", 3), ("retry", 1)]
    assert [a["response"] for a in attempts(conn, "a", 10)] == [
        "r" * SUCCESS_RESPONSE_CAP,
        "3" * SUCCESS_RESPONSE_CAP,
    ]
    (over,) = [r.getMessage() for r in caplog.records if "over its ceiling" in r.getMessage()]
    assert "only a prefix of the newest attempt of each unfinished delivery is left" in over


def test_the_attempts_of_a_cancelled_delivery_go_before_older_ones_of_a_held_delivery(make, clock):
    j, rec = make()
    seqs = append(j, rec, accepted("held", "a"), accepted("gone", "b"))
    tried(j, seqs["held"], "1" * 50_000, "2" * 50_000, then="exhausted", at=clock.now)
    j.submit(Outcome("b", seqs["gone"], replace(answer(seqs["gone"], 1, clock.now + 5, False,
                     "g" * 50_000), webhook="b"), "pending", clock.now + 99))  # fmt: skip
    j.submit(Cancel("b"))
    conn = j.reader()
    wait_until(lambda: len(kept(conn)) == 3 and states(conn, "b")["gone"][0] == "cancelled")
    j.attempt_log_max = accounted(conn) - 1  # one row must go: the cancelled one, the newest
    j.submit(SaveState("a", WebhookState()))
    wait_until(lambda: len(kept(conn)) == 2)
    assert kept(conn) == [("held", 1), ("held", 2)]


def test_a_log_far_over_its_ceiling_is_purged_chunk_by_chunk_without_waiting(
    make, clock, monkeypatch
):
    monkeypatch.setattr(journal, "TRIM_CHUNK", 2)  # rows per write transaction
    monkeypatch.setattr(journal, "PURGE_CHUNK", 2)  # rows per purge transaction
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a") for i in range(10)))
    for i in range(10):
        tried(j, seqs[f"e{i}"], "f" * 10_000, then="done", at=clock.now)
    conn = j.reader()
    wait_until(lambda: len(kept(conn)) == 20)
    j.attempt_log_max = 30_000  # as a reload sets it
    j.submit(SaveState("a", WebhookState()))  # one transaction: 2 rows, then purges at once
    wait_until(lambda: attempt_log_bytes(conn) <= 30_000)  # the fake clock never advances
    assert kept(conn)[-1] == ("e9", 2)


@pytest.mark.sqlite_only
def test_a_version_1_journal_is_upgraded_on_open_and_keeps_everything(tmp_path, clock):
    """SQLite only: the file's schema versions (test_pgstore has the database's)."""
    path = tmp_path / "journal.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(store._UPGRADES[1])  # the schema version 1 made
    old.execute("INSERT INTO events VALUES (1, 'e1', 'T', 5.0, '{\"id\":\"e1\"')")
    old.execute("INSERT INTO deliveries VALUES (1, 'a', 'pending', 1, 9.0)")
    old.execute(
        "INSERT INTO attempts (webhook, seq, event_id, number, at, status, error, latency_ms,"
        " response) VALUES ('a', 1, 'e1', 1, 6.0, 500, 'HTTP 500', 3.0, 'boom')"
    )
    old.execute("INSERT INTO events VALUES (2, 'e2', 'T', 5.0, '{\"id\":\"e2\"')")
    old.execute("INSERT INTO deliveries VALUES (2, 'a', 'done', 1, NULL)")
    old.execute(
        "INSERT INTO attempts (webhook, seq, event_id, number, at, status, error, latency_ms,"
        " response) VALUES ('a', 2, 'e2', 1, 8.0, 200, NULL, 3.0, 'fine')"
    )
    old.close()
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    j.open()
    restored = j.load(["a"], limit=10)["a"]
    assert [(d.seq, d.attempts, d.next_at) for d in restored.pending] == [(1, 1, 9.0)]
    j.start()
    try:
        conn = j.reader()
        assert rows(conn, "PRAGMA user_version") == [(store.SCHEMA_VERSION,)]
        assert [(a["status"], a["error"], a["response"]) for a in attempts(conn, "a", 10)] == [
            (200, None, "fine"),
            (500, "HTTP 500", "boom"),
        ]
        failed = store.ROW_COST + len("HTTP 500") + len("boom") + len("e1")
        assert accounted(conn) == failed + store.ROW_COST + len("fine") + len("e2")
        j.attempt_log_max = 2 * failed + 1  # room for e1's two attempts ("again" is 1 longer)
        j.submit(Outcome("a", 1, answer(1, 2, 7.0, False, "again"), "pending", 20.0))
        wait_until(lambda: states(conn, "a")["e1"][1] == 2)
        assert kept(conn) == [("e1", 1), ("e1", 2)]  # the done one went, though the newer row
        assert accounted(conn) == 2 * failed + 1
    finally:
        j.stop()


# --------------------------------------------------------------------------- failures


@pytest.mark.sqlite_only
def test_disk_full_fails_every_append_in_the_batch_and_the_writer_survives(make, clock):
    """SQLite only: a full disk through the file's page cap (``max_pages``)."""
    j, rec = make(start=False, max_pages=1)  # capped at the size the new file has
    errors_before = metrics.REGISTRY.get_sample_value("journal_errors_total")
    j.submit(Append((accepted("small", "a"),)))
    j.submit(Append((accepted("big", "a", body="x" * 100_000),)))
    j.start()
    rec.wait(lambda: len(rec.errors) == 2)
    assert [a.items[0].event.id for a, _ in rec.errors] == ["small", "big"]
    assert all("full" in reason for _, reason in rec.errors)
    assert rec.commits == []
    conn = j.reader()
    assert rows(conn, "SELECT count(*) FROM events") == [(0,)]
    assert rows(conn, "SELECT count(*) FROM deliveries") == [(0,)]
    assert metrics.REGISTRY.get_sample_value("journal_errors_total") == errors_before + 1
    j.set_max_pages(None)
    seqs = append(j, rec, accepted("after", "a", body="y" * 100_000))
    assert seqs["after"] is not None
    assert unfinished(conn) == {"a": (1, 0)}


@pytest.mark.sqlite_only
def test_an_outcome_in_a_failed_transaction_is_retried_until_it_is_written(make, clock):
    """SQLite only: the failed transaction comes from the file's page cap (``set_max_pages``)."""
    j, rec = make()
    seq = append(j, rec, accepted("e1", "a"))["e1"]
    j.set_max_pages(1)
    big = AttemptResult("a", seq, 1, True, 200, None, None, 0.01, "z" * 100_000, clock.now)
    j.submit(Outcome("a", seq, big, "done"))
    j.submit(Append((accepted("refused", "a", body="x" * 100_000),)))
    rec.wait(lambda: len(rec.errors) == 1)
    conn = j.reader()
    assert states(conn, "a")["e1"][0] == "pending"
    j.set_max_pages(None)
    clock.advance(10)  # past the retry backoff
    j.submit(SaveState("a", WebhookState()))  # wakes the writer
    wait_until(lambda: states(conn, "a")["e1"][0] == "done")
    assert attempts(conn, "a", 10)[0]["response"] == "z" * SUCCESS_RESPONSE_CAP


def test_a_raising_callback_does_not_kill_the_writer(make):
    calls = []

    def on_commit(batch):
        calls.append(batch)
        raise RuntimeError("subscriber bug")

    j, _ = make(on_commit=on_commit)
    j.submit(Append((accepted("e1", "a"),)))
    wait_until(lambda: len(calls) == 1)

    def bad_reply(loaded):
        raise RuntimeError("reply bug")

    j.submit(LoadPending("a", 0, 10, bad_reply))
    j.submit(Append((accepted("e2", "a"),)))
    wait_until(lambda: len(calls) == 2)
    assert calls[1][0].seq is not None


def test_a_malformed_message_spoils_only_itself(make, clock, caplog):
    j, rec = make(start=False)
    bad = Append((accepted("bad", "a"), Accepted(None, None, ("a",))))  # type: ignore[arg-type]
    j.submit(Append((accepted("good", "a"),)))
    j.submit(bad)
    j.submit(Outcome("a", 1, result(1, 1, clock.now), "bogus-state"))
    j.start()
    rec.wait(lambda: rec.commits and rec.errors)
    assert [c.item.event.id for c in rec.committed] == ["good"]
    assert rec.errors[0][0] is bad
    assert {eid for (eid,) in rows(j.reader(), "SELECT id FROM events")} == {"good"}
    assert "bogus-state" in caplog.text


def failed_outcomes(tmp_path, clock, make, count: int) -> Journal:
    """``count`` failed Outcomes (64 KiB responses each) and a SaveState in ONE failed transaction.

    The events are journaled first; then a second journal on the same file, capped at
    its size, gets every message before its thread starts, so they meet one full disk.
    """
    first, rec = make()
    seqs = append(first, rec, *(accepted(f"e{i}", "a") for i in range(count)))
    first.stop()
    j, _ = make(start=False, max_pages=1)
    for i in range(count):
        s = seqs[f"e{i}"]
        body = chr(ord("a") + i) * 65536
        j.submit(Outcome("a", s, answer(s, 1, clock.now + i, False, body), "pending", 99.0))
    j.submit(SaveState("a", WebhookState("failing", None, count)))
    errors = metrics.REGISTRY.get_sample_value("journal_errors_total")
    j.start()
    wait_until(lambda: metrics.REGISTRY.get_sample_value("journal_errors_total") == errors + 1)
    j.set_max_pages(None)
    clock.advance(10)  # past the retry backoff
    j.submit(SaveState("b", WebhookState()))  # wakes the writer
    conn = j.reader()
    wait_until(lambda: rows(conn, "SELECT count(*) FROM webhooks") == [(2,)])
    return j


@pytest.mark.sqlite_only
def test_past_its_byte_bound_the_backlog_first_drops_the_oldest_responses(
    tmp_path, clock, make, monkeypatch, caplog
):
    """SQLite only: the failed transaction comes from the file's page cap (``max_pages``)."""
    bound = 4 * 70_000
    monkeypatch.setattr(journal, "MAX_BACKLOG_BYTES", bound)
    j = failed_outcomes(tmp_path, clock, make, 8)
    conn = j.reader()
    assert {eid: s[:2] for eid, s in states(conn, "a").items()} == {
        f"e{i}": ("pending", 1) for i in range(8)
    }  # every state change was kept
    responses = [a["response"] for a in reversed(attempts(conn, "a", 10))]
    stripped = responses.index(next(r for r in responses if r))
    assert 0 < stripped < 8
    assert responses[:stripped] == [""] * stripped  # the oldest lost their text
    assert responses[stripped:] == [chr(ord("a") + i) * 65536 for i in range(stripped, 8)]
    assert sum(map(len, responses)) <= bound
    assert f"dropped the response text of the {stripped} oldest outcomes" in caplog.text
    assert saved_states(conn)["a"] == WebhookState("failing", None, 8)


@pytest.mark.sqlite_only
def test_past_its_byte_bound_even_without_responses_the_oldest_outcomes_go(
    tmp_path, clock, make, monkeypatch, caplog
):
    """SQLite only: the failed transaction comes from the file's page cap (``max_pages``)."""
    monkeypatch.setattr(journal, "MAX_BACKLOG_BYTES", 2_000)  # a few bare messages
    j = failed_outcomes(tmp_path, clock, make, 8)
    conn = j.reader()
    written = [eid for eid, (state, n, _) in sorted(states(conn, "a").items()) if n == 1]
    assert 0 < len(written) < 8
    assert written == [f"e{i}" for i in range(8 - len(written), 8)]  # the newest were kept
    assert {s[:2] for eid, s in states(conn, "a").items() if eid not in written} == {
        ("pending", 0)
    }  # the others stay pending: they are sent again
    assert {a["response"] for a in attempts(conn, "a", 10)} == {""}
    assert f"dropped the {8 - len(written)} oldest outcomes" in caplog.text
    assert saved_states(conn)["a"] == WebhookState("failing", None, 8)  # states are kept


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("sync", "level"), [("full", 2), ("normal", 1)])
def test_the_writer_commits_with_the_sync_mode_asked_for(tmp_path, sync, level):
    """SQLite only: ``journal.sync`` is the file's PRAGMA synchronous."""
    conn = store.open_writer(str(tmp_path / "j.db"), sync=sync)
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        conn.close()


@pytest.mark.sqlite_only
@pytest.mark.parametrize("sync", ["full", "normal"])
def test_a_commit_of_outcomes_alone_is_not_fsynced_one_with_events_is(make, sync):
    """SQLite only: ``journal.sync`` (test_pgstore has the server's synchronous_commit)."""
    j, _ = make(start=False, sync=sync)
    level = {"FULL": 2, "NORMAL": 1}

    def synchronous() -> int:
        return j._writer.conn.execute("PRAGMA synchronous").fetchone()[0]

    def begin(work: list) -> int:
        j._writer.begin(journal._durable(work))
        j._writer.rollback()
        return synchronous()

    outcome = Outcome("a", 1, result(1, 1, 0.0), "done")
    assert begin([outcome, SaveState("a", WebhookState())]) == level["NORMAL"]  # sent again
    acked = begin([Append((accepted("e1", "a"),)), outcome])  # an ack's commit
    assert acked == level["FULL" if sync == "full" else "NORMAL"]
    cancelled = begin([Cancel("a")])  # what an operator did is kept like an ack
    assert cancelled == level["FULL" if sync == "full" else "NORMAL"]
