"""Trust: whether this daemon's leases still let an attempt go out (SPEC §8).

The lease keeper (``router.leases``) writes it; the delivery pools read it just
before each POST, in the daemon and in its sender processes alike, so it lives in
16 bytes of shared memory (a memfd the children inherit). Two numbers:

- ``until``: the monotonic time the leases held may be trusted to, moved on by
  every round that succeeds. ``time.monotonic`` is the system's clock, the same in
  every process.
- ``generation``: bumped whenever leases are lost rather than let go (a round
  failed, the trust ran out, another daemon took one). An attempt carries the
  generation of its hand-off: one handed over before a loss never goes out after
  it, even once the keeper holds leases again.

An attempt that waits for a worker goes out as long as both still allow it: the
renewals made meanwhile count. Each field is one aligned 8-byte word, written and
read whole; ``lose`` clears ``until`` before it bumps the generation.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Callable

_LAYOUT = struct.Struct("=dq")  # until, generation
_UNTIL, _GENERATION = 0, 8


class Trust:
    """The shared pair; ``Trust()`` makes it, ``Trust(fd)`` maps a parent's."""

    def __init__(self, fd: int | None = None, monotonic: Callable[[], float] = time.monotonic):
        if fd is None:
            fd = os.memfd_create("webhook-router-trust")  # close-on-exec: pass_fds hands it on
            os.ftruncate(fd, _LAYOUT.size)
        self._fd = fd
        self._map = mmap.mmap(fd, _LAYOUT.size)
        self._monotonic = monotonic
        if self.generation == 0:
            struct.pack_into("=q", self._map, _GENERATION, 1)  # 0 means "no lease" to attempts

    def fileno(self) -> int:
        """The memfd, for a child process to map (``pass_fds``)."""
        return self._fd

    @property
    def generation(self) -> int:
        return struct.unpack_from("=q", self._map, _GENERATION)[0]

    @property
    def until(self) -> float:
        return struct.unpack_from("=d", self._map, _UNTIL)[0]

    def renewed(self, until: float) -> None:
        """A round succeeded: trust the leases held until then."""
        struct.pack_into("=d", self._map, _UNTIL, until)

    def lose(self) -> None:
        """Leases were lost: nothing handed over until now goes out any more."""
        struct.pack_into("=d", self._map, _UNTIL, 0.0)
        struct.pack_into("=q", self._map, _GENERATION, self.generation + 1)

    def allows(self, generation: int) -> bool:
        """May an attempt handed over at ``generation`` go out now?"""
        until, current = _LAYOUT.unpack_from(self._map)
        return generation == current and self._monotonic() < until
