"""The delivery pool against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import email.utils
import hmac
import json
import queue
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from standardwebhooks.webhooks import Webhook

import router.delivery
import router.guard
from router import __version__
from router.config import WebhookConfig
from router.delivery import HARD_DEADLINE, LEASE_GONE, DeliveryPool
from router.messages import Attempt, AttemptResult, Payload
from router.trust import Trust
from tests.builders import KEY, PAYLOAD, hook
from tests.hostile import blackhole

OLD_KEY = b"fedcba9876543210fedcba9876543210"


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


# --------------------------------------------------------------------------- the server


@dataclass
class Behaviour:
    """What the server does with the next requests; tests replace it."""

    status: int = 200
    body: bytes = b"thanks"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before answering
    drip: float | None = None  # seconds between single body bytes
    drip_headers: bool = False  # send the status line, then header bytes one by one
    chunked: bool = False  # Transfer-Encoding: chunked instead of Content-Length


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with server.lock:
            server.received.append(Received(self.path, dict(self.headers.items()), body))
        b = server.behaviour
        try:
            if b.delay:
                server.stopping.wait(b.delay)
            if b.drip_headers:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                while not server.stopping.wait(0.02):
                    self.wfile.write(b"x")
            self.send_response(b.status)
            for name, value in b.headers.items():
                self.send_header(name, value)
            if b.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (b.body[:3], b.body[3:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(b.body)))
            self.end_headers()
            if b.drip is None:
                self.wfile.write(b.body)
            else:
                for i in range(len(b.body)):
                    if server.stopping.wait(b.drip):
                        break
                    self.wfile.write(b.body[i : i + 1])
        except OSError:  # the client hung up, as it should on a hostile answer
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(context: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.connections = 0
    server.received = []
    server.behaviour = Behaviour()
    server.stopping = threading.Event()
    server.sni = []
    if context is not None:
        context.sni_callback = lambda sock, name, ctx: server.sni.append(name)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server():
    with serve() as s:
        yield s


@pytest.fixture
def pool():
    p = DeliveryPool(workers=4)
    p.start()
    yield p
    p.stop(5)


def deliver(
    pool: DeliveryPool, webhook: WebhookConfig, number: int = 1, wait: float = 10.0
) -> AttemptResult:
    """Submit one attempt and wait (with a deadline) for its result."""
    results: list[AttemptResult] = []
    done = threading.Event()

    def reply(result: AttemptResult) -> None:
        results.append(result)
        done.set()

    pool.submit(Attempt(webhook=webhook, seq=7, payload=PAYLOAD, number=number), reply)
    assert done.wait(wait), "no result before the deadline"
    return results[0]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


# --------------------------------------------------------------------------- signatures and body


def test_standard_signature_verifies_with_the_standard_webhooks_library(server, pool):
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/hook"))
    assert result.ok
    [request] = server.received
    assert Webhook(whsec(KEY)).verify(request.body, request.headers)["webhook"] == "crm-sync"


def test_rotation_sends_one_signature_per_secret_and_each_verifies(server, pool):
    deliver(pool, hook(f"http://127.0.0.1:{server.port}/", secrets=(KEY, OLD_KEY)))
    [request] = server.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for key in (KEY, OLD_KEY):
        Webhook(whsec(key)).verify(request.body, request.headers)


def test_hex_signature_goes_in_the_configured_header_with_the_newest_secret(server, pool):
    webhook = hook(
        f"http://127.0.0.1:{server.port}/",
        secrets=(KEY, OLD_KEY),
        signature="hmac-sha256-hex",
        signature_header="X-Blue-Signature",
    )
    deliver(pool, webhook)
    [request] = server.received
    assert request.headers["X-Blue-Signature"] == hmac.new(KEY, request.body, "sha256").hexdigest()
    assert "webhook-signature" not in request.headers


def test_none_signature_sends_no_signature_but_the_webhook_headers(server, pool):
    deliver(pool, hook(f"http://127.0.0.1:{server.port}/", signature="none"))
    [request] = server.received
    assert "webhook-signature" not in request.headers
    assert "X-Signature" not in request.headers
    assert request.headers["webhook-id"] == "evt_01"


def test_body_is_the_exact_payload_json_and_every_header_is_sent(server, pool):
    webhook = hook(f"http://127.0.0.1:{server.port}/in", headers=(("X-Tenant", "acme"),))
    before = int(time.time())
    deliver(pool, webhook, number=3)
    [request] = server.received
    assert request.path == "/in"
    assert request.body == PAYLOAD.for_webhook("crm-sync")
    assert json.loads(request.body)["data"] == {"title": "caf\u00e9"}
    h = request.headers
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"] == f"webhook-router/{__version__}"
    assert h["webhook-id"] == "evt_01"
    assert before <= int(h["webhook-timestamp"]) <= int(time.time())
    assert h["webhook-attempt"] == "3"
    assert h["X-Tenant"] == "acme"


# --------------------------------------------------------------------------- outcomes


def test_2xx_is_ok_with_status_latency_and_response(server, pool):
    server.behaviour = Behaviour(status=202, body=b"queued")
    before = time.time()
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/"))
    assert (result.ok, result.status, result.error, result.response) == (True, 202, None, "queued")
    assert (result.webhook, result.seq, result.number) == ("crm-sync", 7, 1)
    assert result.latency > 0
    assert before - 1 <= result.started_at <= time.time()


@pytest.mark.parametrize("status", [500, 404, 410])
def test_error_status_fails_with_the_status(server, pool, status):
    server.behaviour = Behaviour(status=status, body=b"nope")
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/"))
    assert not result.ok
    assert (result.status, result.error, result.response) == (status, f"HTTP {status}", "nope")


def test_redirect_is_not_followed(server, pool):
    server.behaviour = Behaviour(status=302, headers={"Location": "/elsewhere"})
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/"))
    assert not result.ok
    assert (result.status, result.error) == (302, "redirect not followed (HTTP 302)")
    assert [r.path for r in server.received] == ["/"]


def test_server_slower_than_the_timeout_is_a_timeout_within_bounded_time(server, pool):
    server.behaviour = Behaviour(delay=5.0)
    started = time.monotonic()
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/", timeout=0.3))
    assert (result.ok, result.status, result.error) == (False, None, "timeout")
    assert time.monotonic() - started < 5.0  # the server's delay: it did not wait for it


def test_closed_port_is_connection_refused(pool):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = deliver(pool, hook(f"http://127.0.0.1:{port}/"))
    assert (result.ok, result.status, result.error) == (False, None, "connection refused")


@pytest.mark.parametrize(("status", "expected"), [(429, 120.0), (503, 120.0), (500, None)])
def test_retry_after_seconds_count_on_429_and_503_only(server, pool, status, expected):
    server.behaviour = Behaviour(status=status, headers={"Retry-After": "120"})
    assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).retry_after == expected


def test_retry_after_http_date_becomes_seconds_from_now(server, pool):
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.behaviour = Behaviour(status=503, headers={"Retry-After": date})
    retry_after = deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).retry_after
    assert 27 <= retry_after <= 31


def test_unreadable_retry_after_is_ignored(server, pool):
    server.behaviour = Behaviour(status=429, headers={"Retry-After": "soon"})
    assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).retry_after is None


def test_response_is_cut_at_64_kib_and_its_connection_is_not_reused(server, pool):
    server.behaviour = Behaviour(body=b"a" * (1024 * 1024))
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    result = deliver(pool, webhook)
    assert result.ok
    assert len(result.response) == 65536
    server.behaviour = Behaviour()
    deliver(pool, webhook)
    assert server.connections == 2


def test_attempts_to_one_server_reuse_one_connection(server, pool):
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    assert deliver(pool, webhook).ok
    assert deliver(pool, webhook).ok
    assert len(server.received) == 2
    assert server.connections == 1


def test_chunked_response_is_read_whole_and_its_connection_reused(server, pool):
    server.behaviour = Behaviour(body=b"accepted", chunked=True)
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    assert deliver(pool, webhook).response == "accepted"
    assert deliver(pool, webhook).response == "accepted"
    assert server.connections == 1


def test_an_empty_204_counts_as_complete_and_keeps_its_connection(server, pool):
    server.behaviour = Behaviour(status=204, body=b"")
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    results = [deliver(pool, webhook), deliver(pool, webhook)]
    assert [(r.ok, r.status, r.response) for r in results] == [(True, 204, "")] * 2
    assert server.connections == 1


def test_origins_past_the_bound_let_go_of_their_connections_least_recent_first(server, monkeypatch):
    monkeypatch.setattr(router.delivery, "NUM_POOLS", 2)
    names = {name: ["127.0.0.1"] for name in ("a.test", "b.test", "c.test")}
    opened = []
    with running(workers=1, resolve=stub_resolver(names)) as pool:
        for name in ("a", "b", "a", "c", "a", "b"):
            assert deliver(pool, hook(f"http://{name}.test:{server.port}/")).ok
            opened.append(server.connections)
    # a is used again before c comes, so b is the one let go; a keeps its connection.
    assert opened == [1, 2, 2, 3, 3, 4]


def test_guarded_and_unguarded_webhooks_never_share_a_connection(server, pool):
    url = f"http://127.0.0.1:{server.port}/"
    assert deliver(pool, hook(url, allow_private_networks=True)).ok
    guarded = deliver(pool, hook(url, allow_private_networks=False))
    assert (guarded.ok, guarded.error) == (False, "blocked address 127.0.0.1")
    assert len(server.received) == 1


def test_each_config_sends_its_own_url_and_headers_also_after_a_reload(server, pool):
    for n in range(30):  # new config objects, as a reload makes; freed ones may reuse an id
        webhook = hook(f"http://127.0.0.1:{server.port}/v{n}", headers=(("X-Version", str(n)),))
        assert deliver(pool, webhook).ok
        del webhook
    assert [(r.path, r.headers["X-Version"]) for r in server.received] == [
        (f"/v{n}", str(n)) for n in range(30)
    ]


@pytest.mark.parametrize("url", ["http:///no-host", "ftp://127.0.0.1/", "http://[::1/"])
def test_a_url_that_names_no_http_origin_is_an_invalid_url(pool, url):
    result = deliver(pool, hook(url))
    assert (result.ok, result.error, result.router_fault) == (False, "invalid URL", False)


def test_dripping_headers_are_cut_within_twice_the_timeout(server, pool):
    server.behaviour = Behaviour(drip_headers=True)
    started = time.monotonic()
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/", timeout=0.5))
    assert (result.ok, result.status, result.error) == (False, None, "response too slow")
    assert time.monotonic() - started < 5.0  # the drip never ends: only the cut stops it


def test_dripping_body_ends_the_attempt_near_the_timeout_keeping_the_status(server, pool):
    server.behaviour = Behaviour(body=b"b" * 1000, drip=0.01)
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/", timeout=0.4))
    assert (result.ok, result.status) == (True, 200)
    assert 0 < len(result.response) < 1000  # cut before the 10 s drip ended


# --------------------------------------------------------------------------- private networks


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_address_is_refused_without_allow_private_networks(server, pool, host):
    webhook = hook(f"http://{host}:{server.port}/", allow_private_networks=False)
    result = deliver(pool, webhook)
    assert not result.ok
    assert result.error.startswith("blocked address ")
    assert server.connections == 0


def test_private_address_is_reached_with_allow_private_networks(server, pool):
    assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).ok


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def certificate(tmp_path):
    """A test CA, and a server certificate it issued for the name ``localhost`` only."""
    ca = trustme.CA()
    cert = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    return cert, context


def test_guarded_https_verifies_the_host_name_and_sends_sni(certificate, pool, monkeypatch):
    cert, context = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(router.guard, "is_blocked", lambda ip: False)
    with serve(context) as tls:
        by_name = deliver(
            pool, hook(f"https://localhost:{tls.port}/", allow_private_networks=False)
        )
        ip = deliver(pool, hook(f"https://127.0.0.1:{tls.port}/", allow_private_networks=False))
    assert by_name.ok, by_name.error
    assert tls.sni[0] == "localhost"  # the IP-address attempt sends no SNI
    assert not ip.ok
    assert ip.error.startswith("TLS error: ")


def test_untrusted_certificate_is_a_tls_error(certificate, pool):
    with serve(certificate[1]) as tls:
        result = deliver(pool, hook(f"https://localhost:{tls.port}/"))
    assert not result.ok
    assert result.error.startswith("TLS error: ")
    assert "certificate verify failed" in result.error


# --------------------------------------------------------------------------- the pool itself


def test_reply_callback_that_raises_does_not_kill_the_pool(server):
    pool = DeliveryPool(workers=1)
    pool.start()
    try:
        webhook = hook(f"http://127.0.0.1:{server.port}/")

        def explode(result: AttemptResult) -> None:
            raise RuntimeError("callback bug")

        pool.submit(Attempt(webhook=webhook, seq=1, payload=PAYLOAD, number=1), explode)
        assert deliver(pool, webhook).ok
        assert len(server.received) == 2
    finally:
        pool.stop(5)


def test_stop_finishes_running_attempts_and_drops_queued_ones(server):
    pool = DeliveryPool(workers=1)
    pool.start()
    server.behaviour = Behaviour(delay=0.3)
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    results: list[AttemptResult] = []
    for seq in (1, 2, 3):
        pool.submit(Attempt(webhook=webhook, seq=seq, payload=PAYLOAD, number=1), results.append)
    wait_for(lambda: len(server.received) == 1)
    pool.stop(5)
    assert [r.seq for r in results] == [1]
    assert results[0].ok
    assert len(server.received) == 1
    pool.submit(Attempt(webhook=webhook, seq=4, payload=PAYLOAD, number=1), results.append)
    assert len(results) == 1


def test_workers_are_named_non_daemon_threads():
    pool = DeliveryPool(workers=2)
    pool.start()
    try:
        names = {t.name: t.daemon for t in threading.enumerate() if t.name.startswith("delivery-")}
        assert names["delivery-1"] is False
        assert names["delivery-2"] is False
    finally:
        pool.stop(5)
    assert not any(t.name in ("delivery-1", "delivery-2") for t in threading.enumerate())


def test_secret_never_appears_in_logs(server, pool, caplog):
    caplog.set_level("DEBUG")
    server.behaviour = Behaviour(status=500)
    deliver(pool, hook(f"http://127.0.0.1:{server.port}/"))
    deliver(pool, hook(f"http://127.0.0.1:{server.port}/", allow_private_networks=False))
    assert "crm-sync: event evt_01 attempt 1 failed: HTTP 500" in caplog.text
    assert KEY.decode() not in caplog.text
    assert base64.b64encode(KEY).decode() not in caplog.text
    assert "webhook-signature" not in caplog.text.lower()


def pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("delivery-")]


@pytest.mark.parametrize("timeout", [0.0, 5.0])
def test_stopping_64_idle_workers_is_quick_quiet_and_leaves_no_thread(caplog, timeout):
    pool = DeliveryPool(workers=64)
    pool.start()
    caplog.set_level("INFO", logger="router.delivery")
    started = time.monotonic()
    pool.stop(timeout)
    assert time.monotonic() - started < 5.0  # idle workers never wait for the timeout
    assert "still running" not in caplog.text
    assert pool_threads() == []


def test_stop_counts_only_attempts_that_are_running_and_cuts_them(server, caplog):
    pool = DeliveryPool(workers=8)
    pool.start()
    server.behaviour = Behaviour(delay=30.0)
    results: list[AttemptResult] = []
    webhook = hook(f"http://127.0.0.1:{server.port}/", timeout=20.0)
    pool.submit(Attempt(webhook=webhook, seq=1, payload=PAYLOAD, number=1), results.append)
    wait_for(lambda: len(server.received) == 1)
    caplog.set_level("INFO", logger="router.delivery")
    started = time.monotonic()
    pool.stop(0.2)
    assert time.monotonic() - started < 20.0  # cut, not left to the attempt's own timeout
    assert "delivery pool stopped with 1 attempts still running" in caplog.text
    assert "delivery-watchdog" not in pool_threads()
    wait_for(lambda: pool_threads() == [], timeout=2.0)  # the cut ends the stuck attempt
    assert [(r.ok, r.error) for r in results] == [(False, "response too slow")]


# --------------------------------------------------------------------------- one deadline


def stub_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A getaddrinfo that answers names from ``table`` (IPv4 only) and never asks DNS."""

    def lookup(host, port, family=0, type=0, proto=0, flags=0):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    return lookup


