"""Journal throughput and CPU: events appended as the receiver does, outcomes as a burst records.

Run: ``.venv/bin/python bench/bench_journal.py [--events N] [--batch N] [--rate R] [--dir D]
[--outcomes] [--trace]``. Prints committed events/s, the number of transactions,
transaction time p50/p99 (BEGIN..COMMIT, fsync included), ack latency p50/p99
(submit to on_commit: what a producer waiting for its ack sees, queueing
included) and the journal thread's CPU per event (per delivery with ``--outcomes``).

``--outcomes``: each committed delivery also gets a successful ``Outcome`` and a
``SaveState``, one message each, submitted by a stand-in supervisor thread as
soon as the event is committed: the journal's whole work per delivery in a burst.
``--trace``: times every statement of every transaction, watches the WAL and the
garbage collector, and prints the slowest transactions with what they spent their
time on (the latency phase: ``--rate 200 --batch 1 --outcomes --trace``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import journal as journal_mod
from router.clock import Clock
from router.messages import (
    DONE,
    Accepted,
    Append,
    AttemptResult,
    Event,
    Outcome,
    Payload,
    SaveState,
    WebhookState,
)

WEBHOOKS = 50


class _Timings:
    """Stands in for the JOURNAL_COMMIT histogram to keep every transaction time."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.ends: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.ends.append(time.perf_counter())


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:  # a short run may commit in one transaction
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _event(i: int) -> Accepted:
    data = {"todo": {"id": i, "title": "write the journal benchmark", "done": False}}
    body = json.dumps(
        {"id": f"ev-{i:08d}", "type": "TODO_CREATED", "timestamp": "2026-11-27T16:38:33.123Z",
         "company": "acme", "project": "p1", "data": data},
        separators=(",", ":"),
    )[:-1]  # fmt: skip
    payload = Payload(f"ev-{i:08d}", "TODO_CREATED", body)
    event = Event(payload.id, payload.type, 0.0, "acme", "p1", data, payload)
    return Accepted(event, None, (f"hook-{i % WEBHOOKS}",))


