"""One supervisor actor per webhook, started on demand: idle webhooks hold no thread.

The ``Supervisor`` actor is a thin shell over ``WebhookCore`` (router/webhook.py):
it receives messages and executes the effects the core returns. It never blocks:
attempts go to the delivery pool, results come back as messages.

A pykka actor is a thread. With tens of thousands of webhooks configured, most are
idle most of the time, so each webhook is a ``WebhookHandle`` whose actor runs only
while there is work: the first message starts it, and after ``IDLE_AFTER`` seconds
with nothing in flight, waiting or queued it stops and leaves its core (state,
counters, held deliveries) with the handle. Everything addressed to a webhook goes
through its handle (router/handle.py), so nothing can reach a stopping actor, and
a supervisor that dies is rebuilt from the journal, never restarted on its core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pykka

from router.actor import Actor
from router.config import WebhookConfig
from router.messages import AttemptResult, Delivery, Loaded, LoadPending, Revive
from router.trust import Trust
from router.webhook import Load, Notify, Record, Requeue, Send, WakeAt, WebhookCore

if TYPE_CHECKING:
    from router.handle import Starter, WebhookHandle

log = logging.getLogger(__name__)

IDLE_AFTER = 10.0  # seconds idle before a supervisor gives back its thread

# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Enqueue:
    """New deliveries, committed to the journal, oldest first."""

    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Tick:
    """The scheduler says something may be due."""


@dataclass(frozen=True, slots=True)
class Poke:
    """The journal may hold new deliveries (SPEC §8): ``count`` of them when known."""

    count: int = 0


@dataclass(frozen=True, slots=True)
class LoadedFor:
    """A journal reply, tagged with the load generation it answers."""

    generation: int
    loaded: Loaded


@dataclass(frozen=True, slots=True)
class ForCore:
    """An answer (attempt result, journal reply) to the core of one epoch.

    A rebuilt core starts a new epoch: what its predecessor asked for is ignored
    (the journal still has those deliveries pending, so they are sent again).
    """

    epoch: int
    message: Any


@dataclass(frozen=True, slots=True)
class Enable:
    """Send a health check; on 2xx re-enable and flush held and exhausted deliveries."""


@dataclass(frozen=True, slots=True)
class Disable:
    """Disable by hand: no attempts, deliveries held."""


@dataclass(frozen=True, slots=True)
class Replay:
    """Send deliveries again: received in [since, until), or of one event; failed ones only."""

    since: float | None
    failed_only: bool
    until: float | None = None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Reconfigure:
    config: WebhookConfig


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Ask for the status dict."""


@dataclass(frozen=True, slots=True)
class MaybeRetire:
    """Idle for a while? Then give back the thread."""


@dataclass(frozen=True, slots=True)
class Wiring:
    """The shared parts a supervisor talks to."""

    pool: Any  # router.delivery.DeliveryPool
    journal: Any  # router.journal.Journal
    scheduler: Any  # router.scheduler.Scheduler
    clock: Any  # router.clock.Clock
    new_id: Callable[[], str]
    starter: Starter | None = None  # None: start supervisors on the caller's thread
    budget: Any = None  # the memory budget every webhook's queue shares (router.budget)
    alerter: Any = None  # router.alerts.Alerter: takes alerts off the data path; None: none
    trust: Trust | None = None  # what this daemon's leases allow (SPEC §8); None: one daemon


# --------------------------------------------------------------------------- the actor


