"""The soak (``make soak``): mixed traffic, a flaky receiver and ``kill -9`` every few seconds.

Runs the real daemon for ``--seconds`` (default ``$SOAK_SECONDS`` or 600) with producers on both
ingest sockets, good events mixed with bad frames, five webhooks with different subscriptions and
a receiver that fails a quarter of the attempts. The daemon is killed every 2-6 s and restarted at
once. Then the traffic stops, the daemon drains, and an independent matcher checks that every
acked event reached every webhook it matches and that no webhook got one it does not match.
Exits 1 when an event was lost or misrouted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported by tests

from _harness import Daemon, base_config, write_config
from _soak_traffic import PROBE, WEBHOOKS, Producers, Receiver, matches

MAX_EVENT_BYTES = 64 * 1024  # small, so an oversized frame is cheap to send
COUNTED = ("sent", "unacked", "resent", "duplicate_acks", "refused", "misjudged", "bad_accepted")
COUNTED += ("good_refused", "bad_pushed")  # the producers' counters the result shows


@dataclass
class Result:
    """The soak's figures; ``ok`` when nothing acked was lost and nothing was misrouted."""

    seconds: float = 0.0
    sent: int = 0  # good events on the acked socket, each counted once however often resent
    acked: int = 0
    unacked: int = 0  # no answer before the traffic stopped: not "lost"
    resent: int = 0
    duplicate_acks: int = 0
    refused: int = 0  # bad frames answered {"ok": false}
    misjudged: int = 0  # refused with another reason than the frame's fault
    bad_accepted: int = 0
    good_refused: int = 0
    pull_sent: int = 0  # good events on the PULL socket: never acked, reported apart
    pull_delivered: int = 0  # of those, reached every webhook they match
    bad_pushed: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    probes: int = 0
    delivered: int = 0  # distinct (webhook, event id) answered 200
    duplicates: int = 0  # extra 200s for the same (webhook, event id)
    lost: int = 0
    wrong: int = 0
    kills: int = 0
    peak_rss_mib: float = 0.0
    drained_in: float | None = None  # seconds after the traffic stopped; None: deadline passed
    disabled_at_end: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # a few lost or wrong, for the report

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.wrong == 0

    def lines(self) -> list[str]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        drained = (
            "not within the deadline" if self.drained_in is None else f"{self.drained_in:.1f}s"
        )
        return [
            f"soak: {self.seconds:.0f}s of traffic, {self.kills} kills (kill -9), "
            f"drained {drained}",
            f"events sent {self.sent}, acked {self.acked}, unacked {self.unacked}, "
            f"resent {self.resent} (duplicate acks {self.duplicate_acks})",
            f"bad frames refused {self.refused} (misjudged {self.misjudged}, accepted "
            f"{self.bad_accepted}), bad frames pushed {self.bad_pushed}, good refused "
            f"{self.good_refused}",
            f"PULL events sent {self.pull_sent} (not acked), of which fully delivered "
            f"{self.pull_delivered}",
            f"requests {self.requests} ({statuses}), health probes {self.probes}",
            f"delivered {self.delivered}, duplicates {self.duplicates}, "
            f"lost {self.lost}, wrong {self.wrong}",
            f"daemon peak RSS {self.peak_rss_mib:.1f} MiB; disabled at the end: "
            f"{', '.join(self.disabled_at_end) or 'none'}",
            *self.examples,
        ]


class SoakDaemon(Daemon):
    """The bench daemon, killed with SIGKILL and started again, tracking its peak RSS."""

    peak_kib = 0

    def note_peak(self) -> None:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return  # it died on its own: the restart will tell
        self.peak_kib = max(self.peak_kib, hwm)

    def kill9(self) -> None:
        self.note_peak()
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None


def soak_config(tmp: Path, receiver: Receiver) -> Path:
    webhooks = [{**w, "url": receiver.url(w["name"])} for w in WEBHOOKS]
    cfg = base_config(tmp, webhooks, shutdown_timeout="2s")
    cfg["ingest"]["max_event_bytes"] = MAX_EVENT_BYTES
    cfg["defaults"].update(
        timeout="2s",
        retry={"attempts": 5, "backoff": ["50ms", "200ms", "500ms"]},  # quick retries
        health={"probe_interval": "1s"},  # a webhook disabled by bad luck comes back by itself
    )
    return write_config(tmp, cfg)


def missing(producers: Producers, delivered: set[tuple[str, str]], ids) -> list[tuple[str, str]]:
    """(webhook, event id) pairs that ``ids`` should have reached and did not."""
    with producers.tally.lock:
        events = [(eid, producers.tally.events[eid]) for eid in ids]
    hooks = [w["name"] for w in WEBHOOKS]
    return [
        (h, eid)
        for eid, ev in events
        for h in hooks
        if matches(h, ev) and (h, eid) not in delivered
    ]


