"""Prometheus metrics, and the HTTP server for /metrics, /healthz, /status and the status page.

Names follow SPEC.md to the letter (no prefix). Per-webhook gauges come from
supervisor snapshots at scrape time, not from the data path.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from router import RouterError, __version__

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "events_received", "Valid events accepted on either ingest socket.", registry=REGISTRY
)
EVENTS_REJECTED = Counter(
    "events_rejected", "Bad events refused, by reason.", ["reason"], registry=REGISTRY
)
EVENTS_DUPLICATE = Counter(
    "events_duplicate",
    "Events whose id was already journaled (acked, not delivered again).",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "deliveries",
    "Deliveries finished, by webhook and outcome (delivered, exhausted, cancelled).",
    ["webhook", "outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "delivery_attempts",
    "HTTP attempts, by webhook and result (ok, failed).",
    ["webhook", "result"],
    registry=REGISTRY,
)
ATTEMPT_LATENCY = Histogram(
    "delivery_attempt_seconds",
    "Time from sending an attempt to its outcome.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
JOURNAL_COMMIT = Histogram(
    "journal_commit_seconds",
    "Time of one journal transaction (group commit).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
JOURNAL_ERRORS = Counter(
    "journal_errors", "Journal transactions that failed (disk full, I/O error).", registry=REGISTRY
)
ALERTS_SENT = Counter(
    "alerts_sent",
    "Alerts sent, by channel (webhook, email) and kind (failing, disabled, recovered).",
    ["channel", "kind"],
    registry=REGISTRY,
)
ALERTS_FAILED = Counter(
    "alerts_failed",
    "Alerts a channel gave up on after its retries, by channel.",
    ["channel"],
    registry=REGISTRY,
)
ALERTS_SUPPRESSED = Counter(
    "alerts_suppressed", "Alerts not sent: over a webhook's hourly limit.", registry=REGISTRY
)
ALERTS_DROPPED = Counter(
    "alerts_dropped",
    "Alerts dropped because a channel's queue was full, by channel.",
    ["channel"],
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter("config_reloads", "Successful config reloads.", registry=REGISTRY)
CONFIG_RELOAD_FAILURES = Counter(
    "config_reload_failures",
    "Reloads refused because the new file was invalid.",
    registry=REGISTRY,
)

# ---------------------------------------------------------------------- the HTTP server

log = logging.getLogger(__name__)

STATES = ("active", "failing", "disabled")


class WebhookCollector:
    """Per-webhook gauges, read from ``app.status()`` at scrape time (never from the data path)."""

    def __init__(self, app: Any):
        self.app = app

    def describe(self) -> list:
        return []  # names are only known at scrape time; nothing to check at register

    def collect(self):
        webhooks = self.app.status().get("webhooks", [])
        queued = GaugeMetricFamily(
            "webhook_queued", "Deliveries waiting (held ones included).", labels=["webhook"]
        )
        in_flight = GaugeMetricFamily(
            "webhook_in_flight", "Attempts running now.", labels=["webhook"]
        )
        failures = GaugeMetricFamily(
            "webhook_consecutive_failures",
            "Failed attempts since the last success.",
            labels=["webhook"],
        )
        state = GaugeMetricFamily(
            "webhook_state", "1 for the webhook's current state.", labels=["webhook", "state"]
        )
        for w in webhooks:
            name = str(w.get("name"))
            queued.add_metric([name], w.get("queued") or 0)
            in_flight.add_metric([name], w.get("in_flight") or 0)
            failures.add_metric([name], w.get("consecutive_failures") or 0)
            for s in STATES:
                state.add_metric([name, s], 1 if w.get("state") == s else 0)
        yield from (queued, in_flight, failures, state)


class MetricsServer:
    """Serves ``/metrics``, ``/healthz``, ``/status`` and ``/`` for ``app`` on ``bind``."""

    def __init__(self, bind: tuple[str, int], app: Any):
        self.bind = bind
        self.app = app
        self.address = bind  # the bound (host, port), with the real port when port was 0
        self._webhooks = CollectorRegistry(auto_describe=False)
        self._webhooks.register(WebhookCollector(app))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread; raises ``RouterError`` when binding fails."""
        host, port = self.bind
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as e:
            raise RouterError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
        self._server.owner = self
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics and status on http://%s:%d/", *self.address)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def metrics(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self._webhooks)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MetricsServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"webhook-router/{__version__}"

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _answer(self, head: bool) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, owner.metrics()
            elif path == "/healthz":
                ok = owner.app.healthy()
                status, ctype = (200, "text/plain") if ok else (503, "text/plain")
                body = b"ok\n" if ok else b"unhealthy\n"
            elif path == "/status":
                body = json.dumps(owner.app.status(), default=str).encode()
                status, ctype = 200, "application/json"
            elif path in ("/", "/index.html"):
                body = status_page(owner.app.status()).encode()
                status, ctype = 200, "text/html; charset=utf-8"
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
        except Exception:
            log.exception("serving %s failed", path)
            status, ctype, body = 500, "text/plain", b"internal error (see the router's log)\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)


# ---------------------------------------------------------------------- the status page


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.1f}"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>webhook-router</title>
<style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse}}th,td{{padding:.3em .7em;border-bottom:1px solid #ddd;
text-align:left}}td.n{{text-align:right}}.active{{color:#070}}.failing{{color:#b60}}
.disabled{{color:#c00;font-weight:bold}}.err{{color:#a00;max-width:40em;word-break:break-word}}
</style></head><body>
<h1>webhook-router {version}</h1>
<p>up {uptime} · events received {received}, rejected {rejected}, duplicates {duplicates}</p>
<table><tr><th>webhook</th><th>state</th><th>health</th><th>queued</th><th>in flight</th>
<th>delivered</th><th>failed</th><th>last success</th><th>last error</th><th>p50 ms</th>
<th>p99 ms</th></tr>
{rows}
</table></body></html>
"""

_ROW = (
    '<tr><td>{name}</td><td class="{state}">{state}</td><td>{health}</td><td class="n">{queued}'
    '</td><td class="n">{in_flight}</td><td class="n">{delivered}</td><td class="n">{failed}</td>'
    '<td>{last_success}</td><td class="err">{last_error}</td><td class="n">{p50}</td>'
    '<td class="n">{p99}</td></tr>'
)


def status_page(status: dict) -> str:
    """A small self-contained HTML page of ``status``; every value is escaped."""
    rows = []
    for w in status.get("webhooks", []):
        latency = w.get("latency_ms") or {}
        cells = {
            "name": w.get("name"),
            "state": w.get("state"),
            "health": w.get("health"),
            "queued": w.get("queued"),
            "in_flight": w.get("in_flight"),
            "delivered": w.get("delivered"),
            "failed": w.get("failed"),
            "last_success": _when(w.get("last_success")),
            "last_error": w.get("last_error") or "",
            "p50": _ms(latency.get("p50")),
            "p99": _ms(latency.get("p99")),
        }
        rows.append(_ROW.format(**{k: html.escape(str(v)) for k, v in cells.items()}))
    events = status.get("events", {})
    uptime = status.get("uptime")
    return _PAGE.format(
        version=html.escape(str(status.get("version", __version__))),
        uptime=html.escape(_duration(uptime) if isinstance(uptime, int | float) else "?"),
        received=int(events.get("received", 0)),
        rejected=int(events.get("rejected", 0)),
        duplicates=int(events.get("duplicates", 0)),
        rows="\n".join(rows) or '<tr><td colspan="11">no webhooks configured</td></tr>',
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"
