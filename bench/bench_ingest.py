"""CPU per event of ingest: the real Receiver and FilterActor on ipc://, a stub journal.

Run: ``.venv/bin/python bench/bench_ingest.py [--events N] [--rounds R] [--compare TREE]
[--journal stub|normal|full]``.
Prints CPU µs per event of each thread on the path (receiver, filter actor, journal:
the stub only builds the acks, as ``AckChannel.committed``; the real one writes SQLite
too) for PULL events and for DEALER events acked by 8 producers, each keeping
``WINDOW`` unacked. CPU time per thread, not wall time: the machine is
shared. The producers run in a process of their own. ``--compare TREE`` runs the same
rounds against the ``router`` package of another checkout (e.g. a git worktree of an
older commit), interleaved, and prints the ratio. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("pull", "dealer")
PRODUCERS = 8
WINDOW = 1_000  # unacked events per DEALER producer, as bench/_phases.py
THREADS = ("receiver", "filter", "journal")


def frame(eid: str) -> bytes:
    """The event shape of ``bench/_phases.py`` ``frame()``."""
    import msgpack

    return msgpack.packb(
        {
            "type": "TODO_CREATED",
            "id": eid,
            "company": "c0",
            "project": "p0",
            "data": {"title": "benchmark event", "priority": "high", "archived": False},
        }
    )


class Counted:
    """Counts what the journal hands back to the receiver's channel, batch by batch."""

    def __init__(self, channel, expected: int) -> None:
        self.channel = channel
        self.expected = expected
        self.count = 0
        self.batches = 0
        self.done = threading.Event()

    def committed(self, results) -> None:
        self.channel.committed(results)
        self.count += len(results)
        self.batches += 1
        if self.count >= self.expected:
            self.done.set()

    def failed(self, append, reason: str) -> None:
        self.channel.failed(append.items, reason)
        raise RuntimeError(f"the journal failed: {reason}")


class StubJournal:
    """Takes each ``Append`` on its own thread and acks it at once, as a commit would."""

    def __init__(self, counted: Counted) -> None:
        self.counted = counted
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="stub-journal", daemon=True)
        self.thread.start()

    def submit(self, message) -> None:
        self._queue.put(message)

    def _run(self) -> None:
        from router.messages import Committed

        seq = 0
        while (message := self._queue.get()) is not None:
            results = []
            for item in message.items:
                seq += 1
                results.append(Committed(item, seq))
            self.counted.committed(results)

    def stop(self) -> None:
        self._queue.put(None)
        self.thread.join(5)


def _journal(kind: str, counted: Counted, tmp: str, known: set[int]):
    """The stub, or the real journal on a fresh SQLite file (``normal`` or ``full`` sync)."""
    if kind == "stub":
        stub = StubJournal(counted)
        return stub, stub.thread
    from router.clock import Clock
    from router.journal import Journal

    journal = Journal(
        f"{tmp}/journal.db", Clock(), 86400.0, counted.committed, counted.failed, sync=kind
    )
    journal.open()
    journal.start()
    return journal, _new_thread("journal", known)


def _cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def _new_thread(name: str, known: set[int]) -> threading.Thread:
    """The one thread started since ``known`` whose name is ``name`` (pykka adds ``-N``)."""
    found = [
        t
        for t in threading.enumerate()
        if re.fullmatch(rf"{name}(-\d+)?", t.name) and t.ident not in known
    ]
    assert len(found) == 1, f"expected one {name} thread, found {found}"
    return found[0]


def produce(kind: str, address: str, events: int) -> None:
    """The producers, in a process of their own as real ones are: PUSH, or 8 DEALERs."""
    import zmq

    frames = [frame(f"{kind}-{i}") for i in range(events)]
    ctx = zmq.Context()
    print(time.time(), flush=True)  # the start, for the rate
    if kind == "pull":
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(address)
        for f in frames:
            sock.send(f)
        # Open until the bench has them all: libzmq may drop what a closing PUSH still
        # queues for a peer at its high-water mark, lingering or not.
        sys.stdin.readline()
        sock.close(0)
    else:
        _produce_dealer(zmq, ctx, address, frames)
    ctx.term()


def _produce_dealer(zmq, ctx, address: str, frames: list[bytes]) -> None:
    """8 DEALER sockets, each with up to WINDOW unacked, until every ack came back."""
    import msgpack

    socks = [ctx.socket(zmq.DEALER) for _ in range(PRODUCERS)]
    poller = zmq.Poller()
    for s in socks:
        s.setsockopt(zmq.SNDHWM, 0)
        s.connect(address)
        poller.register(s, zmq.POLLIN)
    share = [frames[i::PRODUCERS] for i in range(PRODUCERS)]
    sent = [0] * PRODUCERS
    inflight = [0] * PRODUCERS
    acked = 0
    deadline = time.monotonic() + 120
    while acked < len(frames):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {acked} of {len(frames)} acks came back")
        for i, s in enumerate(socks):
            while inflight[i] < WINDOW and sent[i] < len(share[i]):
                s.send(share[i][sent[i]])
                sent[i] += 1
                inflight[i] += 1
        for s, _ in poller.poll(1000):
            i = socks.index(s)
            while True:
                try:
                    answer = s.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if not msgpack.unpackb(answer).get("ok"):
                    raise RuntimeError(f"refused: {answer!r}")
                inflight[i] -= 1
                acked += 1
    for s in socks:
        s.close(0)


