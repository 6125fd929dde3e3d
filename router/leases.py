"""Leases (SPEC §8): which daemon delivers which webhook, judged by the database's clock.

One row per webhook in ``leases`` (owner, epoch, expiry) and one per daemon in
``nodes`` (its heartbeat): tables of ``router.pgstore``'s schema. A ``LeaseKeeper``
thread runs a *round* every third of ``lease``, one transaction: it heartbeats, renews
the leases it holds, lets go of those beyond its fair share (``ceil(webhooks / live
daemons)``) and takes free or expired ones up to that share, each take bumping the
lease's epoch. A daemon whose heartbeat is older than ``lease`` is not counted as live,
so the survivors' shares grow and they take its expired leases; a daemon that joins
makes every share smaller, and the others let go of their extras for it to take.

Expiries are the database's (``now()``); the daemon's own clock only measures how
long it may trust what it holds: until the monotonic time it *sent* the last round
that succeeded, plus ``lease``, minus ``margin``. The database's expiry is later than
that, whatever the two clocks say. Past it, or when a round fails, every lease is
given up at once (``on_lost``), before the next attempt goes out. ``trust``
(``router.trust``) carries that time to the senders, which check it before each POST,
with a generation that every loss bumps: a daemon paused past its lease (SIGSTOP, a
long GC pause, a frozen VM) wakes with attempts that no longer go out.

A node name is one daemon's: the keeper's connection holds an advisory lock on it
(``claim``), taken before its first round and again on every reconnection. A second
daemon with the same ``node`` (two on one host keep the host name) is refused while
the first is live; one whose heartbeat is older than ``lease`` (it died with its
machine, and the server still keeps its connection) has its connection ended.

Callbacks run on the keeper's thread: ``on_gained({webhook: epoch})`` after the
commit that took them, ``on_lost([webhook, ...])`` before the commit that lets them
go (the supervisors stop first, then the lease is free for another daemon).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from router import RouterError, metrics
from router.pgstore import forget_webhooks, hold_off_writers
from router.trust import Trust

log = logging.getLogger(__name__)

WANTED_EVERY = 60.0  # seconds between marks of the webhooks this daemon's config has
FORGOTTEN_AFTER = 600.0  # seconds unmarked by every daemon: removed everywhere (then swept)
CLAIM_WAIT = 3.0  # seconds a claim waits for the name: a daemon just killed still holds it
CLAIM_CHECK = 0.1  # seconds between tries meanwhile

_HEARTBEAT = """
INSERT INTO nodes (name, started_at, heartbeat_at) VALUES (%s, now(), now())
ON CONFLICT (name) DO UPDATE SET heartbeat_at = now()
"""
_LIVE = "SELECT count(*) FROM nodes WHERE heartbeat_at > now() - make_interval(secs => %s)"
# A row for each webhook wanted, its mark refreshed when older than ``fresh`` seconds.
_WANT = """
INSERT INTO leases (webhook) SELECT unnest(%(webhooks)s::text[])
ON CONFLICT (webhook) DO UPDATE SET wanted_at = now()
WHERE leases.wanted_at < now() - make_interval(secs => %(fresh)s)
"""
_RENEW = """
UPDATE leases SET expires_at = now() + make_interval(secs => %s)
WHERE owner = %s AND webhook = ANY(%s) RETURNING webhook, epoch
"""
_RELEASE = """
UPDATE leases SET owner = NULL, expires_at = '-infinity'
WHERE owner = %s AND webhook = ANY(%s)
"""
# Free, expired, or this node's from before (a restart, a lapse): not held here, so
# taken again with a new epoch that fences out whatever was written under the old one.
_TAKE = """
UPDATE leases SET owner = %(node)s, epoch = epoch + 1,
    expires_at = now() + make_interval(secs => %(lease)s)
WHERE webhook IN (
    SELECT webhook FROM leases
    WHERE webhook = ANY(%(wanted)s) AND NOT webhook = ANY(%(held)s)
      AND (owner IS NULL OR owner = %(node)s OR expires_at < now())
    ORDER BY webhook LIMIT %(need)s FOR UPDATE SKIP LOCKED)
