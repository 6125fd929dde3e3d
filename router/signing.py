"""Signing and headers: what one attempt says about itself to the receiver.

The Standard Webhooks scheme by default, a hex HMAC in one header for receivers
built for that style, or none (SPEC §2). Everything about a webhook's headers
that does not change between attempts is worked out once (``HeaderTemplate``);
an attempt adds only its id, timestamp, number and signature.
"""

from __future__ import annotations

import base64
import hmac
from secrets import token_bytes
from typing import TYPE_CHECKING

from router import __version__

if TYPE_CHECKING:  # at run time only attributes are read; the config check imports us
    from router.config import WebhookConfig

# The headers the router sets itself: a webhook's static ``headers:`` may not name
# them (the config check refuses them; a template drops them).
RESERVED_HEADERS = frozenset(
    ("content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature",
     "webhook-attempt")
)  # fmt: skip


def scheme_header(signature: str, signature_header: str) -> str | None:
    """The header a signature scheme signs in beyond the reserved ones, the router's too:
    hmac-sha256-hex's ``signature_header`` (the standard scheme's is reserved)."""
    return signature_header if signature == "hmac-sha256-hex" else None


def new_secret() -> str:
    """A new signing secret in the Standard Webhooks form: ``whsec_`` and 32 random bytes."""
    return "whsec_" + base64.b64encode(token_bytes(32)).decode()


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
        sigs = (hmac.digest(key, signed, "sha256") for key in secrets)  # the one-shot C path
        return {"webhook-signature": " ".join(f"v1,{base64.b64encode(s).decode()}" for s in sigs)}
    if scheme == "hmac-sha256-hex":
        return {header: hmac.digest(secrets[0], body, "sha256").hex()}
    raise ValueError(f"unknown signature scheme {scheme!r}")


class HeaderTemplate:
    """The headers of every attempt of one webhook config, less what each attempt adds.

    Built once per config (the pool caches it), so an attempt copies one dict and
    signs, instead of merging and filtering the static headers each time.
    ``static`` is Content-Type, User-Agent and the webhook's ``headers:`` without
    any name the router sets itself (the signature header included).
    """

    __slots__ = ("_webhook", "static")

    def __init__(self, webhook: WebhookConfig):
        if webhook.signature not in ("standard", "hmac-sha256-hex", "none"):
            raise ValueError(f"unknown signature scheme {webhook.signature!r}")
        self._webhook = webhook
        ours = set(RESERVED_HEADERS)
        extra = scheme_header(webhook.signature, webhook.signature_header)
        if extra and webhook.secrets:
            ours.add(extra.lower())
        static = {"Content-Type": "application/json", "User-Agent": f"webhook-router/{__version__}"}
        for name, value in webhook.headers:
            if name.lower() not in ours:
                static[name] = value
        self.static = static

    def headers(self, payload_id: str, attempt_number: int, timestamp: int, body: bytes) -> dict:
        """Every header of one attempt: the static ones, then the protocol's."""
        webhook = self._webhook
        headers = self.static.copy()
        headers["webhook-id"] = payload_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-attempt"] = str(attempt_number)
        if webhook.secrets and webhook.signature != "none":
            headers.update(
                sign(webhook.signature, webhook.secrets, payload_id, timestamp, body,
                     webhook.signature_header)
            )  # fmt: skip
        return headers
