"""Supervisor actors started on demand: real pykka actors and a real scheduler thread.

The pool and journal here only record what they are given; the network path is
covered by tests/test_delivery.py and tests/integration/.
"""

import dataclasses
import threading
import time

import pykka
import pytest

from router import handle, journal, supervisor
from router.clock import Clock
from router.config import HealthConfig, WebhookConfig
from router.handle import Starter, WebhookHandle
from router.messages import (
    Accepted,
    Append,
    AttemptResult,
    Delivery,
    LoadPending,
    Outcome,
    Payload,
    Rebuild,
    WebhookState,
)
from router.scheduler import Scheduler
from router.supervisor import Enqueue, Wiring
from router.trust import Trust
from router.webhook import HEALTH_CHECK, Restored, Send, WakeAt, WebhookCore
from tests.builders import event


class Recorder:
    """Stands in for the pool and the journal: keeps what it is given."""

    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def submit(self, *args):
        with self.lock:
            self.items.append(args)


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
    return value


@pytest.fixture
def parts(monkeypatch):
    monkeypatch.setattr(supervisor, "IDLE_AFTER", 0.05)
    scheduler = Scheduler(Clock())
    scheduler.start()
    pool, journal = Recorder(), Recorder()
    yield Wiring(pool, journal, scheduler, Clock(), lambda: "probe-id")
    scheduler.stop()


def handle_for(wiring, restored=None) -> WebhookHandle:
    config = WebhookConfig(name="w", url="http://127.0.0.1:9/")
    core = WebhookCore(config, restored or Restored(), time.time(), wiring.new_id)
    return WebhookHandle(core, wiring)


def delivery(seq):
    return Delivery(seq, Payload(f"e{seq}", "T", "{}"))


def ok(attempt) -> AttemptResult:
    return AttemptResult("w", attempt.seq, attempt.number, True, 200, None, None, 0.001, "", 0.0)


def snap(h: WebhookHandle) -> dict:
    """The status dict, whether or not the actor runs."""
    s = h.snapshot()
    return s.get(timeout=5) if isinstance(s, pykka.Future) else s


def boom(*args):
    raise RuntimeError("simulated bug")


def rebuilds(recorder) -> list[Rebuild]:
    return [m[0] for m in recorder.items if isinstance(m[0], Rebuild)]


def loads(recorder) -> list[LoadPending]:
    return [m[0] for m in recorder.items if isinstance(m[0], LoadPending)]


def real_journal(tmp_path) -> journal.Journal:
    j = journal.Journal(str(tmp_path / "journal.db"), Clock(), 3600, lambda c: None, print)
    j.open()
    j.start()
    return j


def commit(j: journal.Journal, *ids: str) -> list[int]:
    """Journal events for webhook "w" the way the filter does; their seqs."""
    done = threading.Event()
    out: list[int] = []
    j._on_commit = lambda committed: (out.extend(c.seq for c in committed), done.set())
    j.submit(Append(tuple(Accepted(event(id=i), None, ("w",)) for i in ids)))
    assert done.wait(5)
    return out


def journal_state(j: journal.Journal, seq: int) -> str:
    conn = j.reader()
    try:
        return conn.execute("SELECT state FROM deliveries WHERE seq = ?", (seq,)).fetchone()[0]
    finally:
        conn.close()


def test_an_idle_webhook_starts_no_thread_and_still_reports_its_status(parts):
    h = handle_for(parts, Restored(WebhookState(delivered=7)))
    h.start_if_busy()
    assert not h.running()
    assert h.snapshot()["delivered"] == 7


def test_a_webhook_with_restored_work_starts_at_once(parts):
    h = handle_for(parts, Restored(WebhookState(), (delivery(1),), 1))
    h.start_if_busy()
    assert h.running()
    wait_until(lambda: len(parts.pool.items) == 1)


