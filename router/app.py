"""Wiring: start order, the main loop (signals, reload, watchdog), stop order.

Not on the data path: the receiver hands events to the filter actor, the filter to
the journal, and the journal's commits go to the dispatcher (router/dispatch.py),
which also applies a reload's diff once this module has validated the new file.

Start: journal, scheduler, delivery pool, supervisors, filter, receiver, then the
control socket and metrics. Stop in reverse: receiver first (no new events),
filter (routes what it holds), supervisors drain their in-flight attempts within
``shutdown_timeout``, then the pool, scheduler and journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import pykka

from router import ConfigError, RouterError, __version__, config, metrics, registry
from router.alerts import Alerter
from router.api import ApiServer
from router.budget import Budget
from router.catalog import Catalog
from router.clock import Clock
from router.config import API_SOURCE, Config, WebhookConfig
from router.control import ControlServer
from router.dispatch import Diff, Dispatcher
from router.envelope import new_id, synthetic
from router.filter import Filter, FilterActor, FilterAddress, Swap
from router.handle import Starter, WebhookHandle, new_core
from router.journal import Journal, Restored
from router.messages import Attempt, WebhookState
from router.metrics import MetricsServer
from router.receiver import MAX_OUTSTANDING_BYTES, AckChannel, Bind, Publish, Receiver, Waiter
from router.scheduler import Scheduler
from router.senders import Senders
from router.supervisor import Disable, Enable, Replay, Wiring
from router.webhook import TEST_EVENT

log = logging.getLogger(__name__)

ASK_TIMEOUT = 5.0
PUBLISH_WAIT = 10.0  # seconds an event published over HTTP may wait for its commit
REPLAY_WAIT = 60.0  # seconds a replay may take to find its deliveries in the journal
SENDERS_START = 30.0  # seconds the sender processes may take to start
THREAD_STACK = 512 * 1024  # every thread here is shallow; thousands of supervisors add up


def sd_notify(*lines: str) -> None:
    """Tell systemd (Type=notify) how we are doing; a no-op outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall("\n".join(lines).encode())
    except OSError as e:
        log.warning("sd_notify failed: %s", e)


