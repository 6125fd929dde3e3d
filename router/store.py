"""The journal's SQLite file: its schema, its connections and every statement on its tables.

``router.journal`` owns the one writer connection and decides when statements
run (group commit, savepoints, retries, purge timing); this module says what
they are, so the tables and every query on them live in one place. The readers
at the bottom also serve other threads on a read-only connection from
``open_reader`` (control socket, status).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from typing import Any

from router import RouterError
from router.budget import delivery_cost
from router.clock import iso
from router.messages import (
    CANCELLED,
    DONE,
    EXHAUSTED,
    PENDING,
    AlertState,
    Append,
    AttemptResult,
    Committed,
    Delivery,
    Outcome,
    Payload,
    Revive,
    WebhookState,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

SUCCESS_RESPONSE_CAP = 1024  # bytes of a 2xx response body kept in the attempt log
ROW_COST = 100  # bytes an attempt row costs besides its texts (numbers, names, index entries)

# What one attempt row costs on disk, accounted in ``attempts.size``; written once, used by
# the insert (named parameters) and by the version-2 upgrade (columns).
_ROW_SIZE = (
    "{cost} + length(CAST(coalesce({response}, '') AS BLOB))"
    " + length(CAST(coalesce({error}, '') AS BLOB)) + length(CAST({event_id} AS BLOB))"
)

_ROW_COLUMNS = {"cost": ROW_COST, "response": "response", "error": "error", "event_id": "event_id"}

_SCHEMA_V1 = """
BEGIN;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    received_at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX events_received_at ON events (received_at);
CREATE TABLE deliveries (
    seq INTEGER NOT NULL, webhook TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL,
    PRIMARY KEY (seq, webhook)) WITHOUT ROWID;
CREATE INDEX deliveries_by_state ON deliveries (state, webhook, seq);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY, webhook TEXT NOT NULL, seq INTEGER NOT NULL,
    event_id TEXT NOT NULL, number INTEGER NOT NULL, at REAL NOT NULL, status INTEGER,
    error TEXT, latency_ms REAL, response TEXT,
    UNIQUE (seq, webhook, number, at));  -- also makes a repeated Outcome a no-op
CREATE INDEX attempts_by_webhook ON attempts (webhook, at);
CREATE INDEX attempts_at ON attempts (at);
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, disabled_reason TEXT,
    consecutive_failures INTEGER NOT NULL, delivered INTEGER NOT NULL,
    failed INTEGER NOT NULL, last_success REAL, last_error TEXT);
PRAGMA user_version = 1;
COMMIT;
"""

# Which attempt rows go first when the log is over its ceiling (``attempts.trim_order``):
# 1, those of finished deliveries (done, cancelled, purged); 2, the older attempts of an
# unfinished delivery; 3, the newest attempt of each unfinished delivery, which still says
# why a held delivery failed: those only lose all but a prefix of their response.
_OPEN = "IN ('pending', 'exhausted')"  # the states of a delivery that may still be attempted
_UNFINISHED = "EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = {seq} AND d.webhook = {webhook}"
_UNFINISHED += f" AND d.state {_OPEN})"
_TRIM_ORDER_OF = (
    f"CASE WHEN NOT {_UNFINISHED} THEN 1 WHEN id = (SELECT max(b.id) FROM attempts b"
    " WHERE b.seq = {seq} AND b.webhook = {webhook}) THEN 3 ELSE 2 END"
)

_NEW_ROW = {"seq": "new.seq", "webhook": "new.webhook"}

# Version 2: what the attempt log costs, kept by triggers in a one-row table so that the
# ceiling (``attempt_log_max``) is checked without a scan, and each row's trim order,
# indexed. ``cut_below``: every row under that id has at most a prefix of its response.
# A version-1 file is upgraded in place on open; a failed upgrade rolls back and leaves
# the file as it was.
_SCHEMA_V2 = f"""
BEGIN;
ALTER TABLE attempts ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN trim_order INTEGER NOT NULL DEFAULT 1;
UPDATE attempts SET size = {_ROW_SIZE.format(**_ROW_COLUMNS)},
    trim_order = {_TRIM_ORDER_OF.format(seq="attempts.seq", webhook="attempts.webhook")};
