"""Signing and headers: what one attempt says about itself to the receiver.

The Standard Webhooks scheme by default, a hex HMAC in one header for receivers
built for that style, or none (SPEC §2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from router import __version__
from router.config import WebhookConfig
from router.messages import Payload


def sign(
    scheme: str,
    secrets: tuple[bytes, ...],
    msg_id: str,
    timestamp: int,
    body: bytes,
    header: str = "X-Signature",
) -> dict[str, str]:
    """Return the signature headers of one attempt.

    ``standard`` signs with every secret (newest first) so receivers keep verifying
    during a rotation. ``hmac-sha256-hex`` has room for one value and uses only the
    newest secret. No secrets, or ``none``, means no signature header.
    """
    if scheme == "none" or not secrets:
        return {}
    if scheme == "standard":
        signed = f"{msg_id}.{timestamp}.".encode() + body
        sigs = (hmac.new(key, signed, hashlib.sha256).digest() for key in secrets)
        return {"webhook-signature": " ".join(f"v1,{base64.b64encode(s).decode()}" for s in sigs)}
    if scheme == "hmac-sha256-hex":
        return {header: hmac.new(secrets[0], body, hashlib.sha256).hexdigest()}
    raise ValueError(f"unknown signature scheme {scheme!r}")


def build_headers(
    webhook: WebhookConfig, payload: Payload, attempt_number: int, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return every header of one attempt.

    Static ``webhook.headers`` may replace Content-Type or User-Agent but never the
    ``webhook-*`` or signature headers the receiver relies on.
    """
    headers = {"Content-Type": "application/json", "User-Agent": f"webhook-router/{__version__}"}
    protocol = {
        "webhook-id": payload.id,
        "webhook-timestamp": str(timestamp),
        "webhook-attempt": str(attempt_number),
        **sign(
            webhook.signature,
            webhook.secrets,
            payload.id,
            timestamp,
            body,
            webhook.signature_header,
        ),
    }
    reserved = {name.lower() for name in protocol}
    for name, value in webhook.headers:
        if name.lower() not in reserved:
            for old in [h for h in headers if h.lower() == name.lower()]:
                del headers[old]
            headers[name] = value
    headers.update(protocol)
    return headers
