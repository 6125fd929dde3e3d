"""The real daemon with many configured webhooks: check, start, idle cost, a burst, stop.

Run: ``.venv/bin/python bench/bench_scale.py [--webhooks N] [--events M]``.
Writes N webhooks (default 10,000), each with its own URL path on one loopback
receiver (a separate process), with varied rules: exact types, globs, projects,
companies, ``match:`` lists and a few ``where`` predicates. Two webhooks share each
project, so every event matches about 2 of them (exactly known: the bench checks
for lost, duplicated and misrouted deliveries). Measures ``webhook-router check``
time, spawn -> READY=1, idle RSS / threads / CPU over 5 s, one ``status --json``
call, M events (default 2,000) over DEALER with acks -> delivered/s and RSS after,
then SIGTERM -> exit time and code. Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgpack
import yaml
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Daemon, Receiver, base_config, wait_until

WHERE_HIGH = {
    "all": [
        {"field": "data.priority", "in": ["high", "urgent"]},
        {"not": {"field": "data.archived", "eq": True}},
    ]
}


def webhook(i: int, rx: Receiver, companies: int) -> tuple[dict, bool]:
    """Webhook ``i`` and whether it matches a TODO_CREATED event of its project (high prio)."""
    k = i // 2
    p, c = f"p{k}", f"c{k % companies}"
    kind = i % 10
    w: dict = {"name": f"hook-{i}", "url": rx.url(f"/h/{i}")}
    matches = True
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
    elif kind == 4 and i % 50 == 4:
        w.update(events=["TODO_CREATED"], projects=[p], where=WHERE_HIGH)
    elif kind == 4:
        w.update(events=["TODO_CREAT?D"], projects=[p])
    elif kind == 5:
        w.update(events=["TODO_CREATED"], projects=[p], companies=[c])
    elif kind == 6:
        w.update(projects=[p])  # every type
    elif kind == 7 and i % 100 == 7:
        w.update(events=["INVOICE_*"], companies=[c])  # company-wide, never matches here
        matches = False
    elif kind == 8:
        w.update(events=["TODO_CREATED", "COMMENT_CREATED", "FILE_UPLOADED"], projects=[p])
    elif kind == 9 and i % 50 == 9:
        w.update(
            events=["todo.*", "TODO_CREATED"],
            projects=[p],
            where={"field": "data.priority", "ne": "low"},
        )
    else:
        w.update(events=["TODO_CREATED"], projects=[p])
    return w, matches


def timed(
    cmd: list[str], cwd: Path, timeout: float = 120.0
) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return time.monotonic() - started, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=90.0, help="deadline for the burst (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    n = args.webhooks
    projects = max(1, (n + 1) // 2)
    companies = max(1, n // 100)

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    figures: list[tuple[str, str]] = []
    rx = Receiver()
    d: Daemon | None = None
    ctx = zmq.Context()
    failed = False

    def fig(name: str, value: str) -> None:
        figures.append((name, value))
        print(f"  {name}: {value}", flush=True)

    try:
        hooks, matching = zip(*(webhook(i, rx, companies) for i in range(n)), strict=True)
        cfg = base_config(tmp, list(hooks))
        path = tmp / "router.yaml"
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        path.write_text(yaml.dump(cfg, Dumper=dumper, sort_keys=False))
        kinds = Counter(
            "match"
            if "match" in w
            else "where"
            if "where" in w
            else "glob"
            if any("*" in e or "?" in e for e in w.get("events", ["*"]))
            else "companies"
            if "companies" in w
            else "exact"
            for w in hooks
        )
        print(
            f"{n} webhooks ({dict(kinds)}), {projects} projects, {companies} companies; "
            f"config {path.stat().st_size / 1e6:.1f} MB in {tmp}"
        )

        one = tmp / "one.yaml"
        one.write_text(yaml.safe_dump(base_config(tmp, [hooks[0]]), sort_keys=False))
        t_one, _ = timed([sys.executable, "-m", "router", "check", "-c", str(one)], tmp)
        t_check, proc = timed([sys.executable, "-m", "router", "check", "-c", str(path)], tmp)
        fig(
            "check time",
            f"{t_check:.2f} s (exit {proc.returncode}; 1-webhook baseline {t_one:.2f} s)",
        )
        if proc.returncode != 0:
            print((proc.stdout + proc.stderr)[-3000:])
            failed = True
            return 1

        d = Daemon(tmp, path)
        ready = d.start(args.ready_timeout)
        fig("spawn -> READY=1", f"{ready:.2f} s")
        time.sleep(1.0)  # let start-up work settle before calling it idle
        rss, hwm, threads = d.mem()
        fig("idle RSS / HWM / threads", f"{rss:.1f} MiB / {hwm:.1f} MiB / {threads}")
        cpu0 = d.cpu_seconds()
        t0 = time.monotonic()
        time.sleep(args.idle_seconds)
        idle = (d.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        fig(f"idle CPU over {args.idle_seconds:g} s", f"{idle * 100:.1f} % of one core")

        t_status, proc = timed(
            [sys.executable, "-m", "router", "status", "--json", "-c", str(path)], tmp
        )
        if proc.returncode != 0:  # the CLI's default 10 s wait ran out: how long does it take?
            fig(
                "status --json -c FILE",
                f"{t_status:.2f} s, FAILED exit {proc.returncode}: {proc.stderr.strip()[-200:]}",
            )
        else:
            fig("status --json -c FILE", f"{t_status:.2f} s, ok")
        # --control skips the CLI's own parse of the config file: the daemon's share
        t_status, proc = timed(
            [
                sys.executable,
                "-m",
                "router",
                "status",
                "--json",
                "--timeout",
                "120",
                "--control",
                f"ipc://{tmp}/state/control.sock",
            ],
            tmp,
            timeout=150,
        )
        if proc.returncode == 0:
            status = json.loads(proc.stdout)
            states = Counter(w.get("state") for w in status.get("webhooks", []))
            fig(
                "status --json --control ADDR",
                f"{t_status:.2f} s, {len(proc.stdout) / 1e6:.1f} MB, states {dict(states)}",
            )
        else:
            fig(
                "status --json",
                f"{t_status:.2f} s, FAILED exit {proc.returncode}: {proc.stderr.strip()[-300:]}",
            )

        # ---- the burst: each event goes to one project's pair of webhooks
        expected: set[tuple[str, str]] = set()
        payloads = []
        for j in range(args.events):
            k = (j * 7919) % projects
            eid = f"s-{j}"
            for i in (2 * k, 2 * k + 1):
                if i < n and matching[i]:
                    expected.add((f"/h/{i}", eid))
            payloads.append(
                msgpack.packb(
                    {
                        "type": "TODO_CREATED",
                        "id": eid,
                        "project": f"p{k}",
                        "company": f"c{k % companies}",
                        "data": {"priority": "high", "archived": False, "sent": 0.0, "j": j},
                    }
                )
            )
        base = rx.count
        cpu0 = d.cpu_seconds()
        user0, sys0 = d.cpu_split()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # a ROUTER drops replies to a peer over its HWM
        sock.connect(f"ipc://{tmp}/ack.sock")
        acks = errors = 0
        t_first_ack = None
        threads0 = d.thread_cpu()
        try:
            t_start = time.time()
            for p in payloads:
                sock.send(p)
            deadline = time.monotonic() + args.timeout
            while acks + errors < args.events and time.monotonic() < deadline:
                if sock.poll(100):
                    while True:
                        try:
                            r = msgpack.unpackb(sock.recv(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                        t_first_ack = t_first_ack or time.time()
                        acks += bool(r.get("ok"))
                        errors += not r.get("ok")
            t_acked = time.time()
            done = wait_until(
                lambda: rx.count - base >= len(expected), max(1.0, deadline - time.monotonic())
            )
        finally:
            sock.close()
        threads1 = d.thread_cpu()
        records = rx.dump()
        got = Counter((p, w) for _, p, w in records)
        last = max((t for t, _, _ in records), default=t_start)
        lost = len(expected - set(got))
        stray = len(set(got) - expected)
        dups = sum(c - 1 for c in got.values() if c > 1)
        fig(
            f"burst of {args.events} events",
            f"{len(expected)} deliveries expected "
            f"({len(expected) / args.events:.2f}/event), {len(records)} received; "
            f"lost {lost}, misrouted {stray}, dups {dups}" + ("" if done else " (DEADLINE)"),
        )
        fig(
            "accepted (acks)",
            f"{acks} ok, {errors} errors, "
            f"{acks / max(t_acked - t_start, 1e-9):,.0f} acks/s, first ack "
            f"after {((t_first_ack or t_acked) - t_start) * 1000:.0f} ms",
        )
        fig(
            "delivered",
            f"{len(records) / max(last - t_start, 1e-9):,.0f} deliveries/s "
            f"(first send -> last received, {last - t_start:.2f} s)",
        )
        order = sorted(threads1, key=lambda t: (threads1[t][0], t))  # creation rank, 0 = main
        zero = (0, 0.0, 0)
        busy = sorted(
            ((threads1[t][1] - threads0.get(t, zero)[1], order.index(t)) for t in threads1),
            reverse=True,
        )
        ran = sum(1 for t in threads1 if threads1[t][2] > threads0.get(t, zero)[2])
        slices = sum(threads1[t][2] - threads0.get(t, zero)[2] for t in threads1)
        fig(
            "busiest daemon threads in burst",
            ", ".join(f"#{r}:{c:.1f}s" for c, r in busy[:6])
            + f"; {ran} threads ran, {slices:,} times scheduled, all threads "
            f"{sum(c for c, _ in busy):.1f} CPU s",
        )
        user1, sys1 = d.cpu_split()
        fig("daemon CPU in burst user / system", f"{user1 - user0:.1f} s / {sys1 - sys0:.1f} s")
        rss, hwm, threads = d.mem()
        fig(
            "after burst RSS / HWM / threads / CPU",
            f"{rss:.1f} MiB / {hwm:.1f} MiB / {threads} / {d.cpu_seconds() - cpu0:.1f} s",
        )
        if not done or lost or stray or dups:
            failed = True
            print("daemon log tail:\n" + d.log_tail())

        t_exit, code = d.terminate(timeout=60)
        fig(
            "SIGTERM -> exit",
            f"{t_exit:.2f} s, exit code {code if code is not None else 'none (killed after 60 s)'}",
        )
        log = d.log_path.read_text(errors="replace").splitlines()
        levels = Counter(w for line in log for w in ("ERROR", "WARNING", "Traceback") if w in line)
        fig("daemon log", f"{len(log)} lines, {dict(levels) or 'no errors/warnings'}")
        for line in log:
            if "WARNING" in line or "ERROR" in line:
                print("    " + line[:300])
        if code != 0:
            failed = True
            print("daemon log tail:\n" + d.log_tail())
    finally:
        if d is not None:
            d.close()
        rx.close()
        ctx.term()

    print()
    print(f"{'measure':<40}value")
    for name, value in figures:
        print(f"{name:<40}{value}")
    if args.keep or failed:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
