"""What an operator touches on the running daemon: a full disk, metrics, replay, attempts."""

import fcntl
import json
import os
import pty
import resource
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import urllib.request
from datetime import UTC, datetime

import pytest

from tests.builders import sigint_as_at_a_terminal
from tests.integration.conftest import Reply, wait_until
from tests.integration.test_recovery import GatedHooks


@pytest.mark.sqlite_only
def test_a_full_disk_refuses_acked_events_with_a_reason_and_loses_nothing(hooks, daemon_factory):
    """SQLite only: the daemon's own disk, its WAL file (a database server has its own disk)."""
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    assert d.send({"type": "T", "id": "before"})["ok"] is True
    wal = d.tmp / "state" / "journal.db-wal"
    # The file-size limit of the daemon process makes its writes fail like a full disk.
    limit = wal.stat().st_size + 50_000
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    replies = [
        d.send({"type": "T", "id": f"big{i}", "data": {"x": "y" * 20_000}}) for i in range(20)
    ]
    refused = {f"big{i}" for i, r in enumerate(replies) if not r["ok"]}
    accepted = {f"big{i}" for i, r in enumerate(replies) if r["ok"]}
    assert refused, "the limit should have refused some events"
    assert all(r["error"].startswith("journal write failed") for r in replies if not r["ok"])
    resource.prlimit(
        d.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    )
    assert d.send({"type": "T", "id": "after"})["ok"] is True
    wait_until(
        lambda: accepted | {"before", "after"} <= set(hooks.ids("/a")),
        what="every acked event delivered",
    )
    assert not refused & set(hooks.ids("/a"))  # refused means not stored: the producer resends
    assert "journal write failed" in d.log()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_status_and_health_endpoints_report_the_running_daemon(hooks, daemon_factory):
    port = _free_port()
    d = daemon_factory(
        [{"name": "m", "url": hooks.url("/m")}], metrics={"bind": f"127.0.0.1:{port}"}
    ).start()
    d.send({"type": "T", "id": "one"})
    d.send_raw(b"\xc1")
    wait_until(lambda: hooks.ids("/m") == ["one"], what="a delivery")
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(base + path, timeout=5) as r:
            return r.status, r.read().decode()

    def metrics() -> str:
        return get("/metrics")[1]

    wait_until(
        lambda: 'deliveries_total{outcome="delivered",webhook="m"} 1.0' in metrics(),
        what="the delivery counted",
    )
    text = metrics()
    assert "events_received_total 1.0" in text
    assert 'events_rejected_total{reason="not_msgpack"} 1.0' in text
    assert 'webhook_state{state="active",webhook="m"} 1.0' in text
    assert get("/healthz") == (200, "ok\n")
    status = json.loads(get("/status")[1])
    assert status["webhooks"][0]["name"] == "m" and status["events"]["rejected"] == 1
    code, page = get("/")
    assert code == 200 and "<table" in page and ">m<" in page


