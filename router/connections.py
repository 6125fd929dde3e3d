"""HTTP connections under one deadline: the connection classes, their pools, the watchdog.

Every attempt of the delivery pool (router/delivery.py) runs on these. A connection
resolves and connects with the time its attempt has left (``router.guard``); one
urllib3 pool per origin keeps connections alive (scheme, host, port, and whether
they refuse private addresses); what every attempt of one webhook config shares is
worked out once (``Target``); and a watchdog thread cuts the socket of an attempt
that outlives its deadline, so an endpoint dripping bytes cannot hold a worker.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import parse_url

from router.clock import Clock
from router.config import WebhookConfig
from router.guard import Bounded, Resolver
from router.signing import HeaderTemplate

WATCH_TICK = 0.05  # seconds between watchdog checks while attempts run
STOP_GRACE = 0.5  # seconds a stop waits past its timeout for threads to end
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # never raw in a header (CR/LF split it)


def sendable(value: str) -> bool:
    """Whether ``value`` can go in an HTTP header as it is (Latin-1, no control characters)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not _CONTROL.search(value)


# --------------------------------------------------------------------------- connections

_current = threading.local()  # the running attempt's watchdog slot, per worker thread


class _Watched(Bounded):
    """Tell the watchdog which connection the current attempt uses, and what it is doing.

    The stage names the error of an attempt the watchdog cuts. A connection made
    just as the watchdog fired (its socket not yet visible to it) is cut here.
    """

    def deadline(self) -> float:
        return _current.slot.deadline

    def connect(self) -> None:
        slot = _attach(self, "connect")
        super().connect()  # type: ignore[misc]
        slot.stage = "send"
        if slot.fired:
            _cut(self)

    def request(self, *args, **kwargs) -> None:
        slot = _attach(self, "send")
        super().request(*args, **kwargs)  # type: ignore[misc]
        slot.stage = "wait"


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


def pool_classes(resolver: Resolver) -> dict[tuple[str, bool], type[HTTPConnectionPool]]:
    """Pool classes by (scheme, guarded) whose connections use ``resolver``.

    A guarded pool's connections refuse private hosts at connect time.
    """
    classes = {}
    for scheme, pool, conn in (
        ("http", HTTPConnectionPool, _HTTPConnection),
        ("https", HTTPSConnectionPool, _HTTPSConnection),
    ):
        for guarded in (False, True):
            attrs = {"guarded": guarded, "resolver": resolver}
            connection = type(conn.__name__, (conn,), attrs)
            classes[scheme, guarded] = type(pool.__name__, (pool,), {"ConnectionCls": connection})
    return classes


class LRU:
    """A bounded map, least recently used out first (``dispose`` is called on it)."""

    def __init__(self, size: int, dispose: Callable[[Any], None] = lambda value: None):
        self._size, self._dispose = size, dispose
        self._lock = threading.Lock()
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> Any:
        """Keep ``value`` unless another thread stored one first; return the one kept."""
        with self._lock:
            kept = self._items.setdefault(key, value)
            self._items.move_to_end(key)
            old = self._items.popitem(last=False)[1] if len(self._items) > self._size else None
        if old is not None:
            self._dispose(old)
        return kept

    def clear(self) -> None:
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for value in items:
            self._dispose(value)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how every attempt of one webhook config goes: worked out once per config.

    ``fault`` says why none of its requests can be built (no values: they may be
    secrets), checked once here rather than per attempt.
    """

    webhook: WebhookConfig  # held, so that its id (the cache key) stays its own
    origin: tuple[str, str, int, bool]  # scheme, host, port, guarded: one connection pool each
    path: str  # the request target: path and query
    timeout: Timeout
    headers: HeaderTemplate | None
    fault: str | None

    @classmethod
    def of(cls, webhook: WebhookConfig) -> Target:
        """Raises ``LocationValueError`` for a URL without a usable scheme or host."""
        url = parse_url(webhook.url)
        scheme = (url.scheme or "http").lower()
        if scheme not in ("http", "https"):
            raise u3.URLSchemeUnknown(scheme)
        if not url.host:
            raise u3.LocationValueError("no host")
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host.lower(), port, not webhook.allow_private_networks)
        headers, fault = None, None
        try:
            headers = HeaderTemplate(webhook)
        except Exception as exc:  # its message might hold key material: name the type only
            fault = f"signing failed ({type(exc).__name__})"
        else:
            bad = next((name for name, v in headers.static.items() if not sendable(v)), None)
            fault = bad and f"the value of header {bad} cannot go in an HTTP header"
        timeout = Timeout(connect=webhook.timeout, read=webhook.timeout)
        return cls(webhook, origin, url.request_uri, timeout, headers, fault)


# --------------------------------------------------------------------------- watchdog


# What a cut attempt was doing when the watchdog fired, as its error says it.
_CUT = {"connect": "connect timeout", "send": "timeout sending the request",
        "wait": "response too slow"}  # fmt: skip


@dataclass(slots=True)
class _Slot:
    deadline: float
    conn: HTTPConnection | None = None
    stage: str = "connect"  # a key of _CUT
    fired: bool = False


def _attach(conn: HTTPConnection, stage: str) -> _Slot:
    slot = _current.slot
    slot.conn, slot.stage = conn, stage
    return slot


class Watchdog:
    """Shut down the socket of any attempt still running after its hard deadline.

    Socket timeouts bound each read, not the whole response: a server dripping one
    header byte at a time would otherwise hold a worker indefinitely.
    """

    def __init__(self, clock: Clock):
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: dict[int, _Slot] = {}
        self._stopped = False
        self._idle = False  # asleep with nothing to watch: the next attempt must wake it
        # A daemon: it has nothing to finish and must never hold up the process exit.
        self._thread = threading.Thread(target=self._run, name="delivery-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread, cutting any attempt still running.

        Without the watchdog nothing bounds such an attempt, and a worker stuck in
        it (workers are not daemons) would hold up the process exit.
        """
        with self._cond:
            self._stopped = True
            for slot in self._slots.values():
                slot.fired = True
                _cut(slot.conn)
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(STOP_GRACE)

    def begin(self, deadline: float) -> None:
        slot = _current.slot = _Slot(deadline)
        with self._cond:
            self._slots[threading.get_ident()] = slot
            if self._idle:  # otherwise it looks again within WATCH_TICK
                self._idle = False
                self._cond.notify()

    def fired(self) -> bool:
        """Whether the current attempt has been cut already."""
        return _current.slot.fired

    def end(self) -> str | None:
        """Forget the current attempt; if the watchdog had cut it, the error that says so."""
        _current.slot = None
        with self._cond:
            slot = self._slots.pop(threading.get_ident())
        return _CUT[slot.stage] if slot.fired else None

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = self._clock.monotonic()
                for slot in self._slots.values():
                    if not slot.fired and slot.deadline <= now:
                        slot.fired = True
                        _cut(slot.conn)
                self._idle = not self._slots
                self._cond.wait(None if self._idle else WATCH_TICK)


def _cut(conn: HTTPConnection | None) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        # The plain socket method: SSLSocket.shutdown would drop TLS state under a reader.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
