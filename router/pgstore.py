"""The journal's PostgreSQL database (SPEC §8): its schema and every statement on its tables.

The same functions as ``router.store`` (names, arguments, results, semantics), each
taking a psycopg 3 connection first, so ``router.journal`` can use either module as its
``store``; they run inside the caller's transaction (``with conn.transaction():`` on
the autocommit connections ``connect`` opens). What differs is said here:

- Several daemons write at once. ``insert_events`` takes a transaction lock first, so
  event sequence numbers commit in the order they were given: a reader paging by
  ``after_seq`` never finds a smaller seq committed after a larger one it has read.
- FENCING. Every write of a webhook's state (``record_outcomes``, ``save_states``,
  ``revive``, ``cancel``) takes an optional ``fence``: webhook -> (owner, epoch), this
  daemon's leases. With it, each write's WHERE clause requires the lease row to still
  have that owner and epoch, and the webhooks whose lease is gone are reported:
  ``record_outcomes`` and ``save_states`` write the others and return the lost ones;
  ``revive`` and ``cancel`` (one webhook) write nothing and raise ``LeaseLost``. A
  fenced write holds ``FENCE_LOCK`` shared until its commit, and a daemon that takes a
  lease holds it exclusively (``hold_off_writers``) for its transaction, so a takeover
  never commits between another daemon's check of that lease and its write. Without
  ``fence`` (one daemon on its own) each behaves as ``router.store``'s.
- The attempt log's byte count (``attempt_log_bytes``) is kept by statement-level
  triggers over transition tables, one update per statement, spread over
  ``LOG_SLOTS`` rows (by backend) so that daemons do not queue on one row.
- ``notify`` tells the owners that new deliveries exist: one ``pg_notify`` per call,
  the journal calls it once per commit.
- Control commands for a webhook another daemon delivers go to it as rows of
  ``requests`` (``put_request`` and the functions after it), announced on channels of
  their own.

The schema has a version of its own, in the one-row table ``schema_version``:
``create_schema`` makes it in an empty database, ``schema_state`` tells what a database
holds, ``migrate`` upgrades an older one (``webhook-router migrate``); a daemon refuses
one it does not know (``open_writer``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from router import RouterError, store
from router.messages import (
    CANCELLED,
    DONE,
    EXHAUSTED,
    PENDING,
    Append,
    Committed,
    Delivery,
    Outcome,
    Revive,
    WebhookState,
)
from router.store import ROW_COST, SUCCESS_RESPONSE_CAP, deliveries_within, kept_response, prefix

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

EMPTY, CURRENT, OLDER, UNKNOWN = "empty", "current", "older", "unknown"  # schema_state's answers

NOTIFY_CHANNEL = "wr_deliveries"
WEBHOOKS_CHANNEL = "wr_webhooks"  # the API-made webhooks changed: each daemon reads them again
NOTIFY_MAX = 8000  # bytes of a notification's payload (PostgreSQL's limit is just under 8000)
NOTIFY_ALL = "*"  # the payload when the names would not fit: every webhook has news

# Transaction-level advisory locks (keys of our own): the schema while it is made or
# upgraded; the event sequence while one transaction inserts; the leases' owners and
# epochs while fenced writes check them (shared) or a daemon takes leases (exclusive).
SCHEMA_LOCK = 0x7752_5F73_6368_656D
EVENTS_LOCK = 0x7752_5F65_7665_6E74
FENCE_LOCK = 0x7752_5F66_656E_6365

LOG_SLOTS = 16  # rows the attempt log's byte count is spread over

Fence = Mapping[str, tuple[str, int]]  # webhook -> (owner, epoch) of the lease this daemon holds


class LeaseLost(RouterError):
    """A fenced write found the webhook's lease gone (another owner or a newer epoch)."""

    def __init__(self, webhooks: Iterable[str]):
        self.webhooks = frozenset(webhooks)
        super().__init__(f"lease lost for {', '.join(sorted(self.webhooks))}")


_OPEN = "IN ('pending', 'exhausted')"  # the states of a delivery that may still be attempted

