"""One clock for the whole router, so tests can replace time."""

import time


class Clock:
    """Wall time for timestamps and retry due times, monotonic time for durations."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
