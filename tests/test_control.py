"""The control socket: a real ControlServer on an ipc:// path, a fake App behind it."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

import msgpack
import pytest
import zmq

from router import ControlError, RouterError
from router.control import MAX_REQUESTS, ControlServer, NotReachable, request

STATUS = {
    "webhooks": [{"name": "crm-sync", "state": "active", "queued": 0}],
    "events": {"received": 1, "rejected": 0, "duplicates": 0},
    "version": "0.1.0",
    "uptime": 1.5,
}


class FakeApp:
    """Implements the App interface the control server calls; records the calls."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def _known(self, name: str) -> None:
        if name != "crm-sync":
            raise RouterError(f"no webhook named {name!r}")

    def status(self) -> dict:
        self.calls.append(("status",))
        return STATUS

    def enable(self, name: str) -> dict:
        self.calls.append(("enable", name))
        self._known(name)
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("the test never released enable")
        return {"webhook": name, "ok": True, "state": "active", "detail": "HTTP 200"}

    def disable(self, name: str) -> dict:
        self.calls.append(("disable", name))
        self._known(name)
        return {"webhook": name, "ok": True, "state": "disabled", "detail": None}

    def replay(
        self, name: str, since: float | None, failed_only: bool, until=None, event=None
    ) -> dict:
        self.calls.append(("replay", name, since, failed_only, until, event))
        self._known(name)
        return {"webhook": name, "requeued": 3}

    def reload(self) -> dict:
        self.calls.append(("reload",))
        return {"ok": True, "errors": [], "added": ["new"], "removed": [], "changed": []}

    def attempts(
        self, name: str, limit: int, failed: bool = False, event: str | None = None
    ) -> list[dict]:
        self.calls.append(("attempts", name, limit, failed, event))
        self._known(name)
        return [
            {
                "id": "e1",
                "attempt": 1,
                "at": 1.0,
                "status": 500,
                "error": "HTTP 500",
                "latency_ms": 2.0,
                "response": "oops",
            }
        ][:limit]

    def healthy(self) -> bool:
        return True


@pytest.fixture
def app():
    fake = FakeApp()
    yield fake
    fake.release.set()


@pytest.fixture
def server(tmp_path, app):
    srv = ControlServer(f"ipc://{tmp_path}/run/control.sock", app)
    srv.start()
    yield srv
    srv.stop()


def test_every_command_round_trips_to_the_app(server, app):
    addr = server.address
    assert request(addr, "status") == STATUS
    assert request(addr, "enable", {"name": "crm-sync"})["state"] == "active"
    assert request(addr, "disable", {"name": "crm-sync"})["state"] == "disabled"
    replay = {"name": "crm-sync", "since": 100.0, "until": 200, "event": "evt-1",
              "failed_only": True}  # fmt: skip
    assert request(addr, "replay", replay) == {"webhook": "crm-sync", "requeued": 3}
    assert request(addr, "reload")["added"] == ["new"]
    query = {"name": "crm-sync", "limit": 5, "failed": True, "event": "evt-1"}
    assert request(addr, "attempts", query)[0]["error"] == "HTTP 500"
    assert app.calls == [
        ("status",),
        ("enable", "crm-sync"),
        ("disable", "crm-sync"),
        ("replay", "crm-sync", 100.0, True, 200.0, "evt-1"),
        ("reload",),
        ("attempts", "crm-sync", 5, True, "evt-1"),
    ]


def test_replay_and_attempts_have_defaults(server, app):
    request(server.address, "replay", {"name": "crm-sync"})
    request(server.address, "attempts", {"name": "crm-sync"})
    assert app.calls == [
        ("replay", "crm-sync", None, False, None, None),
        ("attempts", "crm-sync", 20, False, None),
    ]


def test_socket_file_is_owner_only(server, tmp_path):
    mode = os.stat(tmp_path / "run" / "control.sock").st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_unknown_command_gives_an_error_reply(server):
    with pytest.raises(ControlError, match="unknown command 'explode'"):
        request(server.address, "explode")


def test_router_error_gives_an_error_reply(server):
    with pytest.raises(ControlError, match="no webhook named 'nope'") as caught:
        request(server.address, "disable", {"name": "nope"})
    assert not isinstance(caught.value, NotReachable)


@pytest.mark.parametrize(
    ("cmd", "args", "message"),
    [
        ("enable", {}, "'name' must be a webhook name"),
        ("enable", {"name": 7}, "'name' must be a webhook name"),
        ("replay", {"name": "crm-sync", "since": "yesterday"}, "'since' must be epoch"),
        ("replay", {"name": "crm-sync", "failed_only": "yes"}, "'failed_only' must be"),
        ("attempts", {"name": "crm-sync", "limit": 0}, "'limit' must be"),
        ("attempts", {"name": "crm-sync", "failed": "yes"}, "'failed' must be"),
        ("attempts", {"name": "crm-sync", "event": 7}, "'event' must be an event id"),
        ("status", {"verbose": True}, "unknown argument"),
    ],
)
def test_bad_arguments_give_an_error_reply(server, app, cmd, args, message):
    with pytest.raises(ControlError, match=message):
        request(server.address, cmd, args)
    assert request(server.address, "status") == STATUS  # and the server goes on