# The triggers' joins with their transition tables run by EXECUTE: planned at each call, for
# that statement's rows and the table's size then (a plan kept from when the table was small
# scans all of it).
#
# Version 1: the tables of router.store's schema 3, api_webhooks (router.registry's) and,
# for the cluster, nodes, leases and requests (control commands for another daemon). Trim
# order as in router.store: 1, attempts of finished deliveries; 2, older attempts of an
# unfinished one; 3, the newest attempt of each unfinished delivery.
# ``attempt_log_cut.cut_below``: every row under that id has at most a prefix of its response.
_SCHEMA_V1 = f"""
CREATE TABLE schema_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL);
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id text NOT NULL UNIQUE,
    type text NOT NULL, received_at double precision NOT NULL, body text NOT NULL);
CREATE INDEX events_received_at ON events (received_at);
CREATE TABLE deliveries (
    seq bigint NOT NULL, webhook text NOT NULL, state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0, next_at double precision,
    PRIMARY KEY (seq, webhook));
CREATE INDEX deliveries_by_state ON deliveries (state, webhook, seq);
CREATE TABLE attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, webhook text NOT NULL,
    seq bigint NOT NULL, event_id text NOT NULL, number integer NOT NULL,
    at double precision NOT NULL, status integer, error text, latency_ms double precision,
    response text, size bigint NOT NULL, trim_order smallint NOT NULL,
    UNIQUE (seq, webhook, number, at));  -- also makes a repeated Outcome a no-op
CREATE INDEX attempts_by_webhook ON attempts (webhook, at);
CREATE INDEX attempts_at ON attempts (at);
CREATE INDEX attempts_to_trim ON attempts (trim_order, id);
CREATE TABLE attempt_log (slot smallint PRIMARY KEY, bytes bigint NOT NULL);
INSERT INTO attempt_log SELECT slot, 0 FROM generate_series(0, {LOG_SLOTS - 1}) AS slot;
CREATE TABLE attempt_log_cut (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), cut_below bigint NOT NULL);
INSERT INTO attempt_log_cut VALUES (true, 0);
CREATE TABLE webhooks (
    name text PRIMARY KEY, state text NOT NULL, disabled_reason text,
    consecutive_failures integer NOT NULL, delivered bigint NOT NULL, failed bigint NOT NULL,
    last_success double precision, last_error text, failing_since double precision,
    last_alert text, last_alert_at double precision);
CREATE TABLE api_webhooks (
    name text PRIMARY KEY, document text NOT NULL,
    created_at double precision NOT NULL, updated_at double precision NOT NULL);
CREATE TABLE nodes (
    name text PRIMARY KEY, started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL);
CREATE TABLE leases (
    webhook text PRIMARY KEY, owner text, epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    wanted_at timestamptz NOT NULL DEFAULT now());  -- a live daemon's config had it then
CREATE INDEX leases_by_owner ON leases (owner);
CREATE TABLE requests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, webhook text NOT NULL,
    node text NOT NULL, asker text NOT NULL, command text NOT NULL, arguments jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL,
    taken_at timestamptz, answer jsonb, answered_at timestamptz);
CREATE INDEX requests_to_take ON requests (node, id) WHERE taken_at IS NULL;
CREATE INDEX requests_by_expiry ON requests (expires_at);

CREATE FUNCTION attempts_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE added bigint; lowest bigint;
BEGIN
    SELECT sum(size), min(id) INTO added, lowest FROM new_rows;
    IF added IS NULL THEN RETURN NULL; END IF;
    UPDATE attempt_log SET bytes = bytes + added WHERE slot = pg_backend_pid() % {LOG_SLOTS};
    UPDATE attempt_log_cut SET cut_below = lowest WHERE cut_below > lowest;
    EXECUTE $q$UPDATE attempts a SET trim_order = 2 FROM new_rows n
        WHERE a.seq = n.seq AND a.webhook = n.webhook AND a.trim_order = 3 AND a.id < n.id$q$;
    RETURN NULL;
END $$;
CREATE TRIGGER attempts_added AFTER INSERT ON attempts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_added();
CREATE FUNCTION attempts_removed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE removed bigint;
BEGIN
    SELECT sum(size) INTO removed FROM old_rows;
    IF removed IS NOT NULL THEN
        UPDATE attempt_log SET bytes = bytes - removed
            WHERE slot = pg_backend_pid() % {LOG_SLOTS};
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER attempts_removed AFTER DELETE ON attempts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_removed();
CREATE FUNCTION attempt_resized() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attempt_log SET bytes = bytes - OLD.size + NEW.size
        WHERE slot = pg_backend_pid() % {LOG_SLOTS};
    RETURN NULL;
END $$;
CREATE TRIGGER attempt_resized AFTER UPDATE OF size ON attempts FOR EACH ROW
    WHEN (OLD.size IS DISTINCT FROM NEW.size) EXECUTE FUNCTION attempt_resized();
CREATE FUNCTION deliveries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$UPDATE attempts a SET trim_order = CASE WHEN n.state NOT {_OPEN} THEN 1
        WHEN a.id = (SELECT max(b.id) FROM attempts b
                     WHERE b.seq = n.seq AND b.webhook = n.webhook) THEN 3 ELSE 2 END
    FROM new_rows n JOIN old_rows o ON o.seq = n.seq AND o.webhook = n.webhook
    WHERE (o.state {_OPEN}) IS DISTINCT FROM (n.state {_OPEN})
        AND a.seq = n.seq AND a.webhook = n.webhook$q$;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_changed AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_changed();
"""

_UPGRADES = {1: _SCHEMA_V1}  # version -> the script that makes it from the one before

# A fenced write's WHERE clause: the lease row still has the owner and epoch it was given.
_HELD = (
    " AND EXISTS (SELECT 1 FROM leases l"
    " WHERE l.webhook = m.webhook AND l.owner = m.owner AND l.epoch = m.epoch)"
)


def _fenced(sql: str) -> tuple[str, str]:
    """The statement without and with the lease check (``{fence}`` in ``sql``)."""
    return sql.format(fence=""), sql.format(fence=_HELD)


