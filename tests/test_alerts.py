"""Alerts (SPEC §7): the config, the core's alert effects, the saved state, the alerter, email."""

from __future__ import annotations

import base64
import socket
import sqlite3
import ssl
import threading
from dataclasses import replace

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from standardwebhooks import Webhook

from router import alerts, config, metrics
from router.alerts import Alerter, Channel, EmailSender, Failed, Sender, email_text
from router.clock import Clock as WallClock
from router.config import AlertsConfig, EmailConfig, HealthConfig, RetryConfig
from router.journal import Journal
from router.messages import (
    Alert,
    AlertState,
    AttemptResult,
    Delivery,
    Payload,
    SaveState,
    WebhookState,
)
from router.webhook import Notify, Record, Restored, WakeAt, WebhookCore
from tests.builders import hook
from tests.integration.conftest import HookServer, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# --------------------------------------------------------------------------- config


def load(tmp_path, text: str) -> config.Config:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return config.load(str(path))


def errors(tmp_path, text: str) -> list[str]:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return [e.split(": ", 1)[1] for e in config.check(str(path))]


WEBHOOK = f"""
webhooks:
  - name: crm
    url: https://crm.example.com/hooks/blue?token=t0ps3cret
    secret: {SECRET}
    alert_email: [owner@crm.example.com]
"""


def test_the_alerts_section_is_read_into_a_frozen_config(tmp_path):
    (tmp_path / "smtp.password").write_text("hunter2\n")
    cfg = load(
        tmp_path,
        f"""
alerts:
  failing_after: 200ms
  webhook: {{url: "https://ops.example.com/hooks", secret: {SECRET}, timeout: 2s,
             headers: {{X-Team: ops}}, allow_private_networks: true}}
  email:
    smtp: smtp.example.com:587
    starttls: true
    username: router
    password_file: smtp.password
    from: webhook-router@example.com
    to: [ops@example.com]
    timeout: 3s
{WEBHOOK}""",
    )
    a = cfg.alerts
    assert a.failing_after == 0.2
    assert (a.webhook.url, a.webhook.timeout, a.webhook.headers) == (
        "https://ops.example.com/hooks", 2.0, (("X-Team", "ops"),))  # fmt: skip
    assert a.webhook.secrets and a.webhook.allow_private_networks
    assert a.email == EmailConfig(("smtp.example.com", 587), "webhook-router@example.com",
                                  ("ops@example.com",), True, "router", "hunter2", 3.0)  # fmt: skip
    assert "hunter2" not in repr(a) and SECRET not in repr(a)
    assert cfg.webhooks[0].alert_email == ("owner@crm.example.com",)
    with pytest.raises(AttributeError):
        a.failing_after = 1.0  # type: ignore[misc]


def test_no_alerts_section_means_no_channel_and_the_default_threshold(tmp_path):
    cfg = load(tmp_path, WEBHOOK.replace("    alert_email: [owner@crm.example.com]\n", ""))
    assert cfg.alerts == AlertsConfig()
    assert Alerter(cfg.alerts).failing_after is None  # no channel: no failing alerts
    only_mail = AlertsConfig(email=EmailConfig(("h", 25), "a@b.c"))
    assert Alerter(only_mail).failing_after == config.FAILING_AFTER


