"""The configuration: load a file, check it against ``router.schema``, freeze the values.

Every error is collected before any is reported, each as ``FILE:LINE: key: message``.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from router import ConfigError, RouterError, tokens
from router.addresses import blocked_kind
from router.compose import Each, compose
from router.rules import Rule
from router.schema import (
    BAD,
    ONE_WEBHOOK,
    RULE,
    SECRET_KEYS,
    TOP,
    TUNABLES,
    WEBHOOKS,
    File,
    Map,
    join,
    reader,
    rule_from,
    section,
    webhook_list,
)
from router.signing import scheme_header
from router.validators import parse_duration as parse_duration  # re-exported: callers use config.*
from router.validators import parse_size as parse_size

MiB = 1024 * 1024
DEFAULT_STATE_DIR = "./var"
CONTROL_SOCKET = "control.sock"  # in state_dir, unless control.bind says otherwise
JOURNAL_FILE = "journal.db"  # in state_dir: the journal, and the API-made webhooks
DEFAULT_TOKENS_FILE = "./tokens.yaml"  # beside the config file, unless api.tokens_file says
SIGNATURE_HEADER = "X-Signature"  # hmac-sha256-hex's header, unless signature_header says


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 5
    backoff: tuple[float, ...] = (10.0, 60.0, 300.0, 1800.0)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    probe_interval: float | None = None  # seconds; None: no automatic probes


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: float  # "50/s" -> count=50, per=1.0
    per: float


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    name: str
    url: str = field(repr=False)  # a URL may carry a token
    rules: tuple[Rule, ...] = (Rule(),)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)  # signing keys, newest first
    enabled: bool = True
    timeout: float = 7.0
    retry: RetryConfig = RetryConfig()
    max_in_flight: int = 4
    ordered: bool = False
    rate_limit: RateLimit | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold tokens
    signature: str = "standard"  # standard | hmac-sha256-hex | none
    signature_header: str = SIGNATURE_HEADER
    allow_private_networks: bool = False
    health: HealthConfig = HealthConfig()
    source: str = ""  # "FILE:LINE" where the webhook is defined
    alert_email: tuple[str, ...] = ()  # also told about this webhook's alerts (SPEC §7)


@dataclass(frozen=True, slots=True)
class CurveConfig:
    secret_key_file: str  # absolute path
    authorized_keys_dir: str  # absolute path


@dataclass(frozen=True, slots=True)
class IngestConfig:
    bind: str | None = "tcp://127.0.0.1:5555"
    ack_bind: str | None = "tcp://127.0.0.1:5556"
    max_event_bytes: int = MiB
    curve: CurveConfig | None = None


FAILING_AFTER = 300.0  # seconds a webhook fails before webhook.failing, unless the file says


@dataclass(frozen=True, slots=True)
class EmailConfig:
    smtp: tuple[str, int]  # host, port
    sender: str  # the From address (`from:` in the file)
    to: tuple[str, ...] = ()
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # read from password_file
    timeout: float = 10.0  # seconds, for connecting and for each SMTP answer


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Where alerts go (SPEC §7); with neither channel there are none."""

    failing_after: float | None = FAILING_AFTER  # seconds failing before webhook.failing
    webhook: WebhookConfig | None = None  # the alert endpoint, signed as a webhook is
    email: EmailConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: str  # absolute path of the main file
    state_dir: str  # absolute
    retention: float = 7 * 86400.0
    shutdown_timeout: float = 10.0
    ingest: IngestConfig = IngestConfig()
    control_bind: str = ""  # zmq address; default ipc://<state_dir>/control.sock
    metrics_bind: tuple[str, int] | None = ("127.0.0.1", 9464)
    api_bind: tuple[str, int] | None = None  # the HTTP API (SPEC §6); None: off
    api_tokens: tokens.Tokens = tokens.Tokens()  # read from api.tokens_file when the API is on
    delivery_workers: int = 64
    delivery_processes: int = 2  # 0: the senders run in the daemon's own process
    attempt_log_max: int = 256 * MiB  # bytes the attempt log may take in the journal
    journal_sync: str = "full"  # full: an ack survives power loss; normal: a crash only
    # Past one machine (SPEC §8): the journal in a PostgreSQL database several daemons share.
    journal_backend: str = "sqlite"  # or "postgresql"
    journal_dsn: str | None = field(default=None, repr=False)  # from dsn_file: may hold a password
    lease: float = 15.0  # seconds a daemon owns a webhook without renewing
    node: str = field(default_factory=socket.gethostname)  # this daemon's name in the cluster
    alerts: AlertsConfig = AlertsConfig()
    webhooks: tuple[WebhookConfig, ...] = ()  # the files' webhooks, then the API's (by name)
    # The checked `defaults:` section: API-made webhooks are built with it too.
    defaults: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------- building the values


