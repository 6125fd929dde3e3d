"""The webhook core, the supervisor's plain logic: queue, retries, health, spill, order."""

import itertools
from dataclasses import replace

from router.budget import Budget
from router.config import HealthConfig, RateLimit, RetryConfig, WebhookConfig
from router.messages import (
    AttemptResult,
    Delivery,
    Loaded,
    Outcome,
    Payload,
    SaveState,
    WebhookState,
)
from router.webhook import (
    BUDGET_RETRY,
    QUEUE_BYTES,
    Load,
    Record,
    Requeue,
    Restored,
    Send,
    WakeAt,
    WebhookCore,
)


def hook(**kw) -> WebhookConfig:
    base = dict(name="w", url="http://127.0.0.1:9/x", retry=RetryConfig(5, (10.0, 20.0)))
    base.update(kw)
    return WebhookConfig(**base)


ids = (f"probe{i}" for i in itertools.count())


def core(restored=None, queue_limit=100, **kw) -> WebhookCore:
    restored = restored or Restored()
    return WebhookCore(hook(**kw), restored, 0.0, lambda: next(ids), lambda: 0.5, queue_limit)


def d(seq: int, **kw) -> Delivery:
    return Delivery(seq, Payload(f"e{seq}", "T", "{}"), **kw)


def fetch(c: WebhookCore, effects, now: float = 0.0) -> list:
    """Answer the core's reads of due retries' bodies, as the journal would; all effects."""
    out = list(effects)
    for e in effects:
        if isinstance(e, Load) and e.seqs:
            rows = tuple(d(seq) for seq in e.seqs)
            out += c.loaded(e.generation, Loaded("w", rows, 0, e.limit, seqs=e.seqs), now)
    return out


def sent(effects) -> list[tuple[int, int]]:
    return [(e.attempt.seq, e.attempt.number) for e in effects if isinstance(e, Send)]


def records(effects, kind):
    return [e.message for e in effects if isinstance(e, Record) and isinstance(e.message, kind)]


def res(seq, number=1, ok=False, status=500, **kw) -> AttemptResult:
    return AttemptResult(
        "w",
        seq,
        number,
        ok,
        status,
        None if ok else f"HTTP {status}",
        kw.get("retry_after"),
        0.002,
        "",
        0.0,
    )


def test_enqueued_deliveries_go_out_up_to_max_in_flight():
    c = core(max_in_flight=2)
    assert sent(c.enqueue((d(1), d(2), d(3)), 0.0)) == [(1, 1), (2, 1)]
    effects = c.result(res(1, ok=True, status=200), 0.1)
    assert sent(effects) == [(3, 1)]
    assert records(effects, Outcome)[0].state == "done"
    assert c.snapshot()["delivered"] == 1


def test_failed_attempt_is_retried_later_with_the_next_number():
    c = core()
    c.enqueue((d(1),), 0.0)
    effects = c.result(res(1), 100.0)
    assert WakeAt(110.0) in effects
    assert records(effects, Outcome)[0].next_at == 110.0
    assert c.state.state == "failing"
    assert sent(c.tick(105.0)) == []
    effects = c.tick(110.0)
    assert sent(effects) == []  # the retry waited without its body: it is read back first
    assert [e.seqs for e in effects if isinstance(e, Load)] == [(1,)]
    assert sent(fetch(c, effects, 110.0)) == [(1, 2)]


def test_exhausted_delivery_disables_webhook_and_holds_new_events():
    c = core()
    c.enqueue((d(1),), 0.0)
    now = 0.0
    for n in range(1, 5):
        c.result(res(1, n), now)
        now += 100
        assert sent(fetch(c, c.tick(now), now)) == [(1, n + 1)]
    effects = c.result(res(1, 5), now)
    assert records(effects, Outcome)[0].state == "exhausted"
    assert c.state.state == "disabled" and c.snapshot()["health"] == "UNHEALTHY"
    assert c.snapshot()["failed"] == 1
    assert sent(c.enqueue((d(2), d(3)), now)) == []
    assert c.snapshot()["queued"] == 2


def test_gone_disables_at_once():
    c = core()
    c.enqueue((d(1),), 0.0)
    c.result(res(1, status=410), 0.0)
    assert c.state.state == "disabled" and c.state.disabled_reason == "gone"


