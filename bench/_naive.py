"""The naive loop the daemon is measured against: ZeroMQ PULL -> urllib3 POST, nothing else.

One thread per process: receive a frame, decode it, build the same signed request
the daemon sends (JSON body, Standard Webhooks headers), POST it on a kept-alive
``HTTPConnectionPool``, next. No journal, no routing, no retries, no acks. Run in
one process and in two, in the same bench run as the daemon, it is the yardstick
the issue's ratios are taken against: what this machine does with the least work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing as mp
import signal
import time
from pathlib import Path

import msgpack
import urllib3
import zmq
from _harness import SECRET, process_cpu_seconds, wait_until

KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


def _loop(addr: str, port: int, path: str, conn) -> None:
    """Child process: bind PULL at ``addr`` and forward every frame until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.bind(addr)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1, retries=False)
    conn.send("ready")
    while True:
        doc = msgpack.unpackb(sock.recv())
        doc.setdefault("timestamp", time.time())
        body = json.dumps(doc, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        mac = hmac.new(KEY, f"{doc['id']}.{stamp}.".encode() + body, hashlib.sha256).digest()
        pool.urlopen(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "webhook-id": doc["id"],
                "webhook-timestamp": stamp,
                "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            },
        )


class NaiveLoops:
    """``processes`` naive loops, each on its own ``ipc://`` PULL socket in ``tmp``."""

    def __init__(self, tmp: Path, port: int, path: str, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.addrs = [f"ipc://{tmp}/naive-{k}.sock" for k in range(processes)]
        self.procs = []
        for addr in self.addrs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_loop, args=(addr, port, path, child), daemon=True)
            proc.start()
            self.procs.append(proc)
            wait_until(lambda p=proc, c=parent: c.poll() or not p.is_alive(), 30)
            if not parent.poll():
                self.close()
                raise RuntimeError(f"a naive loop did not start (exit code {proc.exitcode})")
            parent.recv()

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(p.pid) for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
