"""Several daemons on one PostgreSQL (SPEC §8): which webhooks run here, and their wake-ups.

``Cluster`` ties three things to the dispatcher; the supervisors, the filter and the
delivery path do not know it is there:

- the lease keeper's gains and losses (router/leases.py): a webhook gained starts
  from the database (its queue, retry state and health, as a reload's added webhook
  does), one lost stops at once;
- wake-ups: every commit that adds deliveries sends one notification
  (``pgstore.notify``); a thread of ours listens, and pokes the webhooks held here
  that it names, so they load what other daemons journaled for them. Every
  ``POLL_INTERVAL`` it also asks the database which held webhooks have deliveries
  newer than the last it asked about: a lost notification delays, never loses;
- the API-made webhooks: a change made through any daemon's API is announced
  (``pgstore.WEBHOOKS_CHANNEL``) and every daemon applies it at once;
- fencing: the journal writes each webhook's state with the lease this daemon holds
  (``fence``); a write the database refuses means the lease is gone, and the webhook
  is given up (``lost``);
- control commands for a webhook another daemon holds (``forward``): filed in the
  database for the holder, whose listener takes them and runs each on a thread of its
  own (``serve``, at most ``SERVING`` at once), and answered there; the asker waits for
  the answer within the command's own wait, and gives up at once, with an error saying
  so, when the holder's lease moves or runs out first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import psycopg

from router import RouterError, pgstore
from router.config import WebhookConfig
from router.leases import LeaseKeeper

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.5  # seconds between looks for deliveries no notification told of
RECONNECT = 1.0  # seconds before listening again after the connection failed
ANSWER_CHECK = 0.5  # seconds between an asker's looks at its request and the holder's lease
ANSWER_MARGIN = 2.0  # seconds an asker waits past the command's own wait (the round trips)
SERVING = 8  # requests from other daemons run here at once (as control.MAX_REQUESTS)

_NEWER = """
SELECT (SELECT coalesce(max(seq), 0) FROM events),
       array(SELECT DISTINCT webhook FROM deliveries
             WHERE state = 'pending' AND seq > %s AND webhook = ANY(%s))
"""


class Fence(Mapping[str, tuple[str, int]]):
    """The leases held here, as ``pgstore``'s fence: webhook -> (this node, epoch)."""

    def __init__(self, keeper: LeaseKeeper):
        self._keeper = keeper

    def __getitem__(self, webhook: str) -> tuple[str, int]:
        epoch = self._keeper.held.get(webhook)
        if epoch is None:
            raise KeyError(webhook)
        return self._keeper.node, epoch

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keeper.held))

    def __len__(self) -> int:
        return len(self._keeper.held)


