"""The values that cross part boundaries: small, frozen, shared by reference.

pykka passes references, not copies, so everything here is immutable. Each part
owns the meaning of its messages; they live together only so that no part has
to import another part to talk to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Payload:
    """What a webhook receives for one event, serialised once and shared by every webhook.

    ``body`` is the compact JSON object *without* its closing brace; ``for_webhook``
    appends ``"webhook": name`` and the brace, so one serialisation serves all targets.
    """

    id: str
    type: str
    body: str

    def for_webhook(self, name: str) -> bytes:
        return f'{self.body},"webhook":{json.dumps(name)}}}'.encode()


# What an event is made of, in the order the webhook body writes them (SPEC §1).
EVENT_KEYS = ("type", "id", "company", "project", "timestamp", "data")


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event, as the filter sees it. ``timestamp`` is epoch seconds."""

    id: str
    type: str
    timestamp: float
    company: str | None
    project: str | None
    data: dict[str, Any]
    payload: Payload
    cost: int = 0  # bytes it holds in memory while decoded (an estimate on the high side)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event that passed validation, with the webhooks it goes to.

    ``reply`` is the ROUTER envelope (identity frames and delimiter) for an acked
    event, a ``receiver.Waiter`` for one published over HTTP, or ``None`` for an
    event that came in on the PULL socket. ``targets`` is filled in by the filter.
    """

    event: Event
    reply: Any  # tuple[bytes, ...] | receiver.Waiter | None
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Committed:
    """The journal's answer for one ``Accepted``: its sequence number, or a duplicate."""

    item: Accepted
    seq: int | None  # None: the id was already journaled (a duplicate, acked, not delivered)


# --------------------------------------------------------------------------- deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    """One (event, webhook) delivery as its supervisor holds it. A value: retries replace it.

    ``seq`` is the journal's event sequence number and orders deliveries (oldest
    first). ``attempts`` counts attempts already made; ``next_at`` is the wall-clock
    time the next attempt is due (``None``: now).
    """

    seq: int
    payload: Payload
    attempts: int = 0
    next_at: float | None = None
    # Set while the body is let go to save memory (a retry due much later): its size in
    # bytes. The body is in the journal and is read back when the attempt is due.
    stored_body: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A job for the delivery pool: send one attempt of one delivery.

    ``seq`` is 0 for a health check, which is never journaled.
    """

    webhook: Any  # router.config.WebhookConfig (Any avoids an import cycle)
    seq: int
    payload: Payload
    number: int  # 1-based attempt number, sent as webhook-attempt
    # The generation of this daemon's lease trust when it was handed over (SPEC §8,
    # router.trust): it goes out only while that still allows it. 0: no lease (one daemon).
    lease_generation: int = 0


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What happened to one attempt. The pool reports facts; the supervisor decides."""

    webhook: str
    seq: int
    number: int
    ok: bool  # a 2xx within the timeout
    status: int | None  # HTTP status, None when no response came
    error: str | None  # short reason when not ok: "HTTP 500", "timeout", "blocked address", …
    retry_after: float | None  # seconds, from Retry-After on 429/503
    latency: float  # seconds from send to response (or failure)
    response: str  # response body, at most 64 KiB, decoded leniently
    started_at: float  # wall-clock time the attempt started
    # The router could not build or send the request (a bug or a value it cannot carry):
    # not the endpoint's fault, so it never counts towards the webhook's health.
    router_fault: bool = False


# --------------------------------------------------------------------------- journal

DONE, PENDING, EXHAUSTED, CANCELLED = "done", "pending", "exhausted", "cancelled"


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the alerts (SPEC §7) need to survive a restart, kept with a webhook's state.

    A value of its own so that a success, which makes a new ``WebhookState``, copies one
    reference for it, not three fields: the data path pays nothing for alerts.
    """

    failing_since: float | None = None  # when the failed attempts in a row began
    last_alert: str | None = None  # the newest alert raised: "failing" | "disabled" | "recovered"
    last_alert_at: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookState:
    """A webhook's persisted health and counters (what survives a restart)."""

    state: str = "active"  # active | failing | disabled
    disabled_reason: str | None = None  # "manual" | "exhausted" | "gone" | "config"
    consecutive_failures: int = 0
    delivered: int = 0
    failed: int = 0
    last_success: float | None = None
    last_error: str | None = None
    alerts: AlertState = AlertState()