def _blocked(url: str) -> str | None:
    """Why a literal host is off limits without ``allow_private_networks``; names wait."""
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "localhost."):
        return f"{host} is a loopback address"
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None  # a name: the delivery pool checks what it resolves to
    kind = blocked_kind(ip)
    return f"{host} is {kind} address" if kind else None


_BUILT = ("retry", "health", "rate_limit")  # tunables made into their own frozen values


def _shared(memo: dict, cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **kwargs)``, one object for equal values: most webhooks share their
    defaults, and a daemon holds every webhook's settings for its whole life."""
    key = (cls, args, tuple(kwargs.items()))
    if (value := memo.get(key)) is None:
        value = memo[key] = cls(*args, **kwargs)
    return value


def _webhook(f: File, path: str, w: Map, defaults: Map, memo: dict) -> WebhookConfig:
    """Merge with ``defaults`` (retry and health key by key) and check what spans keys."""
    merged = {**defaults, **w}
    retry, health = ({**defaults.get(k, {}), **w.get(k, {})} for k in ("retry", "health"))
    secret_keys = [k for k in SECRET_KEYS if k in w.keys_at]
    secret_from = w
    if not secret_keys:
        secret_keys = [k for k in SECRET_KEYS if k in defaults]
        secret_from = defaults
    if len(secret_keys) > 1:
        found = ", ".join(secret_keys)
        f.error(secret_from.keys_at[secret_keys[1]], join(path, secret_keys[1]),
                f"set only one of {', '.join(SECRET_KEYS)} (found {found})")  # fmt: skip
    if (signature := merged.get("signature", "standard")) != "none" and not secret_keys:
        f.error(w.at, join(path, "secret"), f"is required for signature {signature!r}: "
                f"set {', '.join(SECRET_KEYS[:-1])} or {SECRET_KEYS[-1]}")  # fmt: skip
    if ours := scheme_header(signature, merged.get("signature_header", SIGNATURE_HEADER)):
        for name, _ in merged.get("headers", ()):  # the router's, as the reserved ones are
            if name.lower() == ours.lower():
                f.error(w.keys_at.get("headers", w.at), join(path, f"headers.{name}"),
                        f"{name} is this webhook's signature_header, set by the router,"
                        " and cannot be configured")  # fmt: skip
    top_rule = [k for k in RULE if k in w.keys_at]
    if "match" in w.keys_at and top_rule:
        f.error(w.keys_at["match"], join(path, "match"),
                f"cannot be combined with {', '.join(top_rule)} on the webhook; "
                "put them in each match rule")  # fmt: skip
    if "url" in w and not merged.get("allow_private_networks") and (why := _blocked(w["url"])):
        f.error(w.keys_at["url"], join(path, "url"),
                f"{why}; set allow_private_networks: true to allow it")  # fmt: skip
    source = f.source(w.at)
    return WebhookConfig(
        name=w.get("name", ""),
        url=w.get("url", ""),
        rules=tuple(w.get("match", ())) or (rule_from(w, source),),
        secrets=next((secret_from[k] for k in secret_keys if k in secret_from), ()),
        retry=_shared(memo, RetryConfig, **retry),
        health=_shared(memo, HealthConfig, **health),
        rate_limit=_shared(memo, RateLimit, *rate) if (rate := merged.get("rate_limit")) else None,
        source=source,
        alert_email=w.get("alert_email", ()),
        **{k: v for k, v in merged.items() if k in TUNABLES and k not in _BUILT},
    )