class Cluster:
    """This daemon's part in a cluster: its leases, its wake-ups, its fence."""

    def __init__(
        self,
        dsn: str,
        node: str,
        lease: float,
        configs: Callable[[], Mapping[str, WebhookConfig]],
        on_webhooks: Callable[[], None],
        serve: Callable[[pgstore.Request], Any],
    ):
        self.node = node
        self._dsn = dsn
        self._dispatcher: Any = None  # start()
        self._configs = configs  # the running config's webhooks, by name
        self._on_webhooks = on_webhooks  # another daemon changed the API-made webhooks
        self._serve = serve  # runs a command another daemon asked of this one; its result
        self._slots = threading.BoundedSemaphore(SERVING)
        self.keeper = LeaseKeeper(
            lambda: pgstore.connect(dsn), node, lease, self._gained, self._lost
        )
        self.fence = Fence(self.keeper)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = 0  # the newest event seq the poll has looked at

    def start(self, dispatcher: Any, webhooks: Iterable[str]) -> None:
        """Take a first share now (so that READY means delivering), then keep at it.

        Raises ``RouterError`` when another live daemon runs as this node."""
        self._dispatcher = dispatcher
        self.keeper.want(webhooks)
        self.keeper.claim()
        self.keeper.step()
        self.keeper.start()
        self._thread = threading.Thread(target=self._listen, name="cluster-listen", daemon=True)
        self._thread.start()

    def want(self, webhooks: Iterable[str]) -> None:
        """A reload's webhooks (or the API's): a round now takes, keeps and lets go by them,
        so that an added webhook within this daemon's share runs when the reload ends. One
        removed and added again is still held here: it starts again now."""
        self.keeper.want(webhooks)
        if self._dispatcher is not None:
            self._gained(dict(self.keeper.held))  # those with a running handle are skipped
            self.keeper.step()

    def stop(self) -> None:
        """Give every lease up (the supervisors stop first), so others take them now."""
        self._stop.set()
        self.keeper.stop()
        if self._thread is not None:
            self._thread.join(POLL_INTERVAL + 5)

    def lost(self, webhooks: Iterable[str]) -> None:
        """The journal found these leases gone (a fenced write matched nothing)."""
        self.keeper.give_up(list(webhooks))

    def owner(self, webhooks: Iterable[str]) -> dict[str, str]:
        return self.keeper.owners(webhooks)

    # ------------------------------------------------------------------ the keeper's news

    def _gained(self, taken: dict[str, int]) -> None:
        configs = self._configs()
        self._dispatcher.acquire([configs[w] for w in sorted(taken) if w in configs])

    def _lost(self, webhooks: list[str]) -> None:
        self._dispatcher.release(webhooks)

    # ------------------------------------------------------------------ wake-ups

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with pgstore.connect(self._dsn) as conn:
                    conn.execute(f"LISTEN {pgstore.NOTIFY_CHANNEL}")
                    conn.execute(f"LISTEN {pgstore.WEBHOOKS_CHANNEL}")
                    conn.execute(f"LISTEN {pgstore.REQUESTS_CHANNEL}")
                    self._poll(conn)  # what was committed before we listened
                    while not self._stop.is_set():
                        self._take(conn)  # requests for this daemon, told of or not
                        self._notified(conn)
                        self._poll(conn)
            except Exception as e:  # the database went away: listen again in a while
                log.warning("cluster: listening for new deliveries failed (%s)", _reason(e))
                self._stop.wait(RECONNECT)

    def _notified(self, conn: Any) -> None:
        """Act on notifications for ``POLL_INTERVAL``, or until a request for this daemon
        comes (taken next, on this connection, which the notifications hold meanwhile).

        They come a batch at a time (``stop_after``): leaving in the middle of one would
        lose the rest of it.
        """
        until = time.monotonic() + POLL_INTERVAL
        while (left := until - time.monotonic()) > 0:
            asked = False
            for n in conn.notifies(timeout=left, stop_after=1):  # one per commit
                if n.channel == pgstore.REQUESTS_CHANNEL:
                    asked = asked or n.payload == self.node
                elif n.channel == pgstore.WEBHOOKS_CHANNEL:
                    self._on_webhooks()
                else:
                    self._poke(pgstore.woken(n.payload))
            if asked:
                return

    def _poll(self, conn: Any) -> None:
        """Poke the held webhooks with deliveries newer than the last poll's newest event."""
        held = list(self.keeper.held)
        newest, names = conn.execute(_NEWER, (self._cursor, held)).fetchone()
        self._cursor = newest
        if names:
            self._poke(set(names))

    def _poke(self, webhooks: Iterable[str] | None) -> None:
        """``webhooks`` (None: all) may have new deliveries in the journal: look."""
        held = self.keeper.held
        names = list(held) if webhooks is None else [w for w in webhooks if w in held]
        self._dispatcher.poke(names)

    # ------------------------------------------------------------------ control requests

    def forward(self, webhook: str, command: str, arguments: dict, wait: float) -> Any:
        """``command`` run by the daemon that holds ``webhook``'s lease: its result, as if here.

        ``wait`` is the command's own (the holder's); the asker waits ``ANSWER_MARGIN``
        longer. Raises ``RouterError`` with the holder's error, or when no daemon holds the
        lease, none answers in time, or the holder's lease moves or runs out first.
        """
        holder = self.owner([webhook]).get(webhook)
        if holder is None or holder == self.node:  # free, or being taken here right now
            raise RouterError(
                f"webhook '{webhook}' is delivered by no daemon at the moment (its lease is"
                " changing hands): try again in a few seconds"
            )
        wait += ANSWER_MARGIN
        try:
            with pgstore.connect(self._dsn) as conn:
                conn.execute(f"LISTEN {pgstore.ANSWERS_CHANNEL}")  # before the holder can answer
                with conn.transaction():
                    request = pgstore.put_request(
                        conn, webhook, holder, self.node, command, arguments, wait
                    )
                try:
                    answer, why = self._answer(conn, request, holder, wait)
                finally:
                    taken = pgstore.drop_request(conn, request)
        except psycopg.Error as e:
            raise RouterError(
                f"webhook '{webhook}': {command} could not be asked of daemon {holder}"
                f" ({_reason(e)}); look at status, then try again"
            ) from None
        if answer is None:
            done = "it may have been done" if taken else "it was not done"
            log.warning("webhook %s: %s asked of daemon %s: %s; %s",
                        webhook, command, holder, why, done)  # fmt: skip
            then = "look at status, then ask again" if taken else "ask again"
            raise RouterError(f"webhook '{webhook}': {command} on daemon {holder}: {why}; {done}:"
                              f" {then}")  # fmt: skip
        if not answer.get("ok"):
            raise RouterError(str(answer.get("error")))
        return answer.get("result")

    def _answer(self, conn: Any, request: int, holder: str, wait: float) -> tuple[Any, str]:
        """The holder's answer to ``request``, or None and why none came: not within
        ``wait``, or the holder stopped holding the webhook first (moved, ran out)."""
        deadline = time.monotonic() + wait
        while True:
            state = pgstore.request_state(conn, request)
            if state is None:
                return None, "its request was deleted before it answered"
            if state.answer is not None:
                return state.answer, ""
            if state.holder != holder:
                now = f"daemon {state.holder}" if state.holder else "no daemon"
                return None, (f"it stopped delivering the webhook before it answered ({now}"
                              " delivers it now)")  # fmt: skip
            left = deadline - time.monotonic()
            if left <= 0:
                return None, f"no answer within {wait:.0f}s"
            for _ in conn.notifies(timeout=min(ANSWER_CHECK, left), stop_after=1):
                pass  # an answer (maybe another's): look again

    def _take(self, conn: Any) -> None:
        """Take the requests filed for this daemon, as many as may run now, each on a
        thread of its own; the others wait for a free slot (the next round)."""
        free = 0
        while free < SERVING and self._slots.acquire(blocking=False):
            free += 1
        requests: list[pgstore.Request] = []
        try:
            if free:
                requests = pgstore.take_requests(conn, self.node, free)
        finally:
            for _ in range(free - len(requests)):
                self._slots.release()
        for r in requests:
            threading.Thread(target=self._run, args=(r,), name="cluster-request", daemon=True
                             ).start()  # fmt: skip

    def _run(self, request: pgstore.Request) -> None:
        """Run one request another daemon filed, and write the answer it waits for."""
        r = request
        try:
            try:
                answer = {"ok": True, "result": self._serve(r)}
            except RouterError as e:
                answer = {"ok": False, "error": str(e)}
            except Exception:
                log.exception("webhook %s: %s asked by daemon %s failed", r.webhook, r.command,
                              r.asker)  # fmt: skip
                error = f"{r.command} failed inside daemon {self.node} (see its log)"
                answer = {"ok": False, "error": error}
            with pgstore.connect(self._dsn) as conn, conn.transaction():
                pgstore.answer_request(conn, r.id, answer)
        except Exception as e:  # its asker gives up on its own
            log.warning("webhook %s: the answer to %s asked by daemon %s was not written (%s)",
                        r.webhook, r.command, r.asker, _reason(e))  # fmt: skip
        finally:
            self._slots.release()


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
