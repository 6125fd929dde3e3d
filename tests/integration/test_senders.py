"""The sender processes of a running daemon: killed, replaced, never orphaned, never losing."""

from __future__ import annotations

import os
import signal

from tests.integration.conftest import wait_until
from tests.integration.test_recovery import GatedHooks


def sender_pids(daemon_pid: int) -> list[int]:
    """The daemon's child processes: its senders."""
    pids = []
    for tid in os.listdir(f"/proc/{daemon_pid}/task"):
        with open(f"/proc/{daemon_pid}/task/{tid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_sender_killed_mid_stream_loses_nothing_and_harms_no_webhook(tmp_path, daemon_factory):
    hooks = GatedHooks()
    try:
        gate = hooks.hold("/s")
        d = daemon_factory([{"name": "s", "url": hooks.url("/s")}], delivery_processes=1).start()
        (sender,) = wait_until(lambda: sender_pids(d.proc.pid), what="the sender process")
        ids = [f"k{i}" for i in range(10)]
        for eid in ids:
            d.send({"type": "T", "id": eid})
        wait_until(lambda: len(hooks.at("/s")) == 4, what="4 attempts in flight (max_in_flight)")
        os.kill(sender, signal.SIGKILL)
        wait_until(lambda: "sender process 0 stopped" in d.log(), what="the death logged")
        gate.set()
        wait_until(lambda: set(hooks.ids("/s")) == set(ids), timeout=30, what="every event")
        w = wait_until(lambda: d.webhook("s")["delivered"] == 10 and d.webhook("s"),
                       timeout=30, what="10 delivered")  # fmt: skip
        # The lost attempts were the router's fault: the endpoint's health is untouched.
        assert (w["state"], w["health"], w["consecutive_failures"], w["failed"]) == (
            "active", "HEALTHY", 0, 0
        )  # fmt: skip
        (new,) = sender_pids(d.proc.pid)
        assert new != sender and gone(sender)
        assert "4 attempts in flight; starting another" in d.log()
    finally:
        gate.set()
        hooks.close()


def test_a_daemon_killed_with_9_leaves_no_sender_behind(hooks, daemon_factory):
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    d.send({"type": "T", "id": "one"})
    wait_until(lambda: hooks.at("/a"), what="a delivery")
    senders = sender_pids(d.proc.pid)
    assert len(senders) == 2  # the default
    d.kill9()
    wait_until(lambda: all(gone(pid) for pid in senders), what="the senders to exit by themselves")


def test_a_daemon_stopped_stops_its_senders(hooks, daemon_factory):
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    senders = sender_pids(d.proc.pid)
    assert d.stop() == 0
    assert senders and all(gone(pid) for pid in senders)
    assert "sender processes stopped" in d.log()


def test_senders_in_the_daemons_own_process_still_deliver(hooks, daemon_factory):
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}], delivery_processes=0).start()
    d.send({"type": "T", "id": "in-process"})
    wait_until(lambda: hooks.ids("/a") == ["in-process"], what="the delivery")
    assert sender_pids(d.proc.pid) == []


def test_systemd_sends_sigterm_to_every_process_and_the_senders_wait_for_the_daemon(
    hooks, daemon_factory
):
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    senders = sender_pids(d.proc.pid)
    for pid in senders:
        os.kill(pid, signal.SIGTERM)  # KillMode=control-group does this; the unit says mixed
        os.kill(pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    for n in range(4):  # the senders take turns: each sends some
        d.send({"type": "T", "id": f"after-sigterm-{n}"})
    wait_until(lambda: len(hooks.ids("/a")) == 4, what="the deliveries")
    assert sorted(sender_pids(d.proc.pid)) == sorted(senders)
