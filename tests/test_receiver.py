"""The receiver against real ZeroMQ sockets on 127.0.0.1 and ipc, with a stand-in journal."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable

import msgpack
import pykka
import pytest
import zmq
import zmq.auth

from router import RouterError, metrics
from router.clock import Clock
from router.config import CurveConfig, IngestConfig
from router.messages import Accepted, Committed
from router.receiver import AckChannel, Bind, Receiver, send_event


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def rejected(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("events_rejected_total", {"reason": reason})
    return value or 0.0


class Journal:
    """Stands in for the journal: records each batch, commits it later from its own thread.

    ``gate`` holds commits back while cleared; ``fail_reason`` turns commits into failures.
    """

    def __init__(self, channel: AckChannel) -> None:
        self.channel = channel
        self.batches: list[tuple[Accepted, ...]] = []
        self.outstanding_seen: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_reason: str | None = None
        self._ids: set[str] = set()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sink(self, batch: tuple[Accepted, ...]) -> None:
        self.outstanding_seen.append(self.channel.outstanding)
        self.batches.append(batch)
        self._queue.put(batch)

    @property
    def events(self) -> list[Accepted]:
        return [item for batch in list(self.batches) for item in batch]

    def close(self) -> None:
        self.gate.set()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            self.gate.wait()
            if self.fail_reason is not None:
                self.channel.failed(batch, self.fail_reason)
                continue
            results = []
            for item in batch:
                duplicate = item.event.id in self._ids
                self._ids.add(item.event.id)
                results.append(Committed(item, None if duplicate else len(self._ids)))
            self.channel.committed(results)


class Running:
    def __init__(self, ref: pykka.ActorRef, ingest: IngestConfig, journal: Journal) -> None:
        self.ref, self.ingest, self.journal = ref, ingest, journal
        self.channel = journal.channel


@pytest.fixture
def start():
    """Start receivers; stop them (then their journals and channels) after the test."""
    started: list[Running] = []

    def _start(
        max_outstanding: int = 20_000, wrap=None, max_bytes: int = 2**40, **ingest_fields
    ) -> Running:
        fields = {"bind": tcp(), "ack_bind": tcp(), **ingest_fields}
        ingest = IngestConfig(**fields)
        channel = AckChannel()
        journal = Journal(channel)
        sink = journal.sink if wrap is None else wrap(journal.sink)
        ref = Receiver.start(ingest, sink, channel, Clock(), max_outstanding, max_bytes)
        started.append(Running(ref, ingest, journal))
        assert ref.ask(Bind(), timeout=5) is None
        return started[-1]

    yield _start
    for running in started:
        running.ref.stop(block=True, timeout=5)
        running.journal.close()
        running.channel.close()


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def dealer(ctx: zmq.Context, address: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    return sock


def answer(sock: zmq.Socket, timeout: float = 5.0) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), "no answer came"
    return sock.recv_multipart()


# --------------------------------------------------------------------------- events in


def test_pushed_events_reach_the_sink(start):
    r = start()
    for n in range(3):
        assert send_event(r.ingest.bind, {"type": "T", "id": f"e{n}"}, ack=False) is None
    wait_for(lambda: len(r.journal.events) == 3, "three events in the sink")
    assert [a.event.id for a in r.journal.events] == ["e0", "e1", "e2"]
    assert all(a.reply is None for a in r.journal.events)
    wait_for(lambda: r.channel.outstanding == 0, "the pushed events to be committed")


def test_req_gets_ok_with_the_event_id(start):
    r = start()
    ack = send_event(r.ingest.ack_bind, {"type": "T", "id": "order-1"}, ack=True)
    assert ack == {"ok": True, "id": "order-1"}


def test_an_assigned_id_is_in_the_ack(start):
    r = start()
    ack = send_event(r.ingest.ack_bind, {"type": "T"}, ack=True)
    assert ack["ok"] is True
    assert ack["id"] == r.journal.events[0].event.id
    assert len(ack["id"]) == 26


@pytest.mark.parametrize("delimiter", [True, False], ids=["req-style", "bare-dealer"])
def test_acks_come_only_after_the_journal_commits(start, zctx, delimiter):
    r = start()
    r.journal.gate.clear()
    sock = dealer(zctx, r.ingest.ack_bind)
    head = [b""] if delimiter else []
    sock.send_multipart([*head, msgpack.packb({"type": "T", "id": "held"})])
    wait_for(lambda: len(r.journal.events) == 1, "the event in the sink")
    assert r.journal.events[0].reply is not None
    assert r.channel.outstanding == 1
    assert not sock.poll(600), "acked before the commit"  # more than two poll rounds
    r.journal.gate.set()
    frames = answer(sock)
    assert frames[:-1] == head
    assert msgpack.unpackb(frames[-1]) == {"ok": True, "id": "held"}
    wait_for(lambda: r.channel.outstanding == 0, "nothing outstanding")


def test_a_burst_from_several_dealers_is_acked_to_each_its_own_events(start, zctx):
    r = start()
    r.journal.gate.clear()  # the acks pile up, then leave together
    socks = [dealer(zctx, r.ingest.ack_bind) for _ in range(4)]
    heads = [[b""] if n % 2 else [] for n in range(len(socks))]
    for n, (sock, head) in enumerate(zip(socks, heads, strict=True)):
        for i in range(50):
            sock.send_multipart([*head, msgpack.packb({"type": "T", "id": f"c{n}-{i}"})])
    wait_for(lambda: len(r.journal.events) == 200, "every event in the sink")
    r.journal.gate.set()
    for n, (sock, head) in enumerate(zip(socks, heads, strict=True)):
        acks = []
        for _ in range(50):
            frames = answer(sock)
            assert frames[:-1] == head
            acks.append(msgpack.unpackb(frames[-1]))
        assert acks == [{"ok": True, "id": f"c{n}-{i}"} for i in range(50)]
        assert not sock.poll(0), "an ack too many"
    wait_for(lambda: r.channel.outstanding == 0, "nothing outstanding")


def test_acks_find_their_way_back_through_a_proxy(start, zctx):
    """Behind a ROUTER-DEALER proxy, an ack's envelope holds two identities and the delimiter."""
    r = start()
    front, back = zctx.socket(zmq.ROUTER), zctx.socket(zmq.DEALER)
    front_address = f"tcp://127.0.0.1:{front.bind_to_random_port('tcp://127.0.0.1')}"
    back.connect(r.ingest.ack_bind)
    control = f"inproc://proxy-control-{id(r)}"
    steer = zctx.socket(zmq.PAIR)
    steer.bind(control)

    def run_proxy() -> None:
        ctl = zctx.socket(zmq.PAIR)
        ctl.connect(control)
        zmq.proxy_steerable(front, back, None, ctl)
        for sock in (front, back, ctl):
            sock.close(linger=0)

    proxy = threading.Thread(target=run_proxy)
    proxy.start()
    try:
        for n in range(2):
            ack = send_event(front_address, {"type": "T", "id": f"via-proxy-{n}"}, ack=True)
            assert ack == {"ok": True, "id": f"via-proxy-{n}"}
        assert [len(a.reply) for a in r.journal.events] == [3, 3]
    finally:
        steer.send(b"TERMINATE")
        proxy.join(timeout=5)
        steer.close(linger=0)