def test_garbage_frames_are_answered_not_fatal(server):
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.REQ) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.address)
        sock.send(b"\xc1 not msgpack")
        assert sock.poll(5000)
        assert msgpack.unpackb(sock.recv()) == {
            "ok": False,
            "error": "request is not a msgpack map",
        }
    assert request(server.address, "status") == STATUS


def test_an_unexpected_exception_is_an_error_reply(server, app, monkeypatch):
    def boom():
        raise ValueError("secret-ish internals")

    monkeypatch.setattr(app, "reload", boom)
    with pytest.raises(ControlError, match="reload failed inside the router") as caught:
        request(server.address, "reload")
    assert "internals" not in str(caught.value)


def test_slow_enable_does_not_block_a_concurrent_status(server, app):
    app.release.clear()
    answers = []
    slow = threading.Thread(
        target=lambda: answers.append(request(server.address, "enable", {"name": "crm-sync"}))
    )
    slow.start()
    assert app.entered.wait(5)
    assert request(server.address, "status", timeout=2) == STATUS
    assert answers == []  # enable is still waiting on its health check
    app.release.set()
    slow.join(5)
    assert answers[0]["ok"] is True


def test_too_many_concurrent_requests_get_a_busy_reply(server, app):
    app.release.clear()
    errors: list[str] = []

    def enable():
        try:
            request(server.address, "enable", {"name": "crm-sync"})
        except ControlError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=enable) for _ in range(MAX_REQUESTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while sum(c[0] == "enable" for c in app.calls) < MAX_REQUESTS:
        assert time.monotonic() < deadline, "the enables never all started"
        time.sleep(0.01)
    with pytest.raises(ControlError, match="busy"):
        request(server.address, "status", timeout=2)
    app.release.set()
    for t in threads:
        t.join(5)
    assert errors == []
    assert request(server.address, "status") == STATUS  # slots are given back


def test_client_times_out_quickly_when_nothing_answers(tmp_path):
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.ROUTER) as silent:  # takes requests, never answers
        silent.setsockopt(zmq.LINGER, 0)
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        addr = f"tcp://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(NotReachable, match=r"no answer from the router at .* within 0.3s"):
            request(addr, "status", timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 10  # its own 0.3 s, not the default 10 s


def test_client_fails_at_once_when_there_is_no_socket_file(tmp_path):
    started = time.monotonic()
    with pytest.raises(NotReachable, match="is it running"):
        request(f"ipc://{tmp_path}/missing.sock", "status", timeout=60)
    assert time.monotonic() - started < 30  # not the timeout: at once


def test_server_on_tcp_reports_its_real_port(app):
    srv = ControlServer("tcp://127.0.0.1:0", app)
    srv.start()
    try:
        assert not srv.address.endswith(":0")
        assert request(srv.address, "status") == STATUS
    finally:
        srv.stop()


def test_unbindable_address_raises_on_start(app):
    srv = ControlServer("tcp://256.0.0.1:1", app)
    with pytest.raises(RouterError, match="cannot bind the control socket"):
        srv.start()


def test_stop_releases_the_address_for_a_new_server(tmp_path, app):
    addr = f"ipc://{tmp_path}/control.sock"
    first = ControlServer(addr, app)
    first.start()
    first.stop()
    second = ControlServer(addr, app)
    second.start()
    try:
        assert request(addr, "status") == STATUS
    finally:
        second.stop()


def test_client_fails_at_once_on_a_stale_socket_file(tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))  # left behind as by a killed router
    stale.close()
    started = time.monotonic()
    with pytest.raises(NotReachable, match="is it running"):
        request(f"ipc://{tmp_path}/control.sock", "status", timeout=60)
    assert time.monotonic() - started < 30  # not the timeout: at once


def test_a_request_that_gets_no_thread_is_answered_and_gives_its_slot_back(
    server, monkeypatch, caplog
):
    real_start = threading.Thread.start

    def refuse(thread):
        if thread.name == "control-request":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    for _ in range(MAX_REQUESTS + 1):  # more than the slots: each one was given back
        with pytest.raises(ControlError, match="cannot start a thread for the request"):
            request(server.address, "status", timeout=5)
    assert "control: cannot start a thread for a request" in caplog.text
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert request(server.address, "status") == STATUS
