"""A webhook recovers by itself: probes after a restart or reload, supervisors that cannot start.

And the edges of reload and of an operator's hand: a webhook removed and added
again, a manual disable while a health check is in flight.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading

import pytest

from tests.integration.conftest import HookServer, Reply, wait_until

HEALTH_CHECK = "WEBHOOK_HEALTH_CHECK"
NOBODY_UID = 2_147_480_001  # a real uid no process of this machine uses


class GatedHooks(HookServer):
    """A HookServer whose answers on a path can be held until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}

    def hold(self, path: str) -> threading.Event:
        self.gates[path] = gate = threading.Event()
        return gate

    def _record(self, path, headers, body):
        reply = super()._record(path, headers, body)  # recorded first: the test sees it
        gate = self.gates.get(path)
        if gate is not None:
            gate.wait(60)
        return reply


@pytest.fixture
def gated():
    server = GatedHooks()
    yield server
    for gate in server.gates.values():
        gate.set()
    server.close()


def exhausted(d, name: str) -> dict:
    return wait_until(
        lambda: d.webhook(name)["disabled_reason"] == "exhausted" and d.webhook(name),
        what=f"{name} disabled by failures",
    )


def failing(hooks, path: str, **extra) -> dict:
    """A webhook on ``path`` that gives up after two quick failures."""
    hooks.default(path, Reply(500))
    webhook = {"name": path.strip("/"), "url": hooks.url(path), "timeout": "30s"}
    webhook["retry"] = {"attempts": 2, "backoff": ["20ms"]}
    webhook.update(extra)
    return webhook


# --------------------------------------------------------------------------- point 2


def test_a_webhook_disabled_by_failures_is_probed_again_after_a_restart(hooks, daemon_factory):
    d = daemon_factory([failing(hooks, "/p", health={"probe_interval": "200ms"})]).start()
    d.send({"type": "T", "id": "p1"})
    exhausted(d, "p")
    wait_until(lambda: hooks.at("/p", HEALTH_CHECK), what="a probe before the restart")
    assert d.stop() == 0
    before = len(hooks.at("/p", HEALTH_CHECK))
    d.start()
    wait_until(lambda: len(hooks.at("/p", HEALTH_CHECK)) > before, what="a probe after it")
    hooks.default("/p", Reply(200))
    wait_until(lambda: hooks.ids("/p", "T") == ["p1", "p1", "p1"], what="the flush")
    assert d.webhook("p")["state"] == "active"


def test_a_reload_that_adds_probe_interval_to_a_disabled_webhook_probes_it(hooks, daemon_factory):
    d = daemon_factory([failing(hooks, "/q")]).start()
    d.send({"type": "T", "id": "q1"})
    exhausted(d, "q")
    assert hooks.at("/q", HEALTH_CHECK) == []  # no probe_interval, no probes
    hooks.default("/q", Reply(200))
    d.settings["webhooks"][0]["health"] = {"probe_interval": "200ms"}
    d.write()
    d.reload()
    wait_until(lambda: hooks.ids("/q", "T") == ["q1", "q1", "q1"], what="probe and flush")
    assert len(hooks.at("/q", HEALTH_CHECK)) == 1
    assert d.webhook("q")["state"] == "active"


# --------------------------------------------------------------------------- point 5


