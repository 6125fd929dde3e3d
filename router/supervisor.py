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

A supervisor that dies (or fails on a message) leaves its core half-updated and
loses its inbox, so the handle never restarts it on that core: it asks the journal,
the only truth, and builds a fresh core from what it holds (``Rebuild``). Answers
to the old core's attempts and loads are tagged with its epoch and ignored. A
supervisor that cannot start (no thread to be had) is retried with a backoff.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from router import RouterError
from router.config import WebhookConfig
from router.messages import AttemptResult, Delivery, Loaded, LoadPending, Rebuild, Revive
from router.webhook import QUEUE_LIMIT, Load, Record, Requeue, Restored, Send, WakeAt, WebhookCore

log = logging.getLogger(__name__)

IDLE_AFTER = 10.0  # seconds idle before a supervisor gives back its thread
BACKOFF_MIN, BACKOFF_MAX = 0.1, 30.0  # seconds: retrying a start, or a rebuild in a crash loop
CALM = 60.0  # seconds without a crash that end a burst (the next rebuild goes at once)

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
    budget: Any = None  # the memory budget every webhook's queue shares (router.budget)


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

    def _run(self, effects: list) -> None:
        w, handle = self.wiring, self.handle
        for e in effects:
            match e:
                case Send(attempt):
                    w.pool.submit(attempt, self._answer)
                case Record(message):
                    w.journal.submit(message)
                case WakeAt(at):
                    w.scheduler.call_at(at, handle.tick)
                case Load(generation, after_seq, limit, max_bytes, seqs):
                    name, reply = self.core.config.name, self._loaded(generation)
                    w.journal.submit(LoadPending(name, after_seq, limit, reply, max_bytes, seqs))
                case Requeue(generation, since, include_done):
                    name = self.core.config.name
                    reply = self._loaded(generation)
                    w.journal.submit(Revive(name, reply, since, include_done))

    def _loaded(self, generation: int) -> Callable[[Loaded], None]:
        """The journal's reply, tagged so that answers from before a resync are ignored."""
        return lambda loaded: self._answer(LoadedFor(generation, loaded))

    def _answer(self, message: Any) -> None:
        """How answers to this core's effects come back: tagged with its epoch."""
        self.handle.tell(ForCore(self.epoch, message))


# --------------------------------------------------------------------------- the handle


def new_core(
    config: WebhookConfig,
    restored: Any,
    wiring: Wiring,
    budget: Any = None,
    queue_limit: int = QUEUE_LIMIT,
) -> WebhookCore:
    """A core from what the journal holds for a webhook (a ``journal.Restored``; None: nothing)."""
    state = Restored()
    if restored is not None:
        state = Restored(restored.state, tuple(restored.pending), restored.queued)
    return WebhookCore(
        config,
        state,
        wiring.clock.time(),
        wiring.new_id,
        queue_limit=queue_limit,
        budget=wiring.budget if budget is None else budget,
    )


def _backoff(n: int) -> float:
    """Seconds before the next try, after ``n`` failed ones in a row."""
    return min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(n - 1, 16))


def _still_news(message: Any, epoch: int, newest: int) -> Any:
    """What a rebuilt core still needs of a message that waited for it (None: nothing).

    Deliveries up to ``newest`` were in the journal when it answered: the new core
    has them already. Answers to an older core are void.
    """
    match message:
        case ForCore(e, _) if e != epoch:
            return None
        case Enqueue(deliveries):
            kept = tuple(d for d in deliveries if d.seq > newest)
            return Enqueue(kept) if kept else None
    return message


