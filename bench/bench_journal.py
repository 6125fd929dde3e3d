"""Journal throughput: 100k events, one target each, appended as the receiver would.

Run: ``.venv/bin/python bench/bench_journal.py [--events N] [--batch N] [--rate R] [--dir D]``.
Prints committed events/s, the number of transactions, transaction time p50/p99
(BEGIN..COMMIT, fsync included) and ack latency p50/p99 (submit to on_commit:
what a producer waiting for its ack sees, queueing included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import journal as journal_mod
from router.clock import Clock
from router.messages import Accepted, Append, Event, Payload


class _Timings:
    """Stands in for the JOURNAL_COMMIT histogram to keep every transaction time."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


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
    return Accepted(event, None, (f"hook-{i % 50}",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=200, help="events per Append")
    parser.add_argument("--dir", default=None, help="where to put the journal (default: a tmp dir)")
    parser.add_argument("--rate", type=float, default=0, help="events/s to submit (0: flood)")
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

    def on_commit(batch) -> None:
        nonlocal transactions, committed
        now = time.perf_counter()
        transactions += 1
        committed += len(batch)
        for c in batch:
            start = submitted.pop(c.item.event.id, None)
            if start is not None:
                latencies.append(now - start)
        if committed >= args.events:
            done.set()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        j = journal_mod.Journal(
            f"{tmp}/journal.db", Clock(), 86400.0, on_commit, lambda a, r: print("error", r)
        )
        j.open()
        j.start()
        began = time.perf_counter()
        for n, append in enumerate(appends):
            if args.rate:  # paced: sleep until this Append is due
                time.sleep(max(0.0, began + n * args.batch / args.rate - time.perf_counter()))
            submitted[append.items[0].event.id] = time.perf_counter()
            j.submit(append)
        if not done.wait(300):
            sys.exit(f"only {committed} of {args.events} committed in 300 s")
        elapsed = time.perf_counter() - began
        j.stop()

    ms = 1000.0
    print(f"{args.events} events in {len(appends)} Appends of {args.batch}: {elapsed:.2f} s")
    print(f"throughput: {args.events / elapsed:,.0f} events/s committed")
    print(
        f"transactions: {transactions} ({args.events / transactions:,.0f} events each); "
        f"time p50 {_quantile(timings.values, 0.5) * ms:.1f} ms, "
        f"p99 {_quantile(timings.values, 0.99) * ms:.1f} ms"
    )
    print(
        f"ack latency (submit to on_commit, queueing included): "
        f"p50 {_quantile(latencies, 0.5) * ms:.1f} ms, p99 {_quantile(latencies, 0.99) * ms:.1f} ms"
    )


if __name__ == "__main__":
    main()
