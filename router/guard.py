"""The connect path: bounded name resolution, the private-network guard, connecting in time.

A webhook without ``allow_private_networks`` must not reach loopback, private,
link-local or other non-public addresses (SPEC §5). Checking the URL is not
enough: a name can resolve to such an address, or change what it resolves to
between a check and the connect. So the check runs inside the connection, on
the very address it then connects to.

Every connection, guarded or not, resolves and connects within its attempt's
deadline: ``getaddrinfo`` has no timeout of its own, and a host with many
unreachable addresses would otherwise hold a worker for one timeout per address.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection
from urllib3.util.connection import allowed_gai_family

from router.addresses import is_blocked
from router.clock import Clock

RESOLVER_THREADS = 8  # lookups running at once; a stuck one holds one of these, never a worker

Lookup = Callable[..., list[tuple[Any, ...]]]  # socket.getaddrinfo's signature


# --------------------------------------------------------------------------- resolution


class ResolveTimeout(TimeoutError):
    """The lookup did not finish in the time the attempt had left (or could not start)."""


@dataclass(slots=True, eq=False)
class _Lookup:
    host: str
    port: int
    family: int
    until: float  # monotonic time the caller stops waiting
    done: threading.Event = field(default_factory=threading.Event)
    infos: list[tuple[Any, ...]] | None = None
    error: Exception | None = None


class Resolver:
    """Name resolution on a few threads of its own, waited for with the attempt's time left.

    A lookup that outlives its caller keeps its resolver thread busy, not a
    delivery worker. When every resolver thread is stuck like that, a new lookup
    fails at once rather than queueing behind them.
    """

    def __init__(
        self,
        lookup: Lookup = socket.getaddrinfo,
        threads: int = RESOLVER_THREADS,
        clock: Clock | None = None,
    ):
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._lookup = lookup
        self._size = threads
        self.clock = clock or Clock()
        self._cond = threading.Condition()
        self._waiting: deque[_Lookup] = deque()
        self._running: dict[int, _Lookup] = {}  # by thread ident
        self._threads = 0
        self._idle = 0
        self._stopped = False

    def resolve(self, host: str, port: int, family: int, until: float) -> list[tuple[Any, ...]]:
        """``getaddrinfo(host, port, family, SOCK_STREAM)``, given up at ``until``.

        Raises:
            ResolveTimeout: the answer did not come in time, or every thread is stuck.
            socket.gaierror: the name does not resolve.
        """
        if _is_address(host):  # a literal needs no lookup, so it cannot hang
            return self._lookup(host, port, family, socket.SOCK_STREAM)
        job = _Lookup(host, port, family, until)
        with self._cond:
            if self._all_stuck():
                raise ResolveTimeout(
                    f"timeout resolving host: all {self._size} resolver threads are stuck"
                )
            self._waiting.append(job)
            if len(self._waiting) > self._idle and self._threads < self._size:
                self._threads += 1
                # A daemon: a thread stuck in getaddrinfo must not hold up the process exit.
                threading.Thread(target=self._run, name="resolver", daemon=True).start()
            self._cond.notify()
        if not job.done.wait(max(0.0, until - self.clock.monotonic())):
            raise ResolveTimeout("timeout resolving host")
        if job.error is not None:
            raise job.error
        assert job.infos is not None
        return job.infos

    def stop(self) -> None:
        """End the idle threads; one stuck in a lookup ends when the lookup does."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _all_stuck(self) -> bool:
        now = self.clock.monotonic()
        return len(self._running) == self._size and all(
            job.until <= now for job in self._running.values()
        )

    def _run(self) -> None:
        me = threading.get_ident()
        while True:
            with self._cond:
                while not self._waiting:
                    if self._stopped:
                        self._threads -= 1
                        return
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                job = self._waiting.popleft()
                if job.until <= self.clock.monotonic():
                    continue  # its caller has given up already
                self._running[me] = job
            try:
                job.infos = self._lookup(job.host, job.port, job.family, socket.SOCK_STREAM)
            except Exception as exc:  # handed to the caller, who knows what it means
                job.error = exc
            finally:
                with self._cond:
                    del self._running[me]
                job.done.set()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- connecting


class ConnectError(u3.NewConnectionError):
    """No connection was made; ``reason`` is short, without the URL, fit for the attempt log."""

    def __init__(self, conn: HTTPConnection, reason: str):
        self.reason = reason
        super().__init__(conn, reason)


class BlockedAddressError(ConnectError):
    """The host resolved only to addresses ``is_blocked`` refuses."""

    def __init__(self, conn: HTTPConnection, ip: str):
        self.ip = ip
        super().__init__(conn, f"blocked address {ip}")


class Bounded:
    """Resolve, refuse blocked addresses when ``guarded``, connect to one within the deadline.

    A mixin for urllib3 connection classes, in front of ``HTTPConnection``; the
    subclass says when the running attempt ends (``deadline``). Each step is bounded
    by the connection's timeout and by what is left. A guarded connection connects
    to the very address that was checked (no second lookup), which stops DNS
    rebinding; TLS still uses the host name for SNI and verification.
    """

    resolver: Resolver  # set on the pool's connection classes
    guarded = False

    def deadline(self) -> float:
        """Monotonic time by which the running attempt must be over."""
        raise NotImplementedError

    def _new_conn(self) -> socket.socket:
        host, clock = self._dns_host.strip("[]"), self.resolver.clock
        step = self.timeout if isinstance(self.timeout, int | float) else None
        deadline = self.deadline()
        until = deadline if step is None else min(deadline, clock.monotonic() + step)
        try:
            infos = self.resolver.resolve(host, self.port, allowed_gai_family(), until)
        except ResolveTimeout as exc:
            raise ConnectError(self, str(exc)) from exc
        except socket.gaierror as exc:
            raise ConnectError(self, f"connection error: cannot resolve {host}") from exc
        blocked, error = None, None
        for family, kind, proto, _, address in infos:
            if self.guarded and is_blocked(address[0]):
                blocked = blocked or address[0]
                continue
            left = deadline - clock.monotonic()
            if left <= 0:
                error = TimeoutError()
                break
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(left if step is None else min(step, left))
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.settimeout(step)
            return sock
        raise self._failed(error, blocked, host) from error

    def _failed(self, error: OSError | None, blocked: str | None, host: str) -> ConnectError:
        if error is None and blocked is not None:
            return BlockedAddressError(self, blocked)
        if error is None:  # no address at all
            reason = f"connection error: cannot resolve {host}"
        elif isinstance(error, TimeoutError):
            reason = "connect timeout"
        elif isinstance(error, ConnectionRefusedError):
            reason = "connection refused"
        else:
            reason = f"connection error: {error.strerror or type(error).__name__}"
        return ConnectError(self, reason)
