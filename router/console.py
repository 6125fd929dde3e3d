"""The console (SPEC §6) at ``/`` on ``api.bind``: pages for people, over the same API.

Signing in posts a token in a form; the answer starts a server-side session and gives the
browser only a random session id, in a cookie (HttpOnly, SameSite=Strict, Path=/). The server
keeps the SHA-256 of that id and the digest of the token, never the token itself. The pages'
script calls ``/api/v1`` with the cookie: ``ApiServer._token`` takes a session in place of a
bearer token (same scope and companies, the token's entry as the tokens file has it now), with
the session's CSRF token in ``X-CSRF-Token`` on every request but a GET. Sessions are bounded
(``MAX_SESSIONS``; the least recently used is signed out first) and end after ``IDLE`` unused,
at ``LIFETIME``, on logout, or when their token leaves the tokens file.

The sign-in form has no session behind it yet (none is made before a token is known): its
CSRF token is a nonce, sent as a cookie too, and the form holds the nonce's HMAC under a key
made at start. Every CSRF token is compared in constant time; a request without it gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from router.tokens import Token

log = logging.getLogger(__name__)

MAX_SESSIONS = 256  # signed in at once
IDLE = 30 * 60.0  # seconds a session lives unused
LIFETIME = 12 * 3600.0  # seconds a session lives at most, however used
SESSION_COOKIE = "wr_session"
SIGNIN_COOKIE = "wr_signin"  # the sign-in form's nonce
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"  # in every form
_COOKIE = "HttpOnly; SameSite=Strict; Path=/"
_ASSETS = {  # what the pages load, all from the package: no external asset, works offline
    "/console.js": "text/javascript; charset=utf-8",
    "/console.css": "text/css; charset=utf-8",
}
_PAGES = ("/", "/index.html")
SECURITY_HEADERS = (
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Page:
    """An answer that is not JSON: a page, an asset or a redirect."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Session:
    """One signed-in browser. Holds the token's digest, never the token."""

    digest: bytes = field(repr=False)  # SHA-256 of the token
    name: str = ""  # the token's, for the logs
    csrf: str = field(default="", repr=False)
    started: float = 0.0
    used: float = 0.0

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            self.csrf.encode(), presented.encode("utf-8", "surrogateescape")
        )


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()


