"""The soak's outside world: the webhooks it subscribes, their matcher, the producers, the receiver.

The matcher is written here from the README's rules, independently of ``router.filter``, so a
filter bug shows up as a "wrong" or "lost" event instead of agreeing with itself.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgpack
import zmq

PROBE = "WEBHOOK_HEALTH_CHECK"
TYPES = ("TODO_CREATED", "TODO_DELETED", "COMMENT_ADDED", "COMMENT_DELETED", "ORDER_PAID")
PROJECTS = ("p1", "p2", "p3", None)
COMPANIES = ("acme", "globex", None)
PRIORITIES = ("high", "urgent", "low", None)  # None: the key is left out
ARCHIVED = (True, False, 1, None)  # 1 is not true: the `eq: true` below must not take it

# The webhooks, as the config writes them ...
WEBHOOKS: list[dict[str, Any]] = [
    {"name": "everything"},
    {"name": "todos", "events": ["TODO_*"], "projects": ["p1", "p2"]},
    {"name": "acme", "events": ["COMMENT_*", "TODO_DELETED"], "companies": ["acme"]},
    {
        "name": "urgent",
        "where": {
            "all": [
                {"field": "data.priority", "in": ["high", "urgent"]},
                {"not": {"field": "data.archived", "eq": True}},
            ]
        },
    },
    {
        "name": "audit",
        "ordered": True,
        "match": [
            {"events": ["COMMENT_*"], "projects": ["p1"]},
            {"events": ["TODO_DELETED"], "companies": ["globex"]},
        ],
    },
]


def matches(hook: str, ev: dict[str, Any]) -> bool:
    """... and as plain Python: does webhook ``hook`` want event ``ev``?"""
    etype, project, company = ev["type"], ev.get("project"), ev.get("company")
    data = ev.get("data", {})
    if hook == "everything":
        return True
    if hook == "todos":
        return etype.startswith("TODO_") and project in ("p1", "p2")
    if hook == "acme":
        return company == "acme" and (etype.startswith("COMMENT_") or etype == "TODO_DELETED")
    if hook == "urgent":
        return data.get("priority") in ("high", "urgent") and data.get("archived") is not True
    if hook == "audit":
        comment_p1 = etype.startswith("COMMENT_") and project == "p1"
        return comment_p1 or (etype == "TODO_DELETED" and company == "globex")
    raise KeyError(hook)


def make_event(rng: random.Random, eid: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": rng.choice(TYPES), "id": eid}
    for key, choices in (("project", PROJECTS), ("company", COMPANIES)):
        if (value := rng.choice(choices)) is not None:
            ev[key] = value
    data: dict[str, Any] = {"n": rng.randrange(10**6)}
    for key, choices in (("priority", PRIORITIES), ("archived", ARCHIVED)):
        if (value := rng.choice(choices)) is not None:
            data[key] = value
    ev["data"] = data
    return ev


def bad_frames(max_event_bytes: int) -> dict[str, list[bytes]]:
    """One message per way to be wrong, keyed by the reason the router must answer."""
    return {
        "not_msgpack": [b"\xc1 this is not msgpack"],
        "not_map": [msgpack.packb([1, "two"])],
        "unknown_key": [msgpack.packb({"type": "T", "colour": "red"})],
        "too_large": [msgpack.packb({"type": "T", "data": {"x": "y" * (max_event_bytes + 100)}})],
        "multipart": [msgpack.packb({"type": "T"}), b"a second frame"],
        "bad_data": [msgpack.packb({"type": "T", "data": {"x": float("nan")}})],
    }


# --------------------------------------------------------------------------- the receiver


@dataclass
class Seen:
    """Every request the receiver answered: (webhook path, webhook-id, event type, status)."""

    requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self) -> set[tuple[str, str]]:
        with self.lock:
            return {(h, i) for h, i, t, s in self.requests if s == 200 and t != PROBE}

    def snapshot(self) -> list[tuple[str, str, str, int]]:
        with self.lock:
            return list(self.requests)


class Receiver:
    """A loopback HTTP server answering 200, 500, 503 or 429 at random (with Retry-After)."""

    def __init__(self, seed: int, fail_rate: float) -> None:
        self.seen = Seen()
        rng, rng_lock, seen = random.Random(seed), threading.Lock(), self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                etype = body_type(body)
                with rng_lock:
                    roll, later = rng.random(), rng.random() < 0.5
                status = 200 if roll >= fail_rate else rng.choice((500, 503, 429))
                with seen.lock:
                    seen.requests.append(
                        (self.path.strip("/"), self.headers.get("webhook-id", ""), etype, status)
                    )
                self.send_response(status)
                if status in (503, 429) and later:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, hook: str) -> str:
        return f"http://127.0.0.1:{self.port}/{hook}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietServer(ThreadingHTTPServer):
    """Connections cut by a killed daemon are expected here; anything else is still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def body_type(body: bytes) -> str:
    """The event type of a webhook body; "" when it is not the JSON object we expect."""
    try:
        return str(json.loads(body).get("type", ""))
    except ValueError:
        return ""


