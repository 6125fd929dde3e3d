"""The wiring, in-process: parts that die are noticed and restarted (or rebuilt) by their owner."""

import time

import msgpack
import pytest
import zmq

from router import config
from router.app import App
from router.messages import AttemptResult
from router.receiver import Receiver
from router.supervisor import Supervisor
from tests.integration.conftest import HookServer, wait_until


def app_for(tmp_path, webhook: str) -> App:
    """An App (not started) on a config with one webhook, given as a YAML flow mapping."""
    path = tmp_path / "router.yaml"
    path.write_text(
        f"""
state_dir: ./state
metrics: {{bind: null}}
ingest: {{ack_bind: "ipc://{tmp_path}/ack.sock"}}
webhooks:
  - {webhook}
"""
    )
    return App(config.load(str(path)))


@pytest.fixture
def app(tmp_path):
    running = app_for(
        tmp_path,
        '{name: w, url: "http://127.0.0.1:9/", secret: s, signature: hmac-sha256-hex,'
        " allow_private_networks: true, enabled: false}",
    )
    running.start()
    yield running
    running.stop()


def ack(app: App, event_id: str) -> dict:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(app.config.ingest.ack_bind)
        sock.send(msgpack.packb({"type": "T", "id": event_id}))
        assert sock.poll(10_000), "no ack"
        return msgpack.unpackb(sock.recv())
    finally:
        sock.close()


def test_a_receiver_that_died_is_restarted_on_the_same_address(app, monkeypatch):
    assert ack(app, "before") == {"ok": True, "id": "before"}

    def boom(self, message):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(Receiver, "on_receive", boom)
    dead = app.receiver
    dead.tell("anything")
    deadline = time.monotonic() + 5
    while dead.is_alive():
        assert time.monotonic() < deadline, "the receiver did not die"
        time.sleep(0.01)
    monkeypatch.undo()
    app._check_actors()
    assert app.receiver is not dead and app.receiver.is_alive()
    assert ack(app, "after") == {"ok": True, "id": "after"}


def test_a_filter_that_died_is_restarted(app):
    app.filter.stop()
    app._check_actors()
    assert app.filter.is_alive()
    # An ack comes only after the filter routed the event to the journal.
    assert ack(app, "routed") == {"ok": True, "id": "routed"}


def test_an_ordered_webhook_goes_on_after_its_supervisor_died_with_a_result_unread(
    tmp_path, monkeypatch
):
    hooks = HookServer()
    app = app_for(
        tmp_path,
        f'{{name: o, url: "{hooks.url("/o")}", secret: s, allow_private_networks: true,'
        " ordered: true}",
    )
    real = Supervisor.on_receive
    lost: list = []

    def dies_on_the_first_result(self, message):
        inner = getattr(message, "message", message)  # an answer may come wrapped
        if isinstance(inner, AttemptResult) and not lost:
            lost.append(inner)
            raise RuntimeError("simulated bug: the result is lost with the actor")
        return real(self, message)

    monkeypatch.setattr(Supervisor, "on_receive", dies_on_the_first_result)
    app.start()
    try:
        assert ack(app, "first")["ok"] and ack(app, "second")["ok"]
        handle = app.dispatcher["o"]
        wait_until(lambda: lost and (handle.restarts or handle.dead()), what="the death")
        app._check_actors()  # what the main loop does every few seconds
        wait_until(lambda: hooks.ids("/o")[-1:] == ["second"], what="the second event")
        # The lost result's delivery was pending in the journal: sent again, still in order.
        assert hooks.ids("/o") == ["first", "first", "second"]
    finally:
        app.stop()
        hooks.close()