@contextmanager
def hanging_resolver():
    """A getaddrinfo stuck on every name until the test ends, recording the names asked.

    Addresses it answers at once, as the real one does without asking DNS.
    """
    release, calls = threading.Event(), []

    def lookup(host, port, family=0, type=0, proto=0, flags=0):
        if host[0].isdigit():
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        calls.append(host)
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    try:
        yield lookup, calls, release
    finally:
        release.set()


@contextmanager
def running(**kwargs):
    pool = DeliveryPool(**kwargs)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop(5)


def test_a_hanging_lookup_fails_the_attempt_and_frees_the_worker(server):
    with hanging_resolver() as (lookup, calls, release), running(workers=1, resolve=lookup) as pool:
        stuck = deliver(pool, hook(f"http://stuck.test:{server.port}/", timeout=1.0))
        # The one worker is free again although the lookup still hangs.
        assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).ok
        assert not release.is_set() and calls == ["stuck.test"]
    assert (stuck.ok, stuck.error, stuck.router_fault) == (False, "timeout resolving host", False)
    assert stuck.latency <= 1.0 * HARD_DEADLINE + 1.0


def test_when_every_resolver_thread_is_stuck_a_lookup_fails_at_once(server):
    with (
        hanging_resolver() as (lookup, calls, _),
        running(workers=4, resolve=lookup, resolver_threads=2) as pool,
    ):
        # A timeout long enough for a resolver thread to start on a busy machine.
        first = [deliver(pool, hook(f"http://stuck{n}.test:{server.port}/", timeout=1.0))
                 for n in (1, 2)]  # fmt: skip
        third = deliver(pool, hook(f"http://stuck3.test:{server.port}/", timeout=1.0))
        assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).ok  # literals need none
    assert [r.error for r in first] == ["timeout resolving host"] * 2
    assert third.error == "timeout resolving host: all 2 resolver threads are stuck"
    assert calls == ["stuck1.test", "stuck2.test"]  # the third never waited for a thread