# --------------------------------------------------------------------------- the producers


@dataclass
class Tally:
    """What the producers did, shared by all of them."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # every good event made
    acked: set[str] = field(default_factory=set)
    pushed: set[str] = field(default_factory=set)  # good events sent on the PULL socket
    counts: Counter = field(default_factory=Counter)  # sent, retried, unacked, refused, ...
    refused: Counter = field(default_factory=Counter)  # by reason
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            self.counts.update(counts)


class Producers:
    """Threads sending good events mixed with bad frames: PUSH, REQ and DEALER.

    An acked producer waits for its answer; when the daemon was killed meanwhile (the
    ``generation`` moved on) or the answer is very late, it sends the same event again on a
    fresh socket, like a real producer, and the duplicate id is acked.
    """

    def __init__(self, pull: str, ack: str, seed: int, rate: float, max_event_bytes: int) -> None:
        self.tally = Tally()
        self.generation = 0  # bumped by the soak at every kill
        self.stopping = threading.Event()
        self._bad = bad_frames(max_event_bytes)
        self._ctx = zmq.Context.instance()
        kinds = [("push", zmq.PUSH, pull)] * 2 + [("req", zmq.REQ, ack)] * 2
        kinds.append(("dealer", zmq.DEALER, ack))
        self._pause = len(kinds) / rate  # mean seconds between two sends of one producer
        self._threads = [
            threading.Thread(
                target=self._run, args=(f"{name}{i}", kind, addr, seed + i), daemon=True
            )
            for i, (name, kind, addr) in enumerate(kinds)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        for t in self._threads:
            t.join(timeout)

    def _run(self, name: str, kind: int, addr: str, seed: int) -> None:
        rng = random.Random(seed)
        sock = self._socket(kind, addr)
        seq = 0
        try:
            while not self.stopping.is_set():
                time.sleep(rng.expovariate(1 / self._pause))
                if rng.random() < 0.1:
                    reason = rng.choice(sorted(self._bad))
                    frames, eid = self._bad[reason], None
                else:
                    seq += 1
                    reason, eid = None, f"{name}-{seq}"
                    ev = make_event(rng, eid)
                    with self.tally.lock:
                        self.tally.events[eid] = ev
                    frames = [msgpack.packb(ev)]
                if kind == zmq.PUSH:
                    sock = self._push(sock, frames, eid)
                else:
                    sock = self._ask(sock, kind, addr, frames, eid, reason)
        finally:
            sock.close(0)

    def _socket(self, kind: int, addr: str) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(addr)
        return sock

    def _push(self, sock: zmq.Socket, frames: list[bytes], eid: str | None) -> zmq.Socket:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.tally.add(push_blocked=1)
            return sock
        if eid is None:
            self.tally.add(bad_pushed=1)
        else:
            with self.tally.lock:
                self.tally.pushed.add(eid)
        return sock

    def _ask(self, sock, kind, addr, frames, eid, reason) -> zmq.Socket:
        """Send until answered (good events) or answered once / given up (bad frames)."""
        first = True
        self.tally.add(sent=1 if eid else 0)
        while True:
            if not first:
                sock.close(0)
                sock = self._socket(kind, addr)
                self.tally.add(resent=1)
            first = False
            generation, sent_at = self.generation, time.monotonic()
            sock.send_multipart(frames)
            answer = self._answer(sock, generation, sent_at)
            if answer is not None:
                self._judge(answer, eid, reason)
                return sock
            if eid is None or self.stopping.is_set():
                self.tally.add(unacked=1 if eid else 0, bad_unanswered=0 if eid else 1)
                sock.close(0)
                return self._socket(kind, addr)

    def _answer(self, sock: zmq.Socket, generation: int, sent_at: float) -> dict | None:
        while True:
            if sock.poll(100):
                return msgpack.unpackb(sock.recv_multipart()[-1])
            waited = time.monotonic() - sent_at
            if (generation != self.generation and waited > 0.5) or waited > 20:
                return None  # the daemon that had it was killed, or it is lost: send again

    def _judge(self, answer: dict, eid: str | None, reason: str | None) -> None:
        with self.tally.lock:
            if eid is not None and answer.get("ok"):
                self.tally.acked.add(eid)
                self.tally.counts["duplicate_acks"] += bool(answer.get("duplicate"))
            elif eid is not None:
                self.tally.counts["good_refused"] += 1
                self.tally.refused[str(answer.get("error", "")).split(":")[0]] += 1
            elif answer.get("ok"):
                self.tally.counts["bad_accepted"] += 1
            else:
                got = str(answer.get("error", "")).split(":")[0]
                self.tally.refused[got] += 1
                self.tally.counts["refused"] += 1
                self.tally.counts["misjudged"] += got != reason
