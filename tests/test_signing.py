"""Signatures and headers of one attempt, without a server.

That the headers go out on the wire and verify there is tested in test_delivery.py.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from router import __version__
from router.signing import RESERVED_HEADERS, HeaderTemplate, sign
from router.validators import header_name
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


def test_static_headers_cannot_replace_any_header_the_router_sets():
    webhook = hook(
        "http://example.com/",
        headers=(("Webhook-Signature", "forged"), ("webhook-id", "x"), ("user-agent", "mine/1"),
                 ("X-Team", "blue")),
    )  # fmt: skip
    headers = HeaderTemplate(webhook).headers(PAYLOAD.id, 1, 1_790_000_000, b"{}")
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["webhook-id"] == "evt_01"
    assert headers["User-Agent"] == f"webhook-router/{__version__}"
    assert headers["X-Team"] == "blue"
    assert not {"forged", "x", "mine/1"} & set(headers.values())
    assert {name.lower() for name in headers} >= RESERVED_HEADERS


def test_a_static_header_named_like_the_hex_signature_header_is_dropped():
    webhook = hook(
        "http://example.com/", signature="hmac-sha256-hex", signature_header="X-Hub",
        headers=(("x-hub", "forged"),),
    )  # fmt: skip
    headers = HeaderTemplate(webhook).headers(PAYLOAD.id, 1, 1_790_000_000, b"{}")
    assert headers["X-Hub"] == hmac.new(KEY, b"{}", "sha256").hexdigest()
    assert "x-hub" not in headers


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS))
def test_the_config_check_refuses_every_header_the_router_sets(name):
    with pytest.raises(ValueError, match="set by the router"):
        header_name(name.title())


def test_each_attempt_adds_its_own_id_timestamp_number_and_signature():
    template = HeaderTemplate(hook("http://example.com/"))
    first = template.headers("evt_01", 1, 1_790_000_000, b"{}")
    second = template.headers("evt_02", 2, 1_790_000_060, b"{}")
    assert (first["webhook-id"], first["webhook-attempt"]) == ("evt_01", "1")
    assert (second["webhook-id"], second["webhook-timestamp"]) == ("evt_02", "1790000060")
    assert first["webhook-signature"] != second["webhook-signature"]
    assert "webhook-id" not in template.static  # one attempt's headers never leak into the next