def test_an_unknown_name_is_a_resolution_error():
    with running(workers=1, resolve=stub_resolver({})) as pool:
        result = deliver(pool, hook("http://nowhere.test/"))
    assert (result.ok, result.error) == (False, "connection error: cannot resolve nowhere.test")


@pytest.mark.parametrize("guarded", [False, True])
def test_many_blackholed_addresses_are_cut_at_the_deadline(monkeypatch, guarded):
    monkeypatch.setattr(router.guard, "is_blocked", lambda ip: False)  # loopback stands in
    with blackhole(8) as (addresses, port):
        lookup = stub_resolver({"many.test": addresses})
        with running(workers=1, resolve=lookup) as pool:
            webhook = hook(f"http://many.test:{port}/", timeout=0.4,
                           allow_private_networks=not guarded)  # fmt: skip
            result = deliver(pool, webhook)
    assert (result.ok, result.error) == (False, "connect timeout")
    # 8 addresses times the timeout would be 3.2 s: the attempt ends at its deadline instead.
    assert result.latency <= 0.4 * HARD_DEADLINE + 1.0


def test_a_refused_address_is_skipped_for_the_next_one(server):
    with socket.socket() as closed:
        closed.bind(("127.0.0.3", server.port))  # bound, never listening: refuses
        lookup = stub_resolver({"two.test": ["127.0.0.3", "127.0.0.1"]})
        with running(workers=1, resolve=lookup) as pool:
            assert deliver(pool, hook(f"http://two.test:{server.port}/")).ok


