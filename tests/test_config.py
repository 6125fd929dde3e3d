"""The config loader: defaults, value forms, paths, secrets, subscriptions, located errors."""

from __future__ import annotations

import base64
import os
import re
import socket
import textwrap
from pathlib import Path

import pytest

from router import ConfigError, config
from router.config import (
    Config,
    HealthConfig,
    IngestConfig,
    RateLimit,
    RetryConfig,
    WebhookConfig,
    check,
    load,
)
from router.rules import OPERATORS, AllOf, AnyOf, Cond, Not, Rule
from router.schema import _OPERANDS

REPO = Path(__file__).resolve().parent.parent
KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
PLAIN_SECRET = "correct-horse-battery-staple"

# A valid webhook (lines 2-4 of a file that starts with `webhooks:`).
HOOK = f"""
webhooks:
  - name: crm
    url: https://crm.example.com/hook
    secret: {WHSEC}
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own directory, so file names in messages are short and exact."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: str | Path, text: str) -> str:
    """Write dedented ``text`` so that its first non-blank line is line 1."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def load_text(text: str, env: dict[str, str] | None = None) -> Config:
    return load(write("router.yaml", text), env={} if env is None else env)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, env)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def hook(text: str) -> WebhookConfig:
    """The single webhook of a file made of ``HOOK`` plus ``text`` (indented as its keys)."""
    (webhook,) = load_text(HOOK + _keys(text)).webhooks
    return webhook


def hook_errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    """Errors of ``HOOK`` plus ``text``; ``text`` starts on line 5."""
    return errors_of(HOOK + _keys(text), env)


def _keys(text: str) -> str:
    return textwrap.indent(textwrap.dedent(text).lstrip("\n"), "    ")


# --------------------------------------------------------------------------- defaults


def test_an_empty_file_gives_every_default(in_tmp):
    config = load_text("")
    assert config.path == str(in_tmp / "router.yaml")
    assert config.state_dir == str(in_tmp / "var")
    assert config.control_bind == f"ipc://{in_tmp}/var/control.sock"
    assert config.retention == 7 * 86400
    assert config.shutdown_timeout == 10
    assert config.ingest == IngestConfig(
        bind="tcp://127.0.0.1:5555", ack_bind="tcp://127.0.0.1:5556", max_event_bytes=2**20
    )
    assert config.metrics_bind == ("127.0.0.1", 9464)
    assert config.delivery_workers == 64
    assert config.webhooks == ()


def test_a_minimal_webhook_gets_the_documented_defaults():
    webhook = hook("")
    assert webhook.rules == (Rule(source="router.yaml:2"),)
    assert webhook.secrets == (KEY,)
    assert (webhook.enabled, webhook.timeout, webhook.max_in_flight) == (True, 7.0, 4)
    assert webhook.retry == RetryConfig(5, (10.0, 60.0, 300.0, 1800.0))
    assert (webhook.ordered, webhook.rate_limit, webhook.headers) == (False, None, ())
    assert (webhook.signature, webhook.signature_header) == ("standard", "X-Signature")
    assert webhook.allow_private_networks is False
    assert webhook.health == HealthConfig(None)
    assert webhook.source == "router.yaml:2"


def test_every_webhook_key_is_parsed():
    webhook = hook("""
        enabled: false
        timeout: 1500ms
        retry: {attempts: 3, backoff: [1s, 2m]}
        max_in_flight: 10
        ordered: true
        rate_limit: 50/s
        headers: {X-Team: blue, Authorization: "Bearer t"}
        signature: hmac-sha256-hex
        signature_header: X-Hub-Signature
        allow_private_networks: true
        health: {probe_interval: 5m}
    """)
    assert webhook.enabled is False
    assert webhook.timeout == 1.5
    assert webhook.retry == RetryConfig(3, (1.0, 120.0))
    assert (webhook.max_in_flight, webhook.ordered) == (10, True)
    assert webhook.rate_limit == RateLimit(50.0, 1.0)
    assert webhook.headers == (("X-Team", "blue"), ("Authorization", "Bearer t"))
    assert (webhook.signature, webhook.signature_header) == ("hmac-sha256-hex", "X-Hub-Signature")
    assert webhook.allow_private_networks is True
    assert webhook.health == HealthConfig(300.0)


@pytest.mark.parametrize(("text", "limit"), [("10/s", (10, 1)), ("600/m", (600, 60)),
                                             ("2.5/h", (2.5, 3600)), ("null", None)])  # fmt: skip
def test_rate_limits_are_a_count_per_second_minute_or_hour(text, limit):
    assert hook(f"rate_limit: {text}").rate_limit == (limit and RateLimit(*limit))


def test_defaults_apply_to_every_webhook_and_a_webhook_overrides_them():
    config = load_text(f"""
        defaults:
          timeout: 3s
          ordered: true
          headers: {{X-From: defaults}}
          signature: none
        webhooks:
          - {{name: a, url: "https://a.example/"}}
          - {{name: b, url: "https://b.example/", timeout: 9s, headers: {{X-Own: b}},
              signature: standard, secret: {WHSEC}}}
    """)
    a, b = config.webhooks
    assert (a.timeout, a.ordered, a.signature) == (3.0, True, "none")
    assert a.headers == (("X-From", "defaults"),)
    assert (b.timeout, b.ordered, b.signature) == (9.0, True, "standard")
    assert b.headers == (("X-Own", "b"),)


def test_retry_and_health_merge_with_defaults_key_by_key():
    config = load_text("""
        defaults:
          retry: {attempts: 8}
          health: {probe_interval: 1m}
          signature: none
        webhooks:
          - {name: a, url: "https://a.example/", retry: {backoff: [1s]}}
          - name: b
            url: https://b.example/
            retry: {attempts: 2}
            health: {probe_interval: null}
    """)
    a, b = config.webhooks
    assert a.retry == RetryConfig(8, (1.0,))
    assert a.health == HealthConfig(60.0)
    assert b.retry == RetryConfig(2, RetryConfig().backoff)
    assert b.health == HealthConfig(None)


def test_identity_and_subscription_keys_cannot_be_defaults():
    assert errors_of("""
        defaults:
          url: https://x.example/
          events: [A]
    """) == [
        "router.yaml:2: defaults.url: cannot be set in defaults; set it on each webhook",
        "router.yaml:3: defaults.events: cannot be set in defaults; set it on each webhook",
    ]


