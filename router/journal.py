"""The journal: the one writer of the SQLite file that makes accepted events durable.

A plain object with one writer thread and a ``queue.SimpleQueue`` inbox. The thread
blocks for one message, drains whatever else is waiting and applies it all in
ONE transaction (group commit), so throughput does not hinge on the number of
fsyncs. ``synchronous=FULL`` in WAL mode (``journal.sync: full``, the default):
once ``on_commit`` fires, the events survive kill -9 and power loss; with
``normal`` they survive kill -9 but not a power cut. Even with ``full``, a commit
of attempt outcomes alone is not fsynced (``_durable``): a power cut can
lose the last outcomes, and their deliveries go out again.

Each transaction applies its messages without a savepoint apiece (one costs more
than the message): runs of outcomes and states go in one statement each. Only
when a message turns out bad is the transaction started again with a savepoint
per message, so that it spoils only itself.

Commits never checkpoint (copy the WAL into the file) in the normal course: a
checkpointer thread with its own connection does, at most every
``CHECKPOINT_INTERVAL``, without blocking the writer. The price is disk: the WAL
holds up to ``WAL_BACKSTOP_PAGES`` (16 MiB) before a commit checkpoints after all,
and the file stays at up to ``WAL_KEPT_BYTES`` (16 MiB) once it has grown, where
SQLite's default keeps ~4 MiB. The stalls of tens to hundreds of ms that commits
still see now and then are the disk's own fsync latency (``bench/bench_journal.py
--trace``): ``journal.sync: normal`` is the only way around them.

A failed transaction (disk full, I/O error) never kills the thread: every
``Append`` in it is answered through ``on_error`` (the producer learns it was
not journaled), and the other messages are kept and retried with a backoff.

The file itself (schema, connections, every statement on its tables) is
``router.store``; this module decides when those statements run.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from router import RouterError, metrics, store
from router.clock import Clock
from router.messages import (
    Append,
    Cancel,
    Committed,
    Delivery,
    Loaded,
    LoadPending,
    Outcome,
    Rebuild,
    Revive,
    SaveState,
    WebhookState,
)

log = logging.getLogger(__name__)

PURGE_INTERVAL = 60.0  # seconds between purges of expired events
PURGE_CHUNK = 5000  # events per purge transaction, so a purge never stalls acks for long
TRIM_CHUNK = 500  # attempt rows a write transaction trims at most; a purge goes on from there
MAX_BATCH = 2000  # rows (events, other messages) per transaction: bounds latency under a flood
MAX_BACKLOG = 100_000  # failed non-Append messages kept for retry; beyond, oldest Outcomes go
MAX_BACKLOG_BYTES = 64 * 1024 * 1024  # what they may hold; beyond, oldest responses, then Outcomes
MESSAGE_COST = 512  # bytes a kept message costs besides its response text (an estimate)
RETRY_MIN, RETRY_MAX = 0.1, 5.0  # backoff for retrying a failed transaction's messages
NO_PAGE_LIMIT = 0xFFFFFFFE  # SQLite's largest max_page_count
CHECKPOINT_INTERVAL = 0.5  # seconds between checkpoints while commits come in
CHECKPOINT_TRIES = 3  # checkpoints in a row while commits land during them (see _Checkpointer)
WAL_BACKSTOP_PAGES = 4_000  # WAL pages (4 KiB) past which a commit checkpoints after all
WAL_KEPT_BYTES = 16 * 1024 * 1024  # what the WAL file is cut back to when it starts again


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``load`` hands one supervisor on start: its state and the head of its queue."""

    state: WebhookState
    pending: tuple[Delivery, ...]  # the first ``limit`` pending deliveries, oldest first
    queued: int  # all pending deliveries (held ones included)
    exhausted: int  # deliveries that used up their attempts


@dataclass(frozen=True, slots=True)
class _SetMaxPages:
    """Test hook: cap the file size so inserts fail with SQLITE_FULL."""

    pages: int


@dataclass(slots=True)
class _Results:
    """What one transaction produced; acted upon only once it has committed."""

    committed: list[Committed] = field(default_factory=list)
    rejected: list[tuple[Append, str]] = field(default_factory=list)  # bad Appends
    after: list[Callable[[], None]] = field(default_factory=list)  # replies, logs
    lost: set[str] = field(default_factory=set)  # webhooks whose fenced writes found no lease


