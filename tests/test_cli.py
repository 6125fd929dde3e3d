"""The webhook-router command, in-process with capsys."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime

import msgpack
import pytest
import yaml
import zmq

from router import ControlError, RouterError
from router.cli import (
    control_address,
    ingest_address,
    main,
    parse_since,
    setup_logging,
)
from router.config import load as load_config
from router.control import ControlServer

STATUS = {
    "webhooks": [
        {
            "name": "crm-sync",
            "state": "disabled",
            "health": "UNHEALTHY",
            "queued": 4,
            "in_flight": 0,
            "delivered": 12,
            "failed": 1,
            "consecutive_failures": 5,
            "last_success": 1_700_000_000.0,
            "last_error": "HTTP 500",
            "latency_ms": {"p50": 1.25, "p99": 4.75},
            "url": "https://crm.example.com/hooks",
        }
    ],
    "events": {"received": 12, "rejected": 2, "duplicates": 1},
    "version": "0.1.0",
    "uptime": 10.0,
}


class FakeApp:
    """The App interface the control server calls, with canned answers."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.enable_ok = True
        self.reload_errors: list[str] = []

    def _known(self, name: str) -> None:
        if name != "crm-sync":
            raise RouterError(f"no webhook named {name!r}")

    def status(self) -> dict:
        return STATUS

    def enable(self, name: str) -> dict:
        self._known(name)
        if self.enable_ok:
            return {"webhook": name, "ok": True, "state": "active", "detail": "HTTP 204"}
        return {"webhook": name, "ok": False, "state": "disabled", "detail": "HTTP 503"}

    def disable(self, name: str) -> dict:
        self._known(name)
        return {"webhook": name, "ok": True, "state": "disabled", "detail": None}

    def replay(
        self, name: str, since: float | None, failed_only: bool, until=None, event=None
    ) -> dict:
        self._known(name)
        self.calls.append(("replay", name, since, failed_only, until, event))
        return {"webhook": name, "requeued": 7}

    def reload(self) -> dict:
        errors = self.reload_errors
        return {
            "ok": not errors,
            "errors": errors,
            "added": ["audit"],
            "removed": [],
            "changed": ["crm-sync"],
        }

    def attempts(
        self, name: str, limit: int, failed: bool = False, event: str | None = None
    ) -> list[dict]:
        self._known(name)
        self.calls.append(("attempts", name, limit, failed, event))
        return [
            {
                "id": "01HEVENT",
                "attempt": 2,
                "at": 1_700_000_000.0,
                "status": 500,
                "error": "HTTP 500",
                "latency_ms": 3.5,
                "response": "oops",
            }
        ]

    def healthy(self) -> bool:
        return True


@pytest.fixture
def app():
    return FakeApp()


@pytest.fixture
def config(tmp_path):
    """A config whose control socket (by default under state_dir) the fake server binds."""
    path = tmp_path / "router.yaml"
    path.write_text("state_dir: ./state\nwebhooks: []\n")
    return str(path)


@pytest.fixture
def server(tmp_path, app, config):
    srv = ControlServer(f"ipc://{tmp_path}/state/control.sock", app)
    srv.start()
    yield srv
    srv.stop()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- check

VALID = """\
state_dir: ./var
webhooks:
  - name: crm-sync
    url: https://crm.example.com/hooks
    secret: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
    events: ["TODO_*"]
    projects: [p1]
  - name: audit
    url: https://audit.example.com/in
    signature: none
    events: [COMMENT_CREATED]
"""