@pytest.mark.parametrize(
    "section, message",
    [
        ("alerts: {}", "alerts: set webhook, email or both to send alerts"),
        ("alerts: {failing_after: soon}", "alerts.failing_after: invalid duration 'soon'"),
        ("alerts: {webhook: {url: 'https://ops.example.com/'}}",
         "alerts.webhook.secret: is required: alerts are signed"),
        (f"alerts: {{webhook: {{url: 'https://ops.example.com/', secret: {SECRET}, "
         "secret_env: X}}", "alerts.webhook.secret_env: set only one of"),
        (f"alerts: {{webhook: {{url: 'http://127.0.0.1:9/', secret: {SECRET}}}}}",
         "alerts.webhook.url: 127.0.0.1 is a loopback address"),
        (f"alerts: {{webhook: {{url: 'https://a.example/', secret: {SECRET}, retry: 1}}}}",
         "alerts.webhook.retry: unknown key"),
        ("alerts: {email: {smtp: nohost, from: a@b.c}}", "alerts.email.smtp: invalid address"),
        ("alerts: {email: {smtp: 'h:25'}}", "alerts.email.from: is required"),
        ("alerts: {email: {smtp: 'h:25', from: 'not an address'}}",
         "alerts.email.from: expected one email address"),
        ("alerts: {email: {smtp: 'h:25', from: a@b.c, to: [x@y.z, 'a,b@c.d']}}",
         "alerts.email.to[1]: expected one email address"),
        ("alerts: {email: {smtp: 'h:25', from: a@b.c, username: u}}",
         "alerts.email: set username and password_file together"),
        ("alerts: {email: {smtp: 'h:25', from: a@b.c, username: u, password_file: nope}}",
         "alerts.email.password_file: cannot read the password file"),
        ("alerts: null", "webhooks[0].alert_email: needs alerts.email"),
    ],
)  # fmt: skip
def test_a_bad_alerts_section_is_refused_with_file_line_key_and_message(tmp_path, section, message):
    found = errors(tmp_path, section + "\n" + WEBHOOK)
    assert any(e.startswith(message) for e in found), found


def test_every_alerts_error_is_reported_at_once(tmp_path):
    text = "alerts:\n  failing_after: soon\n  email: {smtp: nohost, from: nobody}\n" + WEBHOOK
    path = tmp_path / "router.yaml"
    path.write_text(text)
    found = config.check(str(path))
    assert [e.split(": ")[1] for e in found] == [
        "alerts.failing_after", "alerts.email.smtp", "alerts.email.from"]  # fmt: skip
    assert all(e.startswith(f"{path}:") for e in found)


def test_an_empty_password_file_and_a_bad_alert_email_are_refused(tmp_path):
    (tmp_path / "empty").write_text("\n")
    text = ("alerts: {email: {smtp: 'h:25', from: a@b.c, username: u, password_file: empty}}\n"
            + WEBHOOK.replace("owner@crm.example.com", "owner"))  # fmt: skip
    found = errors(tmp_path, text)
    assert any("password_file: the password file" in e and "is empty" in e for e in found)
    assert any(e.startswith("webhooks[0].alert_email[0]: expected one email") for e in found)


def test_alert_email_cannot_be_set_in_defaults(tmp_path):
    text = "defaults: {alert_email: [a@b.c]}\n" + WEBHOOK
    found = errors(tmp_path, "alerts: {email: {smtp: 'h:25', from: a@b.c}}\n" + text)
    assert any(e.startswith("defaults.alert_email: cannot be set in defaults") for e in found)


# --------------------------------------------------------------------------- the core's effects

AFTER = 0.2  # failing_after


def webhook(**kw) -> WebhookCore:
    settings = dict(
        url="https://crm.example.com/hooks/blue?token=t0ps3cret",
        retry=RetryConfig(3, (0.05,)),
        alert_email=("owner@crm.example.com",),
    )
    settings.update(kw)
    restored = kw.pop("restored", None) or Restored()
    settings.pop("restored", None)
    ids = iter(f"probe{i}" for i in range(100))
    return WebhookCore(hook(**settings), restored, 0.0, lambda: next(ids), lambda: 0.5)  # fmt: skip


def answer(seq: int, number: int, ok: bool, at: float, status: int | None = None,
           router_fault: bool = False) -> AttemptResult:  # fmt: skip
    status = status if status is not None else (200 if ok else 500)
    return AttemptResult(webhook="crm-sync", seq=seq, number=number, ok=ok, status=status,
                         error=None if ok else f"HTTP {status}", retry_after=None, latency=0.01,
                         response="", started_at=at, router_fault=router_fault)  # fmt: skip


def notes(effects) -> list[Alert]:
    return [e.alert for e in effects if isinstance(e, Notify)]


def fail(c: WebhookCore, seq: int, number: int, at: float, **kw) -> list:
    """One failed attempt at ``at`` and the failing check the supervisor runs after it."""
    c.tick(at)  # a retry due by now goes out first
    effects = c.result(answer(seq, number, False, at, **kw), at)
    return effects + c.check_failing(at, AFTER)