def test_a_shared_secret_in_defaults_signs_every_webhook_that_has_none():
    config = load_text("""
        defaults:
          secret: whsec_c2hhcmVk
        webhooks:
          - {name: a, url: "https://a.example/"}
          - {name: b, url: "https://b.example/", secret: own-secret}
    """)
    a, b = config.webhooks
    assert a.secrets == (b"shared",)
    assert b.secrets == (b"own-secret",)


# --------------------------------------------------------------------------- durations and sizes


def test_durations_and_sizes_in_the_file_are_parsed():
    config = load_text("""
        retention: 2h
        shutdown_timeout: 500ms
        ingest: {bind: "tcp://127.0.0.1:7000", max_event_bytes: 512KiB}
    """)
    assert (config.retention, config.shutdown_timeout) == (7200.0, 0.5)
    assert config.ingest.max_event_bytes == 512 * 1024


def test_bad_values_are_reported_with_file_line_and_key():
    assert errors_of("""
        retention: 0
        shutdown_timeout: soon
        ingest:
          bind: tcp://127.0.0.1:5555
          max_event_bytes: lots
        delivery_workers: 0
    """) == [
        "router.yaml:1: retention: must be more than 0",
        "router.yaml:2: shutdown_timeout: invalid duration 'soon': write seconds or a number "
        "with ms, s, m, h or d (500ms, 10s, 5m, 2h, 7d)",
        "router.yaml:5: ingest.max_event_bytes: invalid size 'lots': write bytes or a number "
        "with KiB, MiB or GiB (512KiB)",
        "router.yaml:6: delivery_workers: expected an integer from 1 to 4096",
    ]


# --------------------------------------------------------------------------- sockets and metrics


def test_an_ingest_section_turns_off_the_socket_it_leaves_out():
    config = load_text("ingest:\n  ack_bind: tcp://127.0.0.1:6000\n")
    assert (config.ingest.bind, config.ingest.ack_bind) == (None, "tcp://127.0.0.1:6000")
    config = load_text("ingest:\n  bind: tcp://127.0.0.1:6001\n  ack_bind: null\n")
    assert (config.ingest.bind, config.ingest.ack_bind) == ("tcp://127.0.0.1:6001", None)


def test_an_ingest_section_without_any_socket_is_an_error():
    assert errors_of("state_dir: v\ningest:\n  max_event_bytes: 1KiB\n") == [
        "router.yaml:2: ingest: set bind, ack_bind or both to let events in"
    ]


def test_addresses_must_be_tcp_or_ipc_and_a_public_tcp_bind_is_allowed():
    config = load_text("ingest: {bind: 'tcp://0.0.0.0:5555', ack_bind: 'tcp://[::1]:*'}")
    assert config.ingest.bind == "tcp://0.0.0.0:5555"
    assert errors_of("ingest: {bind: 'udp://127.0.0.1:5555', ack_bind: 'tcp://127.0.0.1'}") == [
        "router.yaml:1: ingest.bind: invalid address 'udp://127.0.0.1:5555': "
        "write tcp://HOST:PORT or ipc://PATH",
        "router.yaml:1: ingest.ack_bind: invalid address 'tcp://127.0.0.1': "
        "write tcp://HOST:PORT or ipc://PATH",
    ]


def test_metrics_bind_is_host_and_port_or_null_for_off():
    assert load_text("metrics: {bind: '0.0.0.0:9000'}").metrics_bind == ("0.0.0.0", 9000)
    assert load_text("metrics: {bind: '[::1]:9000'}").metrics_bind == ("::1", 9000)
    assert load_text("metrics: {bind: null}").metrics_bind is None
    assert errors_of("metrics:\n  bind: 9464\n") == [
        "router.yaml:2: metrics.bind: invalid address 9464: "
        "write HOST:PORT (127.0.0.1:9464), or null for off"
    ]


def test_metrics_null_turns_the_whole_http_server_off():
    assert load_text("metrics: null\n").metrics_bind is None
    assert load_text("metrics:\n").metrics_bind is None  # an empty value is null in YAML
    assert load_text("metrics: {}\n").metrics_bind == ("127.0.0.1", 9464)
    assert load_text("state_dir: v\n").metrics_bind == ("127.0.0.1", 9464)


def test_an_abstract_control_socket_is_refused_since_every_local_user_could_reach_it():
    assert errors_of("control:\n  bind: ipc://@webhook-router\n") == [
        "router.yaml:2: control.bind: an abstract socket (ipc://@…) has no file permissions, so "
        "every local user could disable webhooks and replay events; use an ipc:// path (made "
        "owner-only, mode 0600)"
    ]
    assert load_text("ingest: {bind: 'ipc://@in'}").ingest.bind == "ipc://@in"  # producers: open


# --------------------------------------------------------------------------- relative paths


def test_relative_paths_resolve_against_the_config_files_directory(in_tmp):
    write("conf/keys/server.key_secret", "x")
    (in_tmp / "conf/clients").mkdir()
    write("conf/secret.txt", PLAIN_SECRET)
    config = load(write("conf/router.yaml", """
        state_dir: ../var
        ingest:
          bind: ipc://sockets/in.sock
          ack_bind: tcp://127.0.0.1:5556
          curve: {secret_key_file: keys/server.key_secret, authorized_keys_dir: ./clients}
        webhooks:
          - {name: a, url: "https://a.example/", secret_file: secret.txt}
    """), env={})  # fmt: skip
    assert config.path == str(in_tmp / "conf/router.yaml")
    assert config.state_dir == str(in_tmp / "var")
    assert config.control_bind == f"ipc://{in_tmp}/var/control.sock"
    assert config.ingest.bind == f"ipc://{in_tmp}/conf/sockets/in.sock"
    assert config.ingest.curve.secret_key_file == str(in_tmp / "conf/keys/server.key_secret")
    assert config.ingest.curve.authorized_keys_dir == str(in_tmp / "conf/clients")
    assert config.webhooks[0].secrets == (PLAIN_SECRET.encode(),)


def test_absolute_paths_and_an_explicit_control_bind_are_kept(in_tmp):
    config = load_text(f"state_dir: {in_tmp}/state\ncontrol: {{bind: 'ipc://./ctl.sock'}}\n")
    assert config.state_dir == str(in_tmp / "state")
    assert config.control_bind == f"ipc://{in_tmp}/ctl.sock"