def test_a_blackholed_address_leaves_the_rest_of_the_deadline_to_the_next(server):
    with blackhole(1) as ([dead], _):
        lookup = stub_resolver({"two.test": [dead, "127.0.0.1"]})
        with running(workers=1, resolve=lookup) as pool:
            # The first connect takes the whole timeout; the second gets what is left.
            result = deliver(pool, hook(f"http://two.test:{server.port}/", timeout=2.0))
    assert result.ok, result.error
    assert len(server.received) == 1


def test_a_blocked_address_is_refused_whatever_the_resolver_says(server):
    with running(workers=1, resolve=stub_resolver({"evil.test": ["127.0.0.1"]})) as pool:
        webhook = hook(f"http://evil.test:{server.port}/", allow_private_networks=False)
        result = deliver(pool, webhook)
    assert (result.error, result.router_fault) == ("blocked address 127.0.0.1", False)
    assert server.connections == 0


def test_a_server_that_never_completes_the_tls_handshake_is_cut_at_the_deadline():
    with socket.create_server(("127.0.0.1", 0)) as silent, running(workers=1) as pool:
        port = silent.getsockname()[1]  # the kernel accepts; nobody ever answers
        result = deliver(pool, hook(f"https://127.0.0.1:{port}/", timeout=0.3))
    # The handshake's read times out, or the watchdog cuts it while connecting.
    assert (result.ok, result.error in ("timeout", "connect timeout")) == (False, True)
    assert result.latency <= 0.3 * HARD_DEADLINE + 1.0


