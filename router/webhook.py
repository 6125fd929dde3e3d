"""One webhook's state and the rules that move it: a plain object, no threads, no I/O.

``WebhookCore`` owns the webhook's queue, in-flight attempts, retry state, health
and counters. Each input returns *effects* (send an attempt, write to the journal,
wake me at T, load more from the journal) that the supervisor actor executes.

Memory is bounded by bytes: what a webhook holds in memory (the head of its queue,
its waiting retries, its attempts in flight) is at most ``QUEUE_LIMIT`` deliveries
and ``QUEUE_BYTES`` (or one delivery, if that alone is bigger), all of it taken from
the budget every webhook shares (router.budget). Beyond that the journal holds the
deliveries ("spilled") and they are loaded back in seq order as the queue drains. A
retry due later than ``RETRY_HORIZON`` lets go of its body until it is due, and a
disabled webhook lets go of its whole queue: the journal has it all.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from router import metrics, retry
from router.budget import UNLIMITED, Budget, body_cost, delivery_cost
from router.clock import iso
from router.config import WebhookConfig
from router.envelope import synthetic
from router.history import LastHour
from router.messages import (
    DONE,
    EXHAUSTED,
    PENDING,
    Alert,
    AlertState,
    Attempt,
    AttemptResult,
    Delivery,
    Loaded,
    Outcome,
    Payload,
    SaveState,
    WebhookState,
)

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1_000  # deliveries one webhook holds in memory
LATENCIES_KEPT = 1024  # the newest attempt latencies a webhook keeps for p50/p99
QUEUE_BYTES = 4 * 1024 * 1024  # what they may cost, beyond one delivery
RETRY_HORIZON = 2.0  # seconds: a retry due later waits without its body
BUDGET_RETRY = 0.25  # seconds before asking the shared budget again after a refusal
LOAD_LEAST = 64 * 1024  # the smallest reservation worth a load from the journal
HEALTH_CHECK = "WEBHOOK_HEALTH_CHECK"
TEST_EVENT = "WEBHOOK_TEST"  # what a test sends (``App.test``): it changes no state
PROBE_LIFTS = ("exhausted", "gone")  # why a webhook was disabled that a probe may undo

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Send:
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Record:
    message: Any  # a journal message


@dataclass(frozen=True, slots=True)
class WakeAt:
    at: float


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell the people who run this webhook (router.alerts, off the data path)."""

    alert: Alert


@dataclass(frozen=True, slots=True)
class Load:
    """Ask the journal for up to ``limit`` pending deliveries after ``after_seq``.

    At most ``max_bytes`` of them (what the core reserved); with ``seqs``, the bodies
    of exactly these deliveries (retries now due).
    """

    generation: int
    after_seq: int
    limit: int
    max_bytes: int | None = None
    seqs: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Requeue:
    """Ask the journal to make exhausted (and, for a replay, done) deliveries pending again."""

    generation: int
    since: float | None = None
    include_done: bool = False
    until: float | None = None
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Restored:
    """What the journal knew about a webhook at start."""

    state: WebhookState = WebhookState()
    pending: tuple[Delivery, ...] = ()
    queued: int = 0


@dataclass(slots=True)
class ReplayProgress:
    """How the last replay is doing, for ``replay`` to show (``snapshot()["replay"]``).

    It follows the webhook's backlog at the replay: the deliveries it queued again and
    those already waiting. All of them are older than any delivery enqueued after it
    (``before``, its seq), so a result belongs to it when its seq is below: one
    comparison per result, and no memory per delivery.
    """

    at: float  # when the journal answered; names this replay to whoever follows it
    queued: int  # queued again by the replay
    backlog: int  # pending just after it, the ones it queued included
    before: int | None = None  # seq of the first delivery enqueued after it; None: none yet
    delivered: int = 0
    failed: int = 0  # used up their attempts

    @property
    def running(self) -> bool:
        return self.delivered + self.failed < self.backlog

    def finished(self, seq: int, delivered: bool) -> None:
        """A delivery of ``seq`` is done or used up its attempts; once all are, counts stop."""
        if (self.before is None or seq < self.before) and self.running:
            if delivered:
                self.delivered += 1
            else:
                self.failed += 1

    def view(self, pending: int) -> dict:
        """``remaining`` never exceeds what is pending, whatever left the journal meanwhile."""
        left = max(0, min(self.backlog - self.delivered - self.failed, pending))
        return {"at": iso(self.at), "queued": self.queued, "backlog": self.backlog,
                "delivered": self.delivered, "failed": self.failed, "remaining": left}  # fmt: skip