def test_missing_curve_files_are_reported_with_their_resolved_path(in_tmp):
    assert errors_of("""
        ingest:
          bind: tcp://127.0.0.1:5555
          curve:
            secret_key_file: nope.key
            authorized_keys_dir: clients
    """) == [
        f"router.yaml:4: ingest.curve.secret_key_file: no such file: {in_tmp}/nope.key",
        f"router.yaml:5: ingest.curve.authorized_keys_dir: no such directory: {in_tmp}/clients",
    ]


# --------------------------------------------------------------------------- include


def test_included_files_add_webhooks_in_name_order(in_tmp):
    write("conf/conf.d/20-b.yaml", "- {name: b2, url: 'https://b.example/', signature: none}\n")
    two = """
        - {name: a1, url: "https://a.example/1", signature: none}
        - {name: a2, url: "https://a.example/2", signature: none}
    """
    write("conf/conf.d/10-a.yaml", two)
    write("conf/conf.d/ignored.yml", "- {name: nope, url: 'https://n.example/'}\n")
    write("conf/conf.d/30-empty.yaml", "# nothing here yet\n")
    config = load(write("conf/router.yaml", """
        include: ./conf.d
        webhooks:
          - {name: main, url: "https://m.example/", signature: none}
    """), env={})  # fmt: skip
    assert [w.name for w in config.webhooks] == ["main", "a1", "a2", "b2"]
    assert [w.source for w in config.webhooks] == [
        "conf/router.yaml:3",
        "conf/conf.d/10-a.yaml:1",
        "conf/conf.d/10-a.yaml:2",
        "conf/conf.d/20-b.yaml:1",
    ]


def test_errors_in_included_files_name_that_file_and_index_within_it():
    included = """
        - name: dup
          url: https://a.example/
          signature: none
        - name: ok
          url: https://b.example/
          timeout: forever
          signature: none
    """
    write("conf.d/a.yaml", included)
    write("conf.d/b.yaml", "name: not-a-list\n")
    assert errors_of("""
        include: conf.d
        webhooks:
          - {name: dup, url: "https://m.example/", signature: none}
    """) == [
        "conf.d/a.yaml:1: webhooks[0].name: duplicate webhook name 'dup'; "
        "first defined at router.yaml:3",
        "conf.d/a.yaml:6: webhooks[1].timeout: invalid duration 'forever': write seconds or a "
        "number with ms, s, m, h or d (500ms, 10s, 5m, 2h, 7d)",
        "conf.d/b.yaml:1: webhooks: expected a list of webhooks, not a mapping",
    ]


def test_a_missing_include_directory_is_an_error(in_tmp):
    assert errors_of("include: conf.d\n") == [
        f"router.yaml:1: include: no such directory: {in_tmp}/conf.d"
    ]


# --------------------------------------------------------------------------- secrets


def test_a_whsec_secret_decodes_to_its_base64_bytes_and_others_are_utf8():
    assert hook("").secrets == (KEY,)
    config = load_text(f"""
        webhooks:
          - {{name: a, url: "https://a.example/", secret: {PLAIN_SECRET}}}
          - {{name: b, url: "https://b.example/", secret: ["{WHSEC}", "clé"]}}
    """)
    assert config.webhooks[0].secrets == (PLAIN_SECRET.encode(),)
    assert config.webhooks[1].secrets == (KEY, "clé".encode())


def test_secret_env_may_hold_several_secrets_newest_first():
    config = load_text(
        "webhooks:\n  - {name: a, url: 'https://a.example/', secret_env: CRM_SECRET}\n",
        env={"CRM_SECRET": f"{WHSEC}  old-secret\n"},
    )
    assert config.webhooks[0].secrets == (KEY, b"old-secret")


def test_secret_file_may_hold_several_secrets():
    write("secrets/crm", f"{WHSEC}\nold-secret\n")
    config = load_text("webhooks: [{name: a, url: 'https://a.example/', secret_file: secrets/crm}]")
    assert config.webhooks[0].secrets == (KEY, b"old-secret")


def test_secret_credential_reads_the_systemd_credentials_directory(in_tmp):
    write("creds/crm", f"{WHSEC} old-secret\n")
    text = "webhooks: [{name: a, url: 'https://a.example/', secret_credential: crm}]"
    config = load_text(text, env={"CREDENTIALS_DIRECTORY": str(in_tmp / "creds")})
    assert config.webhooks[0].secrets == (KEY, b"old-secret")


def test_a_missing_credentials_directory_or_credential_is_explained(in_tmp):
    (in_tmp / "creds").mkdir()
    text = f"""
        webhooks:
          - {{name: a, url: "https://a.example/", secret_credential: crm}}
          - {{name: b, url: "https://b.example/", secret_credential: ../crm}}
          - {{name: c, url: "https://c.example/", secret_credential: "{WHSEC}"}}
    """  # fmt: skip
    assert errors_of(text) == [
        "router.yaml:2: webhooks[0].secret_credential: credential crm: CREDENTIALS_DIRECTORY is "
        "not set; under systemd add LoadCredential=crm:/PATH to the unit, elsewhere set it to the "
        "credentials directory",
        "router.yaml:3: webhooks[1].secret_credential: invalid credential name '../crm': write "
        "the NAME of LoadCredential=NAME:…",
        "router.yaml:4: webhooks[2].secret_credential: this looks like a secret, not a name "
        "(it is not shown); use secret:",
    ]
    assert errors_of(text, env={"CREDENTIALS_DIRECTORY": str(in_tmp / "creds")})[0] == (
        f"router.yaml:2: webhooks[0].secret_credential: credential crm: no file "
        f"{in_tmp}/creds/crm; is LoadCredential=crm:/PATH in the unit?"
    )


