"""The wiring, in-process: parts that die are noticed and restarted by their owner."""

import time

import msgpack
import pytest
import zmq

from router import config
from router.app import App
from router.receiver import Receiver


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(
        f"""
state_dir: ./state
metrics: {{bind: null}}
ingest: {{ack_bind: "ipc://{tmp_path}/ack.sock"}}
webhooks:
  - {{name: w, url: "http://127.0.0.1:9/", secret: s, signature: hmac-sha256-hex,
      allow_private_networks: true, enabled: false}}
"""
    )
    running = App(config.load(str(path)))
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
