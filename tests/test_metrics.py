"""The metrics/status HTTP server: real server on 127.0.0.1, a fake App behind it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from router import RouterError
from router.metrics import EVENTS_RECEIVED, MetricsServer


class FakeApp:
    def __init__(self):
        self.is_healthy = True
        self.webhooks = [
            {
                "name": "crm-sync",
                "state": "active",
                "health": "HEALTHY",
                "queued": 7,
                "in_flight": 2,
                "delivered": 12,
                "failed": 0,
                "consecutive_failures": 0,
                "last_success": 1_700_000_000.0,
                "last_error": None,
                "latency_ms": {"p50": 1.2, "p99": 4.8},
                "url": "https://crm.example.com/hooks",
            },
            {
                "name": "audit",
                "state": "disabled",
                "health": "UNHEALTHY",
                "queued": 40,
                "in_flight": 0,
                "delivered": 3,
                "failed": 1,
                "consecutive_failures": 5,
                "last_success": None,
                "last_error": "HTTP 500: <script>alert(1)</script>",
                "latency_ms": {"p50": None, "p99": None},
                "url": "http://127.0.0.1:9000/audit",
            },
        ]

    def status(self) -> dict:
        return {
            "webhooks": self.webhooks,
            "events": {"received": 15, "rejected": 2, "duplicates": 1},
            "version": "0.1.0",
            "uptime": 3725.0,
        }

    def healthy(self) -> bool:
        return self.is_healthy


@pytest.fixture
def app():
    return FakeApp()


@pytest.fixture
def base(app):
    server = MetricsServer(("127.0.0.1", 0), app)
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}"
    server.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_metrics_has_the_counters_and_per_webhook_gauges(base):
    EVENTS_RECEIVED.inc()
    status, ctype, text = get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    assert "events_received_total " in text
    assert "config_reload_failures_total " in text
    assert 'webhook_queued{webhook="crm-sync"} 7.0' in text
    assert 'webhook_queued{webhook="audit"} 40.0' in text
    assert 'webhook_in_flight{webhook="crm-sync"} 2.0' in text
    assert 'webhook_consecutive_failures{webhook="audit"} 5.0' in text
    assert 'webhook_state{state="disabled",webhook="audit"} 1.0' in text
    assert 'webhook_state{state="active",webhook="audit"} 0.0' in text
    assert 'webhook_state{state="failing",webhook="audit"} 0.0' in text
    assert 'webhook_state{state="active",webhook="crm-sync"} 1.0' in text


def test_gauges_follow_the_app_at_each_scrape(base, app):
    app.webhooks[0]["queued"] = 99
    assert 'webhook_queued{webhook="crm-sync"} 99.0' in get(base + "/metrics")[2]
    app.webhooks.pop(1)
    assert 'webhook="audit"' not in get(base + "/metrics")[2]


def test_healthz_is_200_when_healthy_and_503_when_not(base, app):
    assert get(base + "/healthz")[::2] == (200, "ok\n")
    app.is_healthy = False
    assert get(base + "/healthz")[::2] == (503, "unhealthy\n")


def test_status_is_the_apps_status_as_json(base, app):
    status, ctype, text = get(base + "/status")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(text) == app.status()


def test_status_page_lists_webhooks_and_escapes_html(base):
    status, ctype, page = get(base + "/")
    assert status == 200
    assert ctype.startswith("text/html")
    assert "crm-sync" in page
    assert "audit" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert 'http-equiv="refresh" content="5"' in page
    assert "received 15" in page
    assert "4.8" in page  # p99
    assert "src=" not in page  # self-contained: no external assets


def test_unknown_paths_are_404(base):
    assert get(base + "/nope")[0] == 404


def test_a_failing_app_gives_500_not_a_dead_server(base, app):
    def boom():
        raise RuntimeError("broken")

    app.status = boom
    assert get(base + "/status")[0] == 500
    app.status = FakeApp().status
    assert get(base + "/status")[0] == 200


def test_binding_a_taken_port_raises_router_error(base, app):
    port = int(base.rsplit(":", 1)[1])
    with pytest.raises(RouterError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        MetricsServer(("127.0.0.1", port), app).start()