def _ingest(f: File, top: Map) -> IngestConfig:
    """An ``ingest`` section turns off the socket it leaves out; none at all keeps both."""
    if "ingest" not in top:
        return IngestConfig()
    ingest = top["ingest"]
    off = [k for k in ("bind", "ack_bind") if ingest.get(k) is None]
    if len(off) == 2 and all(k in ingest or k not in ingest.keys_at for k in off):
        f.error(top.keys_at["ingest"], "ingest", "set bind, ack_bind or both to let events in")
    curve = ingest.get("curve")
    return IngestConfig(
        bind=ingest.get("bind"),
        ack_bind=ingest.get("ack_bind"),
        max_event_bytes=ingest.get("max_event_bytes", MiB),
        curve=CurveConfig(**curve) if curve and len(curve) == 2 else None,
    )


ALERT_EMAIL_NEEDS = "needs alerts.email (the SMTP server that sends it)"
ALERTS_NAME = "alerts"  # the alert endpoint's name in logs and in its events' `webhook` field
CHANNELS = ("webhook", "email")  # the ways alerts go out


def _alerts(f: File, top: Map, webhooks: list[tuple[File, str, Map]]) -> AlertsConfig:
    """The ``alerts`` section; a webhook's ``alert_email`` needs its SMTP server."""
    alerts = top.get("alerts") or Map(None)
    email = alerts.get("email")
    if email is None:
        for wf, p, w in webhooks:
            if "alert_email" in w.keys_at:
                wf.error(w.keys_at["alert_email"], join(p, "alert_email"), ALERT_EMAIL_NEEDS)
    if "alerts" not in top or top["alerts"] is None:
        return AlertsConfig()
    # A channel whose value is wrong counts as set: its own error says why.
    if not any(k in alerts.keys_at and alerts.get(k, BAD) is not None for k in CHANNELS):
        f.error(top.keys_at["alerts"], "alerts", "set webhook, email or both to send alerts")
    hook = None
    if (w := alerts.get("webhook")) is not None:
        path = "alerts.webhook"
        secret_keys = [k for k in SECRET_KEYS if k in w.keys_at]
        if len(secret_keys) > 1:
            f.error(w.keys_at[secret_keys[1]], join(path, secret_keys[1]),
                    f"set only one of {', '.join(SECRET_KEYS)}")  # fmt: skip
        elif not secret_keys:
            f.error(w.at, join(path, "secret"), "is required: alerts are signed (SPEC §2); "
                    f"set {', '.join(SECRET_KEYS[:-1])} or {SECRET_KEYS[-1]}")  # fmt: skip
        if "url" in w and not w.get("allow_private_networks") and (why := _blocked(w["url"])):
            f.error(w.keys_at["url"], join(path, "url"),
                    f"{why}; set allow_private_networks: true to allow it")  # fmt: skip
        hook = WebhookConfig(
            name=ALERTS_NAME,
            url=w.get("url", ""),
            secrets=next((w[k] for k in secret_keys if k in w), ()),
            source=f.source(w.at),
            **{k: w[k] for k in ("timeout", "headers", "allow_private_networks") if k in w},
        )
    mail = None
    if email is not None:
        if ("username" in email.keys_at) != ("password_file" in email.keys_at):
            at = email.keys_at.get("username") or email.keys_at["password_file"]
            f.error(at, "alerts.email", "set username and password_file together (or neither)")
        mail = EmailConfig(
            smtp=email.get("smtp", ("", 0)),
            sender=email.get("from", ""),
            to=email.get("to", ()),
            **{k: email[k] for k in ("starttls", "username", "timeout") if k in email},
            password=email.get("password_file"),
        )
    failing_after = alerts.get("failing_after", FAILING_AFTER)
    return AlertsConfig(failing_after=failing_after, webhook=hook, email=mail)