def test_secret_errors_name_the_problem_but_never_the_secret(in_tmp):
    bad_whsec = "whsec_not*base64*" + PLAIN_SECRET
    write("binary.secret", "")
    Path("binary.secret").write_bytes(b"\xff\xfe" + PLAIN_SECRET.encode())
    errors = errors_of(f"""
        webhooks:
          - {{name: a, url: "https://a.example/", secret: "{bad_whsec}"}}
          - {{name: b, url: "https://b.example/", secret_env: CRM_SECRET}}
          - {{name: c, url: "https://c.example/", secret_env: BAD_SECRET}}
          - {{name: d, url: "https://d.example/", secret_file: missing.secret}}
          - {{name: e, url: "https://e.example/", secret_file: binary.secret}}
          - {{name: f, url: "https://f.example/", secret: [{PLAIN_SECRET}, 42]}}
          - {{name: g, url: "https://g.example/", secret: {PLAIN_SECRET}, secret_env: OK_SECRET}}
          - {{name: h, url: "https://h.example/", secret_env: "{WHSEC}"}}
          - {{name: i, url: "https://i.example/", secret_file: "{WHSEC}"}}
    """, env={"BAD_SECRET": f"{PLAIN_SECRET} whsec_{PLAIN_SECRET}?", "OK_SECRET": "o"})  # fmt: skip
    assert errors == [
        "router.yaml:2: webhooks[0].secret: the secret is not valid base64 after 'whsec_' "
        "(the secret is not shown)",
        "router.yaml:3: webhooks[1].secret_env: environment variable CRM_SECRET is not set",
        "router.yaml:4: webhooks[2].secret_env: secret 2 in environment variable BAD_SECRET "
        "is not valid base64 after 'whsec_' (the secret is not shown)",
        f"router.yaml:5: webhooks[3].secret_file: cannot read {in_tmp}/missing.secret: "
        "No such file or directory",
        f"router.yaml:6: webhooks[4].secret_file: {in_tmp}/binary.secret is not UTF-8 text",
        "router.yaml:7: webhooks[5].secret[1]: expected a secret string "
        "(whsec_<base64> or plain text)",
        "router.yaml:8: webhooks[6].secret_env: set only one of secret, secret_env, secret_file, "
        "secret_credential (found secret, secret_env)",
        "router.yaml:9: webhooks[7].secret_env: this looks like a secret, not a name "
        "(it is not shown); use secret:",
        "router.yaml:10: webhooks[8].secret_file: this looks like a secret, not a name "
        "(it is not shown); use secret:",
    ]
    for text in errors:
        assert PLAIN_SECRET not in text
        assert WHSEC[6:] not in text
        assert "base64*" not in text


def test_a_signed_webhook_needs_a_secret_and_an_unsigned_one_does_not():
    assert hook("signature: hmac-sha256-hex\n").signature == "hmac-sha256-hex"
    text = "webhooks:\n  - name: a\n    url: https://a.example/\n"
    assert errors_of(text) == [
        "router.yaml:2: webhooks[0].secret: is required for signature 'standard': "
        "set secret, secret_env, secret_file or secret_credential"
    ]
    assert errors_of(text + "    signature: hmac-sha256-hex\n") == [
        "router.yaml:2: webhooks[0].secret: is required for signature 'hmac-sha256-hex': "
        "set secret, secret_env, secret_file or secret_credential"
    ]
    assert load_text(text + "    signature: none\n").webhooks[0].secrets == ()


def test_the_repr_of_a_webhook_does_not_show_its_secret():
    webhook = hook("")
    assert "secret" not in repr(webhook)
    assert repr(KEY) not in repr(webhook)
    assert repr(KEY) not in repr(load_text(HOOK))


# --------------------------------------------------------------------------- webhook keys


def test_webhook_names_and_urls_are_required_and_checked():
    assert errors_of("""
        webhooks:
          - secret: s
          - name: Crm Sync
            url: ftp://crm.example/
            secret: s
          - name: x
            url: "https:///nohost"
            secret: s
          - name: toolong-toolong-toolong-toolong-toolong-toolong-toolong-toolong-x
            url: https://x.example:99999/
            secret: s
    """) == [
        "router.yaml:2: webhooks[0].name: is required",
        "router.yaml:2: webhooks[0].url: is required",
        "router.yaml:3: webhooks[1].name: expected 1-64 characters of a-z, 0-9, '_' and '-'",
        "router.yaml:4: webhooks[1].url: expected an http:// or https:// URL with a host",
        "router.yaml:7: webhooks[2].url: expected an http:// or https:// URL with a host",
        "router.yaml:9: webhooks[3].name: expected 1-64 characters of a-z, 0-9, '_' and '-'",
        "router.yaml:10: webhooks[3].url: expected an http:// or https:// URL with a host",
    ]


def test_webhook_names_must_be_unique():
    assert errors_of("""
        webhooks:
          - {name: a, url: "https://a.example/", signature: none}
          - {name: a, url: "https://b.example/", signature: none}
    """) == [
        "router.yaml:3: webhooks[1].name: duplicate webhook name 'a'; "
        "first defined at router.yaml:2"
    ]


def test_webhook_tunables_are_range_checked():
    assert hook_errors("""
        enabled: yes please
        timeout: 0s
        retry: {attempts: 101, backoff: []}
        max_in_flight: 1001
        ordered: 1
        rate_limit: fast
        signature: hmac-sha256
        signature_header: "bad header"
        health: {probe_interval: 0}
    """) == [
        "router.yaml:5: webhooks[0].enabled: expected true or false",
        "router.yaml:6: webhooks[0].timeout: must be more than 0",
        "router.yaml:7: webhooks[0].retry.attempts: expected an integer from 1 to 100",
        "router.yaml:7: webhooks[0].retry.backoff: must not be empty",
        "router.yaml:8: webhooks[0].max_in_flight: expected an integer from 1 to 1000",
        "router.yaml:9: webhooks[0].ordered: expected true or false",
        "router.yaml:10: webhooks[0].rate_limit: invalid rate 'fast': "
        "write COUNT/s, COUNT/m or COUNT/h (50/s), or null",
        "router.yaml:11: webhooks[0].signature: expected one of standard, hmac-sha256-hex, none; "
        "did you mean 'hmac-sha256-hex'?",
        "router.yaml:12: webhooks[0].signature_header: expected an HTTP header name "
        "(letters, digits and '-')",
        "router.yaml:13: webhooks[0].health.probe_interval: must be more than 0",
    ]


@pytest.mark.parametrize("name", ["Content-Type", "user-agent", "WEBHOOK-ID", "webhook-timestamp",
                                  "Webhook-Signature", "webhook-attempt"])  # fmt: skip