RETURNING webhook, epoch
"""
# A node name's advisory lock: this constant and the name's hash (objsubid 2 in pg_locks).
_NODE_LOCK = 0x57484B52
_CLAIM = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
_END_STALE = """
SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
  AND l.classid = %(key)s::oid AND l.objid = (hashtext(%(node)s)::bigint & 4294967295)::oid
  AND NOT EXISTS (SELECT 1 FROM nodes WHERE name = %(node)s
                  AND heartbeat_at > now() - make_interval(secs => %(lease)s))
"""
_OWNERS = "SELECT webhook, owner FROM leases WHERE expires_at > now() AND webhook = ANY(%s)"

Gained = Callable[[dict[str, int]], None]
Lost = Callable[[list[str]], None]


def fair_share(webhooks: int, live: int) -> int:
    """How many leases one of ``live`` daemons holds at most."""
    return math.ceil(webhooks / max(live, 1))


class LeaseKeeper:
    """This daemon's leases: a thread of its own renews, takes and gives them up."""

    def __init__(
        self,
        connect: Callable[[], Any],
        node: str,
        lease: float,
        on_gained: Gained,
        on_lost: Lost,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.node = node
        self.lease = lease
        self.margin = lease / 5  # trust a lease that long less than the database holds it
        self.period = lease / 3  # a round this often: two may fail before a lease runs out
        self._connect = connect
        self._conn: Any = None
        self._on_gained, self._on_lost = on_gained, on_lost
        self._monotonic = monotonic
        self._lock = threading.Lock()  # the webhooks wanted, changed by reloads
        self._wanted: tuple[str, ...] = ()
        self._added: set[str] = set()  # rows known to exist in ``leases``, marked
        self._marked_at: float | None = None  # when every wanted row was last marked
        self.wanted_every, self.forgotten_after = WANTED_EVERY, FORGOTTEN_AFTER
        self.held: dict[str, int] = {}  # webhook -> epoch; changed under _holding only
        self._holding = threading.RLock()  # the keeper's rounds, and give_up from elsewhere
        self.trust = Trust(monotonic=monotonic)  # what the senders check before each POST
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ for the daemon

    def want(self, webhooks: Iterable[str]) -> None:
        """The webhooks the config has now; the next round acts on them."""
        with self._lock:
            self._wanted = tuple(sorted(set(webhooks)))

    def epoch(self, webhook: str) -> int | None:
        return self.held.get(webhook)

    def give_up(self, webhooks: list[str]) -> None:
        """Another daemon holds these now (a fenced write matched nothing): stop them."""
        with self._holding:
            self._give_up(webhooks, lost=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Give every lease up, so that others take them now rather than after ``lease``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._holding:
            self._give_up(list(self.held), release=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def claim(self) -> None:
        """Connect, holding this node's name; raises ``RouterError`` when another live
        daemon runs as it. Rounds call it after their connection was lost."""
        if self._conn is not None:
            return
        conn = self._connect()
        try:
            with conn.transaction():
                if not self._claim(conn):
                    raise RouterError(
                        f"another webhook-router runs as node '{self.node}' on this database:"
                        " give each daemon its own `node` in the config"
                    )
                conn.execute(_HEARTBEAT, (self.node,))  # fresh: nobody takes it as stale
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _claim(self, conn: Any) -> bool:
        """Take the name's lock, waiting ``CLAIM_WAIT`` for a holder whose daemon was just
        killed (the server ends its connection within moments) or ending a stale one's."""
        deadline = time.monotonic() + CLAIM_WAIT
        args = {"key": _NODE_LOCK, "node": self.node, "lease": self.lease}
        while True:
            (ok,) = conn.execute(_CLAIM, (_NODE_LOCK, self.node)).fetchone()
            if ok:
                return True
            if conn.execute(_END_STALE, args).fetchall():
                log.warning("leases: ended the connection of a daemon that ran as node %s and"
                            " stopped its heartbeat", self.node)  # fmt: skip
            if time.monotonic() >= deadline:
                return False
            time.sleep(CLAIM_CHECK)

    def owners(self, webhooks: Iterable[str]) -> dict[str, str]:
        """Who holds each webhook's unexpired lease, by the database (others: no owner)."""
        with self._connect() as conn:
            rows = conn.execute(_OWNERS, (list(webhooks),)).fetchall()
        return dict(rows)

    # ------------------------------------------------------------------ the rounds

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._wait()

    def step(self) -> bool:
        """One round; when it fails (the database is gone, slow or refusing), every lease
        is given up at once. True when the round succeeded."""
        try:
            with self._holding:
                self.round()
            return True
        except Exception as e:
            log.error("leases: the round failed (%s); giving up every lease", _reason(e))
            with self._holding:
                self._give_up(list(self.held), lost=True)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return False

    def _wait(self) -> None:
        """Sleep until the next round, waking to give up leases no longer trusted."""
        next_round = self._monotonic() + self.period
        while not self._stop.is_set():
            self.check()
            now = self._monotonic()
            if now >= next_round:
                return
            until = min(next_round, self.trust.until) if self.held else next_round
            self._stop.wait(max(0.0, until - now))

    def check(self) -> None:
        """Give up every lease if the last successful round is too long ago to trust them."""
        with self._holding:
            if self.held and self._monotonic() >= self.trust.until:
                log.error("leases: no successful round since the leases ran out; giving up")
                self._give_up(list(self.held), lost=True)

    def round(self) -> None:
        """One transaction: heartbeat, renew, let go beyond the fair share, take up to it."""
        self.claim()
        conn = self._conn
        sent = self._monotonic()
        with self._lock:
            wanted = self._wanted
        with conn.transaction():
            conn.execute(_HEARTBEAT, (self.node,))
            mark = self._marked_at is None or sent - self._marked_at >= self.wanted_every
            if new := list(wanted) if mark else [w for w in wanted if w not in self._added]:
                conn.execute(_WANT, {"webhooks": new, "fresh": self.wanted_every / 2})
            (live,) = conn.execute(_LIVE, (self.lease,)).fetchone()
            renewed = dict(
                conn.execute(_RENEW, (self.lease, self.node, list(self.held))).fetchall()
            )
            gone = [w for w, epoch in self.held.items() if renewed.get(w) != epoch]
            if gone:
                log.warning("leases: lost %d to other daemons: %s", len(gone), _some(gone))
            wanted_set = set(wanted)
            share = fair_share(len(wanted), live)
            keep = sorted(w for w in renewed if w in wanted_set and w not in gone)
            let_go = [w for w in renewed if w not in wanted_set] + keep[share:]
            self._give_up(gone, lost=True)
            self._give_up(let_go)
            if let_go:
                conn.execute(_RELEASE, (self.node, let_go))
            taken: dict[str, int] = {}
            if (need := share - len(keep[:share])) > 0:
                hold_off_writers(conn)  # a write that checked the old lease commits first
                args = {"node": self.node, "lease": self.lease, "wanted": list(wanted),
                        "held": list(self.held), "need": need}  # fmt: skip
                rows = conn.execute(_TAKE, args).fetchall()
                taken = dict(rows)
            if mark:
                self._sweep(conn, wanted, hold_off=need <= 0)
        self._added.update(new)
        if mark:
            self._marked_at = sent
        self.trust.renewed(sent + self.lease - self.margin)
        if taken:
            self.held.update(taken)
            log.info("leases: took %d: %s", len(taken), _some(sorted(taken)))
            self._on_gained(taken)

    def _sweep(self, conn: Any, wanted: Iterable[str], hold_off: bool) -> None:
        """Cancel the deliveries of webhooks that every daemon's config has lost (removed
        while no daemon held them, or journaled by a daemon not yet reloaded)."""
        if hold_off:
            hold_off_writers(conn)
        for webhook, n in sorted(forget_webhooks(conn, wanted, self.forgotten_after).items()):
            log.warning("webhook %r is in no daemon's config any more: %d deliveries cancelled",
                        webhook, n)  # fmt: skip
            metrics.DELIVERIES.labels(webhook, "cancelled").inc(n)

    def _give_up(self, webhooks: list[str], release: bool = False, lost: bool = False) -> None:
        """Stop delivering ``webhooks`` now; with ``release``, free their leases too.

        ``lost``: taken from this daemon, or no longer trusted, rather than let go. Then
        no attempt handed over so far goes out any more, whichever webhook it is for.
        """
        gone = [w for w in webhooks if self.held.pop(w, None) is not None]
        if not gone:
            return
        if lost:
            self.trust.lose()
        self._on_lost(gone)
        if release:
            try:
                with self._connect() as conn:
                    conn.execute(_RELEASE, (self.node, gone))
            except Exception as e:  # they expire after `lease` instead
                log.warning("leases: could not release %d leases (%s)", len(gone), _reason(e))


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _reason(e: BaseException) -> str:
    """One line about a database error, without the connection string."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