def _journal(f: File, top: Map) -> dict:
    """The ``journal`` section as Config's journal_* fields; each key fits one backend."""
    journal = top.get("journal") or Map(None)
    backend = journal.get("backend", "sqlite")
    only = {"sqlite": ("sync",), "postgresql": ("dsn_file", "lease")}
    for key, at in journal.keys_at.items():
        if key != "backend" and key not in only[backend]:
            theirs = next(b for b, keys in only.items() if key in keys)
            f.error(at, f"journal.{key}", f"is for backend: {theirs}, not {backend}")
    if backend == "postgresql" and "dsn_file" not in journal.keys_at:
        f.error(top.keys_at["journal"], "journal.dsn_file", "is required for backend: postgresql")
    out = {"journal_backend": backend, "journal_dsn": journal.get("dsn_file")}
    if "sync" in journal:
        out["journal_sync"] = journal["sync"]
    if "lease" in journal:
        out["lease"] = journal["lease"]
    return out


def _read(f: File, path: str, key: str | None = None, each: Each | None = None) -> yaml.Node | None:
    """Compose one file into nodes (lines kept); syntax errors become located messages.

    With ``each``, the webhooks listed at ``key`` (None: the file's own list) are checked
    as they are read (``router.compose``), so a big file's nodes never all exist at once.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        f.error(1, "yaml", "the file is not UTF-8 text")
        return None
    try:
        return compose(text, key, each)
    except yaml.YAMLError:
        pass  # parse again below: PyYAML's own parser words errors the same on every machine
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = " ".join(str(p) for p in (e.problem, e.context and f"({e.context})") if p)
        f.error(mark.line + 1 if mark else 1, "yaml", message or "invalid YAML")
    except yaml.YAMLError as e:  # the reader: a character YAML does not allow
        position = getattr(e, "position", 0)
        line = text.count("\n", 0, position) + 1
        f.error(line, "yaml", "the file holds a character that YAML does not allow")
    return None


def _shown(main: File, name: str) -> str:
    """How messages name the file ``name``: under the main file's directory, as that is shown."""
    if os.path.commonpath([name, main.dir]) != main.dir:
        return name
    relative = os.path.relpath(name, main.dir)
    return os.path.normpath(os.path.join(os.path.dirname(main.name), relative))


def _included(main: File, directory: str, path: str) -> list[tuple[File, str, Map]]:
    """Webhooks from ``directory/*.yaml`` in name order; ``webhooks[i]`` counts within each file."""
    webhooks = []
    names = sorted(glob.glob(os.path.join(glob.escape(directory), "*.yaml")))
    for order, name in enumerate(names, 1):
        f = File(_shown(main, name), os.path.dirname(name), main.env, main.errors, order)
        try:
            node = _read(f, name, None, reader(f))
        except OSError as e:
            f.error(1, "include", f"cannot read the file: {e.strerror}")
            continue
        if node is not None and (found := f.check(webhook_list, node, WEBHOOKS)) is not BAD:
            webhooks += found
    return webhooks


def _api(main: File, top: Map) -> dict:
    """``api_bind`` and ``api_tokens``; the tokens file is read (and must be valid) when on."""
    api = top.get("api") or Map(None)
    if api.get("bind") is None:
        return {}
    path = api.get("tokens_file", main.resolve(DEFAULT_TOKENS_FILE))
    shown = _shown(main, path)
    f = File(shown, os.path.dirname(path), main.env, main.errors, order=1 << 30)  # listed last
    try:
        node = _read(f, path)
    except OSError as e:
        at = api.keys_at.get("tokens_file") or top.keys_at["api"]
        main.error(at, "api.tokens_file", f"cannot read the tokens file {shown}: {e.strerror}")
        return {}
    return {"api_bind": api["bind"], "api_tokens": tokens.check(node, f)}