def test_a_duplicate_is_acked_as_duplicate(start):
    r = start()
    first = send_event(r.ingest.ack_bind, {"type": "T", "id": "same"}, ack=True)
    second = send_event(r.ingest.ack_bind, {"type": "T", "id": "same"}, ack=True)
    assert first == {"ok": True, "id": "same"}
    assert second == {"ok": True, "id": "same", "duplicate": True}


def test_a_failed_commit_answers_not_ok_with_the_reason(start):
    r = start()
    r.journal.fail_reason = "journal: disk full"
    ack = send_event(r.ingest.ack_bind, {"type": "T", "id": "x"}, ack=True)
    assert ack == {"ok": False, "error": "journal: disk full"}
    wait_for(lambda: r.channel.outstanding == 0, "the failed event to stop counting")


def test_events_on_an_ipc_socket_in_a_missing_directory_arrive(start, tmp_path):
    address = f"ipc://{tmp_path}/in/ev.sock"
    r = start(bind=address, ack_bind=None)
    assert (tmp_path / "in").is_dir()
    send_event(address, {"type": "T", "id": "via-ipc"}, ack=False)
    wait_for(lambda: len(r.journal.events) == 1, "the ipc event")
    assert r.journal.events[0].event.id == "via-ipc"


# --------------------------------------------------------------------------- bad events