_STOP = object()
_BOOKKEEPING = (Outcome, SaveState)  # what a commit records without an fsync (``_durable``)


class _Checkpointer:
    """Copies committed WAL pages into the file, on its own thread and connection.

    Left to SQLite, the commit that crosses 1,000 WAL pages copies them and fsyncs the
    file before it returns: a few ms added to ~1 % of the commits at light load, the
    producers' acks waiting behind. Here commits only append to the WAL; this thread
    copies what they wrote at most every ``CHECKPOINT_INTERVAL`` (it never blocks the
    writer, and SQLite runs without the GIL). The WAL starts again from its beginning
    only once all of it is in the file: a commit that lands during a checkpoint leaves
    some out, so a checkpoint goes again (the rest is small) up to ``CHECKPOINT_TRIES``
    times. The writer still checkpoints past ``WAL_BACKSTOP_PAGES``: when this thread
    fails, or when a long flood leaves it no gap to finish in.
    """

    def __init__(self, path: str, sync: str):
        self._conn = store.open_checkpointer(path, sync)
        self._wake = threading.Event()  # a commit since the last checkpoint
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="journal-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """The writer committed: copy it within ``CHECKPOINT_INTERVAL`` (never blocks)."""
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Stop the thread and close its connection.

        Before the writer closes: the last connection to close checkpoints everything
        and removes the WAL.
        """
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.wait(CHECKPOINT_INTERVAL):
                return
            self._wake.clear()
            try:
                for _ in range(CHECKPOINT_TRIES):
                    pages, copied = store.checkpoint(self._conn)
                    if copied >= pages:
                        break
            except sqlite3.Error as e:
                if not self._failing:
                    log.error("journal checkpoint failed: %s; commits checkpoint past %d"
                              " WAL pages meanwhile", e, WAL_BACKSTOP_PAGES)  # fmt: skip
                self._failing = True
                continue
            if self._failing:
                log.warning("journal checkpoints recovered")
                self._failing = False