CREATE INDEX attempts_to_trim ON attempts (trim_order, id);
CREATE TABLE attempt_log (
    one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL, cut_below INTEGER NOT NULL);
INSERT INTO attempt_log SELECT 1, coalesce(sum(size), 0), 0 FROM attempts;
CREATE TRIGGER delivery_finished AFTER UPDATE OF state ON deliveries
    WHEN (old.state {_OPEN}) != (new.state {_OPEN})
    BEGIN UPDATE attempts SET trim_order = {_TRIM_ORDER_OF.format(**_NEW_ROW)}
        WHERE seq = new.seq AND webhook = new.webhook; END;
CREATE TRIGGER attempt_added AFTER INSERT ON attempts
    BEGIN
    UPDATE attempt_log SET bytes = bytes + new.size, cut_below = min(cut_below, new.id);
    UPDATE attempts SET trim_order = 2  -- "+": by the delivery's index, not the trim one
        WHERE seq = new.seq AND webhook = new.webhook AND +trim_order = 3 AND +id < new.id;
    END;
CREATE TRIGGER attempt_removed AFTER DELETE ON attempts
    BEGIN UPDATE attempt_log SET bytes = bytes - old.size; END;
CREATE TRIGGER attempt_resized AFTER UPDATE OF size ON attempts
    BEGIN UPDATE attempt_log SET bytes = bytes - old.size + new.size; END;