def test_reserved_headers_are_refused_whatever_their_case(name):
    assert hook_errors(f"headers: {{{name}: x}}\n") == [
        f"router.yaml:5: webhooks[0].headers.{name}: {name} is set by the router "
        "and cannot be configured"
    ]


def test_header_values_must_be_strings_and_names_unique():
    assert hook_errors("headers:\n  X-Version: 2\n  X-A: a\n  x-a: b\n") == [
        "router.yaml:6: webhooks[0].headers.X-Version: expected a string without line breaks "
        "(quote numbers)",
        "router.yaml:8: webhooks[0].headers.x-a: duplicate header (names ignore case)",
    ]


# --------------------------------------------------------------------------- private addresses


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "a loopback"), ("[::1]", "a loopback"), ("localhost", "a loopback"),
    ("10.1.2.3", "a private"), ("192.168.0.10", "a private"), ("[fd00::1]", "a private"),
    ("169.254.169.254", "a link-local"), ("[fe80::1]", "a link-local"),
    ("0.0.0.0", "an unspecified"), ("224.0.0.1", "a multicast"), ("240.0.0.1", "a reserved"),
    ("[::ffff:127.0.0.1]", "a loopback"), ("100.64.0.1", "a non-public"),
])  # fmt: skip
def test_literal_private_addresses_are_refused(host, kind):
    text = f"webhooks:\n  - {{name: a, url: 'http://{host}:8080/x', signature: none}}\n"
    assert errors_of(text) == [
        f"router.yaml:2: webhooks[0].url: {host.strip('[]')} is {kind} address; "
        "set allow_private_networks: true to allow it"
    ]


def test_the_refusal_points_at_the_url_line():
    text = f"webhooks:\n  - name: a\n    secret: {WHSEC}\n    url: http://127.0.0.1:8080/\n"
    assert errors_of(text) == [
        "router.yaml:4: webhooks[0].url: 127.0.0.1 is a loopback address; "
        "set allow_private_networks: true to allow it"
    ]


def test_private_addresses_are_allowed_with_the_flag_on_the_webhook_or_in_defaults():
    config = load_text("""
        webhooks:
          - {name: a, url: "http://127.0.0.1:8080/", secret: x, allow_private_networks: true}
    """)
    assert config.webhooks[0].url == "http://127.0.0.1:8080/"
    config = load_text(f"""
        defaults: {{allow_private_networks: true}}
        webhooks:
          - {{name: a, url: "http://10.0.0.1/", secret: {WHSEC}}}
    """)
    assert config.webhooks[0].allow_private_networks is True


def test_hostnames_and_public_addresses_are_left_to_connect_time():
    config = load_text("""
        defaults: {signature: none}
        webhooks:
          - {name: a, url: "http://internal.example.lan/"}
          - {name: b, url: "https://93.184.216.34/"}
          - {name: c, url: "https://[2606:4700::1111]:8443/"}
    """)
    assert [w.name for w in config.webhooks] == ["a", "b", "c"]


# --------------------------------------------------------------------------- subscriptions


def test_top_level_subscription_keys_make_one_rule():
    (webhook,) = load_text(f"""
        webhooks:
          - name: crm
            url: https://crm.example.com/
            secret: {WHSEC}
            events: [TODO_CREATED, "TODO_*", "C?[a-z]"]
            projects: [p1, p2]
            companies: []
            where: {{field: data.priority, eq: high}}
    """).webhooks
    assert webhook.rules == (
        Rule(
            events=("TODO_CREATED", "TODO_*", "C?[a-z]"),
            projects=frozenset({"p1", "p2"}),
            companies=frozenset(),
            where=Cond("data.priority", "eq", "high", ("data", "priority"), "router.yaml:8"),
            source="router.yaml:2",
        ),
    )


def test_match_makes_one_rule_per_item():
    webhook = hook("""
        match:
          - {events: ["COMMENT_*"], projects: [p1]}
          - events: [TODO_DELETED]
            companies: [globex]
            where: {field: data.tags.0, exists: true}
    """)
    assert webhook.rules == (
        Rule(events=("COMMENT_*",), projects=frozenset({"p1"}), source="router.yaml:6"),
        Rule(
            events=("TODO_DELETED",),
            companies=frozenset({"globex"}),
            where=Cond("data.tags.0", "exists", True, ("data", "tags", "0"), "router.yaml:9"),
            source="router.yaml:7",
        ),
    )


def test_match_cannot_be_combined_with_top_level_subscription_keys():
    assert hook_errors("events: [A]\nmatch:\n  - {events: [B]}\nwhere: {field: id, eq: x}\n") == [
        "router.yaml:6: webhooks[0].match: cannot be combined with events, where on the webhook; "
        "put them in each match rule"
    ]


def test_match_must_be_a_non_empty_list_of_known_rule_keys():
    assert hook_errors("match: []\n") == ["router.yaml:5: webhooks[0].match: must not be empty"]
    assert hook_errors("match:\n  - {event: [A], projects: [1]}\n") == [
        "router.yaml:6: webhooks[0].match[0].event: unknown key; did you mean 'events'?",
        "router.yaml:6: webhooks[0].match[0].projects[0]: expected a non-empty string "
        "(quote numbers and true/false)",
    ]


def test_where_combinators_build_nested_predicates():
    webhook = hook("""
        where:
          any:
            - all:
                - {field: type, prefix: TODO_}
                - not: {field: company, in: [acme, 3, null]}
            - {field: data.n, gte: 2.5}
    """)
    assert webhook.rules[0].where == AnyOf(
        (
            AllOf(
                (
                    Cond("type", "prefix", "TODO_", ("type",), "router.yaml:8"),
                    Not(Cond("company", "in", ("acme", 3, None), ("company",), "router.yaml:9"),
                        "router.yaml:9"),
                ),
                "router.yaml:7",
            ),
            Cond("data.n", "gte", 2.5, ("data", "n"), "router.yaml:10"),
        ),
        "router.yaml:6",
    )  # fmt: skip


def test_operands_are_checked_for_every_operator():
    assert set(_OPERANDS) == set(OPERATORS)


