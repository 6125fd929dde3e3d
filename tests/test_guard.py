"""Which addresses the private-network guard refuses.

That guarded connections refuse them at connect time, and that the resolver bounds
whole attempts, is tested in test_delivery.py; here the resolver on its own.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from router.guard import Resolver, ResolveTimeout, is_blocked


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "::", "fe80::1%eth0", "fc00::1",
     "::ffff:127.0.0.1", "::ffff:10.1.2.3", "ff02::1", "not-an-ip"],
)  # fmt: skip
def test_private_and_special_addresses_are_blocked(ip):
    assert is_blocked(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_not_blocked(ip):
    assert not is_blocked(ip)


# --------------------------------------------------------------------------- the resolver


def answer(host, port, family=0, type=0, proto=0, flags=0):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]


def test_a_stuck_lookup_holds_its_thread_until_it_returns_and_literals_need_none():
    started, release = threading.Event(), threading.Event()

    def lookup(host, *args):
        if host == "slow.test":
            started.set()
            release.wait(30)
        return answer(host, *args)

    resolver = Resolver(lookup, threads=1)
    try:
        deadline = time.monotonic() + 10
        while not started.is_set():  # a lookup its caller gave up on before it began is skipped
            assert time.monotonic() < deadline, "the lookup never began"
            with pytest.raises(ResolveTimeout, match=r"^timeout resolving host$"):
                resolver.resolve("slow.test", 80, 0, time.monotonic() + 0.1)
        # The one thread is stuck in a lookup whose caller has given up.
        with pytest.raises(ResolveTimeout, match="all 1 resolver threads are stuck"):
            resolver.resolve("fast.test", 80, 0, time.monotonic() + 30)
        assert resolver.resolve("192.0.2.7", 80, 0, time.monotonic())[0][4] == ("192.0.2.1", 80)
        release.set()  # the lookup returns: its thread serves the next one

        def resolved() -> list | None:
            with contextlib.suppress(ResolveTimeout):
                return resolver.resolve("fast.test", 443, 0, time.monotonic() + 30)
            return None

        deadline = time.monotonic() + 10
        while (infos := resolved()) is None:
            assert time.monotonic() < deadline, "the resolver thread was never freed"
            time.sleep(0.01)
        assert infos[0][4] == ("192.0.2.1", 443)
    finally:
        release.set()
        resolver.stop()


def test_a_failed_lookup_reaches_the_caller():
    def lookup(host, *args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    resolver = Resolver(lookup, threads=2)
    try:
        with pytest.raises(socket.gaierror):
            resolver.resolve("nowhere.test", 80, 0, time.monotonic() + 30)
    finally:
        resolver.stop()