PRAGMA user_version = 2;
COMMIT;
"""

# Version 3: what the alerts need to survive a restart (SPEC §7): since when a webhook has
# been failing, and the newest alert raised for it, so that none is forgotten or repeated.
_SCHEMA_V3 = """
BEGIN;
ALTER TABLE webhooks ADD COLUMN failing_since REAL;
ALTER TABLE webhooks ADD COLUMN last_alert TEXT;
ALTER TABLE webhooks ADD COLUMN last_alert_at REAL;
PRAGMA user_version = 3;
COMMIT;
"""

_UPGRADES = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3}  # version -> the script that makes it

_PENDING_SQL = """
SELECT d.seq, e.id, e.type, e.body, d.attempts, d.next_at
FROM deliveries d JOIN events e ON e.seq = d.seq
WHERE d.state = 'pending' AND d.webhook = ? AND d.seq > ?
ORDER BY d.seq LIMIT ?
"""

_PENDING_BY_SEQ_SQL = """
SELECT d.seq, e.id, e.type, e.body, d.attempts, d.next_at
FROM deliveries d JOIN events e ON e.seq = d.seq
WHERE d.state = 'pending' AND d.webhook = ? AND d.seq IN ({marks})
ORDER BY d.seq
"""


# --------------------------------------------------------------------------- connections


def open_writer(
    path: str,
    max_pages: int | None = None,
    sync: str = "full",
    wal_pages: int = 1000,
    wal_bytes: int = -1,
) -> sqlite3.Connection:
    """Create the directory (0700), the file (0600) and the schema; return the writer.

    WAL with ``synchronous=FULL`` (``sync="full"``): a committed transaction survives
    kill -9 and power loss, at the price of an fsync per commit. ``"normal"`` skips
    that fsync: a commit still survives kill -9 (it is in the WAL, in the OS's cache)
    but the last ones can be lost if the machine loses power or the kernel crashes.
    ``isolation_level=None``: the caller issues BEGIN and COMMIT. A commit that leaves
    ``wal_pages`` or more in the WAL copies them into the file (a checkpoint) before
    it returns; when the WAL starts again, a file bigger than ``wal_bytes`` is cut back
    to that (-1: never).
    """
    if sync not in ("full", "normal"):
        raise ValueError(f"journal sync must be full or normal, not {sync!r}")
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as e:
        raise RouterError(f"cannot open journal {path}: {e}") from e
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("journal %s: WAL mode unavailable, using %s", path, mode)
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(wal_pages)}")
        conn.execute(f"PRAGMA journal_size_limit = {int(wal_bytes)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RouterError(
                f"journal {path} has schema version {version}, newer than this "
                f"router understands ({SCHEMA_VERSION}); upgrade the router"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            conn.executescript(_UPGRADES[step])
            if version:
                log.info("journal %s upgraded to schema version %d", path, step)
        if max_pages is not None:
            conn.execute(f"PRAGMA max_page_count = {int(max_pages)}")
    except sqlite3.Error as e:
        conn.close()
        raise RouterError(f"cannot open journal {path}: {e}") from e
    except RouterError:
        conn.close()
        raise
    return conn


class Writer:
    """The journal's one writer connection to the file, and how its transactions go.

    What ``router.journal`` needs of a backend: ``conn`` for the statements below,
    ``begin``/``commit``/``rollback``, a savepoint for one message, and which errors
    are the storage's own (``errors``, ``storage_error``). ``router.pgstore.Writer``
    is the same for PostgreSQL.
    """

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    checkpoints = True  # the journal copies the WAL into the file on a thread of its own

    def __init__(
        self,
        path: str,
        max_pages: int | None = None,
        sync: str = "full",
        wal_pages: int = 1000,
        wal_bytes: int = -1,
    ):
        self.path, self.sync = path, sync
        self.conn = open_writer(path, max_pages, sync, wal_pages, wal_bytes)
        self._fsyncing = sync == "full"  # the connection's synchronous level now

    def __str__(self) -> str:
        return self.path

    def begin(self, durable: bool = True) -> None:
        """Start a write transaction; one that is not ``durable`` commits without an fsync."""
        full = self.sync == "full" and durable
        if full != self._fsyncing:
            self.conn.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            self._fsyncing = full
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the transaction, if one is open; raises the storage's errors."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT msg")

    def release(self) -> None:
        self.conn.execute("RELEASE msg")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO msg")

    @staticmethod
    def storage_error(exc: BaseException) -> bool:
        """True for failures of the file itself (full, I/O, locked): they doom the transaction.

        Anything else (a bad value in one message) is that message's fault alone.
        """
        return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError

    def reader(self) -> sqlite3.Connection:
        """A new read-only connection, for a thread other than the writer's."""
        return open_reader(self.path)

    def set_max_pages(self, pages: int) -> None:
        """Test hook: cap the file's size, so that inserts fail as on a full disk."""
        self.conn.execute(f"PRAGMA max_page_count = {int(pages)}")

    def close(self) -> None:
        self.conn.close()


def open_checkpointer(path: str, sync: str) -> sqlite3.Connection:
    """A connection that only checkpoints, for a thread other than the writer's.

    It fsyncs what it copies as the writer would (``sync``): a checkpoint with
    ``synchronous=OFF`` could lose committed pages in a power cut.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    except sqlite3.Error as e:
        raise RouterError(f"cannot open journal {path}: {e}") from e
    return conn


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy the WAL's committed pages into the file, never waiting for the writer (PASSIVE).

    Returns the WAL's size in pages and how many of them are now in the file; the
    writer starts the WAL again from its beginning once they are all there.
    """
    _, pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return pages, copied


def open_reader(path: str) -> sqlite3.Connection:
    """A new read-only connection, for a thread other than the writer's."""
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


# --------------------------------------------------------------------------- writes


def insert_events(conn: sqlite3.Connection, msg: Append, now: float) -> list[Committed]:
    """Insert each event and its pending deliveries; a duplicate id gets seq None."""
    out, rows = [], []
    for item in msg.items:
        ev = item.event
        cur = conn.execute(
            "INSERT INTO events (id, type, received_at, body) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (ev.id, ev.type, now, ev.payload.body),
        )
        if cur.rowcount != 1:
            out.append(Committed(item, None))  # a duplicate within retention
            continue
        rows.extend((cur.lastrowid, target) for target in dict.fromkeys(item.targets))
        out.append(Committed(item, cur.lastrowid))
    if rows:
        conn.executemany(
            "INSERT INTO deliveries (seq, webhook, state) VALUES (?, ?, 'pending')", rows
        )
    return out


def record_outcomes(conn: sqlite3.Connection, outcomes: list[Outcome]) -> None:
    """Set each delivery's new state and add each attempt to the attempt log, in order.

    Two statements for the whole list (the states first, then the attempts): each
    attempt row's trim order depends only on its delivery's final state, which the
    triggers keep true in either order.
    """
    for msg in outcomes:
        if msg.state not in (DONE, PENDING, EXHAUSTED):
            raise ValueError(f"bad delivery state {msg.state!r}")
    # A done delivery stays done (a repeated Outcome is harmless); a cancelled one may
    # only become done, when an attempt already in flight succeeded.
    conn.executemany(
        "UPDATE deliveries SET state = ?1, attempts = ?2, next_at = ?3"
        " WHERE seq = ?4 AND webhook = ?5 AND state != 'done'"
        " AND (state != 'cancelled' OR ?1 = 'done')",
        [(m.state, m.result.number, m.next_at, m.seq, m.webhook) for m in outcomes],
    )
    conn.executemany(_INSERT_ATTEMPT, [
        (m.webhook, m.seq, r.number, r.started_at, r.status, r.error, r.latency * 1000.0,
         kept_response(r))
        for m in outcomes
        for r in (m.result,)
    ])  # fmt: skip


# Parameters: ?1 webhook, ?2 seq, ?3 number, ?4 at, ?5 status, ?6 error, ?7 latency_ms,
# ?8 response.
_INSERT_ATTEMPT = f"""
INSERT INTO attempts (
    webhook, seq, event_id, number, at, status, error, latency_ms, response, size, trim_order)
SELECT ?1, seq, id, ?3, ?4, ?5, ?6, ?7, ?8,
    {_ROW_SIZE.format(cost=ROW_COST, response="?8", error="?6", event_id="id")},
    CASE WHEN {_UNFINISHED.format(seq="?2", webhook="?1")} THEN 3 ELSE 1 END
FROM events WHERE seq = ?2 ON CONFLICT DO NOTHING
"""


def kept_response(r: AttemptResult) -> str:
    """The part of a response body the attempt log keeps: all of a failure's, a 2xx's prefix.

    A failure's body explains it; a success's rarely says more than its first KiB, and a
    chatty receiver must not fill the disk with them.
    """
    return prefix(r.response) if r.ok else r.response


def prefix(text: str) -> str:
    """The first ``SUCCESS_RESPONSE_CAP`` bytes of ``text``; a character cut in half goes."""
    if len(text) <= SUCCESS_RESPONSE_CAP // 4:  # short enough whatever its characters
        return text
    return text.encode()[:SUCCESS_RESPONSE_CAP].decode(errors="ignore")


def save_states(conn: sqlite3.Connection, states: list[tuple[str, WebhookState]]) -> None:
    """Replace each webhook's persisted state: (webhook, state) pairs, one statement."""
    conn.executemany("INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (webhook, s.state, s.disabled_reason, s.consecutive_failures,
         s.delivered, s.failed, s.last_success, s.last_error, s.alerts.failing_since,
         s.alerts.last_alert, s.alerts.last_alert_at)
        for webhook, s in states
    ])  # fmt: skip