# --------------------------------------------------------------------------- connections


def connect(dsn: str) -> psycopg.Connection:
    """A new autocommit connection: the caller delimits transactions (``conn.transaction()``).

    The error never shows ``dsn``, which may hold a password.
    """
    try:
        return _connect(dsn)
    except psycopg.Error as e:
        raise RouterError(f"cannot connect to the PostgreSQL journal: {e}") from e


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, application_name="webhook-router")


def open_writer(dsn: str) -> psycopg.Connection:
    """Connect, create the schema in an empty database, refuse an older or unknown one."""
    conn = connect(dsn)
    try:
        with conn.transaction():
            _lock(conn, SCHEMA_LOCK)
            state, version = _schema(conn)
            if state == EMPTY:
                _upgrade(conn, 0)
                log.info("PostgreSQL journal: schema version %d created", SCHEMA_VERSION)
            elif state == OLDER:
                raise RouterError(
                    f"the PostgreSQL journal has schema version {version}, older than this"
                    f" router's ({SCHEMA_VERSION}): run `webhook-router migrate` first"
                )
            elif state == UNKNOWN:
                raise RouterError(_unknown(version))
    except psycopg.Error as e:
        conn.close()
        raise RouterError(f"cannot open the PostgreSQL journal: {e}") from e
    except RouterError:
        conn.close()
        raise
    return conn


def open_reader(dsn: str) -> psycopg.Connection:
    """A new connection whose transactions are read-only, for another thread."""
    conn = connect(dsn)
    conn.execute("SET default_transaction_read_only = on")
    return conn


class Writer:
    """The journal's one writer connection to the database, and how its transactions go.

    The same as ``router.store.Writer`` (what ``router.journal`` needs of a backend). A
    commit that is not ``durable`` (outcomes and states alone) does not wait for the
    server's WAL flush (``synchronous_commit = off`` for that transaction): a crash of
    the server may lose it, and its deliveries go out again. A connection that broke is
    made again at the next ``begin``, so the journal's retries reach a server that is back.
    """

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)
    checkpoints = False  # the server checkpoints on its own

    def __init__(self, dsn: str):
        self._dsn = dsn
        self.conn = open_writer(dsn)
        info = self.conn.info
        self._name = f"postgresql://{info.host}:{info.port}/{info.dbname}"  # no password

    def __str__(self) -> str:
        return self._name

    def begin(self, durable: bool = True) -> None:
        """Start a write transaction; one that is not ``durable`` commits without a WAL flush."""
        if self.conn.closed or self.conn.broken:
            self.conn.close()
            self.conn = _connect(self._dsn)
        self.conn.execute("BEGIN" if durable else "BEGIN; SET LOCAL synchronous_commit = off")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll back the transaction, if one is open; raises the storage's errors."""
        idle = psycopg.pq.TransactionStatus.IDLE
        if not self.conn.broken and self.conn.info.transaction_status != idle:
            self.conn.execute("ROLLBACK")

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT msg")

    def release(self) -> None:
        self.conn.execute("RELEASE msg")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO msg")

    @staticmethod
    def storage_error(exc: BaseException) -> bool:
        """True for failures of the server or the connection: they doom the transaction.

        A bad value in one message (a DataError, an IntegrityError) is that message's alone.
        """
        return isinstance(exc, psycopg.OperationalError | psycopg.InternalError
                          | psycopg.InterfaceError)  # fmt: skip

    def reader(self) -> psycopg.Connection:
        """A new read-only connection, for a thread other than the writer's."""
        return open_reader(self._dsn)

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- schema


def _lock(conn: psycopg.Connection, key: int) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def _schema(conn: psycopg.Connection) -> tuple[str, int | None]:
    """What the database holds, and its version where it has one."""
    ours, tables = conn.execute(
        "SELECT to_regclass('schema_version') IS NOT NULL, to_regclass('events') IS NOT NULL"
    ).fetchone()
    if not ours:
        return (UNKNOWN if tables else EMPTY), None
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row else None
    if version is None or version > SCHEMA_VERSION:
        return UNKNOWN, version
    return (CURRENT if version == SCHEMA_VERSION else OLDER), version


def _unknown(version: int | None) -> str:
    if version is None:
        return "the PostgreSQL database holds tables that are not a webhook-router journal"
    return (
        f"the PostgreSQL journal has schema version {version}, newer than this router"
        f" understands ({SCHEMA_VERSION}); upgrade the router"
    )


def _upgrade(conn: psycopg.Connection, version: int) -> list[int]:
    """Run every script from ``version`` to ``SCHEMA_VERSION``, in the caller's transaction."""
    steps = list(range(version + 1, SCHEMA_VERSION + 1))
    for step in steps:
        conn.execute(_UPGRADES[step])
        conn.execute(
            "INSERT INTO schema_version VALUES (true, %s)"
            " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            (step,),
        )
    return steps


def schema_state(conn: psycopg.Connection) -> str:
    """``EMPTY``, ``CURRENT``, ``OLDER`` or ``UNKNOWN`` (newer than this router, or not ours)."""
    return _schema(conn)[0]


