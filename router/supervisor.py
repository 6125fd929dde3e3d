"""One supervisor actor per webhook, started on demand: idle webhooks hold no thread.

The ``Supervisor`` actor is a thin shell over ``WebhookCore`` (router/webhook.py):
it receives messages and executes the effects the core returns. It never blocks:
attempts go to the delivery pool, results come back as messages.

A pykka actor is a thread. With tens of thousands of webhooks configured, most are
idle most of the time, so each webhook is a ``WebhookHandle`` whose actor runs only
while there is work: the first message starts it, and after ``IDLE_AFTER`` seconds
with nothing in flight, waiting or queued it stops and leaves its core (state,
counters, held deliveries) with the handle. Everything addressed to a webhook goes
through its handle, so nothing can reach a stopping actor.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from router.config import WebhookConfig
from router.messages import AttemptResult, Delivery, Loaded, LoadPending, Revive
from router.webhook import Load, Record, Requeue, Send, WakeAt, WebhookCore

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
class LoadedFor:
    """A journal reply, tagged with the load generation it answers."""

    generation: int
    loaded: Loaded


@dataclass(frozen=True, slots=True)
class Enable:
    """Send a health check; on 2xx re-enable and flush held and exhausted deliveries."""


@dataclass(frozen=True, slots=True)
class Disable:
    """Disable by hand: no attempts, deliveries held."""


@dataclass(frozen=True, slots=True)
class Replay:
    since: float | None
    failed_only: bool


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


# --------------------------------------------------------------------------- the actor


class Supervisor(pykka.ThreadingActor):
    """Receives a webhook's messages and executes what its core decides."""

    def __init__(self, core: WebhookCore, handle: WebhookHandle, wiring: Wiring):
        super().__init__()
        self.core = core
        self.handle = handle
        self.wiring = wiring
        self.retire_at: float | None = None
        self.retired = False

    def on_start(self) -> None:
        self._run(self.core.pump(self.wiring.clock.time()))
        self._after_message()

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception:
            log.exception(
                "webhook %s: failed to handle %s", self.core.config.name, type(message).__name__
            )
            return None
        finally:
            self._after_message()

    def _handle(self, message: Any) -> Any:
        core, now = self.core, self.wiring.clock.time()
        match message:
            case AttemptResult():
                self._run(core.result(message, now))
            case Enqueue(deliveries):
                self._run(core.enqueue(deliveries, now))
            case Tick():
                self._run(core.tick(now))
            case LoadedFor(generation, loaded) if loaded.limit is None:
                self._run(core.revived(generation, loaded, now))
            case LoadedFor(generation, loaded):
                self._run(core.loaded(generation, loaded, now))
            case Enable():
                future = pykka.ThreadingFuture()
                self._run(core.enable(now, future.set))
                return future
            case Disable():
                self._run(core.disable())
                return core.answer(True, "disabled")
            case Replay(since, failed_only):
                future = pykka.ThreadingFuture()
                self._run(core.replay(since, failed_only, future.set))
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
        if self.retired:
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

    def _run(self, effects: list) -> None:
        w, handle = self.wiring, self.handle
        for e in effects:
            match e:
                case Send(attempt):
                    w.pool.submit(attempt, handle.tell)
                case Record(message):
                    w.journal.submit(message)
                case WakeAt(at):
                    w.scheduler.call_at(at, handle.tick)
                case Load(generation, after_seq, limit):
                    name = self.core.config.name
                    w.journal.submit(LoadPending(name, after_seq, limit, self._loaded(generation)))
                case Requeue(generation, since, include_done):
                    name = self.core.config.name
                    reply = self._loaded(generation)
                    w.journal.submit(Revive(name, reply, since, include_done))

    def _loaded(self, generation: int) -> Callable[[Loaded], None]:
        """The journal's reply, tagged so that answers from before a resync are ignored."""
        return lambda loaded: self.handle.tell(LoadedFor(generation, loaded))


# --------------------------------------------------------------------------- the handle


