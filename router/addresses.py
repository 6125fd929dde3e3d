"""Which addresses a webhook may not reach unless it allows private networks (SPEC §5).

The one place that decides it: the config check (a literal address in a URL)
and the connect-time guard (``router.guard``, on the address a name resolved
to) both ask here. Kept apart from the guard so that the config check does not
import the HTTP stack.
"""

from __future__ import annotations

import ipaddress


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
