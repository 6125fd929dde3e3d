"""The base of the router's actors: pykka's threading actor with a lighter inbox.

pykka's default inbox is a ``queue.Queue``: every message passes through a
Condition written in Python, and a waiting actor allocates a lock per wait. The
actors here only put, get and check for emptiness, which ``queue.SimpleQueue``
(in C) does several times cheaper per message; every event crosses three actors.
"""

from __future__ import annotations

import queue

import pykka


class Actor(pykka.ThreadingActor):
    """A ``pykka.ThreadingActor`` whose inbox is a ``queue.SimpleQueue``."""

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue:  # type: ignore[override]
        return queue.SimpleQueue()
