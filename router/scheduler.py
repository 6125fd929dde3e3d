"""One thread with a heap of due times: wakes supervisors when a retry or probe is due.

Not one ``threading.Timer`` per retry: a million pending retries cost a million
heap entries, not a million threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable

from router.clock import Clock

log = logging.getLogger(__name__)

MAX_WAIT = 1.0  # re-read the clock at least this often (clock jumps, test clocks)


class Scheduler:
    """Calls ``fn()`` on its own thread once wall-clock time reaches ``at``.

    Callbacks must be quick and must not block: they are ``tell``s.
    """

    def __init__(self, clock: Clock):
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="scheduler")

    def start(self) -> None:
        self._thread.start()

    def call_at(self, at: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._order), fn))
            if self._heap[0][2] is fn:
                self._cond.notify()

    def poke(self) -> None:
        """Re-check the heap now (a test clock moved)."""
        with self._cond:
            self._cond.notify()

    def __len__(self) -> int:
        return len(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    now = self._clock.time()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = self._heap[0][0] - now if self._heap else MAX_WAIT
                    self._cond.wait(min(wait, MAX_WAIT))
                if self._stopping:
                    return
                due = []
                now = self._clock.time()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for fn in due:
                try:
                    fn()
                except Exception:
                    log.exception("scheduled callback failed")
