"""The dispatcher: acks before fan-out, one Enqueue per webhook per commit, the reload diff."""

from __future__ import annotations

import threading

import pytest

from router.clock import Clock
from router.config import WebhookConfig
from router.dispatch import Diff, Dispatcher
from router.handle import WebhookHandle
from router.messages import Accepted, Cancel, Committed, Rebuild
from router.scheduler import Scheduler
from router.supervisor import Enqueue, Reconfigure, Wiring
from tests.builders import event
from tests.integration.conftest import wait_until


class Recorder:
    """Stands in for the journal and the pool: keeps what it is given."""

    def __init__(self):
        self.items: list = []

    def submit(self, *args):
        self.items.append(args[0] if len(args) == 1 else args)


class Channel:
    """Stands in for the ack channel: keeps the order of calls."""

    def __init__(self, log: list):
        self.log = log

    def committed(self, committed):
        self.log.append(("acked", [c.item.event.id for c in committed]))

    def failed(self, items, reason):
        self.log.append(("refused", [i.event.id for i in items], reason))


@pytest.fixture
def parts():
    scheduler = Scheduler(Clock())
    scheduler.start()
    journal, log = Recorder(), []
    wiring = Wiring(Recorder(), journal, scheduler, Clock(), lambda: "probe-id")
    yield Dispatcher(wiring, Channel(log)), journal, log
    scheduler.stop()


def hooks(*names: str) -> list[WebhookConfig]:
    return [WebhookConfig(name=n, url="http://127.0.0.1:9/") for n in names]


def committed(seq: int, eid: str, *targets: str) -> Committed:
    return Committed(Accepted(event(id=eid), None, targets), seq)


def told(dispatcher: Dispatcher, name: str, monkeypatch) -> list:
    seen: list = []
    monkeypatch.setattr(dispatcher[name], "tell", seen.append)
    return seen


def test_a_commit_is_acked_first_then_each_webhook_gets_one_enqueue(parts, monkeypatch):
    d, _, log = parts
    d.start(hooks("a", "b"), {})
    to_a: list = []
    monkeypatch.setattr(d["a"], "tell", lambda m: (log.append(("told a",)), to_a.append(m)))
    to_b = told(d, "b", monkeypatch)
    d.committed([committed(1, "e1", "a", "b"), committed(None, "dup", "a"),
                 committed(2, "e2", "a")])  # fmt: skip
    assert log[0] == ("acked", ["e1", "dup", "e2"])  # before any supervisor hears of it
    (enqueue,) = to_a
    assert isinstance(enqueue, Enqueue) and [x.seq for x in enqueue.deliveries] == [1, 2]
    assert [x.seq for x in to_b[0].deliveries] == [1]  # the duplicate goes nowhere


def test_a_commit_for_a_webhook_no_longer_configured_cancels_its_deliveries(parts):
    d, journal, _ = parts
    d.start(hooks("a"), {})
    d.committed([committed(1, "e1", "gone")])
    assert Cancel("gone") in journal.items


def test_refused_events_are_answered_with_the_reason(parts):
    d, _, log = parts
    d.refused(type("Append", (), {"items": (Accepted(event(id="e9"), None),)})(), "disk full")
    assert log == [("refused", ["e9"], "disk full")]


def test_apply_adds_from_the_journal_changes_in_place_and_removes_with_a_cancel(parts, monkeypatch):
    d, journal, _ = parts
    old = hooks("kept", "changed", "removed")
    d.start(old, {})
    kept, changed = d["kept"], d["changed"]
    to_changed = told(d, "changed", monkeypatch)
    swapped: list[bool] = []
    new = [old[0], WebhookConfig(name="changed", url="http://127.0.0.1:8/"), *hooks("added")]

    def swap() -> None:  # the new filter routes only once added webhooks exist
        swapped.append("added" in {h.name for h in d})

    diff = d.apply(old, new, swap)
    assert diff == Diff(("added",), ("removed",), ("changed",))
    assert swapped == [True]
    assert d["kept"] is kept and d["changed"] is changed  # queue and health kept
    assert [type(m) for m in to_changed] == [Reconfigure]
    assert {h.name for h in d} == {"kept", "changed", "added"}
    assert Cancel("removed") in journal.items
    # The added webhook asks the journal what it holds (a webhook removed and added back
    # finds its saved state and pending deliveries).
    assert any(isinstance(m, Rebuild) and m.webhook == "added" for m in journal.items)
    assert isinstance(d["added"], WebhookHandle)


def test_a_removed_webhook_leaves_the_registry_before_its_cancel(parts, monkeypatch):
    d, journal, _ = parts
    d.start(hooks("w"), {})
    seen_at_cancel: list[bool] = []
    submit = journal.submit

    def watch(msg):
        if isinstance(msg, Cancel):
            seen_at_cancel.append(any(h.name == "w" for h in d))
        submit(msg)

    monkeypatch.setattr(journal, "submit", watch)
    d.apply(hooks("w"), [], lambda: None)
    assert seen_at_cancel == [False]
    with pytest.raises(Exception, match="no webhook named 'w'"):
        d.get("w")


def test_a_shared_journal_runs_only_the_webhooks_whose_lease_is_held_here(parts, monkeypatch):
    d, journal, _ = parts
    d.shared = True
    d.start([], {})
    d.acquire(hooks("a"))  # the lease keeper took a: it starts from the journal
    assert [type(m) for m in journal.items] == [Rebuild] and journal.items[0].webhook == "a"
    to_a = told(d, "a", monkeypatch)
    d.committed([committed(5, "e5", "a", "b")])  # b's lease is another daemon's
    # a loads it, in seq order: another daemon may have committed lower seqs meanwhile
    assert [type(m).__name__ for m in to_a] == ["Poke"] and len(journal.items) == 1  # no Cancel
    d.poke(["a", "b"])  # b is not held here: nothing to poke
    assert [type(m).__name__ for m in to_a] == ["Poke", "Poke"]
    diff = d.apply(hooks("a", "b"), hooks("a", "b", "c"), lambda: None)
    assert diff.added == ("c",) and [h.name for h in d] == ["a"]  # c waits for its lease
    d.release(["a"])
    assert [h.name for h in d] == [] and len(journal.items) == 1  # released, not cancelled
    d.acquire(hooks("b"))
    # b left the config: its holder cancels, and the reload waits for that to be written,
    # because the lease that fences the write goes as soon as the reload ends.
    reload = threading.Thread(target=d.apply, args=(hooks("a", "b"), hooks("a"), lambda: None))
    reload.start()
    (cancel,) = wait_until(lambda: [m for m in journal.items if isinstance(m, Cancel)])
    assert cancel.webhook == "b" and reload.is_alive()
    cancel.done(1)  # the journal committed it
    reload.join(10)
    assert not reload.is_alive()