def succeed(c: WebhookCore, seq: int, number: int, at: float) -> list:
    c.tick(at)
    return c.result(answer(seq, number, True, at), at)


def send_one(c: WebhookCore, seq: int = 1) -> None:
    c.enqueue((Delivery(seq, Payload(f"e{seq}", "T", "{}")),), 0.0)


def test_a_webhook_failing_for_failing_after_raises_one_failing_alert():
    c = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(c)
    first = fail(c, 1, 1, 10.0)
    assert notes(first) == [] and c.state.alerts.failing_since == 10.0
    assert notes(fail(c, 1, 2, 10.1)) == []
    (alert,) = notes(fail(c, 1, 3, 10.2))
    assert (alert.kind, alert.webhook, alert.reason, alert.since, alert.at) == (
        "failing", "crm-sync", "failed_attempts", 10.0, 10.2)  # fmt: skip
    assert (alert.last_error, alert.queued, alert.emails) == (
        "HTTP 500",
        1,
        ("owner@crm.example.com",),
    )
    assert alert.url == "https://crm.example.com"  # no path, no query: they hold tokens
    assert (c.state.alerts.last_alert, c.state.alerts.last_alert_at) == ("failing", 10.2)
    assert notes(fail(c, 1, 4, 10.3)) == [] and c.check_failing(99.0, AFTER) == []


def test_the_failing_alert_also_comes_from_a_tick_when_no_attempt_is_due():
    c = webhook(retry=RetryConfig(10, (60.0,)))
    send_one(c)
    assert WakeAt(10.0 + AFTER) in fail(c, 1, 1, 10.0)  # due long before the next retry
    assert notes(c.tick(10.1) + c.check_failing(10.1, AFTER)) == []
    effects = c.tick(10.3) + c.check_failing(10.3, AFTER)
    assert [a.kind for a in notes(effects)] == ["failing"]
    assert any(isinstance(e, Record) and isinstance(e.message, SaveState) for e in effects)


def test_no_threshold_means_no_failing_alert():
    c = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(c)
    c.result(answer(1, 1, False, 10.0), 10.0)
    assert c.check_failing(99.0, None) == []


def test_an_endpoint_that_fails_until_disabled_gives_one_failing_and_one_disabled():
    c = webhook()
    send_one(c)
    kinds = []
    for number, at in ((1, 10.0), (2, 10.25), (3, 10.5)):
        kinds += [a.kind for a in notes(fail(c, 1, number, at))]
    assert kinds == ["failing", "disabled"]
    assert c.state.state == "disabled" and c.state.alerts.last_alert == "disabled"
    assert c.check_failing(20.0, AFTER) == []


def test_a_disabled_alert_says_why_and_since_when():
    c = webhook(retry=RetryConfig(2, (0.05,)))
    send_one(c)
    fail(c, 1, 1, 10.0)
    (alert,) = notes(fail(c, 1, 2, 10.05))  # disabled before failing_after: no failing alert
    assert (alert.kind, alert.reason, alert.since, alert.queued) == (
        "disabled",
        "exhausted",
        10.0,
        0,
    )
    gone = webhook()
    send_one(gone)
    (alert,) = notes(fail(gone, 1, 1, 5.0, status=410))
    assert (alert.kind, alert.reason, alert.last_error) == ("disabled", "gone", "HTTP 410")


def test_a_manual_disable_alerts_once_and_an_enable_that_passes_recovers():
    c = webhook()
    (alert,) = notes(c.disable(7.0))
    assert (alert.kind, alert.reason, alert.since) == ("disabled", "manual", 7.0)
    assert notes(c.disable(8.0)) == []  # already disabled: no second alert
    answers = []
    c.enable(9.0, answers.append)  # sends the health check
    effects = c.result(answer(0, 1, True, 9.0), 9.5)
    (alert,) = notes(effects)
    assert (alert.kind, alert.reason, alert.at) == ("recovered", "enable", 9.5)
    assert answers[0]["ok"] and c.state.alerts.last_alert == "recovered"


