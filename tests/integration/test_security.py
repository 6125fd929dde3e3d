"""CURVE, the private-network guard, and secrets and access (issue 6, point 9), on the daemon."""

import http.client
import json
import os
import socket

import msgpack
import zmq
import zmq.auth
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.integration.conftest import Reply, wait_until


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


# --------------------------------------------------------------------------- secrets and access

TOKEN = "T0KEN-in-the-path-9f3c"  # where Slack and Discord URLs carry theirs
QUERY = "q-t0ken-5e1d"
PASSWORD = "pw-t0ken-77aa"


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # no proxy, loopback only
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_status_metrics_and_logs_show_a_webhook_url_as_scheme_host_and_port_only(
    hooks, daemon_factory
):
    closed = _free_port()  # nothing listens: every attempt fails, so errors and logs are made
    hooks.default(f"/services/{TOKEN}?token={QUERY}", Reply(status=500))
    port = _free_port()
    d = daemon_factory(
        [
            {"name": "slack", "url": f"http://u:{PASSWORD}@127.0.0.1:{hooks.port}/services/"
             f"{TOKEN}?token={QUERY}", "retry": {"attempts": 1}},
            {"name": "dead", "url": f"http://127.0.0.1:{closed}/api/webhooks/{TOKEN}",
             "retry": {"attempts": 1}},
        ],
        metrics={"bind": f"127.0.0.1:{port}"},
    )  # fmt: skip
    check = d.cli("check")
    assert check.returncode == 0, check.stderr
    d.start()
    d.send({"type": "T", "id": "e1"})
    wait_until(
        lambda: all(d.webhook(n)["state"] == "disabled" for n in ("slack", "dead")),
        what="both deliveries to fail",
    )
    assert [r.path for r in hooks.requests] == [f"/services/{TOKEN}?token={QUERY}"]
    status = d.status()
    urls = {w["name"]: w["url"] for w in status["webhooks"]}
    assert urls == {"slack": f"http://127.0.0.1:{hooks.port}", "dead": f"http://127.0.0.1:{closed}"}
    assert json.loads(_get(port, "/status"))["webhooks"] == status["webhooks"]
    attempts = d.cli("attempts", "slack").stdout + d.cli("attempts", "dead").stdout
    assert "HTTP 500" in attempts and "connection refused" in attempts
    d.reload()
    shown = {
        "status --json": json.dumps(status),
        "/status": _get(port, "/status"),
        "/": _get(port, "/"),
        "/metrics": _get(port, "/metrics"),
        "attempts": attempts,
        "check": check.stdout + check.stderr,
        "log": d.log(),
    }
    assert 'webhook_state{state="disabled",webhook="slack"} 1.0' in shown["/metrics"]
    for where, text in shown.items():
        for token in (TOKEN, QUERY, PASSWORD):
            assert token not in text, f"{token} shown in {where}"


def test_check_and_the_daemon_refuse_an_abstract_control_socket(hooks, daemon_factory):
    name = f"wr-ctl-{os.getpid()}"  # the abstract namespace is shared by the whole machine
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}], control={"bind": f"ipc://@{name}"})
    proc = d.cli("check")
    assert proc.returncode == 1
    assert "control.bind: an abstract socket (ipc://@…) has no file permissions" in proc.stderr
    d.start(wait_ready=False)
    assert d.proc.wait(20) == 1
    assert "control.bind: an abstract socket" in d.log()
    # nobody may reach it: the daemon never bound it
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert probe.connect_ex(f"\0{name}") != 0
    finally:
        probe.close()


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on: its socket fds matched against /proc/net/tcp*."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_null_starts_no_http_server(hooks, daemon_factory, tmp_path):
    port = _free_port()
    on = daemon_factory(
        [{"name": "a", "url": hooks.url("/a")}], metrics={"bind": f"127.0.0.1:{port}"}
    )
    on.start()
    assert _listening_tcp_ports(on.proc.pid) == {port}  # the check sees a metrics server
    assert on.stop() == 0
    off = daemon_factory([{"name": "a", "url": hooks.url("/a")}], notify_name="notify2.sock")
    off.settings["metrics"] = None  # `metrics: null`, as a user writes it
    off.write()
    assert "metrics: null" in off.config_path.read_text()
    off.start()
    off.send({"type": "T", "id": "served"})
    wait_until(lambda: hooks.ids("/a") == ["served"], what="the delivery")
    assert _listening_tcp_ports(off.proc.pid) == set()
    assert "metrics and status on" in on.log() and "metrics and status on" not in off.log()


def test_sighup_rotates_a_secret_read_from_the_credentials_directory(
    hooks, daemon_factory, tmp_path, monkeypatch
):
    old, new = (
        "whsec_Y3JlZC1vbGQtc2VjcmV0LWtleS0xMjM0NTY3OA==",
        "whsec_Y3JlZC1uZXctc2VjcmV0LWtleS04NzY1NDMyMQ==",
    )
    creds = tmp_path / "credentials"  # what systemd makes of LoadCredential=crm:/etc/…/crm
    creds.mkdir(mode=0o700)
    (creds / "crm").write_text(old)
    d = daemon_factory([{"name": "s", "url": hooks.url("/s"), "secret_credential": "crm"}])
    del d.settings["defaults"]["secret"]
    d.write()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    proc = d.cli("check")
    assert proc.returncode == 1 and "CREDENTIALS_DIRECTORY is not set" in proc.stderr
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))  # the daemon and the CLI inherit it
    d.start()
    d.send({"type": "T", "id": "signed-old"})
    (first,) = wait_until(lambda: hooks.at("/s"), what="the first delivery")
    Webhook(old).verify(first.body, first.headers)

    (creds / "crm").write_text(new + "\n")  # rotated: the old key is gone
    d.reload()
    d.send({"type": "T", "id": "signed-new"})
    second = wait_until(lambda: len(hooks.at("/s")) == 2 and hooks.at("/s")[1], what="the second")
    assert second.json["id"] == "signed-new"
    Webhook(new).verify(second.body, second.headers)
    try:
        Webhook(old).verify(second.body, second.headers)
    except WebhookVerificationError:
        pass
    else:
        raise AssertionError("the old key still signs after the rotation")
    status = d.cli("status", "--json").stdout
    for key in (old, new):
        assert key[6:] not in d.log() and key[6:] not in status
    assert "whsec_" not in d.log() + status
