"""One clock for the whole router, so tests can replace time."""

import time
from datetime import UTC, datetime


class Clock:
    """Wall time for timestamps and retry due times, monotonic time for durations."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ``2026-11-27T16:38:33.123Z`` for people (status, attempt log)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
