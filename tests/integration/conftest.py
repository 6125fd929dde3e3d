"""Real parts: the daemon as a subprocess, a loopback HTTP receiver, ZeroMQ producers.

Nothing on the network path is mocked. Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
import zmq

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- HTTP receiver


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b"ok"


class HookServer:
    """A webhook endpoint on 127.0.0.1 that records every request.

    ``script(path, replies)`` queues replies for a path (then 200 for the rest);
    ``default(path, reply)`` sets what a path answers once its queue is empty.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                reply = server._record(self.path, dict(self.headers), body)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts.setdefault(path, []).extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        with self._lock:
            self._defaults[path] = reply

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.requests.append(
                Request(path, {k.lower(): v for k, v in headers.items()}, body, time.monotonic())
            )
            queue = self._scripts.get(path)
            if queue:
                return queue.pop(0)
            return self._defaults.get(path, Reply())

    def at(self, path: str, type_: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (type_ is None or r.json.get("type") == type_)
            ]

    def ids(self, path: str, type_: str | None = None) -> list[str]:
        return [r.json["id"] for r in self.at(path, type_)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks():
    server = HookServer()
    yield server
    server.close()


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """``webhook-router run`` as a subprocess on a config written into ``tmp``."""

    def __init__(
        self, tmp: Path, webhooks: list[dict], notify_name: str = "notify.sock", **top: Any
    ) -> None:
        self.tmp = tmp
        self.config_path = tmp / "router.yaml"
        self.pull = f"ipc://{tmp}/pull.sock"
        self.ack = f"ipc://{tmp}/ack.sock"
        self.settings: dict[str, Any] = {
            "state_dir": "./state",
            "shutdown_timeout": "5s",
            "ingest": {"bind": self.pull, "ack_bind": self.ack},
            "metrics": {"bind": None},
            "defaults": {
                "allow_private_networks": True,
                "secret": SECRET,
                "retry": {"attempts": 5, "backoff": ["50ms", "100ms"]},
            },
            "webhooks": webhooks,
        }
        self.settings.update(top)
        self.write()
        self.proc: subprocess.Popen | None = None
        self.wrapper: list[str] = []  # a command the daemon runs under (exec's it in the end)
        self.log_path = tmp / notify_name.replace("notify", "daemon").replace(".sock", ".log")
        self._ctx = zmq.Context.instance()
        self._notify_path = str(tmp / notify_name)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self._notify_path)
        self.notifications: list[str] = []

    def write(self, settings: dict | None = None) -> None:
        self.config_path.write_text(yaml.safe_dump(settings or self.settings, sort_keys=False))

    def write_text(self, text: str) -> None:
        self.config_path.write_text(text)

    # ---- process

    def start(self, wait_ready: bool = True) -> Daemon:
        env = dict(os.environ, NOTIFY_SOCKET=self._notify_path, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(
            [*self.wrapper, sys.executable, "-m", "router", "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmp,
        )
        if wait_ready:
            self.wait_notified("READY=1", count=self.count_notified("READY=1") + 1)
        return self

    def count_notified(self, line: str) -> int:
        self._drain_notify()
        return sum(1 for n in self.notifications if line in n.splitlines())

    def _drain_notify(self) -> None:
        self.notify.setblocking(False)
        try:
            while True:
                self.notifications.append(self.notify.recv(4096).decode())
        except BlockingIOError:
            pass

    def wait_notified(self, line: str, count: int = 1, timeout: float = 20.0) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return self.count_notified(line) >= count

        wait_until(seen, timeout, f"sd_notify {line}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def reload(self) -> None:
        """SIGHUP, then wait for the READY=1 that ends the reload."""
        before = self.count_notified("READY=1")
        self.signal(signal.SIGHUP)
        self.wait_notified("READY=1", count=before + 1)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"daemon did not stop within {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()
            self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()
        self.proc = None

    # ---- producers and the CLI

    def send(self, event: dict, ack: bool = True, timeout: float = 10.0) -> dict | None:
        """One event: on the ROUTER socket with a REQ (returns the ack) or PUSH."""
        return self.send_raw(msgpack.packb(event), ack=ack, timeout=timeout)

    def send_raw(self, *frames: bytes, ack: bool = True, timeout: float = 10.0) -> dict | None:
        sock = self._ctx.socket(zmq.REQ if ack else zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        try:
            sock.connect(self.ack if ack else self.pull)
            sock.send_multipart(list(frames))
            if not ack:
                return None
            if not sock.poll(int(timeout * 1000)):
                raise AssertionError(f"no ack within {timeout}s:\n{self.log()}")
            return msgpack.unpackb(sock.recv())
        finally:
            sock.close()

    def push_in_order(self, *messages: list[bytes]) -> None:
        """Send ``messages`` over one PUSH socket; from a socket each, they arrive in any order."""
        sock = self._ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 2000)
        try:
            sock.connect(self.pull)
            for frames in messages:
                sock.send_multipart(frames)
        finally:
            sock.close()

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "router", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def status(self) -> dict:
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def webhook(self, name: str) -> dict:
        (w,) = [w for w in self.status()["webhooks"] if w["name"] == name]
        return w

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


# --------------------------------------------------------------------------- both journal backends

BACKENDS = ("sqlite", "postgresql")
LEASE = "2s"  # short on PostgreSQL, so that a restarted daemon soon takes its old leases back


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test of the daemon runs on both journal backends (SPEC §8), one test id each.

    A test about SQLite itself (its file, its size caps, WAL, ``journal.sync``) carries
    ``@pytest.mark.sqlite_only`` and runs on SQLite alone, its reason in its docstring.
    """
    if "journal_backend" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        backends = BACKENDS[:1] if sqlite_only else BACKENDS
        metafunc.parametrize("journal_backend", backends, indirect=True)


@pytest.fixture
def journal_backend(request: pytest.FixtureRequest) -> str:
    """The journal backend this run of the test uses (``pytest_generate_tests``)."""
    return request.param


@pytest.fixture
def journal_settings(request, tmp_path, journal_backend) -> dict[str, Any]:
    """The config's ``journal`` section for this test's backend ({} for SQLite's defaults).

    On PostgreSQL: a fresh database of the session's server, for every daemon of the
    test (a restart finds what the last run left, as with the SQLite file), and ``LEASE``.
    """
    if journal_backend == "sqlite":
        return {}
    dsn_file = tmp_path / "pg.dsn"
    dsn_file.write_text(request.getfixturevalue("pg_dsn") + "\n")
    return {"backend": "postgresql", "dsn_file": str(dsn_file), "lease": LEASE}


@pytest.fixture
def daemon_factory(tmp_path, journal_settings):
    """``make(webhooks, **top)``: a Daemon in ``tmp_path`` on this test's journal backend.

    ``journal_settings`` merged under the ``journal`` the test sets.
    """
    made: list[Daemon] = []

    def make(webhooks: list[dict], **top: Any) -> Daemon:
        if journal_settings:
            if "sync" in top.get("journal", {}):
                pytest.fail("journal.sync is SQLite's: mark the test sqlite_only", pytrace=False)
            top["journal"] = {**journal_settings, **top.get("journal", {})}
        d = Daemon(tmp_path, webhooks, **top)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


class JournalDB:
    """A daemon's journal as another process sees its commits: its SQLite file or its database.

    Queries are written with ``?`` marks and run on either backend; every statement
    commits by itself. Read-only unless ``writable`` (a test planting what an older
    version could have written).
    """

    def __init__(self, d: Daemon, writable: bool = False) -> None:
        journal = d.settings.get("journal") or {}
        self.postgres = journal.get("backend") == "postgresql"
        if self.postgres:
            import psycopg  # the postgresql extra: only where PostgreSQL is used

            dsn = Path(journal["dsn_file"]).read_text().strip()
            self.conn: Any = psycopg.connect(dsn, autocommit=True)
            if not writable:
                self.conn.execute("SET default_transaction_read_only = on")
        else:
            path = d.tmp / "state" / "journal.db"
            uri = f"file:{path}" if writable else f"file:{path}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        cursor = self.conn.execute(sql.replace("?", "%s") if self.postgres else sql, params)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []

    def close(self) -> None:
        self.conn.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