class _Tracer:
    """Wraps the writer's connection: the time of each statement, the WAL and GC around them.

    A transaction is BEGIN..COMMIT as the writer issues it; ``pauses`` are the
    garbage collector's, from ``gc.callbacks``, whichever thread they ran on.
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._path = path
        self.transactions: list[dict] = []
        self._current: dict | None = None
        self.pauses: list[tuple[float, float, int]] = []  # (start, seconds, generation)
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)
        self.checkpoints: list[tuple[float, float, int, int]] = []  # start, seconds, WAL, copied
        checkpoint = getattr(journal_mod.store, "checkpoint", None)  # the checkpointer's
        if checkpoint is not None:

            def timed(conn: sqlite3.Connection) -> tuple[int, int]:
                began = time.perf_counter()
                pages, copied = checkpoint(conn)
                self.checkpoints.append((began, time.perf_counter() - began, pages, copied))
                return pages, copied

            journal_mod.store.checkpoint = timed

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.pauses.append(
                (self._gc_start, time.perf_counter() - self._gc_start, info["generation"])
            )

    def _wal(self) -> tuple[int, int]:
        """The WAL's size and its checkpoint sequence (header bytes 12..16): a reset bumps it."""
        try:
            with open(self._path + "-wal", "rb") as f:
                header = f.read(16)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return 0, 0
        return size, int.from_bytes(header[12:16], "big") if len(header) == 16 else 0

    def _db_mtime(self) -> int:
        return os.stat(self._path).st_mtime_ns

    def execute(self, sql: str, *args):
        head = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if head == "BEGIN":
            size, seq = self._wal()
            self._current = {"start": time.perf_counter(), "statements": {}, "wal_before": size,
                             "ckpt_before": seq, "db_mtime": self._db_mtime()}  # fmt: skip
        began = time.perf_counter()
        try:
            return self._conn.execute(sql, *args)
        finally:
            self._note(head if head in ("BEGIN", "COMMIT") else sql, time.perf_counter() - began)
            if head in ("COMMIT", "ROLLBACK") and self._current is not None:
                t = self._current
                t["total"] = time.perf_counter() - t["start"]
                t["wal_after"], t["ckpt_after"] = self._wal()
                t["db_written"] = self._db_mtime() != t["db_mtime"]
                self.transactions.append(t)
                self._current = None

    def executemany(self, sql: str, rows):
        began = time.perf_counter()
        try:
            return self._conn.executemany(sql, rows)
        finally:
            self._note(sql, time.perf_counter() - began)

    def _note(self, sql: str, seconds: float) -> None:
        if self._current is not None:
            key = " ".join(sql.split())[:60]
            self._current["statements"][key] = self._current["statements"].get(key, 0.0) + seconds

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def report(self, began: float) -> None:
        ms = 1000.0
        totals = [t["total"] for t in self.transactions]
        print(
            f"traced transactions: {len(totals)}; p50 {_quantile(totals, 0.5) * ms:.2f} ms, "
            f"p99 {_quantile(totals, 0.99) * ms:.2f} ms, max {max(totals) * ms:.2f} ms"
        )
        ckpts = [t for t in self.transactions if t["db_written"]]
        if ckpts:
            ct = [t["total"] for t in ckpts]
            print(
                f"transactions during which the database file changed (a checkpoint in COMMIT,"
                f" or beside it): {len(ckpts)}; p50 {_quantile(ct, 0.5) * ms:.2f} ms,"
                f" max {max(ct) * ms:.2f} ms"
            )
        if self.checkpoints:
            cs = [c[1] for c in self.checkpoints]
            print(
                f"checkpoints on their own thread: {len(cs)}; p50 {_quantile(cs, 0.5) * ms:.2f}"
                f" ms, max {max(cs) * ms:.2f} ms, largest WAL {max(c[2] for c in self.checkpoints)}"
                " pages"
            )
        wal = max(t["wal_after"] for t in self.transactions)
        resets = self.transactions[-1]["ckpt_after"] - self.transactions[0]["ckpt_before"]
        print(f"largest WAL: {wal / 1024:.0f} KiB; WAL resets: {resets}")
        big = sorted(self.pauses, key=lambda p: -p[1])
        if big:
            print(f"GC pauses: {len(big)}, longest {big[0][1] * ms:.2f} ms (gen {big[0][2]})")
        print("slowest transactions:")
        for t in sorted(self.transactions, key=lambda t: -t["total"])[:8]:
            top = sorted(t["statements"].items(), key=lambda kv: -kv[1])[:3]
            gcs = [p for p in self.pauses if t["start"] <= p[0] <= t["start"] + t["total"]]
            what = ", ".join(f"{k!r} {v * ms:.2f}" for k, v in top)
            print(
                f"  at {t['start'] - began:6.2f} s: {t['total'] * ms:7.2f} ms"
                f"{' [checkpoint]' if t['db_written'] else ''}"
                f" wal {t['wal_before'] // 1024}->{t['wal_after'] // 1024} KiB"
                f"{f' gc {sum(p[1] for p in gcs) * ms:.2f} ms' if gcs else ''}: {what}"
            )