def test_first_message_starts_the_supervisor_and_idleness_gives_the_thread_back(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    assert h.running()
    wait_until(lambda: len(parts.pool.items) == 1)
    (attempt, reply) = parts.pool.items[0]
    reply(ok(attempt))
    wait_until(lambda: not h.running())
    assert h.snapshot()["delivered"] == 1
    wait_until(lambda: pykka.ActorRegistry.get_all() == [])  # the thread is gone


def test_a_message_after_retiring_starts_a_new_actor_on_the_same_core(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    wait_until(lambda: len(parts.pool.items) == 1)
    attempt, reply = parts.pool.items[0]
    reply(ok(attempt))
    wait_until(lambda: not h.running())
    h.tell(Enqueue((delivery(2),)))
    wait_until(lambda: len(parts.pool.items) == 2)
    attempt, reply = parts.pool.items[1]
    assert (attempt.seq, attempt.number) == (2, 1)
    reply(ok(attempt))
    wait_until(lambda: not h.running() and h.snapshot()["delivered"] == 2)


def test_results_that_come_back_together_are_handled_each_in_turn(parts):
    h = handle_for(parts)
    h.tell(Enqueue(tuple(delivery(seq) for seq in range(1, 7))))
    wait_until(lambda: len(parts.pool.items) == 4)  # max_in_flight
    first = parts.pool.items[:4]
    reply = first[0][1]
    reply(tuple(ok(attempt) for attempt, _ in first))  # one message for four results
    wait_until(lambda: len(parts.pool.items) == 6)
    assert [a.seq for a, _ in parts.pool.items[4:]] == [5, 6]
    reply(tuple(ok(attempt) for attempt, _ in parts.pool.items[4:]))
    wait_until(lambda: h.snapshot()["delivered"] == 6 if not h.running() else False)
    outcomes = [m[0] for m in parts.journal.items if isinstance(m[0], Outcome)]
    assert sorted(o.seq for o in outcomes) == [1, 2, 3, 4, 5, 6]


def test_a_busy_supervisor_keeps_its_thread(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    wait_until(lambda: len(parts.pool.items) == 1)
    ref = h._ref
    # Several retire checks come and go while the attempt is in flight.
    for _ in range(3):
        ref.ask(supervisor.MaybeRetire(), timeout=5)
    assert h.running() and ref.is_alive()


def test_a_supervisor_that_died_is_rebuilt_from_the_journal(parts, tmp_path):
    journal = real_journal(tmp_path)
    try:
        wiring = dataclasses.replace(parts, journal=journal)
        h = handle_for(wiring)
        seqs = commit(journal, "e1", "e2")
        h.tell(Enqueue(tuple(delivery(seq) for seq in seqs)))
        wait_until(lambda: len(parts.pool.items) == 2)
        (a1, old1), (_, old2) = parts.pool.items
        old1(ok(a1))  # e1 goes through before the death: the journal marks it done
        wait_until(lambda: snap(h)["delivered"] == 1)
        wait_until(lambda: journal_state(journal, seqs[0]) == "done")
        h._ref.stop()  # as if it had died, with e2 still in flight
        assert h.dead()
        h.tick()
        # The new core has e2 from the journal (e1 is done) and sends it again.
        wait_until(lambda: len(parts.pool.items) == 3)
        a3, new3 = parts.pool.items[2]
        assert (a3.seq, h.restarts, h.dead()) == (seqs[1], 1, False)
        old2(ok(parts.pool.items[1][0]))  # the old core's attempt: void for the new one
        assert snap(h)["in_flight"] == 1
        new3(ok(a3))
        wait_until(lambda: snap(h)["delivered"] == 2)
        assert snap(h)["queued"] == 0
    finally:
        journal.stop()


def test_a_supervisor_that_fails_on_a_message_is_rebuilt_not_trusted(parts, monkeypatch):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    wait_until(lambda: len(parts.pool.items) == 1)
    monkeypatch.setattr(WebhookCore, "result", boom)
    attempt, reply = parts.pool.items[0]
    reply(ok(attempt))
    (rebuild,) = wait_until(lambda: rebuilds(parts.journal))
    assert (rebuild.webhook, h.restarts, h.running()) == ("w", 1, False)


def test_messages_wait_for_a_rebuild_in_order_without_what_the_journal_had(parts):
    h = handle_for(parts)
    h.rebuild()  # as for a webhook a reload adds
    (rebuild,) = rebuilds(parts.journal)
    h.tell(Enqueue((delivery(1), delivery(2))))  # committed before the journal answered
    h.tell(Enqueue((delivery(3),)))  # committed after
    assert not h.running() and parts.pool.items == []
    saved = WebhookState(delivered=5)
    rebuild.reply(journal.Restored(saved, (), 2, 0), 2)  # seqs 1 and 2 pending, newest 2
    (load,) = wait_until(lambda: loads(parts.journal))
    assert load.after_seq == 0  # the new core reads its queue from the journal, oldest first
    status = snap(h)  # 1 and 2 counted once (they were in the journal), 3 as new
    assert (status["delivered"], status["queued"], status["in_flight"]) == (5, 3, 0)


def test_an_ask_during_a_rebuild_waits_for_it(parts):
    h = handle_for(parts)
    h.rebuild()
    (rebuild,) = rebuilds(parts.journal)
    threading.Timer(
        0.05, rebuild.reply, (journal.Restored(WebhookState(failed=3), (), 0, 0), 0)
    ).start()
    assert h.ask(supervisor.Snapshot(), timeout=5)["failed"] == 3


def test_a_supervisor_that_cannot_start_is_retried_and_logged_once(parts, monkeypatch, caplog):
    monkeypatch.setattr(handle, "BACKOFF_MIN", 0.01)
    failures = []

    def no_thread(self):
        if len(failures) < 3:
            failures.append(1)
            raise RuntimeError("can't start new thread")
        real_start(self)

    real_start = pykka.ThreadingActor._start_actor_loop
    monkeypatch.setattr(pykka.ThreadingActor, "_start_actor_loop", no_thread)
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    assert not h.running()
    assert pykka.ActorRegistry.get_all() == []  # no registered actor that nobody runs
    wait_until(lambda: len(parts.pool.items) == 1)  # started by the third retry
    assert len(failures) == 3 and h.running()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["webhook w: cannot start its supervisor (can't start new thread); "
                      "its deliveries wait, retrying with a backoff"]  # fmt: skip
    assert "webhook w: supervisor started after 3 failed tries" in caplog.messages


def test_a_closed_handle_refuses_messages(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    ref = h.close()
    ref.actor_stopped.wait(5)
    h.tell(Enqueue((delivery(2),)))
    assert not h.running()
    with pytest.raises(pykka.ActorDeadError):
        h.ask(supervisor.Snapshot(), timeout=1)


def test_a_starter_starts_supervisors_off_the_callers_thread_keeping_the_order(parts):
    starter = Starter()
    wiring = dataclasses.replace(parts, starter=starter)
    h = handle_for(wiring)
    h.tell(Enqueue((delivery(1),)))
    h.tell(Enqueue((delivery(2),)))
    assert not h.running()  # nothing started on this thread
    assert h.snapshot()["queued"] == 0  # the core is still the handle's to read
    starter.start()
    try:
        wait_until(lambda: len(parts.pool.items) == 2)
        assert [a.seq for a, _ in parts.pool.items] == [1, 2]
        assert h.running()
    finally:
        starter.stop()


def test_an_ask_does_not_wait_for_the_starter(parts):
    starter = Starter()  # never started: the ask must start the actor itself
    h = handle_for(dataclasses.replace(parts, starter=starter))
    h.tell(Enqueue((delivery(1),)))
    snap = h.ask(supervisor.Snapshot(), timeout=5)
    assert snap["in_flight"] == 1  # the backlog went in before the ask
    wait_until(lambda: len(parts.pool.items) == 1)


# --------------------------------------------------------------------------- health checks

GAVE_UP = WebhookState(state="disabled", disabled_reason="exhausted", consecutive_failures=5)


def probing(interval: float | None) -> WebhookConfig:
    return WebhookConfig(name="w", url="http://127.0.0.1:9/", health=HealthConfig(interval))


def sends(effects: list) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def wakes(effects: list) -> list[WakeAt]:
    return [e for e in effects if isinstance(e, WakeAt)]


def test_a_webhook_disabled_by_failures_is_probed_again_after_a_restart(parts):
    core = WebhookCore(probing(0.05), Restored(GAVE_UP), time.time(), parts.new_id)
    h = WebhookHandle(core, parts)
    h.start_if_busy()  # idle: the scheduler holds its probe's wake-up, no thread does
    attempt, reply = wait_until(lambda: parts.pool.items)[0]
    assert (attempt.seq, attempt.payload.type) == (0, HEALTH_CHECK)
    reply(ok(attempt))
    wait_until(lambda: snap(h)["state"] == "active")


def test_probe_wake_ups_do_not_stack_up():
    core = WebhookCore(probing(60), Restored(GAVE_UP), 1000.0, lambda: "p")
    assert core.schedule_probe(1000.0) == [WakeAt(1060.0)]
    assert core.schedule_probe(1001.0) == []  # one is pending
    assert core.tick(1030.0) == []  # an early tick: no probe, no second wake-up
    (probe,) = sends(core.tick(1060.0))
    assert probe.attempt.seq == 0
    assert core.tick(1061.0) == [] and core.schedule_probe(1061.0) == []  # one in flight
    failed = dataclasses.replace(ok(probe.attempt), ok=False, status=500, error="HTTP 500")
    assert wakes(core.result(failed, 1062.0)) == [WakeAt(1122.0)]  # the next one


def test_a_reload_that_adds_probe_interval_to_a_disabled_webhook_schedules_one_probe():
    core = WebhookCore(probing(None), Restored(GAVE_UP), 1000.0, lambda: "p")
    assert core.schedule_probe(1000.0) == []
    assert wakes(core.reconfigure(probing(30), 1000.0)) == [WakeAt(1030.0)]
    assert wakes(core.reconfigure(probing(30), 1010.0)) == []  # the same again: still one
    assert wakes(core.reconfigure(probing(5), 1010.0)) == [WakeAt(1015.0)]  # brought forward
    assert core.tick(1014.0) == []
    assert len(sends(core.tick(1015.0))) == 1
    assert core.tick(1030.0) == []  # the wake-up of the longer interval finds nothing due


def test_a_manual_disable_wins_over_a_probe_already_in_flight():
    core = WebhookCore(probing(30), Restored(GAVE_UP), 1000.0, lambda: "p")
    core.schedule_probe(1000.0)
    (probe,) = sends(core.tick(1030.0))
    core.disable()
    core.result(ok(probe.attempt), 1031.0)
    assert (core.state.state, core.state.disabled_reason) == ("disabled", "manual")
    assert core.tick(2000.0) == []  # and no automatic probes from here on
    answers: list[dict] = []
    (probe,) = sends(core.enable(2000.0, answers.append))
    core.result(ok(probe.attempt), 2001.0)
    assert core.state.state == "active" and answers[0]["ok"] is True


def test_a_disable_answers_an_enable_still_waiting_for_its_health_check():
    manual = WebhookState(state="disabled", disabled_reason="manual")
    core = WebhookCore(probing(None), Restored(manual), 1000.0, lambda: "p")
    answers: list[dict] = []
    (probe,) = sends(core.enable(1000.0, answers.append))
    core.disable()
    assert [a["ok"] for a in answers] == [False]
    core.result(ok(probe.attempt), 1001.0)
    assert core.state.state == "disabled" and len(answers) == 1


def test_a_webhook_that_gives_up_again_after_a_probe_brought_it_back_is_probed_again():
    core = WebhookCore(probing(30), Restored(GAVE_UP), 1000.0, lambda: "p")
    core.schedule_probe(1000.0)
    (probe,) = sends(core.tick(1030.0))
    core.result(ok(probe.attempt), 1031.0)
    assert core.state.state == "active"
    core.state = GAVE_UP  # as if the next deliveries failed again
    assert core.schedule_probe(2000.0) == [WakeAt(2030.0)]


def test_with_leases_each_attempt_carries_the_trust_generation_of_its_hand_off(parts):
    trust = Trust()
    trust.lose()  # generation 2
    wiring = dataclasses.replace(parts, trust=trust)
    h = handle_for(wiring)
    h.tell(Enqueue((delivery(1), delivery(2))))
    sent = wait_until(lambda: len(wiring.pool.items) == 2 and wiring.pool.items)
    assert [a.lease_generation for a, _ in sent] == [2, 2]
    h.close()
    alone = handle_for(parts)  # one daemon on its own: no lease to check
    alone.tell(Enqueue((delivery(3),)))
    (attempt, _), *_ = wait_until(lambda: parts.pool.items[2:] or None)
    assert attempt.lease_generation == 0
    alone.close()