def test_a_probe_that_brings_it_back_raises_recovered_with_the_time_it_began_failing():
    c = webhook(retry=RetryConfig(1, (0.05,)), health=HealthConfig(probe_interval=1.0))
    send_one(c)
    fail(c, 1, 1, 10.0)
    assert c.state.state == "disabled"
    c.tick(11.0)  # the probe is due
    effects = c.result(answer(0, 1, True, 11.0), 11.1)
    (alert,) = notes(effects)
    assert (alert.kind, alert.reason, alert.since) == ("recovered", "probe", 10.0)
    assert c.state.alerts.failing_since is None


def test_a_failed_probe_raises_nothing():
    c = webhook(retry=RetryConfig(1, (0.05,)), health=HealthConfig(probe_interval=1.0))
    send_one(c)
    fail(c, 1, 1, 10.0)
    c.tick(11.0)
    assert notes(c.result(answer(0, 1, False, 11.0), 11.1)) == []


def test_a_success_after_a_failing_alert_recovers_and_one_without_an_alert_says_nothing():
    c = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(c)
    fail(c, 1, 1, 10.0)
    fail(c, 1, 2, 10.3)
    (alert,) = notes(succeed(c, 1, 3, 10.4))
    assert (alert.kind, alert.reason, alert.since) == ("recovered", "delivered", 10.0)
    quiet = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(quiet)
    fail(quiet, 1, 1, 10.0)
    assert notes(succeed(quiet, 1, 2, 10.1)) == []
    assert quiet.state.alerts == AlertState()


def test_a_new_run_of_failures_after_a_recovery_warns_again():
    c = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(c)
    fail(c, 1, 1, 10.0)
    fail(c, 1, 2, 10.3)
    succeed(c, 1, 3, 10.4)
    send_one(c, 2)
    fail(c, 2, 1, 20.0)
    assert [a.kind for a in notes(fail(c, 2, 2, 20.3))] == ["failing"]


def test_the_routers_own_faults_do_not_start_a_failing_run():
    c = webhook(retry=RetryConfig(10, (0.05,)))
    send_one(c)
    fail(c, 1, 1, 10.0, router_fault=True)
    assert c.state.alerts.failing_since is None and c.check_failing(99.0, AFTER) == []


def test_a_restart_neither_forgets_nor_repeats_the_failing_alert():
    told = WebhookState(state="failing", consecutive_failures=3,
                        alerts=AlertState(10.0, "failing", 10.2))  # fmt: skip
    c = webhook(restored=Restored(told, (Delivery(1, Payload("e1", "T", "{}"), 3, 10.3),), 1))
    assert c.check_failing(50.0, AFTER) == []
    not_yet = replace(told, alerts=AlertState(10.0))
    c = webhook(restored=Restored(not_yet, (Delivery(1, Payload("e1", "T", "{}"), 3, 10.3),), 1))
    assert [a.kind for a in notes(c.check_failing(50.0, AFTER))] == ["failing"]


def test_status_shows_the_last_alert_and_since_when_it_is_failing():
    c = webhook()
    assert c.snapshot()["last_alert"] is None and c.snapshot()["failing_since"] is None
    c.disable(1_700_000_000.0)
    assert c.snapshot()["last_alert"] == {"kind": "disabled", "at": "2023-11-14T22:13:20.000Z"}


# --------------------------------------------------------------------------- the saved state


def test_the_alert_state_is_saved_and_read_back(tmp_path, clock):
    j = Journal(str(tmp_path / "journal.db"), clock, 3600, lambda b: None, lambda a, r: None)
    j.open()
    j.start()
    state = WebhookState(state="failing", consecutive_failures=2, last_error="HTTP 500",
                         alerts=AlertState(5.0, "failing", 6.0))  # fmt: skip
    try:
        j.submit(SaveState("crm", state))
        conn = j.reader()
        wait_until(lambda: conn.execute("SELECT count(*) FROM webhooks").fetchone()[0] == 1)
    finally:
        j.stop()
    j = Journal(str(tmp_path / "journal.db"), clock, 3600, lambda b: None, lambda a, r: None)
    j.open()
    assert j.load(["crm"], 0)["crm"].state == state
    j.stop()


