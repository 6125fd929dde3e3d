"""The journal against real SQLite files in tmp_path, its writer thread running for real."""

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
from pathlib import Path

import pytest

from router import RouterError, metrics
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
    Revive,
    SaveState,
    WebhookState,
)
from router.store import attempts, unfinished

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


def rows(conn: sqlite3.Connection, sql: str, *params) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path, clock):
    """Build opened journals on tmp_path/state/journal.db; stop them all afterwards."""
    made: list[Journal] = []

    def build(start: bool = True, retention: float = 3600.0, **kwargs) -> tuple[Journal, Recorder]:
        rec = Recorder()
        j = Journal(
            str(tmp_path / "state" / "journal.db"), clock, retention, rec.on_commit,
            rec.on_error, **kwargs,
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


def test_acked_events_survive_kill_9_of_the_process(tmp_path, clock):
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


def test_open_makes_an_owner_only_directory_and_file(tmp_path, make):
    j, _ = make(start=False)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600
    assert rows(j.reader(), "PRAGMA journal_mode") == [("wal",)]


def test_open_refuses_a_file_that_is_not_a_journal(tmp_path, clock):
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database, just some junk " * 100)
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    with pytest.raises(RouterError, match=r"cannot open journal .*not a database"):
        j.open()


def test_open_refuses_a_journal_from_a_newer_version(tmp_path, clock):
    path = tmp_path / "journal.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 99").connection.close()
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    with pytest.raises(RouterError, match="newer"):
        j.open()


def test_submit_after_stop_is_ignored_with_a_warning(make, caplog):
    j, rec = make()
    j.stop()
    j.submit(Append((accepted("late", "a"),)))
    assert "stopped" in caplog.text
    assert rec.commits == []


def test_stop_writes_everything_already_submitted(make):
    j, rec = make()
    for i in range(50):
        j.submit(Append((accepted(f"e{i}", "a"),)))
    j.stop()
    assert len(rec.committed) == 50


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


def test_revive_returns_exhausted_deliveries_oldest_first_with_attempts_reset(make, clock):
    j, rec = make()
    seqs = append(j, rec, *(accepted(f"e{i}", "a") for i in range(1, 5)))
    for eid, state in (("e1", "exhausted"), ("e2", "pending"), ("e3", "exhausted")):
        s = seqs[eid]
        j.submit(Outcome("a", s, result(s, 5, clock.now, ok=False), state, clock.now + 60))
    loaded = ask(j, lambda reply: Revive("a", reply))
    assert loaded == Loaded(
        "a",
        (
            Delivery(seqs["e1"], accepted("e1").event.payload),
            Delivery(seqs["e3"], accepted("e3").event.payload),
        ),
        0,
        None,
    )
    conn = j.reader()
    assert states(conn, "a")["e1"] == ("pending", 0, None)
    assert states(conn, "a")["e2"] == ("pending", 5, clock.now + 60)
    assert ask(j, lambda reply: Revive("a", reply)).deliveries == ()


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
    assert [d.payload.id for d in replay.deliveries] == ["new", "failed"]
    everything = ask(j, lambda reply: Revive("a", reply, include_done=True))
    assert [d.payload.id for d in everything.deliveries] == ["old"]
    assert states(j.reader(), "b")["other"][0] == "done"


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
    assert "'a'" in caplog.text and " 2 " in caplog.text


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


# --------------------------------------------------------------------------- failures


def test_disk_full_fails_every_append_in_the_batch_and_the_writer_survives(make, clock):
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


def test_an_outcome_in_a_failed_transaction_is_retried_until_it_is_written(make, clock):
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
    assert attempts(conn, "a", 10)[0]["response"] == "z" * 100_000


def test_a_raising_callback_does_not_kill_the_writer(tmp_path, clock):
    calls = []

    def on_commit(batch):
        calls.append(batch)
        raise RuntimeError("subscriber bug")

    j = Journal(str(tmp_path / "j.db"), clock, 3600, on_commit, lambda a, r: None)
    j.open()
    j.start()
    try:
        j.submit(Append((accepted("e1", "a"),)))
        wait_until(lambda: len(calls) == 1)

        def bad_reply(loaded):
            raise RuntimeError("reply bug")

        j.submit(LoadPending("a", 0, 10, bad_reply))
        j.submit(Append((accepted("e2", "a"),)))
        wait_until(lambda: len(calls) == 2)
        assert calls[1][0].seq is not None
    finally:
        j.stop()


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
