"""The last hour by the minute (the console's chart), and the core counting into it."""

from hypothesis import given
from hypothesis import strategies as st

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


@given(st.lists(st.tuples(st.integers(0, 4 * 3600), st.booleans()), max_size=200))
def test_the_ring_agrees_with_a_plain_count_of_the_newest_hour(counts):
    h, plain = LastHour(), {}
    now = 0
    for offset, delivered in counts:
        now = max(now, offset)  # the clock goes forward
        at = T0 + now
        h.count(at, delivered)
        minute = int(at // 60)
        plain.setdefault(minute, [0, 0])[0 if delivered else 1] += 1
    newest = max(plain, default=0)
    expected = [[m * 60, d, f] for m, (d, f) in sorted(plain.items()) if m > newest - MINUTES]
    assert h.minutes() == expected
