"""A real PostgreSQL server for the tests: Debian's binaries, our own data directory, loopback.

``postgres_server`` (session-scoped) finds ``/usr/lib/postgresql/*/bin`` (running
``.ci/install_postgres.sh`` when it is missing: a fresh machine or CI gets the same
server), runs ``initdb`` into a fresh directory owned by the ``postgres`` user (the server
refuses to run as root) and starts it with ``pg_ctl`` on a free port of 127.0.0.1, tuned
for tests (no fsync); it is stopped when the session ends. ``pg_dsn`` gives each test a
fresh empty database, dropped after it, as a libpq connection string. A machine where
PostgreSQL cannot be had fails these tests, with the reason: it never skips them.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / ".ci" / "install_postgres.sh"
START_DEADLINE = 60  # seconds pg_ctl waits for the server to accept connections
USER = "postgres"  # the server's superuser, and the system account that runs it when we are root
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def binaries() -> Path:
    """The newest PostgreSQL's bin directory, installed first when there is none."""

    def found() -> list[Path]:
        dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
        return sorted((d for d in dirs if (d / "pg_ctl").exists()), key=_major)

    if not found():
        done = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True)
        if done.returncode != 0 or not found():
            pytest.fail(
                f"PostgreSQL is not installed and {INSTALL.name} could not install it"
                f" (exit {done.returncode}): {done.stderr.strip()[-2000:]}",
                pytrace=False,
            )
    return found()[-1]


def _major(bin_dir: Path) -> int:
    name = bin_dir.parent.name
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server on its own data directory: ``start``, ``dsn``, ``stop``."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="wr-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as: list[str] = []  # the command prefix that runs a program as the server's account
        if os.geteuid() == 0:
            account = pwd.getpwnam(USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", USER, "--"]

    def _run(self, program: str, *args: str) -> None:
        cmd = [*self._as, str(self.bin_dir / program), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=START_DEADLINE + 30)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(
                f"{program} failed (exit {done.returncode}): {done.stderr.strip()}\n{log}",
                pytrace=False,
            )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "--no-locale",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        self.port = free_port()
        options = {**SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.root)}
        opts = " ".join(f"-c {key}={value}" for key, value in options.items())
        # -w: pg_ctl itself polls until the server accepts connections, up to -t seconds.
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", str(START_DEADLINE), "start")  # fmt: skip

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.port = 0
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, on 127.0.0.1 (see the module docstring)."""
    server = PostgresServer(binaries())
    try:
        server.start()
        yield server
    finally:
        server.stop()


_databases = itertools.count(1)


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh empty database for one test, dropped after it: its libpq connection string."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.dsn(name)
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