def test_health_check_passing_enables_and_revives_oldest_first():
    c = core()
    c.enqueue((d(1),), 0.0)
    c.result(res(1, status=410), 0.0)
    c.enqueue((d(2),), 0.0)
    answers = []
    effects = c.enable(1.0, answers.append)
    (probe,) = [e.attempt for e in effects if isinstance(e, Send)]
    assert probe.seq == 0 and probe.payload.type == "WEBHOOK_HEALTH_CHECK"
    effects = c.result(res(0, ok=True, status=200), 2.0)
    assert sent(effects) == []  # the held d(2) must not overtake the older d(1)
    assert answers == [
        {"webhook": "w", "ok": True, "state": "active", "detail": "health check passed"}
    ]
    (load,) = [e for e in effects if isinstance(e, Requeue)]
    assert (load.since, load.include_done) == (None, False)  # exhausted ones only
    # The journal answers with the revived delivery; the queue reloads oldest first.
    effects = c.revived(load.generation, Loaded("w", (d(1),), 0, None), 3.0)
    (reload,) = [e for e in effects if isinstance(e, Load)]
    assert reload.after_seq == 0
    effects = c.loaded(reload.generation, Loaded("w", (d(1), d(2)), 0, reload.limit), 3.0)
    assert sent(effects) == [(1, 1), (2, 1)]


def test_failed_health_check_keeps_the_webhook_disabled():
    c = core()
    c.disable()
    answers = []
    c.enable(0.0, answers.append)
    c.result(res(0, status=500), 1.0)
    assert c.state.state == "disabled"
    assert answers[0]["ok"] is False and "HTTP 500" in answers[0]["detail"]


def test_enable_on_an_active_webhook_answers_at_once():
    answers = []
    assert core().enable(0.0, answers.append) == []
    assert answers[0]["ok"] is True


def test_ordered_webhook_sends_one_at_a_time_and_retries_the_head_first():
    c = core(ordered=True, max_in_flight=4)
    assert sent(c.enqueue((d(1), d(2)), 0.0)) == [(1, 1)]
    effects = c.result(res(1), 0.0)
    assert sent(effects) == []  # d(2) waits behind the failed head
    assert sent(fetch(c, c.tick(10.0), 10.0)) == [(1, 2)]
    assert sent(c.result(res(1, 2, ok=True, status=200), 10.0)) == [(2, 1)]


def test_unordered_webhook_goes_on_while_one_delivery_waits_for_its_retry():
    c = core(max_in_flight=1)
    c.enqueue((d(1), d(2)), 0.0)
    assert sent(c.result(res(1), 0.0)) == [(2, 1)]


def drive(c: WebhookCore, journal: list[Delivery], effects) -> list[int]:
    """Complete every attempt with a 2xx, answering loads from ``journal``; the send order."""
    order = []
    while True:
        for e in effects:
            if isinstance(e, Load):
                rows = [x for x in journal if x.seq > e.after_seq][: e.limit]
                effects = c.loaded(e.generation, Loaded("w", tuple(rows), e.after_seq, e.limit), 0)
                break
        else:
            if not c.in_flight:
                return order
            seq = min(c.in_flight)
            order.append(seq)
            journal[:] = [x for x in journal if x.seq != seq]
            effects = c.result(res(seq, ok=True, status=200), 0.0)


def test_queue_spills_to_the_journal_beyond_its_limit_and_loads_back_in_order():
    c = core(queue_limit=4, max_in_flight=1)
    journal = [d(i) for i in range(1, 12)]
    effects = c.enqueue(tuple(journal), 0.0)
    assert c.held() == 4 and c.spilled and c.snapshot()["queued"] == 10  # one in flight
    assert drive(c, journal, effects) == list(range(1, 12))
    assert not c.spilled and c.snapshot()["queued"] == 0


def test_events_arriving_while_spilled_are_not_lost():
    c = core(queue_limit=2, max_in_flight=1)
    journal = [d(i) for i in range(1, 6)]
    effects = c.enqueue(tuple(journal), 0.0)
    journal.append(d(6))
    effects += c.enqueue((d(6),), 0.0)
    assert drive(c, journal, effects) == list(range(1, 7))


def test_a_load_from_before_a_resync_is_ignored():
    c = core()
    stale = c.generation
    c.replay(None, False)
    assert c.loaded(stale, Loaded("w", (d(1),), 0, 10), 0.0) == []