FILLER = """
import sys, threading
stop = threading.Event()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


class ThreadLimit:
    """RLIMIT_NPROC on the daemon, reached and lifted from outside.

    The limit counts every thread of the daemon's real uid. As a user, the test
    lowers the daemon's limit below that count. Root ignores the limit and this
    sandbox gives root no CAP_SYS_RESOURCE to change another uid's limits, so
    there the daemon runs with a real uid of its own, a fixed limit and without
    the capabilities that lift it, and a second process of that uid holds enough
    threads to reach the limit.
    """

    LIMIT = 400  # the daemon's own limit as root: far above what it starts with

    def __init__(self, d) -> None:
        self.d = d
        self.root = os.geteuid() == 0
        self.filler: subprocess.Popen | None = None
        self.saved = resource.getrlimit(resource.RLIMIT_NPROC)  # the daemon inherits ours
        if self.root:
            d.wrapper = [
                "setpriv",
                f"--ruid={NOBODY_UID}",
                "--bounding-set=-sys_resource,-sys_admin",
            ]
            d.wrapper += ["prlimit", f"--nproc={self.LIMIT}", "--"]

    def reach(self) -> None:
        pid = self.d.proc.pid
        if not self.root:
            self.saved = resource.prlimit(pid, resource.RLIMIT_NPROC, (1, self.saved[1]))
            return
        threads = len(os.listdir(f"/proc/{pid}/task"))
        self.filler = subprocess.Popen(
            ["setpriv", f"--ruid={NOBODY_UID}", sys.executable, "-c", FILLER,
             str(self.LIMIT - threads + 20)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.filler.stdout.readline() == "ready\n", "the filler did not start"

    def lift(self) -> None:
        if not self.root:
            resource.prlimit(self.d.proc.pid, resource.RLIMIT_NPROC, self.saved)
        elif self.filler is not None:
            self.filler.stdin.close()
            self.filler.wait(10)
            self.filler = None


def test_a_webhook_whose_supervisor_cannot_start_delivers_once_threads_are_free(
    hooks, daemon_factory
):
    d = daemon_factory([{"name": "t", "url": hooks.url("/t")}], delivery_workers=2)
    limit = ThreadLimit(d)
    d.start()
    try:
        # The webhook is idle: its supervisor thread starts with its first event.
        limit.reach()
        for i in range(3):
            assert d.send({"type": "T", "id": f"t{i}"})["ok"] is True  # acked: durable
        wait_until(lambda: "can't start new thread" in d.log(), what="a failed start")
        assert hooks.at("/t") == []
    finally:
        limit.lift()
    wait_until(lambda: sorted(hooks.ids("/t")) == ["t0", "t1", "t2"], 30, "the deliveries")
    log = d.log()
    assert log.count("webhook t: cannot start its supervisor") == 1  # one line per burst
    assert "webhook t: supervisor started after" in log
    assert d.stop() == 0
    assert "actors still alive" not in d.log()  # the failed starts left no actor behind


# --------------------------------------------------------------------------- point 6


def test_a_webhook_removed_and_added_again_keeps_its_saved_state(hooks, daemon_factory):
    keep = {"name": "keep", "url": hooks.url("/keep")}
    back = {"name": "back", "url": hooks.url("/back")}
    d = daemon_factory([keep, back]).start()
    for i in range(2):
        d.send({"type": "T", "id": f"b{i}"})
    wait_until(lambda: d.webhook("back")["delivered"] == 2, what="two deliveries")
    assert d.cli("disable", "back").returncode == 0
    d.settings["webhooks"] = [keep]
    d.write()
    d.reload()
    assert [w["name"] for w in d.status()["webhooks"]] == ["keep"]
    d.settings["webhooks"] = [keep, back]
    d.write()
    d.reload()
    w = wait_until(lambda: d.webhook("back")["delivered"] == 2 and d.webhook("back"), 10, "it")
    assert (w["state"], w["disabled_reason"]) == ("disabled", "manual")
    d.send({"type": "T", "id": "b2"})
    wait_until(lambda: d.webhook("back")["queued"] == 1, what="a held delivery")
    # On PostgreSQL the reload's READY comes before the lease of back is taken again: until
    # then, enable answers that no daemon delivers it yet.
    wait_until(lambda: d.cli("enable", "back").returncode == 0, what="back enabled")
    wait_until(lambda: "b2" in hooks.ids("/back", "T"), what="the held one")
    assert sorted(hooks.ids("/back", "T")) == ["b0", "b1", "b2"]  # b0, b1 may race


def test_a_manual_disable_is_not_undone_by_a_health_check_in_flight(gated, daemon_factory):
    d = daemon_factory([failing(gated, "/g", health={"probe_interval": "100ms"})]).start()
    d.send({"type": "T", "id": "g1"})
    exhausted(d, "g")
    gate = gated.hold("/g")
    gated.default("/g", Reply(200))
    wait_until(lambda: gated.at("/g", HEALTH_CHECK), what="a probe, held by the endpoint")
    proc = d.cli("disable", "g")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gate.set()  # the probe's 200 comes back after the operator's disable
    wait_until(lambda: "health check passed" in d.log(), what="the probe's answer")
    w = d.webhook("g")
    assert (w["state"], w["disabled_reason"]) == ("disabled", "manual")
    assert gated.ids("/g", "T") == ["g1", "g1"]  # nothing flushed
    proc = d.cli("enable", "g")  # the operator's enable still works
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_until(lambda: gated.ids("/g", "T") == ["g1", "g1", "g1"], what="the flush")
    assert d.webhook("g")["state"] == "active"
