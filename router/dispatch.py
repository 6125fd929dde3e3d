"""The dispatcher: the webhooks the daemon runs, what each commit hands them, and the reload diff.

It owns the registry of webhook handles (router/handle.py). The journal calls
``committed`` on its own thread after every commit: the acks go out first (the
events are durable now, and waking idle webhooks must not hold producers up), then
each webhook gets its new deliveries in one ``Enqueue``. A reload's new set of
webhooks is applied here too: added ones start from what the journal holds for them,
changed ones get their settings in place (queue, retries and health kept), removed
ones stop and their unfinished deliveries are cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from router import RouterError, metrics
from router.config import WebhookConfig
from router.handle import WebhookHandle, new_core
from router.messages import Append, Cancel, Committed, Delivery
from router.receiver import AckChannel
from router.supervisor import Enqueue, Poke, Reconfigure, Wiring

log = logging.getLogger(__name__)

CANCEL_WAIT = 10.0  # seconds a reload waits for removed webhooks' cancels (shared journal)


@dataclass(frozen=True, slots=True)
class Diff:
    """What a reload changed, by webhook name."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class Dispatcher:
    """The registry of webhook handles; the journal's commit callbacks; the reload diff."""

    def __init__(self, wiring: Wiring, channel: AckChannel, shared: bool = False):
        self._wiring = wiring
        self._channel = channel
        self._handles: dict[str, WebhookHandle] = {}  # replaced whole, never mutated
        # Several daemons share the journal (SPEC §8): only the webhooks whose lease this
        # one holds have a handle here; deliveries for the others wait in the journal.
        self.shared = shared
        self._changing = threading.RLock()  # reloads, and leases gained and lost meanwhile

    # ------------------------------------------------------------------ the registry

    def get(self, name: str) -> WebhookHandle:
        handle = self._handles.get(name)
        if handle is None:
            raise RouterError(f"no webhook named '{name}'")
        return handle

    def __iter__(self) -> Iterator[WebhookHandle]:
        return iter(list(self._handles.values()))

    def __getitem__(self, name: str) -> WebhookHandle:
        return self._handles[name]

    def start(self, webhooks: Iterable[WebhookConfig], restored: dict) -> None:
        """At start: a handle per webhook, from what the journal held; only busy ones run."""
        handles = dict(self._handles)
        for w in webhooks:
            core = new_core(w, restored.get(w.name), self._wiring)
            handles[w.name] = handle = WebhookHandle(core, self._wiring)
            handle.start_if_busy()
        self._handles = handles

    # ------------------------------------------------------------------ the data path

    def committed(self, committed: list[Committed]) -> None:
        """Journal → acks, then supervisors (on the journal's thread, after the commit)."""
        self._channel.committed(committed)
        by_webhook: dict[str, list[Delivery]] = defaultdict(list)
        duplicates = 0
        for c in committed:
            if c.seq is None:
                duplicates += 1
                log.info("event %s is a duplicate: acked, not delivered again", c.item.event.id)
                continue
            for name in c.item.targets:
                by_webhook[name].append(Delivery(c.seq, c.item.event.payload))
        if duplicates:
            metrics.EVENTS_DUPLICATE.inc(duplicates)
        handles = self._handles
        for name, deliveries in by_webhook.items():
            handle = handles.get(name)
            if handle is not None and self.shared:
                # Another daemon may have committed lower seqs that this one has not heard
                # of yet: a shared journal's deliveries reach a webhook only by loads, in
                # seq order (seqs commit in order), never ahead of them by an Enqueue.
                handle.tell(Poke(len(deliveries)))
            elif handle is not None:
                handle.tell(Enqueue(tuple(deliveries)))
            elif not self.shared:  # routed just before the webhook was removed
                self._wiring.journal.submit(Cancel(name))

    def refused(self, append: Append, reason: str) -> None:
        """The journal could not write these events: their producers hear why."""
        self._channel.failed(append.items, reason)

    # ------------------------------------------------------------------ reload

    def apply(
        self,
        old: Iterable[WebhookConfig],
        new: Iterable[WebhookConfig],
        swap_filter: Callable[[], None],
    ) -> Diff:
        """Move from the ``old`` webhooks to the ``new``; ``swap_filter`` routes by the new set.

        Added webhooks exist before the new filter routes to them; removed ones leave the
        registry before their ``Cancel``, so a commit that no longer finds one cancels its
        deliveries itself and one that still did is covered by the ``Cancel``. With a
        ``shared`` journal, added webhooks wait for their lease, and only those held here
        are changed or cancelled here (each holder does its own), their cancels written
        before this returns, while the lease still fences them.
        """
        before = {w.name: w for w in old}
        after = {w.name: w for w in new}
        added = [w for n, w in after.items() if n not in before]
        removed = [n for n in before if n not in after]
        changed = [w for n, w in after.items() if n in before and before[n] != w]
        with self._changing:
            if not self.shared:
                self._add(added)
            swap_filter()
            for w in changed:
                if (handle := self._handles.get(w.name)) is not None:
                    handle.tell(Reconfigure(w))
            gone = [self._handles[name] for name in removed if name in self._handles]
            self._handles = {n: h for n, h in self._handles.items() if n not in removed}
        written: list[tuple[str, threading.Event]] = []
        for handle in gone:
            handle.close()
            if not self.shared:
                self._wiring.journal.submit(Cancel(handle.name))
                continue
            done = threading.Event()
            self._wiring.journal.submit(Cancel(handle.name, lambda _, done=done: done.set()))
            written.append((handle.name, done))
        if written:  # before the lease goes (the caller lets it go), which the cancel needs
            deadline = time.monotonic() + CANCEL_WAIT
            for name, done in written:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    log.warning("webhook %s: its cancel is not written yet; its lease goes"
                                " anyway (what is left is swept later)", name)  # fmt: skip
        return Diff(tuple(w.name for w in added), tuple(removed), tuple(w.name for w in changed))

    # ------------------------------------------------------------------ leases (SPEC §8)

    def acquire(self, webhooks: Iterable[WebhookConfig]) -> None:
        """This daemon holds these webhooks' leases now: each starts from the journal."""
        with self._changing:
            self._add([w for w in webhooks if w.name not in self._handles])

    def release(self, names: Iterable[str]) -> None:
        """Another daemon delivers these now: stop them at once; the journal keeps the rest."""
        names = set(names)
        with self._changing:
            gone = [h for n, h in self._handles.items() if n in names]
            self._handles = {n: h for n, h in self._handles.items() if n not in names}
        for handle in gone:
            handle.close()

    def poke(self, names: Iterable[str]) -> None:
        """The journal may hold new deliveries for these (journaled by another daemon)."""
        handles = self._handles
        for name in names:
            if (handle := handles.get(name)) is not None:
                handle.tell(Poke())

    def _add(self, webhooks: list[WebhookConfig]) -> None:
        """Webhooks a reload adds start from what the journal holds for them.

        One removed and added again finds its saved state and any deliveries still
        pending. The handles are registered first, so that every commit after the
        journal's answer finds them.
        """
        wiring = self._wiring
        handles = [WebhookHandle(new_core(w, None, wiring), wiring) for w in webhooks]
        self._handles = {**self._handles, **{h.name: h for h in handles}}
        for handle in handles:
            handle.rebuild()
