"""``webhook-router listen``: a local webhook receiver that prints each delivery.

One line per POST on stdout, with its signature verdict, so an operator can point a
webhook at it and see what the router sends. A port that cannot be bound is a
``RouterError``; Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from router import RouterError, __version__

SIGNATURE_TOLERANCE = 300  # seconds, as the Standard Webhooks spec recommends


def decode_secret(text: str) -> bytes:
    """A Standard Webhooks secret: ``whsec_`` followed by base64 (the ``--secret`` type)."""
    try:
        return base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise argparse.ArgumentTypeError("a secret is whsec_ followed by base64") from None


def verify_signature(
    headers: Any, body: bytes, secrets: list[bytes], now: float, hex_header: str = "X-Signature"
) -> str:
    """Check a Standard Webhooks (or hex HMAC) signature; the answer is for the listen output."""
    signature = headers.get("webhook-signature")
    if not signature:
        return _verify_hex(headers.get(hex_header), body, secrets)
    if not secrets:
        return "signature unchecked (no --secret)"
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp") or ""
    if not msg_id or not (stamp.isascii() and stamp.isdigit()):
        return "signature BAD (missing webhook-id or webhook-timestamp)"
    if abs(now - int(stamp)) > SIGNATURE_TOLERANCE:
        return f"signature BAD (timestamp {int(now) - int(stamp)}s off)"
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = [base64.b64encode(hmac.digest(k, signed, hashlib.sha256)) for k in secrets]
    for part in signature.split():
        version, _, value = part.partition(",")
        if version == "v1" and any(hmac.compare_digest(value.encode(), e) for e in expected):
            return "signature ok"
    return "signature BAD"


def _verify_hex(signature: str | None, body: bytes, secrets: list[bytes]) -> str:
    """The ``hmac-sha256-hex`` scheme: hex HMAC-SHA256 of the raw body."""
    if not signature:
        return "unsigned"
    if not secrets:
        return "signature unchecked (no --secret)"
    expected = [hmac.new(k, body, hashlib.sha256).hexdigest() for k in secrets]
    if any(hmac.compare_digest(signature.strip().lower(), e) for e in expected):
        return "signature ok (hex)"
    return "signature BAD (hex)"


def _handler(secrets: list[bytes], status: int, out_lock: threading.Lock) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"webhook-router-listen/{__version__}"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                payload = json.loads(body)
                payload = payload if isinstance(payload, dict) else {}
            except ValueError:
                payload = {}
            line = " ".join(
                [
                    datetime.now().strftime("%H:%M:%S.%f")[:-3],
                    str(payload.get("webhook", "-")),
                    str(payload.get("type", "-")),
                    str(payload.get("id") or self.headers.get("webhook-id") or "-"),
                    f"attempt={self.headers.get('webhook-attempt', '-')}",
                    verify_signature(self.headers, body, secrets, time.time()),
                ]
            )
            with out_lock:
                print(line, flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per delivery is printed by do_POST

    return Handler


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(host: str, port: int, secrets: list[bytes], status: int) -> int:
    """Print each delivery to ``host:port`` until Ctrl-C; replies ``status`` to every POST.

    Raises:
        RouterError: the address cannot be bound.
    """
    handler = _handler(secrets, status, threading.Lock())
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise RouterError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    server.daemon_threads = True
    host, port = server.server_address[:2]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop on SIGTERM as on Ctrl-C
    try:
        # Inside the try: whoever waits for this line may send SIGTERM at once.
        print(f"listening on http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
