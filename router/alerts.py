"""Alerts (SPEC §7): a webhook's health changed, and the people who run it are told.

The webhook core decides *that* an alert is due (at most one per state change, kept in
the webhook's saved state); this module sends it, off the data path. ``Alerter.submit``
runs on a supervisor's thread and never blocks: it applies the per-webhook limit
(``LIMIT_PER_HOUR``) and puts the alert in each channel's queue, bounded by count and
bytes. Each channel, the alert webhook and email, is a thread of its own that sends,
retries with backoff and counts, so a dead SMTP server or alert endpoint holds back
only its own channel: never a delivery, never a supervisor, never the other channel.
A channel's own failures are logged and counted, never alerted about.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from router import metrics
from router.clock import Clock, iso
from router.config import AlertsConfig, EmailConfig, WebhookConfig
from router.envelope import new_id, synthetic
from router.messages import Alert, Attempt, Payload

log = logging.getLogger(__name__)

LIMIT_PER_HOUR = 6  # alerts per webhook in any hour; more are counted as suppressed
QUEUE_COUNT = 1000  # alerts a channel holds waiting to be sent
QUEUE_BYTES = 1024 * 1024  # and what they may cost
ATTEMPTS = 4  # tries per alert and channel, the first included
BACKOFF = (1.0, 5.0, 30.0)  # seconds before the second, third and fourth try
STOP_GRACE = 2.0  # seconds a channel may take to finish at stop (then it is left behind)
ANSWER_GRACE = 5.0  # seconds past an attempt's hard deadline the webhook channel waits
HOUR = 3600.0


class Failed(Exception):
    """One try of a channel failed; ``reason`` is short and holds no secret."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


# --------------------------------------------------------------------------- the alerter


class Alerter:
    """Takes alerts from supervisors and hands them to a thread per channel."""

    def __init__(
        self,
        cfg: AlertsConfig,
        clock: Clock | None = None,
        console: tuple[str, int] | None = None,
        backoff: tuple[float, ...] = BACKOFF,
        limit_per_hour: int = LIMIT_PER_HOUR,
    ):
        """``console`` is ``api.bind``: the email links to the webhook's console page."""
        self.clock = clock or Clock()
        self.console = console
        self.backoff = backoff
        self.limit_per_hour = limit_per_hour
        self.cfg = cfg
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}  # webhook -> when its last alerts passed
        self._muted: dict[str, int] = {}  # webhook -> alerts suppressed in its current hour
        self._channels: dict[str, Channel] = {}
        self._started = False
        self._suppressed = 0

    @property
    def failing_after(self) -> float | None:
        """Seconds failing before ``webhook.failing`` (None: no such alert, or no channel)."""
        cfg = self.cfg
        return cfg.failing_after if (cfg.webhook or cfg.email) else None

    def start(self) -> None:
        with self._lock:
            self._started = True
            self._channels = self._make(self.cfg)
        for channel in self._channels.values():
            channel.start()

    def configure(self, cfg: AlertsConfig) -> None:
        """A reload: a channel whose settings changed is replaced, and hands over its queue."""
        with self._lock:
            old, self.cfg = self.cfg, cfg
            if not self._started:
                return
            keep = {n for n, c in self._channels.items() if _settings(cfg, n) == _settings(old, n)}
            made = self._make(cfg, skip=keep)
            gone = {n: c for n, c in self._channels.items() if n not in keep}
            self._channels = {**{n: self._channels[n] for n in keep}, **made}
        for name, channel in gone.items():
            left = channel.stop(0.0)
            if name in made:
                made[name].take(left)
            elif left:
                log.warning(
                    "alerts: %d %s alerts dropped: the channel was removed", len(left), name
                )
                metrics.ALERTS_DROPPED.labels(name).inc(len(left))
        for channel in made.values():
            channel.start()
        if gone or made:
            log.info("alerts: channels now %s", ", ".join(self._channels) or "none")

    def stop(self, timeout: float = STOP_GRACE) -> None:
        with self._lock:
            channels, self._channels = self._channels, {}
            self._started = False
        deadline = time.monotonic() + timeout
        for name, channel in channels.items():
            left = channel.stop(max(0.0, deadline - time.monotonic()))
            if left:
                log.warning(
                    "alerts: %d %s alerts not sent: the router is stopping", len(left), name
                )
                metrics.ALERTS_DROPPED.labels(name).inc(len(left))

    def submit(self, alert: Alert) -> None:
        """From a supervisor's thread: never blocks, never raises."""
        try:
            with self._lock:
                channels = list(self._channels.values())
                if not channels or not self._allowed(alert.webhook):
                    return
            for channel in channels:
                channel.put(alert)
        except Exception:  # an alert must never take a supervisor down
            name, kind = getattr(alert, "webhook", "?"), getattr(alert, "kind", "?")
            log.exception("webhook %s: alert webhook.%s not queued", name, kind)

    def totals(self) -> dict:
        """What ``status`` shows: per channel, sent, failed, dropped and queued; suppressed."""
        with self._lock:
            channels = dict(self._channels)
            suppressed = self._suppressed
        return {
            "channels": {name: c.totals() for name, c in channels.items()},
            "suppressed": suppressed,
            "limit_per_hour": self.limit_per_hour,
        }

    def _allowed(self, webhook: str) -> bool:
        """The per-webhook limit (under the lock): the first suppressed alert is logged."""
        now = self.clock.monotonic()
        recent = self._recent.setdefault(webhook, deque())
        while recent and recent[0] <= now - HOUR:
            recent.popleft()
        if len(recent) < self.limit_per_hour:
            if muted := self._muted.pop(webhook, 0):
                log.warning(
                    "webhook %s: %d alerts were suppressed in the last hour", webhook, muted
                )
            recent.append(now)
            return True
        metrics.ALERTS_SUPPRESSED.inc()
        self._suppressed += 1
        if webhook not in self._muted:
            log.warning(
                "webhook %s: more than %d alerts in an hour; the next ones are counted, not sent",
                webhook, self.limit_per_hour,
            )  # fmt: skip
        self._muted[webhook] = self._muted.get(webhook, 0) + 1
        return False

    def _make(self, cfg: AlertsConfig, skip: set[str] = frozenset()) -> dict[str, Channel]:
        senders: dict[str, Callable[[], Sender]] = {}
        if cfg.webhook is not None and "webhook" not in skip:
            hook = cfg.webhook
            senders["webhook"] = lambda: WebhookSender(hook, self.clock)
        if cfg.email is not None and "email" not in skip:
            email, console = cfg.email, self.console
            senders["email"] = lambda: EmailSender(email, console)
        return {name: Channel(name, make(), self.backoff) for name, make in senders.items()}