@dataclass(frozen=True, slots=True)
class Alert:
    """A webhook's health changed and the people who run it are to be told (SPEC §7).

    Made by the webhook's core, sent by ``router.alerts`` on its own threads. ``url`` is
    the public part only (scheme, host, port): never a path or query, which hold tokens.
    """

    kind: str  # "failing" | "disabled" | "recovered": the event type is "webhook.<kind>"
    webhook: str
    url: str
    reason: str  # failing: failed_attempts; disabled: exhausted | gone | manual;
    # recovered: enable | probe | delivered
    last_error: str | None
    since: float | None  # when the trouble began: the first failed attempt, or the disabling
    queued: int  # deliveries held for it
    at: float
    emails: tuple[str, ...] = ()  # the webhook's own alert_email


@dataclass(frozen=True, slots=True)
class Append:
    """Journal these accepted events and their deliveries in one transaction."""

    items: tuple[Accepted, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Record one attempt and the delivery's new state (``done``, ``pending`` or ``exhausted``)."""

    webhook: str
    seq: int
    result: AttemptResult
    state: str
    next_at: float | None = None


@dataclass(frozen=True, slots=True)
class SaveState:
    """Persist a webhook's state; the journal keeps only the newest per transaction."""

    webhook: str
    state: WebhookState


@dataclass(frozen=True, slots=True)
class LoadPending:
    """Read up to ``limit`` pending deliveries of ``webhook`` with seq > ``after_seq``.

    They cost at most ``max_bytes`` in memory (``budget.delivery_cost``; None: no
    bound). With ``seqs``, read exactly those (bodies for retries that are due).
    The journal calls ``reply(Loaded(...))`` from its own thread.
    """

    webhook: str
    after_seq: int
    limit: int
    reply: Callable[[Any], None]
    max_bytes: int | None = None
    seqs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Revive:
    """Turn ``webhook``'s exhausted deliveries back into pending ones (attempts reset).

    With ``since`` (epoch seconds) or ``include_done``, this is a replay: deliveries
    already done are sent again too. ``since``/``until`` bound when the events were
    received (``since`` included, ``until`` not); ``event`` picks one event id.
    Replies ``Loaded`` with how many were revived.
    """

    webhook: str
    reply: Callable[[Any], None]
    since: float | None = None
    include_done: bool = False
    until: float | None = None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Rebuild:
    """Read back what the journal holds for ``webhook``, as ``Journal.load`` does at start.

    Answered on the journal's thread, so after every write submitted before it:
    ``reply(restored, newest_seq)`` with a ``journal.Restored`` (state, the first
    ``limit`` pending deliveries, the counts) and the newest event seq it has seen.
    """

    webhook: str
    limit: int
    reply: Callable[[Any, int], None]


@dataclass(frozen=True, slots=True)
class Loaded:
    """Deliveries read back from the journal, oldest first."""

    webhook: str
    deliveries: tuple[Delivery, ...]
    after_seq: int
    limit: int | None  # None: the answer to a Revive
    wanted: int = 0  # the cost of the next delivery, which did not fit in max_bytes
    seqs: tuple[int, ...] = ()  # the seqs asked for, when LoadPending named them
    revived: int = 0  # how many deliveries a Revive made pending again
    queued: int | None = None  # all pending for the webhook, when others add to it (SPEC §8)


@dataclass(frozen=True, slots=True)
class Cancel:
    """A webhook left the config: cancel its unfinished deliveries (logged with the count)."""

    webhook: str
    # Called after the commit with the count, or None when the lease was gone (SPEC §8).
    done: Callable[[int | None], None] | None = None
