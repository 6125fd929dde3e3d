"""The receiver: the one thread that touches the ingest sockets (pyzmq sockets are not thread-safe).

It reads events from a PULL socket (fire-and-forget) and a ROUTER socket (acked),
validates them with ``router.envelope``, hands valid ones to a sink in one batch per
poll, answers bad ones at once, and sends ``ok`` acks only when the journal reports the
commit through an ``AckChannel``. The loop is a pykka actor telling itself ``Poll()``,
so ``stop()`` is noticed within one poll timeout.

An event published over HTTP (``POST /api/v1/events``) comes in as a ``Publish`` message
holding its frame: it is checked, counted and handed on exactly as a frame read from the
ack socket, and its ``Waiter`` hears the same answer, after the same commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import pykka
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from router import RouterError, envelope, metrics
from router.actor import Actor
from router.clock import Clock
from router.config import IngestConfig, MiB
from router.messages import Accepted, Committed

logger = logging.getLogger(__name__)

POLL_MS = 250
SLICE_MS = 50  # how soon a waiting stop() is noticed
BATCH = 1000  # most messages read from one socket in one poll
LINGER_MS = 1000  # on stop, queued acks get this long to leave
HWM = 10_000  # acks queued for one client
MAX_OUTSTANDING_BYTES = 64 * MiB  # decoded events handed on but not yet journaled
BUSY = "the router is busy: too many events wait for the journal; send it again shortly"
PEER_QUEUE_BYTES = 16 * MiB  # frames ZeroMQ may queue for us from one producer
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq converts enum flags on every call
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)

# An answer: the ROUTER envelope (identity frames and delimiter) and the msgpack body.
Reply = tuple[tuple[bytes, ...], bytes]


def frame_limit(max_event_bytes: int) -> int:
    """The largest frame ZeroMQ takes: bigger ones drop the connection without an answer."""
    return 2 * max_event_bytes + 1024


def receive_hwm(max_event_bytes: int) -> int:
    """Frames ZeroMQ queues per producer, so that one producer's queue stays within bytes."""
    return max(4, min(1000, PEER_QUEUE_BYTES // frame_limit(max_event_bytes)))


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind the ingest sockets. The answer is None, or an error string for the operator."""


@dataclass(frozen=True, slots=True)
class Poll:
    """Run one round of the receive loop; the actor tells itself the next one."""


class Waiter:
    """Where an HTTP publisher waits for its event's answer: the map an ack-socket producer
    would get (``{"ok": true, "id": …}``, with ``"duplicate": true`` for a repeated id, or
    ``{"ok": false, "error": …}``), and for a bad event the ``BadEvent`` too.

    Answered once (a later answer is ignored): by the receiver for a bad event or when
    there is no room, or on the journal's thread once the event is committed or refused.
    """

    __slots__ = ("_done", "answer", "bad", "id")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.answer: dict[str, Any] | None = None
        self.bad: envelope.BadEvent | None = None
        self.id: str | None = None  # the event's id, once the receiver has read it

    def set(self, answer: dict[str, Any], bad: envelope.BadEvent | None = None) -> None:
        if not self._done.is_set():
            self.answer, self.bad = answer, bad
            self._done.set()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The answer, or None if none came within ``timeout`` seconds."""
        return self.answer if self._done.wait(timeout) else None


@dataclass(frozen=True, slots=True)
class Publish:
    """An event from the HTTP API, as the msgpack frame a producer would send."""

    frame: bytes
    waiter: Waiter


class AckChannel:
    """Where the journal's thread hands commit results back to the receiver thread.

    The journal calls ``committed``/``failed``; those queue replies, a batch at a time,
    and wake the receiver through a pipe it polls; it takes them all at once and sends
    them in one pass. An event from the HTTP API is answered at once, through its
    ``Waiter``. ``outstanding`` counts events handed to the sink and not yet
    answered, ``outstanding_bytes`` what they cost in memory (``Event.cost``):
    back-pressure looks at both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        self._outstanding = 0
        self._outstanding_bytes = 0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    @property
    def outstanding_bytes(self) -> int:
        return self._outstanding_bytes

    def fileno(self) -> int:
        """The pipe end the receiver polls."""
        return self._read_fd

    def committed(self, results: Iterable[Committed]) -> None:
        """Ack these events: ``ok`` (``duplicate`` when ``seq`` is None)."""
        replies: list[Reply] = []
        count = cost = 0
        pack = msgpack.packb
        for result in results:
            item = result.item
            count += 1
            cost += item.event.cost
            reply = item.reply
            if reply is not None:
                ack: dict[str, Any] = {"ok": True, "id": item.event.id}
                if result.seq is None:
                    ack["duplicate"] = True
                if type(reply) is tuple:
                    replies.append((reply, pack(ack)))
                else:
                    reply.set(ack)
        self._answer(replies, count, cost)

    def failed(self, items: Iterable[Accepted], reason: str) -> None:
        """Refuse these events (not journaled): ``{"ok": false, "error": reason}``."""
        answer = {"ok": False, "error": reason}
        body = msgpack.packb(answer)
        items = tuple(items)
        replies = []
        for i in items:
            if type(i.reply) is tuple:
                replies.append((i.reply, body))
            elif i.reply is not None:
                i.reply.set(answer)
        self._answer(replies, len(items), sum(i.event.cost for i in items))

    def add_outstanding(self, count: int, cost: int = 0) -> None:
        """Called by the receiver before it hands ``count`` events costing ``cost`` to the sink."""
        with self._lock:
            self._outstanding += count
            self._outstanding_bytes += cost

    def wake(self) -> None:
        """Wake the receiver now (a ``Publish`` waits in its inbox)."""
        # A full pipe already means "wake up"; a closed one means nobody listens.
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"\0")

    def take(self) -> list[Reply]:
        """Empty the wake-up pipe and return every reply waiting to be sent."""
        with contextlib.suppress(OSError):  # BlockingIOError: the pipe is empty
            while os.read(self._read_fd, 4096):
                pass
        with self._lock:
            replies, self._replies = self._replies, []
        return replies

    def close(self) -> None:
        """Close the pipe. Only the owner (the app) does this, after the journal stops."""
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _answer(self, replies: list[Reply], count: int, cost: int) -> None:
        with self._lock:
            self._replies += replies
            self._outstanding = max(0, self._outstanding - count)
            self._outstanding_bytes = max(0, self._outstanding_bytes - cost)
        self.wake()


class _LogLimit:
    """At most ``per_second`` log lines a second; then one line says how many were not logged."""

    def __init__(self, clock: Clock, per_second: int = 10) -> None:
        self._clock = clock
        self._per_second = per_second
        self._window = -1.0
        self._count = 0
        self._suppressed = 0

    def allow(self) -> bool:
        self.flush()
        if self._count < self._per_second:
            self._count += 1
            return True
        self._suppressed += 1
        return False

    def flush(self) -> None:
        """Start a new window once a second has passed, reporting what the last one hid."""
        now = self._clock.monotonic()
        if now - self._window < 1.0:
            return
        if self._suppressed:
            logger.warning("%d more bad events were not logged", self._suppressed)
        self._window, self._count, self._suppressed = now, 0, 0


class Receiver(Actor):
    """Owns the ingest sockets and the ZeroMQ context; see the module docstring.

    Memory is bounded by bytes at every step: ``MAXMSGSIZE`` is ``frame_limit()`` (a
    frame up to that is answered ``too_large``, a bigger one makes ZeroMQ drop the peer
    without an answer), ZeroMQ queues at most ``receive_hwm()`` frames per producer, and
    events handed on but not yet journaled may cost at most ``max_outstanding_bytes``
    decoded (one event may overshoot it, so that any single valid event gets through).
    """

    def __init__(
        self,
        ingest: IngestConfig,
        sink: Callable[[tuple[Accepted, ...]], None],
        channel: AckChannel,
        clock: Clock,
        max_outstanding: int = 20_000,
        max_outstanding_bytes: int = MAX_OUTSTANDING_BYTES,
    ) -> None:
        super().__init__()
        if not ingest.bind and not ingest.ack_bind:
            raise RouterError("ingest needs bind or ack_bind (or both)")
        if max_outstanding < 1:
            raise RouterError("max_outstanding must be at least 1")
        self._ingest = ingest
        self._sink = sink
        self._channel = channel
        self._clock = clock
        self._max_outstanding = max_outstanding
        self._max_outstanding_bytes = max_outstanding_bytes
        self._limit = _LogLimit(clock)
        self._ctx: zmq.Context | None = None
        self._auth: ThreadAuthenticator | None = None
        self._pull: zmq.Socket | None = None
        self._router: zmq.Socket | None = None
        self._all: zmq.Poller | None = None  # ingest sockets and the ack pipe
        self._acks_only: zmq.Poller | None = None  # under back-pressure
        self._pull_first = True

    # ------------------------------------------------------------------ messages

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Bind):
            return self._on_bind()
        if isinstance(message, Poll):
            try:
                self._poll()
            except Exception:
                logger.exception("receiver poll failed; going on")
                time.sleep(0.1)  # a persistent socket error must not spin the CPU
            if self._all is not None:  # not bound (Bind failed) or closed: no loop
                self._tell(Poll())
            return None
        if isinstance(message, Publish):
            try:
                self._publish(message)
            except Exception:
                logger.exception("could not take an event from the HTTP API; going on")
                message.waiter.set({"ok": False, "error": "internal error: not journaled"})
            return None
        return super().on_receive(message)

    def on_stop(self) -> None:
        try:
            self._send_acks()
        except Exception:
            logger.exception("could not send the last acks")
        try:
            self._close()
        except Exception:
            logger.exception("could not close the ingest sockets")

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        """Died anyway: free the addresses, so that the owner can bind a new receiver."""
        logger.error("receiver failed: %s", exception_value)
        try:
            self._close()
        except Exception:
            logger.exception("could not close the ingest sockets")

    def _on_bind(self) -> str | None:
        if self._all is not None:
            return None
        try:
            error = self._bind()
        except Exception as exc:  # never let Bind kill the actor: the app must hear why
            logger.exception("binding the ingest sockets failed")
            error = f"cannot bind the ingest sockets: {exc}"
        if error is not None:
            self._close()
            return error
        self._tell(Poll())
        return None

    def _tell(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # stopping
            self.actor_ref.tell(message)

    # ------------------------------------------------------------------ sockets

    def _bind(self) -> str | None:
        ingest = self._ingest
        self._ctx = zmq.Context()
        keys = None
        if ingest.curve is not None:
            if not zmq.has("curve"):
                return "ingest.curve is set but this libzmq has no CURVE support"
            path = ingest.curve.secret_key_file
            try:
                public, secret = zmq.auth.load_certificate(path)
            except (OSError, ValueError) as exc:
                return f"cannot load the CURVE secret key file {path}: {exc}"
            if not secret:
                return f"{path} holds no secret key (use the .key_secret file)"
            if not os.path.isdir(ingest.curve.authorized_keys_dir):
                return f"authorized_keys_dir {ingest.curve.authorized_keys_dir} is not a directory"
            keys = (public, secret)
            # The ZAP handler must run before binding, or libzmq admits any client key.
            self._auth = ThreadAuthenticator(self._ctx, log=logger)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=ingest.curve.authorized_keys_dir)
        max_size = frame_limit(ingest.max_event_bytes)
        self._all, self._acks_only = zmq.Poller(), zmq.Poller()
        for address, kind in ((ingest.bind, zmq.PULL), (ingest.ack_bind, zmq.ROUTER)):
            if not address:
                continue
            sock = self._ctx.socket(kind)
            if kind == zmq.PULL:
                self._pull = sock
            else:
                self._router = sock
                sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client must not raise
                sock.setsockopt(zmq.SNDHWM, HWM)
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            sock.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:… works; IPv4 addresses still do
            sock.setsockopt(zmq.RCVHWM, receive_hwm(ingest.max_event_bytes))
            sock.setsockopt(zmq.MAXMSGSIZE, max_size)
            if keys is not None:
                sock.curve_server = True
                sock.curve_publickey, sock.curve_secretkey = keys
            try:
                _make_ipc_dir(address)
                sock.bind(address)
            except (zmq.ZMQError, OSError) as exc:
                return f"cannot bind {address}: {exc}"
            self._all.register(sock, zmq.POLLIN)
            logger.info("listening for events on %s (%s)", address, _NAMES[kind])
        self._all.register(self._channel.fileno(), zmq.POLLIN)
        self._acks_only.register(self._channel.fileno(), zmq.POLLIN)
        return None

    def _close(self) -> None:
        for sock in (self._pull, self._router):
            if sock is not None:
                sock.close()
        self._pull = self._router = self._all = self._acks_only = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()  # waits at most LINGER_MS for queued acks
            self._ctx = None

    # ------------------------------------------------------------------ the loop

    def _poll(self) -> None:
        if self._all is None or self._acks_only is None:
            return
        room, room_bytes = self._room()
        # Under back-pressure the sockets are not even polled: their high-water marks
        # push back on producers, and level-triggered readiness would spin the loop.
        open_ = room > 0 and room_bytes > 0
        ready = self._wait(self._all if open_ else self._acks_only)
        items: list[Accepted] = []
        if open_:
            order = [self._pull, self._router]
            if not self._pull_first:
                order.reverse()
            self._pull_first = not self._pull_first
            budget = [min(BATCH, room), room_bytes]
            for sock in order:
                if sock is not None and sock in ready and budget[0] > 0 and budget[1] > 0:
                    self._drain(sock, items, budget)
            if items:
                self._hand_over(items, room_bytes - budget[1])
        self._send_acks()
        self._limit.flush()

    def _room(self) -> tuple[int, int]:
        """How many more events, and bytes of them, may be handed on before commits answer."""
        channel = self._channel
        return (
            self._max_outstanding - channel.outstanding,
            self._max_outstanding_bytes - channel.outstanding_bytes,
        )

    def _publish(self, message: Publish) -> None:
        """An event from the HTTP API: refused while the sockets are under back-pressure,
        else checked and handed on as a frame read from the ack socket is."""
        room, room_bytes = self._room()
        if room <= 0 or room_bytes <= 0:
            message.waiter.set({"ok": False, "error": BUSY})
            return
        try:
            event = envelope.decode(message.frame, self._ingest.max_event_bytes, self._clock)
        except envelope.BadEvent as bad:
            self._reject(bad, message.waiter)
            return
        message.waiter.id = event.id
        self._hand_over([Accepted(event, message.waiter)], event.cost)

    def _wait(self, poller: zmq.Poller) -> dict:
        """Poll up to POLL_MS, in slices, returning early when another message (stop) waits."""
        deadline = time.monotonic() + POLL_MS / 1000
        while True:
            ready = dict(poller.poll(SLICE_MS))
            if ready or not self.actor_inbox.empty() or time.monotonic() >= deadline:
                return ready

    def _drain(self, sock: zmq.Socket, items: list[Accepted], budget: list[int]) -> None:
        """Read without blocking until the socket is empty or ``budget`` is used up.

        ``budget`` is [events, bytes] left for this poll, shared by both sockets; the
        event that crosses the byte budget is kept (it is decoded already), then reading
        stops until commits give room back. Each frame is read as a ``zmq.Frame``
        (``copy=False``): its ``more`` flag costs much less than the RCVMORE socket
        option that ``recv_multipart`` reads after every frame.
        """
        recv = sock.recv
        reads = 0
        while budget[0] > 0 and budget[1] > 0 and reads < BATCH * 2:
            try:
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            reads += 1
            frames = [part.bytes]
            while part.more:  # ZeroMQ hands over whole messages: the rest is here
                part = recv(_NOBLOCK, copy=False)
                frames.append(part.bytes)
            try:
                item = self._accept(sock, frames)
            except Exception:
                logger.exception("could not handle an ingest message; going on")
                continue
            if item is not None:
                items.append(item)
                budget[0] -= 1
                budget[1] -= item.event.cost

    def _accept(self, sock: zmq.Socket, frames: list[bytes]) -> Accepted | None:
        reply: tuple[bytes, ...] | None = None
        payload = frames
        if sock is self._router:
            # REQ: identity frame(s), empty delimiter, payload. DEALER: identity, payload.
            cut = frames.index(b"", 1) + 1 if b"" in frames[1:] else 1
            reply, payload = tuple(frames[:cut]), frames[cut:]
        try:
            if len(payload) != 1:
                raise envelope.BadEvent(
                    "multipart", f"an event is one frame, this message had {len(payload)}"
                )
            event = envelope.decode(payload[0], self._ingest.max_event_bytes, self._clock)
        except envelope.BadEvent as bad:
            self._reject(bad, reply)
            return None
        return Accepted(event, reply)

    def _reject(self, bad: envelope.BadEvent, reply: tuple[bytes, ...] | Waiter | None) -> None:
        metrics.EVENTS_REJECTED.labels(bad.reason).inc()
        if self._limit.allow():
            source = _SOURCES[type(reply)]
            logger.warning("rejected an event on the %s: %s", source, bad)
        answer = {"ok": False, "error": str(bad)}
        if type(reply) is Waiter:
            reply.set(answer, bad)
        elif reply is not None and self._router is not None:
            self._send(self._router.send, reply, msgpack.packb(answer))

    def _hand_over(self, items: list[Accepted], cost: int) -> None:
        """Pass the events of one poll to the sink; ``cost`` is what they cost together."""
        batch = tuple(items)
        metrics.EVENTS_RECEIVED.inc(len(batch))
        # Before the sink: it may commit at once.
        self._channel.add_outstanding(len(batch), cost)
        try:
            self._sink(batch)
        except Exception:
            logger.exception("the sink refused %d events; answering them with an error", len(batch))
            self._channel.failed(batch, "internal error: the event was not journaled")

    def _send_acks(self) -> None:
        replies = self._channel.take()
        if self._router is None:
            return
        send = self._router.send
        for reply, body in replies:
            self._send(send, reply, body)

    @staticmethod
    def _send(send: Callable[..., Any], reply: tuple[bytes, ...], body: bytes) -> None:
        """One answer, frame by frame: ``send_multipart`` costs more than its sends."""
        try:
            for part in reply:
                send(part, _MORE)
            send(body, _NOBLOCK)
        except zmq.Again:
            logger.debug("dropped an answer to a client that is not reading")
        except zmq.ZMQError as exc:
            logger.warning("could not send an answer: %s", exc)


_NAMES = {zmq.PULL: "PULL", zmq.ROUTER: "ROUTER, acked"}
_SOURCES = {tuple: "ack socket", type(None): "push socket", Waiter: "HTTP API"}


def _make_ipc_dir(address: str) -> None:
    if address.startswith("ipc://"):
        parent = os.path.dirname(address[len("ipc://") :])
        if parent:
            os.makedirs(parent, exist_ok=True)


# --------------------------------------------------------------------------- client


def send_event(
    address: str,
    event: dict[str, Any],
    ack: bool,
    timeout: float = 5.0,
    curve: tuple[bytes, bytes, bytes] | None = None,
) -> dict[str, Any] | None:
    """Send one event, as a producer would: PUSH (returns None) or REQ (returns the ack).

    ``curve`` is ``(server_public, client_public, client_secret)`` in Z85.

    Raises:
        RouterError: nothing could be sent, or no answer came, within ``timeout``.
    """
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ if ack else zmq.PUSH)
    try:
        ms = max(1, int(timeout * 1000))
        sock.setsockopt(zmq.SNDTIMEO, ms)
        sock.setsockopt(zmq.RCVTIMEO, ms)
        sock.setsockopt(zmq.LINGER, 0 if ack else ms)  # a PUSH must get its frame out
        sock.setsockopt(zmq.IPV6, 1)
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        sock.connect(address)
        try:
            sock.send(msgpack.packb(event))
        except zmq.Again:
            raise RouterError(f"could not send to {address} within {timeout:g} s") from None
        if not ack:
            return None
        try:
            answer = sock.recv()
        except zmq.Again:
            raise RouterError(f"no answer from {address} within {timeout:g} s") from None
        try:
            return msgpack.unpackb(answer, raw=False)
        except ValueError:
            raise RouterError(f"{address} answered with something that is not msgpack") from None
    finally:
        sock.close()
        ctx.term()
