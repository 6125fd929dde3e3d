"""Small constructors of the frozen values that several unit tests build."""

from __future__ import annotations

import re
import signal
from typing import Any

from router.config import WebhookConfig
from router.filter import Filter
from router.messages import Event, Payload
from router.rules import Cond, Rule

# --------------------------------------------------------------------------- events and rules


def event(
    type: str = "TODO_CREATED",
    project: str | None = "p1",
    company: str | None = "acme",
    data: dict[str, Any] | None = None,
    id: str = "e1",
    timestamp: float = 1_700_000_000.0,
) -> Event:
    return Event(
        id=id,
        type=type,
        timestamp=timestamp,
        company=company,
        project=project,
        data={} if data is None else data,
        payload=Payload(id, type, body="{}"),
    )


def cond(field: str, op: str, value: Any, source: str = "") -> Cond:
    if op == "regex":
        value = re.compile(value)
    elif op in ("in", "nin"):
        value = tuple(value)
    return Cond(field=field, op=op, value=value, path=tuple(field.split(".")), source=source)


def holds(pred, ev: Event) -> bool:
    return Filter([("w", (Rule(where=pred),))]).match(ev) == ("w",)


def rule(events=(), projects=(), companies=(), where=None, source="") -> Rule:
    return Rule(tuple(events), frozenset(projects), frozenset(companies), where, source)


# --------------------------------------------------------------------------- attempts

KEY = b"0123456789abcdef0123456789abcdef"
PAYLOAD = Payload(
    id="evt_01",
    type="TODO_CREATED",
    body='{"id":"evt_01","type":"TODO_CREATED","timestamp":"2026-11-27T16:38:33.123Z",'
    '"company":"acme","data":{"title":"caf\u00e9"}',
)


def hook(url: str, **overrides) -> WebhookConfig:
    settings_ = {
        "name": "crm-sync",
        "url": url,
        "secrets": (KEY,),
        "timeout": 2.0,
        "allow_private_networks": True,
    }
    settings_.update(overrides)
    return WebhookConfig(**settings_)


def sigint_as_at_a_terminal() -> None:
    """A ``preexec_fn``: the child stops on SIGINT as a command does at a terminal, even when
    the suite itself runs with SIGINT ignored (a shell's background job inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class HandClock:
    """A monotonic clock as a callable (``time.monotonic``'s stand-in) that the test moves
    by setting ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