@pytest.mark.parametrize(("op", "operand", "value"), [
    ("eq", "hi", "hi"), ("eq", "3", 3), ("eq", "null", None), ("ne", "false", False),
    ("ne", "1.5", 1.5), ("eq", "2024-01-02", "2024-01-02"), ("in", "[a, 1]", ("a", 1)),
    ("nin", "[x]", ("x",)), ("exists", "false", False), ("gt", "3", 3), ("gte", "b", "b"),
    ("lt", "0.5", 0.5), ("lte", "'2024'", "2024"), ("prefix", "TODO_", "TODO_"),
    ("glob", "'*.x'", "*.x"),
])  # fmt: skip
def test_valid_operands_are_kept(op, operand, value):
    cond = hook(f"where: {{field: data.x, {op}: {operand}}}\n").rules[0].where
    assert (cond.op, cond.value, cond.path) == (op, value, ("data", "x"))


def test_a_regex_operand_is_compiled():
    cond = hook("where: {field: data.x, regex: '^a+$'}\n").rules[0].where
    assert cond.value == re.compile("^a+$")


@pytest.mark.parametrize(("op", "operand", "message"), [
    ("eq", "[1]", ": expected a single value, not a list"),
    ("ne", "{a: 1}", ": expected a single value, not a mapping"),
    ("in", "[]", ": must not be empty"),
    ("in", "x", ": expected a list, not a single value"),
    ("nin", "[[1]]", "[0]: expected a single value, not a list"),
    ("exists", "1", ": expected true or false"),
    ("gt", "true", ": expected a number or a string"),
    ("gte", "null", ": expected a number or a string"),
    ("lt", "[1]", ": expected a number or a string, not a list"),
    ("lte", "false", ": expected a number or a string"),
    ("prefix", "1", ": expected a string (quote numbers and true/false)"),
    ("glob", "null", ": expected a string (quote numbers and true/false)"),
    ("regex", "'(a'", ": invalid regular expression: missing ), unterminated subpattern at pos"
                      "ition 0"),
    ("regex", "3", ": expected a string (quote numbers and true/false)"),
])  # fmt: skip
def test_bad_operands_are_refused_with_their_path(op, operand, message):
    """``message`` follows the operator's key path (an item of a list adds its index)."""
    (error,) = hook_errors(f"where: {{field: data.x, {op}: {operand}}}\n")
    assert error == f"router.yaml:5: webhooks[0].where.{op}{message}"


def test_where_structure_errors_are_located_and_explained():
    assert hook_errors("""
        where:
          all:
            - {field: data.x, eq: 1, gt: 2}
            - {field: data.x, eqq: 1}
            - any: []
            - not: {field: dta.x, eq: 1}
            - {field: type.sub, exists: true}
            - {field: "data..x", exists: true}
            - {eq: 1}
            - {field: data.x}
            - {all: [{field: id, eq: 1}], any: [{field: id, eq: 2}]}
            - {fild: data.x, eq: 1}
            - all: []
            - plain
    """) == [
        "router.yaml:7: webhooks[0].where.all[0]: a condition takes one operator, found eq, gt; "
        "use all: [...]",
        "router.yaml:8: webhooks[0].where.all[1].eqq: unknown operator; did you mean 'eq'?",
        "router.yaml:9: webhooks[0].where.all[2].any: must not be empty",
        "router.yaml:10: webhooks[0].where.all[3].not.field: unknown field 'dta': use type, id, "
        "company, project, timestamp or data.…; did you mean 'data'?",
        "router.yaml:11: webhooks[0].where.all[4].field: type has no sub-fields; "
        "only data.… paths go deeper",
        "router.yaml:12: webhooks[0].where.all[5].field: invalid field 'data..x': "
        "empty segment in the dotted path",
        "router.yaml:13: webhooks[0].where.all[6]: a condition needs 'field' "
        "(a dotted path such as data.priority)",
        "router.yaml:14: webhooks[0].where.all[7]: a condition needs one operator: "
        "eq, ne, in, nin, exists, gt, gte, lt, lte, prefix, glob, regex",
        "router.yaml:15: webhooks[0].where.all[8]: 'all' must stand alone; found all, any",
        "router.yaml:16: webhooks[0].where.all[9].fild: unknown key; did you mean 'field'?",
        "router.yaml:17: webhooks[0].where.all[10].all: must not be empty",
        "router.yaml:18: webhooks[0].where.all[11]: expected {field: PATH, OPERATOR: VALUE} "
        "or one of all, any, not",
    ]


# --------------------------------------------------------------------------- file-level errors


def test_unknown_keys_anywhere_get_a_did_you_mean():
    assert errors_of(f"""
        retension: 7d
        ingest: {{bindd: "tcp://127.0.0.1:1"}}
        metric: {{bind: null}}
        zzz: 1
        webhooks:
          - name: a
            url: https://a.example/
            secret: {WHSEC}
            retyr: {{attempts: 2}}
            retry: {{attempt: 2}}
    """) == [
        "router.yaml:1: retension: unknown key; did you mean 'retention'?",
        "router.yaml:2: ingest.bindd: unknown key; did you mean 'bind'?",
        "router.yaml:2: ingest: set bind, ack_bind or both to let events in",
        "router.yaml:3: metric: unknown key; did you mean 'metrics'?",
        "router.yaml:4: zzz: unknown key",
        "router.yaml:9: webhooks[0].retyr: unknown key; did you mean 'retry'?",
        "router.yaml:10: webhooks[0].retry.attempt: unknown key; did you mean 'attempts'?",
    ]


def test_every_error_in_the_file_is_reported_at_once_in_line_order():
    errors = errors_of("""
        webhooks:
          - name: a
            url: http://127.0.0.1/
            timeout: -1
          - name: b
            url: https://b.example/
            signature: none
            max_in_flight: 0
        retention: forever
        state_dir: ./var
        state_dir: ./other
    """)
    assert [e.split(": ")[0] for e in errors] == [
        "router.yaml:2",  # a: secret required
        "router.yaml:3",  # a: loopback url
        "router.yaml:4",  # a: timeout
        "router.yaml:8",  # b: max_in_flight
        "router.yaml:9",  # retention
        "router.yaml:11",  # duplicate key
    ]
    assert errors[-1] == "router.yaml:11: state_dir: duplicate key"