class WebhookHandle:
    """The address of one webhook: starts its supervisor when a message comes.

    Thread-safe. The lock makes "tell" and "retire" exclusive: an actor retires
    only with an empty inbox, and a tell after that starts a new actor on the
    same core, so no message is ever sent to an actor on its way out.
    """

    def __init__(self, core: WebhookCore, wiring: Wiring):
        self.core = core
        self.name = core.config.name
        self._wiring = wiring
        self._lock = threading.Lock()
        self._ref: pykka.ActorRef | None = None
        self._backlog: list[Any] = []  # messages waiting for the starter to start the actor
        self._closed = False
        self.restarts = 0

    # ---- sending

    def tell(self, message: Any) -> None:
        with self._lock:
            if self._closed:
                return
            if self._ref is not None and self._ref.is_alive():
                self._ref.tell(message)
                return
            starter = self._wiring.starter
            if starter is None:
                self._running().tell(message)
                return
            self._backlog.append(message)
            if len(self._backlog) == 1:
                starter.put(self)

    def start_from_backlog(self) -> None:
        """The starter's part: start the actor and hand it what came meanwhile, in order."""
        with self._lock:
            ref = self._running()
            backlog, self._backlog = self._backlog, []
            if ref is not None:
                for message in backlog:
                    ref.tell(message)

    def tick(self) -> None:
        self.tell(Tick())

    def tell_if_running(self) -> None:
        """The retire check: pointless to start an actor just to stop it."""
        with self._lock:
            if self._ref is not None and self._ref.is_alive():
                self._ref.tell(MaybeRetire())

    def ask(self, message: Any, timeout: float) -> Any:
        with self._lock:
            ref = self._running()
            if ref is None:
                raise pykka.ActorDeadError(f"webhook {self.name} is stopped")
            future = ref.ask(message, block=False)
        return future.get(timeout=timeout)

    def snapshot(self) -> Any:
        """The status dict, or a future of it while the actor runs."""
        with self._lock:
            if self._ref is None or not self._ref.is_alive():
                return self.core.snapshot()  # no actor owns the core: read it here
            return self._ref.ask(Snapshot(), block=False)

    # ---- lifecycle

    def start_if_busy(self) -> None:
        """At start-up: only webhooks with work get a thread."""
        with self._lock:
            if not self.core.idle():
                self._running()

    def retire(self, actor: Supervisor) -> bool:
        """Called by the actor when idle; True means: stop now, nothing can reach you."""
        with self._lock:
            if self._ref is not actor.actor_ref or not actor.actor_inbox.empty():
                return False
            self._ref = None
            return True

    def drain(self) -> None:
        """Shutting down: no new attempts, whether the actor runs or not."""
        with self._lock:
            self.core.draining = True  # read by the actor only when handling a message

    def close(self) -> pykka.ActorRef | None:
        """Stop the actor (if any) and refuse further messages. Returns the stopping ref."""
        with self._lock:
            self._closed = True
            self._backlog = []
            ref, self._ref = self._ref, None
        if ref is not None:
            try:
                ref.stop(block=False)
            except pykka.ActorDeadError:
                return None
        return ref

    def running(self) -> bool:
        return self._ref is not None

    def dead(self) -> bool:
        """The actor died without retiring (a bug): the owner logs and restarts it."""
        ref = self._ref
        return ref is not None and not ref.is_alive()

    def _running(self) -> pykka.ActorRef | None:
        """The running actor, started now if need be (lock held). None once closed."""
        if self._closed:
            return None
        if self._ref is not None and self._ref.is_alive():
            return self._ref
        if self._ref is not None:
            self.restarts += 1
            log.error("webhook %s: supervisor died; restarting it", self.name)
        self._ref = Supervisor.start(self.core, self, self._wiring)
        for message in self._backlog:  # the starter has not got to it yet: keep the order
            self._ref.tell(message)
        self._backlog = []
        return self._ref


class Starter:
    """Starts supervisors off the caller's thread.

    A burst of events can wake thousands of idle webhooks at once, and a thread
    takes a while to start; the journal thread that tells them must not wait.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[WebhookHandle | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="supervisor-starter")

    def start(self) -> None:
        self._thread.start()

    def put(self, handle: WebhookHandle) -> None:
        self._queue.put(handle)

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while (handle := self._queue.get()) is not None:
            try:
                handle.start_from_backlog()
            except Exception:
                log.exception("webhook %s: could not start its supervisor", handle.name)