def create_schema(conn: psycopg.Connection) -> None:
    """Make the schema in an empty database, in one transaction; refuse any other."""
    with conn.transaction():
        _lock(conn, SCHEMA_LOCK)
        state = _schema(conn)[0]
        if state != EMPTY:
            raise RouterError(f"the PostgreSQL database is not empty (its schema is {state})")
        _upgrade(conn, 0)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Upgrade an older schema (or make it in an empty database), all in one transaction.

    Returns the versions applied (none when it is current); a failed step leaves the
    database as it was. An unknown schema is refused.
    """
    with conn.transaction():
        _lock(conn, SCHEMA_LOCK)
        state, version = _schema(conn)
        if state == UNKNOWN:
            raise RouterError(_unknown(version))
        steps = _upgrade(conn, version or 0)
    for step in steps:
        log.info("PostgreSQL journal upgraded to schema version %d", step)
    return steps


# --------------------------------------------------------------------------- fencing


def forget_webhooks(
    conn: psycopg.Connection, wanted: Iterable[str], after: float
) -> dict[str, int]:
    """Webhooks no daemon's config has had for ``after`` seconds, their lease free: their
    lease rows go and their open deliveries are cancelled. {webhook: deliveries cancelled}.

    For the lease keeper, after ``hold_off_writers``: a write still fenced by the lease
    commits first, and one after it finds no lease.
    """
    rows = conn.execute(
        "WITH gone AS (DELETE FROM leases"
        "  WHERE wanted_at < now() - make_interval(secs => %s) AND NOT webhook = ANY(%s)"
        "  AND (owner IS NULL OR expires_at < now()) RETURNING webhook),"
        f" cancelled AS (UPDATE deliveries d SET state = '{CANCELLED}' FROM gone g"
        f"  WHERE d.webhook = g.webhook AND d.state {_OPEN} RETURNING d.webhook)"
        " SELECT g.webhook, (SELECT count(*) FROM cancelled c WHERE c.webhook = g.webhook)"
        " FROM gone g",
        (after, list(wanted)),
    ).fetchall()
    return dict(rows)


def hold_off_writers(conn: psycopg.Connection) -> None:
    """Wait for every fenced write in flight, and hold new ones until this transaction ends.

    For the lease keeper, before it takes leases: a write that checked the old owner's
    lease commits first, so the new owner reads what it wrote.
    """
    _lock(conn, FENCE_LOCK)


def _lost(
    conn: psycopg.Connection, webhooks: Iterable[str], fence: Fence | None
) -> tuple[set[str], dict[str, tuple[str, int]] | None]:
    """The webhooks among ``webhooks`` whose lease ``fence`` does not hold, and those it does.

    The second value is the (owner, epoch) of each webhook still held, read once from
    ``fence`` (which may change meanwhile); None unfenced, when nothing is lost. Takes
    ``FENCE_LOCK`` shared until the commit: no lease changes hands before then.
    """
    if fence is None:
        return set(), None
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (FENCE_LOCK,))
    names = set(webhooks)
    claimed = {w: lease for w in sorted(names) if (lease := fence.get(w)) is not None}
    held = set()
    if claimed:
        held = {
            w
            for (w,) in conn.execute(
                "SELECT m.webhook FROM unnest(%b::text[], %b::text[], %b::bigint[])"
                " AS m(webhook, owner, epoch) WHERE true" + _HELD,
                (list(claimed), *_leases(list(claimed), claimed)),
            )
        }
    return names - held, {w: claimed[w] for w in held}


def _floats(values: Iterable[float | None]) -> list[float | None]:
    """Numbers as floats, for a binary float8[] parameter (an int among them would not do)."""
    return [None if v is None else float(v) for v in values]


def _leases(webhooks: list[str], held: Fence | None) -> tuple[list, list]:
    """The owner and epoch arrays that go beside ``webhooks`` in a fenced statement."""
    if held is None:
        return [None] * len(webhooks), [None] * len(webhooks)
    return [held[w][0] for w in webhooks], [held[w][1] for w in webhooks]


# --------------------------------------------------------------------------- writes

_INSERT_EVENTS = """
INSERT INTO events (id, type, received_at, body)
SELECT e.id, e.type, %s, e.body
FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY AS e(id, type, body, ord)
ORDER BY e.ord
ON CONFLICT (id) DO NOTHING RETURNING id, seq
"""
_INSERT_DELIVERIES = """
INSERT INTO deliveries (seq, webhook, state)
SELECT seq, webhook, 'pending' FROM unnest(%b::bigint[], %b::text[]) AS d(seq, webhook)
"""


def insert_events(conn: psycopg.Connection, msg: Append, now: float) -> list[Committed]:
    """Insert each event and its pending deliveries; a duplicate id gets seq None.

    Two statements for the whole Append, after the events lock (the module docstring).
    """
    events = [item.event for item in msg.items]
    if not events:
        return []
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s), pg_advisory_xact_lock(%s)",
                 (FENCE_LOCK, EVENTS_LOCK))  # fmt: skip  # FENCE_LOCK first: no deadlock
    seqs = dict(
        conn.execute(
            _INSERT_EVENTS,
            (now, [e.id for e in events], [e.type for e in events],
             [e.payload.body for e in events]),
        ).fetchall()
    )  # fmt: skip
    out, rows = [], ([], [])
    for item in msg.items:
        seq = seqs.pop(item.event.id, None)  # a later copy of the id in this Append: None
        out.append(Committed(item, seq))
        if seq is not None:
            for target in dict.fromkeys(item.targets):
                rows[0].append(seq)
                rows[1].append(target)
    if rows[0]:
        conn.execute(_INSERT_DELIVERIES, rows)
    return out


# A done delivery stays done (a repeated Outcome is harmless); a cancelled one may only
# become done, when an attempt already in flight succeeded.
_UPDATE_DELIVERIES = _fenced("""
UPDATE deliveries d SET state = m.state, attempts = m.attempts, next_at = m.next_at
FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::integer[], %b::float8[],
            %b::text[], %b::bigint[]) AS m(webhook, seq, state, attempts, next_at, owner, epoch)
