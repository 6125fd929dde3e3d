"""Hostile receivers for the delivery tests: blackholed addresses and a raw-socket server.

``HookServer`` answers like a well-behaved HTTP server; these do what it cannot:
never finish a handshake, drip, send without end, reset mid-answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@contextlib.contextmanager
def blackhole(count: int) -> Iterator[tuple[list[str], int]]:
    """``count`` loopback addresses (127.0.0.2, …) on one port where connects hang.

    Each listens with a backlog of 0, filled by one connection that is never
    accepted: the kernel then drops further SYNs, as a firewall that drops packets
    does. Yields the addresses and the port.
    """
    with contextlib.ExitStack() as stack:
        addresses, port = [], 0
        for n in range(2, 2 + count):
            ip = f"127.0.0.{n}"
            listener = stack.enter_context(socket.socket())
            listener.bind((ip, port))
            listener.listen(0)
            port = listener.getsockname()[1]
            filler = stack.enter_context(socket.socket())
            filler.connect((ip, port))
            addresses.append(ip)
        yield addresses, port


@dataclass
class Connection:
    """What the raw server saw of one connection."""

    request: bytes = b""
    sent: int = 0  # bytes of answer written
    ended: threading.Event = field(default_factory=threading.Event)  # the handler is done
    peer_closed: bool = False  # a write failed: the router hung up


Handler = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """A TCP server on 127.0.0.1 whose ``handler(sock, server)`` writes whatever it likes.

    Handlers write with ``send`` (counted) and wait with ``pause`` (ends at close).
    Each connection's request head is read first.
    """

    def __init__(self, handler: Handler, read_request: bool = True):
        self.handler, self.read_request = handler, read_request
        self.connections: list[Connection] = []
        self.stopping = threading.Event()
        self._local = threading.local()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._accept = threading.Thread(target=self._serve, name="raw-server", daemon=True)
        self._accept.start()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def send(self, data: bytes) -> bool:
        """Write ``data``; False once the router has hung up."""
        conn = self._local.conn
        try:
            self._local.sock.sendall(data)
        except OSError:
            conn.peer_closed = True
            return False
        conn.sent += len(data)
        return True

    def pause(self, seconds: float) -> bool:
        """Wait; False when the server is closing."""
        return not self.stopping.wait(seconds)

    def close(self) -> None:
        self.stopping.set()
        self._accept.join(5)
        for sock in self._socks:  # wakes a handler blocked in a write
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn = Connection()
            self.connections.append(conn)
            self._socks.append(sock)
            thread = threading.Thread(target=self._handle, args=(sock, conn), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, sock: socket.socket, conn: Connection) -> None:
        self._local.sock, self._local.conn = sock, conn
        try:
            with sock:
                if self.read_request:
                    conn.request = _read_request(sock, self.stopping)
                self.handler(sock, self)
        except OSError:
            conn.peer_closed = True
        finally:
            conn.ended.set()


def _read_request(sock: socket.socket, stopping: threading.Event) -> bytes:
    """The request head and its Content-Length body, as far as it comes before closing."""
    sock.settimeout(0.1)
    data = b""
    deadline = time.monotonic() + 30  # a request that never completes is not ours to wait for
    while time.monotonic() < deadline and not stopping.is_set():
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")), 0,
            )  # fmt: skip
            if len(body) >= length:
                break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    sock.settimeout(None)
    return data
