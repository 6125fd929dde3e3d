"""The API server's bounds and HTTP edges, over real HTTP on loopback.

The daemon's answers are tested in tests/integration/test_api.py; here the server runs
in-process for an App stand-in that holds a real loaded config and answers snapshots.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from router import api
from router.config import load

TOKEN = "wr_unit-test-token"


class StandIn:
    """What the API reads of ``App``: the config, the dispatcher's handles and snapshots."""

    def __init__(self, config):
        self.config = config
        self.dispatcher = self
        self.cluster = None  # one daemon on its own journal

    def get(self, name: str) -> str:
        return name

    def _snapshots(self, handles: list[str]) -> list[dict]:
        return [{"name": h, "state": "active", "health": "HEALTHY", "queued": 0} for h in handles]


@pytest.fixture
def server(tmp_path, monkeypatch):
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (tmp_path / "tokens.yaml").write_text(f"- {{name: t, sha256: {digest}, scope: read}}\n")
    (tmp_path / "router.yaml").write_text(
        "api: {bind: '127.0.0.1:0'}\nwebhooks:\n"
        "  - {name: a, url: 'http://127.0.0.1:1/a', allow_private_networks: true, "
        "signature: none}\n"
    )
    monkeypatch.setattr(api, "CONNECTION_DEADLINE", 0.5)
    monkeypatch.setattr(api._Handler, "timeout", 60.0)  # only the deadline can end a slow one
    s = api.ApiServer(("127.0.0.1", 0), StandIn(load(str(tmp_path / "router.yaml"), env={})))
    s.start()
    yield s
    s.stop()


def exchange(server: api.ApiServer, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes (30 s at most: far beyond any deadline)."""
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_token_reads_a_webhook_over_http(server):
    answer = exchange(
        server, f"GET /api/v1/webhooks/a HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Content-Type: application/json" in head and b"Cache-Control: no-store" in head
    shown = json.loads(body)
    assert (shown["name"], shown["state"], shown["signature"]) == ("a", "active", "none")


def test_a_client_that_never_finishes_its_request_is_cut_off_at_the_deadline(server):
    assert exchange(server, b"GET /api/v1/webhooks HTTP/1.1\r\nHost: x\r\n") == b""


def test_a_client_that_never_sends_its_body_is_cut_off_at_the_deadline(server):
    request = (
        f"POST /api/v1/webhooks HTTP/1.0\r\nContent-Length: 10\r\nAuthorization: Bearer {TOKEN}"
    )
    assert exchange(server, request.encode() + b"\r\n\r\n{") == b""


def test_requests_http_server_refuses_itself_are_answered_in_json(server):
    answer = exchange(server, b"GET /api/v1/webhooks HTTP/1.x\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 400 ")
    assert json.loads(body)["errors"][0]["message"].startswith("Bad request")
    answer = exchange(server, b"GET /api/v1/webhooks HTTP/1.0\r\nX: " + b"y" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 431 ")


def test_head_is_not_a_method_of_the_api_and_gets_no_body(server):
    answer = exchange(
        server, f"HEAD /api/v1/webhooks HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 405 ") and b"Allow: GET, POST" in head
    assert body == b""


def test_a_chunked_body_is_refused_since_its_size_is_unknown_up_front(server):
    answer = exchange(
        server,
        f"POST /api/v1/webhooks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.0 411 ")


def test_a_port_in_use_is_a_clear_error(server):
    other = api.ApiServer(server.address, server.app)
    with pytest.raises(api.RouterError, match=r"cannot serve the API on 127\.0\.0\.1:\d+"):
        other.start()


def test_paths_outside_the_api_are_404_without_asking_for_a_token(server):
    answer = exchange(server, b"GET /nothing HTTP/1.0\r\n\r\n")  # "/" is the console's
    assert answer.startswith(b"HTTP/1.0 404 ")
    assert b"the API is under /api/v1/" in answer


def test_a_method_nobody_knows_gets_a_json_405_like_any_other(server):
    answer = exchange(
        server, f"BREW /api/v1/webhooks HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 405 ")
    assert json.loads(body)["errors"] == [
        {"path": "method", "message": "BREW is not allowed here; use GET, POST"}
    ]