WHERE d.seq = m.seq AND d.webhook = m.webhook AND d.state != 'done'
    AND (d.state != 'cancelled' OR m.state = 'done'){fence}
""")
_INSERT_ATTEMPTS = _fenced(f"""
INSERT INTO attempts (
    webhook, seq, event_id, number, at, status, error, latency_ms, response, size, trim_order)
SELECT m.webhook, e.seq, e.id, m.number, m.at, m.status, m.error, m.latency_ms, m.response,
    {ROW_COST} + octet_length(coalesce(m.response, '')) + octet_length(coalesce(m.error, ''))
        + octet_length(e.id),
    CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = m.seq AND d.webhook = m.webhook
                      AND d.state {_OPEN}) THEN 3 ELSE 1 END
FROM unnest(%b::text[], %b::bigint[], %b::integer[], %b::float8[], %b::integer[], %b::text[],
            %b::float8[], %b::text[], %b::text[], %b::bigint[]) WITH ORDINALITY
    AS m(webhook, seq, number, at, status, error, latency_ms, response, owner, epoch, ord)
JOIN events e ON e.seq = m.seq
WHERE true{{fence}}
ORDER BY m.ord
ON CONFLICT DO NOTHING
""")


def record_outcomes(
    conn: psycopg.Connection, outcomes: list[Outcome], fence: Fence | None = None
) -> set[str]:
    """Set each delivery's new state and add each attempt to the attempt log, in order.

    Two statements for the whole list, as ``router.store``'s. Of several outcomes of one
    delivery, the state kept is what applying them in order leaves: the first ``done``,
    else the last. Returns the webhooks whose lease ``fence`` lost (their outcomes are
    not written).
    """
    for msg in outcomes:
        if msg.state not in (DONE, PENDING, EXHAUSTED):
            raise ValueError(f"bad delivery state {msg.state!r}")
    lost, held = _lost(conn, (m.webhook for m in outcomes), fence)
    kept = [m for m in outcomes if m.webhook not in lost]
    if not kept:
        return lost
    final: dict[tuple[int, str], Outcome] = {}
    for m in kept:
        key = (m.seq, m.webhook)
        if key not in final or final[key].state != DONE:
            final[key] = m
    last = list(final.values())
    webhooks = [m.webhook for m in last]
    conn.execute(
        _UPDATE_DELIVERIES[fence is not None],
        (webhooks, [m.seq for m in last], [m.state for m in last],
         [m.result.number for m in last], _floats(m.next_at for m in last),
         *_leases(webhooks, held)),
    )  # fmt: skip
    results = [m.result for m in kept]
    webhooks = [m.webhook for m in kept]
    conn.execute(
        _INSERT_ATTEMPTS[fence is not None],
        (webhooks, [m.seq for m in kept], [r.number for r in results],
         _floats(r.started_at for r in results), [r.status for r in results],
         [r.error for r in results], [r.latency * 1000.0 for r in results],
         [kept_response(r) for r in results], *_leases(webhooks, held)),
    )  # fmt: skip
    return lost


_SAVE_STATES = _fenced("""
INSERT INTO webhooks (name, state, disabled_reason, consecutive_failures, delivered, failed,
    last_success, last_error, failing_since, last_alert, last_alert_at)
SELECT m.webhook, m.state, m.disabled_reason, m.consecutive_failures, m.delivered, m.failed,
    m.last_success, m.last_error, m.failing_since, m.last_alert, m.last_alert_at
FROM unnest(%b::text[], %b::text[], %b::text[], %b::integer[], %b::bigint[], %b::bigint[],
            %b::float8[], %b::text[], %b::float8[], %b::text[], %b::float8[], %b::text[],
            %b::bigint[])
    AS m(webhook, state, disabled_reason, consecutive_failures, delivered, failed,
         last_success, last_error, failing_since, last_alert, last_alert_at, owner, epoch)