def load(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, check and freeze the config at ``path`` (and its ``include:`` directory).

    ``env`` (default ``os.environ``) answers ``secret_env``. Raises ``ConfigError`` holding
    every error found, each ``FILE:LINE: key.path: message``, in file and line order.
    """
    errors: list[tuple[int, int, str]] = []
    absolute = os.path.abspath(path)
    main = File(path, os.path.dirname(absolute), os.environ if env is None else env, errors, 0)
    try:
        root = _read(main, absolute, WEBHOOKS, reader(main))
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror}"]) from None
    top = Map(None) if root is None else main.check(section(TOP), root, "")
    top = Map(None) if top is BAD else top
    webhooks = top.get(WEBHOOKS, [])
    if "include" in top:
        webhooks = webhooks + _included(main, top["include"], path)
    defaults = top.get("defaults", Map(None))
    memo: dict = {}
    built = [_webhook(f, p, w, defaults, memo) for f, p, w in webhooks]
    first: dict[str, str] = {}
    for (f, p, w), hook in zip(webhooks, built, strict=True):
        if hook.name and hook.name in first:
            where = first[hook.name]
            f.error(w.keys_at["name"], join(p, "name"),
                    f"duplicate webhook name {hook.name!r}; first defined at {where}")  # fmt: skip
        first.setdefault(hook.name, hook.source)
    ingest = _ingest(main, top)
    alerts = _alerts(main, top, webhooks)
    journal = _journal(main, top)
    api = _api(main, top)
    if errors:
        raise ConfigError([text for _, _, text in sorted(errors, key=lambda e: e[:2])])
    state_dir = top.get("state_dir", main.resolve(DEFAULT_STATE_DIR))
    runtime = ("retention", "shutdown_timeout", "delivery_workers", "delivery_processes",
               "attempt_log_max")  # fmt: skip
    extra = {k: top[k] for k in runtime if k in top}
    if "node" in top:
        extra["node"] = top["node"]
    if "metrics" in top and top["metrics"] is None:
        extra["metrics_bind"] = None  # `metrics: null`: the whole section off
    elif "bind" in top.get("metrics", {}):
        extra["metrics_bind"] = top["metrics"]["bind"]
    return Config(
        path=absolute,
        state_dir=state_dir,
        ingest=ingest,
        control_bind=top.get("control", {}).get("bind", f"ipc://{state_dir}/{CONTROL_SOCKET}"),
        webhooks=tuple(built),
        defaults=defaults,
        **journal,
        alerts=alerts,
        **api,
        **extra,
    )


API_SOURCE = "api"  # the ``source`` of a webhook made through the API; a file's: "FILE:LINE"
# Secrets an API-made webhook may not name: they would read the router's machine for a caller.
_OPERATORS_SECRETS = tuple(k for k in SECRET_KEYS if k != "secret")


class Invalid(RouterError):
    """A webhook sent to the API is invalid: ``problems`` holds every (key path, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


def api_webhook(doc: Mapping[str, Any], cfg: Config) -> WebhookConfig:
    """One webhook as the API received it, checked and built as a file's webhook is, with
    ``cfg``'s ``defaults:`` and ``alerts:``.

    The same schema and the same messages, with the body's key paths (``retry.attempts``,
    ``match[0].events``). Its secret is its own: a shared secret in ``defaults`` is not
    given to it, and of the secret keys only ``secret`` is taken. Raises ``Invalid``.
    """
    defaults = cfg.defaults
    problems: list[tuple[str, str]] = []
    f = File("api", os.getcwd(), {}, [], 0, problems)
    for key in _OPERATORS_SECRETS:
        if key in doc:
            problems.append((key, "a webhook made through the API takes its signing key as "
                             "`secret` (or none, to get one generated)"))  # fmt: skip
    doc = {k: v for k, v in doc.items() if k not in _OPERATORS_SECRETS}
    node = yaml.compose(yaml.safe_dump(doc, sort_keys=False), Loader=yaml.SafeLoader)
    checked = f.check(ONE_WEBHOOK, node, "")
    hook = None
    if checked is not BAD:
        own = {k: v for k, v in defaults.items() if k not in SECRET_KEYS}
        hook = _webhook(f, "", checked, own, {})
    if hook is not None and hook.alert_email and cfg.alerts.email is None:
        problems.append(("alert_email", ALERT_EMAIL_NEEDS))
    if problems or hook is None:
        raise Invalid(problems or [("", "expected a webhook")])
    return replace(hook, source=API_SOURCE)


def check(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every error in the config at ``path``, none when it is valid: ``webhook-router check``."""
    try:
        load(path, env)
    except ConfigError as e:
        return e.errors
    return []
