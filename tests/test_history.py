"""The last hour by the minute (the console's chart), and the core counting into it."""

from router.history import MINUTES, LastHour
from tests.test_webhook import core, d, res

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def test_deliveries_and_failures_are_counted_in_their_minute():
    h = LastHour()
    h.count(T0 + 1, delivered=True)
    h.count(T0 + 59, delivered=True)
    h.count(T0 + 30, delivered=False)
    h.count(T0 + 61, delivered=False)
    assert h.minutes() == [[T0, 2, 1], [T0 + 60, 0, 1]]


def test_a_slot_is_reused_an_hour_on_and_older_minutes_are_not_shown():
    h = LastHour()
    h.count(T0, delivered=True)
    h.count(T0 + 60, delivered=False)
    h.count(T0 + MINUTES * 60, delivered=False)  # T0's slot, an hour on
    assert h.minutes() == [[T0 + 60, 0, 1], [T0 + MINUTES * 60, 0, 1]]
    h.count(T0 + 5 * MINUTES * 60, delivered=True)  # hours later: the rest is stale
    assert h.minutes() == [[T0 + 5 * MINUTES * 60, 1, 0]]


def test_an_empty_hour_shows_nothing():
    assert LastHour().minutes() == []


def test_the_core_counts_each_attempt_into_its_last_hour_from_the_first_on():
    c = core()
    assert c.last_hour is None and c.snapshot()["per_minute"] == []  # idle webhooks hold none
    c.enqueue((d(1), d(2)), T0)
    c.result(res(1, ok=True, status=200), T0 + 1)
    c.result(res(2, ok=False, status=500), T0 + 2)
    assert c.snapshot()["per_minute"] == [[T0, 1, 1]]
