"""A webhook's last hour by the minute: deliveries made and attempts failed (the console's chart).

Kept by the webhook's core (``WebhookCore.result`` counts, ``snapshot`` shows) because the
supervisor owns a webhook's counters; nothing is journaled, so a restart starts an empty hour.
Bounded: 60 slots of three 32-bit numbers, made on a webhook's first attempt (idle webhooks
hold none), whatever the traffic.
"""

from __future__ import annotations

from array import array

MINUTES = 60  # slots: the hour the console draws


class LastHour:
    """Per-minute counts over the newest ``MINUTES`` minutes seen; a slot is reused an hour on."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        # Per slot: its minute (minutes since the epoch; 0: never used), delivered, failed.
        self.slots = array("I", bytes(4 * 3 * MINUTES))

    def count(self, now: float, delivered: bool) -> None:
        """One delivery made (``delivered``) or one attempt failed, at ``now`` (epoch seconds)."""
        minute = int(now // 60)
        at = (minute % MINUTES) * 3
        if self.slots[at] != minute:
            self.slots[at : at + 3] = array("I", (minute, 0, 0))
        self.slots[at + (1 if delivered else 2)] += 1

    def minutes(self) -> list[list[int]]:
        """``[minute_start, delivered, failed]`` for each minute of the newest hour with any, oldest
        first; ``minute_start`` in epoch seconds. The reader drops minutes older than its now."""
        slots = self.slots
        newest = max(slots[0::3])
        out = []
        for k in range(newest + 1, newest + 1 + MINUTES):  # oldest slot first, round the ring
            at = (k % MINUTES) * 3
            m, delivered, failed = slots[at], slots[at + 1], slots[at + 2]
            if m and m > newest - MINUTES and (delivered or failed):
                out.append([m * 60, delivered, failed])
        return out
