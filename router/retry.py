"""Retry and health policy: pure functions of config, attempt result and time.

No threads, no clocks read here: the supervisor passes ``now`` and a random
number in, and gets a value back. That keeps every rule testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from router.config import RetryConfig
from router.messages import AttemptResult, WebhookState

JITTER = 0.2  # ±20 %
RETRY_AFTER_STATUSES = frozenset((429, 503))  # whose Retry-After the next attempt waits for


@dataclass(frozen=True, slots=True)
class Done:
    """The attempt succeeded: the delivery is finished."""


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at wall-clock time ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No more attempts: ``exhausted`` (attempts used up), ``gone`` (HTTP 410), or
    ``undeliverable`` (the router itself could not send it: the webhook stays enabled)."""

    reason: str


Decision = Done | RetryAt | GiveUp


def backoff_delay(retry: RetryConfig, attempts_made: int, rand: float) -> float:
    """Delay before attempt ``attempts_made + 1``; ``rand`` in [0, 1) spreads it by ±20 %."""
    steps = retry.backoff
    base = steps[min(attempts_made - 1, len(steps) - 1)]
    return base * (1 - JITTER + 2 * JITTER * rand)


def decide(retry: RetryConfig, result: AttemptResult, now: float, rand: float) -> Decision:
    """What to do after one attempt of a delivery."""
    if result.ok:
        return Done()
    if result.router_fault:  # ours, not the endpoint's: retried, never a reason to disable
        if result.number >= retry.attempts:
            return GiveUp("undeliverable")
        return RetryAt(now + backoff_delay(retry, result.number, rand))
    if result.status == 410:
        return GiveUp("gone")
    if result.number >= retry.attempts:
        return GiveUp("exhausted")
    delay = backoff_delay(retry, result.number, rand)
    if result.retry_after is not None and result.status in RETRY_AFTER_STATUSES:
        delay = max(delay, min(result.retry_after, max(retry.backoff)))
    return RetryAt(now + delay)


# --------------------------------------------------------------------------- health

HEALTHY, DEGRADED, UNHEALTHY = "HEALTHY", "DEGRADED", "UNHEALTHY"


def health(state: WebhookState) -> str:
    """HEALTHY, DEGRADED (failing), or UNHEALTHY (disabled because the endpoint failed)."""
    if state.state == "disabled" and state.disabled_reason in ("exhausted", "gone"):
        return UNHEALTHY
    if state.consecutive_failures:
        return DEGRADED
    return HEALTHY


def succeeded(state: WebhookState, now: float) -> WebhookState:
    """A delivery got its 2xx. A failing webhook is active again; a disabled one stays so."""
    return replace(
        state,
        state="active" if state.state == "failing" else state.state,
        consecutive_failures=0,
        delivered=state.delivered + 1,
        last_success=now,
    )


def failed_attempt(state: WebhookState, error: str) -> WebhookState:
    """An attempt failed (a retry follows or not): active becomes failing."""
    return replace(
        state,
        state="failing" if state.state == "active" else state.state,
        consecutive_failures=state.consecutive_failures + 1,
        last_error=error,
    )


def gave_up(state: WebhookState, reason: str) -> WebhookState:
    """A delivery used up its attempts (or got 410): the webhook is disabled and holds events."""
    return replace(state, state="disabled", disabled_reason=reason, failed=state.failed + 1)


def disabled(state: WebhookState, reason: str) -> WebhookState:
    return replace(state, state="disabled", disabled_reason=reason)


def enabled(state: WebhookState) -> WebhookState:
    """Back in service (health check passed, or the operator's config says so)."""
    return replace(state, state="active", disabled_reason=None, consecutive_failures=0)
