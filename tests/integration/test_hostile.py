"""Hostile receivers against the real daemon: each attempt is bounded and frees its worker.

The daemon gets two delivery workers and two webhooks: a hostile one, whose
attempts take both workers, and a healthy one, which must still get every event.
Each hostile attempt must fail with a clear error, counted in ``attempts --json``
and in status, within its hard deadline (the attempt log's latency is judged
against the configured timeout, with a margin for a busy machine, never a fixed
number of seconds).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from router.delivery import HARD_DEADLINE, RESPONSE_CAP
from tests.hostile import RawServer, blackhole
from tests.integration.conftest import Daemon, wait_until

EVENTS = 4  # the hostile webhook's max_in_flight: enough attempts to take both workers
MARGIN = 1.0  # seconds past the hard deadline a busy machine may need to log the failure


def socket_buffers() -> int:
    """The most a loopback connection can hold in flight: send plus receive buffer maxima."""
    total = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        total += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return total


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def make(handler, **kwargs) -> RawServer:
        servers.append(server := RawServer(handler, **kwargs))
        return server

    yield make
    for server in servers:
        server.close()


def attempt_log(d: Daemon, name: str) -> list[dict]:
    proc = d.cli("attempts", name, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def hostile_run(
    daemon_factory, hooks, url: str, matches: Callable[[str], bool], timeout: float = 1.0,
    wrapper: list[str] | None = None,
) -> list[dict]:  # fmt: skip
    """Send events to a hostile and a healthy webhook; check what the hostile attempts did.

    Returns the hostile webhook's attempt log.
    """
    d = daemon_factory(
        [
            {"name": "hostile", "url": url, "timeout": f"{timeout}s", "retry": {"attempts": 1}},
            {"name": "healthy", "url": hooks.url("/ok")},
        ],
        delivery_workers=2,
    )
    d.wrapper = wrapper or []
    d.start()
    for n in range(EVENTS):
        d.send({"type": "T", "id": f"e{n}"})
    # The hostile attempts are submitted first; the healthy ones wait for a freed worker.
    wait_until(lambda: len(hooks.at("/ok")) == EVENTS, timeout=60, what="the healthy deliveries")

    def settled() -> list[dict] | None:
        w = d.webhook("hostile")
        log = attempt_log(d, "hostile")
        return log if w["in_flight"] == 0 and log and len(log) == w["failed"] else None

    log = wait_until(settled, timeout=60, what="the hostile attempts logged")
    bound = timeout * HARD_DEADLINE + MARGIN
    for a in log:
        assert a["status"] is None or a["status"] >= 300, a
        assert matches(a["error"]), a
        assert a["latency_ms"] / 1000 <= bound, a
        assert len(a["response"] or "") <= RESPONSE_CAP
    w = d.webhook("hostile")
    assert matches(w["last_error"]), w
    assert w["failed"] == len(log) >= 1
    assert d.webhook("healthy")["delivered"] == EVENTS
    assert d.stop() == 0
    return log


def assert_hung_up(server: RawServer) -> None:
    """Every connection ended because the router hung up, having taken a bounded amount."""
    wait_until(lambda: server.connections and all(c.ended.is_set() for c in server.connections),
               timeout=30, what="the router to hang up")  # fmt: skip
    limit = socket_buffers() + RESPONSE_CAP + 1024 * 1024
    for conn in server.connections:
        assert conn.peer_closed
        assert conn.sent <= limit, conn.sent


# --------------------------------------------------------------------------- receivers


def test_an_endless_response_body_is_read_up_to_the_cap(hooks, daemon_factory, raw):
    def endless(sock, server: RawServer) -> None:
        server.send(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        while server.send(chunk) and not server.stopping.is_set():
            pass

    server = raw(endless)
    log = hostile_run(daemon_factory, hooks, server.url("/"), lambda e: e == "HTTP 500")
    assert all(a["status"] == 500 for a in log)
    assert_hung_up(server)


def test_a_response_dripping_a_byte_a_second_is_cut_at_the_deadline(hooks, daemon_factory, raw):
    def drip(sock, server: RawServer) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 1000:
            if not (server.send(bytes([byte])) and server.pause(1.0)):
                return

    server = raw(drip)
    # Each byte comes within the socket timeout: only the deadline ends the attempt.
    hostile_run(daemon_factory, hooks, server.url("/"), timeout=2.0,
                matches=lambda e: e in ("response too slow", "timeout"))  # fmt: skip
    assert_hung_up(server)


def test_huge_response_headers_are_refused(hooks, daemon_factory, raw):
    def huge(sock, server: RawServer) -> None:
        server.send(b"HTTP/1.1 200 OK\r\nX-Huge: ")
        while server.send(b"h" * 65536) and not server.stopping.is_set():
            pass

    server = raw(huge)
    hostile_run(daemon_factory, hooks, server.url("/"),
                lambda e: e.startswith("connection error: got more than"))  # fmt: skip
    assert_hung_up(server)


def test_a_connection_reset_mid_response_is_a_connection_error(hooks, daemon_factory, raw):
    def reset(sock, server: RawServer) -> None:
        server.send(b"HTTP/1.1 200 OK\r\nContent-Ty")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # Closing with a zero linger sends a RST instead of a FIN.

    server = raw(reset)
    hostile_run(daemon_factory, hooks, server.url("/"),
                lambda e: e.startswith("connection error: "))  # fmt: skip


def test_a_tls_handshake_failure_is_a_tls_error(hooks, daemon_factory, raw):
    def plain(sock, server: RawServer) -> None:
        sock.recv(4096)  # the ClientHello, answered in plain HTTP
        server.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = raw(plain, read_request=False)
    hostile_run(daemon_factory, hooks, server.url("/", scheme="https"),
                lambda e: e.startswith("TLS error: "))  # fmt: skip


def test_a_server_that_accepts_and_never_answers_is_a_timeout(hooks, daemon_factory, raw):
    def silent(sock, server: RawServer) -> None:
        server.pause(600)  # until the test closes the server

    server = raw(silent)
    hostile_run(daemon_factory, hooks, server.url("/"),
                lambda e: e in ("timeout", "response too slow"))  # fmt: skip
    assert all(c.request.startswith(b"POST / HTTP/1.1") for c in server.connections)


# --------------------------------------------------------------------------- many addresses


def private_hosts(tmp: Path, name: str, addresses: list[str]) -> list[str]:
    """A command prefix that runs the daemon with its own /etc/hosts, resolving only files.

    The daemon runs in a private mount namespace where ``name`` maps to
    ``addresses`` and the hosts database is the file alone, so no lookup can reach
    any DNS server. Checked before use; fails if the machine does not allow it.
    """
    hosts, nss = tmp / "hosts", tmp / "nsswitch.conf"
    hosts.write_text("".join(f"{ip} {name}\n" for ip in addresses))
    nss.write_text("hosts: files\n")
    script = (
        f'mount --bind {hosts} /etc/hosts && mount --bind {nss} /etc/nsswitch.conf && exec "$@"'
    )
    probe = (
        "import socket, sys; print(' '.join(sorted({a[4][0] for a in "
        f"socket.getaddrinfo({name!r}, 80, 0, socket.SOCK_STREAM)}})))"
    )
    tried = []
    for unshare in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        wrapper = [*unshare, "sh", "-c", script, "sh"]
        proc = subprocess.run([*wrapper, sys.executable, "-c", probe],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        if proc.returncode == 0 and proc.stdout.split() == sorted(addresses):
            return wrapper
        tried.append(f"{' '.join(unshare)}: {proc.returncode} {proc.stderr.strip()[-200:]}")
    pytest.fail("cannot give the daemon a private /etc/hosts: " + "; ".join(tried))


def test_a_host_resolving_to_many_blackholed_addresses_is_cut_at_the_deadline(
    hooks, daemon_factory, tmp_path
):
    with blackhole(8) as (addresses, port):
        wrapper = private_hosts(tmp_path, "blackhole.test", addresses)
        # One timeout per address would be 8 s; the whole attempt ends at its deadline.
        hostile_run(daemon_factory, hooks, f"http://blackhole.test:{port}/",
                    lambda e: e == "connect timeout", wrapper=wrapper)  # fmt: skip
