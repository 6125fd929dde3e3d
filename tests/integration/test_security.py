"""CURVE on the ingest socket, and the private-network guard, on the running daemon."""

import socket

import msgpack
import zmq
import zmq.auth

from tests.integration.conftest import wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_curve_lets_authorized_producers_in_and_no_one_else(hooks, daemon_factory, tmp_path):
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    keys.mkdir()
    clients.mkdir()
    server_public, server_file = zmq.auth.create_certificates(keys, "server")
    _, client_secret_file = zmq.auth.create_certificates(keys, "client")
    (clients / "client.key").write_bytes((keys / "client.key").read_bytes())
    _, stranger_secret_file = zmq.auth.create_certificates(keys, "stranger")
    port = _free_port()
    d = daemon_factory([{"name": "c", "url": hooks.url("/c")}])
    d.settings["ingest"] = {
        "ack_bind": f"tcp://127.0.0.1:{port}",
        "curve": {"secret_key_file": str(server_file), "authorized_keys_dir": str(clients)},
    }
    d.write()
    d.start()
    server_key, _ = zmq.auth.load_certificate(server_public)

    def send(secret_file, event_id: str, timeout_ms: int) -> dict | None:
        public, secret = zmq.auth.load_certificate(secret_file)
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = (
            public,
            secret,
            server_key,
        )
        try:
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.send(msgpack.packb({"type": "T", "id": event_id}))
            return msgpack.unpackb(sock.recv()) if sock.poll(timeout_ms) else None
        finally:
            sock.close()

    assert send(client_secret_file, "friend", 10_000) == {"ok": True, "id": "friend"}
    proc = d.cli(
        "send",
        "T",
        "--id",
        "by-cli",
        "--ack",
        "--to",
        f"tcp://127.0.0.1:{port}",
        "--curve-server",
        str(server_public),
        "--curve-client",
        str(client_secret_file),
    )
    assert proc.returncode == 0 and "ok by-cli" in proc.stdout, proc.stdout + proc.stderr
    assert send(stranger_secret_file, "stranger", 1_000) is None  # nothing in, nothing back
    wait_until(lambda: sorted(hooks.ids("/c")) == ["by-cli", "friend"], what="authorized events")
    assert d.status()["events"]["received"] == 2


def test_a_host_that_resolves_to_loopback_is_blocked_at_connect_time(hooks, daemon_factory):
    # "127.1" is no IP literal to the config check, but the resolver makes it 127.0.0.1:
    # the guard must catch it when connecting, and the endpoint must see nothing.
    d = daemon_factory(
        [
            {
                "name": "guarded",
                "url": f"http://127.1:{hooks.port}/g",
                "allow_private_networks": False,
                "retry": {"attempts": 1},
            }
        ]
    )
    assert d.cli("check").returncode == 0
    d.start()
    d.send({"type": "T", "id": "ssrf"})
    w = wait_until(
        lambda: d.webhook("guarded")["state"] == "disabled" and d.webhook("guarded"),
        what="the blocked delivery",
    )
    assert w["last_error"].startswith("blocked address 127.0.0.1")
    assert hooks.requests == []