class Supervisor(Actor):
    """Receives a webhook's messages and executes what its core decides."""

    def __init__(self, core: WebhookCore, handle: WebhookHandle, wiring: Wiring):
        super().__init__()
        self.core = core
        self.handle = handle
        self.wiring = wiring
        self.retire_at: float | None = None
        self.retired = False
        self.crashed = False  # failed on a message: the handle rebuilds the core
        self.epoch = handle.epoch  # of the core; answers to an older one are ignored

    def _start_actor_loop(self) -> None:
        """No thread to be had: leave no registered actor behind that nobody runs."""
        try:
            super()._start_actor_loop()
        except BaseException:
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            raise

    def on_start(self) -> None:
        self.on_receive(Tick())  # whatever may start now (a tick does nothing else due)

    def on_receive(self, message: Any) -> Any:
        if self.crashed:
            return None  # after a failure: the rebuilt core has it from the journal
        try:
            return self._handle(message)
        except Exception:
            log.exception(
                "webhook %s: failed to handle %s; rebuilding it from the journal",
                self.core.config.name,
                type(message).__name__,
            )
            self.crashed = True
            self.handle.died(self)
            self.actor_ref.stop(block=False)
            return None
        finally:
            self._after_message()

    def on_failure(self, *exc_info: Any) -> None:
        """An exception escaped (pykka stops us): the handle rebuilds the core."""
        self.handle.died(self)

    def _handle(self, message: Any) -> Any:
        core, now = self.core, self.wiring.clock.time()
        match message:
            case ForCore(epoch, answer):
                if epoch != self.epoch:
                    return None  # for the core before a rebuild
                return self._handle(answer)
            case AttemptResult():
                self._run(core.result(message, now))
                self._failing(now)
            case tuple():  # results that came back together (router.senders)
                self._run([e for r in message for e in core.result(r, now)])
                self._failing(now)
            case Enqueue(deliveries):
                self._run(core.enqueue(deliveries, now))
            case Poke(count):
                self._run(core.poke(now, count))
            case Tick():
                self._run(core.tick(now))
                self._failing(now)
            case LoadedFor(generation, loaded) if loaded.limit is None:
                self._run(core.revived(generation, loaded, now))
            case LoadedFor(generation, loaded):
                self._run(core.loaded(generation, loaded, now))
            case Enable():
                future = pykka.ThreadingFuture()
                self._run(core.enable(now, future.set))
                return future
            case Disable():
                self._run(core.disable(now))
                return core.answer(True, "disabled")
            case Replay(since, failed_only, until, event):
                future = pykka.ThreadingFuture()
                self._run(core.replay(since, failed_only, future.set, until, event))
                return future
            case Reconfigure(config):
                self._run(core.reconfigure(config, now))
            case Snapshot():
                return core.snapshot()
            case MaybeRetire():
                self.retire_at = None
                idle_long = core.idle() and core.idle_since + IDLE_AFTER <= now
                if idle_long and self.handle.retire(self):
                    self.retired = True  # from here on the core is the handle's again
                    self.actor_ref.stop(block=False)
            case _:
                log.warning("webhook %s: unknown message %r", core.config.name, message)
        return None

    def _after_message(self) -> None:
        """Keep the idle clock: once idle long enough, the next MaybeRetire stops us."""
        if self.retired or self.crashed:
            return
        core, now = self.core, self.wiring.clock.time()
        if not core.idle():
            core.idle_since = None
            return
        if core.idle_since is None:
            core.idle_since = now
        if self.retire_at is None:
            self.retire_at = core.idle_since + IDLE_AFTER
            self.wiring.scheduler.call_at(self.retire_at, self.handle.tell_if_running)

    def _failing(self, now: float) -> None:
        """Failing long enough for ``alerts.failing_after``? The core decides; a success
        pays for one test here."""
        if self.core.state.alerts.failing_since is not None and self.wiring.alerter is not None:
            self._run(self.core.check_failing(now, self.wiring.alerter.failing_after))

    def _run(self, effects: list) -> None:
        w, handle = self.wiring, self.handle
        for e in effects:
            match e:
                case Send(attempt):
                    if w.trust is not None:  # the sender drops it once the lease is not trusted
                        attempt = replace(attempt, lease_generation=w.trust.generation)
                    w.pool.submit(attempt, self._answer)
                case Record(message):
                    w.journal.submit(message)
                case WakeAt(at):
                    w.scheduler.call_at(at, handle.tick)
                case Notify(alert):
                    if w.alerter is not None:
                        w.alerter.submit(alert)  # never blocks: a bounded queue of its own
                case Load(generation, after_seq, limit, max_bytes, seqs):
                    name, reply = self.core.config.name, self._loaded(generation)
                    w.journal.submit(LoadPending(name, after_seq, limit, reply, max_bytes, seqs))
                case Requeue(generation, since, include_done, until, event):
                    name = self.core.config.name
                    reply = self._loaded(generation)
                    w.journal.submit(Revive(name, reply, since, include_done, until, event))

    def _loaded(self, generation: int) -> Callable[[Loaded], None]:
        """The journal's reply, tagged so that answers from before a resync are ignored."""
        return lambda loaded: self._answer(LoadedFor(generation, loaded))

    def _answer(self, message: Any) -> None:
        """How answers to this core's effects come back: tagged with its epoch."""
        self.handle.tell(ForCore(self.epoch, message))
