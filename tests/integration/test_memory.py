"""Memory is bounded by bytes, not by event counts: floods, big decoded events, retry sets."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from router.budget import DELIVERY_COST
from tests.integration.conftest import JournalDB, Reply, wait_until

MiB = 1024 * 1024
CEILING = 1024 * MiB  # the README's bound for the default settings


def peak_rss(pid: int) -> int:
    """The daemon's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.timeout(600)
def test_a_flood_of_events_that_decode_sixty_times_larger_stays_under_the_ceiling(
    hooks, daemon_factory
):
    # 0.9 MB on the wire, a list of 900,000 empty lists once decoded (~60 MB in Python).
    frame = msgpack.packb({"type": "BIG", "data": {"l": [[]] * 900_000}})
    assert 0.8 * MiB < len(frame) < MiB
    d = daemon_factory([{"name": "all", "url": hooks.url("/all"), "max_in_flight": 2}]).start()
    ctx = zmq.Context.instance()
    pushers = [ctx.socket(zmq.PUSH) for _ in range(3)]
    dealers = [ctx.socket(zmq.DEALER) for _ in range(2)]
    for sock in pushers:
        sock.connect(d.pull)
    for sock in dealers:
        sock.connect(d.ack)
    try:
        for n in range(60):  # all at once: 36 pushed, 24 on the acked socket
            if n % 5 < 3:
                pushers[n % 5].send(frame)
            else:
                dealers[n % 5 - 3].send_multipart([b"", frame])
        acks = []
        for sock in dealers:
            for _ in range(12):
                assert sock.poll(300_000), f"no ack:\n{d.log()}"
                acks.append(msgpack.unpackb(sock.recv_multipart()[-1]))
        assert all(a["ok"] for a in acks), acks
        # Counted by header: parsing 60 bodies of 2.7 MB on every poll would starve the server.
        wait_until(lambda: d.webhook("all")["delivered"] == 60, 400, "60 big deliveries")
        assert len({r.headers["webhook-id"] for r in hooks.at("/all")}) == 60
    finally:
        for sock in pushers + dealers:
            sock.close(linger=0)
    status = d.status()
    assert status["memory"]["ingest"] == 0
    assert status["memory"]["queues"] <= status["memory"]["queues_limit"]
    peak = peak_rss(d.proc.pid)
    assert peak < CEILING, f"peak RSS {peak / MiB:.0f} MiB"
    assert d.stop() == 0


@pytest.mark.timeout(300)
def test_waiting_retries_are_bounded_in_memory_and_the_journal_holds_the_rest(
    hooks, daemon_factory
):
    hooks.default("/r", Reply(500))
    webhook = {"name": "r", "url": hooks.url("/r"), "retry": {"attempts": 100, "backoff": ["30s"]}}
    d = daemon_factory([webhook]).start()
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(d.ack)
    total = 1500  # more than one webhook holds in memory (1,000)
    try:
        for n in range(total):
            event = {"type": "T", "id": f"r{n:04d}", "data": {"pad": "x" * 200}}
            dealer.send_multipart([b"", msgpack.packb(event)])
        for _ in range(total):  # acked: every one is in the journal
            assert dealer.poll(60_000), f"no ack:\n{d.log()}"
            assert msgpack.unpackb(dealer.recv_multipart()[-1])["ok"] is True
    finally:
        dealer.close(linger=0)

    # Every attempt fails at once, so deliveries pile up as waiting retries: in memory at
    # most the webhook's queue limit of them (1,000), each without its body; the journal
    # holds every one.
    def piled_up() -> bool:
        w = d.webhook("r")
        return w["retrying"] >= 500 and w["queued"] + w["in_flight"] == total

    wait_until(piled_up, 60, "every event journaled and the retries piled up")
    for _ in range(20):
        w = d.webhook("r")
        assert w["in_memory"] <= 1000 and w["retrying"] <= 1000, w
        assert w["queued"] + w["in_flight"] == total, w
        assert w["memory_bytes"] <= w["in_memory"] * DELIVERY_COST + 4 * MiB, w
    journal = JournalDB(d)
    assert journal.rows("SELECT count(*) FROM deliveries WHERE state = 'pending'") == [(total,)]
    journal.close()

    # The endpoint recovers: everything goes out, nothing was lost on the way.
    hooks.default("/r", Reply(200))
    wait_until(lambda: d.webhook("r")["delivered"] == total, 120, "every delivery done")
    assert d.webhook("r")["queued"] == 0
    assert set(hooks.ids("/r")) == {f"r{n:04d}" for n in range(total)}
    assert d.stop() == 0
