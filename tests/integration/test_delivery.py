"""Signed webhooks out of the real daemon: body, headers, retries, Retry-After, 410, isolation."""

import json
import time
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from tests.integration.conftest import SECRET, Reply, wait_until


def test_signed_delivery_reaches_the_webhook(hooks, daemon_factory):
    d = daemon_factory(
        [{"name": "crm-sync", "url": hooks.url("/crm"), "headers": {"X-Team": "blue"}}]
    ).start()
    ack = d.send(
        {
            "type": "TODO_CREATED",
            "id": "evt-1",
            "company": "acme",
            "project": "p1",
            "timestamp": 1764261513.123,
            "data": {"title": "Write tests", "n": 3},
        }
    )
    assert ack == {"ok": True, "id": "evt-1"}
    (req,) = wait_until(lambda: hooks.at("/crm"), what="a delivery")
    assert req.body == (
        b'{"id":"evt-1","type":"TODO_CREATED","timestamp":"2025-11-27T16:38:33.123Z",'
        b'"company":"acme","project":"p1","data":{"title":"Write tests","n":3},'
        b'"webhook":"crm-sync"}'
    )
    h = req.headers
    assert h["content-type"] == "application/json"
    assert h["user-agent"].startswith("webhook-router/")
    assert (h["webhook-id"], h["webhook-attempt"], h["x-team"]) == ("evt-1", "1", "blue")
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 60
    Webhook(SECRET).verify(req.body, h)  # raises on a bad signature
    assert d.stop() == 0


def test_hex_signature_mode_signs_the_raw_body(hooks, daemon_factory):
    import hashlib
    import hmac

    d = daemon_factory(
        [
            {
                "name": "gh",
                "url": hooks.url("/gh"),
                "secret": "plain-secret",
                "signature": "hmac-sha256-hex",
                "signature_header": "X-Hub",
            }
        ]
    ).start()
    d.send({"type": "T"})
    (req,) = wait_until(lambda: hooks.at("/gh"), what="a delivery")
    expected = hmac.new(b"plain-secret", req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-hub"] == expected
    assert "webhook-signature" not in req.headers


def test_failed_attempts_are_retried_with_the_same_id_and_rising_attempt(hooks, daemon_factory):
    hooks.script("/r", Reply(500), Reply(502))
    d = daemon_factory([{"name": "r", "url": hooks.url("/r")}]).start()
    d.send({"type": "T", "id": "evt-r"})
    reqs = wait_until(lambda: len(hooks.at("/r")) >= 3 and hooks.at("/r"), what="3 attempts")
    assert [r.headers["webhook-id"] for r in reqs] == ["evt-r"] * 3
    assert [r.headers["webhook-attempt"] for r in reqs] == ["1", "2", "3"]
    for r in reqs:
        Webhook(SECRET).verify(r.body, r.headers)
    w = wait_until(lambda: d.webhook("r")["delivered"] == 1 and d.webhook("r"), what="delivered")
    assert (w["state"], w["consecutive_failures"], w["failed"]) == ("active", 0, 0)
    # No attempt after the 2xx: nothing is left queued, retrying or in flight to send again.
    assert (w["queued"], w["retrying"], w["in_flight"]) == (0, 0, 0)
    assert len(hooks.at("/r")) == 3


def test_retry_after_is_honoured(hooks, daemon_factory):
    hooks.script("/ra", Reply(503, {"Retry-After": "1"}))
    d = daemon_factory(
        [{"name": "ra", "url": hooks.url("/ra"), "retry": {"backoff": ["50ms", "3s"]}}]
    ).start()
    d.send({"type": "T"})
    first, second = wait_until(
        lambda: len(hooks.at("/ra")) >= 2 and hooks.at("/ra"), what="the retry"
    )
    assert second.at - first.at >= 0.95


def test_gone_disables_the_webhook_at_once(hooks, daemon_factory):
    hooks.default("/gone", Reply(410))
    d = daemon_factory([{"name": "gone", "url": hooks.url("/gone")}]).start()
    d.send({"type": "T"})
    w = wait_until(
        lambda: d.webhook("gone")["state"] == "disabled" and d.webhook("gone"), what="disabled"
    )
    assert w["health"] == "UNHEALTHY" and w["failed"] == 1
    assert len(hooks.at("/gone")) == 1


def test_a_slow_endpoint_does_not_delay_another_webhook(hooks, daemon_factory):
    slow = 6.0
    hooks.default("/slow", Reply(200, delay=slow))
    d = daemon_factory(
        [
            {"name": "slow", "url": hooks.url("/slow"), "timeout": "10s"},
            {"name": "fast", "url": hooks.url("/fast")},
        ]
    ).start()
    for i in range(20):
        d.send({"type": "T", "id": f"e{i}"})
    wait_until(lambda: len(hooks.at("/fast")) == 20, timeout=10, what="20 fast deliveries")
    # All 20 went out before the slow endpoint answered its first attempt.
    assert hooks.at("/fast")[-1].at < hooks.at("/slow")[0].at + slow
    assert len(hooks.at("/slow")) == 4  # max_in_flight, the rest queued
    assert d.webhook("slow")["in_flight"] == 4


def test_ordered_webhook_delivers_strictly_in_order_through_failures(hooks, daemon_factory):
    hooks.script("/o", Reply(500), Reply(500))
    d = daemon_factory(
        [{"name": "o", "url": hooks.url("/o"), "ordered": True, "max_in_flight": 4}]
    ).start()
    for i in range(10):
        d.send({"type": "T", "id": f"o{i}"})
    wait_until(lambda: len(hooks.at("/o")) == 12, what="12 attempts")
    assert hooks.ids("/o") == ["o0", "o0", "o0"] + [f"o{i}" for i in range(1, 10)]


def test_send_command_publishes_to_the_running_daemon(hooks, daemon_factory):
    d = daemon_factory([{"name": "c", "url": hooks.url("/c")}]).start()
    proc = d.cli("send", "TODO_CREATED", "--project", "p1", "--data", '{"k": 1}', "--ack")
    assert proc.returncode == 0, proc.stderr
    (req,) = wait_until(lambda: hooks.at("/c"), what="the delivery")
    assert (req.json["type"], req.json["project"], req.json["data"]) == (
        "TODO_CREATED",
        "p1",
        {"k": 1},
    )
    assert req.json["id"] in proc.stdout


def test_rate_limit_spaces_deliveries(hooks, daemon_factory):
    d = daemon_factory([{"name": "rl", "url": hooks.url("/rl"), "rate_limit": "5/s"}]).start()
    for i in range(10):
        d.send({"type": "T", "id": f"r{i}"})
    wait_until(lambda: len(hooks.at("/rl")) == 10, what="10 deliveries")

    def started() -> list[float]:  # when the daemon began each attempt, as it logged them
        proc = d.cli("attempts", "rl", "--json", "--limit", "20")
        assert proc.returncode == 0, proc.stderr
        return sorted(datetime.fromisoformat(a["at"]).timestamp() for a in json.loads(proc.stdout))

    at = wait_until(lambda: len(started()) == 10 and started(), what="10 attempts logged")
    # A burst of 5 (the bucket), then one every 200 ms: the last starts 1 s after the first.
    # (The daemon's own start times: a receiver's clock also counts connection set-up.)
    assert at[-1] - at[0] >= 0.95  # less a worker's pick-up delay of the first