def test_restored_retry_waits_for_its_due_time():
    c = core(Restored(WebhookState(), (d(1, attempts=2, next_at=50.0),), 1))
    assert sent(c.pump(10.0)) == []
    assert sent(fetch(c, c.tick(50.0), 50.0)) == [(1, 3)]


def test_rate_limit_spaces_attempts():
    c = core(rate_limit=RateLimit(1, 1.0), max_in_flight=10)
    assert sent(c.enqueue((d(1), d(2)), 0.0)) == [(1, 1)]
    assert sent(c.tick(0.5)) == []
    assert sent(c.tick(1.0)) == [(2, 1)]


def test_probe_interval_schedules_health_checks_for_a_disabled_webhook():
    c = core(health=HealthConfig(probe_interval=60.0))
    c.enqueue((d(1),), 0.0)
    effects = c.result(res(1, status=410), 0.0)
    assert WakeAt(60.0) in effects
    assert sent(c.tick(60.0)) == [(0, 1)]


def test_manual_disable_is_not_probed():
    c = core(health=HealthConfig(probe_interval=60.0))
    c.disable()
    assert sent(c.tick(1000.0)) == []


def test_config_disabled_webhook_holds_and_is_enabled_by_reconfigure():
    c = core(enabled=False)
    assert c.state.state == "disabled"
    assert sent(c.enqueue((d(1),), 0.0)) == []
    effects = c.reconfigure(hook(), 0.0)
    assert records(effects, SaveState)[0].state.state == "active"
    assert drive(c, [d(1)], effects) == [1]  # held in the journal while disabled


def test_spill_load_asks_for_pending_after_the_highest_seq_in_memory():
    c = core(Restored(WebhookState(), (d(1), d(2)), 5), queue_limit=6, max_in_flight=1)
    effects = c.pump(0.0)
    assert sent(effects) == [(1, 1)]
    (load,) = [e for e in effects if isinstance(e, Load)]
    assert (load.generation, load.after_seq, load.limit) == (0, 2, 4)  # 6 less the 2 held


def test_replay_asks_the_journal_for_done_deliveries_too():
    c = core()
    (requeue,) = c.replay(100.0, failed_only=False)
    assert requeue == Requeue(c.generation, 100.0, True)
    (requeue,) = c.replay(None, failed_only=True)
    assert requeue == Requeue(c.generation, None, False)


def test_snapshot_shows_only_scheme_host_and_port_of_the_url():
    c = core(url="https://user:pw@example.com:8443/services/T0/B0/token?token=abc#x")
    assert c.snapshot()["url"] == "https://example.com:8443"
    assert core(url="http://[::1]:8080/hook/t0k3n").snapshot()["url"] == "http://[::1]:8080"


def test_idle_means_nothing_in_flight_waiting_or_queued():
    c = core(max_in_flight=1)
    assert c.idle()
    c.enqueue((d(1), d(2)), 0.0)
    assert not c.idle()  # one in flight, one queued
    c.result(res(1), 0.0)  # d(2) goes out while d(1) waits for its retry
    c.result(res(2, ok=True, status=200), 0.0)
    assert not c.idle()  # the retry is waiting
    assert sent(fetch(c, c.tick(10.0), 10.0)) == [(1, 2)]
    c.result(res(1, 2, ok=True, status=200), 10.0)
    assert c.idle()


def test_a_disabled_webhook_holding_deliveries_is_idle():
    c = core()
    c.disable()
    c.enqueue((d(1),), 0.0)
    assert c.idle() and c.snapshot()["queued"] == 1


# --------------------------------------------------------------------------- memory


def big(seq: int, size: int) -> Delivery:
    return Delivery(seq, Payload(f"e{seq}", "T", "x" * size))


def failing_run(c: WebhookCore, journal: list[Delivery], effects, rounds: int) -> int:
    """Fail every attempt and answer every load; the most deliveries ever held in memory."""
    most, now = c.held(), 0.0
    for _ in range(rounds):
        for e in list(effects):
            if isinstance(e, Load) and not e.seqs:
                rows = tuple(x for x in journal if x.seq > e.after_seq)[: e.limit]
                effects += c.loaded(e.generation, Loaded("w", rows, e.after_seq, e.limit), now)
        effects = fetch(c, effects, now)
        for seq in list(c.in_flight):
            if c.in_flight[seq].stored_body is None:
                effects += c.result(res(seq, c.in_flight[seq].attempts + 1), now)
        most = max(most, c.held())
        now += 1.0
        effects = fetch(c, effects + c.tick(now), now)
    return most