def raw_req(ctx: zmq.Context, address: str, frames: list[bytes]) -> dict:
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(address)
    sock.send_multipart(frames)
    reply = answer(sock)
    sock.close()
    assert len(reply) == 1
    return msgpack.unpackb(reply[0])


BAD = [
    ("not_msgpack", [b"\xc1\xc1"]),
    ("not_map", [msgpack.packb(["T"])]),
    ("too_large", [msgpack.packb({"type": "T", "data": {"x": "y" * 3000}})]),
    ("multipart", [msgpack.packb({"type": "T"}), msgpack.packb({"type": "U"})]),
    ("unknown_key", [msgpack.packb({"type": "T", "colour": "red"})]),
    ("missing_type", [msgpack.packb({"data": {}})]),
    ("bad_type", [msgpack.packb({"type": ""})]),
    ("bad_id", [msgpack.packb({"type": "T", "id": 7})]),
    ("bad_company", [msgpack.packb({"type": "T", "company": 7})]),
    ("bad_timestamp", [msgpack.packb({"type": "T", "timestamp": True})]),
    ("bad_data", [msgpack.packb({"type": "T", "data": {"x": b"bin"}})]),
]


@pytest.mark.parametrize(("reason", "frames"), BAD, ids=[b[0] for b in BAD])
def test_bad_events_on_the_ack_socket_are_answered_with_the_reason(start, zctx, reason, frames):
    r = start(max_event_bytes=2000)
    before = rejected(reason)
    ack = raw_req(zctx, r.ingest.ack_bind, frames)
    assert ack["ok"] is False
    assert ack["error"].startswith(f"{reason}: ")
    assert rejected(reason) == before + 1
    assert send_event(r.ingest.ack_bind, {"type": "T", "id": "after"}, ack=True)["ok"] is True
    assert [a.event.id for a in r.journal.events] == ["after"]


@pytest.mark.parametrize(("reason", "frames"), BAD, ids=[b[0] for b in BAD])
def test_bad_events_on_the_push_socket_are_counted_and_dropped(start, zctx, reason, frames):
    r = start(max_event_bytes=2000)
    before = rejected(reason)
    push = zctx.socket(zmq.PUSH)
    push.connect(r.ingest.bind)
    push.send_multipart(frames)
    push.send(msgpack.packb({"type": "T", "id": "after"}))
    wait_for(lambda: len(r.journal.events) == 1, "the valid event after the bad one")
    assert rejected(reason) == before + 1
    assert r.journal.events[0].event.id == "after"
    push.close(linger=0)


def test_a_bad_event_from_a_bare_dealer_is_answered_without_delimiter(start, zctx):
    r = start()
    sock = dealer(zctx, r.ingest.ack_bind)
    sock.send(b"\xc1")
    frames = answer(sock)
    assert len(frames) == 1
    assert msgpack.unpackb(frames[0])["error"].startswith("not_msgpack: ")


