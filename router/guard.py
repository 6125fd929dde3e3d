"""The private-network guard: which addresses a webhook may reach, checked at connect time.

A webhook without ``allow_private_networks`` must not reach loopback, private,
link-local or other non-public addresses (SPEC §5). Checking the URL is not
enough: a name can resolve to such an address, or change what it resolves to
between a check and the connect. So the check runs inside the connection, on
the very address it then connects to.
"""

from __future__ import annotations

import ipaddress
import socket

from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection
from urllib3.util.connection import allowed_gai_family


def blocked_kind(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of off-limits address ``addr`` is ("a loopback", …), or None if public.

    Loopback, private, link-local, unspecified, reserved, multicast and other
    non-global ranges (such as 100.64.0.0/10) are off limits, also when written
    as IPv4-mapped IPv6. The config check and the connect-time guard share this.
    """
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    kinds = (
        ("an unspecified", addr.is_unspecified),
        ("a loopback", addr.is_loopback),
        ("a link-local", addr.is_link_local),
        ("a multicast", addr.is_multicast),
        ("a reserved", addr.is_reserved),
        ("a private", addr.is_private),
        ("a non-public", not addr.is_global),
    )
    return next((kind for kind, hit in kinds if hit), None)


def is_blocked(ip: str) -> bool:
    """Whether ``ip`` is an address a webhook without ``allow_private_networks`` may not reach.

    Anything that does not parse is blocked: fail closed.
    """
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return True
    return blocked_kind(addr) is not None


class BlockedAddressError(u3.NewConnectionError):
    """The host resolved only to addresses ``is_blocked`` refuses."""

    def __init__(self, conn: HTTPConnection, ip: str):
        self.ip = ip
        super().__init__(conn, f"blocked address {ip}")


class Guarded:
    """Resolve once, refuse blocked addresses, connect to one that passed.

    A mixin for urllib3 connection classes, in front of ``HTTPConnection``.
    Connecting to the very address that was checked (no second lookup) is what
    stops DNS rebinding. TLS still uses the host name for SNI and verification.
    """

    def _new_conn(self) -> socket.socket:
        host = self.host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise u3.NameResolutionError(self.host, self, exc) from exc
        blocked, error = None, None
        for family, kind, proto, _, address in infos:
            if is_blocked(address[0]):
                blocked = blocked or address[0]
                continue
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(self.timeout, int | float):
                    sock.settimeout(self.timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is None:
            raise BlockedAddressError(self, blocked or host)
        if isinstance(error, TimeoutError):
            raise u3.ConnectTimeoutError(self, f"connect timeout ({self.timeout})") from error
        raise u3.NewConnectionError(
            self, f"Failed to establish a new connection: {error}"
        ) from error