def revive(conn: sqlite3.Connection, msg: Revive) -> int:
    """Exhausted (and, for a replay, done) deliveries back to pending, attempts reset.

    Returns how many; their bodies stay in the file (the queue loads them in order).
    """
    states = "('exhausted', 'done')" if msg.include_done else "('exhausted')"
    events, params = [], [msg.webhook]
    for test, value in (("received_at >= ?", msg.since), ("received_at < ?", msg.until),
                        ("id = ?", msg.event)):  # fmt: skip
        if value is not None:
            events.append(test)
            params.append(value)
    which = f" AND seq IN (SELECT seq FROM events WHERE {' AND '.join(events)})" if events else ""
    return conn.execute(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = NULL"
        f" WHERE webhook = ? AND state IN {states}{which}",
        params,
    ).rowcount


def cancel(conn: sqlite3.Connection, webhook: str) -> int:
    """Cancel the webhook's pending and exhausted deliveries; how many there were."""
    return conn.execute(
        f"UPDATE deliveries SET state = '{CANCELLED}'"
        " WHERE webhook = ? AND state IN ('pending', 'exhausted')",
        (webhook,),
    ).rowcount


def purge(conn: sqlite3.Connection, cutoff: float, limit: int) -> tuple[int, int]:
    """Delete finished events received before ``cutoff``, their rows, and older attempt rows.

    At most ``limit`` of each, so one call never holds the writer for long. Returns
    how many events and how many attempt rows went.
    """
    seqs = [
        (seq,)
        for (seq,) in conn.execute(
            "SELECT seq FROM events e WHERE received_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.seq = e.seq"
            "  AND d.state IN ('pending', 'exhausted')) LIMIT ?",
            (cutoff, limit),
        )
    ]
    for table in ("attempts", "deliveries", "events"):
        conn.executemany(f"DELETE FROM {table} WHERE seq = ?", seqs)
    old = conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < ? LIMIT ?)",
        (cutoff, limit),
    ).rowcount
    return len(seqs), old


