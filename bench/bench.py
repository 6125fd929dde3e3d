"""``make bench``: every target of issue 7 measured against nginx, next to the naive loop.

Run: ``.venv/bin/python bench/bench.py [--runs N] [--quick] [--nginx-workers 1|auto]``
(``BENCH_RUNS`` sets the default number of runs, 3; ``--events``, ``--seconds`` and
``--webhooks`` change the sizes). A run is every phase of
``_phases.Run``, each on a fresh daemon and state dir; the table shows the median
of the runs, ratios taken within each run; the pg-* phases (``bench_cluster``) run
several daemons on one PostgreSQL, ``--only cluster`` those alone. Then the parts alone:
``bench_filter.py`` and ``bench_journal.py``.

Prints; judges nothing but the PASS/MISS column. Exit 0 when every phase ran
(a MISS is a result), 1 when a phase could not run (the table shows ``-``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import urllib3
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _nginx
import _profile
import bench_cluster
from _harness import ROOT
from _phases import QUICK, Run, Sizes

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Target:
    """One row of the table: a figure from a run's results, and the bar it must clear."""

    key: str
    label: str
    value: Callable[[dict], float]
    unit: str
    op: str  # ">=" or "<="
    bar: float | None  # None: no target is set, the row shows its figure

    def met(self, v: float) -> bool:
        return v >= self.bar if self.op == ">=" else v <= self.bar


def targets(s: Sizes) -> list[Target]:
    def ratio(a: str, b: str) -> Callable[[dict], float]:
        return lambda r: r[a]["deliveries_s"] / r[b]["deliveries_s"]

    def fig(phase: str, name: str) -> Callable[[dict], float]:
        return lambda r: r[phase][name]

    one = f"{s.events:,} events -> 1 webhook"
    fan = f"{s.fanout_events:,} events x {s.fanout_hooks} webhooks"
    many = f"{s.events:,} events over {s.active:,} of {s.webhooks:,} webhooks"
    rows = [
        ("1a", f"{one}: deliveries/s", fig("burst", "deliveries_s"), "/s", ">=", 6000),
        ("1b", f"{one}: x naive loop", ratio("burst", "naive-1"), "x", ">=", 1.2),
        ("2a", f"{fan}: deliveries/s", fig("fanout", "deliveries_s"), "/s", ">=", 6000),
        ("2b", f"{fan}: x naive loop", ratio("fanout", "naive-1"), "x", ">=", 1.2),
        ("3", f"{many}: x row 1a", ratio("many", "burst"), "x", ">=", 0.9),
        ("4a", "latency at 200 ev/s: p50", fig("lat-200", "p50_ms"), "ms", "<=", 0.5),
        ("4b", "latency at 200 ev/s: p99", fig("lat-200", "p99_ms"), "ms", "<=", 2),
        ("4c", "latency at 20 ev/s x 10 webhooks: p99", fig("lat-20x10", "p99_ms"), "ms", "<=", 5),
        ("4d", "latency at 2,000 ev/s: p99", fig("lat-2000", "p99_ms"), "ms", "<=", 10),
        ("5", f"acked ingest, {s.producers} DEALERs, delivering", fig("acked", "acks_s"), "/s",
         ">=", 10000),
        ("6a", f"RSS peak in the {s.events:,}-event burst", fig("burst", "hwm_mb"), "MB", "<=",
         120),
        ("6b", f"{s.webhooks:,} webhooks idle: RSS", fig("many", "idle_rss_mb"), "MB", "<=", 150),
        ("6c", f"{s.webhooks:,} webhooks: start to READY", fig("many", "ready_s"), "s", "<=", 1.5),
    ]  # fmt: skip
    return [Target(*row) for row in rows]


PHASES: list[tuple[str, Callable[[Run], dict]]] = [
    ("naive-1", lambda run: run.naive(1)),
    ("naive-2", lambda run: run.naive(2)),
    ("burst", Run.burst),
    ("fanout", Run.fanout),
    ("many", Run.many),
    ("lat-200", lambda run: run.latency(200, 1)),
    ("lat-20x10", lambda run: run.latency(20, 10)),
    ("lat-2000", lambda run: run.latency(2000, 1)),
    ("acked", Run.acked),
    *((f"pg-{n}", lambda run, n=n: CLUSTER.rate(run, n)) for n in bench_cluster.DAEMONS),
    ("pg-failover", lambda run: CLUSTER.failover(run)),
]
CLUSTER = bench_cluster.Cluster()  # the PostgreSQL server of the pg-* phases, stopped by main


