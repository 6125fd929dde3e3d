"""The retry and health policy, as pure functions: no threads, no clocks."""

import pytest

from router import retry
from router.config import RetryConfig
from router.messages import AttemptResult, WebhookState

POLICY = RetryConfig(attempts=5, backoff=(10.0, 60.0, 300.0, 1800.0))


def result(number=1, ok=False, status=500, retry_after=None):
    return AttemptResult(
        webhook="w",
        seq=1,
        number=number,
        ok=ok,
        status=status,
        error=None if ok else f"HTTP {status}",
        retry_after=retry_after,
        latency=0.01,
        response="",
        started_at=0.0,
    )


def test_success_is_done():
    assert retry.decide(POLICY, result(ok=True, status=200), 0, 0.5) == retry.Done()


@pytest.mark.parametrize(("number", "base"), [(1, 10.0), (2, 60.0), (3, 300.0), (4, 1800.0)])
def test_backoff_follows_the_schedule_without_jitter_at_the_midpoint(number, base):
    assert retry.decide(POLICY, result(number), 1000.0, 0.5) == retry.RetryAt(1000.0 + base)


def test_jitter_spreads_the_delay_by_twenty_percent():
    low = retry.decide(POLICY, result(1), 0.0, 0.0)
    high = retry.decide(POLICY, result(1), 0.0, 0.999999)
    assert low == retry.RetryAt(8.0)
    assert high.at == pytest.approx(12.0, abs=1e-4)


def test_last_step_repeats_when_attempts_outnumber_the_schedule():
    policy = RetryConfig(attempts=10, backoff=(1.0, 2.0))
    assert retry.decide(policy, result(7), 0.0, 0.5) == retry.RetryAt(2.0)


def test_fifth_failure_exhausts_the_delivery():
    assert retry.decide(POLICY, result(5), 0.0, 0.5) == retry.GiveUp("exhausted")


def test_gone_gives_up_at_once():
    assert retry.decide(POLICY, result(1, status=410), 0.0, 0.5) == retry.GiveUp("gone")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_waits_at_least_that_long(status):
    assert retry.decide(POLICY, result(1, status=status, retry_after=120.0), 0.0, 0.5) == (
        retry.RetryAt(120.0)
    )


def test_retry_after_is_capped_at_the_max_backoff():
    d = retry.decide(POLICY, result(1, status=429, retry_after=86400.0), 0.0, 0.5)
    assert d == retry.RetryAt(1800.0)


def test_retry_after_shorter_than_backoff_keeps_the_backoff():
    assert retry.decide(POLICY, result(2, status=503, retry_after=1.0), 0.0, 0.5) == (
        retry.RetryAt(60.0)
    )


def test_retry_after_is_ignored_on_other_statuses():
    assert retry.decide(POLICY, result(1, status=500, retry_after=500.0), 0.0, 0.5) == (
        retry.RetryAt(10.0)
    )


def test_health_moves_active_failing_disabled_and_back():
    s = WebhookState()
    assert retry.health(s) == "HEALTHY"
    s = retry.failed_attempt(s, "HTTP 500")
    assert (s.state, s.consecutive_failures, retry.health(s)) == ("failing", 1, "DEGRADED")
    s = retry.gave_up(retry.failed_attempt(s, "HTTP 500"), "exhausted")
    assert (s.state, s.failed, retry.health(s)) == ("disabled", 1, "UNHEALTHY")
    s = retry.enabled(s)
    assert (s.state, s.consecutive_failures, retry.health(s)) == ("active", 0, "HEALTHY")


def test_success_heals_a_failing_webhook_but_not_a_disabled_one():
    failing = retry.failed_attempt(WebhookState(), "timeout")
    healed = retry.succeeded(failing, 5.0)
    assert (healed.state, healed.consecutive_failures, healed.delivered) == ("active", 0, 1)
    off = retry.disabled(WebhookState(), "manual")
    assert retry.succeeded(off, 5.0).state == "disabled"