WHERE true{fence}
ON CONFLICT (name) DO UPDATE SET state = excluded.state,
    disabled_reason = excluded.disabled_reason,
    consecutive_failures = excluded.consecutive_failures, delivered = excluded.delivered,
    failed = excluded.failed, last_success = excluded.last_success,
    last_error = excluded.last_error, failing_since = excluded.failing_since,
    last_alert = excluded.last_alert, last_alert_at = excluded.last_alert_at
""")


def save_states(
    conn: psycopg.Connection,
    states: list[tuple[str, WebhookState]],
    fence: Fence | None = None,
) -> set[str]:
    """Replace each webhook's persisted state: (webhook, state) pairs, the last of a name wins.

    One statement. Returns the webhooks whose lease ``fence`` lost (not written).
    """
    newest = dict(states)
    lost, held = _lost(conn, newest, fence)
    names = [w for w in newest if w not in lost]
    if not names:
        return lost
    s = [newest[w] for w in names]
    conn.execute(
        _SAVE_STATES[fence is not None],
        (names, [x.state for x in s], [x.disabled_reason for x in s],
         [x.consecutive_failures for x in s], [x.delivered for x in s], [x.failed for x in s],
         _floats(x.last_success for x in s), [x.last_error for x in s],
         _floats(x.alerts.failing_since for x in s), [x.alerts.last_alert for x in s],
         _floats(x.alerts.last_alert_at for x in s), *_leases(names, held)),
    )  # fmt: skip
    return lost


def _one_lease(conn: psycopg.Connection, webhook: str, fence: Fence | None) -> tuple[str, list]:
    """The lease check (clause, parameters) for a write of one webhook's deliveries.

    Raises ``LeaseLost`` when the lease is gone already.
    """
    if fence is None:
        return "", []
    lost, held = _lost(conn, (webhook,), fence)
    if lost:
        raise LeaseLost(lost)
    clause = (
        " AND EXISTS (SELECT 1 FROM leases l"
        " WHERE l.webhook = %s AND l.owner = %s AND l.epoch = %s)"
    )
    return clause, [webhook, *held[webhook]]  # type: ignore[index]


def revive(conn: psycopg.Connection, msg: Revive, fence: Fence | None = None) -> int:
    """Exhausted (and, for a replay, done) deliveries back to pending, attempts reset.

    Returns how many; their bodies stay in the database (the queue loads them in
    order). Raises ``LeaseLost`` (writing nothing) when ``fence``'s lease is gone.
    """
    held, lease = _one_lease(conn, msg.webhook, fence)
    states = "('exhausted', 'done')" if msg.include_done else "('exhausted')"
    events, params = [], [msg.webhook]
    for test, value in (("received_at >= %s", msg.since), ("received_at < %s", msg.until),
                        ("id = %s", msg.event)):  # fmt: skip
        if value is not None:
            events.append(test)
            params.append(value)
    which = f" AND seq IN (SELECT seq FROM events WHERE {' AND '.join(events)})" if events else ""
    return conn.execute(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = NULL"
        f" WHERE webhook = %s AND state IN {states}{which}{held}",
        [*params, *lease],
    ).rowcount


def cancel(conn: psycopg.Connection, webhook: str, fence: Fence | None = None) -> int:
    """Cancel the webhook's pending and exhausted deliveries; how many there were.

    Raises ``LeaseLost`` (writing nothing) when ``fence``'s lease is gone.
    """
    held, lease = _one_lease(conn, webhook, fence)
    return conn.execute(
        f"UPDATE deliveries SET state = '{CANCELLED}' WHERE webhook = %s AND state {_OPEN}{held}",
        (webhook, *lease),
    ).rowcount


def purge(conn: psycopg.Connection, cutoff: float, limit: int) -> tuple[int, int]:
    """Delete finished events received before ``cutoff``, their rows, and older attempt rows.

    At most ``limit`` of each. Returns how many events and how many attempt rows went.
    """
    seqs = [
        seq
        for (seq,) in conn.execute(
            "SELECT seq FROM events e WHERE received_at < %s AND NOT EXISTS"
            " (SELECT 1 FROM deliveries d WHERE d.seq = e.seq"
            f"  AND d.state {_OPEN}) LIMIT %s",
            (cutoff, limit),
        )
    ]
    if seqs:
        for table in ("attempts", "deliveries", "events"):
            conn.execute(f"DELETE FROM {table} WHERE seq = ANY(%b::bigint[])", (seqs,))
    old = conn.execute(
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE at < %s LIMIT %s)",
        (cutoff, limit),
    ).rowcount
    return len(seqs), old


# The rows to delete, oldest in trim order first (1 then 2), until ``excess`` bytes went:
# each row whose running total before it is still short of the excess.
_DOOMED = """
DELETE FROM attempts WHERE id IN (
    SELECT id FROM (
        SELECT id, size, sum(size) OVER (ORDER BY trim_order, id ROWS UNBOUNDED PRECEDING) AS upto
        FROM attempts WHERE trim_order < 3 ORDER BY trim_order, id LIMIT %(limit)s) t
    WHERE upto - size < %(excess)s)