def measure(kind: str, events: int, journal_kind: str) -> dict:
    """One run of ``events`` through a fresh receiver and filter actor; CPU µs per event."""
    import pykka

    from router.clock import Clock
    from router.config import IngestConfig
    from router.filter import Filter, FilterActor, Route
    from router.receiver import AckChannel, Bind, Receiver
    from router.rules import Rule

    tmp = tempfile.mkdtemp(prefix="bench-ingest-")
    pull, ack = f"ipc://{tmp}/pull.sock", f"ipc://{tmp}/ack.sock"
    channel = AckChannel()
    counted = Counted(channel, events)
    known = {t.ident for t in threading.enumerate()}
    journal, journal_thread = _journal(journal_kind, counted, tmp, known)
    filt = FilterActor.start(Filter([("hook-0", (Rule(),))]), journal.submit)
    filter_thread = _new_thread("FilterActor", known)
    sink = lambda items: filt.tell(Route(items))  # noqa: E731 - the app's FilterAddress.route
    receiver = Receiver.start(IngestConfig(bind=pull, ack_bind=ack), sink, channel, Clock())
    try:
        receiver_thread = _new_thread("Receiver", known)
        error = receiver.ask(Bind(), timeout=10)
        assert error is None, error
        threads = (receiver_thread, filter_thread, journal_thread)
        cmd = [sys.executable, __file__, "--produce", kind, "--events", str(events)]
        cmd += ["--address", pull if kind == "pull" else ack]
        cpu0 = [_cpu(t) for t in threads]
        producer = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            started = float(producer.stdout.readline())
            arrived = counted.done.wait(120)
            wall = time.time() - started
            cpu1 = [_cpu(t) for t in threads]
            producer.communicate("done\n", timeout=120)
        finally:
            producer.kill()
        if not arrived or producer.returncode != 0:
            raise RuntimeError(f"{counted.count} of {events} came; producer: {producer.returncode}")
    finally:
        pykka.ActorRegistry.stop_all()
        journal.stop()
        channel.close()
    out = {name: (b - a) * 1e6 / events for name, a, b in zip(THREADS, cpu0, cpu1, strict=True)}
    out["total"] = sum(out[name] for name in THREADS)
    out["per_s"] = events / wall
    out["batch"] = events / counted.batches
    return out


def _child(tree: str, kind: str, events: int, journal: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    cmd = [sys.executable, __file__, "--child", kind, "--events", str(events), "--tree", tree]
    cmd += ["--journal", journal]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the run against {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="per run (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved; medians count")
    parser.add_argument("--compare", metavar="TREE", help="another checkout to measure too")
    parser.add_argument("--tree", default=str(HERE.parent), help=argparse.SUPPRESS)
    parser.add_argument(
        "--journal",
        choices=("stub", "normal", "full"),
        default="stub",
        help="the stub (default), or the real journal with this journal.sync",
    )
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--produce", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        produce(args.produce, args.address, args.events)
        return
    if args.child:
        sys.path.insert(0, args.tree)
        print(json.dumps(measure(args.child, args.events, args.journal)))
        return
    trees = {"this tree": str(HERE.parent)}
    if args.compare:
        trees["compared"] = str(Path(args.compare).resolve())
    runs: dict[tuple[str, str], list[dict]] = {(t, k): [] for t in trees for k in KINDS}
    for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits every tree
        for kind in KINDS:
            for label, tree in trees.items():
                runs[label, kind].append(_child(tree, kind, args.events, args.journal))
    med = {
        key: {f: statistics.median(r[f] for r in rs) for f in (*THREADS, "total", "per_s", "batch")}
        for key, rs in runs.items()
    }
    print(
        f"{args.events:,} events per run, {args.journal} journal, median of {args.rounds} rounds;"
        " CPU µs per event"
    )
    heads = " ".join(f"{h:>9}" for h in (*THREADS, "total"))
    print(f"{'':22} {heads} {'events/s':>10} {'batch':>6}")
    for (label, kind), m in med.items():
        cells = " ".join(f"{m[f]:9.1f}" for f in (*THREADS, "total"))
        print(f"{label + ' ' + kind:22} {cells} {m['per_s']:10,.0f} {m['batch']:6.0f}")
    if args.compare:
        for kind in KINDS:
            new, old = med["this tree", kind], med["compared", kind]
            ratios = "  ".join(f"{f} {new[f] / old[f]:.2f}" for f in (*THREADS, "total"))
            print(f"{kind}: this tree / compared CPU per event: {ratios}")


if __name__ == "__main__":
    main()
