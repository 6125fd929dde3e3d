"""Shared pieces of the daemon benchmarks: a receiver process, the daemon as a subprocess, /proc.

Nothing here asserts on timing. Every wait has a deadline; every process started is
stopped by its owner's ``close()`` (callers use try/finally).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
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

# --------------------------------------------------------------------------- receiver process

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


def _receiver_main(conn, counter) -> None:
    """Child process: an asyncio HTTP/1.1 keep-alive server that answers 200 at once.

    Records (time.time(), path, webhook-id) per request; ``counter`` is a shared
    int the parent polls without a round trip. Commands on ``conn``: dump, stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    records: list[tuple[float, str, str]] = []
    loop = asyncio.new_event_loop()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = bytearray()

        def data_received(self, data):
            buf = self.buf
            buf += data
            out = []
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end]).split(b"\r\n")
                length = 0
                wid = ""
                for line in head[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        wid = value.strip().decode()
                total = end + 4 + length
                if len(buf) < total:
                    break
                path = head[0].split(b" ")[1].decode()
                del buf[:total]
                records.append((time.time(), path, wid))
                counter.value += 1  # single writer: this loop
                out.append(_REPLY)
            if out:
                self.t.write(b"".join(out))

    def on_command():
        try:
            cmd = conn.recv()
        except EOFError:
            loop.stop()
            return
        if cmd == "dump":
            conn.send(list(records))
            records.clear()
        elif cmd == "stop":
            conn.send("bye")
            loop.stop()

    server = loop.run_until_complete(
        loop.create_server(Proto, "127.0.0.1", 0, backlog=1024, reuse_address=True)
    )
    conn.send(server.sockets[0].getsockname()[1])
    loop.add_reader(conn.fileno(), on_command)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


class Receiver:
    """The HTTP receiver in its own process (so its CPU never competes with ours)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._counter = ctx.Value("q", 0, lock=False)
        self.proc = ctx.Process(target=_receiver_main, args=(child, self._counter), daemon=True)
        self.proc.start()
        if not self._conn.poll(20):
            self.close()
            raise RuntimeError("receiver did not start within 20s")
        self.port = self._conn.recv()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def count(self) -> int:
        return self._counter.value

    def dump(self) -> list[tuple[float, str, str]]:
        """Every request recorded since the last dump: (recv time.time(), path, webhook-id)."""
        self._conn.send("dump")
        if not self._conn.poll(30):
            raise RuntimeError("receiver did not answer a dump within 30s")
        return self._conn.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self._conn.send("stop")
                self._conn.poll(5) and self._conn.recv()
            except (OSError, EOFError):
                pass
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


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
                    return self.ready_after
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.proc.returncode} before READY=1:\n" + self.log_tail()
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(f"no READY=1 within {ready_timeout}s:\n" + self.log_tail())

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
        """utime + stime of the daemon, in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)

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