def machine() -> list[str]:
    with open("/proc/cpuinfo") as f:
        models = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    model = models[0] if models else platform.processor() or "?"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True, text=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    return [
        f"machine: {os.cpu_count()} cores, {model}, Linux {platform.release()}",
        f"Python {platform.python_version()}, libzmq {zmq.zmq_version()} (pyzmq {zmq.__version__}),"
        f" SQLite {sqlite3.sqlite_version}, urllib3 {urllib3.__version__},"
        f" {_nginx.version()}",
        f"daemon: {head or '?'}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
    ]


def num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit in ("/s", ""):
        return f"{v:,.0f}{unit}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "cores":
        return f"{v:.2f}"
    return f"{v:,.2f} {unit}" if unit in ("ms", "s") else f"{v:,.0f} {unit}"


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got and len(got) == len(values) else None


def safe(fn: Callable[[dict], float], result: dict) -> float | None:
    try:
        return fn(result)
    except (KeyError, ZeroDivisionError, TypeError):
        return None  # a phase it needs did not run


def print_table(sizes: Sizes, results: list[dict], workers: str, quick: bool) -> None:
    runs = len(results)
    print(f"\nTargets of issue 7: median of {runs} run(s); ratios taken within each run")
    if quick:
        print("--quick: sizes too small to judge the daemon; this only shows the bench runs")
    print_rows(targets(sizes), results)
    if any(name in r for r in results for name in bench_cluster.PHASES):
        print(bench_cluster.heading(runs, CLUSTER.lease, CLUSTER.settings, CLUSTER.version))
        print_rows([Target(*row) for row in bench_cluster.rows(CLUSTER.lease)], results)
        print(bench_cluster.FOOTNOTE)
    print(f"\nPhases (medians; nginx with {workers} worker(s), its share of one core and cost)")
    print(
        f"{'phase':<11}{'deliveries':>11}{'per s':>9}{'dups':>6}{'daemon cores':>14}"
        f"{'of which main':>15}{'CPU/delivery':>14}{'nginx core':>12}{'nginx/req':>11}"
    )
    for name, _ in PHASES:

        def m(key: str, name=name) -> float | None:
            return median([r.get(name, {}).get(key) for r in results])

        share, cost = m("nginx_core"), m("nginx_us")
        print(
            f"{name:<11}{num(m('deliveries')):>11}{num(m('deliveries_s')):>9}{num(m('dups')):>6}"
            f"{num(m('cores'), 'cores'):>14}{num(m('main_cores'), 'cores'):>15}"
            f"{num(m('cpu_us')) + ' us':>14}"
            f"{num(None if share is None else 100 * share) + ' %':>12}{num(cost) + ' us':>11}"
        )
    print(
        "naive-N: the naive loop in N processes (its CPU in 'daemon cores'); 'of which main':"
        " the daemon's own process, without its sender processes; latency = nginx $msec"
        " (1 ms resolution, taken at the middle of its ms) - time.time() before the send."
    )


def print_rows(rows: list[Target], results: list[dict]) -> None:
    print(f"{'':4}{'target':<54}{'measured':>11}  {'bar':<13}{'':6}runs")
    for t in rows:
        per_run = [safe(t.value, r) for r in results]
        v = median(per_run)
        verdict = "-" if v is None or t.bar is None else "PASS" if t.met(v) else "MISS"
        bar = "-" if t.bar is None else f"{t.op} {num(t.bar, t.unit)}"
        print(
            f"{t.key:<4}{t.label:<54}{num(v, t.unit):>11}  {bar:<13}"
            f"{verdict:<6}{' / '.join(num(x, t.unit) for x in per_run)}"
        )


def print_profiles(where: Path, result: dict) -> None:
    """Each phase's CPU per delivery of the last run, split by part (``_profile``)."""
    print("\nWhere the CPU went (py-spy, the last run; its sampling slows every phase):")
    for name, _ in PHASES:
        path = where / f"{name}.txt"
        if path.exists():
            print("\n".join(_profile.table(path, cpu_us=result.get(name, {}).get("cpu_us"))))
    shutil.rmtree(where, ignore_errors=True)