class App:
    """The running daemon: owns every part, starts them in order and stops them in reverse."""

    def __init__(self, cfg: Config, clock: Clock | None = None):
        self.config = cfg
        self.clock = clock or Clock()
        self.started_at = time.monotonic()
        self._reload_lock = threading.Lock()
        self.channel = AckChannel()
        # Several daemons on one PostgreSQL (SPEC §8): this one delivers the webhooks whose
        # lease it holds, and writes their state fenced by those leases.
        shared = cfg.journal_backend == "postgresql"
        self.cluster: Any = None  # a router.cluster.Cluster
        if shared:
            from router.cluster import Cluster  # psycopg: only where PostgreSQL is used

            self.cluster = Cluster(cfg.journal_dsn, cfg.node, cfg.lease,
                                   lambda: {w.name: w for w in self.config.webhooks},
                                   self.refresh_webhooks, self.served)  # fmt: skip
        # The control commands on one webhook, as run by the daemon that delivers it.
        self._here = {"enable": self._enable, "disable": self._disable, "replay": self._replay,
                      "test": self._test, "webhook": self._webhook}  # fmt: skip
        # The journal answers the dispatcher, which is built once the wiring exists.
        self.journal = Journal(
            os.path.join(cfg.state_dir, config.JOURNAL_FILE),
            self.clock,
            cfg.retention,
            on_commit=lambda committed: self.dispatcher.committed(committed),
            on_error=lambda append, reason: self.dispatcher.refused(append, reason),
            attempt_log_max=cfg.attempt_log_max,
            sync=cfg.journal_sync,
            dsn=cfg.journal_dsn if shared else None,
            fence=self.cluster and self.cluster.fence,
            on_lost=self.cluster and self.cluster.lost,
        )
        trust = self.cluster and self.cluster.keeper.trust
        if cfg.delivery_processes:
            self.pool = Senders(cfg.delivery_processes, cfg.delivery_workers, self.clock, trust)
        else:  # imported here: the HTTP stack (~12 MB with OpenSSL) is the senders' otherwise
            from router.delivery import DeliveryPool

            self.pool = DeliveryPool(cfg.delivery_workers, self.clock, trust=trust)
        self.scheduler = Scheduler(self.clock)
        self.budget = Budget()  # bytes all webhooks' in-memory queues may hold together
        self.starter = Starter()
        self.alerter = Alerter(cfg.alerts, self.clock, cfg.api_bind)  # its own threads
        self.wiring = Wiring(
            self.pool,
            self.journal,
            self.scheduler,
            self.clock,
            lambda: new_id(self.clock),
            self.starter,
            self.budget,
            alerter=self.alerter,
            trust=trust,
        )
        self.dispatcher = Dispatcher(self.wiring, self.channel, shared=shared)
        # The API-made webhooks: in the journal, whichever it is.
        self.registry: Any = (
            registry.SharedRegistry(cfg.journal_dsn) if shared
            else registry.Registry(self.journal.path)
        )  # fmt: skip
        self.filter: pykka.ActorRef | None = None
        self.to_filter = FilterAddress()  # the receiver's sink
        self.catalog = Catalog(self.clock)  # what the filter has seen; outlives filter actors
        self.publish_wait = PUBLISH_WAIT
        self.receiver: pykka.ActorRef | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.api: ApiServer | None = None

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        cfg = self.config
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        self._lock_state_dir()
        threading.stack_size(THREAD_STACK)
        self.pool.start()  # sender processes start while the rest does
        self.journal.open()
        self.registry.open()
        cfg, conflicts = registry.merged(cfg, self.registry.documents())
        if conflicts:
            raise RouterError("; ".join(conflicts))
        self.config = cfg
        # No queue heads now: each webhook loads its own through the memory budget. With a
        # shared journal the webhooks start as their leases are taken (below).
        mine = [] if self.cluster else cfg.webhooks
        restored = {} if self.cluster else self.journal.load([w.name for w in mine], 0)
        self.journal.start()
        self.scheduler.start()
        self.starter.start()
        self.alerter.start()
        self.dispatcher.start(mine, restored)
        self.filter = self.to_filter.ref = FilterActor.start(
            Filter.from_config(cfg), self.journal.submit, self.catalog
        )
        if self.cluster:
            self.cluster.start(self.dispatcher, [w.name for w in cfg.webhooks])
        self._start_receiver()
        for addr in (cfg.ingest.bind, cfg.ingest.ack_bind):
            if addr and addr.startswith("tcp://") and cfg.ingest.curve is None:
                host = addr[6:].rsplit(":", 1)[0]
                if host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
                    log.warning("ingest %s is reachable from the network without CURVE", addr)
        self.control = ControlServer(cfg.control_bind, self)
        self.control.start()
        if cfg.metrics_bind:
            self.metrics = MetricsServer(cfg.metrics_bind, self)
            self.metrics.start()
        if cfg.api_bind:
            self.api = ApiServer(cfg.api_bind, self)
            self.api.start()
        self.pool.ready(SENDERS_START)
        log.info(
            "webhook-router %s started: %d webhooks, ingest %s, control %s",
            __version__,
            len(cfg.webhooks),
            ", ".join(a for a in (cfg.ingest.bind, cfg.ingest.ack_bind) if a),
            cfg.control_bind,
        )

    def _lock_state_dir(self) -> None:
        """One daemon per state_dir: a second would share the journal and steal ipc sockets."""
        path = os.path.join(self.config.state_dir, "lock")
        self._lock_file = open(path, "a+")  # noqa: SIM115 — held open while we run
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise RouterError(
                f"another webhook-router is already running on {self.config.state_dir}"
            ) from None

    def stop(self) -> None:
        sd_notify("STOPPING=1")
        log.info("stopping: no new events; draining in-flight attempts")
        deadline = time.monotonic() + self.config.shutdown_timeout
        if self.receiver:
            _stop(self.receiver, "receiver")
        if self.filter:
            _stop(self.filter, "filter")
        for handle in self.dispatcher:
            handle.drain()
        busy = self._wait_drained(deadline)
        if busy:
            log.warning(
                "shutdown_timeout reached with %d attempts in flight; they stay pending "
                "and go out after the next start",
                busy,
            )
        stopping = [h.close() for h in self.dispatcher]
        self.starter.stop()
        for ref in stopping:
            if ref is not None:
                ref.actor_stopped.wait(ASK_TIMEOUT)
        self.alerter.stop()  # after the supervisors, which raise the alerts
        self.pool.stop(max(0.0, deadline - time.monotonic()))
        self.scheduler.stop()
        if self.control:
            self.control.stop()
        if self.metrics:
            self.metrics.stop()
        if self.api:
            self.api.stop()
        self.registry.close()
        self.journal.stop()  # its last writes still under this daemon's leases
        if self.cluster:
            self.cluster.stop()  # others take the leases now, not after they expire
        self.channel.close()
        alive = pykka.ActorRegistry.get_all()
        if alive:
            log.error("actors still alive after stop: %s", [a.actor_class.__name__ for a in alive])
            pykka.ActorRegistry.stop_all(block=True, timeout=ASK_TIMEOUT)
        log.info("stopped")

    def _wait_drained(self, deadline: float) -> int:
        """Wait for in-flight attempts to finish; the number still running at the deadline."""
        while True:
            # Only a running supervisor can have attempts in flight.
            snaps = self._snapshots([h for h in self.dispatcher if h.running()])
            busy = sum(s.get("in_flight", 0) for s in snaps)
            if busy == 0 or time.monotonic() >= deadline:
                return busy
            time.sleep(0.05)

    # ------------------------------------------------------------------ reload

    def reload(self) -> dict:
        """Validate the file, then apply the difference (SIGHUP and the control socket)."""
        with self._reload_lock:
            return self._reload()

    def _reload(self) -> dict:
        sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            new = config.load(self.config.path)
            new, conflicts = registry.merged(new, self.registry.documents(), self.config.webhooks)
            if conflicts:
                raise ConfigError(conflicts)
        except ConfigError as e:
            metrics.CONFIG_RELOAD_FAILURES.inc()
            for line in e.errors:
                log.error("reload refused: %s", line)
            log.error("reload refused: the old configuration keeps running")
            sd_notify("READY=1", "STATUS=reload refused: invalid config")
            return {"ok": False, "errors": e.errors, "added": [], "removed": [], "changed": []}
        old = self.config
        for key in _RESTART_ONLY:
            if getattr(old, key) != getattr(new, key):
                log.warning("reload: %s changed; that takes effect after a restart", key)
        self.alerter.configure(new.alerts)
        diff = self._apply(new)
        self.journal.attempt_log_max = new.attempt_log_max  # the writer trims to it from now on
        metrics.CONFIG_RELOADS.inc()
        log.info(
            "reloaded: %d added %s, %d removed %s, %d changed %s",
            len(diff.added), list(diff.added), len(diff.removed), list(diff.removed),
            len(diff.changed), list(diff.changed),
        )  # fmt: skip
        sd_notify("READY=1", f"STATUS={len(new.webhooks)} webhooks")
        return {
            "ok": True,
            "errors": [],
            "added": list(diff.added),
            "removed": list(diff.removed),
            "changed": list(diff.changed),
        }

    def _apply(self, new: Config) -> Diff:
        """Run ``new``'s webhooks instead of the running ones: the diff a reload applies."""
        old = self.config
        diff = self.dispatcher.apply(
            old.webhooks, new.webhooks, lambda: self.filter.tell(Swap(Filter.from_config(new)))
        )
        self.config = _with_runtime(new, old)
        if self.cluster:
            self.cluster.want(w.name for w in new.webhooks)
        return diff

    def refresh_webhooks(self) -> None:
        """Another daemon changed the API-made webhooks (SPEC §8): apply the new set."""
        with self._reload_lock:
            try:
                self.registry.refresh()
            except RouterError as e:
                log.error("%s; the API-made webhooks stay as they were", e)
                return
            new, conflicts = registry.merged(self.config, self.registry.documents(),
                                             self.config.webhooks)  # fmt: skip
            for line in conflicts:
                log.error("API-made webhooks from another daemon refused: %s", line)
            if not conflicts:
                diff = self._apply(new)
                log.info("API-made webhooks changed elsewhere: %d added, %d removed, %d changed",
                         len(diff.added), len(diff.removed), len(diff.changed))  # fmt: skip

    # ------------------------------------------------------------------ API-made webhooks

    def put_webhook(self, doc: dict, create: bool, by: str) -> WebhookConfig:
        """Create (``create``) or replace the API-made webhook ``doc`` describes; it runs when
        this returns. Kept in the store first, so a crash meanwhile loses nothing said yes to.

        Raises ``config.Invalid`` for a bad document and ``registry.Conflict`` for a name
        taken (create) or a file's webhook (replace).
        """
        with self._reload_lock:
            name = doc.get("name")
            hook = config.api_webhook(doc, self.config)
            current = next((w for w in self.config.webhooks if w.name == name), None)
            if create and current is not None:
                where = "made through the API" if current.source == API_SOURCE else (
                    f"defined in {current.source}")  # fmt: skip
                raise registry.Conflict(f"a webhook named '{name}' exists already ({where})")
            if not create:
                registry.writable(current, name)
            self.registry.put(hook.name, doc, self.clock.time())
            self._apply(replace(self.config, webhooks=(*_without(self.config, name), hook)))
        log.info("webhook %s %s through the API (token %s)", name,
                 "created" if create else "replaced", by)  # fmt: skip
        return hook

    def delete_webhook(self, name: str, by: str) -> None:
        """Remove an API-made webhook: its pending deliveries are cancelled, as on reload."""
        with self._reload_lock:
            registry.writable(next((w for w in self.config.webhooks if w.name == name), None), name)
            self.registry.delete(name)
            self._apply(replace(self.config, webhooks=_without(self.config, name)))
        log.info("webhook %s deleted through the API (token %s)", name, by)

    # ------------------------------------------------------------------ control

    def _snapshots(self, handles: Iterable[WebhookHandle] | None = None) -> list[dict]:
        """Idle webhooks answer from their handle; running ones are asked, all at once."""
        pending = []
        for handle in self.dispatcher if handles is None else handles:
            name = handle.name
            try:
                pending.append((name, handle.snapshot()))
            except pykka.ActorDeadError:
                pending.append((name, None))
        deadline = time.monotonic() + ASK_TIMEOUT
        out = []
        for name, snap in pending:
            try:
                if isinstance(snap, pykka.Future):
                    snap = snap.get(timeout=max(0.0, deadline - time.monotonic()))
                if snap is None:
                    raise pykka.ActorDeadError(name)
                out.append(snap)
            except Exception as e:  # one stuck supervisor must not hide the rest
                out.append(
                    {
                        "name": name,
                        "state": "unknown",
                        "health": "UNKNOWN",
                        "error": type(e).__name__,
                    }
                )
        return out

    def status(self) -> dict:
        def count(name: str) -> int:
            return int(metrics.REGISTRY.get_sample_value(name) or 0)

        rejected = sum(
            s.value
            for m in metrics.EVENTS_REJECTED.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
        return {
            "version": __version__,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "webhooks": self._snapshots() if self.cluster is None else self._everywhere(),
            "events": {
                "received": count("events_received_total"),
                "rejected": int(rejected),
                "duplicates": count("events_duplicate_total"),
            },
            "alerts": self.alerter.totals(),
            "memory": {  # bytes held in memory and their ceilings (the journal has the rest)
                "queues": self.budget.used,
                "queues_limit": self.budget.limit,
                "ingest": self.channel.outstanding_bytes,
                "ingest_limit": MAX_OUTSTANDING_BYTES,
            },
        }

    def _everywhere(self) -> list[dict]:
        """Every webhook with its ``owner`` (SPEC §8), in config order: those held here as
        their supervisors say, the others as the journal has them."""
        here = {s["name"]: s for s in self._snapshots()}
        others = [w for w in self.config.webhooks if w.name not in here]
        owners = self.cluster.owner([w.name for w in others]) if others else {}
        conn = self.journal.reader()  # the counts: other daemons add to any webhook's queue
        try:
            counts = self.journal.db.unfinished(conn)
            saved = self.journal.db.saved_states(conn) if others else {}
        finally:
            conn.close()
        out = []
        for w in self.config.webhooks:
            if w.name in here:
                snap = here[w.name] | {"owner": self.cluster.node}
                if "in_flight" in snap:
                    waiting = counts.get(w.name, (0, 0))[0] - snap["in_flight"]
                    snap["queued"] = max(0, waiting)
            else:
                queued, exhausted = counts.get(w.name, (0, 0))
                state = saved.get(w.name, WebhookState())
                core = new_core(w, Restored(state, (), queued, exhausted), self.wiring)
                snap = core.snapshot() | {"owner": owners.get(w.name)}
            out.append(snap)
        return out

    def _held(self, name: str) -> WebhookHandle:
        """The handle of a webhook this daemon delivers."""
        try:
            return self.dispatcher.get(name)
        except RouterError:
            if self.cluster is None or name not in {w.name for w in self.config.webhooks}:
                raise
            node = self.cluster.node
            raise RouterError(
                f"webhook '{name}' is no longer delivered by daemon {node} (its lease moved):"
                " ask again"
            ) from None

    def _routed(self, name: str, command: str, wait: float, **arguments: Any) -> Any:
        """``command`` run where webhook ``name`` is delivered: here, or (SPEC §8) by the
        daemon holding its lease, asked through the database and answered as if here.

        ``wait`` is how long the command may take where it runs.
        """
        self.config_for(name)
        try:
            self.dispatcher.get(name)
        except RouterError:
            if self.cluster is not None:
                return self.cluster.forward(name, command, arguments, wait)
        return self._here[command](name, **arguments)

    def served(self, request: Any) -> Any:
        """A command another daemon asked of this one (a ``pgstore.Request``): run here,
        never sent on, and only for a webhook this daemon still delivers."""
        if request.command not in self._here:
            raise RouterError(f"daemon {self.cluster.node} does not know the command"
                              f" {request.command!r}: is it an older router?")  # fmt: skip
        self._held(request.webhook)
        if request.command != "webhook":  # not a status read (a followed replay asks often)
            log.info("webhook %s: %s asked by daemon %s", request.webhook, request.command,
                     request.asker)  # fmt: skip
        return self._here[request.command](request.webhook, **request.arguments)

    def enable(self, name: str) -> dict:
        return self._routed(name, "enable", ASK_TIMEOUT + _answer_wait(self.config_for(name)))

    def _enable(self, name: str) -> dict:
        ref = self._held(name)
        future = ref.ask(Enable(), timeout=ASK_TIMEOUT)
        wait = _answer_wait(self.config_for(name))
        try:
            return future.get(timeout=wait)
        except pykka.Timeout:
            raise RouterError(
                f"webhook '{name}': no health check answer within {wait:.0f}s"
            ) from None

    def disable(self, name: str) -> dict:
        return self._routed(name, "disable", ASK_TIMEOUT)

    def _disable(self, name: str) -> dict:
        return self._held(name).ask(Disable(), timeout=ASK_TIMEOUT)

    def replay(
        self,
        name: str,
        since: float | None,
        failed_only: bool,
        until: float | None = None,
        event: str | None = None,
    ) -> dict:
        return self._routed(name, "replay", ASK_TIMEOUT + REPLAY_WAIT, since=since,
                            failed_only=failed_only, until=until, event=event)  # fmt: skip

    def _replay(
        self, name: str, since: float | None, failed_only: bool, until: float | None,
        event: str | None,
    ) -> dict:  # fmt: skip
        replay = Replay(since, failed_only, until, event)
        future = self._held(name).ask(replay, timeout=ASK_TIMEOUT)
        return future.get(timeout=REPLAY_WAIT)

    def webhook(self, name: str) -> dict:
        """One webhook's part of ``status``, with a replay's progress (its supervisor's)."""
        return self._routed(name, "webhook", ASK_TIMEOUT)

    def _webhook(self, name: str) -> dict:
        return self._snapshots([self._held(name)])[0]

    def attempts(
        self, name: str, limit: int, failed: bool = False, event: str | None = None
    ) -> list[dict]:
        self.config_for(name)  # the attempt log is in the journal, whoever delivers it
        conn = self.journal.reader()
        try:
            return self.journal.db.attempts(conn, name, limit, failed, event)
        finally:
            conn.close()

    def healthy(self) -> bool:
        return (
            all(r is not None and r.is_alive() for r in (self.receiver, self.filter))
            and self.journal.alive()
        )

    def test(self, name: str) -> dict:
        """Send one ``WEBHOOK_TEST`` event to webhook ``name`` alone, and what came of it.

        A control action, not a delivery: nothing is journaled and the webhook's
        state, health and counters stay as they are (a disabled one can be tested).
        """
        return self._routed(name, "test", _answer_wait(self.config_for(name)))

    def _test(self, name: str) -> dict:
        cfg = self.config_for(name)
        payload = synthetic(new_id(self.clock), TEST_EVENT, self.clock.time())
        done: pykka.ThreadingFuture = pykka.ThreadingFuture()
        self.pool.submit(Attempt(cfg, 0, payload, 1), done.set)
        wait = _answer_wait(cfg)
        try:
            r = done.get(timeout=wait)
        except pykka.Timeout:
            raise RouterError(
                f"webhook '{name}': the test got no answer within {wait:.0f}s"
            ) from None
        log.info("webhook %s: test event %s: %s", name, payload.id, "ok" if r.ok else r.error)
        return {"webhook": name, "event": payload.id, "ok": r.ok, "status": r.status,
                "latency_ms": round(r.latency * 1000, 1), "error": r.error,
                "response": r.response}  # fmt: skip

    def config_for(self, name: str) -> WebhookConfig:
        for w in self.config.webhooks:
            if w.name == name:
                return w
        raise RouterError(f"no webhook named '{name}'")

    def publish(self, frame: bytes) -> Waiter:
        """One event from the HTTP API, a msgpack frame, through the receiver as if read
        from the ack socket; the waiter once it holds the answer (after the commit).

        Raises:
            RouterError: the receiver is not running, or no answer came within
                ``publish_wait`` (the journal is stuck: the event may still be committed).
        """
        waiter = Waiter()
        receiver = self.receiver
        try:
            if receiver is None:
                raise pykka.ActorDeadError("no receiver")
            receiver.tell(Publish(frame, waiter))
        except pykka.ActorDeadError:
            raise RouterError("the router is not taking events now (it is stopping)") from None
        self.channel.wake()
        if waiter.wait(self.publish_wait) is None:
            what = f"event {waiter.id}" if waiter.id else "the event"
            log.warning("api: %s published over HTTP not journaled within %gs; answered 503",
                        what, self.publish_wait)  # fmt: skip
            raise RouterError(
                f"{what} was not journaled within {self.publish_wait:g}s; it may still be:"
                " send it again with the same id (a duplicate is not delivered twice)"
            )
        return waiter

    # ------------------------------------------------------------------ main loop

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT; SIGHUP reloads. Signal handlers only record and wake."""
        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        pending: list[int] = []

        def record(signum: int, _frame: Any) -> None:
            pending.append(signum)

        old_fd = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        handlers = {
            s: signal.signal(s, record) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
        }
        watchdog = _watchdog_interval()
        sd_notify("READY=1", f"STATUS={len(self.config.webhooks)} webhooks")
        try:
            while True:
                select.select([rsock], [], [], watchdog or 5.0)
                with contextlib.suppress(OSError):
                    while rsock.recv(4096):
                        pass
                if watchdog:
                    sd_notify("WATCHDOG=1")
                while pending:
                    signum = pending.pop(0)
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: reloading %s", self.config.path)
                        self.reload()
                    else:
                        log.info("%s: shutting down", signal.Signals(signum).name)
                        return
                self._check_actors()
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, h in handlers.items():
                signal.signal(s, h)
            rsock.close()
            wsock.close()

    def _start_receiver(self) -> None:
        cfg = self.config
        self.receiver = Receiver.start(cfg.ingest, self.to_filter.route, self.channel, self.clock)
        error = self.receiver.ask(Bind(), timeout=ASK_TIMEOUT)
        if error:
            _stop(self.receiver, "receiver")  # so that the next check tries again
            raise RouterError(f"cannot open the ingest sockets: {error}")

    def _check_actors(self) -> None:
        """An actor that died anyway is noticed, logged and restarted."""
        if self.receiver is not None and not self.receiver.is_alive():
            log.error("receiver died; starting a new one on the same addresses")
            try:
                self._start_receiver()
            except RouterError as e:
                log.error("%s; will try again", e)
        if self.filter is not None and not self.filter.is_alive():
            log.error("filter actor died; restarting it")
            self.filter = self.to_filter.ref = FilterActor.start(
                Filter.from_config(self.config), self.journal.submit, self.catalog
            )
        for handle in self.dispatcher:
            if handle.dead():
                handle.tick()  # logs, and rebuilds the webhook from the journal


# Settings that only a restart changes: a reload warns and keeps the running values.
_RESTART_ONLY = (
    "state_dir", "ingest", "control_bind", "metrics_bind", "api_bind", "delivery_workers",
    "delivery_processes", "retention", "journal_sync", "journal_backend", "journal_dsn", "lease",
    "node",
)  # fmt: skip


def _without(cfg: Config, name: str) -> tuple[WebhookConfig, ...]:
    return tuple(w for w in cfg.webhooks if w.name != name)


def _answer_wait(webhook: WebhookConfig) -> float:
    """How long a control call waits for one attempt of ``webhook`` to be answered."""
    return webhook.timeout * 2 + ASK_TIMEOUT


def _with_runtime(new: Config, old: Config) -> Config:
    """Parts that only a restart changes keep their running values."""
    return replace(new, **{key: getattr(old, key) for key in _RESTART_ONLY})


def _stop(ref: pykka.ActorRef, what: str) -> None:
    try:
        ref.stop(block=True, timeout=ASK_TIMEOUT)
    except pykka.ActorDeadError:
        pass
    except pykka.Timeout:
        log.error("%s did not stop within %ss", what, ASK_TIMEOUT)


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the daemon starts.

    Start builds long-lived objects only (10,000 webhooks make a million), and each
    collection meanwhile would walk all of them again: half the CPU of a start.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run(config_path: str) -> int:
    """The daemon: load, start, serve until stopped. Returns the exit code."""
    with _gc_paused():
        try:
            cfg = config.load(config_path)
        except ConfigError as e:
            for line in e.errors:
                log.error("%s", line)
            log.error("refusing to start: %s is invalid", config_path)
            return 1
        app = App(cfg)
        try:
            app.start()
        except RouterError as e:
            log.error("cannot start: %s", e)
            app.stop()
            return 1
    try:
        app.serve()
    finally:
        app.stop()
    return 0