# --------------------------------------------------------------------------- faults that are ours


@pytest.mark.parametrize("event_id", ["订单-1", "a\r\nX-Injected: 1", "a\nb", "nul\x00", "del\x7f"])
def test_an_event_id_that_cannot_go_in_a_header_is_a_router_fault(server, pool, event_id):
    payload = Payload(id=event_id, type="T", body=f'{{"id":{json.dumps(event_id)}')
    results: list[AttemptResult] = []
    done = threading.Event()
    attempt = Attempt(webhook=hook(f"http://127.0.0.1:{server.port}/"), seq=1,
                      payload=payload, number=1)  # fmt: skip
    pool.submit(attempt, lambda r: (results.append(r), done.set()))
    assert done.wait(10)
    [result] = results
    assert (result.ok, result.status, result.router_fault) == (False, None, True)
    assert result.error == (
        "internal error: cannot build the request: the event id cannot go in an HTTP header"
    )
    assert server.received == []
    assert deliver(pool, hook(f"http://127.0.0.1:{server.port}/")).ok  # the next one goes out


def test_a_static_header_that_cannot_be_sent_is_named_without_its_value(server, pool):
    webhook = hook(f"http://127.0.0.1:{server.port}/", headers=(("X-Tenant", "s3cr3t\r\nX: y"),))
    result = deliver(pool, webhook)
    assert result.router_fault
    assert result.error == (
        "internal error: cannot build the request: the value of header X-Tenant cannot go in"
        " an HTTP header"
    )
    assert "s3cr3t" not in result.error