def test_a_version_2_journal_gets_the_alert_columns_and_keeps_its_webhook_states(tmp_path, clock):
    path = tmp_path / "journal.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(alerts_free_schema())
    old.execute("INSERT INTO webhooks VALUES ('crm', 'disabled', 'exhausted', 5, 7, 1, 3.0, 'x')")
    old.close()
    j = Journal(str(path), clock, 3600, lambda b: None, lambda a, r: None)
    j.open()
    state = j.load(["crm"], 0)["crm"].state
    assert state == WebhookState("disabled", "exhausted", 5, 7, 1, 3.0, "x")
    j.stop()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (3,)
    conn.close()


def alerts_free_schema() -> str:
    from router import store

    return store._UPGRADES[1] + store._UPGRADES[2]


@pytest.fixture
def clock():
    class Fixed:
        def time(self) -> float:
            return 1_700_000_000.0

        def monotonic(self) -> float:
            return 0.0

    return Fixed()


# --------------------------------------------------------------------------- the alerter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now


class Recorder(Sender):
    """A channel's sender that fails ``failures`` times, then records; no network."""

    def __init__(self, failures: int = 0, permanent: bool = False, gate=None):
        self.failures, self.permanent, self.gate = failures, permanent, gate
        self.tries: list[tuple[str, int]] = []
        self.sent: list[Alert] = []
        self.closed = False

    def prepare(self, alert: Alert) -> Alert:
        return alert

    def send(self, job: Alert, number: int) -> str:
        if self.gate is not None:
            self.gate.wait(10)
        self.tries.append((job.kind, number))
        if self.failures:
            self.failures -= 1
            raise Failed("HTTP 500", self.permanent)
        self.sent.append(job)
        return ""

    def close(self) -> None:
        self.closed = True


def alert(kind: str = "disabled", webhook: str = "crm", **kw) -> Alert:
    values = dict(
        kind=kind,
        webhook=webhook,
        url="https://crm.example.com",
        reason="exhausted",
        last_error="HTTP 500",
        since=1_700_000_000.0,
        queued=42,
        at=1_700_000_060.0,
    )
    values.update(kw)
    return Alert(**values)  # fmt: skip


def with_channel(sender: Sender, **kw) -> tuple[Alerter, Clock]:
    clock = Clock()
    a = Alerter(AlertsConfig(), clock, **kw)
    a._started = True
    a._channels = {"webhook": Channel("webhook", sender, (0.0,))}
    a._channels["webhook"].start()
    return a, clock


def test_a_channel_retries_a_failed_alert_and_counts_it_sent():
    sender = Recorder(failures=2)
    a, _ = with_channel(sender)
    before = metrics.REGISTRY.get_sample_value(
        "alerts_sent_total", {"channel": "webhook", "kind": "disabled"}) or 0  # fmt: skip
    a.submit(alert())
    wait_until(lambda: sender.sent)
    assert sender.tries == [("disabled", 1), ("disabled", 2), ("disabled", 3)]
    assert a.totals()["channels"]["webhook"]["sent"] == 1
    after = metrics.REGISTRY.get_sample_value(
        "alerts_sent_total", {"channel": "webhook", "kind": "disabled"})  # fmt: skip
    assert after == before + 1
    a.stop()
    assert sender.closed


def test_a_channel_gives_up_after_its_tries_and_never_alerts_about_itself():
    sender = Recorder(failures=99)
    a, _ = with_channel(sender)
    a.submit(alert())
    wait_until(lambda: a.totals()["channels"]["webhook"]["failed"] == 1)
    assert len(sender.tries) == alerts.ATTEMPTS and sender.sent == []
    a.stop()


def test_a_permanent_failure_is_not_retried():
    sender = Recorder(failures=1, permanent=True)
    a, _ = with_channel(sender)
    a.submit(alert())
    wait_until(lambda: a.totals()["channels"]["webhook"]["failed"] == 1)
    assert sender.tries == [("disabled", 1)]
    a.stop()


