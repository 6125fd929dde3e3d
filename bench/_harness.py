"""Shared pieces of the daemon benchmarks: the daemon as a subprocess, /proc figures.

Nothing here asserts on timing. Every wait has a deadline; every process started is
stopped by its owner's ``close()`` (callers use try/finally).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- /proc


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from /proc's ppid."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live process below it (a daemon's worker processes)."""
    return sum(process_cpu_seconds(p) for p in [pid, *descendants(pid)])


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` plus every process below it, in MB (10^6 bytes).

    Each process's own peak is added, so the sum errs high (the peaks need not
    coincide, and pages shared between processes count once per process).
    """
    rss = hwm = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            continue
    return rss * 1024 / 1e6, hwm * 1024 / 1e6


# --------------------------------------------------------------------------- the daemon


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """Poll ``check`` until truthy or the deadline; returns its last value (maybe falsy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def base_config(tmp: Path, webhooks: list[dict], **top: Any) -> dict:
    cfg: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "ingest": {"bind": f"ipc://{tmp}/pull.sock", "ack_bind": f"ipc://{tmp}/ack.sock"},
        "metrics": {"bind": None},
        "defaults": {"allow_private_networks": True, "secret": SECRET},
        "webhooks": webhooks,
    }
    cfg.update(top)
    return cfg


def write_config(tmp: Path, cfg: dict) -> Path:
    path = tmp / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Daemon:
    """``python -m router run -c CONFIG`` as a subprocess, READY=1 via NOTIFY_SOCKET."""

    def __init__(self, tmp: Path, config_path: Path, tag: str = "daemon") -> None:
        self.tmp = tmp
        self.config_path = config_path
        self.log_path = tmp / f"{tag}.log"
        self.notify_path = str(tmp / f"{tag}-notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.started_at = 0.0
        self.ready_after: float | None = None
        self.tag = tag
        self._spy: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 60.0) -> float:
        """Start and wait for READY=1; returns seconds from spawn to READY=1."""
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 — closed in close()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.tmp,
        )
        deadline = self.started_at + ready_timeout
        self.notify.settimeout(0.05)
        while True:
            try:
                msg = self.notify.recv(4096).decode()
                if "READY=1" in msg.splitlines():
                    self.ready_after = time.monotonic() - self.started_at
                    self._profile()
                    return self.ready_after
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.proc.returncode} before READY=1:\n" + self.log_tail()
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no READY=1 within {ready_timeout}s:\n" + self.log_tail())

    def _profile(self) -> None:
        """With ``BENCH_PROFILE=DIR``, sample the daemon and its children with py-spy.

        Only threads holding the GIL are sampled (``--gil``): where the CPU goes.
        The flat profile is written to ``DIR/TAG.txt`` when the daemon is closed.
        """
        where = os.environ.get("BENCH_PROFILE")
        spy = Path(sys.executable).with_name("py-spy")
        if not where or not spy.exists():
            return
        out = Path(where) / f"{self.tag}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        self._spy = subprocess.Popen(
            [str(spy), "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking",
             "--gil", "--rate", "250", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def proc_status(self) -> dict[str, str]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    def mem(self) -> tuple[float, float, int]:
        """(VmRSS MiB, VmHWM MiB, Threads)."""
        s = self.proc_status()
        return (
            int(s["VmRSS"].split()[0]) / 1024,
            int(s["VmHWM"].split()[0]) / 1024,
            int(s["Threads"]),
        )

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon's main process, in seconds."""
        return process_cpu_seconds(self.pid)

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the daemon."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def thread_cpu(self) -> dict[int, tuple[int, float, int]]:
        """{thread id: (start tick, CPU seconds, times scheduled)} from schedstat (ns precision).

        Python 3.11 does not name OS threads, so the start tick orders them instead.
        """
        out = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as f:
                    start = int(f.read().rsplit(")", 1)[1].split()[19])
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    run_ns, _wait_ns, slices = (int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
            out[int(tid)] = (start, run_ns / 1e9, slices)
        return out

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "router", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
        )

    def terminate(self, timeout: float = 30.0) -> tuple[float, int | None]:
        """SIGTERM; returns (seconds to exit, exit code or None if it had to be killed)."""
        if self.proc is None:
            return 0.0, None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            code = None
        return time.monotonic() - started, code

    def close(self) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
            try:
                self._spy.wait(30)
            except subprocess.TimeoutExpired:
                self._spy.kill()
            self._spy = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.notify.close()


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]
