"""What a webhook looks like outside the router: its settings as YAML keys, plus its status.

The one place that decides it: the API's answers, and later the console and ``export``, all
come from ``webhook()``. Settings are written as SPEC §4 and §5 spell them (durations in
seconds, rates as ``50/s``), so that a webhook read here, given a secret, loads back into the
same ``WebhookConfig`` (``tests/test_resources.py`` checks that round trip).

Signing secrets are never shown, to anyone. The URL's path and query and the header values may
hold the receiver's credentials (a Slack URL is one): a token that may write webhooks sees them
in full, as it may replace them anyway; a read-only token sees what ``status`` shows, the URL's
scheme, host and port and the header names, with ``HIDDEN`` for their values.
"""

from __future__ import annotations

from typing import Any

from router.config import WebhookConfig
from router.rules import AllOf, Cond, Not, Pred, Rule
from router.webhook import _public_url

HIDDEN = "(hidden)"
_UNITS = {1.0: "s", 60.0: "m", 3600.0: "h"}
_NOT_STATUS = ("name", "url")  # snapshot keys the settings already say (and say in full)


def predicate(p: Pred) -> dict:
    """A ``where`` predicate as written in YAML."""
    if isinstance(p, Cond):
        value = p.value
        if p.op == "regex":
            value = value.pattern
        elif isinstance(value, tuple):
            value = list(value)
        return {"field": p.field, p.op: value}
    if isinstance(p, Not):
        return {"not": predicate(p.item)}
    return {"all" if isinstance(p, AllOf) else "any": [predicate(i) for i in p.items]}


def rule(r: Rule) -> dict:
    return {
        "events": list(r.events),
        "projects": sorted(r.projects),
        "companies": sorted(r.companies),
        "where": None if r.where is None else predicate(r.where),
    }


def settings(w: WebhookConfig, full: bool = True) -> dict[str, Any]:
    """The webhook's settings as YAML keys, defaults applied; never its secrets.

    ``full`` is for tokens that may write: the whole URL and the header values.
    """
    rules = rule(w.rules[0]) if len(w.rules) == 1 else {"match": [rule(r) for r in w.rules]}
    rate = w.rate_limit
    return {
        "name": w.name,
        "url": w.url if full else _public_url(w.url),
        **rules,
        "enabled": w.enabled,
        "timeout": w.timeout,
        "retry": {"attempts": w.retry.attempts, "backoff": list(w.retry.backoff)},
        "max_in_flight": w.max_in_flight,
        "ordered": w.ordered,
        "rate_limit": None if rate is None else _rate(rate.count, rate.per),
        "headers": {k: v if full else HIDDEN for k, v in w.headers},
        "signature": w.signature,
        "signature_header": w.signature_header,
        "allow_private_networks": w.allow_private_networks,
        "health": {"probe_interval": w.health.probe_interval},
    }


def _rate(count: float, per: float) -> str:
    return f"{f'{count:f}'.rstrip('0').rstrip('.')}/{_UNITS[per]}"  # 50.0 per 1s: "50/s"


def webhook(w: WebhookConfig, status: dict | None, full: bool = True) -> dict[str, Any]:
    """Settings, ``source`` and the status fields of ``status --json`` (``status``: a snapshot)."""
    shown = settings(w, full)
    # `health` is the status field here (as in `status --json`); the `health:` setting (its
    # probe_interval) is shown as `health_check`, and written back as `health:` (SPEC §6).
    shown["health_check"] = shown.pop("health")
    shown["source"] = w.source  # "FILE:LINE", or "api" (config.API_SOURCE)
    for key, value in (status or {"state": "unknown", "health": "UNKNOWN"}).items():
        if key not in _NOT_STATUS:
            shown[key] = value
    return shown
