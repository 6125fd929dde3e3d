"""The delivery pool: worker threads that sign and send one HTTP attempt each and report facts.

The pool never decides about retries; it hands an ``AttemptResult`` to the
supervisor's callback. All workers share one urllib3 connection pool (keep-alive)
per origin: scheme, host, port, and whether its connections refuse private
addresses at connect time (SPEC §5; the check is ``router.guard``). What every
attempt of a webhook config shares (origin, path, timeout, static headers from
``router.signing``) is worked out once per config, not per attempt.

Each attempt has one hard deadline for resolving, connecting, sending and reading:
the connections and the watchdog that enforce it are ``router.connections``.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from functools import partial

from urllib3 import HTTPConnectionPool
from urllib3 import exceptions as u3

from router.clock import Clock
from router.config import WebhookConfig
from router.connections import LRU, STOP_GRACE, Target, Watchdog, pool_classes, sendable
from router.guard import RESOLVER_THREADS, ConnectError, Lookup, Resolver
from router.messages import Attempt, AttemptResult
from router.retry import RETRY_AFTER_STATUSES
from router.trust import Trust

log = logging.getLogger(__name__)

RESPONSE_CAP = 64 * 1024  # bytes of response body kept
HARD_DEADLINE = 1.5  # the watchdog cuts an attempt at this multiple of its timeout
LEASE_GONE = "not sent: this daemon's lease on the webhook ran out (SPEC §8)"
NUM_POOLS = 256  # origins whose keep-alive connections are cached
NUM_TARGETS = 4096  # webhook configs whose URL and static headers are kept worked out

Reply = Callable[[AttemptResult], None]


# --------------------------------------------------------------------------- the pool


class DeliveryPool:
    """A bounded set of worker threads sending attempts; results go to each job's callback."""

    def __init__(
        self,
        workers: int = 64,
        clock: Clock | None = None,
        resolve: Lookup = socket.getaddrinfo,
        resolver_threads: int = RESOLVER_THREADS,
        trust: Trust | None = None,
    ):
        """``resolve`` stands in for ``socket.getaddrinfo`` (tests make names hang or fan out);
        ``trust`` is what the daemon's leases allow (SPEC §8), None for one daemon alone."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._clock = clock or Clock()
        self._trust = trust
        self._resolver = resolver = Resolver(resolve, resolver_threads, self._clock)
        self._queue: queue.SimpleQueue[tuple[Attempt, Reply] | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # orders _stopping against workers starting attempts
        self._busy: set[threading.Thread] = set()  # workers inside an attempt
        self._watchdog = Watchdog(self._clock)
        self.pool_classes = pool_classes(resolver)
        self._maxsize = workers  # keep-alive connections per origin: one per worker at most
        self._origins = LRU(NUM_POOLS, lambda pool: pool.close())
        self._targets = LRU(NUM_TARGETS)
        self._threads = [
            threading.Thread(target=self._work, name=f"delivery-{n}", daemon=False)
            for n in range(1, workers + 1)
        ]

    def start(self) -> None:
        self._watchdog.start()
        for thread in self._threads:
            thread.start()

    def ready(self, timeout: float) -> None:
        """The workers can send once started (``router.senders`` waits for its processes)."""

    def submit(self, attempt: Attempt, reply: Reply) -> None:
        """Queue one attempt; ``reply(result)`` is called later from a worker thread."""
        if self._stopping.is_set():
            log.debug(
                "pool stopping: %s event %s not sent", attempt.webhook.name, attempt.payload.id
            )
            return
        self._queue.put((attempt, reply))

    def stop(self, timeout: float) -> None:
        """Let running attempts finish for up to ``timeout`` seconds; drop queued ones.

        Dropped attempts get no reply: their deliveries stay pending in the journal
        and go out on the next start. Idle workers end at once, even when
        ``timeout`` is already used up; attempts still running after it are cut.
        """
        with self._lock:
            self._stopping.set()  # from here on no worker starts an attempt
        dropped = 0
        with contextlib.suppress(queue.Empty):
            while True:
                dropped += self._queue.get_nowait() is not None
        for _ in self._threads:
            self._queue.put(None)  # wakes each idle worker to end
        started = [thread for thread in self._threads if thread.ident is not None]
        deadline = time.monotonic() + timeout
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        grace = time.monotonic() + STOP_GRACE
        for thread in started:
            if thread.is_alive() and not self._is_busy(thread):
                thread.join(max(0.0, grace - time.monotonic()))  # its sentinel is waiting
        with self._lock:
            running = len(self._busy)
        if running:
            log.warning(
                "delivery pool stopped with %d attempts still running; cutting them", running
            )
        self._watchdog.stop()
        self._resolver.stop()
        self._origins.clear()
        log.info("delivery pool stopped (%d queued attempts left for the next start)", dropped)

    def _is_busy(self, thread: threading.Thread) -> bool:
        with self._lock:
            return thread in self._busy

    def _work(self) -> None:
        me = threading.current_thread()
        while (job := self._queue.get()) is not None:
            with self._lock:
                if self._stopping.is_set():
                    continue  # queued, never started: the journal keeps it pending
                self._busy.add(me)
            try:
                self._attempt(*job)
            finally:
                with self._lock:
                    self._busy.discard(me)

    def _attempt(self, attempt: Attempt, reply: Reply) -> None:
        """Send one attempt and hand over its result; no exception may end the worker."""
        try:
            result = self._send(attempt)
        except Exception as exc:
            log.exception("%s: event %s: attempt crashed", attempt.webhook.name, attempt.payload.id)
            error = f"internal error: the attempt crashed ({type(exc).__name__})"
            result = _result(attempt, self._clock.time(), 0.0, error=error, router_fault=True)
        try:
            reply(result)
        except Exception:
            log.exception("%s: event %s: reply callback failed", result.webhook, attempt.payload.id)

    def _allowed(self, generation: int) -> bool:
        """Do this daemon's leases still let an attempt of ``generation`` go out?"""
        return self._trust is not None and self._trust.allows(generation)

    def _send(self, attempt: Attempt) -> AttemptResult:
        """One POST: sign, send, read at most 64 KiB, describe what happened."""
        webhook = attempt.webhook
        started_at = self._clock.time()
        if attempt.lease_generation and not self._allowed(attempt.lease_generation):
            return _result(attempt, started_at, 0.0, error=LEASE_GONE, router_fault=True)
        try:
            target = self._target(webhook)
            body, headers = _request(target, attempt, int(started_at))
        except u3.LocationValueError:  # the config's to fix, as a wrong address would be
            return _result(attempt, started_at, 0.0, error="invalid URL")
        except _Unbuildable as exc:
            error = f"internal error: cannot build the request: {exc}"
            return _result(attempt, started_at, 0.0, error=error, router_fault=True)
        start = self._clock.monotonic()
        response, data, complete, failure = None, b"", False, None
        self._watchdog.begin(start + webhook.timeout * HARD_DEADLINE)
        try:
            response = self._origin(target.origin).urlopen(
                "POST", target.path, body=body, headers=headers, timeout=target.timeout,
                retries=False, redirect=False, assert_same_host=False, preload_content=False,
            )  # fmt: skip
            if self._watchdog.fired():
                raise _TooSlow  # the headers were cut short: not an answer
            data, complete = self._read(response, start + webhook.timeout)
        except Exception as exc:
            failure = exc
        finally:
            cut = self._watchdog.end()
        if response is not None:
            if not complete or cut:  # never hand a half-read connection to the next attempt
                response.close()
            response.release_conn()
        result = partial(_result, attempt, started_at, self._clock.monotonic() - start)
        if failure is not None:
            if cut and not isinstance(failure, ConnectError):  # its own reason is exact
                return result(error=cut)
            error, ours = _describe(failure)
            return result(error=error, router_fault=ours)
        status = response.status
        if 200 <= status < 300:
            return result(status=status, response=data[:RESPONSE_CAP], ok=True)
        retry_after = None
        if status in RETRY_AFTER_STATUSES:
            retry_after = _retry_after(response.headers.get("Retry-After"), self._clock.time())
        error = (
            f"redirect not followed (HTTP {status})" if 300 <= status < 400 else f"HTTP {status}"
        )
        return result(
            status=status, response=data[:RESPONSE_CAP], error=error, retry_after=retry_after
        )

    def _target(self, webhook: WebhookConfig) -> Target:
        """The worked-out target of ``webhook``, kept while that very config is in use.

        Keyed by identity: hashing a config per attempt would cost more than it saves.
        The entry holds the config, so no other config can have its id while it is cached.
        """
        target = self._targets.get(id(webhook))
        if target is None:
            target = self._targets.put(id(webhook), Target.of(webhook))
        return target

    def _origin(self, origin: tuple[str, str, int, bool]) -> HTTPConnectionPool:
        """The keep-alive connections of one (scheme, host, port, guarded) origin."""
        pool = self._origins.get(origin)
        if pool is None:
            scheme, host, port, guarded = origin
            pool = self.pool_classes[scheme, guarded](
                host, port, maxsize=self._maxsize, block=False
            )
            pool = self._origins.put(origin, pool)
        return pool

    def _read(self, response, deadline: float) -> tuple[bytes, bool]:
        """Read up to the cap plus one byte; complete means the body ended within the deadline.

        ``read1`` returns what one socket read brings, so the deadline is checked
        between chunks even when the server drips.
        """
        chunks, size = [], 0
        try:
            while size <= RESPONSE_CAP:
                if self._clock.monotonic() > deadline:
                    return b"".join(chunks), False
                chunk = response.read1(RESPONSE_CAP + 1 - size)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
                size += len(chunk)
        except (u3.HTTPError, OSError) as exc:
            log.debug("response body cut short: %s", _describe(exc))
        return b"".join(chunks), False