def _supervisor(inbox: queue.Queue, j: journal_mod.Journal, counts: dict) -> None:
    """Answers each committed delivery as a successful attempt would: an Outcome, a SaveState."""
    states: dict[str, WebhookState] = {}
    while (batch := inbox.get()) is not None:
        for c in batch:
            if c.seq is None:
                continue
            for webhook in c.item.targets:
                now = time.time()
                r = AttemptResult(webhook, c.seq, 1, True, 204, None, None, 0.0008, "", now)
                j.submit(Outcome(webhook, c.seq, r, DONE))
                old = states.get(webhook, WebhookState())
                states[webhook] = WebhookState(delivered=old.delivered + 1, last_success=now)
                j.submit(SaveState(webhook, states[webhook]))
                counts["outcomes"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=200, help="events per Append")
    parser.add_argument("--dir", default=None, help="where to put the journal (default: a tmp dir)")
    parser.add_argument("--rate", type=float, default=0, help="events/s to submit (0: flood)")
    parser.add_argument("--outcomes", action="store_true", help="and an outcome per delivery")
    parser.add_argument("--trace", action="store_true", help="time each statement; slowest")
    parser.add_argument("--sync", default="full", choices=("full", "normal"))
    args = parser.parse_args()

    appends = [
        Append(tuple(_event(i) for i in range(start, min(start + args.batch, args.events))))
        for start in range(0, args.events, args.batch)
    ]
    timings = _Timings()
    journal_mod.metrics.JOURNAL_COMMIT = timings  # type: ignore[assignment]
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    transactions = 0
    committed = 0
    done = threading.Event()
    answers: queue.Queue = queue.Queue()
    counts = {"outcomes": 0}
    cpu: dict[str, float] = {}

    def on_commit(batch) -> None:
        nonlocal transactions, committed
        now = time.perf_counter()
        transactions += 1
        committed += len(batch)
        for c in batch:
            start = submitted.pop(c.item.event.id, None)
            if start is not None:
                latencies.append(now - start)
        if args.outcomes:
            answers.put(batch)
        if committed >= args.events:
            done.set()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = f"{tmp}/journal.db"
        j = journal_mod.Journal(
            path, Clock(), 86400.0, on_commit, lambda a, r: print("error", r), sync=args.sync
        )
        j.open()
        tracer = None
        if args.trace:
            tracer = j._conn = _Tracer(j._conn, path)  # type: ignore[assignment]
        run = j._run

        def measured_run() -> None:
            run()
            usage = resource.getrusage(resource.RUSAGE_THREAD)
            cpu["journal"], cpu["user"], cpu["sys"] = (
                time.thread_time(),
                usage.ru_utime,
                usage.ru_stime,
            )

        j._run = measured_run  # type: ignore[method-assign]
        supervisor = threading.Thread(target=_supervisor, args=(answers, j, counts), daemon=True)
        supervisor.start()
        cpu_began = time.process_time()
        j.start()
        began = time.perf_counter()
        for n, append in enumerate(appends):
            if args.rate:  # paced: sleep until this Append is due
                time.sleep(max(0.0, began + n * args.batch / args.rate - time.perf_counter()))
            submitted[append.items[0].event.id] = time.perf_counter()
            j.submit(append)
        if not done.wait(300):
            sys.exit(f"only {committed} of {args.events} committed in 300 s")
        answers.put(None)
        supervisor.join()
        j.stop(timeout=300)
        elapsed = time.perf_counter() - began
        process_cpu = time.process_time() - cpu_began
        with sqlite3.connect(path) as check:
            (finished,) = check.execute(
                "SELECT count(*) FROM deliveries WHERE state = 'done'"
            ).fetchone()
        if args.outcomes and finished != args.events:
            sys.exit(f"only {finished} of {args.events} deliveries recorded done")

    ms, us = 1000.0, 1e6
    print(f"{args.events} events in {len(appends)} Appends of {args.batch}: {elapsed:.2f} s")
    print(f"throughput: {args.events / elapsed:,.0f} events/s committed")
    print(
        f"transactions: {transactions} appending ({args.events / transactions:,.0f} events each),"
        f" {len(timings.values)} in all; "
        f"time p50 {_quantile(timings.values, 0.5) * ms:.1f} ms, "
        f"p99 {_quantile(timings.values, 0.99) * ms:.1f} ms, max {max(timings.values) * ms:.1f} ms"
    )
    print(
        f"ack latency (submit to on_commit, queueing included): "
        f"p50 {_quantile(latencies, 0.5) * ms:.1f} ms, p99 {_quantile(latencies, 0.99) * ms:.1f} ms"
    )
    unit = "delivery (append + outcome + state)" if args.outcomes else "event"
    print(
        f"CPU per {unit}: journal thread {cpu['journal'] / args.events * us:.1f} µs, "
        f"(user {cpu['user'] / args.events * us:.1f}, system {cpu['sys'] / args.events * us:.1f}), "
        f"process {process_cpu / args.events * us:.1f} µs"
    )
    if tracer is not None:
        tracer.report(began)


if __name__ == "__main__":
    main()