def test_a_failing_sink_answers_an_error_and_the_receiver_goes_on(start):
    def flaky(sink):
        calls = []

        def call(batch):
            calls.append(batch)
            if len(calls) == 1:
                raise RuntimeError("filter is gone")
            sink(batch)

        return call

    r = start(wrap=flaky)
    first = send_event(r.ingest.ack_bind, {"type": "T", "id": "a"}, ack=True)
    assert first["ok"] is False and "not journaled" in first["error"]
    assert send_event(r.ingest.ack_bind, {"type": "T", "id": "b"}, ack=True)["ok"] is True
    assert [a.event.id for a in r.journal.events] == ["b"]
    wait_for(lambda: r.channel.outstanding == 0, "nothing outstanding")


def test_bad_events_are_logged_at_most_a_few_lines_a_second(start, zctx, caplog):
    caplog.set_level(logging.WARNING, logger="router.receiver")
    r = start()
    before = rejected("not_map")
    push = zctx.socket(zmq.PUSH)
    push.connect(r.ingest.bind)
    for _ in range(1000):
        push.send(msgpack.packb([1]))
    wait_for(lambda: rejected("not_map") == before + 1000, "1000 rejections")

    def lines() -> list[str]:
        return [rec.getMessage() for rec in caplog.records if rec.name == "router.receiver"]

    wait_for(lambda: any("were not logged" in line for line in lines()), "the summary line")
    assert len(lines()) < 40
    push.close(linger=0)


# --------------------------------------------------------------------------- back-pressure


def test_the_sink_gets_no_more_than_max_outstanding_until_commits_come(start, zctx):
    r = start(max_outstanding=5)
    r.journal.gate.clear()
    push = zctx.socket(zmq.PUSH)
    push.connect(r.ingest.bind)
    for n in range(20):
        push.send(msgpack.packb({"type": "T", "id": f"e{n:02d}"}))
    wait_for(lambda: len(r.journal.events) == 5, "the first five events")
    wait_for(lambda: r.channel.outstanding == 5, "five outstanding")
    time.sleep(0.6)  # two poll rounds in which nothing more may be read
    assert len(r.journal.events) == 5
    r.journal.gate.set()
    wait_for(lambda: len(r.journal.events) == 20, "all twenty events")
    assert [a.event.id for a in r.journal.events] == [f"e{n:02d}" for n in range(20)]
    assert max(r.journal.outstanding_seen) <= 5
    push.close(linger=0)


def test_the_sink_gets_no_more_than_the_byte_budget_of_decoded_events(start, zctx):
    # Each event is small on the wire but holds 20,000 lists once decoded (>1 MB):
    # a budget of 2 MB lets two through (the second one crosses it), then reading stops.
    r = start(max_bytes=2_000_000)
    r.journal.gate.clear()
    push = zctx.socket(zmq.PUSH)
    push.connect(r.ingest.bind)
    for n in range(6):
        push.send(msgpack.packb({"type": "T", "id": f"w{n}", "data": {"l": [[]] * 20_000}}))
    wait_for(lambda: len(r.journal.events) == 2, "the first two events")
    time.sleep(0.6)  # two poll rounds in which nothing more may be read
    assert len(r.journal.events) == 2
    assert r.channel.outstanding_bytes > 2_000_000
    r.journal.gate.set()
    wait_for(lambda: len(r.journal.events) == 6, "all six events")
    wait_for(lambda: r.channel.outstanding_bytes == 0, "the budget to be given back")
    push.close(linger=0)


def test_acks_still_flow_while_ingest_is_paused(start, zctx):
    r = start(max_outstanding=1)
    r.journal.gate.clear()
    sock = dealer(zctx, r.ingest.ack_bind)
    sock.send_multipart([b"", msgpack.packb({"type": "T", "id": "one"})])
    sock.send_multipart([b"", msgpack.packb({"type": "T", "id": "two"})])
    wait_for(lambda: r.channel.outstanding == 1, "one outstanding")
    r.journal.gate.set()
    acks = [msgpack.unpackb(answer(sock)[-1])["id"] for _ in range(2)]
    assert acks == ["one", "two"]