class Journal:
    """The SQLite journal under ``state_dir``; see the module docstring."""

    def __init__(
        self,
        path: str,
        clock: Clock,
        retention: float,
        on_commit: Callable[[list[Committed]], None],
        on_error: Callable[[Append, str], None],
        *,
        max_pages: int | None = None,
        attempt_log_max: int | None = None,
        sync: str = "full",
        dsn: str | None = None,
        fence: Any = None,
        on_lost: Callable[[set[str]], None] | None = None,
    ):
        self.path = os.path.abspath(path)
        # With ``dsn``, the journal is a PostgreSQL database several daemons share (SPEC §8):
        # router.pgstore's statements instead of router.store's, each write of a webhook's
        # state fenced by ``fence`` (webhook -> this daemon's lease), ``on_lost`` told
        # (after the commit) of the webhooks whose lease turned out to be gone.
        self._dsn = dsn
        self.db: Any = store  # the backend's statements; other threads use them on reader()
        self._fencing: dict[str, Any] = {}
        self._lease_lost: Any = ()  # the exception a fenced write raises: none without leases
        if dsn is not None:
            from router import pgstore  # psycopg: only where PostgreSQL is used

            self.db = pgstore
            self._lease_lost = pgstore.LeaseLost
            self._fencing = {} if fence is None else {"fence": fence}
        self._on_lost = on_lost
        self._clock = clock
        self._retention = retention
        self._on_commit = on_commit
        self._on_error = on_error
        self._max_pages = max_pages
        self._sync = sync
        # The attempt log's ceiling in bytes (None: none); the writer reads it, reload sets it.
        self.attempt_log_max = attempt_log_max
        self._log_full = ""  # "", "trimming" or "over": one log line per change
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # in C: cheaper per message
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False
        self._writer: Any = None  # open(): a router.store.Writer, or router.pgstore's
        self._thread: threading.Thread | None = None
        self._backlog: list[Any] = []  # non-Append messages of failed transactions
        self._retry_at = 0.0
        self._failures = 0  # consecutive failed transactions: one ERROR log per burst
        self._next_purge = 0.0
        self._checkpointer: _Checkpointer | None = None

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Create the directory (0700), the file (0600) and the schema; open the writer."""
        if self._dsn is not None:
            self._writer = self.db.Writer(self._dsn)
            return
        self._writer = store.Writer(
            self.path, self._max_pages, self._sync, WAL_BACKSTOP_PAGES, WAL_KEPT_BYTES
        )

    def start(self) -> None:
        """Start the writer thread. It is a daemon thread: abandoning it is a kill -9, no worse."""
        if self._writer is None:
            raise RouterError("journal.start() before open()")
        self._next_purge = self._clock.monotonic() + PURGE_INTERVAL
        if self._writer.checkpoints:
            self._checkpointer = _Checkpointer(self.path, self._sync)
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def submit(self, msg: Any) -> None:
        """Queue one message for the writer (thread-safe, never blocks)."""
        with self._lock:
            if self._closed:
                log.warning("journal is stopped; ignored %s", type(msg).__name__)
                return
            self._inbox.put(msg)

    def stop(self, timeout: float = 10) -> None:
        """Write everything already submitted, then close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._inbox.put(_STOP)
        if self._thread is None:
            if self._writer is not None:
                self._run()  # never started: drain the inbox here
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "journal writer still busy after %.1fs; leaving it (SQLite stays safe)", timeout
            )

    def alive(self) -> bool:
        """The writer thread is running (for /healthz)."""
        return self._thread is not None and self._thread.is_alive()

    def backlog(self) -> int:
        """Messages submitted but not yet written: lets producers apply back-pressure."""
        return self._inbox.qsize()

    def set_max_pages(self, pages: int | None) -> None:
        """Test hook: cap (or, with None, uncap) the file size to simulate a full disk."""
        self.submit(_SetMaxPages(NO_PAGE_LIMIT if pages is None else pages))

    def reader(self) -> Any:
        """A new read-only connection, for another thread (control socket, status)."""
        return self._writer.reader()

    # ----------------------------------------------------------------- start-up

    def load(self, webhooks: Iterable[str], limit: int) -> dict[str, Restored]:
        """Read each webhook's state and queue head; cancel deliveries of removed webhooks.

        Runs on the calling thread, before ``start()``.
        """
        if self._writer is None or self._thread is not None:
            raise RouterError("journal.load() must run after open() and before start()")
        writer, names, db = self._writer, list(dict.fromkeys(webhooks)), self.db
        conn = writer.conn
        known = set(names)
        try:
            counts = db.unfinished(conn)
            gone = {w: sum(c) for w, c in counts.items() if w not in known}
            if gone:
                writer.begin()
                for webhook in gone:
                    db.cancel(conn, webhook)
                writer.commit()
            for webhook, n in gone.items():
                log.warning(
                    "webhook %r is no longer configured: %d deliveries cancelled", webhook, n
                )
                metrics.DELIVERIES.labels(webhook, "cancelled").inc(n)
            states = {n: st for n, st in db.saved_states(conn).items() if n in known}
            out = {}
            for name in names:
                queued, exhausted = counts.get(name, (0, 0))
                pending = db.pending_deliveries(conn, name, 0, limit)[0] if queued else ()
                state = states.get(name, WebhookState())
                out[name] = Restored(state, pending, queued, exhausted)
            return out
        except writer.errors as e:
            self._rollback()
            raise RouterError(f"cannot read journal {writer}: {e}") from e

    # ----------------------------------------------------------------- writer thread

    def _run(self) -> None:
        while not self._stopping:
            try:
                batch = self._collect()
                due = self._backlog and self._clock.monotonic() >= self._retry_at
                if batch or due:
                    self._transact(batch)
                if self._clock.monotonic() >= self._next_purge:
                    self._purge()
            except Exception:
                log.exception("journal writer: unexpected error; carrying on")
        try:
            if self._backlog:
                self._transact([])  # a last try for outcomes that failed earlier
            if self._backlog:
                log.error("journal stopped with %d unsaved outcomes/states", len(self._backlog))
        finally:
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self._writer.close()

    def _collect(self) -> list[Any]:
        """Block for one message (or until a purge/retry is due), then drain the rest."""
        deadline = self._next_purge
        if self._backlog:
            deadline = min(deadline, self._retry_at)
        timeout = min(max(deadline - self._clock.monotonic(), 0.0), PURGE_INTERVAL)
        try:
            batch = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        size = len(batch[0].items) if isinstance(batch[0], Append) else 1
        while size < MAX_BATCH:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            batch.append(msg)
            size += len(msg.items) if isinstance(msg, Append) else 1
        if batch[-1] is _STOP:
            batch.pop()
            self._stopping = True
        return batch

    def _transact(self, batch: list[Any]) -> None:
        """Apply the backlog and ``batch`` in one transaction, then run the callbacks."""
        for msg in batch:
            if isinstance(msg, _SetMaxPages):
                self._writer.set_max_pages(msg.pages)
        work = self._backlog + [m for m in batch if not isinstance(m, _SetMaxPages)]
        self._backlog = []
        if not work:
            return
        out = _Results()
        started = time.perf_counter()
        writer = self._writer
        try:
            writer.begin(durable=_durable(work))
            now = self._clock.time()
            states = {m.webhook: m for m in work if isinstance(m, SaveState)}  # newest wins
            todo = [m for m in work if not isinstance(m, SaveState) or states[m.webhook] is m]
            try:
                self._apply_all(todo, now, out)
            except Exception as e:
                if writer.storage_error(e):
                    raise
                # A bad message: start again, one savepoint each, so it spoils only itself.
                writer.rollback()
                writer.begin()
                out = _Results()
                for msg in todo:
                    self._apply(msg, now, out)
            self._trim()
            self._notify(out)
            writer.commit()
        except writer.errors as e:
            self._rollback()
            self._failed(work, e)
            return
        metrics.JOURNAL_COMMIT.observe(time.perf_counter() - started)
        if self._checkpointer is not None:
            self._checkpointer.committed()
        if self._failures:
            log.warning("journal writes recovered after %d failed transactions", self._failures)
            self._failures = 0
        if out.lost and self._on_lost is not None:
            log.warning("journal: the lease of %s is gone; stopping there", sorted(out.lost))
            self._call(self._on_lost, out.lost)
        if out.committed:
            self._call(self._on_commit, out.committed)
        for append, reason in out.rejected:
            self._call(self._on_error, append, reason)
        for fn in out.after:
            self._call(fn)

    def _apply_all(self, todo: list[Any], now: float, out: _Results) -> None:
        """Apply every message, with no savepoint (each costs more than the message itself).

        Outcomes and states are written a run at a time, with one statement each for the
        run; a message that reads or bulk-changes deliveries (LoadPending, Revive,
        Rebuild, Cancel) first writes the run before it, so it sees every write
        submitted before it. Appends commute with both: an outcome's event is
        always in an earlier transaction.
        """
        conn, db = self._writer.conn, self.db
        outcomes: list[Outcome] = []
        states: list[tuple[str, WebhookState]] = []
        for msg in todo:
            if isinstance(msg, Outcome):
                outcomes.append(msg)
            elif isinstance(msg, SaveState):
                states.append((msg.webhook, msg.state))
            elif isinstance(msg, Append):
                out.committed.extend(db.insert_events(conn, msg, now))
            else:
                self._flush(outcomes, states, out)
                self._one(msg, now, out)
        self._flush(outcomes, states, out)

    def _flush(
        self, outcomes: list[Outcome], states: list[tuple[str, WebhookState]], out: _Results
    ) -> None:
        """Write the run of outcomes and states so far, and start a new run."""
        conn, db = self._writer.conn, self.db
        if outcomes:
            out.lost |= db.record_outcomes(conn, outcomes, **self._fencing) or set()
            outcomes.clear()
        if states:
            out.lost |= db.save_states(conn, states, **self._fencing) or set()
            states.clear()

    def _apply(self, msg: Any, now: float, out: _Results) -> None:
        """Apply one message inside a savepoint, so a bad message spoils only itself."""
        writer = self._writer
        writer.savepoint()
        try:
            self._one(msg, now, out)
        except Exception as e:
            if writer.storage_error(e):
                raise
            writer.rollback_savepoint()
            log.error("journal dropped a bad %s: %s", type(msg).__name__, e)
            if isinstance(msg, Append):
                out.rejected.append((msg, f"journal refused the event: {e}"))
        writer.release()

    def _one(self, msg: Any, now: float, out: _Results) -> None:
        """Apply one message; what it answers goes into ``out``, run once committed."""
        conn, db = self._writer.conn, self.db
        if isinstance(msg, Append):
            out.committed.extend(db.insert_events(conn, msg, now))
        elif isinstance(msg, Outcome):
            self._flush([msg], [], out)
        elif isinstance(msg, SaveState):
            self._flush([], [(msg.webhook, msg.state)], out)
        elif isinstance(msg, LoadPending):
            found, wanted = db.pending_deliveries(
                conn, msg.webhook, msg.after_seq, msg.limit, msg.max_bytes, msg.seqs
            )
            queued = None  # shared: others add to the webhook's queue, so count it (SPEC §8)
            if self._dsn is not None and not msg.seqs:
                queued = db.open_counts(conn, msg.webhook)[0]
            loaded = Loaded(msg.webhook, found, msg.after_seq, msg.limit, wanted, msg.seqs,
                            queued=queued)  # fmt: skip
            out.after.append(functools.partial(msg.reply, loaded))
        elif isinstance(msg, Revive):
            revived = self._fenced(out, db.revive, conn, msg)
            loaded = Loaded(msg.webhook, (), 0, None, revived=revived or 0)
            out.after.append(functools.partial(msg.reply, loaded))
        elif isinstance(msg, Rebuild):
            state, queued, exhausted, newest = db.one_webhook(conn, msg.webhook)
            head = db.pending_deliveries(conn, msg.webhook, 0, msg.limit)[0]
            restored = Restored(state, head if queued else (), queued, exhausted)
            out.after.append(functools.partial(msg.reply, restored, newest))
        elif isinstance(msg, Cancel):
            n = self._fenced(out, db.cancel, conn, msg.webhook)
            if n is not None:
                out.after.append(functools.partial(_log_cancelled, msg.webhook, n))
            if msg.done is not None:
                out.after.append(functools.partial(msg.done, n))
        else:
            raise TypeError(f"not a journal message: {type(msg).__name__}")

    def _fenced(self, out: _Results, write: Callable[..., int], *args: Any) -> int | None:
        """One webhook's fenced write; None when its lease is gone (then in ``out.lost``)."""
        try:
            return write(*args, **self._fencing)
        except self._lease_lost as e:
            out.lost |= e.webhooks
            return None

    def _notify(self, out: _Results) -> None:
        """A shared journal: one notification for the commit, naming the webhooks it feeds."""
        if self._dsn is not None and out.committed:
            fed = {t for c in out.committed if c.seq is not None for t in c.item.targets}
            self.db.notify(self._writer.conn, fed)

    def _failed(self, work: list[Any], exc: BaseException) -> None:
        """Answer the Appends of a failed transaction; keep the rest for a retry.

        The backlog is bounded (see ``_bounded``): SaveStates coalesce per webhook,
        a success keeps only the response prefix the attempt log would keep.
        """
        metrics.JOURNAL_ERRORS.inc()
        self._failures += 1
        reason = f"journal write failed: {exc}"
        if self._failures == 1:
            log.error("%s; affected events are refused, outcomes kept and retried", reason)
        for msg in work:
            if isinstance(msg, Append):
                self._call(self._on_error, msg, reason)
        states = {m.webhook: m for m in work if isinstance(m, SaveState)}
        keep = [
            _lean(m) for m in work
            if not isinstance(m, Append)
            and (not isinstance(m, SaveState) or states[m.webhook] is m)
        ]  # fmt: skip
        self._backlog = _bounded(keep)
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(self._failures - 1, 16))
        self._retry_at = self._clock.monotonic() + delay

    def _rollback(self) -> None:
        """Roll back after a failure, without hiding the error being handled."""
        try:
            self._writer.rollback()
        except self._writer.errors as e:
            log.error("journal: ROLLBACK failed: %s", e)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("journal callback %s raised", getattr(fn, "__qualname__", fn))

    def _trim(self, periodic: bool = False) -> int:
        """Bring the attempt log under its ceiling, inside the caller's transaction.

        Every transaction calls it (one row read when under the ceiling), so the log is
        at most ``attempt_log_max`` after each commit; past ``TRIM_CHUNK`` rows the rest
        goes in purges from the next loop on. Only when nothing is left to delete or cut
        (the prefixes of each unfinished delivery's newest attempt exceed the ceiling)
        does it stay over, and then only the ``periodic`` purge tries again, since every
        try reads each row not yet cut. Returns how many attempt rows went or were cut.
        """
        ceiling = self.attempt_log_max
        if ceiling is None or (self._log_full == "over" and not periodic):
            return 0
        limit = PURGE_CHUNK if periodic else TRIM_CHUNK
        gone, size = self.db.trim_attempts(self._writer.conn, ceiling, limit)
        if gone == limit:
            self._next_purge = self._clock.monotonic()  # more to do: next loop, between batches
        full = "over" if size > ceiling else "trimming" if gone or self._log_full else ""
        if full != self._log_full:
            if full == "over":
                log.warning(
                    "attempt log over its ceiling (%d of %d bytes): only a prefix of the"
                    " newest attempt of each unfinished delivery is left", size, ceiling,
                )  # fmt: skip
            elif full == "trimming":
                log.info(
                    "attempt log at its ceiling of %d bytes: its oldest attempts go first",
                    ceiling,
                )
            self._log_full = full
        return gone

    def _purge(self) -> None:
        """Delete finished events older than retention, their rows, and old attempt rows."""
        writer = self._writer
        self._next_purge = self._clock.monotonic() + PURGE_INTERVAL
        cutoff = self._clock.time() - self._retention
        try:
            writer.begin()
            events, old = self.db.purge(writer.conn, cutoff, PURGE_CHUNK)
            old += self._trim(periodic=True)
            writer.commit()
        except writer.errors as e:
            self._rollback()
            metrics.JOURNAL_ERRORS.inc()
            log.error("journal purge failed: %s", e)
            return
        if self._checkpointer is not None:
            self._checkpointer.committed()
        if events or old:
            log.info("journal purged %d expired events and %d old attempt rows", events, old)
        if events == PURGE_CHUNK or old == PURGE_CHUNK:
            self._next_purge = self._clock.monotonic()  # more to do: next loop, between batches