_DOOMED = "SELECT id, size FROM attempts WHERE trim_order = ? ORDER BY id LIMIT ?"
_CUT = (
    "SELECT id, size, response FROM attempts WHERE id >= (SELECT cut_below FROM attempt_log)"
    " AND length(CAST(response AS BLOB)) > ? ORDER BY id LIMIT ?"
)


def attempt_log_bytes(conn: sqlite3.Connection) -> int:
    """What the attempt log costs on disk, kept up to date by triggers (no scan)."""
    return conn.execute("SELECT bytes FROM attempt_log").fetchone()[0]


def trim_attempts(conn: sqlite3.Connection, ceiling: int, limit: int) -> tuple[int, int]:
    """Delete the oldest attempt rows, in trim order, until the log costs at most ``ceiling``.

    Then, if still over, cut the oldest remaining responses to their prefix. At most
    ``limit`` rows, so one call never holds the writer for long. Returns how many rows
    went or were cut, and what the log costs now.
    """
    done, size = 0, attempt_log_bytes(conn)
    for order in (1, 2):
        excess = size - ceiling
        if excess <= 0 or done >= limit:
            return done, size
        doomed = []
        cur = conn.execute(_DOOMED, (order, limit - done))
        for row_id, row_size in cur:
            doomed.append((row_id,))
            excess -= row_size
            if excess <= 0:
                break
        cur.close()
        conn.executemany("DELETE FROM attempts WHERE id = ?", doomed)
        done, size = done + len(doomed), attempt_log_bytes(conn)
    excess, cut = size - ceiling, []
    if excess > 0 and done < limit:
        cur = conn.execute(_CUT, (SUCCESS_RESPONSE_CAP, limit - done))
        for row_id, row_size, response in cur:
            head = prefix(response)
            saved = len(response.encode()) - len(head.encode())
            cut.append((head, row_size - saved, row_id))
            excess -= saved
            if excess <= 0:
                break
        cur.close()
        conn.executemany("UPDATE attempts SET response = ?, size = ? WHERE id = ?", cut)
        if cut:
            conn.execute("UPDATE attempt_log SET cut_below = ?", (cut[-1][2] + 1,))
        size = attempt_log_bytes(conn)
    return done + len(cut), size


# --------------------------------------------------------------------------- reads


def pending_deliveries(
    conn: sqlite3.Connection,
    webhook: str,
    after_seq: int,
    limit: int,
    max_bytes: int | None = None,
    seqs: tuple[int, ...] = (),
) -> tuple[tuple[Delivery, ...], int]:
    """Pending deliveries of ``webhook``, oldest first, and the cost of the first left out.

    Up to ``limit`` with seq > ``after_seq`` whose cost in memory (``delivery_cost``)
    adds up to at most ``max_bytes``; or, with ``seqs``, exactly those still pending.
    The second value is 0 unless ``max_bytes`` stopped the read.
    """
    if seqs:
        rows = conn.execute(_PENDING_BY_SEQ_SQL.format(marks=",".join("?" * len(seqs))),
                            (webhook, *seqs))  # fmt: skip
    else:
        rows = conn.execute(_PENDING_SQL, (webhook, after_seq, limit))
    return deliveries_within(rows, max_bytes)


