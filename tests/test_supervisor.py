"""Supervisor actors started on demand: real pykka actors and a real scheduler thread.

The pool and journal here only record what they are given; the network path is
covered by tests/test_delivery.py and tests/integration/.
"""

import dataclasses
import threading
import time

import pykka
import pytest

from router import supervisor
from router.clock import Clock
from router.config import WebhookConfig
from router.messages import AttemptResult, Delivery, Payload, WebhookState
from router.scheduler import Scheduler
from router.supervisor import Enqueue, WebhookHandle, Wiring
from router.webhook import Restored, WebhookCore


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
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


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


def test_a_busy_supervisor_keeps_its_thread(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    wait_until(lambda: len(parts.pool.items) == 1)
    ref = h._ref
    # Several retire checks come and go while the attempt is in flight.
    for _ in range(3):
        ref.ask(supervisor.MaybeRetire(), timeout=5)
    assert h.running() and ref.is_alive()


def test_a_supervisor_that_died_is_restarted_on_the_same_core(parts):
    h = handle_for(parts)
    h.tell(Enqueue((delivery(1),)))
    wait_until(lambda: len(parts.pool.items) == 1)
    h._ref.stop()  # as if it had died
    assert h.dead()
    h.tick()
    assert h.running() and not h.dead() and h.restarts == 1
    attempt, reply = parts.pool.items[0]
    reply(ok(attempt))
    wait_until(lambda: h.ask(supervisor.Snapshot(), timeout=5)["delivered"] == 1)


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
    starter = supervisor.Starter()
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
    starter = supervisor.Starter()  # never started: the ask must start the actor itself
    h = handle_for(dataclasses.replace(parts, starter=starter))
    h.tell(Enqueue((delivery(1),)))
    snap = h.ask(supervisor.Snapshot(), timeout=5)
    assert snap["in_flight"] == 1  # the backlog went in before the ask
    wait_until(lambda: len(parts.pool.items) == 1)
