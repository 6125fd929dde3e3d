"""Where a daemon's CPU went, by part: a py-spy raw profile summed up.

``bench.py --profile`` samples each phase's daemon (and its sender processes)
with ``py-spy record --gil --format raw``: only threads holding the interpreter
lock, so each sample is CPU spent in Python. Each sample is given to the part
of the innermost router frame on its stack (``PARTS``), split by process.

Run alone: ``.venv/bin/python bench/_profile.py FILE.txt``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# The router's modules by part, as the README's "How it is built" names them.
PARTS = {
    "receiver.py": "ingest", "envelope.py": "ingest",
    "filter.py": "filter", "predicates.py": "filter", "rules.py": "filter",
    "journal.py": "journal", "store.py": "journal",
    "dispatch.py": "supervisors", "handle.py": "supervisors", "supervisor.py": "supervisors",
    "webhook.py": "supervisors", "retry.py": "supervisors", "budget.py": "supervisors",
    "scheduler.py": "supervisors", "actor.py": "supervisors",
    "senders.py": "sender hand-off",
    "delivery.py": "HTTP", "connections.py": "HTTP", "guard.py": "HTTP",
    "signing.py": "signing",
}  # fmt: skip
_FRAME = re.compile(r"\((?:.*/)?router/(\w+\.py):\d+\)")


def parts(path: Path) -> dict[str, Counter]:
    """Samples by process ("daemon", "senders") and part."""
    out: dict[str, Counter] = {"daemon": Counter(), "senders": Counter()}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        child = len(frames) > 1 and frames[1].startswith("process ")
        part = "other"
        for frame in reversed(frames):
            m = _FRAME.search(frame)
            if m and m.group(1) in PARTS:
                part = PARTS[m.group(1)]
                break
        out["senders" if child else "daemon"][part] += int(n)
    return out


def table(path: Path, deliveries: int | None = None, cpu_us: float | None = None) -> list[str]:
    """One line per process and part: its share of the samples, and µs per delivery.

    The µs split the phase's measured CPU per delivery in proportion to the samples
    (CPU outside Python, in syscalls without the lock, is spread the same way).
    """
    counts = parts(path)
    total = sum(sum(c.values()) for c in counts.values())
    if not total:
        return [f"{path.name}: no samples"]
    lines = [f"{path.stem}: {total:,} samples"]
    for proc, c in counts.items():
        for part, n in c.most_common():
            share = n / total
            us = f"{share * cpu_us:7.0f} us" if cpu_us else ""
            lines.append(f"  {proc:<8} {part:<16} {share:6.1%} {us}")
    return lines


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("\n".join(table(Path(arg))))