class Sessions:
    """The signed-in sessions, by the SHA-256 of their id; thread-safe, bounded, expiring."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        limit: int = MAX_SESSIONS,
        idle: float = IDLE,
        lifetime: float = LIFETIME,
    ):
        self.clock, self.limit, self.idle, self.lifetime = clock, limit, idle, lifetime
        self._by_key: OrderedDict[bytes, Session] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_key)

    def open(self, token: Token) -> tuple[str, Session]:
        """A new session for ``token``: its id (for the cookie only) and the session."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token.digest, token.name, secrets.token_urlsafe(32), now, now)
        with self._lock:
            for key in [k for k, s in self._by_key.items() if self._over(s, now)]:
                del self._by_key[key]
            while len(self._by_key) >= self.limit:
                _, oldest = self._by_key.popitem(last=False)
                log.warning(
                    "console: %d sessions open; signed out the least recently used (token %s)",
                    self.limit, oldest.name,
                )  # fmt: skip
            self._by_key[_key(session_id)] = session
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The live session of this id, now used; None if there is none (or it has expired)."""
        key, now = _key(session_id), self.clock()
        with self._lock:
            session = self._by_key.get(key)
            if session is None:
                return None
            if self._over(session, now):
                del self._by_key[key]
                return None
            session.used = now
            self._by_key.move_to_end(key)
            return session

    def close(self, session_id: str) -> Session | None:
        with self._lock:
            return self._by_key.pop(_key(session_id), None)

    def _over(self, s: Session, now: float) -> bool:
        return now - s.used > self.idle or now - s.started > self.lifetime


def cookies(headers: Any) -> dict[str, str]:
    """The request's cookies (``headers``: the request's, or a plain mapping); bad ones left out."""
    lines = (
        headers.get_all("Cookie", []) if hasattr(headers, "get_all") else [headers.get("Cookie")]
    )
    jar: SimpleCookie = SimpleCookie()
    for line in lines:
        try:
            jar.load(line or "")
        except CookieError:
            continue
    return {k: m.value for k, m in jar.items()}


class Console:
    """Sessions, the CSRF checks and the pages, for ``app`` (the running ``App``)."""

    def __init__(self, app: Any, sessions: Sessions | None = None):
        self.app = app
        self.sessions = sessions or Sessions()
        self._signin_key = secrets.token_bytes(32)  # signs the sign-in forms' nonces
        folder = resources.files("router") / "console"
        self._page = (folder / "index.html").read_text(encoding="utf-8")
        self._assets = {path: (folder / path[1:]).read_bytes() for path in _ASSETS}

    # ------------------------------------------------------------------ the API's side

    def session_id(self, headers: Any) -> str | None:
        """The session id the request's cookie sends, if any."""
        return cookies(headers).get(SESSION_COOKIE) or None

    def signed_in(self, session_id: str) -> tuple[Session, Token] | None:
        """The live session of this id and its token as the tokens file has it now (a reload
        may have changed its scope); None when either is gone."""
        session = self.sessions.find(session_id)
        if session is None:
            return None
        found = None
        for token in self.app.config.api_tokens.entries:
            if hmac.compare_digest(token.digest, session.digest):
                found = token
        if found is None:
            self.sessions.close(session_id)
            log.info("console: token %s is no longer in the tokens file; signed out", session.name)
            return None
        return session, found

    # ------------------------------------------------------------------ the pages

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> Page | None:
        """The page at ``path``; None when there is none (the caller answers 404)."""
        if path in _ASSETS:
            if method not in ("GET", "HEAD"):
                return _refused(405, "Use GET.", (("Allow", "GET"),))
            return Page(200, self._assets[path], _ASSETS[path], SECURITY_HEADERS)
        if path in _PAGES:
            if method not in ("GET", "HEAD"):
                return _refused(405, "Use GET.", (("Allow", "GET"),))
            session_id = self.session_id(headers)
            found = self.signed_in(session_id) if session_id else None
            return self._console(*found) if found else self._signin(200, "")
        if path == "/login":
            return self._login(method, headers, body)
        if path == "/logout":
            return self._logout(method, headers, body)
        return None

    def _login(self, method: str, headers: Any, body: bytes) -> Page:
        if method != "POST":
            return _refused(405, "Sign in from the form at /.", (("Allow", "POST"),))
        form = _form(headers, body)
        nonce = cookies(headers).get(SIGNIN_COOKIE, "")
        if not (nonce and hmac.compare_digest(self._sign(nonce), form.get(CSRF_FIELD, ""))):
            log.info("console: a sign-in without its form's CSRF token refused")
            return self._signin(403, "This sign-in form has expired or came from another "
                                     "page. Please sign in again.")  # fmt: skip
        token = self.app.config.api_tokens.find(form.get("token", "").strip())
        if token is None:
            log.info("console: a sign-in with an unknown token refused")
            return self._signin(401, "That token is not known here. Check it and try again.")
        session_id, _ = self.sessions.open(token)
        log.info("console: token %s signed in (%d sessions)", token.name, len(self.sessions))
        return Page(303, b"", headers=(
            ("Location", "/"),
            ("Set-Cookie", f"{SESSION_COOKIE}={session_id}; {_COOKIE}"),
            ("Set-Cookie", f"{SIGNIN_COOKIE}=; Max-Age=0; {_COOKIE}"),
            *SECURITY_HEADERS,
        ))  # fmt: skip

    def _logout(self, method: str, headers: Any, body: bytes) -> Page:
        if method != "POST":
            return _refused(405, "Sign out with the button in the console.", (("Allow", "POST"),))
        session_id = self.session_id(headers)
        session = self.sessions.find(session_id) if session_id else None
        if session_id is None or session is None:
            return _see_other_signed_out()
        if not session.csrf_ok(_form(headers, body).get(CSRF_FIELD)):
            log.info("console: a sign-out without its CSRF token refused (token %s)", session.name)
            return _refused(403, "This request did not come from the console (no CSRF token).")
        self.sessions.close(session_id)
        log.info("console: token %s signed out", session.name)
        return _see_other_signed_out()

    def _signin(self, status: int, message: str) -> Page:
        nonce = secrets.token_urlsafe(16)
        page = self._render(view="signin", signin_csrf=self._sign(nonce), message=message)
        return Page(status, page, headers=(
            ("Set-Cookie", f"{SIGNIN_COOKIE}={nonce}; Max-Age=3600; {_COOKIE}"),
            *SECURITY_HEADERS,
        ))  # fmt: skip

    def _console(self, session: Session, token: Token) -> Page:
        companies = ", ".join(sorted(token.companies)) if token.companies is not None else ""
        page = self._render(view="console", csrf=session.csrf, token=token.name,
                            writes="yes" if token.writes else "no",
                            companies=companies)  # fmt: skip
        return Page(200, page, headers=SECURITY_HEADERS)

    def _render(self, **values: str) -> bytes:
        """The page with each ``{{key}}`` filled in, escaped; keys not given are left empty."""
        page = self._page
        for key in ("view", "csrf", "signin_csrf", "token", "writes", "companies", "message"):
            page = page.replace("{{%s}}" % key, html.escape(values.get(key, "")))  # noqa: UP031
        return page.encode()

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._signin_key, nonce.encode(), hashlib.sha256).hexdigest()


def _form(headers: Any, body: bytes) -> dict[str, str]:
    """A urlencoded form's fields (the last of a repeated one); anything else reads as empty."""
    if (headers.get("Content-Type") or "").split(";")[0].strip().lower() != (
        "application/x-www-form-urlencoded"
    ):
        return {}
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[-1] for k, v in fields.items()}


def _refused(status: int, message: str, headers: tuple = ()) -> Page:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>webhook-router'
        '</title><link rel="stylesheet" href="/console.css"></head><body><main class="refused">'
        f'<h1>Not done</h1><p>{html.escape(message)}</p><p><a href="/">Back to the console</a>'
        "</p></main></body></html>"
    )
    return Page(status, body.encode(), headers=(*headers, *SECURITY_HEADERS))


def _see_other_signed_out() -> Page:
    return Page(303, b"", headers=(
        ("Location", "/"),
        ("Set-Cookie", f"{SESSION_COOKIE}=; Max-Age=0; {_COOKIE}"),
        *SECURITY_HEADERS,
    ))  # fmt: skip
