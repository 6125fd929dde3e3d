"""End-to-end throughput and latency of the real daemon: ZeroMQ in, signed HTTP POSTs out.

Run: ``.venv/bin/python bench/bench_delivery.py [--events N] [--rate R] [--seconds S]``.
Starts ``python -m router run`` on a temp config (ipc:// ingest), a loopback HTTP
receiver in a separate process (asyncio, keep-alive, 200 at once), and measures:

- push-1 / dealer-1: N events as fast as possible to 1 webhook over PUSH, then over
  DEALER counting acks; accepted/s (acks) and delivered/s (first send -> last
  delivery received);
- latency: a light rate over DEALER, each event with ``data.sent``; receive - sent;
- push-4: N events over PUSH to 4 webhooks that all match (deliveries/s), on a
  fresh daemon;
- the daemon's VmRSS / VmHWM / threads / CPU seconds after each phase.

Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgpack
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Daemon, Receiver, base_config, pct, write_config

ROWS: list[dict] = []


def event(prefix: str, i: int) -> bytes:
    return msgpack.packb(
        {
            "type": "TODO_CREATED",
            "id": f"{prefix}-{i}",
            "company": "acme",
            "project": "p1",
            "data": {"sent": time.time(), "i": i, "title": "benchmark event", "priority": "high"},
        }
    )


def wait_delivered(rx: Receiver, expected: int, timeout: float) -> bool:
    """Wait until the receiver counted ``expected`` requests, or until it stalls/deadline."""
    deadline = time.monotonic() + timeout
    last, last_change = rx.count, time.monotonic()
    while time.monotonic() < deadline:
        n = rx.count
        if n >= expected:
            return True
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 20:  # no progress for 20 s: report, don't hang
            return False
        time.sleep(0.01)
    return False


def check_records(records, expected_per_path: int, paths: int) -> dict:
    keys = Counter((path, wid) for _, path, wid in records)
    dups = sum(c - 1 for c in keys.values() if c > 1)
    distinct = len(keys)
    return {"distinct": distinct, "dups": dups, "lost": expected_per_path * paths - distinct}


THREADS_BEFORE: dict[int, tuple[int, float, int]] = {}


def snapshot(d: Daemon, row: dict, cpu_before: float) -> None:
    rss, hwm, threads = d.mem()
    row.update(rss=rss, hwm=hwm, threads=threads, cpu=d.cpu_seconds() - cpu_before)
    now_ = d.thread_cpu()
    # creation rank: by start tick, then id (ids wrap at pid_max); 0 = main thread
    order = sorted(now_, key=lambda t: (now_[t][0], t))
    delta = sorted(
        ((now_[t][1] - THREADS_BEFORE.get(t, (0, 0.0, 0))[1], order.index(t)) for t in now_),
        reverse=True,
    )
    busy = [(c, i) for c, i in delta if c >= 0.05]
    row["top_threads"] = ", ".join(f"#{i}:{c:.1f}s" for c, i in busy[:6]) + (
        f" (+{len(busy) - 6} more busy)" if len(busy) > 6 else ""
    )
    THREADS_BEFORE.clear()
    THREADS_BEFORE.update(now_)


def finish_row(d, rx, name, n, paths, t0, cpu0, ok, accepted_s, note) -> dict:
    """The figures every throughput phase reports, from what the receiver recorded."""
    records = rx.dump()
    last = max((r[0] for r in records), default=t0)
    row = {
        "phase": name,
        "events": n,
        "deliveries": len(records),
        "accepted_s": accepted_s,
        "accept_note": note,
        "delivered_s": len(records) / max(last - t0, 1e-9),
        "complete": ok,
        **check_records(records, n, paths),
    }
    snapshot(d, row, cpu0)
    ROWS.append(row)
    return row


def phase_push(ctx, d: Daemon, rx: Receiver, name: str, n: int, paths: int, timeout: float):
    rx.dump()
    base = rx.count
    cpu0 = d.cpu_seconds()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(f"ipc://{d.tmp}/pull.sock")
    try:
        t0 = time.time()
        for i in range(n):
            sock.send(event(name, i))
        t_sent = time.time()
        ok = wait_delivered(rx, base + n * paths, timeout)
    finally:
        sock.close()
    accepted_s = n / max(t_sent - t0, 1e-9)
    return finish_row(d, rx, name, n, paths, t0, cpu0, ok, accepted_s, "(sent into ZMQ)")


def phase_dealer(ctx, d: Daemon, rx: Receiver, name: str, n: int, timeout: float):
    rx.dump()
    base = rx.count
    cpu0 = d.cpu_seconds()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{d.tmp}/ack.sock")
    acks = errors = sent = 0
    err_examples: Counter = Counter()
    deadline = time.monotonic() + timeout
    try:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN | zmq.POLLOUT)
        t0 = time.time()
        t_last_ack = t0
        while acks + errors < n and time.monotonic() < deadline:
            ready = dict(poller.poll(100))
            flags = ready.get(sock, 0)
            if flags & zmq.POLLOUT and sent < n:
                try:
                    for _ in range(500):
                        if sent >= n:
                            break
                        sock.send(event(name, sent), zmq.NOBLOCK)
                        sent += 1
                except zmq.Again:
                    pass
                if sent >= n:
                    poller.modify(sock, zmq.POLLIN)
            if flags & zmq.POLLIN:
                try:
                    while True:
                        reply = msgpack.unpackb(sock.recv(zmq.NOBLOCK))
                        if reply.get("ok"):
                            acks += 1
                        else:
                            errors += 1
                            err_examples[reply.get("error")] += 1
                        t_last_ack = time.time()
                except zmq.Again:
                    pass
        ok = wait_delivered(rx, base + n, max(1.0, deadline - time.monotonic()))
    finally:
        sock.close()
    accepted_s = acks / max(t_last_ack - t0, 1e-9)
    row = finish_row(d, rx, name, n, 1, t0, cpu0, ok, accepted_s, f"({acks} acks)")
    row["ack_errors"] = dict(err_examples)
    return row


def phase_latency(ctx, d: Daemon, rx: Receiver, rate: float, seconds: float):
    """Paced DEALER sends; delivery latency from data.sent, ack latency from the ack."""
    rx.dump()
    base = rx.count
    cpu0 = d.cpu_seconds()
    n = int(rate * seconds)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{d.tmp}/ack.sock")
    sent_at: dict[str, float] = {}
    ack_lat: list[float] = []
    try:
        start = time.time()
        for i in range(n):
            target = start + i / rate
            while True:  # wait for the slot, collecting acks meanwhile
                wait = target - time.time()
                if wait <= 0:
                    break
                if sock.poll(int(wait * 1000) + 1, zmq.POLLIN):
                    _collect_acks(sock, sent_at, ack_lat)
            eid = f"lat-{i}"
            sent_at[eid] = time.time()
            sock.send(
                msgpack.packb(
                    {
                        "type": "TODO_CREATED",
                        "id": eid,
                        "project": "p1",
                        "company": "acme",
                        "data": {"sent": sent_at[eid]},
                    }
                )
            )
        end = time.monotonic() + 15
        while len(ack_lat) < n and time.monotonic() < end:
            if sock.poll(100, zmq.POLLIN):
                _collect_acks(sock, sent_at, ack_lat)
        ok = wait_delivered(rx, base + n, 30)
    finally:
        sock.close()
    records = rx.dump()
    lat = sorted((t - sent_at[w]) * 1000 for t, _, w in records if w in sent_at)
    ack_lat.sort()
    row = {
        "phase": f"latency {rate:g}/s x {seconds:g}s",
        "events": n,
        "deliveries": len(records),
        "complete": ok,
        **check_records(records, n, 1),
        "lat": {p: pct(lat, p) for p in (50, 90, 99)} | {"max": lat[-1] if lat else None},
        "ack": {p: pct(ack_lat, p) for p in (50, 90, 99)}
        | {"max": ack_lat[-1] if ack_lat else None},
    }
    snapshot(d, row, cpu0)
    ROWS.append(row)
    return row


def _collect_acks(sock, sent_at: dict[str, float], out: list[float]) -> None:
    now_ = time.time()
    try:
        while True:
            reply = msgpack.unpackb(sock.recv(zmq.NOBLOCK))
            if reply.get("ok") and reply.get("id") in sent_at:
                out.append((now_ - sent_at[reply["id"]]) * 1000)
    except zmq.Again:
        pass


def fmt(v, spec=",.0f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="per throughput phase")
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency phase duration")
    parser.add_argument("--fanout", type=int, default=4, help="webhooks in the fan-out phase")
    parser.add_argument(
        "--fanout-events",
        type=int,
        default=10_000,
        help="events in the fan-out phase (deliveries = this x --fanout)",
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="deadline per phase (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journal)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    ctx = zmq.Context()
    rx = Receiver()
    daemons: list[Daemon] = []
    failed = False
    try:
        print(f"receiver on 127.0.0.1:{rx.port} (pid {rx.proc.pid}); temp dir {tmp}")
        # ---- one webhook
        dir1 = tmp / "one"
        dir1.mkdir()
        cfg = base_config(dir1, [{"name": "hook-0", "url": rx.url("/h/0")}])
        d = Daemon(dir1, write_config(dir1, cfg), "daemon-1")
        daemons.append(d)
        ready = d.start()
        THREADS_BEFORE.update(d.thread_cpu())
        rss, hwm, threads = d.mem()
        print(
            f"daemon pid {d.pid}: READY=1 after {ready:.2f}s; idle RSS {rss:.1f} MiB, "
            f"{threads} threads"
        )
        ROWS.append({"phase": "idle (1 webhook)", "rss": rss, "hwm": hwm, "threads": threads})
        for fn, fargs in (
            (phase_push, ("push-1", args.events, 1, args.timeout)),
            (phase_dealer, ("dealer-1", args.events, args.timeout)),
            (phase_latency, (args.rate, args.seconds)),
        ):
            row = fn(ctx, d, rx, *fargs)
            print(
                f"  {row['phase']}: done ({'complete' if row['complete'] else 'INCOMPLETE'}, "
                f"lost {row['lost']}, dups {row['dups']})",
                flush=True,
            )
            if not row["complete"] or not d.alive():
                failed = True
                print("daemon log tail:\n" + d.log_tail())
                break
        t_exit, code = d.terminate()
        print(f"  SIGTERM -> exit {code} in {t_exit:.2f}s")

        # ---- fan-out
        if not failed:
            dir4 = tmp / "fan"
            dir4.mkdir()
            hooks = [{"name": f"hook-{k}", "url": rx.url(f"/h/{k}")} for k in range(args.fanout)]
            d4 = Daemon(dir4, write_config(dir4, base_config(dir4, hooks)), "daemon-4")
            daemons.append(d4)
            d4.start()
            THREADS_BEFORE.clear()
            THREADS_BEFORE.update(d4.thread_cpu())
            row = phase_push(
                ctx,
                d4,
                rx,
                f"push-{args.fanout}",
                args.fanout_events,
                args.fanout,
                args.timeout * 2,
            )
            print(
                f"  {row['phase']}: done ({'complete' if row['complete'] else 'INCOMPLETE'}, "
                f"lost {row['lost']}, dups {row['dups']})",
                flush=True,
            )
            if not row["complete"]:
                failed = True
                print("daemon log tail:\n" + d4.log_tail())
            t_exit, code = d4.terminate()
            print(f"  SIGTERM -> exit {code} in {t_exit:.2f}s")
    finally:
        for d in daemons:
            d.close()
            lines = d.log_tail(10_000).splitlines()
            bad = [x for x in lines if "WARNING" in x or "ERROR" in x or "Traceback" in x]
            print(f"{d.log_path.name}: {len(lines)} log lines, {len(bad)} warnings/errors")
            for x in bad[:5]:
                print("    " + x[:300])
        rx.close()
        ctx.term()

    print()
    print(
        f"{'phase':<24}{'events':>8}{'deliv.':>8}{'accepted/s':>12}{'delivered/s':>13}"
        f"{'lost':>6}{'dups':>6}{'RSS MiB':>9}{'HWM MiB':>9}{'thr':>5}{'CPU s':>7}"
    )
    for r in ROWS:
        print(
            f"{r['phase']:<24}{fmt(r.get('events')):>8}{fmt(r.get('deliveries')):>8}"
            f"{fmt(r.get('accepted_s')):>12}{fmt(r.get('delivered_s')):>13}"
            f"{fmt(r.get('lost')):>6}{fmt(r.get('dups')):>6}{fmt(r.get('rss'), '.1f'):>9}"
            f"{fmt(r.get('hwm'), '.1f'):>9}{fmt(r.get('threads')):>5}"
            f"{fmt(r.get('cpu'), '.1f'):>7}"
        )
    for r in ROWS:
        if "lat" in r:
            lat, ack = r["lat"], r["ack"]
            print(
                f"{r['phase']}: delivery latency ms p50 {fmt(lat[50], '.1f')}  "
                f"p90 {fmt(lat[90], '.1f')}  p99 {fmt(lat[99], '.1f')}  "
                f"max {fmt(lat['max'], '.1f')}"
            )
            print(
                f"{'':{len(r['phase'])}}  ack latency ms      p50 {fmt(ack[50], '.1f')}  "
                f"p90 {fmt(ack[90], '.1f')}  p99 {fmt(ack[99], '.1f')}  "
                f"max {fmt(ack['max'], '.1f')}"
            )
        if r.get("top_threads"):
            print(f"{r['phase']}: daemon threads by CPU (creation rank: s) {r['top_threads']}")
        if r.get("ack_errors"):
            print(f"{r['phase']}: ack errors {r['ack_errors']}")
    print("push-N accepted/s = rate the producer got events into ZeroMQ (no acks on PUSH);")
    print("delivered/s = deliveries / (first send -> last delivery received).")
    if args.keep or failed:
        print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
