"""The phases of one bench run: each starts what it measures fresh and returns its figures.

Every delivery figure is read from nginx's access log (``_nginx``): arrival time,
path and ``webhook-id`` per request. Every daemon is a fresh process on a fresh
state dir. Producers run in the bench's own process and send frames packed in
advance, so their CPU stays small next to the daemon's. Nothing here judges a
figure; ``bench.py`` compares them with the targets.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import yaml
import zmq
from _harness import (
    Daemon,
    base_config,
    pct,
    process_cpu_seconds,
    tree_cpu_seconds,
    tree_memory_mb,
)
from _naive import NaiveLoops
from _nginx import Hit, Nginx
from zmq.utils.monitor import recv_monitor_message

STALL = 20.0  # seconds without a new delivery before a phase gives up waiting
WINDOW = 1_000  # unacked events each DEALER producer keeps in flight
HALF_MS = 0.0005  # nginx's $msec is truncated to the ms: a hit is taken at its middle


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each phase sends; ``QUICK`` only shows that the bench still runs."""

    events: int = 20_000  # the naive loops, 1 webhook, many webhooks
    fanout_events: int = 2_000
    fanout_hooks: int = 10
    webhooks: int = 10_000  # configured in the many-webhooks phase
    active: int = 2_000  # of which this many receive events
    seconds: float = 10.0  # each latency phase
    acked_events: int = 20_000
    producers: int = 8


QUICK = Sizes(events=300, fanout_events=30, webhooks=200, active=40, seconds=1.0, acked_events=400)

WHERE_HIGH = {
    "all": [
        {"field": "data.priority", "in": ["high", "urgent"]},
        {"not": {"field": "data.archived", "eq": True}},
    ]
}


def many_webhook(i: int, url: str, companies: int) -> dict:
    """Webhook ``i`` of the many-webhooks config: rules of every kind, all matching ``event_for``.

    Each webhook has its own project, so an event for project ``p{i}`` goes to
    webhook ``i`` alone; the rule kinds vary as a real config's do (exact types,
    globs, companies, ``match:`` lists, ``where`` predicates).
    """
    p, c = f"p{i}", f"c{i % companies}"
    w: dict = {"name": f"hook-{i}", "url": url}
    kind = i % 10
    if kind == 0:
        w.update(events=["TODO_CREATED", "TODO_UPDATED"], projects=[p])
    elif kind == 1:
        w.update(events=["TODO_*"], projects=[p])
    elif kind == 2:
        w.update(events=["*_CREATED"], projects=[p], companies=[c])
    elif kind == 3:
        w["match"] = [
            {"events": ["COMMENT_*"], "projects": [p]},
            {"events": ["TODO_CREATED"], "projects": [p]},
        ]
    elif kind == 4:
        w.update(events=["TODO_CREATED"], projects=[p], where=WHERE_HIGH)
    elif kind == 5:
        w.update(events=["TODO_CREATED"], projects=[p], companies=[c])
    elif kind == 6:
        w.update(projects=[p])  # every type
    elif kind == 7:
        w.update(events=["TODO_CREATED", "COMMENT_CREATED", "FILE_UPLOADED"], projects=[p])
    elif kind == 8:
        w.update(events=["TODO_CREAT?D"], projects=[p])
    else:
        w.update(
            events=["todo.*", "TODO_CREATED"],
            projects=[p],
            where={"field": "data.priority", "ne": "low"},
        )
    return w


def frame(eid: str, project: str = "p0", company: str = "c0", **data) -> bytes:
    return msgpack.packb(
        {
            "type": "TODO_CREATED",
            "id": eid,
            "company": company,
            "project": project,
            "data": {"title": "benchmark event", "priority": "high", "archived": False, **data},
        }
    )


def latencies_ms(hits: list[Hit], sent: dict[str, float]) -> list[float]:
    """Send -> first arrival of each (path, id), sorted, in ms."""
    first: dict[tuple[str, str], float] = {}
    for h in hits:
        if h.wid in sent:
            first.setdefault((h.uri, h.wid), h.at)
    return sorted((at + HALF_MS - sent[wid]) * 1000 for (_, wid), at in first.items())


