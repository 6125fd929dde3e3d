"""``webhook-router listen``: the signature verdicts, and the receiver as a subprocess."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from router.listen import verify_signature
from tests.builders import sigint_as_at_a_terminal

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_check_accepts_any_matching_secret_and_refuses_stale_ones():
    other = "whsec_" + base64.b64encode(b"another secret, another day....").decode()
    now = int(time.time())
    body = b'{"id":"e1"}'
    sig = Webhook(other).sign("e1", datetime.fromtimestamp(now, UTC), body.decode())
    headers = {"webhook-id": "e1", "webhook-timestamp": str(now), "webhook-signature": sig}
    keys = [base64.b64decode(s.removeprefix("whsec_")) for s in (SECRET, other)]
    assert verify_signature(headers, body, keys, now) == "signature ok"
    assert verify_signature(headers, body, keys[:1], now) == "signature BAD"
    assert verify_signature(headers, body + b" ", keys, now) == "signature BAD"
    assert verify_signature(headers, body, keys, now + 301).startswith("signature BAD")
    assert verify_signature({}, body, keys, now) == "unsigned"


class Listener:
    """``python -m router listen 0`` in a subprocess, its output lines in queues."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "listen", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=sigint_as_at_a_terminal,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(
                target=lambda s=stream, q=q: [q.put(x) for x in s], daemon=True
            ).start()
        first = self.err.get(timeout=10)
        assert first.startswith("listening on http://127.0.0.1:"), first
        self.url = first.split()[2]

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(self.url + "hook", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)


@pytest.fixture
def listener(request):
    started = []

    def start(*args: str) -> Listener:
        started.append(Listener(*args))
        return started[-1]

    yield start
    for one in started:
        if one.proc.poll() is None:
            one.proc.kill()
            one.proc.wait(5)


def signed(body: str, msg_id: str = "01HEVENT", secret: str = SECRET) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "webhook-attempt": "1",
    }


def test_listen_prints_each_delivery_with_its_signature_verdict(listener):
    hook = listener("--secret", SECRET)
    body = '{"id":"01HEVENT","type":"TODO_CREATED","data":{},"webhook":"crm-sync"}'
    assert hook.post(body.encode(), signed(body)) == 200
    line = hook.out.get(timeout=5)
    assert line.split()[1:5] == ["crm-sync", "TODO_CREATED", "01HEVENT", "attempt=1"]
    assert line.rstrip().endswith("signature ok")

    headers = signed(body)
    headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    assert hook.post(body.encode(), headers) == 200
    assert "signature BAD" in hook.out.get(timeout=5)

    assert hook.post(body.encode(), {"Content-Type": "application/json"}) == 200
    assert hook.out.get(timeout=5).rstrip().endswith("unsigned")

    assert hook.stop() == 0
    lines = [hook.err.get(timeout=5)]
    while lines[-1] != "stopped\n":
        lines.append(hook.err.get(timeout=5))
    assert not any("Traceback" in line for line in lines)


def test_listen_replies_with_the_requested_status(listener):
    hook = listener("--status", "503")
    assert hook.post(b"{}", {"Content-Type": "application/json"}) == 503
    assert hook.out.get(timeout=5)
    assert hook.stop() == 0


def test_signature_check_verifies_the_hex_scheme_in_its_header():
    body = b'{"id":"e1"}'
    good = hmac.new(b"k1", body, hashlib.sha256).hexdigest()
    assert verify_signature({"X-Signature": good}, body, [b"k1"], 0.0) == "signature ok (hex)"
    assert verify_signature({"X-Signature": good}, body, [b"k2"], 0.0) == ("signature BAD (hex)")
    assert verify_signature({}, body, [b"k1"], 0.0) == "unsigned"


def test_listen_stops_cleanly_on_sigterm(listener):
    lst = listener()
    lst.proc.send_signal(signal.SIGTERM)
    assert lst.proc.wait(10) == 0
    assert lst.err.get(timeout=5).strip() == "stopped"