def test_alerts_over_the_hourly_limit_are_counted_as_suppressed_and_logged_once(caplog):
    sender = Recorder()
    a, clock = with_channel(sender, limit_per_hour=2)
    for _ in range(5):
        a.submit(alert())
    a.submit(alert(webhook="other"))  # the limit is per webhook
    wait_until(lambda: len(sender.sent) == 3)
    assert a.totals()["suppressed"] == 3
    assert sum("the next ones are counted, not sent" in r.message for r in caplog.records) == 1
    clock.now += alerts.HOUR
    a.submit(alert(kind="recovered"))
    wait_until(lambda: len(sender.sent) == 4)
    assert any("3 alerts were suppressed in the last hour" in r.message for r in caplog.records)
    a.stop()


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_supervisor():
    gate = threading.Event()
    sender = Recorder(gate=gate)
    a, _ = with_channel(sender, limit_per_hour=10**6)
    for n in range(alerts.QUEUE_COUNT + 10):
        a.submit(alert(webhook=f"w{n}"))
    totals = a.totals()["channels"]["webhook"]
    assert totals["dropped"] >= 9 and totals["queued"] <= alerts.QUEUE_COUNT
    gate.set()
    wait_until(lambda: a.totals()["channels"]["webhook"]["queued"] == 0)
    a.stop()


def test_the_queue_is_bounded_by_bytes_too():
    gate = threading.Event()
    channel = Channel("email", Recorder(gate=gate))
    big = alert(last_error="x" * 60_000)
    kept = sum(channel.put(big) for _ in range(40))
    assert kept < 40 and kept * 60_000 <= alerts.QUEUE_BYTES
    channel.stop(0.0)


def test_submit_never_raises_and_without_channels_does_nothing(caplog):
    a = Alerter(AlertsConfig())
    a.start()
    a.submit(alert())
    assert a.totals()["channels"] == {}
    a.stop()
    sender = Recorder()
    a, _ = with_channel(sender)
    a.submit(None)  # type: ignore[arg-type]  # a bug upstream: logged, not raised
    assert "alert webhook.? not queued" in caplog.text
    a.submit(alert())
    wait_until(lambda: sender.sent)
    a.stop()


def test_a_reload_replaces_a_changed_channel_and_keeps_an_unchanged_one():
    mail = AlertsConfig(email=EmailConfig(("127.0.0.1", 1), "a@b.c"))
    a = Alerter(mail)
    a.start()
    before = a._channels["email"]
    a.configure(replace(mail, failing_after=9.0))
    assert a._channels["email"] is before and a.failing_after == 9.0
    a.configure(AlertsConfig(email=EmailConfig(("127.0.0.1", 2), "a@b.c")))
    assert a._channels["email"] is not before
    a.configure(AlertsConfig())
    assert a._channels == {} and a.failing_after is None
    a.stop()


# --------------------------------------------------------------------------- the words


def test_the_disabled_email_says_what_broke_since_when_and_the_commands_that_fix_it():
    subject, body = email_text(alert(), ("127.0.0.1", 8080))
    assert subject == "[webhook-router] crm was disabled: its events are being held"
    for words in ("https://crm.example.com", "2023-11-14 22:13:20 UTC", "Last error: HTTP 500",
                  "Events held for it: 42", "webhook-router enable crm",
                  "webhook-router replay crm --failed", "kept too and goes out with them",
                  "http://127.0.0.1:8080/#/webhook/crm"):  # fmt: skip
        assert words in body, words


def test_the_failing_and_recovered_emails_read_as_such_and_without_a_console_no_link():
    subject, body = email_text(alert("failing", reason="failed_attempts"))
    assert "is failing" in subject and "keeps retrying" in body and "Console" not in body
    assert "http://[::1]:8080/#/webhook/crm" in email_text(alert(), ("::1", 8080))[1]
    subject, body = email_text(alert("recovered", reason="probe"))
    assert "is working again" in subject and "health check got through" in body
    assert "enable" not in body


def test_the_alert_event_carries_the_data_spec_7_names():
    payload = alerts.event(alert(), "e1", 0.0)
    body = payload.for_webhook("alerts")
    assert payload.type == "webhook.disabled"
    assert b'"data":{"webhook":"crm","reason":"exhausted","last_error":"HTTP 500",' in body
    assert b'"since":"2023-11-14T22:13:20.000Z","queued":42}' in body


# --------------------------------------------------------------------------- a real SMTP server


