"""Five failures disable a webhook; its events are held; `enable` health-checks and flushes."""

import json
import socket

from tests.integration.conftest import Reply, wait_until


def test_exhausted_webhook_holds_events_until_a_health_check_passes(hooks, daemon_factory):
    hooks.default("/h", Reply(500))
    # One attempt at a time, so the order the endpoint sees is the order they were sent in.
    webhook = {"name": "h", "url": hooks.url("/h"), "max_in_flight": 1}
    webhook["retry"] = {"attempts": 5, "backoff": ["20ms"]}
    d = daemon_factory([webhook]).start()
    d.send({"type": "T", "id": "first"})
    w = wait_until(
        lambda: d.webhook("h")["state"] == "disabled" and d.webhook("h"),
        what="the webhook disabled after five failures",
    )
    assert len(hooks.at("/h")) == 5
    assert (w["health"], w["failed"], w["consecutive_failures"]) == ("UNHEALTHY", 1, 5)
    assert w["last_error"] == "HTTP 500"

    # New events are held, not attempted and not dropped.
    for i in range(3):
        assert d.send({"type": "T", "id": f"held{i}"})["ok"] is True
    wait_until(lambda: d.webhook("h")["queued"] == 3, what="3 held deliveries")
    assert len(hooks.at("/h")) == 5

    # A failing health check keeps it disabled.
    proc = d.cli("enable", "h")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert hooks.at("/h", "WEBHOOK_HEALTH_CHECK")
    assert d.webhook("h")["state"] == "disabled"

    # A passing one enables it and flushes the exhausted and held events, oldest first.
    hooks.default("/h", Reply(200))
    proc = d.cli("enable", "h")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_until(lambda: len(hooks.ids("/h", "T")) == 5 + 4, what="the flush")
    assert hooks.ids("/h", "T")[5:] == ["first", "held0", "held1", "held2"]
    w = wait_until(lambda: d.webhook("h")["queued"] == 0 and d.webhook("h"), what="empty queue")
    assert (w["state"], w["health"], w["delivered"]) == ("active", "HEALTHY", 4)


def test_disable_by_hand_holds_deliveries(hooks, daemon_factory):
    d = daemon_factory([{"name": "m", "url": hooks.url("/m")}]).start()
    assert d.cli("disable", "m").returncode == 0
    d.send({"type": "T", "id": "kept"})
    wait_until(lambda: d.webhook("m")["queued"] == 1, what="a held delivery")
    assert hooks.at("/m") == []
    assert d.cli("enable", "m").returncode == 0
    wait_until(lambda: hooks.ids("/m", "T") == ["kept"], what="the held delivery")


def test_held_deliveries_survive_a_restart(hooks, daemon_factory):
    d = daemon_factory([{"name": "m", "url": hooks.url("/m")}]).start()
    assert d.cli("disable", "m").returncode == 0
    d.send({"type": "T", "id": "kept"})
    assert d.stop() == 0
    d.start()
    w = d.webhook("m")
    assert (w["state"], w["queued"]) == ("disabled", 1)
    assert d.cli("enable", "m").returncode == 0
    wait_until(lambda: hooks.ids("/m", "T") == ["kept"], what="the held delivery")


def test_probe_interval_brings_a_gone_webhook_back_by_itself(hooks, daemon_factory):
    # The delivery gets 410; the first two health checks fail, the third passes.
    hooks.script("/p", Reply(410), Reply(500), Reply(500))
    webhook = {"name": "p", "url": hooks.url("/p"), "max_in_flight": 1}
    webhook["health"] = {"probe_interval": "300ms"}
    d = daemon_factory([webhook]).start()
    d.send({"type": "T", "id": "p1"})
    wait_until(lambda: hooks.at("/p", "WEBHOOK_HEALTH_CHECK"), what="the first probe")
    d.send({"type": "T", "id": "p2"})  # held: the webhook is disabled until a probe passes
    wait_until(lambda: hooks.ids("/p", "T") == ["p1", "p1", "p2"], what="the flush")
    probes = hooks.at("/p", "WEBHOOK_HEALTH_CHECK")
    assert len(probes) == 3
    assert hooks.at("/p", "T")[-1].at > probes[-1].at
    assert d.webhook("p")["state"] == "active"


def test_an_unreachable_endpoint_is_retried_then_disabled_and_its_events_held(
    hooks, daemon_factory
):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    webhook = {"name": "gone-away", "url": f"http://127.0.0.1:{closed}/x"}
    webhook["retry"] = {"attempts": 3, "backoff": ["20ms"]}
    d = daemon_factory([webhook]).start()
    d.send({"type": "T", "id": "u1"})
    w = wait_until(
        lambda: d.webhook("gone-away")["state"] == "disabled" and d.webhook("gone-away"),
        what="disabled after 3 refused connections",
    )
    assert (w["failed"], w["consecutive_failures"]) == (1, 3)
    assert w["last_error"] == "connection refused"
    d.send({"type": "T", "id": "u2"})
    wait_until(lambda: d.webhook("gone-away")["queued"] == 1, what="the held event")

    def errors() -> list[str]:
        proc = d.cli("attempts", "gone-away", "--json")
        assert proc.returncode == 0, proc.stderr
        return [a["error"] for a in json.loads(proc.stdout)]

    # The journal writes the attempt log just after the supervisor counts the failure.
    wait_until(lambda: errors() == ["connection refused"] * 3, what="3 attempts logged")