class Run:
    """One run of every phase, under ``tmp``, delivering to one shared nginx."""

    def __init__(self, tmp: Path, nginx: Nginx, sizes: Sizes, tag: str) -> None:
        self.tmp = tmp
        self.nginx = nginx
        self.sizes = sizes
        self.tag = tag
        self.ctx = zmq.Context()

    def close(self) -> None:
        self.ctx.term()

    # ------------------------------------------------------------------ shared steps

    def _daemon(self, name: str, hooks: list[dict]) -> Daemon:
        """A fresh daemon on a fresh state dir, started and READY."""
        workdir = self.tmp / name
        workdir.mkdir(parents=True)
        cfg = base_config(workdir, hooks)
        cfg["defaults"]["signature"] = "standard"  # signing is part of the cost
        for setting in filter(None, os.environ.get("BENCH_SET", "").split(",")):
            key, _, value = setting.partition("=")  # bench.py --set KEY=VALUE
            cfg[key] = yaml.safe_load(value)
        path = workdir / "router.yaml"
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        path.write_text(yaml.dump(cfg, Dumper=dumper, sort_keys=False))
        d = Daemon(workdir, path, name)
        try:
            d.start(ready_timeout=120)
        except BaseException:
            d.close()
            raise
        return d

    def _socket(self, kind: int, addrs: list[str]) -> zmq.Socket:
        """A connected producer socket: returns once every peer is connected."""
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        try:
            for addr in addrs:
                sock.connect(addr)
            connected, deadline = 0, time.monotonic() + 30
            while connected < len(addrs):
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"producer not connected to {addrs} within 30 s")
                if monitor.poll(100):
                    connected += recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECTED
        finally:
            sock.disable_monitor()
            monitor.close()
        return sock

    def _wait(self, expected: set[tuple[str, str]]) -> bool:
        """Wait until nginx logged every ``(path, id)`` expected, or until deliveries stall."""
        last, last_change = -1, time.monotonic()
        while True:
            n = self.nginx.count()
            if n >= len(expected) and expected <= {(h.uri, h.wid) for h in self.nginx.hits()}:
                return True  # (a duplicate can make the count run ahead of the distinct ones)
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > STALL:
                return False
            time.sleep(0.05)

    def _delivered(
        self,
        expected: set[tuple[str, str]],
        t0: float,
        complete: bool,
        cpu: float,
        nginx_cpu: float,
    ) -> dict:
        """Figures of a delivery phase from nginx's log: rate, losses, CPU shares."""
        hits = self.nginx.hits()
        got = Counter((h.uri, h.wid) for h in hits)
        wall = max((h.at for h in hits), default=t0) + HALF_MS - t0
        lost, stray = len(expected - set(got)), len(set(got) - expected)
        if not complete or lost or stray:
            raise RuntimeError(
                f"{lost} of {len(expected)} deliveries missing after {STALL:g} s without "
                f"progress, {stray} deliveries nobody sent"
            )
        return {
            "deliveries": len(expected),
            "deliveries_s": len(expected) / wall,
            "dups": sum(got.values()) - len(got),
            "wall_s": wall,
            "cores": cpu / wall,
            "cpu_us": cpu / len(expected) * 1e6,
            "nginx_core": nginx_cpu / wall,
            "nginx_us": nginx_cpu / sum(got.values()) * 1e6,
        }

    def _flood(
        self, addrs: list[str], frames: list[bytes], expected, cpu: Callable, pid: int = 0
    ) -> dict:
        """Send ``frames`` over PUSH as fast as ZeroMQ takes them; wait for every delivery.

        With ``pid``, that process's own share (the daemon without its senders) is
        reported as ``main_cores``.
        """
        self.nginx.mark()
        sock = self._socket(zmq.PUSH, addrs)
        try:
            cpu0, ncpu0, main0 = cpu(), self.nginx.cpu_seconds(), process_cpu_seconds(pid)
            t0 = time.time()
            for f in frames:
                sock.send(f)
            complete = self._wait(expected)
            cpu1, ncpu1, main1 = cpu(), self.nginx.cpu_seconds(), process_cpu_seconds(pid)
        finally:
            sock.close()
        out = self._delivered(expected, t0, complete, cpu1 - cpu0, ncpu1 - ncpu0)
        if pid:
            out["main_cores"] = (main1 - main0) / out["wall_s"]
        return out

    # ------------------------------------------------------------------ the phases

    def naive(self, processes: int) -> dict:
        """The naive loop in ``processes`` processes, 20,000 events split between them."""
        workdir = self.tmp / f"naive-{processes}"
        workdir.mkdir(parents=True)
        loops = NaiveLoops(workdir, self.nginx.port, "/naive", processes)
        try:
            ids = [f"{self.tag}-n{processes}-{i}" for i in range(self.sizes.events)]
            return self._flood(
                loops.addrs,
                [frame(eid) for eid in ids],
                {("/naive", eid) for eid in ids},
                loops.cpu_seconds,
            )
        finally:
            loops.close()

    def burst(self) -> dict:
        """20,000 events to 1 webhook as fast as possible; the daemon's memory peak after."""
        d = self._daemon("burst", [{"name": "hook-0", "url": self.nginx.url("/h/0")}])
        try:
            ids = [f"{self.tag}-b-{i}" for i in range(self.sizes.events)]
            out = self._flood(
                [f"ipc://{d.tmp}/pull.sock"],
                [frame(eid) for eid in ids],
                {("/h/0", eid) for eid in ids},
                lambda: tree_cpu_seconds(d.pid),
                d.pid,
            )
            out["hwm_mb"] = tree_memory_mb(d.pid)[1]
            return out
        finally:
            _stop(d)

    def fanout(self) -> dict:
        """2,000 events, each matching all of 10 webhooks."""
        k = self.sizes.fanout_hooks
        hooks = [
            {"name": f"hook-{i}", "url": self.nginx.url(f"/h/{i}"), "events": ["TODO_CREATED"]}
            for i in range(k)
        ]
        d = self._daemon("fanout", hooks)
        try:
            ids = [f"{self.tag}-f-{i}" for i in range(self.sizes.fanout_events)]
            return self._flood(
                [f"ipc://{d.tmp}/pull.sock"],
                [frame(eid) for eid in ids],
                {(f"/h/{i}", eid) for eid in ids for i in range(k)},
                lambda: tree_cpu_seconds(d.pid),
                d.pid,
            )
        finally:
            _stop(d)

    def many(self) -> dict:
        """10,000 webhooks configured: start to READY, idle memory, then 20,000 events
        spread evenly (round robin) over 2,000 of them, one webhook per event."""
        n, active = self.sizes.webhooks, self.sizes.active
        companies = max(1, n // 100)
        hooks = [many_webhook(i, self.nginx.url(f"/h/{i}"), companies) for i in range(n)]
        d = self._daemon("many", hooks)
        try:
            out = {"ready_s": d.ready_after, "idle_rss_mb": _idle_rss_mb(d)}
            step = n // active
            targets = [step * k + k % step for k in range(active)]  # every rule kind gets some
            frames, expected = [], set()
            for j in range(self.sizes.events):
                i = targets[j % active]
                eid = f"{self.tag}-m-{j}"
                frames.append(frame(eid, f"p{i}", f"c{i % companies}"))
                expected.add((f"/h/{i}", eid))
            out |= self._flood(
                [f"ipc://{d.tmp}/pull.sock"],
                frames,
                expected,
                lambda: tree_cpu_seconds(d.pid),
                d.pid,
            )
            return out
        finally:
            _stop(d)

    def latency(self, rate: float, hooks: int) -> dict:
        """A steady ``rate`` of events over DEALER for ``sizes.seconds``; send -> nginx arrival.

        The send time is ``time.time()`` taken just before each send, kept per id;
        a paced loop sleeps to each event's slot (no burst to catch up beyond the
        slots already due) and reads acks while it waits.
        """
        d = self._daemon(
            f"lat-{rate:g}" + (f"x{hooks}" if hooks > 1 else ""),  # named as its phase
            [{"name": f"hook-{i}", "url": self.nginx.url(f"/h/{i}")} for i in range(hooks)],
        )
        try:
            n = max(1, int(rate * self.sizes.seconds))
            ids = [f"{self.tag}-l{rate:g}x{hooks}-{i}" for i in range(n)]
            frames = [frame(eid) for eid in ids]
            expected = {(f"/h/{k}", eid) for eid in ids for k in range(hooks)}
            sent: dict[str, float] = {}
            acks = 0
            self.nginx.mark()
            sock = self._socket(zmq.DEALER, [f"ipc://{d.tmp}/ack.sock"])
            try:
                cpu0, ncpu0 = tree_cpu_seconds(d.pid), self.nginx.cpu_seconds()
                main0 = process_cpu_seconds(d.pid)
                start = time.time()
                for i, f in enumerate(frames):
                    due = start + i / rate
                    while (wait := due - time.time()) > 0:
                        acks += _drain(sock)
                        time.sleep(min(wait, 0.002))
                    sent[ids[i]] = time.time()
                    sock.send(f)
                acks += _drain(sock)
                complete = self._wait(expected)
                deadline = time.monotonic() + 10  # acks are not measured here: a short wait
                while acks < n and time.monotonic() < deadline and sock.poll(100):
                    acks += _drain(sock)
                cpu1, ncpu1 = tree_cpu_seconds(d.pid), self.nginx.cpu_seconds()
                main1 = process_cpu_seconds(d.pid)
            finally:
                sock.close()
            out = self._delivered(expected, start, complete, cpu1 - cpu0, ncpu1 - ncpu0)
            out["main_cores"] = (main1 - main0) / out["wall_s"]
            lat = latencies_ms(self.nginx.hits(), sent)
            out |= {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": lat[-1]}
            return out
        finally:
            _stop(d)

    def acked(self) -> dict:
        """8 DEALER producers, each with up to 1,000 events unacked, to 1 delivering webhook."""
        d = self._daemon("acked", [{"name": "hook-0", "url": self.nginx.url("/h/0")}])
        try:
            k = self.sizes.producers
            ids = [f"{self.tag}-a-{i}" for i in range(self.sizes.acked_events)]
            queues = [[frame(eid) for eid in ids[p::k]] for p in range(k)]
            expected = {("/h/0", eid) for eid in ids}
            self.nginx.mark()
            socks = [self._socket(zmq.DEALER, [f"ipc://{d.tmp}/ack.sock"]) for _ in range(k)]
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            try:
                cpu0, ncpu0 = tree_cpu_seconds(d.pid), self.nginx.cpu_seconds()
                main0 = process_cpu_seconds(d.pid)
                sent, answered, errors = [0] * k, [0] * k, Counter()
                t0 = t_last = time.time()
                deadline = time.monotonic() + max(120.0, len(ids) / 100)
                while sum(answered) < len(ids):
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"{sum(answered)} of {len(ids)} acks by the deadline")
                    for p, s in enumerate(socks):
                        while sent[p] < len(queues[p]) and sent[p] - answered[p] < WINDOW:
                            s.send(queues[p][sent[p]])
                            sent[p] += 1
                    for s, _ in poller.poll(100):
                        p = socks.index(s)
                        while s.poll(0):
                            reply = msgpack.unpackb(s.recv())
                            answered[p] += 1
                            if not reply.get("ok"):
                                errors[reply.get("error")] += 1
                            t_last = time.time()
                complete = self._wait(expected)
                cpu1, ncpu1 = tree_cpu_seconds(d.pid), self.nginx.cpu_seconds()
                main1 = process_cpu_seconds(d.pid)
            finally:
                for s in socks:
                    s.close()
            if errors:
                raise RuntimeError(f"refused events: {dict(errors)}")
            out = self._delivered(expected, t0, complete, cpu1 - cpu0, ncpu1 - ncpu0)
            out["main_cores"] = (main1 - main0) / out["wall_s"]
            out["acks_s"] = len(ids) / max(t_last - t0, 1e-9)
            return out
        finally:
            _stop(d)


def _drain(sock: zmq.Socket) -> int:
    """Read every ack waiting on ``sock``; returns how many."""
    n = 0
    while sock.poll(0):
        sock.recv()
        n += 1
    return n


def _idle_rss_mb(d: Daemon) -> float:
    """RSS once start-up work is over: the daemon used under 2 % of a core for 0.5 s."""
    last = tree_cpu_seconds(d.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds(d.pid)
        if now - last < 0.01:
            break
        last = now
    return tree_memory_mb(d.pid)[0]


def _stop(d: Daemon) -> None:
    try:
        d.terminate(timeout=30)
    finally:
        d.close()