def test_signing_that_raises_is_a_router_fault_without_the_secret(server, pool):
    result = deliver(pool, hook(f"http://127.0.0.1:{server.port}/", signature="bogus"))
    assert (result.ok, result.router_fault) == (False, True)
    assert result.error == "internal error: cannot build the request: signing failed (ValueError)"
    assert server.received == []


def test_an_unexpected_exception_while_sending_is_a_router_fault():
    def broken(host, port, family=0, type=0, proto=0, flags=0):
        raise RuntimeError("a bug of ours")

    with running(workers=1, resolve=broken) as pool:
        result = deliver(pool, hook("http://broken.test/"))
    assert (result.router_fault, result.error) == (
        True, "internal error: cannot send the request (RuntimeError)"
    )  # fmt: skip


def test_network_and_endpoint_failures_are_never_router_faults(server, pool):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = deliver(pool, hook(f"http://127.0.0.1:{s.getsockname()[1]}/"))
    server.behaviour = Behaviour(status=500)
    error = deliver(pool, hook(f"http://127.0.0.1:{server.port}/"))
    server.behaviour = Behaviour(delay=2.0)
    slow = deliver(pool, hook(f"http://127.0.0.1:{server.port}/", timeout=0.2))
    assert [(r.error, r.router_fault) for r in (refused, error, slow)] == [
        ("connection refused", False), ("HTTP 500", False), ("timeout", False),
    ]  # fmt: skip


def test_an_attempt_goes_out_only_while_the_leases_trust_allows_it(server):
    """A daemon that was paused past its lease (SPEC §8) sends nothing for the webhook."""
    trust = Trust()
    pool = DeliveryPool(workers=1, trust=trust)
    pool.start()
    webhook = hook(f"http://127.0.0.1:{server.port}/")
    results: queue.Queue[AttemptResult] = queue.Queue()
    try:
        trust.renewed(time.monotonic() - 0.001)  # the last renewal is too long ago
        pool.submit(Attempt(webhook, 1, PAYLOAD, 1, trust.generation), results.put)
        late = results.get(timeout=10)
        assert (late.ok, late.error, late.router_fault) == (False, LEASE_GONE, True)
        assert server.received == []
        handed = trust.generation
        trust.renewed(time.monotonic() + 60)  # renewed after the hand-off: it counts
        pool.submit(Attempt(webhook, 1, PAYLOAD, 1, handed), results.put)
        assert results.get(timeout=10).ok and len(server.received) == 1
        trust.lose()
        trust.renewed(time.monotonic() + 60)  # leases held again, but not the ones it had
        pool.submit(Attempt(webhook, 1, PAYLOAD, 1, handed), results.put)
        assert results.get(timeout=10).error == LEASE_GONE and len(server.received) == 1
        pool.submit(Attempt(webhook, 1, PAYLOAD, 1), results.put)  # no lease: one daemon
        assert results.get(timeout=10).ok and len(server.received) == 2
    finally:
        pool.stop(5)
