"""nginx as the benchmark's HTTP receiver: its own prefix and config in a temp dir, 204 at once.

Why nginx: a Python receiver tops out near 800 requests/s, below what the daemon
sends, and a bench whose receiver is the bottleneck hides every gain and loss.
nginx answers over 100,000/s on one core, so its share of the machine stays small;
``Nginx.cpu_seconds`` lets the bench show that share instead of assuming it.

The access log is the measurement: one line per request, ``$msec $uri
$http_webhook_id``. ``$msec`` is the time the worker woke up for the request
(nginx caches the clock per event-loop turn), in seconds with 1 ms resolution.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from _harness import ROOT, tree_cpu_seconds, wait_until

INSTALL = ROOT / "bench" / "install_nginx.sh"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

CONF = """\
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    log_format bench '$msec $uri $http_webhook_id';
    client_body_temp_path {prefix}/body;
    client_body_buffer_size 128k;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        access_log {prefix}/access.log bench buffer=64k flush=20ms;
        location / {{ return 204; }}
    }}
}}
"""


def binary() -> str:
    """The nginx binary, installed first by ``install_nginx.sh`` when none is on PATH."""
    found = shutil.which("nginx", path=SEARCH_PATH)
    if found:
        return found
    proc = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True, timeout=900)
    found = shutil.which("nginx", path=SEARCH_PATH)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{INSTALL} could not install nginx:\n{proc.stdout}{proc.stderr}")
    return found


def version() -> str:
    proc = subprocess.run([binary(), "-v"], capture_output=True, text=True, timeout=30)
    return (proc.stderr or proc.stdout).strip().removeprefix("nginx version: ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, slots=True)
class Hit:
    """One request nginx logged: arrival time (s, 1 ms resolution), path, webhook-id."""

    at: float
    uri: str
    wid: str


class Nginx:
    """One nginx master (``daemon off``, our child) and its workers on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: str = "1") -> None:
        self.prefix = workdir / "nginx"
        self.prefix.mkdir(parents=True)
        self.prefix.chmod(0o755)  # workers run as an unprivileged user when we are root
        self.log = self.prefix / "access.log"
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._offset = self._counted_to = self._count = 0
        for _ in range(5):  # the free port may be taken between our probe and nginx's bind
            self.port = _free_port()
            conf = self.prefix / "nginx.conf"
            conf.write_text(CONF.format(workers=workers, prefix=self.prefix, port=self.port))
            self.proc = subprocess.Popen(
                [binary(), "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
                 "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            started = wait_until(lambda: self.proc.poll() is not None or self._accepts(), 20)
            if started and self.proc.poll() is None:
                return
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.close()
            if "Address already in use" not in err:
                raise RuntimeError(f"nginx did not start: {err.strip()}")
        raise RuntimeError("nginx found no free port in 5 tries")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def mark(self) -> None:
        """Start a new measurement: ``count`` and ``hits`` see only requests from now on."""
        self._offset = self._counted_to = self.log.stat().st_size if self.log.exists() else 0
        self._count = 0

    def count(self) -> int:
        """Requests logged since ``mark`` (nginx flushes its log buffer every 20 ms)."""
        if self.log.exists():
            with open(self.log, "rb") as f:
                f.seek(self._counted_to)
                data = f.read()
            whole = data.rfind(b"\n") + 1  # a line still being written counts next time
            self._count += data.count(b"\n", 0, whole)
            self._counted_to += whole
        return self._count

    def hits(self) -> list[Hit]:
        """Every request logged since ``mark``."""
        with open(self.log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        out = []
        for line in data.decode(errors="replace").splitlines():
            at, uri, wid = [*line.split(" ", 2), "", ""][:3]
            out.append(Hit(float(at), uri, wid))
        return out

    def cpu_seconds(self) -> float:
        """CPU seconds of the master and its workers."""
        return 0.0 if self.proc is None else tree_cpu_seconds(self.proc.pid)

    def close(self) -> None:
        """Graceful stop (SIGQUIT flushes the log), then kill if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
