"""Alerts against the running daemon: a local SMTP server (aiosmtpd) and a local alert receiver.

An endpoint that fails until disabled alerts once each (webhook and email), a probe that
brings it back alerts once more, a restart repeats nothing, a reload moves the alerts,
and dead alert channels leave every other webhook delivering.
"""

from __future__ import annotations

import contextlib
import email
import socket

import pytest
import trustme
from standardwebhooks import Webhook

from tests.integration.conftest import SECRET, Reply, wait_until
from tests.test_alerts import SmtpServer

LOGIN = ("router", "hunter2")
CRM = "/crm?token=t0ps3cret"  # the webhook's path and query: never in an alert


@pytest.fixture
def smtp(tmp_path, monkeypatch):
    """STARTTLS with a certificate from a test CA the daemon is told to trust, and a login."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # the daemon inherits it
    (tmp_path / "smtp.password").write_text(LOGIN[1] + "\n")
    server = SmtpServer(ca, LOGIN)
    yield server
    server.stop()


def email_section(port: int, **kw) -> dict:
    section = {"smtp": f"127.0.0.1:{port}", "starttls": True, "username": LOGIN[0],
               "password_file": "smtp.password", "from": "router@example.com",
               "to": ["ops@example.com"]}  # fmt: skip
    section.update(kw)
    return section


def alert_hook(url: str, **kw) -> dict:
    return {"url": url, "secret": SECRET, "allow_private_networks": True, **kw}


def events_at(hooks, path: str) -> list[dict]:
    """The alert events the receiver got at ``path``, each checked to be signed (SPEC §2)."""
    out = []
    for r in hooks.at(path):
        Webhook(SECRET).verify(r.body, r.headers)
        out.append(r.json)
    return out


def kinds(hooks, path: str) -> list[str]:
    return [e["type"] for e in events_at(hooks, path)]


def mails(smtp) -> list[email.message.Message]:
    return [email.message_from_bytes(m.original_content) for m in smtp.messages]


def test_an_endpoint_that_fails_until_disabled_alerts_once_each_and_a_probe_recovers_it(
    daemon_factory, hooks, smtp
):
    hooks.default(CRM, Reply(500))
    d = daemon_factory(
        [{"name": "crm", "url": hooks.url(CRM),
          "retry": {"attempts": 8, "backoff": ["50ms"]}, "health": {"probe_interval": "300ms"},
          "alert_email": ["owner@crm.example.com"]}],
        alerts={"failing_after": "200ms", "webhook": alert_hook(hooks.url("/alerts")),
                "email": email_section(smtp.port)},
    )  # fmt: skip
    d.start()
    try:
        assert d.send({"type": "TODO_CREATED", "id": "e1"})["ok"]
        wait_until(lambda: "webhook.disabled" in kinds(hooks, "/alerts"), 20, "webhook.disabled")
        wait_until(lambda: len(smtp.messages) == 2, 20, "two emails")
        assert kinds(hooks, "/alerts") == ["webhook.failing", "webhook.disabled"]
        failing, disabled = events_at(hooks, "/alerts")
        assert disabled["webhook"] == "alerts"  # the alert endpoint's name, as SPEC §2 writes
        assert disabled["data"]["webhook"] == "crm" and disabled["data"]["reason"] == "exhausted"
        assert disabled["data"]["last_error"] == "HTTP 500" and disabled["data"]["queued"] == 0
        assert disabled["data"]["since"] == failing["data"]["since"]
        assert set(failing["data"]) == {"webhook", "reason", "last_error", "since", "queued"}
        first, second = mails(smtp)
        assert "crm is failing" in first["Subject"] and "crm was disabled" in second["Subject"]
        assert smtp.messages[1].rcpt_tos == ["ops@example.com", "owner@crm.example.com"]
        text = second.get_payload(decode=True).decode()
        assert "webhook-router enable crm" in text and "webhook-router replay crm --failed" in text
        assert "Last error: HTTP 500" in text and f"{hooks.url('')} is up" in text
        assert "t0ps3cret" not in text and "/crm" not in text  # a URL's path holds tokens
        status = d.status()
        w = next(w for w in status["webhooks"] if w["name"] == "crm")
        assert w["last_alert"]["kind"] == "disabled" and w["failing_since"]
        channels = status["alerts"]["channels"]
        assert channels["webhook"]["sent"] == 2 and channels["email"]["sent"] == 2

        assert d.stop() == 0  # a restart remembers what was said: nothing is said again
        d.start()
        hooks.default(CRM, Reply(200))  # fixed: the next probe gets through
        wait_until(lambda: "webhook.recovered" in kinds(hooks, "/alerts"), 20, "recovered")
        wait_until(lambda: len(smtp.messages) == 3, 20, "the third email")
        assert kinds(hooks, "/alerts") == ["webhook.failing", "webhook.disabled",
                                           "webhook.recovered"]  # fmt: skip
        assert events_at(hooks, "/alerts")[-1]["data"]["reason"] == "probe"
        assert "crm is working again" in mails(smtp)[-1]["Subject"]
        wait_until(lambda: d.webhook("crm")["delivered"] == 1, 20, "e1 delivered")
        assert hooks.ids(CRM, "TODO_CREATED")[-1] == "e1"
    finally:
        d.stop()


@contextlib.contextmanager
def dead(kind: str):
    """A loopback port that never answers: ``silent`` accepts (the kernel does) and says
    nothing; ``closed`` has nothing listening. Yields the port and the listener (or None)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if kind == "closed":
        listener.close()
        yield port, None
        return
    listener.listen(16)
    try:
        yield port, listener
    finally:
        listener.close()