def test_replay_sends_delivered_events_again_and_attempts_shows_the_log(hooks, daemon_factory):
    hooks.script("/r", Reply(500, body=b"boom"))
    d = daemon_factory(
        [{"name": "r", "url": hooks.url("/r"), "retry": {"backoff": ["50ms"]}}]
    ).start()
    d.send({"type": "T", "id": "x1"})
    d.send({"type": "T", "id": "x2"})
    wait_until(lambda: d.webhook("r")["delivered"] == 2, what="two deliveries")

    def attempt_log() -> list[dict]:
        proc = d.cli("attempts", "r", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    # The journal writes the attempt log just after the supervisor counts a delivery.
    log = wait_until(lambda: len(attempt_log()) == 3 and attempt_log(), what="3 attempts logged")
    # Whichever event met the scripted 500 first was retried once; newest attempt first.
    (failed,) = [a for a in log if a["status"] == 500]
    assert failed["response"] == "boom"
    retried, other = failed["id"], ({"x1", "x2"} - {failed["id"]}).pop()
    assert [a["attempt"] for a in log if a["id"] == retried] == [2, 1]
    assert [a["attempt"] for a in log if a["id"] == other] == [1]

    proc = d.cli("replay", "r")
    assert proc.returncode == 0, proc.stderr
    # The retried event was sent twice, the other once; the replay sends both again.
    wait_until(
        lambda: [hooks.ids("/r", "T").count(i) for i in (retried, other)] == [3, 2],
        what="the replay",
    )


def test_attempts_shows_only_the_failed_ones_or_one_events_when_asked(hooks, daemon_factory):
    hooks.script("/r", Reply(503), Reply(500))
    d = daemon_factory(
        [{"name": "r", "url": hooks.url("/r"), "retry": {"backoff": ["50ms"]}}]
    ).start()
    d.send({"type": "T", "id": "bumpy"})  # 503, 500, then 2xx
    wait_until(lambda: d.webhook("r")["delivered"] == 1, what="the first delivery")
    d.send({"type": "T", "id": "smooth"})
    wait_until(lambda: d.webhook("r")["delivered"] == 2, what="the second delivery")

    def log(*flags: str) -> list[tuple]:
        proc = d.cli("attempts", "r", "--json", *flags)
        assert proc.returncode == 0, proc.stderr
        return [(a["id"], a["attempt"], a["status"]) for a in json.loads(proc.stdout)]

    wait_until(lambda: len(log()) == 4, what="4 attempts logged")
    assert log("--failed") == [("bumpy", 2, 500), ("bumpy", 1, 503)]
    assert log("--event", "smooth") == [("smooth", 1, 200)]
    assert log("--event", "bumpy", "--failed", "--limit", "1") == [("bumpy", 2, 500)]
    assert log("--event", "nobody") == []


def test_replay_until_a_time_or_of_one_event_sends_each_once_more_and_repeats_add_nothing(
    daemon_factory,
):
    hooks = GatedHooks()
    try:
        d = daemon_factory([{"name": "r", "url": hooks.url("/r")}]).start()
        for n, eid in enumerate(("old-1", "old-2"), 1):
            d.send({"type": "T", "id": eid})
            wait_until(lambda n=n: d.webhook("r")["delivered"] == n, what=f"delivery {n}")
        between = datetime.now(UTC)
        wait_until(lambda: datetime.now(UTC) > between, what="the clock to move on")
        d.send({"type": "T", "id": "new-1"})
        wait_until(lambda: d.webhook("r")["delivered"] == 3, what="delivery 3")

        def replay(*flags: str) -> str:
            proc = d.cli("replay", "r", "--no-wait", *flags)  # what it queued, without waiting
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.strip()

        assert replay("--until", between.isoformat()) == "r: 2 deliveries requeued"
        wait_until(lambda: len(hooks.ids("/r")) == 5, what="the replay")
        gate = hooks.hold("/r")  # what is replayed next stays queued or in flight
        assert replay("--event", "new-1") == "r: 1 deliveries requeued"
        wait_until(lambda: len(hooks.ids("/r")) == 6, what="the replayed attempt in flight")
        assert replay("--event", "new-1") == "r: 0 deliveries requeued"  # already queued
        assert replay("--until", between.isoformat(), "--event", "new-1") == (
            "r: 0 deliveries requeued"  # both conditions hold for none
        )
        gate.set()
        wait_until(lambda: d.webhook("r")["delivered"] == 6, what="the replays delivered")
        ids = hooks.ids("/r")
        assert {eid: ids.count(eid) for eid in set(ids)} == {"old-1": 2, "old-2": 2, "new-1": 2}
    finally:
        for gate in hooks.gates.values():
            gate.set()
        hooks.close()


class Terminal:
    """The CLI run on a pseudo-terminal 100 columns wide, as an operator would run it."""

    def __init__(self, d, *args: str):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", *args, "-c", str(d.config_path)],
            stdin=slave, stdout=slave, stderr=slave, cwd=d.tmp,
            preexec_fn=sigint_as_at_a_terminal,
        )  # fmt: skip
        os.close(slave)
        self.master, self.chunks = master, []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the CLI exited and closed the terminal
                break
            if not chunk:
                break
            self.chunks.append(chunk)

    def screen(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait(self) -> int:
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code


def _delivered_once(d, hooks, path: str, n: int) -> None:
    for i in range(n):
        d.send({"type": "T", "id": f"e{i}"})
    wait_until(lambda: d.webhook(path.strip("/"))["delivered"] == n, what=f"{n} deliveries")


def test_replay_on_a_terminal_shows_a_progress_bar_and_ends_with_a_summary(daemon_factory):
    hooks = GatedHooks()
    try:
        d = daemon_factory([{"name": "p", "url": hooks.url("/p"), "max_in_flight": 1}]).start()
        _delivered_once(d, hooks, "/p", 20)
        gate = hooks.hold("/p")  # the replay's first attempt waits here
        term = Terminal(d, "replay", "p")
        wait_until(lambda: "0/20" in term.screen(), what="the bar at 0 of 20")
        assert term.proc.poll() is None  # waiting for the deliveries
        gate.set()
        assert term.wait() == 0, term.screen()
        screen = term.screen()
        assert "100%|" in screen and "20/20" in screen and "delivered=20" in screen, screen
        assert screen.rstrip().splitlines()[-1] == "p: 20 queued, 20 delivered, 0 failed"
        ids = hooks.ids("/p")
        assert {eid: ids.count(eid) for eid in set(ids)} == {f"e{i}": 2 for i in range(20)}
    finally:
        for gate in hooks.gates.values():
            gate.set()
        hooks.close()


def test_ctrl_c_stops_watching_a_replay_and_the_replay_goes_on(daemon_factory):
    hooks = GatedHooks()
    try:
        d = daemon_factory([{"name": "p", "url": hooks.url("/p"), "max_in_flight": 1}]).start()
        _delivered_once(d, hooks, "/p", 5)
        gate = hooks.hold("/p")
        term = Terminal(d, "replay", "p")
        wait_until(lambda: "0/5" in term.screen(), what="the bar at 0 of 5")
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert term.wait() == 130
        assert "p: stopped watching; the replay goes on: so far 5 queued" in term.screen()
        gate.set()
        wait_until(lambda: d.webhook("p")["delivered"] == 10, what="the replay delivered")
        assert d.webhook("p")["replay"]["remaining"] == 0
    finally:
        for gate in hooks.gates.values():
            gate.set()
        hooks.close()


def test_replay_not_on_a_terminal_prints_only_the_summary_once_all_are_delivered(
    hooks, daemon_factory
):
    d = daemon_factory([{"name": "p", "url": hooks.url("/p")}]).start()
    _delivered_once(d, hooks, "/p", 8)
    proc = d.cli("replay", "p")
    assert (proc.returncode, proc.stdout) == (0, "p: 8 queued, 8 delivered, 0 failed\n")
    assert proc.stderr == ""
    assert sorted(hooks.ids("/p")) == sorted(f"e{i}" for i in range(8) for _ in (1, 2))