"""
# The oldest responses longer than the prefix kept, until cutting them saves ``excess`` bytes;
# each with its first CAP characters (at least CAP bytes: their prefix is the response's).
_CUT = """
SELECT id, size, length, head FROM (
    SELECT id, size, octet_length(response) AS length, left(response, %(cap)s) AS head,
        sum(octet_length(response) - %(cap)s) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto
    FROM attempts WHERE id >= (SELECT cut_below FROM attempt_log_cut)
        AND octet_length(response) > %(cap)s
    ORDER BY id LIMIT %(limit)s) t
WHERE upto - (length - %(cap)s) < %(excess)s ORDER BY id
"""
_SET_CUT = """
UPDATE attempts a SET response = c.response, size = c.size
FROM unnest(%b::bigint[], %b::text[], %b::bigint[]) AS c(id, response, size) WHERE a.id = c.id
"""


def attempt_log_bytes(conn: psycopg.Connection) -> int:
    """What the attempt log costs on disk, kept up to date by triggers (no scan)."""
    return conn.execute("SELECT sum(bytes) FROM attempt_log").fetchone()[0]


def trim_attempts(conn: psycopg.Connection, ceiling: int, limit: int) -> tuple[int, int]:
    """Delete the oldest attempt rows, in trim order, until the log costs at most ``ceiling``.

    Then, if still over, cut the oldest remaining responses to their prefix. At most
    ``limit`` rows. Returns how many rows went or were cut, and what the log costs now.
    """
    size = attempt_log_bytes(conn)
    if size <= ceiling:
        return 0, size
    done = conn.execute(_DOOMED, {"limit": limit, "excess": size - ceiling}).rowcount
    size = attempt_log_bytes(conn)
    if size <= ceiling or done >= limit:
        return done, size
    params = {"cap": SUCCESS_RESPONSE_CAP, "limit": limit - done, "excess": size - ceiling}
    cut: tuple[list, list, list] = ([], [], [])
    for row_id, row_size, length, head in conn.execute(_CUT, params):
        kept = prefix(head)
        cut[0].append(row_id)
        cut[1].append(kept)
        cut[2].append(row_size - (length - len(kept.encode())))
    if cut[0]:
        conn.execute(_SET_CUT, cut)
        conn.execute("UPDATE attempt_log_cut SET cut_below = %s", (cut[0][-1] + 1,))
        size = attempt_log_bytes(conn)
    return done + len(cut[0]), size


def notify(conn: psycopg.Connection, webhooks: Iterable[str]) -> None:
    """Tell the owners of ``webhooks`` that they have new deliveries: ONE notification.

    Sent when the caller's transaction commits (none for no webhook). The payload is the
    names, one a line (names have no spaces), or ``NOTIFY_ALL`` past ``NOTIFY_MAX`` bytes.
    """
    names = sorted(set(webhooks))
    if not names:
        return
    payload = "\n".join(names)
    if len(payload.encode()) > NOTIFY_MAX:
        payload = NOTIFY_ALL
    conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))


def woken(payload: str) -> frozenset[str] | None:
    """The webhooks a ``notify`` payload names; None: every webhook."""
    return None if payload == NOTIFY_ALL else frozenset(payload.split("\n"))


# --------------------------------------------------------------------------- reads

_PENDING_SQL = """
SELECT d.seq, e.id, e.type, e.body, d.attempts, d.next_at
FROM deliveries d JOIN events e ON e.seq = d.seq
WHERE d.state = 'pending' AND d.webhook = %s AND d.seq > %s
ORDER BY d.seq LIMIT %s
"""
_PENDING_BY_SEQ_SQL = """
SELECT d.seq, e.id, e.type, e.body, d.attempts, d.next_at
FROM deliveries d JOIN events e ON e.seq = d.seq
WHERE d.state = 'pending' AND d.webhook = %s AND d.seq = ANY(%b::bigint[])
ORDER BY d.seq
"""


def pending_deliveries(
    conn: psycopg.Connection,
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
        rows = conn.execute(_PENDING_BY_SEQ_SQL, (webhook, list(seqs)))
    else:
        rows = conn.execute(_PENDING_SQL, (webhook, after_seq, limit))
    return deliveries_within(rows, max_bytes)


# Reads whose SQL both journals speak: router.store's, with psycopg's parameter marker.
attempts = functools.partial(store.attempts, mark="%s")
saved_states = store.saved_states
one_webhook = functools.partial(store.one_webhook, mark="%s")
open_counts = functools.partial(store.open_counts, mark="%s")
unfinished = store.unfinished


# --------------------------------------------------------------------------- API-made webhooks


def api_webhooks(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Every API-made webhook's (name, JSON document), by name (``router.registry``'s rows)."""
    return conn.execute("SELECT name, document FROM api_webhooks ORDER BY name").fetchall()


def put_api_webhook(conn: psycopg.Connection, name: str, document: str, now: float) -> None:
    """Create or replace an API-made webhook's document."""
    conn.execute(
        "INSERT INTO api_webhooks VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE"
        " SET document = excluded.document, updated_at = excluded.updated_at",
        (name, document, now, now),
    )


