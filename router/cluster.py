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
  is given up (``lost``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from router import pgstore
from router.config import WebhookConfig
from router.leases import LeaseKeeper

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.5  # seconds between looks for deliveries no notification told of
RECONNECT = 1.0  # seconds before listening again after the connection failed

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
    ):
        self.node = node
        self._dsn = dsn
        self._dispatcher: Any = None  # start()
        self._configs = configs  # the running config's webhooks, by name
        self._on_webhooks = on_webhooks  # another daemon changed the API-made webhooks
        self.keeper = LeaseKeeper(
            lambda: pgstore.connect(dsn), node, lease, self._gained, self._lost
        )
        self.fence = Fence(self.keeper)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = 0  # the newest event seq the poll has looked at

    def start(self, dispatcher: Any, webhooks: Iterable[str]) -> None:
        """Take a first share now (so that READY means delivering), then keep at it."""
        self._dispatcher = dispatcher
        self.keeper.want(webhooks)
        self.keeper.step()
        self.keeper.start()
        self._thread = threading.Thread(target=self._listen, name="cluster-listen", daemon=True)
        self._thread.start()

    def want(self, webhooks: Iterable[str]) -> None:
        """A reload's webhooks: the next round takes, keeps and lets go by them."""
        self.keeper.want(webhooks)

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
                    self._poll(conn)  # what was committed before we listened
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=POLL_INTERVAL):  # one per commit
                            if n.channel == pgstore.WEBHOOKS_CHANNEL:
                                self._on_webhooks()
                            else:
                                self._poke(pgstore.woken(n.payload))
                        self._poll(conn)
            except Exception as e:  # the database went away: listen again in a while
                log.warning("cluster: listening for new deliveries failed (%s)", _reason(e))
                self._stop.wait(RECONNECT)

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


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
