"""The sender processes: real child processes sending to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import queue
import signal
import socket
import time

import pytest
from standardwebhooks.webhooks import Webhook

from router.delivery import LEASE_GONE
from router.messages import Attempt, AttemptResult, Payload
from router.senders import Senders
from router.trust import Trust
from tests.builders import KEY, PAYLOAD, hook
from tests.test_delivery import serve, whsec

WAIT = 30.0  # seconds any one answer may take at most on a loaded machine


@pytest.fixture
def server():
    with serve() as s:
        yield s


@pytest.fixture
def senders():
    s = Senders(processes=1, workers=4)
    s.start()
    s.ready(WAIT)
    yield s
    s.stop(1.0)


def child_pids(s: Senders) -> list[int]:
    return [child.proc.pid for child in s._children if child.proc is not None]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


class Results(queue.SimpleQueue):
    """A reply that takes results one by one or together (a tuple), as the senders give them."""

    def __call__(self, r: AttemptResult | tuple[AttemptResult, ...]) -> None:
        for one in r if isinstance(r, tuple) else (r,):
            self.put(one)


def attempt(url: str, seq: int = 1, number: int = 1, payload: Payload = PAYLOAD, **cfg) -> Attempt:
    return Attempt(hook(url, **cfg), seq, payload, number)


def test_an_attempt_is_sent_by_the_child_and_its_result_comes_back(senders, server):
    results = Results()
    webhook = hook(f"http://127.0.0.1:{server.port}/in", headers=(("X-Team", "blue"),))
    senders.submit(Attempt(webhook, 7, PAYLOAD, 2), results)
    r = results.get(timeout=WAIT)
    assert (r.webhook, r.seq, r.number, r.ok, r.status, r.response) == (
        "crm-sync", 7, 2, True, 200, "thanks"
    )  # fmt: skip
    (req,) = server.received
    assert req.path == "/in"
    assert req.headers["X-Team"] == "blue"
    assert req.headers["webhook-attempt"] == "2"
    Webhook(whsec(KEY)).verify(req.body, req.headers)  # signed in the child with the secret
    assert os.getpid() not in child_pids(senders)


def test_failures_come_back_as_facts(senders, server):
    server.behaviour.status = 503
    server.behaviour.headers = {"Retry-After": "7"}
    results = Results()
    senders.submit(attempt(f"http://127.0.0.1:{server.port}/x"), results)
    r = results.get(timeout=WAIT)
    assert (r.ok, r.status, r.error, r.retry_after, r.router_fault) == (
        False, 503, "HTTP 503", 7.0, False
    )  # fmt: skip


def test_many_attempts_of_many_configs_each_get_their_own_answer(senders, server):
    results = Results()
    configs = [hook(f"http://127.0.0.1:{server.port}/h{n}", name=f"h{n}") for n in range(5)]
    for seq in range(1, 101):
        senders.submit(Attempt(configs[seq % 5], seq, PAYLOAD, 1), results)
    got = [results.get(timeout=WAIT) for _ in range(100)]
    assert sorted(r.seq for r in got) == list(range(1, 101))
    assert all(r.ok and r.webhook == f"h{r.seq % 5}" for r in got)
    assert sorted(req.path for req in server.received) == sorted(
        f"/h{s % 5}" for s in range(1, 101)
    )


def test_a_body_the_router_cannot_encode_is_the_routers_fault_not_a_stuck_attempt(senders, server):
    results = Results()
    bad = Payload(id="e1", type="T", body='{"id":"e1","data":"\ud800"')  # a lone surrogate
    senders.submit(attempt(f"http://127.0.0.1:{server.port}/x", payload=bad), results)
    r = results.get(timeout=WAIT)
    assert r.router_fault and not r.ok
    assert r.error == "internal error: cannot build the request: the event body cannot be " \
        "encoded as UTF-8"  # fmt: skip
    assert server.received == []


def test_a_child_that_dies_answers_its_attempts_as_lost_and_is_replaced(senders, server):
    server.behaviour.delay = 60.0  # the attempts are in flight when the child dies
    results = Results()
    url = f"http://127.0.0.1:{server.port}/slow"
    for seq in (1, 2, 3):
        senders.submit(attempt(url, seq=seq, timeout=90.0), results)
    wait_until(lambda: len(server.received) == 3, "3 requests in flight")
    (old,) = child_pids(senders)
    os.kill(old, signal.SIGKILL)
    lost = sorted((results.get(timeout=WAIT) for _ in range(3)), key=lambda r: r.seq)
    assert [r.seq for r in lost] == [1, 2, 3]
    for r in lost:
        assert (r.ok, r.router_fault, r.error) == (
            False, True, "internal error: the sender process stopped"
        )  # fmt: skip
    server.behaviour.delay = 0.0
    wait_until(lambda: child_pids(senders) and child_pids(senders) != [old], "a new child")
    senders.ready(WAIT)
    senders.submit(attempt(url, seq=4), results)
    r = results.get(timeout=WAIT)
    assert (r.seq, r.ok) == (4, True)  # the new child knows the config anew
    assert not alive(old)


def test_stop_lets_running_attempts_finish_and_drops_the_queued_ones(server):
    s = Senders(processes=1, workers=1)
    s.start()
    s.ready(WAIT)
    server.behaviour.delay = 0.5
    results = Results()
    url = f"http://127.0.0.1:{server.port}/x"
    for seq in (1, 2, 3):
        s.submit(attempt(url, seq=seq), results)
    wait_until(lambda: len(server.received) == 1, "the first attempt running")
    (pid,) = child_pids(s)
    s.stop(10.0)
    assert results.get(timeout=WAIT).seq == 1  # the running one finished and was answered
    assert results.empty()  # the queued ones: no answer, their deliveries stay pending
    assert len(server.received) == 1
    assert not alive(pid)


def test_a_child_whose_daemon_is_gone_exits():
    s = Senders(processes=1, workers=2)
    s.start()
    s.ready(WAIT)
    (pid,) = child_pids(s)
    s._stopping = True  # as if the daemon died: nobody restarts the child
    s._children[0].sock.shutdown(socket.SHUT_WR)  # what the child sees of a daemon killed -9
    wait_until(lambda: not alive(pid), "the child to exit")


def test_attempts_take_turns_over_the_processes_even_for_one_webhook(server):
    s = Senders(processes=2, workers=4)
    s.start()
    try:
        s.ready(WAIT)
        assert len(set(child_pids(s))) == 2
        results = Results()
        webhook = hook(f"http://127.0.0.1:{server.port}/one")
        for seq in range(1, 21):
            s.submit(Attempt(webhook, seq, PAYLOAD, 1), results)
        assert sorted(results.get(timeout=WAIT).seq for _ in range(20)) == list(range(1, 21))
        for child in s._children:  # both sent for it: each was told its config once
            (sent,) = child._configs.values()
            assert sent[1] is webhook
    finally:
        s.stop(1.0)


def test_results_for_one_reply_that_arrive_together_are_handed_over_in_one_call():
    s = Senders(processes=1, workers=1)  # never started: the reader's part alone
    child = s._children[0]
    mine: list = []
    other: list = []
    webhook = hook("http://127.0.0.1:9/")
    for token, reply in ((1, mine.append), (2, mine.append), (3, mine.append), (4, other.append)):
        child._pending[token] = (Attempt(webhook, token, PAYLOAD, 1), reply)
    ok = [True, 200, None, None, 0.01, "", 0.0, False]
    child._deliver([[0], [1, *ok], [2, *ok], [4, *ok], [3, *ok], [99, *ok]])  # 99: not ours
    assert child.up.is_set()  # [0] is the child's hello
    (together,) = mine
    assert [r.seq for r in together] == [1, 2, 3]
    (alone,) = other
    assert alone.seq == 4  # a plain result, not a tuple
    assert child._pending == {}
    for end in (child.sock, child._theirs):
        end.close()


def test_the_child_checks_the_daemons_lease_trust_as_it_is_now(server):
    trust = Trust()
    senders = Senders(processes=1, workers=4, trust=trust)
    senders.start()
    senders.ready(WAIT)
    results = Results()
    attempt = Attempt(hook(f"http://127.0.0.1:{server.port}/x"), 1, PAYLOAD, 1, trust.generation)
    try:
        trust.renewed(time.monotonic())  # already past: the child's clock is the daemon's
        senders.submit(attempt, results)
        r = results.get(timeout=WAIT)
        assert (r.ok, r.error, r.router_fault) == (False, LEASE_GONE, True)
        assert server.received == []
        trust.renewed(time.monotonic() + 60)  # the shared memory: no message to the child
        senders.submit(attempt, results)
        assert results.get(timeout=WAIT).ok and len(server.received) == 1
    finally:
        senders.stop(1.0)
