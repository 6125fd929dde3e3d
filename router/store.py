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
from router.clock import iso
from router.messages import (
    CANCELLED,
    DONE,
    EXHAUSTED,
    PENDING,
    Append,
    Committed,
    Delivery,
    Outcome,
    Payload,
    Revive,
    WebhookState,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
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

_PENDING_SQL = """
SELECT d.seq, e.id, e.type, e.body, d.attempts, d.next_at
FROM deliveries d JOIN events e ON e.seq = d.seq
WHERE d.state = 'pending' AND d.webhook = ? AND d.seq > ?
ORDER BY d.seq LIMIT ?
"""


# --------------------------------------------------------------------------- connections


def open_writer(path: str, max_pages: int | None = None) -> sqlite3.Connection:
    """Create the directory (0700), the file (0600) and the schema; return the writer.

    WAL with ``synchronous=FULL``: a committed transaction survives kill -9 and
    power loss. ``isolation_level=None``: the caller issues BEGIN and COMMIT.
    """
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
        conn.execute("PRAGMA synchronous = FULL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            conn.executescript(_SCHEMA)
        elif version > SCHEMA_VERSION:
            raise RouterError(
                f"journal {path} has schema version {version}, newer than this "
                f"router understands ({SCHEMA_VERSION}); upgrade the router"
            )
        if max_pages is not None:
            conn.execute(f"PRAGMA max_page_count = {int(max_pages)}")
    except sqlite3.Error as e:
        conn.close()
        raise RouterError(f"cannot open journal {path}: {e}") from e
    except RouterError:
        conn.close()
        raise
    return conn


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


def record_outcome(conn: sqlite3.Connection, msg: Outcome) -> None:
    """Set the delivery's new state and add the attempt to the attempt log."""
    if msg.state not in (DONE, PENDING, EXHAUSTED):
        raise ValueError(f"bad delivery state {msg.state!r}")
    r = msg.result
    # A done delivery stays done (a repeated Outcome is harmless); a cancelled one may
    # only become done, when an attempt already in flight succeeded.
    conn.execute(
        "UPDATE deliveries SET state = ?, attempts = ?, next_at = ?"
        " WHERE seq = ? AND webhook = ? AND state != 'done'"
        " AND (state != 'cancelled' OR ? = 'done')",
        (msg.state, r.number, msg.next_at, msg.seq, msg.webhook, msg.state),
    )
    conn.execute(
        "INSERT INTO attempts (webhook, seq, event_id, number, at, status, error,"
        " latency_ms, response) SELECT ?, seq, id, ?, ?, ?, ?, ?, ? FROM events"
        " WHERE seq = ? ON CONFLICT DO NOTHING",
        (msg.webhook, r.number, r.started_at, r.status, r.error, r.latency * 1000.0,
         r.response, msg.seq),
    )  # fmt: skip


def save_state(conn: sqlite3.Connection, webhook: str, s: WebhookState) -> None:
    """Replace the webhook's persisted state."""
    conn.execute(
        "INSERT OR REPLACE INTO webhooks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (webhook, s.state, s.disabled_reason, s.consecutive_failures,
         s.delivered, s.failed, s.last_success, s.last_error),
    )  # fmt: skip


def revive(conn: sqlite3.Connection, msg: Revive) -> tuple[Delivery, ...]:
    """Exhausted (and, for a replay, done) deliveries back to pending, attempts reset."""
    states = "('exhausted', 'done')" if msg.include_done else "('exhausted')"
    since = "" if msg.since is None else " AND e.received_at >= ?"
    params = (msg.webhook,) if msg.since is None else (msg.webhook, msg.since)
    rows = conn.execute(
        "SELECT d.seq, e.id, e.type, e.body FROM deliveries d JOIN events e"
        f" ON e.seq = d.seq WHERE d.webhook = ? AND d.state IN {states}{since}"
        " ORDER BY d.seq",
        params,
    ).fetchall()
    conn.executemany(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = NULL"
        " WHERE seq = ? AND webhook = ?",
        [(seq, msg.webhook) for seq, *_ in rows],
    )
    return tuple(Delivery(seq, Payload(eid, etype, body)) for seq, eid, etype, body in rows)


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


# --------------------------------------------------------------------------- reads


def pending_deliveries(
    conn: sqlite3.Connection, webhook: str, after_seq: int, limit: int
) -> tuple[Delivery, ...]:
    """Up to ``limit`` pending deliveries of ``webhook`` with seq > ``after_seq``, oldest first."""
    return tuple(
        Delivery(seq, Payload(eid, etype, body), attempts, next_at)
        for seq, eid, etype, body, attempts, next_at in conn.execute(
            _PENDING_SQL, (webhook, after_seq, limit)
        )
    )


def attempts(conn: sqlite3.Connection, webhook: str, limit: int) -> list[dict[str, Any]]:
    """The attempt log of one webhook, newest first (for ``webhook-router attempts``)."""
    rows = conn.execute(
        "SELECT event_id, seq, number, at, status, error, latency_ms, response FROM attempts"
        " WHERE webhook = ? ORDER BY at DESC, id DESC LIMIT ?",
        (webhook, limit),
    )
    return [
        {"id": eid, "seq": seq, "attempt": number, "at": iso(at), "status": status,
         "error": error, "latency_ms": latency_ms, "response": response}
        for eid, seq, number, at, status, error, latency_ms, response in rows
    ]  # fmt: skip


def saved_states(conn: sqlite3.Connection) -> dict[str, WebhookState]:
    """Every webhook's persisted state, straight from the file."""
    return {row[0]: WebhookState(*row[1:]) for row in conn.execute("SELECT * FROM webhooks")}


def unfinished(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Per webhook: (pending, exhausted) delivery counts, straight from the file."""
    out: dict[str, tuple[int, int]] = {}
    for webhook, state, n in conn.execute(
        "SELECT webhook, state, count(*) FROM deliveries"
        " WHERE state IN ('pending', 'exhausted') GROUP BY state, webhook"
    ):
        pending, exhausted = out.get(webhook, (0, 0))
        out[webhook] = (n, exhausted) if state == PENDING else (pending, n)
    return out
