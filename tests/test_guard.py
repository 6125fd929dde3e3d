"""Which addresses the private-network guard refuses.

That guarded connections refuse them at connect time is tested in test_delivery.py.
"""

from __future__ import annotations

import pytest

from router.guard import is_blocked


@pytest.mark.parametrize(
    "ip",
    ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "100.64.0.1", "224.0.0.1", "240.0.0.1", "::1", "::", "fe80::1%eth0", "fc00::1",
     "::ffff:127.0.0.1", "::ffff:10.1.2.3", "ff02::1", "not-an-ip"],
)  # fmt: skip
def test_private_and_special_addresses_are_blocked(ip):
    assert is_blocked(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_not_blocked(ip):
    assert not is_blocked(ip)