def test_waiting_retries_count_towards_the_queue_and_the_journal_holds_the_rest():
    c = core(queue_limit=10, max_in_flight=4, retry=RetryConfig(100, (60.0,)))
    journal = [d(i) for i in range(1, 51)]
    most = failing_run(c, journal, c.enqueue(tuple(journal), 0.0), rounds=30)
    assert most <= 10 and c.spilled
    assert c.snapshot()["queued"] + c.snapshot()["in_flight"] == 50
    # Retries due in a minute wait without their bodies.
    assert all(x.stored_body is not None for _, _, x in c.waiting)


def test_a_retry_due_soon_keeps_its_body_and_one_due_later_lets_it_go():
    c = core(retry=RetryConfig(5, (1.0, 60.0)), max_in_flight=1)
    c.enqueue((big(1, 10_000),), 0.0)
    held = c.budget.used
    c.result(res(1), 0.0)  # retry in 1 s: within the horizon
    assert c.budget.used == held and c.waiting[0][2].stored_body is None
    effects = c.tick(1.0)
    assert sent(effects) == [(1, 2)]
    c.result(res(1, 2), 1.0)  # retry in 60 s: the body goes
    assert c.budget.used < held - 9_000 and c.waiting[0][2].stored_body is not None


def test_webhooks_share_one_budget_and_a_refused_one_keeps_its_deliveries_in_the_journal():
    budget = Budget(200_000)
    a = WebhookCore(hook(name="a", max_in_flight=1), Restored(), 0.0, lambda: "p", budget=budget)
    b = WebhookCore(hook(name="b", max_in_flight=1), Restored(), 0.0, lambda: "p", budget=budget)
    assert sent(a.enqueue((big(1, 150_000),), 0.0)) == [(1, 1)]
    effects = b.enqueue((big(2, 150_000),), 0.0)
    assert sent(effects) == [] and b.spilled and b.held() == 0
    assert WakeAt(BUDGET_RETRY) in effects  # it asks again shortly
    a.result(res(1, ok=True, status=200), 0.1)  # a's delivery is done: its bytes come back
    assert budget.used == 0
    (load,) = [e for e in b.tick(BUDGET_RETRY) if isinstance(e, Load)]
    effects = b.loaded(load.generation, Loaded("b", (big(2, 150_000),), 0, load.limit), 0.3)
    assert sent(effects) == [(2, 1)]


def test_one_delivery_bigger_than_the_webhook_cap_still_goes_when_the_budget_has_room():
    c = core(max_in_flight=1)
    assert sent(c.enqueue((big(1, QUEUE_BYTES * 2), d(2)), 0.0)) == [(1, 1)]
    assert c.spilled  # d(2) did not fit beside it: the journal holds it


def test_a_load_that_stops_at_a_delivery_too_big_for_its_reservation_asks_for_that_much():
    c = core(Restored(WebhookState(), (), 2), max_in_flight=1)
    (load,) = [e for e in c.pump(0.0) if isinstance(e, Load)]
    effects = c.loaded(load.generation, Loaded("w", (), 0, load.limit, wanted=9 * QUEUE_BYTES), 0)
    (again,) = [e for e in effects if isinstance(e, Load)]
    assert again.max_bytes == 9 * QUEUE_BYTES


def test_a_disabled_webhook_lets_go_of_its_queue_and_retries():
    budget = Budget()
    c = WebhookCore(hook(max_in_flight=1), Restored(), 0.0, lambda: "p", budget=budget)
    c.enqueue((d(1), d(2), d(3)), 0.0)
    c.result(res(1, status=410), 0.0)
    assert c.state.state == "disabled"
    assert c.held() == 0 and c.held_bytes == 0 and budget.used == 0
    assert c.snapshot()["queued"] == 2 and c.spilled  # the journal holds them


def test_discard_gives_back_everything_the_core_took():
    budget = Budget()
    c = WebhookCore(hook(max_in_flight=2), Restored(), 0.0, lambda: "p", budget=budget)
    c.enqueue((d(1), d(2), d(3)), 0.0)
    assert budget.used > 0
    c.discard()
    assert budget.used == 0