def run(seconds: float, tmp: Path, drain: float = 300.0, seed: int = 1, rate: float = 40.0,
        log=print) -> Result:  # fmt: skip
    """One soak in ``tmp``; returns its figures (the caller decides what they mean)."""
    rng = random.Random(seed)
    receiver = Receiver(seed, fail_rate=0.25)
    daemon = SoakDaemon(tmp, soak_config(tmp, receiver))
    pull, ack = f"ipc://{tmp}/pull.sock", f"ipc://{tmp}/ack.sock"
    producers = Producers(pull, ack, seed, rate, MAX_EVENT_BYTES)
    result = Result()
    try:
        daemon.start()
        producers.start()
        started = time.monotonic()
        end = started + seconds
        while (now := time.monotonic()) < end:
            if producers.stopping.wait(min(rng.uniform(2.0, 6.0), end - now)):
                break
            if time.monotonic() >= end:
                break
            daemon.kill9()
            producers.generation += 1
            result.kills += 1
            daemon.start()
        result.seconds = time.monotonic() - started
        producers.stop()
        log(f"soak: traffic stopped after {result.seconds:.0f}s; draining (up to {drain:.0f}s)")
        stopped = time.monotonic()
        with producers.tally.lock:
            acked = set(producers.tally.acked)
        while True:
            if not missing(producers, receiver.seen.delivered(), acked):
                result.drained_in = time.monotonic() - stopped
                break
            if time.monotonic() - stopped >= drain:
                break
            time.sleep(0.2)  # the drain is judged by its deadline, not by this pause
        result.disabled_at_end = disabled(daemon)
        daemon.note_peak()
        daemon.terminate()
        fill(result, producers, receiver, daemon)
    finally:
        producers.stop(5)
        daemon.close()
        receiver.close()
    return result


def disabled(daemon: Daemon) -> list[str]:
    proc = daemon.cli("status", "--json")
    if proc.returncode != 0:
        return [f"(status failed: {proc.stderr.strip()[:200]})"]
    return [w["name"] for w in json.loads(proc.stdout)["webhooks"] if w["state"] == "disabled"]


def fill(result: Result, producers: Producers, receiver: Receiver, daemon: SoakDaemon) -> None:
    """Count what was sent, answered and received; judge it with the independent matcher."""
    tally = producers.tally
    with tally.lock:
        events, acked, pushed = dict(tally.events), set(tally.acked), set(tally.pushed)
        counts = Counter(tally.counts)
    seen = receiver.seen.snapshot()
    delivered = receiver.seen.delivered()
    result.acked, result.pull_sent = len(acked), len(pushed)
    for key in COUNTED:
        setattr(result, key, counts[key])
    result.requests = len(seen)
    result.statuses = dict(Counter(s for _, _, _, s in seen))
    result.probes = sum(1 for _, _, t, _ in seen if t == PROBE)
    result.delivered = len(delivered)
    oks = Counter((h, i) for h, i, t, s in seen if s == 200 and t != PROBE)
    result.duplicates = sum(n - 1 for n in oks.values())
    lost = missing(producers, delivered, acked)
    wrong = [
        (h, i) for h, i, t, _ in seen if t != PROBE and not (i in events and matches(h, events[i]))
    ]
    result.lost, result.wrong = len(lost), len(set(wrong))
    result.pull_delivered = len(pushed) - len({i for _, i in missing(producers, delivered, pushed)})
    result.peak_rss_mib = daemon.peak_kib / 1024
    result.examples = [f"lost: {h} {i}" for h, i in lost[:5]]
    result.examples += [f"wrong: {h} {i}" for h, i in sorted(set(wrong))[:5]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--drain", type=float, default=300.0, help="drain deadline, seconds")
    parser.add_argument("--rate", type=float, default=40.0, help="events a second, all producers")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--dir", type=Path, help="keep the state and log here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    print(f"soak: seed {args.seed}, {args.seconds:.0f}s, {args.rate:.0f} events/s")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        where = args.dir.resolve() if args.dir else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        result = run(args.seconds, where, args.drain, args.seed, args.rate)
        print("\n".join(result.lines()))
        if not result.ok:
            log = (where / "daemon.log").read_text(errors="replace").splitlines()
            print("daemon log (end):", *log[-40:], sep="\n")
    print("soak: OK" if result.ok else "soak: FAILED (lost or wrong is not 0)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
