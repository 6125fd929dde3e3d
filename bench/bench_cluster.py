"""The PostgreSQL rows of ``make bench`` (issue 10): several daemons on one database.

- ``pg-N`` (N = 1, 2, 3): the fan-out phase's workload (``Sizes.fanout_events``
  events, each matching all of ``Sizes.fanout_hooks`` webhooks) on N daemons that
  share one database, each with the same webhooks config and its own state dir and
  sockets. The leases are settled first (every webhook owned, every daemon holding
  some, none past its fair share); then one PUSH socket connected to every daemon's
  ingest spreads the events over them round robin. Each row is compared with the
  SQLite daemon's ``fanout`` phase of the same run: the cost of the shared store.
- ``pg-failover``: two daemons, two webhooks (one each); a steady stream of events
  through the daemon that stays; the owner of the other webhook is killed with
  SIGKILL (its sender processes with it, as a machine that dies); the figure is the
  time from the kill to nginx's first arrival for that webhook of an event sent
  after the kill, which only the successor can have delivered. Every event sent
  after the kill must reach both webhooks.

The server is the tests' own (``tests/postgres.py``: Debian's binaries, a data dir
of its own, 127.0.0.1, a free port), started at the first PostgreSQL phase and
stopped at the end of the bench, a fresh database per phase. Unlike the tests'
server it keeps production's durability (``SETTINGS``: fsync, synchronous_commit
and full_page_writes on), as the SQLite rows keep theirs (``journal.sync: full``):
an ack waits for the WAL flush on both sides.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from unittest import mock

import yaml
import zmq
from _harness import ROOT, Daemon, base_config, descendants, tree_cpu_seconds, wait_until
from _phases import HALF_MS, Run, frame

sys.path.insert(0, str(ROOT))  # tests.postgres, before any other "tests" on the path

LEASE = 5.0  # seconds, journal.lease of every PostgreSQL daemon of the bench
QUICK_LEASE = 2.0  # with --quick: a shorter failover
SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
RATE = 200  # events/s through the surviving daemon in the failover phase
DAEMONS = (1, 2, 3)
PHASES = [f"pg-{n}" for n in DAEMONS] + ["pg-failover"]
REFERENCE = "fanout"  # the SQLite phase the pg-N rows are compared with


class Cluster:
    """The bench's PostgreSQL server (started by the first phase that needs it) and its phases."""

    def __init__(self) -> None:
        self.lease = LEASE  # bench.py --lease
        self.settings = dict(SETTINGS)
        self.server: Any = None  # tests.postgres.PostgresServer, once started
        self.version = "-"  # the server's, once started
        self._databases = itertools.count(1)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ------------------------------------------------------------------ the server

    def _dsn(self) -> str:
        """A fresh empty database on the server (started first if it is not yet)."""
        import psycopg
        import pytest

        from tests import postgres

        try:  # the tests' helpers report a failure by pytest.fail, which is no Exception
            if self.server is None:
                server = postgres.PostgresServer(postgres.binaries())
                with mock.patch.dict(postgres.SETTINGS, self.settings):
                    server.start()
                self.server = server
                with psycopg.connect(server.dsn()) as conn:
                    self.version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        except pytest.fail.Exception as e:
            raise RuntimeError(f"PostgreSQL could not start: {e}") from None
        name = f"bench_{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(self.server.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.server.dsn(name)

    def server_cpu_seconds(self) -> float:
        """CPU seconds of the postmaster and every backend (its children)."""
        with open(self.server.data / "postmaster.pid") as f:
            return tree_cpu_seconds(int(f.readline()))

    # ------------------------------------------------------------------ daemons

    def _daemons(self, run: Run, phase: str, n: int, hooks: list[dict]) -> list[Daemon]:
        """``n`` daemons on one fresh database, started and READY; stopped by ``_stop``."""
        home = run.tmp / phase
        home.mkdir(parents=True)
        dsn_file = home / "pg.dsn"
        dsn_file.write_text(self._dsn() + "\n")
        dsn_file.chmod(0o600)
        made: list[Daemon] = []
        try:
            for k in range(1, n + 1):
                workdir = home / f"node{k}"
                workdir.mkdir()
                cfg = base_config(workdir, hooks, node=f"node{k}")
                cfg["journal"] = {
                    "backend": "postgresql",
                    "dsn_file": str(dsn_file),
                    "lease": self.lease,
                }
                cfg["defaults"]["signature"] = "standard"  # as the SQLite phases
                for setting in filter(None, os.environ.get("BENCH_SET", "").split(",")):
                    key, _, value = setting.partition("=")  # bench.py --set KEY=VALUE
                    cfg[key] = yaml.safe_load(value)
                path = workdir / "router.yaml"
                path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                # named as its phase, the first one's --profile shows under the phase's name
                made.append(Daemon(workdir, path, phase if k == 1 else f"{phase}-node{k}"))
                made[-1].start(ready_timeout=120)
            settled = wait_until(
                lambda: _settled(made[0], {f"node{k}" for k in range(1, n + 1)}, len(hooks)),
                timeout=self.lease * 8 + 30,
                interval=0.2,
            )
            if not settled:
                raise RuntimeError(f"leases not settled over {n} daemon(s): {_owners(made[0])}")
            return made
        except BaseException:
            _stop(made)
            raise

    # ------------------------------------------------------------------ the phases

    def rate(self, run: Run, n: int) -> dict:
        """The fan-out workload over ``n`` daemons on one database (see the module docstring)."""
        s = run.sizes
        hooks = [
            {"name": f"hook-{i}", "url": run.nginx.url(f"/pg/{i}"), "events": ["TODO_CREATED"]}
            for i in range(s.fanout_hooks)
        ]
        daemons = self._daemons(run, f"pg-{n}", n, hooks)
        try:
            ids = [f"{run.tag}-pg{n}-{i}" for i in range(s.fanout_events)]
            pg0 = self.server_cpu_seconds()
            out = run._flood(
                [f"ipc://{d.tmp}/pull.sock" for d in daemons],
                [frame(eid) for eid in ids],
                {(f"/pg/{i}", eid) for eid in ids for i in range(s.fanout_hooks)},
                lambda: sum(tree_cpu_seconds(d.pid) for d in daemons),
                daemons[0].pid if n == 1 else 0,  # main_cores: one daemon's own process
            )
            out["pg_cores"] = (self.server_cpu_seconds() - pg0) / out["wall_s"]
            out["daemons"] = n
            return out
        finally:
            _stop(daemons)

    def failover(self, run: Run) -> dict:
        """Seconds from SIGKILL of a webhook's owner to its first delivery by the successor."""
        hooks = [{"name": f"hook-{i}", "url": run.nginx.url(f"/fo/{i}")} for i in range(2)]
        daemons = self._daemons(run, "pg-failover", 2, hooks)
        try:
            owners = _owners(daemons[0])
            victim = daemons[0] if owners["hook-0"] == "node1" else daemons[1]
            survivor = next(d for d in daemons if d is not victim)
            run.nginx.mark()
            sock = run._socket(zmq.PUSH, [f"ipc://{survivor.tmp}/pull.sock"])
            try:
                out = self._kill_while_sending(run, sock, victim)
            finally:
                sock.close()
            out["lease_s"] = self.lease
            return out
        finally:
            _stop(daemons)

    def _kill_while_sending(self, run: Run, sock: zmq.Socket, victim: Daemon) -> dict:
        """Events at ``RATE``/s; the victim killed after one second; until the successor sends."""
        tree = [victim.pid, *descendants(victim.pid)]
        sent: dict[str, float] = {}
        killed_at = 0.0
        deadline = time.monotonic() + self.lease * 4 + 30
        start = time.time()
        for i in itertools.count():
            due = start + i / RATE
            while (wait := due - time.time()) > 0:
                time.sleep(min(wait, 0.002))
            if not killed_at and time.time() - start >= 1.0:
                killed_at = time.time()
                for pid in tree:  # the daemon first, then its sender processes
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                victim.proc.wait(10)
            eid = f"{run.tag}-fo-{i}"
            sent[eid] = time.time()
            sock.send(frame(eid))
            if killed_at and i % 20 == 0 and _first_after(run, killed_at, sent) is not None:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no delivery to /fo/0 within {self.lease * 4 + 30:g} s")
        after = {eid for eid, t in sent.items() if t > killed_at}
        if not run._wait({(f"/fo/{k}", eid) for eid in after for k in range(2)}):
            raise RuntimeError("events sent after the kill were not all delivered")
        first = _first_after(run, killed_at, sent)
        got = Counter((h.uri, h.wid) for h in run.nginx.hits())
        return {
            "failover_s": first - killed_at,
            "deliveries": sum(got.values()),
            "dups": sum(got.values()) - len(got),
        }