def test_an_attempt_that_failed_through_the_routers_fault_leaves_health_alone():
    c = core(retry=RetryConfig(2, (10.0,)))
    c.enqueue((d(1),), 0.0)
    fault = replace(res(1), status=None, error="internal error: cannot build", router_fault=True)
    c.result(fault, 0.0)
    assert (c.state.state, c.state.consecutive_failures) == ("active", 0)
    fetch(c, c.tick(10.0), 10.0)
    effects = c.result(replace(fault, number=2), 10.0)
    assert records(effects, Outcome)[0].state == "exhausted"  # kept for replay --failed
    assert c.state.state == "active" and c.snapshot()["health"] == "HEALTHY"
    assert c.snapshot()["failed"] == 1
    assert c.state.last_error == "internal error: cannot build"


def _replayed(c: WebhookCore, n: int, now: float) -> tuple[list[dict], list]:
    """The core asks for a replay and the journal answers that ``n`` are pending again."""
    answers: list[dict] = []
    (requeue,) = c.replay(None, False, answers.append)
    return answers, c.revived(requeue.generation, Loaded("w", (), 0, None, revived=n), now)


def test_a_replay_counts_its_deliveries_and_those_waiting_but_none_enqueued_after_it():
    c = core(retry=RetryConfig(1, (10.0,)))
    c.enqueue((d(1), d(2)), 0.0)
    c.result(res(1, ok=True, status=200), 1.0)  # 1 delivered, 2 still in flight
    answers, effects = _replayed(c, 1, 5.0)  # 1 is pending again
    assert answers == [{"webhook": "w", "requeued": 1, "replay": "1970-01-01T00:00:05.000Z"}]
    view = {"at": "1970-01-01T00:00:05.000Z", "queued": 1, "backlog": 2}
    assert c.snapshot()["replay"] == {**view, "delivered": 0, "failed": 0, "remaining": 2}
    c.enqueue((d(3),), 6.0)  # after the replay: not part of it
    (load,) = [e for e in effects if isinstance(e, Load)]
    effects = c.loaded(load.generation, Loaded("w", (d(1), d(2), d(3)), 0, load.limit), 6.0)
    assert sorted(sent(effects)) == [(1, 1), (3, 1)]
    c.result(res(3, ok=True, status=200), 7.0)
    c.result(res(2, ok=True, status=200), 7.0)
    assert c.snapshot()["replay"] == {**view, "delivered": 1, "failed": 0, "remaining": 1}
    c.result(res(1, status=500), 8.0)  # its one attempt used up
    assert c.snapshot()["replay"] == {**view, "delivered": 1, "failed": 1, "remaining": 0}
    assert c.snapshot()["delivered"] == 3  # the webhook's own count goes on as before


def test_a_replay_that_queues_nothing_leaves_the_last_ones_count_and_says_so():
    c = core()
    c.enqueue((d(1),), 0.0)
    c.result(res(1, ok=True, status=200), 1.0)
    _replayed(c, 1, 5.0)
    before = c.snapshot()["replay"]
    answers, _ = _replayed(c, 0, 6.0)  # the same replay again: already queued
    assert answers == [{"webhook": "w", "requeued": 0, "replay": None}]
    assert c.snapshot()["replay"] == before


def test_a_webhook_never_replayed_shows_no_replay():
    assert core().snapshot()["replay"] is None


def _loads(effects) -> list[Load]:
    return [e for e in effects if isinstance(e, Load)]


def test_a_poke_loads_what_another_daemon_journaled_after_what_is_held():
    c = core()
    c.enqueue((d(1),), 0.0)  # held, in flight
    (load,) = _loads(c.poke(0.0))
    assert load.after_seq == 1  # after every delivery held here
    effects = c.loaded(load.generation, Loaded("w", (d(7), d(9)), 1, load.limit, queued=3), 0.0)
    assert sent(effects) == [(7, 1), (9, 1)]  # max_in_flight 4: all three in flight
    assert c.pending_total == 3  # counted by the journal: others' deliveries included
    assert _loads(c.pump(0.0)) == []  # the load was complete: nothing more to ask


def test_a_poke_while_a_load_is_out_loads_again_after_it():
    c = core(max_in_flight=1)
    (first,) = _loads(c.poke(0.0))
    assert _loads(c.poke(0.0)) == []  # one load at a time
    effects = c.loaded(first.generation, Loaded("w", (), 0, first.limit, queued=0), 0.0)
    (again,) = _loads(effects)  # the first may have read the journal before the news
    effects = c.loaded(again.generation, Loaded("w", (d(4),), 0, again.limit, queued=1), 0.0)
    assert sent(effects) == [(4, 1)] and _loads(effects) == []