def delete_api_webhook(conn: psycopg.Connection, name: str) -> None:
    conn.execute("DELETE FROM api_webhooks WHERE name = %s", (name,))


def webhooks_changed(conn: psycopg.Connection) -> None:
    """Tell every daemon that the API-made webhooks changed (sent when the caller commits)."""
    conn.execute("SELECT pg_notify(%s, '')", (WEBHOOKS_CHANNEL,))


# --------------------------------------------------------------------------- control requests
#
# A control command for a webhook another daemon delivers (SPEC §8: every command works
# from any daemon) goes through the database, never the daemons' own sockets: the asker
# files a request for the holder (``put_request``), the holder takes it (``take_requests``),
# runs it and answers (``answer_request``); the asker reads the answer (``request_state``)
# and deletes the row (``drop_request``). Rows whose asker is gone are deleted by the next
# ``put_request``: the table holds at most the requests of the last ``REQUESTS_KEPT`` seconds.

REQUESTS_CHANNEL = "wr_requests"  # a request was filed; the payload is the node asked
ANSWERS_CHANNEL = "wr_answers"  # a request was answered; the payload is its id
REQUESTS_KEPT = 600.0  # seconds a request's row outlives its wait, at most


@dataclass(frozen=True, slots=True)
class Request:
    """A control command filed for this daemon: what to run, and for whom."""

    id: int
    webhook: str
    asker: str  # the node that filed it
    command: str
    arguments: dict


@dataclass(frozen=True, slots=True)
class RequestState:
    """How a filed request stands, for its asker."""

    taken: bool  # the daemon asked has taken it (it may be running it)
    answer: dict | None  # what that daemon answered; None until it has
    holder: str | None  # who holds the webhook's lease now (None: nobody)


def _json(value: Any) -> Jsonb:
    """A jsonb parameter; values JSON does not know go as their text (as on the control socket)."""
    return Jsonb(value, dumps=lambda v: json.dumps(v, default=str))


def put_request(
    conn: psycopg.Connection,
    webhook: str,
    node: str,
    asker: str,
    command: str,
    arguments: Mapping[str, Any],
    wait: float,
) -> int:
    """File ``command`` on ``webhook`` for daemon ``node``, who may take it for ``wait`` seconds.

    Tells ``node`` when the caller commits; returns the request's id. Deletes the rows
    whose wait ended more than ``REQUESTS_KEPT`` ago (their askers went without).
    """
    conn.execute(
        "DELETE FROM requests WHERE expires_at < now() - make_interval(secs => %s)",
        (REQUESTS_KEPT,),
    )
    (request_id,) = conn.execute(
        "INSERT INTO requests (webhook, node, asker, command, arguments, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING id",
        (webhook, node, asker, command, _json(dict(arguments)), wait),
    ).fetchone()
    conn.execute("SELECT pg_notify(%s, %s)", (REQUESTS_CHANNEL, node))
    return request_id


_TAKE_REQUESTS = """
UPDATE requests SET taken_at = now()
WHERE id IN (
    SELECT id FROM requests
    WHERE node = %s AND taken_at IS NULL AND expires_at > now()
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, webhook, asker, command, arguments
"""


def take_requests(conn: psycopg.Connection, node: str, limit: int) -> list[Request]:
    """Up to ``limit`` requests filed for ``node`` and not taken yet, oldest first, now taken.

    One whose wait is over is left alone: its asker has given up on it.
    """
    rows = conn.execute(_TAKE_REQUESTS, (node, limit)).fetchall()
    return sorted((Request(*row) for row in rows), key=lambda r: r.id)


def answer_request(conn: psycopg.Connection, request_id: int, answer: Mapping[str, Any]) -> bool:
    """Keep the answer to a request and tell its asker (when the caller commits).

    False when the row is gone: its asker stopped waiting.
    """
    done = conn.execute(
        "UPDATE requests SET answer = %s, answered_at = now() WHERE id = %s",
        (_json(dict(answer)), request_id),
    ).rowcount
    if done:
        conn.execute("SELECT pg_notify(%s, %s)", (ANSWERS_CHANNEL, str(request_id)))
    return bool(done)


def request_state(conn: psycopg.Connection, request_id: int) -> RequestState | None:
    """Whether the request was taken, its answer, and who holds its webhook now; None: gone."""
    row = conn.execute(
        "SELECT r.taken_at IS NOT NULL, r.answer, (SELECT l.owner FROM leases l"
        "  WHERE l.webhook = r.webhook AND l.expires_at > now())"
        " FROM requests r WHERE r.id = %s",
        (request_id,),
    ).fetchone()
    return None if row is None else RequestState(*row)


def drop_request(conn: psycopg.Connection, request_id: int) -> bool:
    """Delete a request (its asker is done with it); whether it had been taken.

    Once deleted, it can no longer be taken: a request dropped untaken was never run.
    """
    row = conn.execute(
        "DELETE FROM requests WHERE id = %s RETURNING taken_at IS NOT NULL", (request_id,)
    ).fetchone()
    return bool(row and row[0])