def _durable(work: list[Any]) -> bool:
    """Whether a transaction of ``work`` must survive a power cut (``journal.sync: full``).

    What must is what was acked, and what an operator did. A lost outcome only means
    its delivery goes out again (at least once), so a transaction of nothing but
    outcomes and states commits without an fsync; the next durable commit makes it
    durable too (the WAL is one file, synced whole). At light load that halves the
    fsyncs: an event's and its outcome's.
    """
    return not all(type(m) in _BOOKKEEPING for m in work)


def _lean(msg: Any) -> Any:
    """A backlog message holding no more response text than the attempt log will keep."""
    if isinstance(msg, Outcome) and msg.result.ok:
        kept = store.kept_response(msg.result)
        if kept != msg.result.response:
            return replace(msg, result=replace(msg.result, response=kept))
    return msg


def _cost(msg: Any) -> int:
    """What a backlog message holds in memory, roughly."""
    if isinstance(msg, Outcome):
        return MESSAGE_COST + sys.getsizeof(msg.result.response)
    return MESSAGE_COST


def _bounded(keep: list[Any]) -> list[Any]:
    """The backlog within ``MAX_BACKLOG`` messages and ``MAX_BACKLOG_BYTES``.

    Past the bytes, the oldest Outcomes first lose their response text (the state
    change is kept); past either bound still, the oldest Outcomes go (their
    deliveries are simply sent again: at least once still holds). LoadPending,
    Revive, Cancel and SaveState are always kept.
    """
    total = sum(_cost(m) for m in keep)
    stripped = 0
    for i, msg in enumerate(keep):
        if total <= MAX_BACKLOG_BYTES:
            break
        if isinstance(msg, Outcome) and msg.result.response:
            keep[i] = replace(msg, result=replace(msg.result, response=""))
            total -= _cost(msg) - _cost(keep[i])
            stripped += 1
    if stripped:
        log.error(
            "journal backlog over %d bytes: dropped the response text of the %d oldest outcomes",
            MAX_BACKLOG_BYTES, stripped,
        )  # fmt: skip
    count = len(keep)
    drop = set()
    for msg in keep:
        if count - len(drop) <= MAX_BACKLOG and total <= MAX_BACKLOG_BYTES:
            break
        if isinstance(msg, Outcome):
            drop.add(id(msg))
            total -= _cost(msg)
    if drop:
        keep = [m for m in keep if id(m) not in drop]
        log.error("journal backlog full: dropped the %d oldest outcomes", len(drop))
    return keep


def _log_cancelled(webhook: str, n: int) -> None:
    log.warning("webhook %r cancelled: %d unfinished deliveries cancelled", webhook, n)
    if n:
        metrics.DELIVERIES.labels(webhook, "cancelled").inc(n)