def run_parts(quick: bool) -> bool:
    """The parts alone, after the table: the filter and the journal."""
    ok = True
    for script, args in (
        ("bench_filter.py", ["--events", "20000", "--rounds", "1"] if quick else []),
        ("bench_journal.py", ["--events", "2000"] if quick else []),
    ):
        print(f"\n== {script} {' '.join(args)}".rstrip(), flush=True)
        proc = subprocess.run([sys.executable, str(HERE / script), *args], timeout=1800)
        ok &= proc.returncode == 0
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 run: it still runs")
    parser.add_argument("--events", type=int, help="events of the burst phases (20,000)")
    parser.add_argument("--seconds", type=float, help="length of each latency phase (10)")
    parser.add_argument("--webhooks", type=int, help="webhooks configured in 'many' (10,000)")
    parser.add_argument("--nginx-workers", default="1", help="worker_processes: 1 or auto")
    parser.add_argument("--no-parts", action="store_true", help="skip bench_filter/journal")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, journals)")
    parser.add_argument("--phases", help="only these phases, comma-separated (default: all)")
    parser.add_argument(
        "--only", choices=["cluster"],
        help="cluster: only the PostgreSQL phases and the SQLite phase they are compared with",
    )  # fmt: skip
    parser.add_argument(
        "--lease", type=float,
        help=f"journal.lease of the pg-* daemons ({bench_cluster.LEASE:g} s;"
        f" --quick: {bench_cluster.QUICK_LEASE:g} s)",
    )  # fmt: skip
    parser.add_argument(
        "--pg-set", action="append", default=[], metavar="KEY=VALUE",
        help="a setting of the pg-* phases' PostgreSQL server, e.g. fsync=off",
    )  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="sample each daemon with py-spy and print where its CPU went, by part (slower)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a top-level config setting of every daemon, e.g. delivery_workers=8",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ["BENCH_SET"] = ",".join(args.set)
    profiles = None
    if args.profile:
        profiles = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
        os.environ["BENCH_PROFILE"] = str(profiles)
    phases = PHASES
    CLUSTER.lease = args.lease or (bench_cluster.QUICK_LEASE if args.quick else bench_cluster.LEASE)
    CLUSTER.settings.update(setting.partition("=")[::2] for setting in args.pg_set)
    if args.only == "cluster":
        if args.phases:
            parser.error("--only and --phases: one or the other")
        args.phases = ",".join([bench_cluster.REFERENCE, *bench_cluster.PHASES])
        args.no_parts = True
    if args.phases:
        wanted = args.phases.split(",")
        unknown = set(wanted) - {name for name, _ in PHASES}
        if unknown:
            parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
        phases = [(name, phase) for name, phase in PHASES if name in wanted]
    sizes, runs = (QUICK, 1) if args.quick else (Sizes(), max(1, args.runs))
    given = {k: v for k in ("events", "seconds", "webhooks") if (v := getattr(args, k))}
    if "webhooks" in given:  # the active share stays a fifth
        given["active"] = max(1, given["webhooks"] // 5)
    sizes = dataclasses.replace(sizes, **given)
    began = time.monotonic()
    for line in machine():
        print(line)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    failed = False
    results: list[dict] = []
    nginx = _nginx.Nginx(tmp, args.nginx_workers)
    print(
        f"nginx on 127.0.0.1:{nginx.port}, {args.nginx_workers} worker(s); {runs} run(s) in {tmp}"
    )
    try:
        for r in range(runs):
            run = Run(tmp / f"run{r + 1}", nginx, sizes, f"r{r + 1}")
            result: dict = {}
            try:
                for name, phase in phases:
                    started = time.monotonic()
                    try:
                        result[name] = phase(run)
                    except Exception:
                        failed = True
                        print(f"  run {r + 1} {name}: COULD NOT RUN\n{traceback.format_exc()}")
                        continue
                    print(
                        f"  run {r + 1} {name}: {time.monotonic() - started:.1f} s, "
                        + ", ".join(f"{k} {v:,.3g}" for k, v in result[name].items()),
                        flush=True,
                    )
            finally:
                run.close()
            results.append(result)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"  run {r + 1} done; load average {load} (other processes skew every figure)")
    finally:
        nginx.close()
        CLUSTER.close()
    print_table(sizes, results, args.nginx_workers, args.quick)
    if profiles is not None:
        print_profiles(profiles, results[-1] if results else {})
    if not args.no_parts:
        failed |= not run_parts(args.quick)
    print(f"\nbench took {(time.monotonic() - began) / 60:.1f} min")
    if args.keep or failed:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