class WebhookHandle:
    """The address of one webhook: starts its supervisor when a message comes.

    Thread-safe. The lock makes "tell" and "retire" exclusive: an actor retires
    only with an empty inbox, and a tell after that starts a new actor on the
    same core, so no message is ever sent to an actor on its way out. While no
    actor can take them (the starter has not got to it, a start is retried, the
    core is being rebuilt) messages wait in the backlog, in order.
    """

    def __init__(self, core: WebhookCore, wiring: Wiring):
        self.core = core
        self.name = core.config.name
        self._config = core.config  # the newest settings told: a rebuilt core gets them
        self._wiring = wiring
        self._lock = threading.Lock()
        self._rebuilt_cond = threading.Condition(self._lock)  # a rebuild finished (for asks)
        self._ref: pykka.ActorRef | None = None
        self._backlog: list[Any] = []  # messages waiting for an actor
        self._waiting: str | None = None  # an actor is on its way: "starter", "retry", "rebuild"
        self._token = 0  # tells the scheduled retry that is still wanted from stale ones
        self._closed = False
        self._failures = 0  # failed starts in a row: one log line per burst
        self._crashes = 0  # deaths in the current burst: rebuilds back off
        self._crashed_at = float("-inf")
        self.epoch = 0  # of the core: bumped by each rebuild
        self.restarts = 0

    # ---- sending

    def tell(self, message: Any) -> None:
        with self._lock:
            if self._closed or (isinstance(message, ForCore) and message.epoch != self.epoch):
                return
            if isinstance(message, Reconfigure):
                self._config = message.config
            if self._alive():
                self._ref.tell(message)
                return
            self._backlog.append(message)
            self._wake()

    def start_from_backlog(self) -> None:
        """The starter's part: start the actor and hand it what came meanwhile, in order."""
        with self._lock:
            if self._waiting == "starter":
                self._waiting = None
            if not self._alive():
                self._wake(here=True)

    def tick(self) -> None:
        self.tell(Tick())

    def tell_if_running(self) -> None:
        """The retire check: pointless to start an actor just to stop it."""
        with self._lock:
            if self._alive():
                self._ref.tell(MaybeRetire())

    def ask(self, message: Any, timeout: float) -> Any:
        """Ask the actor (started now if need be); waits out a rebuild within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (ref := self._running()) is None:
                if self._closed:
                    raise pykka.ActorDeadError(f"webhook {self.name} is stopped")
                left = deadline - time.monotonic()
                if self._waiting != "rebuild" or left <= 0:
                    raise RouterError(f"webhook '{self.name}' is restarting; try again")
                self._rebuilt_cond.wait(left)
            future = ref.ask(message, block=False)
        return future.get(timeout=timeout)

    def snapshot(self) -> Any:
        """The status dict, or a future of it while the actor runs."""
        with self._lock:
            if not self._alive():
                return self.core.snapshot()  # no actor owns the core: read it here
            return self._ref.ask(Snapshot(), block=False)

    # ---- lifecycle

    def start_if_busy(self) -> None:
        """At start-up: only webhooks with work get a thread; a probe is scheduled if due."""
        with self._lock:
            self._schedule(self.core.schedule_probe(self._wiring.clock.time()))
            if not self.core.idle():
                self._running()

    def rebuild(self) -> None:
        """Start from what the journal holds (a webhook added by a reload: maybe re-added)."""
        with self._lock:
            self._rebuild()

    def retire(self, actor: Supervisor) -> bool:
        """Called by the actor when idle; True means: stop now, nothing can reach you."""
        with self._lock:
            if self._ref is not actor.actor_ref or not actor.actor_inbox.empty():
                return False
            self._ref = None
            return True

    def died(self, actor: Supervisor) -> None:
        """The actor failed (called on its thread): rebuild, unless that is under way."""
        with self._lock:
            if self._ref is actor.actor_ref and not self._closed:
                self._restart()

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
            self._rebuilt_cond.notify_all()
        if ref is not None:
            try:
                ref.stop(block=False)
            except pykka.ActorDeadError:
                return None
        return ref

    def running(self) -> bool:
        return self._ref is not None

    def dead(self) -> bool:
        """The actor died without retiring: the owner's check gets it rebuilt."""
        ref = self._ref
        return ref is not None and not ref.is_alive()

    # ---- inside the lock

    def _alive(self) -> bool:
        return self._ref is not None and self._ref.is_alive()

    def _running(self) -> pykka.ActorRef | None:
        """The running actor, started here and now if need be. None: not possible now."""
        if self._alive():
            return self._ref
        if self._waiting in ("starter", "retry"):
            self._waiting = None  # try now; the starter or the retry will find it running
        return self._wake(here=True)

    def _wake(self, here: bool = False) -> pykka.ActorRef | None:
        """No live actor: get one going, unless one is on its way already."""
        if self._closed or self._waiting is not None:
            return None
        if self._ref is not None:
            self._restart()  # died without retiring
            return None
        if here or self._wiring.starter is None:
            return self._start()
        self._waiting = "starter"
        self._wiring.starter.put(self)
        return None

    def _start(self) -> pykka.ActorRef | None:
        """Start the actor on the core and hand it the backlog, in order."""
        try:
            ref = Supervisor.start(self.core, self, self._wiring)
        except Exception as e:  # no thread to be had (RLIMIT_NPROC, TasksMax): retry later
            self._failures += 1
            if self._failures == 1:
                log.error(
                    "webhook %s: cannot start its supervisor (%s); its deliveries wait, "
                    "retrying with a backoff",
                    self.name,
                    e,
                )
            if self._waiting is None:
                self._waiting = "retry"
                self._later(_backoff(self._failures), self._retry)
            return None
        if self._failures:
            log.warning(
                "webhook %s: supervisor started after %d failed tries", self.name, self._failures
            )
            self._failures = 0
        self._waiting = None
        self._ref = ref
        for message in self._backlog:
            ref.tell(message)
        self._backlog = []
        return ref

    def _retry(self) -> None:
        if self._waiting == "retry":
            self._waiting = None
            if self._backlog or not self.core.idle():
                self._wake()

    def _restart(self) -> None:
        """The actor died: its core is half-updated and its inbox is lost. Rebuild."""
        self._ref = None
        self.restarts += 1
        now = time.monotonic()
        self._crashes = self._crashes + 1 if now - self._crashed_at < CALM else 1
        self._crashed_at = now
        delay = _backoff(self._crashes - 1) if self._crashes > 1 else 0.0
        log.error(
            "webhook %s: supervisor died; rebuilding its state from the journal%s",
            self.name,
            f" in {delay:g}s" if delay else "",
        )
        self._rebuild(delay)

    def _rebuild(self, delay: float = 0.0) -> None:
        """Replace the core with one built from the journal; answers to the old one are void."""
        self.epoch += 1
        self._waiting = "rebuild"
        if delay:
            self._later(delay, self._ask_journal)
        else:
            self._ask_journal()

    def _ask_journal(self) -> None:
        reply = functools.partial(self._rebuilt, self.epoch)
        # No queue head, as at start: the new core loads its own through the memory budget.
        self._wiring.journal.submit(Rebuild(self.name, 0, reply))

    def _rebuilt(self, epoch: int, restored: Any, newest: int) -> None:
        """The journal's answer (on its thread): a fresh core; the backlog goes on."""
        with self._lock:
            if self._closed or epoch != self.epoch or self._waiting != "rebuild":
                return
            old = self.core
            self.core = new_core(self._config, restored, self._wiring, old.budget, old.queue_limit)
            self.core.draining = old.draining
            old.discard()
            self._waiting = None
            waited = (_still_news(m, epoch, newest) for m in self._backlog)
            self._backlog = [m for m in waited if m is not None]
            self._rebuilt_cond.notify_all()
            log.info(
                "webhook %s: rebuilt from the journal (%s, %d pending)",
                self.name,
                self.core.state.state,
                restored.queued,
            )
            self._schedule(self.core.schedule_probe(self._wiring.clock.time()))
            if self._backlog or not self.core.idle():
                self._wake()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` (under the lock) after ``delay`` seconds, unless overtaken meanwhile."""
        self._token += 1
        token = self._token

        def due() -> None:
            with self._lock:
                if token == self._token and not self._closed:
                    fn()

        self._wiring.scheduler.call_at(self._wiring.clock.time() + delay, due)

    def _schedule(self, effects: list) -> None:
        """Wake-ups a core asked for while no actor runs it."""
        for e in effects:
            if isinstance(e, WakeAt):
                self._wiring.scheduler.call_at(e.at, self.tick)


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