def test_wrong_shapes_are_reported_not_crashed_on():
    assert errors_of("- a\n- b\n") == ["router.yaml:1: config: expected a mapping, not a list"]
    assert errors_of("ingest: [1]\nwebhooks: {a: 1}\ndefaults: 3\n") == [
        "router.yaml:1: ingest: expected a mapping, not a list",
        "router.yaml:2: webhooks: expected a list of webhooks, not a mapping",
        "router.yaml:3: defaults: expected a mapping, not a single value",
    ]
    assert errors_of("webhooks:\n  - just-a-name\n") == [
        "router.yaml:2: webhooks[0]: expected a mapping, not a single value"
    ]


def test_yaml_syntax_errors_are_located():
    assert errors_of("retention: 7d\ningest: [tcp://x\nmetrics: {}\n") == [
        "router.yaml:3: yaml: expected ',' or ']', but got ':' (while parsing a flow sequence)"
    ]
    assert errors_of("a: 1\n\tb: 2\n")[0].startswith("router.yaml:2: yaml: ")


def test_a_missing_file_is_a_clear_config_error():
    with pytest.raises(ConfigError) as caught:
        load("nowhere/router.yaml")
    assert caught.value.errors == [
        "nowhere/router.yaml: cannot read the config file: No such file or directory"
    ]


def test_check_returns_the_error_lines_or_nothing():
    write("good.yaml", HOOK)
    write("bad.yaml", "retention: x\n")
    assert check("good.yaml") == []
    assert check("bad.yaml") == [
        "bad.yaml:1: retention: invalid duration 'x': write seconds or a number with "
        "ms, s, m, h or d (500ms, 10s, 5m, 2h, 7d)"
    ]


def test_the_parsed_config_is_frozen():
    config = load_text(HOOK)
    with pytest.raises(AttributeError):
        config.retention = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.webhooks[0].url = "x"  # type: ignore[misc]


def test_the_example_config_loads_as_shipped():
    config = load(str(REPO / "conf/router.yaml"), env={})
    assert config.state_dir == str(REPO / "var")
    assert config.control_bind == f"ipc://{REPO}/var/control.sock"
    assert config.ingest.bind == "tcp://127.0.0.1:5555"
    assert config.ingest.ack_bind == "tcp://127.0.0.1:5556"
    assert config.metrics_bind == ("127.0.0.1", 9464)
    assert all(w.url.startswith("http://127.0.0.1:8080/") for w in config.webhooks)
    assert all(w.secrets for w in config.webhooks)
    assert any(len(w.rules) > 1 for w in config.webhooks)
    assert any(r.where is not None for w in config.webhooks for r in w.rules)
    assert os.path.isabs(config.path)


def test_journal_sync_is_full_unless_normal_is_asked_for():
    assert load_text("webhooks: []\n").journal_sync == "full"
    assert load_text("journal: {sync: normal}\n").journal_sync == "normal"
    (error,) = errors_of("journal:\n  sync: fast\n")
    assert error.startswith("router.yaml:2: journal.sync: expected one of full, normal")


def test_delivery_workers_are_bounded_since_each_is_a_thread():
    (error,) = errors_of("delivery_workers: 99999999999999999999999\n")
    assert error == "router.yaml:1: delivery_workers: expected an integer from 1 to 4096"
    assert load_text("delivery_workers: 4096\n").delivery_workers == 4096


def test_delivery_processes_default_to_two_and_zero_keeps_sending_in_the_daemon():
    assert load_text("{}\n").delivery_processes == 2
    assert load_text("delivery_processes: 0\n").delivery_processes == 0
    (error,) = errors_of("delivery_processes: 65\n")
    assert error == "router.yaml:1: delivery_processes: expected an integer from 0 to 64"


# --------------------------------------------------------------------------- the HTTP API (SPEC §6)


TOKEN_ENTRY = "- {name: ops, sha256: " + "ab" * 32 + ", scope: admin}\n"


def test_the_api_is_off_unless_a_bind_is_given_and_then_its_tokens_file_is_read(in_tmp):
    assert load_text("{}\n").api_bind is None
    assert load_text("api: null\n").api_bind is None
    assert load_text("api: {bind: null, tokens_file: ./missing.yaml}\n").api_bind is None
    write("tokens.yaml", TOKEN_ENTRY)  # the default tokens_file, beside the config file
    config = load_text("api: {bind: '127.0.0.1:9465'}\n")
    assert config.api_bind == ("127.0.0.1", 9465)
    assert [t.name for t in config.api_tokens.entries] == ["ops"]
    write("keys/api.yaml", TOKEN_ENTRY.replace("ops", "other"))
    write("conf/router.yaml", "api:\n  bind: '[::1]:0'\n  tokens_file: ../keys/api.yaml\n")
    config = load("conf/router.yaml", env={})  # relative to the config file, not the cwd
    assert config.api_bind == ("::1", 0)
    assert [t.name for t in config.api_tokens.entries] == ["other"]
    assert config.api_tokens.path == str(in_tmp / "keys" / "api.yaml")  # outside: absolute


def test_api_errors_are_located_like_every_other_key():
    assert errors_of("api:\n  bind: 9465\n  tokn_file: x\n") == [
        "router.yaml:2: api.bind: invalid address 9465: "
        "write HOST:PORT (127.0.0.1:9464), or null for off",
        "router.yaml:3: api.tokn_file: unknown key; did you mean 'tokens_file'?",
    ]
    assert errors_of("api:\n  bind: 127.0.0.1:9465\n  tokens_file: ./nope.yaml\n") == [
        "router.yaml:3: api.tokens_file: cannot read the tokens file nope.yaml: "
        "No such file or directory"
    ]
    assert errors_of("state_dir: v\napi: {bind: 127.0.0.1:9465}\n") == [
        "router.yaml:2: api.tokens_file: cannot read the tokens file tokens.yaml: "
        "No such file or directory"
    ]


def test_a_broken_tokens_file_fails_the_config_after_the_main_files_errors():
    write("tokens.yaml", "- name: ops\n  sha256: abc\n  scope: admin\n")
    assert errors_of("api: {bind: 127.0.0.1:9465}\nretention: never\n") == [
        "router.yaml:2: retention: invalid duration 'never': write seconds or a number with "
        "ms, s, m, h or d (500ms, 10s, 5m, 2h, 7d)",
        "tokens.yaml:2: tokens[0].sha256: expected the SHA-256 of the token: 64 hexadecimal digits",
    ]


