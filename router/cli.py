"""The ``webhook-router`` command: run the daemon, check config, and operate a running router.

Exit codes: 0 ok, 1 error (an error reply, a failed enable, an invalid config),
2 usage, 3 the router is not reachable. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from datetime import datetime
from typing import Any

import yaml

from router import ConfigError, ControlError, RouterError, __version__, listen, tokens
from router.config import (
    CONTROL_SOCKET,
    DEFAULT_STATE_DIR,
    JOURNAL_FILE,
    IngestConfig,
    parse_duration,
)

DEFAULT_CONFIG = "/etc/webhook-router/router.yaml"
CONFIG_ENV = "WEBHOOK_ROUTER_CONFIG"
CONTROL_TIMEOUTS = {"status": 30.0, "enable": 60.0}  # seconds; other commands wait 10
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REPLAY_POLL = 0.25  # seconds between looks at a replay's progress


class Fail(Exception):
    """Stop the command with ``code`` and one line on stderr."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- reading the config minimally


def _read_yaml(config_path: str) -> dict:
    """The main config file as plain YAML: operator commands must work without its secrets.

    The C loader, when PyYAML has it, reads a config of 10,000 webhooks in a
    fraction of the pure-Python loader's time.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(config_path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=loader)  # a safe loader either way
    except OSError as e:
        raise RouterError(f"cannot read {config_path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{config_path}:{mark.line + 1}" if mark else config_path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RouterError(f"{where}: not valid YAML: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RouterError(f"{config_path}: the top level must be a mapping")
    return doc


def _section(doc: dict, key: str, config_path: str) -> dict:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise RouterError(f"{config_path}: {key} must be a mapping")
    return value


def _connectable(address: str, base: str) -> str:
    """Turn a bind address into one a client can connect to (absolute ipc, no wildcard host)."""
    if address.startswith("ipc://") and not address.startswith("ipc://@"):
        path = address[len("ipc://") :]
        return "ipc://" + os.path.normpath(os.path.join(base, os.path.expanduser(path)))
    m = re.fullmatch(r"tcp://(\*|0\.0\.0\.0|\[::\]|::):(\d+)", address)
    if m:
        host = "[::1]" if ":" in m.group(1) else "127.0.0.1"
        return f"tcp://{host}:{m.group(2)}"
    return address


def state_dir(config_path: str, doc: dict | None = None) -> str:
    """The state_dir of the router at ``config_path``, absolute, as ``config.load`` makes it."""
    doc = _read_yaml(config_path) if doc is None else doc
    path = doc.get("state_dir") or DEFAULT_STATE_DIR
    if not isinstance(path, str):
        raise RouterError(f"{config_path}: state_dir must be a path")
    base = os.path.dirname(os.path.abspath(config_path))
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def control_address(config_path: str) -> str:
    """Where the router at ``config_path`` serves control requests (``control.bind`` or default)."""
    doc = _read_yaml(config_path)
    base = os.path.dirname(os.path.abspath(config_path))
    bind = _section(doc, "control", config_path).get("bind")
    if bind is None:
        bind = "ipc://" + os.path.join(state_dir(config_path, doc), CONTROL_SOCKET)
    if not isinstance(bind, str):
        raise RouterError(f"{config_path}: control.bind must be an address")
    return _connectable(bind, base)


def ingest_address(config_path: str, ack: bool) -> str:
    """Where the router at ``config_path`` takes events (the acked socket with ``ack``)."""
    key = "ack_bind" if ack else "bind"
    doc = _read_yaml(config_path)
    ingest = _section(doc, "ingest", config_path)
    # as in config.py: an ingest section turns off the socket it leaves out
    bind = ingest.get(key) if "ingest" in doc else getattr(IngestConfig(), key)
    if not bind:
        raise RouterError(f"{config_path} has no ingest.{key}; use --to ADDR")
    if not isinstance(bind, str):
        raise RouterError(f"{config_path}: ingest.{key} must be an address")
    return _connectable(bind, os.path.dirname(os.path.abspath(config_path)))


# ---------------------------------------------------------------- argument types


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration ago as in the config (``2h``, ``90``), or ISO-8601 (naive: local)."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO-8601 time nor a duration like 2h"
        ) from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


# ---------------------------------------------------------------- daemon and config commands


class _IsoFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created).astimezone().isoformat("T", "milliseconds")


def setup_logging(level: str) -> None:
    """One line per record on stderr; journald adds its own timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def cmd_run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    from router import app

    try:
        return app.run(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    from router import config

    try:
        cfg = config.load(args.config)  # what config.check does, keeping the result
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1
    if args.explain is None:
        print(f"{args.config}: ok ({len(cfg.webhooks)} webhooks)")
        return 0
    import msgpack

    from router import envelope, filter, predicates
    from router.clock import Clock

    try:
        event = envelope.decode(msgpack.packb(args.explain), cfg.ingest.max_event_bytes, Clock())
    except envelope.BadEvent as e:
        raise Fail(1, f"the router would reject this event: {e}") from None
    print(predicates.format_explanation(filter.Filter.from_config(cfg).explain(event)))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    token = tokens.new_token()
    print(token)
    print("# The token above is shown once: hand it to the client. The router keeps only its")
    print("# SHA-256. Add this entry to the tokens file (api.tokens_file), then reload:")
    print(tokens.entry(args.name, token, args.scope, args.company), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from router import config, registry

    journal = _read_yaml(args.config).get("journal")
    if isinstance(journal, dict) and journal.get("backend") == "postgresql":  # SPEC §8
        try:
            made = registry.read_shared_documents(config.load(args.config).journal_dsn)
        except ConfigError as e:
            raise Fail(1, "\n".join(e.errors)) from None
    else:
        path = os.path.join(state_dir(args.config), JOURNAL_FILE)
        if not os.path.exists(path):
            raise Fail(1, f"no journal at {path}: this router has made no webhooks yet")
        made = registry.read_documents(path)
    unknown = sorted(set(args.names) - set(made))
    if unknown:
        raise Fail(1, f"no webhook made through the API is named {', '.join(unknown)}")
    chosen = {name: doc for name, doc in made.items() if not args.names or name in args.names}
    print(registry.exported(chosen), end="")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the PostgreSQL journal's schema to this router's (SPEC §8)."""
    from router import config

    try:
        cfg = config.load(args.config)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1
    if cfg.journal_backend != "postgresql":
        raise Fail(1, "migrate is for journal.backend: postgresql; the SQLite journal upgrades "
                   "itself when the daemon starts")  # fmt: skip
    from router import pgstore

    with pgstore.connect(cfg.journal_dsn) as conn:
        steps = pgstore.migrate(conn)
    if steps:
        print(f"schema upgraded to version {steps[-1]} (applied {', '.join(map(str, steps))})")
    else:
        print(f"schema already at version {pgstore.SCHEMA_VERSION}: nothing to do")
    return 0


def _token_name(text: str) -> str:
    try:
        return tokens.valid_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# ---------------------------------------------------------------- control commands


def _ask(args: argparse.Namespace, cmd: str, cargs: dict | None = None) -> Any:
    from router import control

    try:
        address = args.control or control_address(args.config)
    except RouterError as e:
        raise Fail(2, f"{e} (use -c FILE or --control ADDR)") from None
    # enable waits out a health check; status of many webhooks takes a while to gather
    timeout = args.timeout or CONTROL_TIMEOUTS.get(cmd, 10.0)
    return control.request(address, cmd, cargs, timeout=timeout)


def _when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).astimezone().isoformat("T", "seconds")
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _short(text: Any, limit: int = 60) -> str:
    text = "-" if text in (None, "") else " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_status(args: argparse.Namespace) -> int:
    status = _ask(args, "status")
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    rows = []
    for w in status.get("webhooks", []):
        lat = w.get("latency_ms") or {}
        p = "/".join("-" if lat.get(k) is None else f"{lat[k]:.1f}" for k in ("p50", "p99"))
        cells = [w.get(k) for k in ("name", "state", "health", "queued", "in_flight")]
        cells += [w.get("delivered"), w.get("failed"), p, _short(w.get("last_error"))]
        rows.append([str(c) for c in cells])
    header = ["WEBHOOK", "STATE", "HEALTH", "QUEUED", "IN-FLIGHT", "DELIVERED", "FAILED"]
    print(_table([*header, "P50/P99 MS", "LAST ERROR"], rows) if rows else "no webhooks")
    ev = status.get("events", {})
    print(
        f"events: received {ev.get('received', 0)}, rejected {ev.get('rejected', 0)}, "
        f"duplicates {ev.get('duplicates', 0)}"
    )
    return 0


def _state_change(result: dict, verb: str) -> int:
    name, detail = result.get("webhook"), result.get("detail")
    line = f"{name}: {result.get('state')}" + (f" ({detail})" if detail else "")
    if result.get("ok"):
        print(line)
        return 0
    print(f"error: {name} not {verb}: {line}", file=sys.stderr)
    return 1


def cmd_enable(args: argparse.Namespace) -> int:
    return _state_change(_ask(args, "enable", {"name": args.name}), "enabled")


def cmd_disable(args: argparse.Namespace) -> int:
    return _state_change(_ask(args, "disable", {"name": args.name}), "disabled")


def cmd_replay(args: argparse.Namespace) -> int:
    cargs = {"name": args.name, "since": args.since, "until": args.until, "event": args.event,
             "failed_only": args.failed}  # fmt: skip
    result = _ask(args, "replay", cargs)
    name, replay = result.get("webhook"), result.get("replay")
    if args.no_wait or replay is None:  # None: nothing was queued again
        print(f"{name}: {result.get('requeued')} deliveries requeued")
        return 0
    return _follow(args, name, replay)


def _follow(args: argparse.Namespace, name: str, replay: str) -> int:
    """Watch the replay named ``replay`` until none of its deliveries is left, then sum up.

    On a terminal with a progress bar; Ctrl-C stops the watching, never the replay.
    """
    counted: dict = {}
    try:
        _watch(args, name, replay, counted)
    except KeyboardInterrupt:
        print(f"{name}: stopped watching; the replay goes on: so far {_counts(counted)}")
        return 130
    print(f"{name}: {_counts(counted)}")
    return 0


def _watch(args: argparse.Namespace, name: str, replay: str, counted: dict) -> None:
    """Poll the webhook's status into ``counted`` until the replay has nothing left.

    A disabled webhook holds the rest, and a router that lost the count (restarted)
    has nothing more to tell: both end the watch with what was counted so far.
    """
    bar = None
    try:
        while True:
            w = _ask(args, "webhook", {"name": name})
            now = w.get("replay") or {}
            if now.get("at") != replay:
                raise Fail(1, f"{name}: the router no longer counts this replay (restarted?); "
                           f"so far {_counts(counted)}; `status` shows the queue")  # fmt: skip
            counted.update(now)
            if bar is None and sys.stdout.isatty():
                from tqdm import tqdm

                bar = tqdm(desc=name, unit=" deliveries", file=sys.stdout, dynamic_ncols=True)
            if bar is not None:
                bar.total = now["backlog"]
                bar.n = now["backlog"] - now["remaining"]
                bar.set_postfix(delivered=now["delivered"], failed=now["failed"])
            if now["remaining"] == 0:
                return
            if w.get("state") == "disabled":
                why = w.get("disabled_reason") or "by hand"
                why += f", last error: {w['last_error']}" if w.get("last_error") else ""
                raise Fail(1, f"{name} is disabled ({why}), holding the rest: {_counts(now)}; "
                           f"`webhook-router enable {name}` sends them")  # fmt: skip
            time.sleep(REPLAY_POLL)
    finally:
        if bar is not None:
            bar.close()


def _counts(replay: dict) -> str:
    """The summary: the replay's own deliveries, and those it waited behind."""
    if not replay:
        return "nothing counted"
    text = f"{replay['queued']} queued, {replay['delivered']} delivered, {replay['failed']} failed"
    if replay["backlog"] > replay["queued"]:
        text += f" (counting {replay['backlog'] - replay['queued']} that were already waiting)"
    if replay["remaining"]:
        text += f", {replay['remaining']} to go"
    return text


def cmd_reload(args: argparse.Namespace) -> int:
    result = _ask(args, "reload")
    if not result.get("ok"):
        for line in result.get("errors") or ["reload failed"]:
            print(line, file=sys.stderr)
        print("error: the config was not reloaded; the old one keeps running", file=sys.stderr)
        return 1
    changes = [
        f"{what} {', '.join(result[what])}"
        for what in ("added", "removed", "changed")
        if result.get(what)
    ]
    print("reloaded: " + ("; ".join(changes) if changes else "no webhook changed"))
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    query = {"name": args.name, "failed": args.failed, "event": args.event}
    if args.limit is not None:  # otherwise the router's default (control.ATTEMPTS_LIMIT)
        query["limit"] = args.limit
    attempts = _ask(args, "attempts", query)
    if args.json:
        print(json.dumps(attempts, indent=2, default=str))
        return 0
    rows = [
        [
            _when(a.get("at")),
            str(a.get("id")),
            str(a.get("attempt")),
            str(a.get("status") if a.get("status") is not None else "-"),
            "-" if a.get("latency_ms") is None else f"{a['latency_ms']:.1f}",
            _short(a.get("error")),
        ]
        for a in attempts
    ]
    header = ["AT", "EVENT", "ATTEMPT", "STATUS", "MS", "ERROR"]
    print(_table(header, rows) if rows else f"no attempts logged for {args.name}")
    return 0


# ---------------------------------------------------------------- send and listen


def cmd_send(args: argparse.Namespace) -> int:
    from router import receiver

    event: dict[str, Any] = {"type": args.type}
    for key in ("id", "company", "project", "data"):
        if getattr(args, key) is not None:
            event[key] = getattr(args, key)
    if args.timestamp is not None:
        try:
            event["timestamp"] = float(args.timestamp)
        except ValueError:
            event["timestamp"] = args.timestamp  # ISO-8601; the router validates it
    try:
        address = args.to or ingest_address(args.config, args.ack)
    except RouterError as e:
        raise Fail(2, f"{e} (use -c FILE or --to ADDR)") from None
    curve = None
    if args.curve_server or args.curve_client:
        if not (args.curve_server and args.curve_client):
            raise Fail(2, "CURVE needs both --curve-server and --curve-client")
        import zmq.auth

        try:
            server_public, _ = zmq.auth.load_certificate(args.curve_server)
            client_public, client_secret = zmq.auth.load_certificate(args.curve_client)
        except (OSError, ValueError) as e:
            raise Fail(2, f"cannot read the CURVE certificates: {e}") from None
        if client_secret is None:
            raise Fail(2, f"{args.curve_client} holds no secret key")
        curve = (server_public, client_public, client_secret)
    try:
        ack = receiver.send_event(address, event, args.ack, args.timeout, curve=curve)
    except RouterError as e:
        raise Fail(3, str(e)) from None
    if ack is None:
        print("sent (without --ack nothing confirms that the router got it)")
        return 0
    if ack.get("ok"):
        print(f"ok {ack.get('id')}")
        return 0
    print(f"error {ack.get('error')}")
    return 1


def cmd_listen(args: argparse.Namespace) -> int:
    return listen.serve(args.host, args.port, args.secret, args.status)


# ---------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    default_config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=default_config, help=f"config file (default {default_config})"
    )
    ctl = argparse.ArgumentParser(add_help=False, parents=[common])
    ctl.add_argument("--control", metavar="ADDR", help="control socket (default: from the config)")
    ctl.add_argument(
        "--timeout", type=float, help="seconds to wait (default 10, status 30, enable 60)"
    )

    parser = argparse.ArgumentParser(
        prog="webhook-router", description="Routes events from ZeroMQ to signed HTTP webhooks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the router in the foreground")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", parents=[common], help="validate the config file")
    p.add_argument(
        "--explain",
        metavar="EVENT_JSON",
        type=_json_object,
        help="show which webhooks would take this event, and why",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("token", help="make a new API token and its tokens-file entry")
    p.add_argument("name", metavar="NAME", type=_token_name, help="shown in logs, never the token")
    p.add_argument("--scope", choices=tokens.SCOPES, default=tokens.READ,
                   help="admin: read and write; read (the default): GET only")  # fmt: skip
    p.add_argument("--company", action="append", default=[], metavar="C", type=_nonempty,
                   help="limit the token to this company's webhooks (repeatable)")  # fmt: skip
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("migrate", parents=[common],
                       help="upgrade the PostgreSQL journal's schema")  # fmt: skip
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("export", parents=[common],
                       help="print the webhooks made through the API as YAML")  # fmt: skip
    p.add_argument("names", nargs="*", metavar="NAME", help="only these (default: all)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", parents=[ctl], help="show every webhook's health")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)
    for name, func, what in (
        ("enable", cmd_enable, "health-check a webhook and enable it on success"),
        ("disable", cmd_disable, "disable a webhook (its deliveries are held)"),
    ):
        p = sub.add_parser(name, parents=[ctl], help=what)
        p.add_argument("name", metavar="NAME")
        p.set_defaults(func=func)
    p = sub.add_parser("replay", parents=[ctl], help="send a webhook's deliveries again")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="ISO-8601 time, or a duration ago (2h, 30m, 90)",
    )
    p.add_argument(
        "--until", type=parse_since, metavar="T", help="only events received before T (as --since)"
    )
    p.add_argument("--event", metavar="ID", help="only this event")
    p.add_argument("--failed", action="store_true", help="only deliveries that used up attempts")
    p.add_argument(
        "--no-wait", action="store_true", help="return once queued (default: wait, then sum up)"
    )
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("reload", parents=[ctl], help="re-read the config file (like SIGHUP)")
    p.set_defaults(func=cmd_reload)
    p = sub.add_parser("attempts", parents=[ctl], help="a webhook's recent attempts, newest first")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="how many (default 20)")
    p.add_argument("--failed", action="store_true", help="only attempts that failed")
    p.add_argument("--event", metavar="ID", help="only the attempts of this event")
    p.add_argument("--json", action="store_true", help="print JSON, response bodies included")
    p.set_defaults(func=cmd_attempts)

    p = sub.add_parser("send", parents=[common], help="publish one event (for testing)")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("--project")
    p.add_argument("--company")
    p.add_argument("--data", type=_json_object, metavar="JSON")
    p.add_argument("--id")
    p.add_argument("--timestamp", metavar="T", help="epoch seconds or ISO-8601")
    p.add_argument("--ack", action="store_true", help="wait until the router has journaled it")
    p.add_argument("--to", metavar="ADDR", help="ingest address (default: from the config)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack")
    p.add_argument(
        "--curve-server", metavar="FILE", help="the router's public certificate (CURVE ingest)"
    )
    p.add_argument(
        "--curve-client", metavar="FILE", help="this producer's secret certificate (CURVE ingest)"
    )
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("listen", help="a local webhook receiver that prints each delivery")
    p.add_argument("port", nargs="?", type=int, default=8080, metavar="PORT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        type=listen.decode_secret,
        metavar="S",
        help="whsec_… secret to verify signatures with (repeatable)",
    )
    p.add_argument("--status", type=int, default=200, metavar="CODE", help="HTTP status to reply")
    p.set_defaults(func=cmd_listen)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors and --help
        return e.code if isinstance(e.code, int) else 0
    try:
        return args.func(args)
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except ControlError as e:
        from router.control import NotReachable

        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, NotReachable) else 1
    except RouterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