def _settings(cfg: AlertsConfig, channel: str) -> Any:
    return cfg.webhook if channel == "webhook" else cfg.email


# --------------------------------------------------------------------------- a channel


class Sender:
    """How one channel sends: ``prepare`` once per alert, ``send`` once per try."""

    def prepare(self, alert: Alert) -> Any:
        raise NotImplementedError

    def send(self, job: Any, number: int) -> str:
        """Send one try; returns what to log (to whom). Raises ``Failed``."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of connections and threads."""


@dataclass(slots=True)
class _Counts:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class Channel:
    """One channel's thread and its queue, bounded by ``QUEUE_COUNT`` and ``QUEUE_BYTES``."""

    def __init__(self, name: str, sender: Sender, backoff: tuple[float, ...] = BACKOFF):
        self.name = name
        self.sender = sender
        self.backoff = backoff
        self._cond = threading.Condition()
        self._queue: deque[Alert] = deque()
        self._bytes = 0
        self._stopping = False
        self._counts = _Counts()
        # A daemon thread: one stuck in a connect or an SMTP answer must not hold up the exit.
        self._thread = threading.Thread(target=self._run, name=f"alerts-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, alert: Alert) -> bool:
        """Queue ``alert``; False (counted, logged) when the queue is full."""
        cost = _cost(alert)
        with self._cond:
            if len(self._queue) >= QUEUE_COUNT or self._bytes + cost > QUEUE_BYTES:
                self._counts.dropped += 1
                full = True
            else:
                self._queue.append(alert)
                self._bytes += cost
                self._cond.notify()
                full = False
        if full:
            metrics.ALERTS_DROPPED.labels(self.name).inc()
            log.error(
                "webhook %s: alert webhook.%s dropped: the %s alert queue is full",
                alert.webhook, alert.kind, self.name,
            )  # fmt: skip
        return not full

    def take(self, alerts: list[Alert]) -> None:
        """Alerts a replaced channel had not sent yet."""
        for alert in alerts:
            self.put(alert)

    def stop(self, timeout: float) -> list[Alert]:
        """Stop after the alert being sent (waiting up to ``timeout``); the rest, unsent."""
        with self._cond:
            self._stopping = True
            left = list(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("alerts: the %s channel is still sending; left behind", self.name)
        self.sender.close()  # cuts an HTTP attempt still running
        return left

    def totals(self) -> dict:
        with self._cond:
            c = self._counts
            return {"sent": c.sent, "failed": c.failed, "dropped": c.dropped,
                    "queued": len(self._queue)}  # fmt: skip

    def _next(self) -> Alert | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            alert = self._queue.popleft()
            self._bytes -= _cost(alert)
            return alert

    def _pause(self, seconds: float) -> bool:
        """Wait before the next try; False if the channel is stopping meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, seconds)
            return not self._stopping

    def _run(self) -> None:
        while (alert := self._next()) is not None:
            try:
                self._deliver(alert)
            except Exception:  # a bug in a sender must not end the channel
                log.exception("alerts: the %s channel failed on webhook.%s", self.name, alert.kind)
                self._failed()

    def _deliver(self, alert: Alert) -> None:
        what = f"webhook {alert.webhook}: alert webhook.{alert.kind}"
        job = self.sender.prepare(alert)
        for number in range(1, ATTEMPTS + 1):
            try:
                to = self.sender.send(job, number)
            except Failed as e:
                if e.permanent or number == ATTEMPTS:
                    log.error("%s not sent by %s (%s); giving up", what, self.name, e.reason)
                    self._failed()
                    return
                delay = self.backoff[min(number, len(self.backoff)) - 1]
                log.warning("%s: %s try %d failed (%s); again in %gs",
                            what, self.name, number, e.reason, delay)  # fmt: skip
                if not self._pause(delay):
                    log.warning("%s not sent by %s: the router is stopping", what, self.name)
                    return
                continue
            with self._cond:
                self._counts.sent += 1
            metrics.ALERTS_SENT.labels(self.name, alert.kind).inc()
            log.info("%s sent by %s%s", what, self.name, to)
            return

    def _failed(self) -> None:
        with self._cond:
            self._counts.failed += 1
        metrics.ALERTS_FAILED.labels(self.name).inc()


def _cost(alert: Alert) -> int:
    """Bytes an alert holds while it waits (an estimate on the high side)."""
    texts = (alert.webhook, alert.url, alert.reason, alert.last_error or "", *alert.emails)
    return 300 + sum(len(t) for t in texts)


# --------------------------------------------------------------------------- the alert webhook


def event(alert: Alert, eid: str, now: float) -> Payload:
    """The alert as a signed event (SPEC §2): ``type`` webhook.KIND, ``data`` as SPEC §7."""
    data = {"webhook": alert.webhook, "reason": alert.reason, "last_error": alert.last_error,
            "since": iso(alert.since), "queued": alert.queued}  # fmt: skip
    return synthetic(eid, f"webhook.{alert.kind}", now if alert.at is None else alert.at, data)


class WebhookSender(Sender):
    """Posts alerts to ``alerts.webhook`` through a delivery pool of its own (one worker).

    The pool signs, bounds every step by the timeout and refuses private addresses at
    connect time unless ``allow_private_networks``, as for any webhook; the HTTP stack
    is imported only when an alert webhook is configured.
    """

    def __init__(self, hook: WebhookConfig, clock: Clock, resolve: Any = socket.getaddrinfo):
        """``resolve`` stands in for ``socket.getaddrinfo`` (tests resolve names locally)."""
        from router.delivery import HARD_DEADLINE, DeliveryPool

        self.hook, self.clock = hook, clock
        self.wait = hook.timeout * HARD_DEADLINE + ANSWER_GRACE
        self.pool = DeliveryPool(1, clock, resolve)
        self.pool.start()

    def prepare(self, alert: Alert) -> Payload:
        # One id for every try: the receiver's idempotency key.
        return event(alert, new_id(self.clock), self.clock.time())

    def send(self, job: Payload, number: int) -> str:
        done = threading.Event()
        answer: list = []
        self.pool.submit(
            Attempt(self.hook, 0, job, number), lambda r: (answer.append(r), done.set())
        )
        if not done.wait(self.wait):
            raise Failed("no answer")
        result = answer[0]
        if not result.ok:
            raise Failed(result.error or "failed")
        return f" (event {job.id})"

    def close(self) -> None:
        self.pool.stop(0.0)


# --------------------------------------------------------------------------- email

KIND_WORDS = {  # what the subject says happened
    "failing": "is failing: events are not getting through",
    "disabled": "was disabled: its events are being held",
    "recovered": "is working again",
}
REASON_WORDS = {
    "failed_attempts": "its endpoint has not accepted events for a while",
    "exhausted": "an event could not be delivered after every retry, so the router stopped "
    "sending to it",
    "gone": "its endpoint answered 410 Gone (it asked not to be sent anything more)",
    "manual": "an operator disabled it",
    "enable": "an operator enabled it again and its endpoint passed the health check",
    "probe": "the router's automatic health check got through again",
    "delivered": "its endpoint accepts events again",
}


def email_text(alert: Alert, console: tuple[str, int] | None = None) -> tuple[str, str]:
    """The subject and plain-text body of an alert, for someone who did not build the router."""
    name = alert.webhook
    subject = f"[webhook-router] {name} {KIND_WORDS.get(alert.kind, alert.kind)}"
    when = _when(alert.since)
    lines = [
        f"The webhook {name!r} (sending to {alert.url}) {KIND_WORDS.get(alert.kind, alert.kind)}.",
        "",
        f"What happened: {REASON_WORDS.get(alert.reason, alert.reason)}.",
    ]
    if alert.kind == "recovered":
        lines += [
            f"It had been in trouble since: {when}.",
            f"Events waiting to go out: {alert.queued}.",
            "",
            "Nothing needs to be done: the held events go out now, oldest first.",
        ]
    else:
        lines += [
            f"Since: {when}.",
            f"Last error: {alert.last_error or 'none recorded'}.",
            f"Events held for it: {alert.queued} (kept safely; none are lost).",
        ]
        if alert.reason == "exhausted":
            lines.append("The event that used up its retries is kept too and goes out with them.")
        lines += [
            "",
            "How to fix it:",
            f"  1. Make sure the endpoint at {alert.url} is up and answers with a 2xx status.",
        ]
        if alert.kind == "failing":
            lines.append(
                "  2. Nothing else: the router keeps retrying and delivers once it answers."
            )
        else:
            lines += [
                "  2. Turn the webhook back on (it first sends a health check and only resumes",
                "     if that gets through; the held events then go out, oldest first):",
                f"       webhook-router enable {name}",
                "  3. That sends the events that gave up as well. Should any still be missing",
                f"     (webhook-router attempts {name} --failed lists them), send them again:",
                f"       webhook-router replay {name} --failed",
            ]
    if console is not None:
        host, port = console
        host = f"[{host}]" if ":" in host else host
        lines += ["", f"Console page: http://{host}:{port}/#/webhook/{name}"]  # its route
    lines += ["", f"Alert sent at {_when(alert.at)} by webhook-router."]
    return subject, "\n".join(lines) + "\n"


def _when(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class EmailSender(Sender):
    """Sends alerts with the standard library's smtplib: STARTTLS when set, login, timeouts."""

    def __init__(self, cfg: EmailConfig, console: tuple[str, int] | None):
        self.cfg, self.console = cfg, console

    def prepare(self, alert: Alert) -> EmailMessage:
        subject, body = email_text(alert, self.console)
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(dict.fromkeys((*self.cfg.to, *alert.emails)))
        msg["Date"] = formatdate(alert.at, usegmt=True) if alert.at else formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid("webhook-router")
        msg.set_content(body)
        return msg

    def send(self, job: EmailMessage, number: int) -> str:
        cfg = self.cfg
        to = [a.strip() for a in job["To"].split(",") if a.strip()]
        if not to:
            raise Failed("no recipients (alerts.email.to and alert_email are empty)", True)
        host, port = cfg.smtp
        try:
            with smtplib.SMTP(host, port, timeout=cfg.timeout) as smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username is not None and cfg.password is not None:
                    smtp.login(cfg.username, cfg.password)
                smtp.send_message(job, from_addr=cfg.sender, to_addrs=to)
        except smtplib.SMTPNotSupportedError:
            raise Failed("the SMTP server does not offer STARTTLS", True) from None
        except smtplib.SMTPRecipientsRefused:
            raise Failed("the SMTP server refused every recipient", True) from None
        except smtplib.SMTPResponseException as e:  # auth, sender, data: 5xx are for good
            raise Failed(f"SMTP {e.smtp_code}", e.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError) as e:
            raise Failed(_smtp_reason(e)) from None
        return f" to {len(to)} recipients"


def _smtp_reason(e: BaseException) -> str:
    """Short and without the server's words (which might echo what we sent)."""
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or type(e).__name__}"
    if isinstance(e, smtplib.SMTPServerDisconnected):  # smtplib's word for a read timing out too
        if isinstance(e.__context__, TimeoutError):
            return "timeout"
        return "the SMTP server closed the connection"
    return f"connection error: {getattr(e, 'strerror', None) or type(e).__name__}"
