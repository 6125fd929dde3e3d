"""Prometheus metrics, and the HTTP server for /metrics, /healthz, /status and the status page.

Names follow SPEC.md to the letter (no prefix). Per-webhook gauges come from
supervisor snapshots at scrape time, not from the data path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_RECEIVED = Counter(
    "events_received", "Valid events accepted on either ingest socket.", registry=REGISTRY
)
EVENTS_REJECTED = Counter(
    "events_rejected", "Bad events refused, by reason.", ["reason"], registry=REGISTRY
)
EVENTS_DUPLICATE = Counter(
    "events_duplicate", "Events whose id was already journaled (acked, not delivered again).",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "deliveries", "Deliveries finished, by webhook and outcome (delivered, exhausted, cancelled).",
    ["webhook", "outcome"], registry=REGISTRY,
)
ATTEMPTS = Counter(
    "delivery_attempts", "HTTP attempts, by webhook and result (ok, failed).",
    ["webhook", "result"], registry=REGISTRY,
)
ATTEMPT_LATENCY = Histogram(
    "delivery_attempt_seconds", "Time from sending an attempt to its outcome.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
JOURNAL_COMMIT = Histogram(
    "journal_commit_seconds", "Time of one journal transaction (group commit).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
JOURNAL_ERRORS = Counter(
    "journal_errors", "Journal transactions that failed (disk full, I/O error).", registry=REGISTRY
)
CONFIG_RELOADS = Counter("config_reloads", "Successful config reloads.", registry=REGISTRY)
CONFIG_RELOAD_FAILURES = Counter(
    "config_reload_failures", "Reloads refused because the new file was invalid.",
    registry=REGISTRY,
)