def _first_after(run: Run, killed_at: float, sent: dict[str, float]) -> float | None:
    """nginx's first arrival at /fo/0 of an event sent after the kill (only the successor's)."""
    times = [
        h.at + HALF_MS
        for h in run.nginx.hits()
        if h.uri == "/fo/0" and sent.get(h.wid, 0.0) > killed_at
    ]
    return min(times, default=None)


def _owners(d: Daemon) -> dict[str, str | None]:
    proc = d.cli("status", "--json")
    if proc.returncode != 0:
        return {}
    return {w["name"]: w.get("owner") for w in json.loads(proc.stdout)["webhooks"]}


def _settled(d: Daemon, nodes: set[str], webhooks: int) -> bool:
    """Every webhook owned, by these nodes only, each holding some and none past its share."""
    held = Counter(_owners(d).values())
    share = -(-webhooks // len(nodes))
    return sum(held.values()) == webhooks and set(held) == nodes and max(held.values()) <= share


def _stop(daemons: list[Daemon]) -> None:
    for d in daemons:
        try:
            if d.alive():
                d.terminate(timeout=30)
        finally:
            d.close()


# ---------------------------------------------------------------------- the table


def heading(runs: int, lease: float, settings: dict[str, str], version: str) -> str:
    return (
        f"\nSeveral daemons on one PostgreSQL {version} (issue 10): median of {runs} run(s);"
        f" the fan-out workload (row 2a's) on each; lease {lease:g} s;"
        f" server {', '.join(f'{k}={v}' for k, v in settings.items())}"
    )


def rows(lease: float) -> list[tuple[str, str, Callable[[dict], float], str, str, float | None]]:
    """bench.py's ``Target`` fields of each row; a bar only where issue 10 sets one."""

    def rate(n: int) -> Callable[[dict], float]:
        return lambda r: r[f"pg-{n}"]["deliveries_s"]

    def ratio(n: int) -> Callable[[dict], float]:
        return lambda r: r[f"pg-{n}"]["deliveries_s"] / r[REFERENCE]["deliveries_s"]

    out = []
    for n, (a, b) in zip(DAEMONS, ("ab", "cd", "ef"), strict=True):
        label = f"{n} daemon{'s' if n > 1 else ''} on PostgreSQL"
        out.append((f"7{a}", f"{label}: deliveries/s", rate(n), "/s", ">=", None))
        out.append((f"7{b}", f"{label}: x SQLite, 1 daemon (2a)", ratio(n), "x", ">=",
                    0.5 if n == 1 else None))  # fmt: skip
    out.append(("7g", f"kill -9 to the successor's first POST (lease {lease:g} s)",
                lambda r: r["pg-failover"]["failover_s"], "s", "<=", None))  # fmt: skip
    return out


FOOTNOTE = (
    "7a-7f: N daemons, the events spread over their ingest sockets, against the SQLite"
    " daemon's fanout phase of the same run; the pg-N lines of the phases below add up the"
    " N daemons' CPU (the server's own is pg_cores in the run lines). 7g: the first POST"
    " of an event sent after the kill."
)
