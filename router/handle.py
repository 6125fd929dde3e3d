"""The address of one webhook: its supervisor runs only while there is work.

A ``WebhookHandle`` is what every part talks to. The first message starts the
webhook's ``Supervisor`` actor (on the ``Starter``'s thread, so a burst does not
stall the journal); an idle one gives its thread back and leaves its core with the
handle. A supervisor that dies (or fails on a message) leaves its core
half-updated and loses its inbox, so the handle never restarts it on that core: it
asks the journal, the only truth, and builds a fresh core from what it holds
(``Rebuild``); answers meant for the old core carry its epoch and are ignored. A
supervisor that cannot start (no thread to be had) is retried with a backoff.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from router import RouterError
from router.config import WebhookConfig
from router.messages import Rebuild
from router.supervisor import (
    Enqueue,
    ForCore,
    MaybeRetire,
    Reconfigure,
    Snapshot,
    Supervisor,
    Tick,
    Wiring,
)
from router.webhook import QUEUE_LIMIT, Restored, WakeAt, WebhookCore

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.1, 30.0  # seconds: retrying a start, or a rebuild in a crash loop
CALM = 60.0  # seconds without a crash that end a burst (the next rebuild goes at once)

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
        # A rebuild finished (for asks): made by the first ask that waits for one, as
        # a Condition costs ~1 KB and most of 10,000 webhooks never see an ask wait.
        self._rebuilt_cond: threading.Condition | None = None
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
                if self._rebuilt_cond is None:
                    self._rebuilt_cond = threading.Condition(self._lock)
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
            self._wake_asks()
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

    def _wake_asks(self) -> None:
        if self._rebuilt_cond is not None:
            self._rebuilt_cond.notify_all()

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
            self._wake_asks()
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
