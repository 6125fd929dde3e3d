"""A webhook as JSON: YAML keys that load back into the same webhook, secrets never shown."""

from __future__ import annotations

import base64
import json
import textwrap
from dataclasses import replace
from pathlib import Path

from router.config import API_SOURCE, load
from router.resources import HIDDEN, settings, webhook
from router.rules import AllOf, AnyOf, Cond, Not

KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
FILE = f"""
defaults:
  timeout: 3s
  retry: {{backoff: [1s, 2m]}}
webhooks:
  - name: busy
    url: https://hooks.example.com/services/T0/B0/s3cr3t?token=q
    secret: [{WHSEC}, "old-plain-secret"]
    rate_limit: 2.5/m
    headers: {{X-Api-Key: k3y-value, X-Team: planning}}
    signature: hmac-sha256-hex
    signature_header: X-Hub
    ordered: true
    enabled: false
    max_in_flight: 1
    health: {{probe_interval: 5m}}
    match:
      - events: ["TODO_*", COMMENT_ADDED]
        projects: [p2, p1]
        where:
          all:
            - {{field: data.priority, in: [high, 3, true]}}
            - not: {{field: data.archived, eq: true}}
            - any: [{{field: data.title, regex: "^a.*z$"}}, {{field: data.n, gte: 2.5}}]
            - {{field: data.x, exists: false}}
      - {{companies: [acme], events: [TODO_DELETED]}}
  - name: plain
    url: http://127.0.0.1:8080/p
    allow_private_networks: true
    signature: none
"""


def load_file(tmp: Path, text: str):
    path = tmp / "router.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load(str(path), env={})


def test_settings_load_back_into_the_same_webhook_given_its_secret(tmp_path):
    original = load_file(tmp_path, FILE).webhooks
    shown = [settings(w) for w in original]
    shown[0]["secret"] = [WHSEC, "old-plain-secret"]  # never shown: the client supplies it
    (tmp_path / "again").mkdir()
    again = load_file(tmp_path / "again", json.dumps({"webhooks": shown})).webhooks
    assert [without_sources(w) for w in again] == [without_sources(w) for w in original]


def without_sources(w):
    """The webhook minus where it was written (and with regexes as their text)."""

    def clean(p):
        if isinstance(p, Cond):
            return replace(p, source="", value=p.value.pattern if p.op == "regex" else p.value)
        if isinstance(p, Not):
            return replace(p, source="", item=clean(p.item))
        if isinstance(p, AllOf | AnyOf):
            return replace(p, source="", items=tuple(clean(i) for i in p.items))
        return p

    rules = tuple(replace(r, source="", where=clean(r.where)) for r in w.rules)
    return replace(w, source="", rules=rules)


def test_no_secret_is_ever_shown_and_a_read_token_sees_what_status_shows(tmp_path):
    busy, _ = load_file(tmp_path, FILE).webhooks
    full, limited = json.dumps(settings(busy)), settings(busy, full=False)
    for secret in (WHSEC, "old-plain-secret", base64.b64encode(KEY).decode()):
        assert secret not in full and secret not in json.dumps(limited)
    assert "secret" not in settings(busy)
    assert settings(busy)["url"] == "https://hooks.example.com/services/T0/B0/s3cr3t?token=q"
    assert settings(busy)["headers"] == {"X-Api-Key": "k3y-value", "X-Team": "planning"}
    assert limited["url"] == "https://hooks.example.com"
    assert limited["headers"] == {"X-Api-Key": HIDDEN, "X-Team": HIDDEN}
    assert "s3cr3t" not in json.dumps(limited) and "k3y-value" not in json.dumps(limited)


def test_a_single_rule_is_written_on_the_webhook_and_several_as_match(tmp_path):
    busy, plain = load_file(tmp_path, FILE).webhooks
    assert "match" not in settings(plain)
    assert {k: settings(plain)[k] for k in ("events", "projects", "companies", "where")} == {
        "events": [],
        "projects": [],
        "companies": [],
        "where": None,
    }
    first, second = settings(busy)["match"]
    assert first["projects"] == ["p1", "p2"]
    assert first["where"]["all"][2] == {
        "any": [{"field": "data.title", "regex": "^a.*z$"}, {"field": "data.n", "gte": 2.5}]
    }
    assert second == {"events": ["TODO_DELETED"], "projects": [], "companies": ["acme"],
                      "where": None}  # fmt: skip
    assert settings(busy)["rate_limit"] == "2.5/m"
    assert settings(busy)["timeout"] == 3.0
    assert settings(busy)["retry"] == {"attempts": 5, "backoff": [1.0, 120.0]}


def test_a_webhook_adds_its_source_and_the_status_fields_but_keeps_its_own_url(tmp_path):
    busy, _ = load_file(tmp_path, FILE).webhooks
    snapshot = {"name": "busy", "url": "https://hooks.example.com", "state": "disabled",
                "health": "UNHEALTHY", "queued": 3, "last_error": "HTTP 500"}  # fmt: skip
    shown = webhook(busy, snapshot)
    assert shown["source"] == f"{tmp_path}/router.yaml:5"
    assert (shown["state"], shown["health"], shown["queued"]) == ("disabled", "UNHEALTHY", 3)
    assert shown["url"] == busy.url and shown["name"] == "busy"
    assert webhook(replace(busy, source=API_SOURCE), None)["source"] == "api"
    assert webhook(busy, None)["state"] == "unknown"
    assert shown["health"] == "UNHEALTHY"  # the status field, as in status --json
    assert shown["health_check"] == {"probe_interval": 300.0}  # the `health:` setting