def connected(listener: socket.socket) -> bool:
    """Whether a connection waits in the listener's backlog: the daemon did try."""
    listener.settimeout(0.05)
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize("kind", ["silent", "closed"])
def test_a_dead_smtp_server_and_a_dead_alert_endpoint_leave_other_webhooks_delivering(
    daemon_factory, hooks, tmp_path, kind
):
    hooks.default("/bad", Reply(500))
    (tmp_path / "smtp.password").write_text("hunter2\n")
    with dead(kind) as (mail_port, mail), dead(kind) as (hook_port, hook):
        d = daemon_factory(
            [{"name": "bad", "url": hooks.url("/bad"),
              "retry": {"attempts": 2, "backoff": ["50ms"]}},
             {"name": "good", "url": hooks.url("/good")}],
            alerts={"failing_after": "200ms",
                    "webhook": alert_hook(f"http://127.0.0.1:{hook_port}/alerts", timeout="20s"),
                    "email": email_section(mail_port, starttls=False, timeout="20s")},
        )  # fmt: skip
        d.start()
        try:
            d.send({"type": "T", "id": "first"})
            wait_until(lambda: d.webhook("bad")["state"] == "disabled", 20, "bad disabled")
            if kind == "silent":  # both channels are stuck in their first try from here on
                wait_until(lambda: connected(mail) and connected(hook), 20, "the channels to try")
            else:
                wait_until(lambda: "email try 1 failed (connection refused)" in d.log()
                           and "webhook try 1 failed (connection refused)" in d.log(), 20,
                           "the channels to fail")  # fmt: skip
            ids = [f"e{n}" for n in range(40)]
            for eid in ids:
                assert d.send({"type": "T", "id": eid})["ok"]
            wait_until(lambda: set(ids) <= set(hooks.ids("/good")), 20, "every event at good")
            status = d.status()
            good = next(w for w in status["webhooks"] if w["name"] == "good")
            assert good["delivered"] == 41 and good["queued"] == 0 and good["failed"] == 0
            channels = status["alerts"]["channels"]
            assert channels["webhook"]["sent"] == 0 and channels["email"]["sent"] == 0
            assert next(w for w in status["webhooks"] if w["name"] == "bad")["queued"] == 40
        finally:
            assert d.stop() == 0


def test_a_reload_moves_the_alerts_and_disable_and_enable_by_hand_alert_with_their_reason(
    daemon_factory, hooks
):
    d = daemon_factory(
        [{"name": "crm", "url": hooks.url("/crm")}],
        alerts={"webhook": alert_hook(hooks.url("/alerts-a"))},
    )
    d.start()
    try:
        d.settings["alerts"] = {"webhook": alert_hook(hooks.url("/alerts-b"))}
        d.write()
        d.reload()
        assert d.cli("disable", "crm").returncode == 0
        wait_until(lambda: kinds(hooks, "/alerts-b") == ["webhook.disabled"], 10, "disabled")
        assert events_at(hooks, "/alerts-b")[0]["data"]["reason"] == "manual"
        assert d.cli("disable", "crm").returncode == 0  # disabled already: no second alert
        proc = d.cli("enable", "crm")
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: len(hooks.at("/alerts-b")) == 2, 10, "recovered")
        assert kinds(hooks, "/alerts-b") == ["webhook.disabled", "webhook.recovered"]
        assert events_at(hooks, "/alerts-b")[1]["data"]["reason"] == "enable"
        assert hooks.at("/alerts-a") == []
        d.settings.pop("alerts")
        d.write()
        d.reload()  # alerts off: the next disabling tells nobody
        assert d.cli("disable", "crm").returncode == 0
        wait_until(lambda: d.webhook("crm")["state"] == "disabled", 10, "disabled by hand")
        assert d.status()["alerts"]["channels"] == {}
        assert len(hooks.at("/alerts-b")) == 2
    finally:
        d.stop()