class WebhookCore:
    """The state of one webhook and the rules that move it. No threads, no I/O."""

    # Slots: at 30 attributes CPython gives each instance a dict of its own (1.6 KB
    # instead of 0.3 KB), and a daemon holds a core for each of its 10,000 webhooks.
    __slots__ = ("budget", "config", "counters", "draining", "fetching", "generation",
                 "held_bytes", "high", "idle_since", "in_flight", "last_hour", "latencies",
                 "loading", "max_spilled", "new_id", "next_cost", "pending_total", "poked",
                 "probe", "probe_at", "probe_waiters", "queue_limit", "rand", "ready",
                 "replay_waiter", "replayed", "reserved", "spilled", "state", "tokens",
                 "tokens_at", "waiting", "wake_at")  # fmt: skip

    def __init__(
        self,
        config: WebhookConfig,
        restored: Restored,
        now: float,
        new_id: Callable[[], str],
        rand: Callable[[], float] = random.random,
        queue_limit: int = QUEUE_LIMIT,
        budget: Any = None,
    ):
        self.config = config
        # The memory budget every webhook's queue shares; None: one of its own, unlimited.
        self.budget: Budget = budget if budget is not None else Budget(UNLIMITED)
        self.held_bytes = 0  # taken from the budget for deliveries in memory
        self.reserved: dict[int, int] = {}  # bytes taken for a load in flight, per generation
        self.fetching: dict[int, int] = {}  # seq -> bytes taken for a due retry's body
        self.next_cost = 0  # what the next delivery in the journal costs, if it did not fit
        self.state = restored.state
        self.new_id = new_id
        self.rand = rand
        self.queue_limit = queue_limit
        self.ready: deque[Delivery] = deque()
        self.waiting: list[tuple[float, int, Delivery]] = []  # retries, by due time
        self.in_flight: dict[int, Delivery] = {}
        self.pending_total = restored.queued  # pending in the journal (in flight included)
        self.high = 0  # highest seq ever held in memory: loads continue after it
        self.spilled = restored.queued > len(restored.pending)
        self.poked = False  # told of new deliveries in the journal while a load was out
        self.max_spilled = 0
        self.generation = 0
        self.loading = False
        self.draining = False
        self.probe: dict | None = None  # the health check in flight, if any
        self.probe_waiters: list[Callable[[dict], None]] = []
        self.probe_at: float | None = None  # when the next automatic health check is due
        self.tokens = float(config.rate_limit.count) if config.rate_limit else 0.0
        self.tokens_at = now
        self.wake_at: float | None = None
        self.idle_since: float | None = None  # kept by the supervisor, for retiring
        self.latencies: deque[float] | None = None  # made on the first attempt: ~1.5 KB
        self.last_hour: LastHour | None = None  # the console's chart; made on the first attempt
        self.counters: dict[tuple[Any, str], Any] = {}  # its labelled metrics, once used
        for d in restored.pending:
            if not self._admit(d, now):
                self.spilled = True
                break
        self.replay_waiter: Callable[[dict], None] | None = None
        self.replayed: ReplayProgress | None = None  # the last replay's, once there was one
        if not config.enabled and self.state.state != "disabled":
            self.state = retry.disabled(self.state, "config")
        elif config.enabled and self.state.disabled_reason == "config":
            self.state = retry.enabled(self.state)

    # ------------------------------------------------------------------ inputs

    def enqueue(self, deliveries: tuple[Delivery, ...], now: float) -> list:
        self.pending_total += len(deliveries)
        if self.replayed is not None and self.replayed.before is None and deliveries:
            self.replayed.before = deliveries[0].seq  # newer than all the replay follows
        for d in deliveries:
            if self.spilled or not self._admit(d, now):
                self.spilled = True  # from here on, in seq order, the journal holds them
                self.max_spilled = max(self.max_spilled, d.seq)
        return self.pump(now)

    def loaded(self, generation: int, loaded: Loaded, now: float) -> list:
        if loaded.seqs:
            return self._fetched(loaded, now)
        reserved = self.reserved.pop(generation, 0)
        if generation != self.generation:
            self.budget.give(reserved)
            return []  # answers a load from before a resync
        self.loading = False
        busy = self.in_flight.keys() | {d.seq for _, _, d in self.waiting}
        for d in loaded.deliveries:
            if d.seq > self.high and d.seq not in busy:
                d = self._lean(d, now)
                reserved -= self._charge(d)
                self._hold(d)
        self.budget.give(max(0, reserved))
        if loaded.deliveries:
            self.high = max(self.high, loaded.deliveries[-1].seq)
        self.next_cost = loaded.wanted
        if loaded.queued is not None:
            self.pending_total = loaded.queued  # others' deliveries counted too (SPEC §8)
        complete = not loaded.wanted and len(loaded.deliveries) < (loaded.limit or 0)
        if complete and self.max_spilled <= self.high and not self.poked:
            self.spilled = False
        self.poked = False
        return self.pump(now)

    def poke(self, now: float, count: int = 0) -> list:
        """The journal may hold deliveries no one enqueued here: another daemon sharing it
        journaled them (SPEC §8). Load them, after every delivery already held. ``count``:
        how many are new, when known (the next load's count from the journal prevails)."""
        self.pending_total += count
        if self.loading:
            self.poked = True  # the load out now may have read the journal before them
        self.spilled = True
        return self.pump(now)

    def _fetched(self, loaded: Loaded, now: float) -> list:
        """Bodies of due retries are back: send those still pending, forget the others."""
        found = {d.seq: d for d in loaded.deliveries}
        effects: list = []
        for seq in loaded.seqs:
            taken = self.fetching.pop(seq, 0)
            d = self.in_flight.get(seq)
            if d is None or d.stored_body is None:
                self.budget.give(taken)
                continue
            row = found.get(seq)
            if row is None:  # no longer pending (cancelled meanwhile): nothing to send
                del self.in_flight[seq]
                self.pending_total -= 1
                self.held_bytes -= delivery_cost(d)
                self.budget.give(taken + delivery_cost(d))
                continue
            full = replace(d, payload=row.payload, stored_body=None)
            grown = delivery_cost(full) - delivery_cost(d)  # the body, taken for it in pump
            self.held_bytes += grown
            self.budget.give(taken - grown)
            self.in_flight[seq] = full
            effects.append(Send(Attempt(self.config, seq, full.payload, full.attempts + 1)))
        return effects + self.pump(now)

    def revived(self, generation: int, loaded: Loaded, now: float) -> list:
        """Exhausted (or replayed) deliveries are pending again: reload the queue in seq order."""
        if generation != self.generation:
            return []
        n = loaded.revived
        self.pending_total += n
        log.info("webhook %s: %d deliveries queued again", self.config.name, n)
        replay = None  # a replay that queued nothing leaves the last one's count be
        if self.replay_waiter is not None and n:
            replay = self.replayed = ReplayProgress(now, n, self.pending_total)
        elif self.replayed is not None and self.replayed.running:  # an enable's flush joins it
            self.replayed.backlog += n
        if self.replay_waiter is not None:
            at = replay and iso(replay.at)
            self.replay_waiter({"webhook": self.config.name, "requeued": n, "replay": at})
            self.replay_waiter = None
        return self._resync(now)

    def result(self, r: AttemptResult, now: float) -> list:
        if r.seq == 0:
            return self._probe_result(r, now)
        d = self.in_flight.pop(r.seq, None)
        if d is None:
            return self.pump(now)
        if self.latencies is None:
            self.latencies = deque(maxlen=LATENCIES_KEPT)
        self.latencies.append(r.latency * 1000)
        if self.last_hour is None:
            self.last_hour = LastHour()
        self.last_hour.count(now, delivered=r.ok)  # an attempt that succeeded made a delivery
        self._count(metrics.ATTEMPTS, "ok" if r.ok else "failed")
        metrics.ATTEMPT_LATENCY.observe(r.latency)
        effects: list = []
        name = self.config.name
        decision = retry.decide(self.config.retry, r, now, self.rand())
        if isinstance(decision, retry.Done):
            self._release(d)
            self.pending_total -= 1
            self.state = retry.succeeded(self.state, now)
            if self.state.alerts.failing_since is not None:  # a success costs this test, no more
                effects += self._working(now, "delivered")
            self._count(metrics.DELIVERIES, "delivered")
            if self.replayed is not None:
                self.replayed.finished(r.seq, delivered=True)
            effects.append(Record(Outcome(name, r.seq, r, DONE)))
        elif isinstance(decision, retry.RetryAt):
            self.state = self._failed(r)
            self._wait(replace(d, attempts=r.number, next_at=decision.at), d, now)
            effects.append(Record(Outcome(name, r.seq, r, PENDING, decision.at)))
            log.info(
                "webhook %s: event %s attempt %d failed (%s); retry at %s",
                name, d.payload.id, r.number, r.error, iso(decision.at),
            )  # fmt: skip
        else:
            self._release(d)
            self.pending_total -= 1
            self._count(metrics.DELIVERIES, "exhausted")
            if self.replayed is not None:
                self.replayed.finished(r.seq, delivered=False)
            effects.append(Record(Outcome(name, r.seq, r, EXHAUSTED)))
            if decision.reason == "undeliverable":
                self.state = replace(self._failed(r), failed=self.state.failed + 1)
                log.error(
                    "webhook %s: event %s could not be sent after %d attempts (%s): the router's "
                    "fault, not the endpoint's; the webhook stays enabled and the delivery is "
                    "kept (replay --failed sends it again)",
                    name, d.payload.id, r.number, r.error,
                )  # fmt: skip
            else:
                self.state = retry.gave_up(self._failed(r), decision.reason)
                why = "endpoint answered 410 Gone" if decision.reason == "gone" else (
                    f"{r.number} attempts failed")  # fmt: skip
                log.warning(
                    "webhook %s disabled: event %s %s (last error: %s); new events are held",
                    name, d.payload.id, why, r.error,
                )  # fmt: skip
                effects.append(self._alert("disabled", decision.reason, now))
                effects += self.schedule_probe(now)
        effects.append(Record(SaveState(name, self.state)))
        return effects + self.pump(now)

    def _count(self, metric: Any, label: str) -> None:
        """Count one: each labelled counter is looked up once (a lookup takes a lock).

        Looked up on first use, not up front: 10,000 idle webhooks would hold
        30,000 counters for nothing.
        """
        counter = self.counters.get((metric, label))
        if counter is None:
            counter = self.counters[metric, label] = metric.labels(self.config.name, label)
        counter.inc()

    def _failed(self, r: AttemptResult) -> WebhookState:
        """The state after a failed attempt: the router's own faults leave health alone."""
        if r.router_fault:
            return replace(self.state, last_error=r.error)
        state = retry.failed_attempt(self.state, r.error or "failed")
        if state.alerts.failing_since is None:  # the first of a run of failed attempts
            state = replace(state, alerts=replace(state.alerts, failing_since=r.started_at))
        return state

    def enable(self, now: float, waiter: Callable[[dict], None] | None) -> list:
        if self.state.state != "disabled":
            if waiter:
                waiter(self.answer(True, "already enabled"))
            return []
        if waiter:
            self.probe_waiters.append(waiter)
        if self.probe is not None:
            return []  # one health check at a time; this caller gets its answer too
        return self._send_probe(now)

    def disable(self, now: float | None = None) -> list:
        """Disable by hand. A health check still in flight can no longer enable it.

        ``now`` stamps the alert in the webhook's state (None: not known, in tests).
        """
        was = self.state.state
        self.state = retry.disabled(self.state, "manual")
        log.warning("webhook %s disabled by the operator; new events are held", self.config.name)
        waiters, self.probe_waiters = self.probe_waiters, []
        for w in waiters:  # an enable still waiting for its health check: the disable wins
            w(self.answer(False, "disabled by the operator before the health check answered"))
        alert = [] if was == "disabled" else [self._alert("disabled", "manual", now)]
        return [*alert, Record(SaveState(self.config.name, self.state))]

    def replay(
        self,
        since: float | None,
        failed_only: bool,
        waiter: Callable[[dict], None] | None = None,
        until: float | None = None,
        event: str | None = None,
    ) -> list:
        self.replay_waiter = waiter
        return [self._requeue(since, not failed_only, until, event)]

    def reconfigure(self, config: WebhookConfig, now: float) -> list:
        old, self.config = self.config, config
        if old.enabled and not config.enabled and self.state.state != "disabled":
            self.state = retry.disabled(self.state, "config")
        elif config.enabled and self.state.disabled_reason == "config":
            self.state = retry.enabled(self.state)
        if config.rate_limit != old.rate_limit:
            self.tokens = float(config.rate_limit.count) if config.rate_limit else 0.0
        log.info("webhook %s: new settings applied (queue and health kept)", config.name)
        probe = self.schedule_probe(now)  # probe_interval added to a webhook already disabled
        return [Record(SaveState(config.name, self.state)), *probe, *self.pump(now)]

    def tick(self, now: float) -> list:
        if self.wake_at is not None and self.wake_at <= now:
            self.wake_at = None
        effects = []
        if self._probe_wanted() and self.probe is None:
            if self.probe_at is not None and self.probe_at <= now:
                self.probe_at = None
                effects += self._send_probe(now)
            else:
                effects += self.schedule_probe(now)  # none pending (a no-op when one is)
        return effects + self.pump(now)

    # ------------------------------------------------------------------ dispatch

    def pump(self, now: float) -> list:
        """Start whatever may start now; ask to be woken for what is due later."""
        effects: list = []
        if self.draining:
            return effects
        if self.state.state == "disabled":
            if self.ready or self.waiting:
                self._let_go()
            return effects
        limit = 1 if self.config.ordered else self.config.max_in_flight
        fetch: list[int] = []
        while len(self.in_flight) < limit:
            d = self._next_due(now, effects)
            if d is None:
                break
            body = 0
            if d.stored_body is not None:  # a retry without its body: read it back first
                body = self.budget.take(d.stored_body)
                if not body:
                    self._hold(d)
                    self._wake(now + BUDGET_RETRY, effects)
                    break
            if not self._take_token(now, effects):
                self.budget.give(body)
                self._hold(d)
                break
            self.in_flight[d.seq] = d
            if d.stored_body is not None:
                self.fetching[d.seq] = body
                fetch.append(d.seq)
            else:
                effects.append(Send(Attempt(self.config, d.seq, d.payload, d.attempts + 1)))
        if fetch:
            effects.append(Load(self.generation, 0, len(fetch), seqs=tuple(fetch)))
        self._load_more(now, effects)
        return effects

    def _load_more(self, now: float, effects: list) -> None:
        """Refill the queue from the journal once half of it is free, within the budget."""
        held = self.held()
        room = QUEUE_BYTES - self.held_bytes
        if not self.spilled or self.loading or held >= self.queue_limit // 2:
            return
        if held and room < QUEUE_BYTES // 2:
            return
        want = max(room, self.next_cost)
        taken = self.budget.take(want, self.next_cost or min(want, LOAD_LEAST))
        if not taken:  # the shared budget is spent: the journal keeps them a while longer
            self._wake(now + BUDGET_RETRY, effects)
            return
        self.loading = True
        self.reserved[self.generation] = self.reserved.get(self.generation, 0) + taken
        effects.append(Load(self.generation, self.high, self.queue_limit - held, taken))

    def _next_due(self, now: float, effects: list) -> Delivery | None:
        retry_head = self.waiting[0] if self.waiting else None
        if self.config.ordered:
            # Strict FIFO: the oldest delivery goes first, even if it is waiting for a retry.
            if retry_head and (not self.ready or retry_head[1] < self.ready[0].seq):
                if retry_head[0] > now:
                    self._wake(retry_head[0], effects)
                    return None
                return heapq.heappop(self.waiting)[2]
            return self.ready.popleft() if self.ready else None
        if retry_head and retry_head[0] <= now:
            return heapq.heappop(self.waiting)[2]
        if retry_head:
            self._wake(retry_head[0], effects)
        return self.ready.popleft() if self.ready else None

    # ------------------------------------------------------------------ memory

    def held(self) -> int:
        """Deliveries in memory: the queue head, waiting retries, attempts in flight."""
        return len(self.ready) + len(self.waiting) + len(self.in_flight)

    def _admit(self, d: Delivery, now: float) -> bool:
        """Hold ``d`` in memory if this webhook's caps and the shared budget allow it."""
        if self.state.state == "disabled" or self.held() >= self.queue_limit:
            return False
        d = self._lean(d, now)
        cost = delivery_cost(d)
        if self.held() and self.held_bytes + cost > QUEUE_BYTES:
            return False
        if not self.budget.take(cost):
            return False
        self._charge(d)
        self._hold(d)
        return True

    def _charge(self, d: Delivery) -> int:
        """Count ``d`` as held, its bytes already taken from the budget; returns them."""
        cost = delivery_cost(d)
        self.held_bytes += cost
        return cost

    def _release(self, d: Delivery) -> None:
        """``d`` leaves memory: give its bytes back."""
        cost = delivery_cost(d)
        self.held_bytes -= cost
        self.budget.give(cost)

    @staticmethod
    def _lean(d: Delivery, now: float) -> Delivery:
        """A retry due later than the horizon waits without its body (the journal has it)."""
        if d.stored_body is None and d.next_at is not None and d.next_at - now > RETRY_HORIZON:
            size = body_cost(d.payload.body)
            return replace(d, payload=Payload(d.payload.id, d.payload.type, ""), stored_body=size)
        return d

    def _wait(self, held: Delivery, was: Delivery, now: float) -> None:
        """Put a failed attempt's delivery among the waiting retries (or back to the journal)."""
        if self.state.state == "disabled":  # disabled meanwhile: the journal holds it
            self._release(was)
            self.spilled = True
            return
        held = self._lean(held, now)
        saved = delivery_cost(was) - delivery_cost(held)
        self.held_bytes -= saved
        self.budget.give(saved)
        heapq.heappush(self.waiting, (held.next_at, held.seq, held))

    def _let_go(self) -> None:
        """Disabled: drop the queue and the waiting retries from memory; the journal has them."""
        for _, _, d in self.waiting:
            self._release(d)
        self.waiting.clear()
        self._forget_queue()

    def discard(self) -> None:
        """This core is being replaced (a rebuild from the journal): give back its memory."""
        taken = self.held_bytes + sum(self.reserved.values()) + sum(self.fetching.values())
        self.budget.give(taken)
        self.held_bytes = 0
        self.reserved.clear()
        self.fetching.clear()

    # ------------------------------------------------------------------ dispatch helpers

    def _hold(self, d: Delivery) -> None:
        """Put a delivery back (or in) where it waits: the retry heap or the ready queue."""
        self.high = max(self.high, d.seq)
        if d.next_at is not None:
            heapq.heappush(self.waiting, (d.next_at, d.seq, d))
        elif self.ready and self.ready[0].seq > d.seq:
            self.ready.appendleft(d)
        else:
            self.ready.append(d)

    def _take_token(self, now: float, effects: list) -> bool:
        rl = self.config.rate_limit
        if rl is None:
            return True
        rate = rl.count / rl.per
        self.tokens = min(float(rl.count), self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self._wake(now + (1 - self.tokens) / rate, effects)
        return False

    def _wake(self, at: float, effects: list) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at
            effects.append(WakeAt(at))

    def _forget_queue(self) -> None:
        """Drop the in-memory queue; the journal holds it and loads refill it oldest first."""
        self.generation += 1
        for d in self.ready:
            self._release(d)
        self.ready.clear()
        self.high = 0
        self.spilled = True
        self.max_spilled = 0

    def _requeue(
        self,
        since: float | None = None,
        include_done: bool = False,
        until: float | None = None,
        event: str | None = None,
    ) -> Requeue:
        """Ask the journal to make exhausted (or replayed) deliveries pending again.

        Nothing from the ready queue goes out until the answer is in, so the flush
        is strictly oldest first.
        """
        self._forget_queue()
        self.loading = True
        return Requeue(self.generation, since, include_done, until, event)

    def _resync(self, now: float) -> list:
        self._forget_queue()
        self.loading = False
        return self.pump(now)

    # ------------------------------------------------------------------ health checks

    def _send_probe(self, now: float) -> list:
        pid = self.new_id()
        self.probe = {"id": pid}
        log.info("webhook %s: sending health check %s", self.config.name, pid)
        return [Send(Attempt(self.config, 0, synthetic(pid, HEALTH_CHECK, now), 1))]

    def schedule_probe(self, now: float) -> list:
        """Ask to be woken for the next automatic health check, if one is wanted.

        One wake-up at a time, so that a restart, a reload and a failed check never
        stack up probes; only a shorter ``probe_interval`` brings the one pending forward.
        """
        if not self._probe_wanted() or self.probe is not None:
            return []
        at = now + self.config.health.probe_interval
        if self.probe_at is not None and now <= self.probe_at <= at:
            return []  # one is pending (one in the past is stale: enabled since, say)
        self.probe_at = at
        return [WakeAt(at)]

    def _probe_wanted(self) -> bool:
        """Disabled by failures with ``probe_interval`` set: probes may bring it back."""
        return (
            self.state.state == "disabled"
            and self.state.disabled_reason in PROBE_LIFTS
            and bool(self.config.health.probe_interval)
            and not self.draining
        )

    def _probe_result(self, r: AttemptResult, now: float) -> list:
        self.probe = None
        effects: list = []
        name, reason = self.config.name, self.state.disabled_reason
        if not r.ok:
            error = r.error or "failed"
            self.state = replace(self.state, last_error=f"health check: {error}")
            log.warning("webhook %s: health check failed (%s); stays disabled", name, error)
            effects.append(Record(SaveState(name, self.state)))
            effects += self.schedule_probe(now)
            answer = self.answer(False, f"health check failed: {error}")
        elif self.state.state != "disabled":
            answer = self.answer(True, "health check passed")  # enabled meanwhile
        elif self.probe_waiters or reason in PROBE_LIFTS:
            self.probe_at = None
            self.state = retry.enabled(replace(self.state, last_success=now))
            log.info("webhook %s: health check passed; enabled, flushing held deliveries", name)
            effects += self._working(now, "enable" if self.probe_waiters else "probe")
            effects.append(self._requeue())
            effects.append(Record(SaveState(name, self.state)))
            answer = self.answer(True, "health check passed")
        else:  # disabled by hand (or by the config) while the check was in flight
            log.info(
                "webhook %s: health check passed, but it was disabled (%s) meanwhile; "
                "stays disabled",
                name,
                reason,
            )
            answer = self.answer(False, f"disabled ({reason}) while the health check ran")
        waiters, self.probe_waiters = self.probe_waiters, []
        for w in waiters:
            w(answer)
        return effects + self.pump(now)

    # ------------------------------------------------------------------ alerts

    def check_failing(self, now: float, after: float | None) -> list:
        """Warn once the webhook has been failing for ``after`` seconds (None: never).

        Once per run of failures: the run ends with a success, or an enable after a
        disabling. Until it is due, a wake-up at the moment it will be.
        """
        s = self.state.alerts
        if after is None or s.failing_since is None or self.state.state != "failing":
            return []
        if s.last_alert == "failing":
            return []  # told already; the state says so across a restart too
        effects: list = []
        if s.failing_since + after > now:
            self._wake(s.failing_since + after, effects)
            return effects
        alert = self._alert("failing", "failed_attempts", now)
        return [alert, Record(SaveState(self.config.name, self.state))]

    def _working(self, now: float, how: str) -> list:
        """Working again (a 2xx, or enabled): the run of failures is over.

        ``webhook.recovered`` goes to whoever heard it was failing or disabled.
        """
        if self.state.state == "disabled":  # a late success while disabled: the trouble goes on
            return []
        told = self.state.alerts.last_alert in ("failing", "disabled")
        alert = [self._alert("recovered", how, now)] if told else []
        self.state = replace(self.state, alerts=replace(self.state.alerts, failing_since=None))
        return alert

    def _alert(self, kind: str, reason: str, now: float | None) -> Notify:
        """The alert of one state change, remembered in the state (saved with it)."""
        s, told = self.state, self.state.alerts
        since = told.failing_since if told.failing_since is not None else now
        self.state = replace(s, alerts=AlertState(told.failing_since, kind, now))
        return Notify(
            Alert(kind, self.config.name, _public_url(self.config.url), reason, s.last_error,
                  since, self._queued(), now, self.config.alert_email)
        )  # fmt: skip

    def answer(self, ok: bool, detail: str) -> dict:
        """What the control socket gets back from enable and disable."""
        return {"webhook": self.config.name, "ok": ok, "state": self.state.state, "detail": detail}

    def idle(self) -> bool:
        """Nothing to do until a message comes, so the supervisor may give back its thread.

        A disabled webhook is idle with its deliveries held (in the journal): they wait
        for an operator or a probe, whose wake-up the scheduler keeps (``probe_at``).
        """
        return (
            not self.in_flight
            and not self.waiting
            and self.probe is None
            and not self.probe_waiters
            and self.replay_waiter is None
            and not self.loading
            and (self.state.state == "disabled" or (not self.ready and not self.spilled))
        )

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict:
        lat = sorted(self.latencies or ())

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        s = self.state
        return {
            "name": self.config.name,
            "url": _public_url(self.config.url),
            "state": s.state,
            "health": retry.health(s),
            "disabled_reason": s.disabled_reason,
            "queued": self._queued(),
            "in_flight": len(self.in_flight),
            "retrying": len(self.waiting),
            "in_memory": self.held(),  # deliveries held in memory; the journal has the rest
            "memory_bytes": self.held_bytes,
            "per_minute": self.last_hour.minutes() if self.last_hour else [],  # the last hour
            "delivered": s.delivered,
            "failed": s.failed,
            "consecutive_failures": s.consecutive_failures,
            "last_success": iso(s.last_success),
            "last_error": s.last_error,
            "failing_since": iso(s.alerts.failing_since),
            "last_alert": _last_alert(s.alerts),
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
            "replay": self.replayed and self.replayed.view(self.pending_total),
        }

    def _queued(self) -> int:
        """Deliveries waiting, held ones included (SPEC §5's ``queued``)."""
        return max(0, self.pending_total - len(self.in_flight))


def _last_alert(alerts: AlertState) -> dict | None:
    """``{"kind", "at"}`` of the newest alert raised, for ``status``."""
    return alerts.last_alert and {"kind": alerts.last_alert, "at": iso(alerts.last_alert_at)}


def _public_url(url: str) -> str:
    """Scheme, host and port only: the path (Slack, Discord), query and userinfo hold tokens."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if u.port:
        host = f"{host}:{u.port}"
    return f"{u.scheme}://{host}"


# --------------------------------------------------------------------------- the actor
