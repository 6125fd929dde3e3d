"""Signatures and headers of one attempt, without a server.

That the headers go out on the wire and verify there is tested in test_delivery.py.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from router.signing import build_headers, sign
from tests.builders import KEY, PAYLOAD, hook


def test_hex_signature_header_defaults_to_x_signature():
    headers = sign("hmac-sha256-hex", (KEY,), "evt_01", 1, b"{}")
    assert headers == {"X-Signature": hmac.new(KEY, b"{}", "sha256").hexdigest()}


@settings(max_examples=50, deadline=None)
@given(msg_id=st.text(min_size=1), body=st.text(), key=st.binary(min_size=1, max_size=64))
def test_standard_signature_matches_the_reference_implementation(msg_id, body, key):
    timestamp = 1_790_000_000
    ours = sign("standard", (key,), msg_id, timestamp, body.encode())["webhook-signature"]
    reference = Webhook(key).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)
    assert ours == reference


def test_static_headers_cannot_replace_protocol_headers_but_may_replace_user_agent():
    webhook = hook(
        "http://example.com/",
        headers=(("Webhook-Signature", "forged"), ("webhook-id", "x"), ("user-agent", "mine/1")),
    )
    headers = build_headers(webhook, PAYLOAD, 1, 1_790_000_000, b"{}")
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["webhook-id"] == "evt_01"
    assert "forged" not in headers.values()
    assert headers["user-agent"] == "mine/1"
    assert "User-Agent" not in headers
