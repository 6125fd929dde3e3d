"""What each configured webhook costs the daemon once it has started: 10,000 are held idle."""

from __future__ import annotations

import tracemalloc

import pytest

from router.clock import Clock
from router.config import WebhookConfig
from router.dispatch import Dispatcher
from router.scheduler import Scheduler
from router.supervisor import Wiring

IDLE_WEBHOOK_BYTES = 3_000  # a 10,000-webhook daemon: 30 MB for its handles and cores


class Nowhere:
    """The journal and the pool: an idle webhook at start sends neither anything."""

    def submit(self, *args):
        raise AssertionError(f"an idle webhook submitted {args!r}")


@pytest.fixture
def wiring():
    scheduler = Scheduler(Clock())
    scheduler.start()
    yield Wiring(Nowhere(), Nowhere(), scheduler, Clock(), lambda: "probe-id")
    scheduler.stop()


def test_an_idle_webhook_keeps_its_handle_and_core_small(wiring):
    hooks = [WebhookConfig(name=f"hook-{i}", url="http://127.0.0.1:9/") for i in range(2_000)]
    Dispatcher(wiring, None).start(hooks[:10], {})  # warm: first-use caches
    tracemalloc.start()
    try:
        dispatcher = Dispatcher(wiring, None)
        dispatcher.start(hooks, {})
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert not any(h.running() for h in dispatcher)  # no thread for an idle webhook
    assert kept / len(hooks) < IDLE_WEBHOOK_BYTES, f"{kept / len(hooks):.0f} bytes a webhook"
