"""The memory budget: how many bytes the webhooks' in-memory queues may hold together.

Every webhook keeps the head of its queue, its waiting retries and its attempts in
flight in memory, and the journal holds the rest. Each webhook has a cap of its own,
but with thousands of webhooks the caps alone add up to far more than a machine has,
so every byte a webhook holds is also taken from this one shared budget. A webhook
that cannot take what it needs leaves its deliveries in the journal and tries again a
moment later: nothing waits on anything, and nothing is dropped.
"""

from __future__ import annotations

import sys
import threading

from router.messages import Delivery

MiB = 1024 * 1024
QUEUES = 256 * MiB  # the default: all webhooks' in-memory queues together
DELIVERY_COST = 400  # bytes a delivery held in memory costs besides its body (objects, refs)


def body_cost(body: str) -> int:
    """What a delivery's body costs in memory (what a retry without it saves)."""
    return sys.getsizeof(body)


def delivery_cost(d: Delivery) -> int:
    """What holding ``d`` in memory costs: the one measure the queues and the journal share."""
    if d.stored_body is not None:
        return DELIVERY_COST
    return DELIVERY_COST + body_cost(d.payload.body)


class Budget:
    """A thread-safe count of bytes taken out of a fixed total."""

    def __init__(self, limit: int = QUEUES):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def take(self, want: int, least: int | None = None) -> int:
        """Take up to ``want`` bytes, but not fewer than ``least`` (default: all of them).

        Returns the bytes taken: between ``least`` and ``want``, or 0 when not even
        ``least`` is free.
        """
        least = want if least is None else least
        with self._lock:
            granted = min(want, self.limit - self._used)
            if granted < least or granted <= 0:
                return 0
            self._used += granted
            return granted

    def give(self, amount: int) -> None:
        """Give back bytes taken earlier."""
        if amount:
            with self._lock:
                self._used = max(0, self._used - amount)


UNLIMITED = 2**62  # a budget for a webhook core that shares none (unit tests, tools)