def test_check_a_valid_file_says_ok_with_the_webhook_count(capsys, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(VALID)
    code, out, err = run(capsys, "check", "-c", str(path))
    assert (code, out, err) == (0, f"{path}: ok (2 webhooks)\n", "")


def test_check_an_invalid_file_prints_every_error_located_and_exits_1(capsys, tmp_path):
    path = tmp_path / "router.yaml"
    text = VALID.replace("url: https://crm", "ur1: https://crm").replace("none", "nope")
    path.write_text(text)
    code, out, err = run(capsys, "check", "-c", str(path))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    for line in lines:
        assert re.match(rf"{re.escape(str(path))}:\d+: \S+: .+", line), line
    located = {tuple(line.removeprefix(f"{path}:").split(": ")[:2]) for line in lines}
    # Both mistakes, each where it is: the misspelt key (and the url it leaves out), the value.
    assert {
        ("4", "webhooks[0].ur1"),
        ("3", "webhooks[0].url"),
        ("10", "webhooks[1].signature"),
    } <= located


def test_check_explain_shows_which_webhooks_take_the_event(capsys, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(VALID)
    event = '{"type": "TODO_CREATED", "project": "p1", "data": {"title": "x"}}'
    code, out, _ = run(capsys, "check", "-c", str(path), "--explain", event)
    assert code == 0
    assert out.startswith("crm-sync: matched by rule 1")
    assert "audit: no match" in out


def test_check_explain_refuses_an_event_the_router_would_refuse(capsys, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(VALID)
    code, _, err = run(capsys, "check", "-c", str(path), "--explain", '{"type": ""}')
    assert code == 1
    assert err.startswith("error: the router would reject this event")
    assert main(["check", "-c", str(path), "--explain", "{not json"]) == 2


# ---------------------------------------------------------------- control commands


def test_status_json_prints_the_routers_status(capsys, server, config):
    code, out, _ = run(capsys, "status", "--json", "-c", config)
    assert code == 0
    assert json.loads(out) == STATUS


def test_status_prints_a_table_and_the_event_counters(capsys, server):
    code, out, _ = run(capsys, "status", "--control", server.address)
    assert code == 0
    header, row, events = out.splitlines()
    assert header.split()[:3] == ["WEBHOOK", "STATE", "HEALTH"]
    assert row.split() == [
        "crm-sync",
        "disabled",
        "UNHEALTHY",
        "4",
        "0",
        "12",
        "1",
        "1.2/4.8",
        "HTTP",
        "500",
    ]
    assert events == "events: received 12, rejected 2, duplicates 1"


def test_enable_exits_0_when_the_health_check_passes(capsys, server, config):
    code, out, _ = run(capsys, "enable", "crm-sync", "-c", config)
    assert (code, out) == (0, "crm-sync: active (HTTP 204)\n")


def test_enable_exits_1_when_the_health_check_fails(capsys, server, app, config):
    app.enable_ok = False
    code, out, err = run(capsys, "enable", "crm-sync", "-c", config)
    assert (code, out) == (1, "")
    assert err == "error: crm-sync not enabled: crm-sync: disabled (HTTP 503)\n"


def test_unknown_webhook_is_one_error_line_and_exit_1(capsys, server, config):
    code, _, err = run(capsys, "disable", "nope", "-c", config)
    assert (code, err) == (1, "error: no webhook named 'nope'\n")


def test_replay_since_a_duration_sends_that_long_ago(capsys, server, app, config):
    code, out, _ = run(capsys, "replay", "crm-sync", "--since", "2h", "--failed", "-c", config)
    assert (code, out) == (0, "crm-sync: 7 deliveries requeued\n")
    (_, name, since, failed_only, until, event), *_ = app.calls
    assert (name, failed_only, until, event) == ("crm-sync", True, None, None)
    assert abs(since - (time.time() - 7200)) < 60


def test_replay_until_a_time_and_of_one_event(capsys, server, app, config):
    args = ("replay", "crm-sync", "--until", "2026-11-27T16:00:00Z", "--event", "e7", "-c", config)
    assert run(capsys, *args)[0] == 0
    ((_, _, since, failed_only, until, event),) = app.calls
    assert (since, failed_only, event) == (None, False, "e7")
    assert until == datetime(2026, 11, 27, 16, tzinfo=UTC).timestamp()


def test_replay_without_since_replays_everything(capsys, server, app, config):
    assert run(capsys, "replay", "crm-sync", "-c", config)[0] == 0
    assert app.calls == [("replay", "crm-sync", None, False, None, None)]


def test_reload_lists_the_changes(capsys, server, config):
    code, out, _ = run(capsys, "reload", "-c", config)
    assert (code, out) == (0, "reloaded: added audit; changed crm-sync\n")


def test_failed_reload_prints_each_error_and_exits_1(capsys, server, app, config):
    app.reload_errors = ["router.yaml:3: webhooks[0].url: required"]
    code, _, err = run(capsys, "reload", "-c", config)
    assert code == 1
    assert err.splitlines()[0] == "router.yaml:3: webhooks[0].url: required"


def test_attempts_passes_the_limit_and_prints_a_table(capsys, server, app, config):
    code, out, _ = run(capsys, "attempts", "crm-sync", "--limit", "5", "-c", config)
    assert code == 0
    assert app.calls == [("attempts", "crm-sync", 5, False, None)]
    assert "01HEVENT" in out
    assert "HTTP 500" in out


def test_attempts_passes_failed_and_event(capsys, server, app, config):
    code, _, _ = run(capsys, "attempts", "crm-sync", "--failed", "--event", "e9", "-c", config)
    assert code == 0
    assert app.calls == [("attempts", "crm-sync", 20, True, "e9")]


def test_unreachable_router_exits_3(capsys, tmp_path):
    code, _, err = run(capsys, "status", "--control", f"ipc://{tmp_path}/none.sock")
    assert code == 3
    assert "is it running?" in err
    assert err.count("\n") == 1


def test_silent_router_exits_3_after_the_timeout(capsys):
    with zmq.Context.instance().socket(zmq.ROUTER) as silent:
        silent.setsockopt(zmq.LINGER, 0)
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        code, _, err = run(
            capsys, "status", "--control", f"tcp://127.0.0.1:{port}", "--timeout", "0.2"
        )
    assert code == 3
    assert "within 0.2s" in err


def test_silent_router_is_reported_as_possibly_busy_not_down(capsys):
    with zmq.Context.instance().socket(zmq.ROUTER) as silent:
        silent.setsockopt(zmq.LINGER, 0)
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        address = f"tcp://127.0.0.1:{port}"
        code, _, err = run(capsys, "status", "--control", address, "--timeout", "0.2")
    assert code == 3
    assert err == (
        f"error: no answer from the router at {address} within 0.2s "
        "(it may be busy; try --timeout)\n"
    )


@pytest.mark.parametrize(
    ("command", "timeout"), [("status", 30.0), ("enable", 60.0), ("reload", 10.0)]
)
def test_control_commands_wait_by_default_long_enough_for_a_large_router(
    capsys, monkeypatch, command, timeout
):
    waits = []

    def request(address: str, cmd: str, args: dict | None, timeout: float) -> None:
        waits.append(timeout)
        raise ControlError("recorded")

    monkeypatch.setattr("router.control.request", request)
    run(capsys, command, *(["crm-sync"] if command == "enable" else []), "--control", "ipc://x")
    assert waits == [timeout]


def test_missing_config_without_control_address_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "status", "-c", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert "cannot read" in err


def test_usage_errors_exit_2(capsys):
    assert main(["enable"]) == 2
    assert main(["replay", "x", "--since", "last tuesday"]) == 2
    assert main(["frobnicate"]) == 2
    capsys.readouterr()


def test_config_path_defaults_to_the_environment_variable(capsys, server, config, monkeypatch):
    monkeypatch.setenv("WEBHOOK_ROUTER_CONFIG", config)
    assert run(capsys, "status", "--json")[0] == 0


# ---------------------------------------------------------------- addresses and times


def test_control_address_defaults_to_the_state_dir_next_to_the_config(tmp_path):
    (tmp_path / "a.yaml").write_text("webhooks: []\n")
    assert control_address(str(tmp_path / "a.yaml")) == f"ipc://{tmp_path}/var/control.sock"


def test_control_address_resolves_a_relative_ipc_bind_against_the_config_dir(tmp_path):
    (tmp_path / "a.yaml").write_text("control: {bind: 'ipc://./run/ctl.sock'}\n")
    assert control_address(str(tmp_path / "a.yaml")) == f"ipc://{tmp_path}/run/ctl.sock"


def test_control_address_turns_a_wildcard_tcp_bind_into_loopback(tmp_path):
    (tmp_path / "a.yaml").write_text("control: {bind: 'tcp://*:7000'}\n")
    assert control_address(str(tmp_path / "a.yaml")) == "tcp://127.0.0.1:7000"


def test_control_address_ignores_missing_secrets(tmp_path):
    text = "state_dir: /srv/router\nwebhooks:\n  - {name: a, url: x, secret_env: UNSET_VAR}\n"
    (tmp_path / "a.yaml").write_text(text)
    assert control_address(str(tmp_path / "a.yaml")) == "ipc:///srv/router/control.sock"


def test_ingest_address_reads_the_config_like_the_loader_does(tmp_path):
    (tmp_path / "a.yaml").write_text("webhooks: []\n")
    assert ingest_address(str(tmp_path / "a.yaml"), ack=False) == "tcp://127.0.0.1:5555"
    assert ingest_address(str(tmp_path / "a.yaml"), ack=True) == "tcp://127.0.0.1:5556"
    (tmp_path / "b.yaml").write_text("ingest: {bind: 'ipc://./in.sock'}\n")
    assert ingest_address(str(tmp_path / "b.yaml"), ack=False) == f"ipc://{tmp_path}/in.sock"
    with pytest.raises(RouterError, match=r"has no ingest\.ack_bind"):
        ingest_address(str(tmp_path / "b.yaml"), ack=True)


def test_control_address_reads_the_config_with_the_c_loader(tmp_path, monkeypatch):
    used = []

    class Recording(yaml.CSafeLoader):
        def __init__(self, stream):
            used.append(type(self))
            super().__init__(stream)

    monkeypatch.setattr(yaml, "CSafeLoader", Recording)
    (tmp_path / "a.yaml").write_text("control: {bind: 'tcp://*:7000'}\n")
    assert control_address(str(tmp_path / "a.yaml")) == "tcp://127.0.0.1:7000"
    assert used == [Recording]


def test_control_address_falls_back_to_the_python_loader_without_libyaml(tmp_path, monkeypatch):
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    (tmp_path / "a.yaml").write_text("control: {bind: 'tcp://*:7000'}\n")
    assert control_address(str(tmp_path / "a.yaml")) == "tcp://127.0.0.1:7000"


def test_unreadable_yaml_is_reported_with_its_line(tmp_path):
    (tmp_path / "a.yaml").write_text("state_dir: ./var\ncontrol: [unclosed\n")
    with pytest.raises(RouterError, match=r"a\.yaml:3: not valid YAML: "):
        control_address(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(
    "top",
    [
        "",
        "state_dir: ./s\n",
        "state_dir: ../up\n",
        "control: {bind: 'ipc://x/c.sock'}\n",
        "control: {bind: 'tcp://127.0.0.1:7001'}\n",
    ],
)
def test_control_address_agrees_with_the_full_config_loader(tmp_path, top):
    path = tmp_path / "conf" / "router.yaml"
    path.parent.mkdir()
    path.write_text(top + VALID.split("\n", 1)[1])
    assert control_address(str(path)) == load_config(str(path)).control_bind


def test_since_takes_durations_and_iso_times():
    now = 1_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("30m", now) == now - 1800
    assert parse_since("90", now) == now - 90
    assert (
        parse_since("2026-11-27T16:38:33Z")
        == datetime(2026, 11, 27, 16, 38, 33, tzinfo=UTC).timestamp()
    )


# ---------------------------------------------------------------- send


def test_send_pushes_one_msgpack_map_to_the_address(capsys):
    with zmq.Context.instance().socket(zmq.PULL) as pull:
        pull.setsockopt(zmq.LINGER, 0)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        argv = "send TODO_CREATED --project p1 --company acme --id e1 --timestamp 1700000000"
        argv = [
            *argv.split(),
            "--data",
            '{"title": "x", "n": 2}',
            "--to",
            f"tcp://127.0.0.1:{port}",
        ]
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert out.startswith("sent")
        assert pull.poll(5000)
        frame = pull.recv()
    assert msgpack.unpackb(frame) == {
        "type": "TODO_CREATED",
        "project": "p1",
        "company": "acme",
        "id": "e1",
        "data": {"title": "x", "n": 2},
        "timestamp": 1_700_000_000.0,
    }


def test_send_with_ack_prints_the_routers_answer(capsys):
    with zmq.Context.instance().socket(zmq.ROUTER) as router:
        router.setsockopt(zmq.LINGER, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")

        def answer():
            if router.poll(5000):
                *envelope, body = router.recv_multipart()
                event = msgpack.unpackb(body)
                reply = (
                    {"ok": False, "error": "bad_type: no"}
                    if event["type"] == "BAD"
                    else {"ok": True, "id": event["id"]}
                )
                router.send_multipart([*envelope, msgpack.packb(reply)])

        for event_type, expected in (
            ("GOOD", (0, "ok e9\n")),
            ("BAD", (1, "error bad_type: no\n")),
        ):
            responder = threading.Thread(target=answer)
            responder.start()
            code, out, _ = run(
                capsys, "send", event_type, "--id", "e9", "--ack", "--to", f"tcp://127.0.0.1:{port}"
            )
            responder.join(5)
            assert (code, out) == expected


def test_send_with_nobody_answering_exits_3(capsys):
    with zmq.Context.instance().socket(zmq.ROUTER) as silent:
        silent.setsockopt(zmq.LINGER, 0)
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        code, _, err = run(
            capsys, "send", "X", "--ack", "--timeout", "0.2", "--to", f"tcp://127.0.0.1:{port}"
        )
    assert code == 3
    assert err.startswith("error: no answer from")


def test_send_rejects_data_that_is_not_a_json_object(capsys):
    assert main(["send", "X", "--data", "[1, 2]", "--to", "tcp://127.0.0.1:1"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err


# ---------------------------------------------------------------- logging


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_run_logs_without_timestamps_under_journald(capsys, monkeypatch, root_logger):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("info")
    logging.getLogger("router.x").info("hello")
    logging.getLogger("router.x").debug("hidden")
    assert capsys.readouterr().err == "INFO router.x: hello\n"


def test_run_logs_with_iso_timestamps_elsewhere(capsys, monkeypatch, root_logger):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging("DEBUG")
    logging.getLogger("router.x").debug("hello")
    stamp, rest = capsys.readouterr().err.split(" ", 1)
    assert rest == "DEBUG router.x: hello\n"
    assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 60


AT = "2026-11-27T16:38:33.123Z"  # names the replay the fake router counts


class ReplayingApp(FakeApp):
    """Replays 3 deliveries; each look at the webhook shows the next of ``views``."""

    def __init__(self, *views: dict | None, state: str = "active"):
        super().__init__()
        self.views, self.state = list(views), state

    def replay(self, name, since, failed_only, until=None, event=None) -> dict:
        super().replay(name, since, failed_only, until, event)
        return {"webhook": name, "requeued": 3, "replay": AT}

    def webhook(self, name: str) -> dict:  # App.webhook: the supervisor's snapshot
        return self._snapshots([self.get(name)])[0]

    def get(self, name: str) -> str:
        self._known(name)
        return name

    def _snapshots(self, handles: list) -> list[dict]:
        self.calls.append(("webhook", *handles))
        view = self.views.pop(0) if len(self.views) > 1 else self.views[0]
        return [{"name": "crm-sync", "state": self.state, "disabled_reason": "exhausted",
                 "last_error": "HTTP 503", "replay": view}]  # fmt: skip


def progress(delivered: int, failed: int = 0, backlog: int = 3, at: str = AT) -> dict:
    remaining = backlog - delivered - failed
    return {"at": at, "queued": 3, "backlog": backlog, "delivered": delivered, "failed": failed,
            "remaining": remaining}  # fmt: skip


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr("router.cli.REPLAY_POLL", 0.01)


def _serve(tmp_path, app):
    srv = ControlServer(f"ipc://{tmp_path}/state/control.sock", app)
    srv.start()
    return srv


def test_replay_not_on_a_terminal_waits_for_its_deliveries_and_prints_one_summary_line(
    capsys, tmp_path, config, quick
):
    app = ReplayingApp(progress(0), progress(1), progress(2, 1))
    srv = _serve(tmp_path, app)
    try:
        code, out, err = run(capsys, "replay", "crm-sync", "-c", config)
    finally:
        srv.stop()
    assert (code, out, err) == (0, "crm-sync: 3 queued, 2 delivered, 1 failed\n", "")
    assert [c for c in app.calls if c[0] == "webhook"] == [("webhook", "crm-sync")] * 3


def test_replay_summary_counts_the_deliveries_that_were_waiting_before_it(
    capsys, tmp_path, config, quick
):
    srv = _serve(tmp_path, ReplayingApp(progress(5, backlog=5)))
    try:
        code, out, _ = run(capsys, "replay", "crm-sync", "-c", config)
    finally:
        srv.stop()
    assert (code, out) == (
        0, "crm-sync: 3 queued, 5 delivered, 0 failed (counting 2 that were already waiting)\n"
    )  # fmt: skip


def test_replay_no_wait_returns_once_queued(capsys, tmp_path, config):
    app = ReplayingApp(progress(0))
    srv = _serve(tmp_path, app)
    try:
        code, out, _ = run(capsys, "replay", "crm-sync", "--no-wait", "-c", config)
    finally:
        srv.stop()
    assert (code, out) == (0, "crm-sync: 3 deliveries requeued\n")
    assert [c for c in app.calls if c[0] == "webhook"] == []


def test_replay_stops_waiting_when_the_webhook_is_disabled_and_says_how_to_go_on(
    capsys, tmp_path, config, quick
):
    srv = _serve(tmp_path, ReplayingApp(progress(1), state="disabled"))
    try:
        code, out, err = run(capsys, "replay", "crm-sync", "-c", config)
    finally:
        srv.stop()
    assert (code, out) == (1, "")
    assert err == (
        "error: crm-sync is disabled (exhausted, last error: HTTP 503), holding the rest: "
        "3 queued, 1 delivered, 0 failed, 2 to go; `webhook-router enable crm-sync` sends them\n"
    )


def test_replay_stops_waiting_when_the_router_no_longer_counts_it(capsys, tmp_path, config, quick):
    srv = _serve(tmp_path, ReplayingApp(progress(1), None))  # e.g. restarted meanwhile
    try:
        code, _, err = run(capsys, "replay", "crm-sync", "-c", config)
    finally:
        srv.stop()
    assert code == 1
    assert err.startswith("error: crm-sync: the router no longer counts this replay (restarted?)")
    assert "so far 3 queued, 1 delivered, 0 failed, 2 to go" in err
