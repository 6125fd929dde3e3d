"""One webhook's state and the rules that move it: a plain object, no threads, no I/O.

``WebhookCore`` owns the webhook's queue, in-flight attempts, retry state, health
and counters. Each input returns *effects* (send an attempt, write to the journal,
wake me at T, load more from the journal) that the supervisor actor executes.

Memory is bounded: at most ``QUEUE_LIMIT`` deliveries are held in memory; beyond
that the journal holds them ("spilled") and they are loaded back in seq order as
the queue drains.
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
from router.clock import iso
from router.config import WebhookConfig
from router.messages import (
    DONE,
    EXHAUSTED,
    PENDING,
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

QUEUE_LIMIT = 10_000
HEALTH_CHECK = "WEBHOOK_HEALTH_CHECK"

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
class Load:
    """Ask the journal for up to ``limit`` pending deliveries after ``after_seq``."""

    generation: int
    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True)
class Requeue:
    """Ask the journal to make exhausted (and, for a replay, done) deliveries pending again."""

    generation: int
    since: float | None = None
    include_done: bool = False


@dataclass(frozen=True, slots=True)
class Restored:
    """What the journal knew about a webhook at start."""

    state: WebhookState = WebhookState()
    pending: tuple[Delivery, ...] = ()
    queued: int = 0


class WebhookCore:
    """The state of one webhook and the rules that move it. No threads, no I/O."""

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
        self.budget = budget  # the memory budget shared by every webhook's queue (None: none)
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
        self.max_spilled = 0
        self.generation = 0
        self.loading = False
        self.draining = False
        self.probe: dict | None = None  # the health check in flight, if any
        self.probe_waiters: list[Callable[[dict], None]] = []
        self.tokens = float(config.rate_limit.count) if config.rate_limit else 0.0
        self.tokens_at = now
        self.wake_at: float | None = None
        self.idle_since: float | None = None  # kept by the supervisor, for retiring
        self.latencies: deque[float] = deque(maxlen=1024)
        for d in restored.pending:
            self._hold(d)
        self.replay_waiter: Callable[[dict], None] | None = None
        if not config.enabled and self.state.state != "disabled":
            self.state = retry.disabled(self.state, "config")
        elif config.enabled and self.state.disabled_reason == "config":
            self.state = retry.enabled(self.state)

    # ------------------------------------------------------------------ inputs

    def enqueue(self, deliveries: tuple[Delivery, ...], now: float) -> list:
        self.pending_total += len(deliveries)
        for d in deliveries:
            if self.spilled or len(self.ready) >= self.queue_limit:
                self.spilled = True
                self.max_spilled = max(self.max_spilled, d.seq)
            else:
                self.ready.append(d)
                self.high = max(self.high, d.seq)
        return self.pump(now)

    def loaded(self, generation: int, loaded: Loaded, now: float) -> list:
        if generation != self.generation:
            return []  # answers a load from before a resync
        self.loading = False
        busy = self.in_flight.keys() | {d.seq for _, _, d in self.waiting}
        for d in loaded.deliveries:
            if d.seq > self.high and d.seq not in busy:
                self._hold(d)
        if loaded.deliveries:
            self.high = max(self.high, loaded.deliveries[-1].seq)
        if len(loaded.deliveries) < (loaded.limit or 0) and self.max_spilled <= self.high:
            self.spilled = False
        return self.pump(now)

    def revived(self, generation: int, loaded: Loaded, now: float) -> list:
        """Exhausted (or replayed) deliveries are pending again: reload the queue in seq order."""
        if generation != self.generation:
            return []
        n = len(loaded.deliveries)
        self.pending_total += n
        log.info("webhook %s: %d deliveries queued again", self.config.name, n)
        if self.replay_waiter is not None:
            self.replay_waiter({"webhook": self.config.name, "requeued": n})
            self.replay_waiter = None
        return self._resync(now)

    def result(self, r: AttemptResult, now: float) -> list:
        if r.seq == 0:
            return self._probe_result(r, now)
        d = self.in_flight.pop(r.seq, None)
        if d is None:
            return self.pump(now)
        self.latencies.append(r.latency * 1000)
        metrics.ATTEMPTS.labels(self.config.name, "ok" if r.ok else "failed").inc()
        metrics.ATTEMPT_LATENCY.observe(r.latency)
        effects: list = []
        decision = retry.decide(self.config.retry, r, now, self.rand())
        if isinstance(decision, retry.Done):
            self.pending_total -= 1
            self.state = retry.succeeded(self.state, now)
            metrics.DELIVERIES.labels(self.config.name, "delivered").inc()
            effects.append(Record(Outcome(self.config.name, r.seq, r, DONE)))
        elif isinstance(decision, retry.RetryAt):
            self.state = retry.failed_attempt(self.state, r.error or "failed")
            held = replace(d, attempts=r.number, next_at=decision.at)
            heapq.heappush(self.waiting, (decision.at, held.seq, held))
            effects.append(Record(Outcome(self.config.name, r.seq, r, PENDING, decision.at)))
            log.info(
                "webhook %s: event %s attempt %d failed (%s); retry at %s",
                self.config.name,
                d.payload.id,
                r.number,
                r.error,
                iso(decision.at),
            )
        else:
            self.pending_total -= 1
            self.state = retry.gave_up(
                retry.failed_attempt(self.state, r.error or "failed"), decision.reason
            )
            metrics.DELIVERIES.labels(self.config.name, "exhausted").inc()
            effects.append(Record(Outcome(self.config.name, r.seq, r, EXHAUSTED)))
            why = (
                "endpoint answered 410 Gone"
                if decision.reason == "gone"
                else (f"{r.number} attempts failed")
            )
            log.warning(
                "webhook %s disabled: event %s %s (last error: %s); new events are held",
                self.config.name,
                d.payload.id,
                why,
                r.error,
            )
            if self.config.health.probe_interval:
                effects.append(WakeAt(now + self.config.health.probe_interval))
        effects.append(Record(SaveState(self.config.name, self.state)))
        return effects + self.pump(now)

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

    def disable(self) -> list:
        self.state = retry.disabled(self.state, "manual")
        log.warning("webhook %s disabled by the operator; new events are held", self.config.name)
        return [Record(SaveState(self.config.name, self.state))]

    def replay(
        self, since: float | None, failed_only: bool, waiter: Callable[[dict], None] | None = None
    ) -> list:
        self.replay_waiter = waiter
        return [self._requeue(since, include_done=not failed_only)]

    def reconfigure(self, config: WebhookConfig, now: float) -> list:
        old, self.config = self.config, config
        if old.enabled and not config.enabled and self.state.state != "disabled":
            self.state = retry.disabled(self.state, "config")
        elif config.enabled and self.state.disabled_reason == "config":
            self.state = retry.enabled(self.state)
        if config.rate_limit != old.rate_limit:
            self.tokens = float(config.rate_limit.count) if config.rate_limit else 0.0
        log.info("webhook %s: new settings applied (queue and health kept)", config.name)
        return [Record(SaveState(config.name, self.state)), *self.pump(now)]

    def tick(self, now: float) -> list:
        if self.wake_at is not None and self.wake_at <= now:
            self.wake_at = None
        effects = []
        if (
            self.state.state == "disabled"
            and self.state.disabled_reason in ("exhausted", "gone")
            and self.config.health.probe_interval
            and self.probe is None
            and not self.draining
        ):
            effects += self._send_probe(now)
        return effects + self.pump(now)

    # ------------------------------------------------------------------ dispatch

    def pump(self, now: float) -> list:
        """Start whatever may start now; ask to be woken for what is due later."""
        effects: list = []
        if self.draining:
            return effects
        if self.state.state != "disabled":
            limit = 1 if self.config.ordered else self.config.max_in_flight
            while len(self.in_flight) < limit:
                d = self._next_due(now, effects)
                if d is None or not self._take_token(now, effects):
                    if d is not None:
                        self._hold(d)
                    break
                self.in_flight[d.seq] = d
                effects.append(Send(Attempt(self.config, d.seq, d.payload, d.attempts + 1)))
        if self.spilled and not self.loading and len(self.ready) < self.queue_limit // 2:
            self.loading = True
            effects.append(Load(self.generation, self.high, self.queue_limit - len(self.ready)))
        return effects

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
        self.ready.clear()
        self.high = 0
        self.spilled = True
        self.max_spilled = 0

    def _requeue(self, since: float | None = None, include_done: bool = False) -> Requeue:
        """Ask the journal to make exhausted (or replayed) deliveries pending again.

        Nothing from the ready queue goes out until the answer is in, so the flush
        is strictly oldest first.
        """
        self._forget_queue()
        self.loading = True
        return Requeue(self.generation, since, include_done)

    def _resync(self, now: float) -> list:
        self._forget_queue()
        self.loading = False
        return self.pump(now)

    # ------------------------------------------------------------------ health checks

    def _send_probe(self, now: float) -> list:
        pid = self.new_id()
        body = f'{{"id":"{pid}","type":"{HEALTH_CHECK}","timestamp":"{iso(now)}","data":{{}}'
        self.probe = {"id": pid}
        log.info("webhook %s: sending health check %s", self.config.name, pid)
        return [Send(Attempt(self.config, 0, Payload(pid, HEALTH_CHECK, body), 1))]

    def _probe_result(self, r: AttemptResult, now: float) -> list:
        self.probe = None
        effects: list = []
        if r.ok and self.state.state == "disabled":
            self.state = retry.enabled(replace(self.state, last_success=now))
            log.info(
                "webhook %s: health check passed; enabled, flushing held deliveries",
                self.config.name,
            )
            effects.append(self._requeue())
            effects.append(Record(SaveState(self.config.name, self.state)))
            answer = self.answer(True, "health check passed")
        else:
            error = r.error or "failed"
            self.state = replace(self.state, last_error=f"health check: {error}")
            log.warning(
                "webhook %s: health check failed (%s); stays disabled", self.config.name, error
            )
            effects.append(Record(SaveState(self.config.name, self.state)))
            if self.config.health.probe_interval and self.state.state == "disabled":
                effects.append(WakeAt(now + self.config.health.probe_interval))
            answer = self.answer(False, f"health check failed: {error}")
        waiters, self.probe_waiters = self.probe_waiters, []
        for w in waiters:
            w(answer)
        return effects + self.pump(now)

    def discard(self) -> None:
        """This core is being replaced (a rebuild from the journal): give back its memory."""

    def answer(self, ok: bool, detail: str) -> dict:
        """What the control socket gets back from enable and disable."""
        return {"webhook": self.config.name, "ok": ok, "state": self.state.state, "detail": detail}

    def idle(self) -> bool:
        """Nothing to do until a message comes, so the supervisor may give back its thread.

        A disabled webhook is idle with held deliveries in memory: they wait for an
        operator or a probe, and the memory stays bounded by the queue limit.
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
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else None

        s = self.state
        return {
            "name": self.config.name,
            "url": _public_url(self.config.url),
            "state": s.state,
            "health": retry.health(s),
            "disabled_reason": s.disabled_reason,
            "queued": max(0, self.pending_total - len(self.in_flight)),
            "in_flight": len(self.in_flight),
            "retrying": len(self.waiting),
            "delivered": s.delivered,
            "failed": s.failed,
            "consecutive_failures": s.consecutive_failures,
            "last_success": iso(s.last_success),
            "last_error": s.last_error,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99)},
        }


def _public_url(url: str) -> str:
    """The URL without credentials or query string (either may carry a token)."""
    u = urlsplit(url)
    host = u.hostname or ""
    if u.port:
        host = f"{host}:{u.port}"
    return f"{u.scheme}://{host}{u.path}"


# --------------------------------------------------------------------------- the actor
