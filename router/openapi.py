"""The API described in OpenAPI 3.1, built from the API's own route table.

``router.api`` owns the paths, methods and handlers; this module adds what a
client needs to call them: parameters, bodies and answers. Each operation's
summary is its handler's docstring, so the description cannot drift from the
code that answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from router import __version__
from router.control import ATTEMPTS_LIMIT, MAX_ATTEMPTS_LIMIT

_ERROR = {"$ref": "#/components/schemas/Errors"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}

# Answers every operation may give, besides its own.
_COMMON = {
    "401": "No token, or one the router does not know",
    "403": "The token's scope does not allow this",
    "405": "The method is not allowed on this path",
}

_WRITE = {  # what creating or replacing a webhook may answer besides its 2xx
    "400": "The body is not JSON",
    "409": "The name is taken, or the webhook is defined in a file (read-only here)",
    "422": "The webhook is invalid (every error), or outside the token's companies",
    "507": "The router cannot store another webhook",
}

# Per (method, last fixed path segment): query parameters, the body (schema, required),
# and the answers it gives.
_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "webhooks"): {"ok": ("200", "The webhooks the token may see", "WebhookList")},
    ("GET", "{name}"): {"ok": ("200", "The webhook, its settings and status", "Webhook")},
    ("POST", "webhooks"): {
        "body": ("WebhookSettings", True),
        "ok": ("201", "The webhook made, with its generated `secret` this once", "Webhook"),
        "more": _WRITE,
    },
    ("PUT", "{name}"): {
        "body": ("WebhookSettings", True),
        "ok": ("200", "The webhook as it is now", "Webhook"),
        "more": _WRITE,
    },
    ("DELETE", "{name}"): {
        "ok": ("204", "The webhook is gone", None),
        "more": {"409": "The webhook is defined in a file: read-only here"},
    },
    ("POST", "enable"): {
        "ok": ("200", "The health check passed: the webhook is enabled", "StateChange"),
        "more": {"502": "The health check failed: the webhook stays disabled"},
    },
    ("POST", "disable"): {"ok": ("200", "The webhook is disabled", "StateChange")},
    ("POST", "replay"): {
        "body": ("Replay", False),
        "ok": ("202", "How many deliveries were queued again", "Replayed"),
        "more": {"400": "The body is not JSON", "422": "A value in the body is wrong"},
    },
    ("POST", "test"): {
        "ok": ("200", "What the test attempt gave (the endpoint may have failed it)", "Test"),
        "more": {"504": "The attempt got no answer in time"},
    },
    ("GET", "attempts"): {
        "query": [
            (
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_ATTEMPTS_LIMIT,
                    "default": ATTEMPTS_LIMIT,
                },
            ),
            ("failed", {"type": "boolean", "default": False}),
            ("event", {"type": "string"}),
        ],
        "ok": ("200", "The attempt log, newest first", "Attempts"),
        "more": {"422": "A query parameter is wrong"},
    },
    ("GET", "openapi.json"): {"ok": ("200", "This document", "OpenAPI")},
    ("POST", "events"): {
        "body": ("Event", True),
        "ok": ("201", "Journaled; a repeated id is acked `duplicate` and not sent again", "Ack"),
        "more": {
            "400": "The body is not JSON",
            "422": "Ingest refuses this event; `path` is the reason code",
            "503": "Not journaled (journal failing, stuck or busy): send it again, same id",
        },
    },
    ("GET", "event-types"): {
        "ok": ("200", "What the router has seen, for this token's companies", "EventTypes")
    },
    ("POST", "explain"): {
        "body": ("Event", True),
        "ok": ("200", "Which webhooks the event reaches, and why not the others", "Explained"),
        "more": {"400": "The body is not JSON", "422": "Ingest would refuse this event"},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Errors": {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "message"],
                    "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                },
            }
        },
    },
    "Webhook": {
        "description": "Its settings as in YAML (secrets never), `source`, and its status fields",
        "type": "object",
        "required": ["name", "source"],
        "properties": {
            "name": {"type": "string"},
            "source": {"type": "string", "description": '"api", or "FILE:LINE"'},
            "state": {"type": "string", "enum": ["active", "failing", "disabled"]},
        },
        "additionalProperties": True,
    },
    "WebhookSettings": {
        "description": "A webhook as in YAML (SPEC §4, §5); `secret` optional (one is generated)",
        "type": "object",
        "required": ["url"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
            "url": {"type": "string", "format": "uri"},
            "secret": {"type": "string", "description": "whsec_<base64>, or plain text"},
            "events": {"type": "array", "items": {"type": "string"}},
            "projects": {"type": "array", "items": {"type": "string"}},
            "companies": {"type": "array", "items": {"type": "string"}},
            "match": {"type": "array", "items": _ANY_OBJECT},
        },
        "additionalProperties": True,
    },
    "WebhookList": {
        "type": "object",
        "properties": {
            "webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}
        },
    },
    "StateChange": {
        "type": "object",
        "properties": {
            "webhook": {"type": "string"},
            "ok": {"type": "boolean"},
            "state": {"type": "string"},
            "detail": {"type": "string"},
        },
    },
    "Replay": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "since": {"type": ["string", "number"], "description": "ISO-8601 or epoch seconds"},
            "until": {"type": ["string", "number"], "description": "ISO-8601 or epoch seconds"},
            "failed": {"type": "boolean", "description": "only deliveries that used up attempts"},
            "event": {"type": "string", "description": "only this event id"},
        },
    },
    "Replayed": {
        "type": "object",
        "properties": {"webhook": {"type": "string"}, "replayed": {"type": "integer"}},
    },
    "Test": {
        "type": "object",
        "properties": {
            "webhook": {"type": "string"},
            "event": {"type": "string"},
            "ok": {"type": "boolean"},
            "status": {"type": ["integer", "null"]},
            "latency_ms": {"type": "number"},
            "error": {"type": ["string", "null"]},
            "response": {"type": "string"},
        },
    },
    "Attempts": {
        "type": "object",
        "properties": {"attempts": {"type": "array", "items": _ANY_OBJECT}},
    },
    "Event": {
        "description": "The envelope of an event (SPEC §1) as JSON",
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string"},
            "id": {"type": "string"},
            "timestamp": {"type": ["string", "number"]},
            "company": {"type": ["string", "null"]},
            "project": {"type": ["string", "null"]},
            "data": _ANY_OBJECT,
        },
    },
    "OpenAPI": {"description": "An OpenAPI 3.1 document", **_ANY_OBJECT},
    "Ack": {
        "description": "The ack the ack socket gives (SPEC §1)",
        "type": "object",
        "required": ["ok", "id"],
        "properties": {
            "ok": {"const": True},
            "id": {"type": "string", "description": "the event's id, given or assigned"},
            "duplicate": {"const": True, "description": "the id was journaled already"},
        },
    },
    "EventTypes": {
        "description": "Bounded (router.catalog); names and paths, never values",
        "type": "object",
        "properties": {
            "event_types": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "count": {"type": "integer"},
                        "last_seen": {"type": "string", "format": "date-time"},
                        "paths": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "projects": {"type": "array", "items": {"type": "string"}},
            "companies": {"type": "array", "items": {"type": "string"}},
            "truncated": {"type": "boolean", "description": "a bound kept something out"},
        },
    },
    "Explained": {
        "type": "object",
        "properties": {
            "event": {"type": "string"},
            "reaches": {"type": "array", "items": {"type": "string"}},
            "webhooks": {"type": "array", "items": _ANY_OBJECT},
        },
    },
}


def document(prefix: str, routes: list[tuple[tuple[str, ...], dict[str, Callable]]]) -> dict:
    """The OpenAPI document of ``routes`` under ``prefix``."""
    paths: dict[str, dict] = {}
    for pattern, methods in routes:
        path = prefix + "/" + "/".join(pattern)
        item = paths.setdefault(path, {})
        if "{name}" in pattern:
            item["parameters"] = [{"name": "name", "in": "path", "required": True,
                                   "schema": {"type": "string"}}]  # fmt: skip
        for method, handler in methods.items():
            item[method.lower()] = _operation(method, pattern, handler)
    return {
        "openapi": "3.1.0",
        "info": {"title": "webhook-router", "version": __version__},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
    }


def _operation(method: str, pattern: tuple[str, ...], handler: Callable) -> dict:
    key = pattern[-1]
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{'_'.join(p.strip('{}') for p in pattern)}".replace(
            "-", "_"
        ).replace(".", "_"),
        "summary": _summary(handler, method, pattern),
        "responses": {code: _answer(text) for code, text in _COMMON.items()},
    }
    if "{name}" in pattern:
        op["responses"]["404"] = _answer("No such webhook, or not one this token may see")
    spec = _OPERATIONS[method, key]
    code, text, schema = spec["ok"]
    op["responses"][code] = {"description": text}
    if schema is not None:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        op["responses"][code]["content"] = {"application/json": {"schema": ref}}
    for more, why in spec.get("more", {}).items():
        op["responses"][more] = _answer(why)
    if "body" in spec:
        schema, required = spec["body"]
        ref = {"$ref": f"#/components/schemas/{schema}"}
        op["requestBody"] = {"required": required,
                             "content": {"application/json": {"schema": ref}}}  # fmt: skip
    if "query" in spec:
        op["parameters"] = [{"name": n, "in": "query", "required": False, "schema": s}
                            for n, s in spec["query"]]  # fmt: skip
    return op


def _summary(handler: Callable, method: str, pattern: tuple[str, ...]) -> str:
    doc = inspect.getdoc(handler)
    first = doc.splitlines()[0] if doc else f"{method} /{'/'.join(pattern)}"
    return first.replace("``", "`")  # the docstring's literals, as Markdown


def _answer(text: str) -> dict:
    return {"description": text, "content": {"application/json": {"schema": _ERROR}}}