def test_the_example_config_serves_the_api_on_loopback_with_the_demo_token():
    config = load(str(REPO / "conf" / "router.yaml"), env={})
    assert config.api_bind == ("127.0.0.1", 9465)
    (demo,) = config.api_tokens.entries
    assert (demo.name, demo.scope, demo.companies) == ("demo", "admin", None)
    readme = (REPO / "README.md").read_text()
    (shown,) = set(re.findall(r"wr_demo[\w-]+", readme))
    assert config.api_tokens.find(shown) == demo


# --------------------------------------------------------------------------- big configs


def test_a_yaml_error_after_bad_webhooks_is_the_only_error():
    # The first webhook is checked as soon as it is read; the file then fails to parse.
    assert errors_of("""
        webhooks:
          - name: BAD NAME
            url: nope
          - name: ok
            url: [
        """) == [
        "router.yaml:6: yaml: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)"
    ]


def test_errors_on_one_line_keep_the_order_of_their_keys():
    assert errors_of("{bogus: 1, webhooks: [{name: a, secret: s}], retention: 0}\n") == [
        "router.yaml:1: bogus: unknown key",
        "router.yaml:1: webhooks[0].url: is required",
        "router.yaml:1: retention: must be more than 0",
    ]


def many_hooks(n: int) -> str:
    """``n`` webhooks with rules of several kinds, each on its own project."""
    where = "{all: [{field: data.priority, in: [high, urgent]}, {not: {field: data.x, eq: true}}]}"
    rules = [
        lambda i: f"projects: [p{i}]\n    events: [TODO_CREATED, TODO_UPDATED]",
        lambda i: f"projects: [p{i}]\n    events: ['TODO_*']\n    companies: [c{i % 20}]",
        lambda i: (
            f"match:\n      - {{events: ['COMMENT_*'], projects: [p{i}]}}\n"
            "      - {events: [TODO_CREATED]}"
        ),
        lambda i: f"projects: [p{i}]\n    events: [TODO_CREATED]\n    where: {where}",
    ]
    return "webhooks:\n" + "".join(
        f"  - name: hook-{i}\n    url: https://h{i}.example.com/in/{i}\n    secret: {WHSEC}\n"
        f"    {rules[i % 4](i)}\n"
        for i in range(n)
    )


def test_a_big_config_is_checked_without_holding_every_node_at_once():
    # A million nodes for 10,000 webhooks left ~40 MB of fragmented memory behind them
    # for the daemon's life; read one webhook at a time, load peaks near what it keeps.
    import tracemalloc

    path = write("router.yaml", many_hooks(2_000))
    assert len(load(path, env={}).webhooks) == 2_000  # warm: caches and imports
    tracemalloc.start()
    try:
        config = load(path, env={})
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert config.webhooks[-1].name == "hook-1999"
    assert peak < 3 * kept, f"peak {peak / 1e6:.1f} MB to keep {kept / 1e6:.1f} MB"


def test_webhooks_with_the_same_settings_share_one_copy_of_them():
    config = load_text(f"""
        defaults:
          secret: {WHSEC}
          retry: {{attempts: 3}}
          rate_limit: 10/s
        webhooks:
          - {{name: a, url: 'https://a.example/'}}
          - {{name: b, url: 'https://b.example/'}}
          - {{name: c, url: 'https://c.example/', retry: {{attempts: 4}}}}
        """)
    a, b, c = config.webhooks
    assert a.retry is b.retry and a.health is b.health and a.rate_limit is b.rate_limit
    assert c.retry == RetryConfig(attempts=4) and a.retry == RetryConfig(attempts=3)
    assert a.secrets is b.secrets
    assert a.rules[0].source is a.source


def test_the_journal_section_takes_each_backends_own_keys_and_a_node_name(tmp_path):
    (tmp_path / "pg.dsn").write_text("host=127.0.0.1 dbname=router password=pw-in-file\n")
    main = tmp_path / "router.yaml"
    main.write_text("node: router-1\njournal:\n  backend: postgresql\n  dsn_file: ./pg.dsn\n"
                    "  lease: 5s\n")  # fmt: skip
    cfg = config.load(str(main))
    assert (cfg.node, cfg.journal_backend, cfg.lease) == ("router-1", "postgresql", 5.0)
    assert cfg.journal_dsn == "host=127.0.0.1 dbname=router password=pw-in-file"
    assert "pw-in-file" not in repr(cfg)
    main.write_text("node: -x\njournal:\n  backend: postgresql\n  sync: full\n  lease: 500ms\n")
    assert config.check(str(main)) == [
        f"{main}:1: node: expected 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
        f"{main}:2: journal.dsn_file: is required for backend: postgresql",
        f"{main}:4: journal.sync: is for backend: sqlite, not postgresql",
        f"{main}:5: journal.lease: must be at least 1s",
    ]
    main.write_text("journal:\n  lease: 4s\n  dsn_file: ./nope.dsn\n")
    errors = config.check(str(main))
    assert errors[0] == f"{main}:2: journal.lease: is for backend: postgresql, not sqlite"
    assert "cannot read the connection string file" in errors[1]
    main.write_text("state_dir: ./var\n")
    cfg = config.load(str(main))
    assert (cfg.journal_backend, cfg.journal_dsn, cfg.lease) == ("sqlite", None, 15.0)
    assert cfg.node == socket.gethostname()


def test_a_header_named_like_the_hmac_signature_header_is_refused():
    errors = hook_errors("signature: hmac-sha256-hex\nsignature_header: X-Hub-Signature\n"
                         "headers: {x-hub-signature: forged}\n")  # fmt: skip
    assert errors == [
        "router.yaml:7: webhooks[0].headers.x-hub-signature: x-hub-signature is this webhook's"
        " signature_header, set by the router, and cannot be configured"
    ]
    assert hook_errors("signature: hmac-sha256-hex\nheaders: {X-Signature: x}\n") == [
        "router.yaml:6: webhooks[0].headers.X-Signature: X-Signature is this webhook's"
        " signature_header, set by the router, and cannot be configured"
    ]  # the default one, X-Signature
    standard = load_text(HOOK + _keys("headers: {X-Signature: x}\n")).webhooks[0]
    assert standard.headers == (("X-Signature", "x"),)  # the standard scheme signs elsewhere