def deliveries_within(rows: Any, max_bytes: int | None) -> tuple[tuple[Delivery, ...], int]:
    """Pending-delivery rows (seq, id, type, body, attempts, next_at) as deliveries, up to
    ``max_bytes``; the second value is the cost of the first one left out (0: none was)."""
    out: list[Delivery] = []
    total = 0
    for seq, eid, etype, body, attempts, next_at in rows:
        d = Delivery(seq, Payload(eid, etype, body), attempts, next_at)
        cost = delivery_cost(d)
        if max_bytes is not None and total + cost > max_bytes:
            return tuple(out), cost
        total += cost
        out.append(d)
    return tuple(out), 0


# The readers from here to unfinished() serve both journals: their SQL is what SQLite and
# PostgreSQL both speak, and router.pgstore calls them with psycopg's parameter ``mark``.


def attempts(
    conn: Any,
    webhook: str,
    limit: int,
    failed: bool = False,
    event: str | None = None,
    mark: str = "?",
) -> list[dict[str, Any]]:
    """The attempt log of one webhook, newest first (``webhook-router attempts``, the API).

    ``failed``: only attempts that did not succeed (they carry an error); ``event``:
    only the attempts of that event id.
    """
    where, params = f"webhook = {mark}", [webhook]
    if failed:
        where += " AND error IS NOT NULL"
    if event is not None:
        where += f" AND event_id = {mark}"
        params.append(event)
    rows = conn.execute(
        "SELECT event_id, seq, number, at, status, error, latency_ms, response FROM attempts"
        f" WHERE {where} ORDER BY at DESC, id DESC LIMIT {mark}",
        (*params, limit),
    )
    return [
        {"id": eid, "seq": seq, "attempt": number, "at": iso(at), "status": status,
         "error": error, "latency_ms": latency_ms, "response": response}
        for eid, seq, number, at, status, error, latency_ms, response in rows
    ]  # fmt: skip


_STATE_COLUMNS = (
    "name, state, disabled_reason, consecutive_failures, delivered, failed, last_success,"
    " last_error, failing_since, last_alert, last_alert_at"
)


def saved_states(conn: Any) -> dict[str, WebhookState]:
    """Every webhook's persisted state, straight from the journal."""
    return {row[0]: _state(row) for row in conn.execute(f"SELECT {_STATE_COLUMNS} FROM webhooks")}


def _state(row: tuple) -> WebhookState:
    """A ``webhooks`` row (name first) as the state it saved; columns 9 on are the alerts'."""
    return WebhookState(*row[1:8], AlertState(*row[8:]))


def one_webhook(conn: Any, webhook: str, mark: str = "?") -> tuple[WebhookState, int, int, int]:
    """What a rebuild starts from: the saved state, (pending, exhausted) counts, newest seq.

    The newest event seq tells deliveries the rebuild has seen (they are counted or
    in its queue head) from those committed after it.
    """
    row = conn.execute(
        f"SELECT {_STATE_COLUMNS} FROM webhooks WHERE name = {mark}", (webhook,)
    ).fetchone()
    pending, exhausted = open_counts(conn, webhook, mark)
    (newest,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    state = _state(row) if row else WebhookState()
    return state, pending, exhausted, newest


def open_counts(conn: Any, webhook: str, mark: str = "?") -> tuple[int, int]:
    """One webhook's (pending, exhausted) delivery counts."""
    counts = dict(
        conn.execute(
            f"SELECT state, count(*) FROM deliveries WHERE webhook = {mark}"
            " AND state IN ('pending', 'exhausted') GROUP BY state",
            (webhook,),
        ).fetchall()
    )
    return counts.get(PENDING, 0), counts.get(EXHAUSTED, 0)


def unfinished(conn: Any) -> dict[str, tuple[int, int]]:
    """Per webhook: (pending, exhausted) delivery counts, straight from the journal."""
    out: dict[str, tuple[int, int]] = {}
    for webhook, state, n in conn.execute(
        "SELECT webhook, state, count(*) FROM deliveries"
        " WHERE state IN ('pending', 'exhausted') GROUP BY state, webhook"
    ):
        pending, exhausted = out.get(webhook, (0, 0))
        out[webhook] = (n, exhausted) if state == PENDING else (pending, n)
    return out