class SmtpServer:
    """aiosmtpd on 127.0.0.1: every message kept; STARTTLS and a login when ``tls``."""

    def __init__(self, ca: trustme.CA | None = None, login: tuple[str, str] | None = None):
        self.messages: list = []
        kwargs: dict = {}
        if ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(context)
            kwargs.update(tls_context=context, require_starttls=True)
        if login is not None:
            kwargs.update(authenticator=self._auth, auth_require_tls=ca is not None)
        self.login = login
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    def _auth(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        given = (auth_data.login.decode(), auth_data.password.decode())
        return AuthResult(success=given == self.login, handled=False)  # False: it answers 535

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"

    def stop(self) -> None:
        self.controller.stop()


def test_email_goes_out_by_starttls_with_a_login_to_alerts_email_to_and_the_owner(
    monkeypatch, tmp_path
):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = SmtpServer(ca, ("router", "hunter2"))
    try:
        cfg = EmailConfig(("127.0.0.1", server.port), "router@example.com", ("ops@example.com",),
                          True, "router", "hunter2", 5.0)  # fmt: skip
        sender = EmailSender(cfg, None)
        job = sender.prepare(alert(emails=("owner@crm.example.com", "ops@example.com")))
        assert sender.send(job, 1) == " to 2 recipients"
        (msg,) = server.messages
        assert msg.rcpt_tos == ["ops@example.com", "owner@crm.example.com"]
        assert b"webhook-router enable crm" in msg.original_content
        wrong = EmailSender(replace(cfg, password="wrong"), None)
        with pytest.raises(Failed) as e:
            wrong.send(wrong.prepare(alert()), 1)
        assert e.value.permanent and "wrong" not in e.value.reason
    finally:
        server.stop()


def test_an_smtp_server_without_starttls_is_a_permanent_failure_and_a_dead_one_a_retry():
    server = SmtpServer()
    try:
        cfg = EmailConfig(("127.0.0.1", server.port), "router@example.com", ("ops@example.com",),
                          starttls=True, timeout=5.0)  # fmt: skip
        sender = EmailSender(cfg, None)
        with pytest.raises(Failed) as e:
            sender.send(sender.prepare(alert()), 1)
        assert e.value.permanent and "STARTTLS" in e.value.reason
    finally:
        server.stop()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does) and never answers
    try:
        cfg = EmailConfig(silent.getsockname(), "router@example.com", ("ops@example.com",),
                          timeout=0.2)  # fmt: skip
        sender = EmailSender(cfg, None)
        with pytest.raises(Failed) as e:
            sender.send(sender.prepare(alert()), 1)
        assert (e.value.permanent, e.value.reason) == (False, "timeout")
    finally:
        silent.close()


# --------------------------------------------------------------------------- the alert webhook


def test_the_alert_webhook_is_signed_and_refuses_private_addresses_unless_allowed():
    server = HookServer()
    port = server.port

    def resolve(host, port_, family=0, kind=0, *rest):  # "alerts.internal" is on loopback
        assert host == "alerts.internal"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_))]

    url = f"http://alerts.internal:{port}/alerts"
    hook_cfg = config.WebhookConfig(name="alerts", url=url, secrets=(b"k" * 24,), timeout=2.0)
    now = WallClock()  # the signature's timestamp is checked against the receiver's clock
    guarded = alerts.WebhookSender(hook_cfg, now, resolve)
    open_ = alerts.WebhookSender(replace(hook_cfg, allow_private_networks=True), now, resolve)
    try:
        with pytest.raises(Failed) as e:
            guarded.send(guarded.prepare(alert()), 1)
        assert e.value.reason == "blocked address 127.0.0.1" and server.requests == []
        job = open_.prepare(alert())
        assert open_.send(job, 2) == f" (event {job.id})"
        (request,) = server.requests
        assert request.headers["webhook-id"] == job.id and request.headers["webhook-attempt"] == "2"
        assert request.json["type"] == "webhook.disabled" and request.json["webhook"] == "alerts"
        Webhook("whsec_" + base64.b64encode(b"k" * 24).decode()).verify(
            request.body, request.headers
        )
    finally:
        guarded.close()
        open_.close()
        server.close()