# --------------------------------------------------------------------------- binding, CURVE, stop


def test_an_address_in_use_is_reported_by_bind(zctx):
    address = tcp()
    squatter = zctx.socket(zmq.PULL)
    squatter.bind(address)
    channel = AckChannel()
    ref = Receiver.start(
        IngestConfig(bind=address, ack_bind=None), lambda b: None, channel, Clock()
    )
    error = ref.ask(Bind(), timeout=5)
    assert isinstance(error, str) and address in error
    assert ref.is_alive()
    ref.stop(block=True, timeout=5)
    squatter.close(linger=0)
    channel.close()


def test_an_ingest_without_sockets_is_refused_at_start():
    channel = AckChannel()
    with pytest.raises(RouterError):
        Receiver.start(IngestConfig(bind=None, ack_bind=None), lambda b: None, channel, Clock())
    channel.close()


@pytest.fixture
def certs(tmp_path):
    """Server and client certificates; only ``client`` is authorized."""
    keys = {}
    for name in ("server", "client", "rogue"):
        (tmp_path / name).mkdir()
        public, secret = zmq.auth.create_certificates(tmp_path / name, name)
        keys[name] = (public, secret)
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    os.rename(keys["client"][0], authorized / "client.key")
    keys["client"] = (str(authorized / "client.key"), keys["client"][1])
    return keys, str(authorized)


def client_keys(keys, name) -> tuple[bytes, bytes, bytes]:
    server_public, _ = zmq.auth.load_certificate(keys["server"][0])
    public, secret = zmq.auth.load_certificate(keys[name][1])
    return server_public, public, secret


def test_curve_lets_authorized_clients_in_and_nobody_else(start, certs):
    keys, authorized = certs
    curve = CurveConfig(secret_key_file=keys["server"][1], authorized_keys_dir=authorized)
    r = start(curve=curve)
    with pytest.raises(RouterError):
        send_event(r.ingest.ack_bind, {"type": "T", "id": "rogue"}, ack=True, timeout=1,
                   curve=client_keys(keys, "rogue"))  # fmt: skip
    with pytest.raises(RouterError):
        send_event(r.ingest.ack_bind, {"type": "T", "id": "plain"}, ack=True, timeout=0.5)
    send_event(r.ingest.bind, {"type": "T", "id": "plain-push"}, ack=False, timeout=0.5)
    ack = send_event(r.ingest.ack_bind, {"type": "T", "id": "friend"}, ack=True,
                     curve=client_keys(keys, "client"))  # fmt: skip
    assert ack == {"ok": True, "id": "friend"}
    send_event(r.ingest.bind, {"type": "T", "id": "friend-push"}, ack=False,
               curve=client_keys(keys, "client"))  # fmt: skip
    wait_for(lambda: len(r.journal.events) == 2, "the authorized push")
    assert sorted(a.event.id for a in r.journal.events) == ["friend", "friend-push"]


def test_a_missing_curve_key_file_is_reported_by_bind(certs, tmp_path):
    _, authorized = certs
    missing = str(tmp_path / "nope.key_secret")
    curve = CurveConfig(secret_key_file=missing, authorized_keys_dir=authorized)
    channel = AckChannel()
    ref = Receiver.start(IngestConfig(bind=tcp(), ack_bind=None, curve=curve),
                         lambda b: None, channel, Clock())  # fmt: skip
    error = ref.ask(Bind(), timeout=5)
    assert isinstance(error, str) and "nope.key_secret" in error
    ref.stop(block=True, timeout=5)
    channel.close()


def test_stop_is_prompt(start):
    r = start()
    send_event(r.ingest.ack_bind, {"type": "T"}, ack=True)
    began = time.monotonic()
    assert r.ref.stop(block=True, timeout=5) is True
    assert time.monotonic() - began < 2.0