class _TooSlow(Exception):
    """The watchdog cut the attempt before a complete response came."""


class _Unbuildable(Exception):
    """The router cannot make this attempt's request; the text says which part, no values."""


def _request(target: Target, attempt: Attempt, timestamp: int) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt, each checked to be sendable.

    ``http.client`` would refuse a header value it cannot encode in Latin-1 or one
    holding CR/LF, deep in the send and with the value in its message; other
    control characters it sends raw. Checking first names the part at fault. The
    static headers were checked once (``Target.fault``); the event id is checked
    here, the rest the router writes itself.
    """
    if target.fault is not None:
        raise _Unbuildable(target.fault)
    assert target.headers is not None
    payload = attempt.payload
    try:
        body = payload.for_webhook(attempt.webhook.name)
    except UnicodeEncodeError:
        raise _Unbuildable("the event body cannot be encoded as UTF-8") from None
    if not sendable(payload.id):
        raise _Unbuildable("the event id cannot go in an HTTP header")
    try:
        headers = target.headers.headers(payload.id, attempt.number, timestamp, body)
    except Exception as exc:  # its message might hold key material: name the type only
        raise _Unbuildable(f"signing failed ({type(exc).__name__})") from None
    return body, headers


def _result(
    attempt: Attempt,
    started_at: float,
    latency: float,
    *,
    ok: bool = False,
    status: int | None = None,
    error: str | None = None,
    retry_after: float | None = None,
    response: bytes = b"",
    router_fault: bool = False,
) -> AttemptResult:
    """Build the result; a failure is logged at debug level, without secrets or headers.

    The supervisor logs the line worth knowing (retry at …, or disabled), so one
    failed attempt is one INFO line, not two.
    """
    if not ok:
        log.debug(
            "%s: event %s attempt %d failed: %s",
            attempt.webhook.name, attempt.payload.id, attempt.number, error,
        )  # fmt: skip
    return AttemptResult(
        webhook=attempt.webhook.name, seq=attempt.seq, number=attempt.number, ok=ok,
        status=status, error=error, retry_after=retry_after, latency=latency,
        response=response.decode("utf-8", errors="replace"), started_at=started_at,
        router_fault=router_fault,
    )  # fmt: skip


def _describe(exc: BaseException) -> tuple[str, bool]:
    """A short reason (no URL: it may carry a token; no headers), and whether it is ours.

    A failure the network or the endpoint does not explain is the router's own.
    """
    if isinstance(exc, ConnectError):
        return exc.reason, False
    if isinstance(exc, u3.LocationValueError):  # a ValueError too; the config's to fix
        return "invalid URL", False
    if isinstance(exc, u3.HTTPError | OSError):
        return _network(exc), False
    return f"internal error: cannot send the request ({type(exc).__name__})", True


def _network(exc: BaseException) -> str:
    if isinstance(exc, u3.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, u3.SSLError):
        inner = exc.args[0] if exc.args else exc
        if isinstance(inner, ssl.SSLCertVerificationError):
            return f"TLS error: certificate verify failed: {inner.verify_message}"
        return f"TLS error: {getattr(inner, 'reason', None) or inner}"
    if isinstance(exc, u3.ProtocolError):
        return f"connection error: {_reason(exc.args[-1] if exc.args else exc)}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"connection error: {_reason(exc)}"
    return f"connection error: {type(exc).__name__}"  # its text may hold the URL


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or an HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
