"""The console's sessions and CSRF checks, and its pages over real HTTP on loopback.

The server runs in-process for an App stand-in (a real loaded config); the console in a real
browser against the real daemon is tests/integration/test_console.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import re
from urllib.parse import urlencode

import pytest

from router import api, console
from router.config import load
from router.console import CSRF_HEADER, SESSION_COOKIE, SIGNIN_COOKIE, Sessions
from router.tokens import Token
from tests.builders import HandClock
from tests.test_api import StandIn

ADMIN = "wr_console-unit-test-admin-token"
READ = "wr_console-unit-test-read-token-2"


def token(name: str = "t") -> Token:
    return Token(name, hashlib.sha256(name.encode()).digest(), "admin")


# --------------------------------------------------------------------------- sessions


def test_a_session_is_found_by_its_id_and_holds_neither_the_id_nor_the_token():
    s = Sessions(HandClock())
    session_id, session = s.open(token())
    assert s.find(session_id) is session
    assert s.find(session_id + "x") is None
    held = repr(s._by_key)
    assert session_id not in held and "digest" not in held and session.csrf not in held
    assert len(session_id) >= 43 and len(session.csrf) >= 43  # 256 random bits each


def test_a_session_ends_after_idle_time_unused_but_lives_on_while_used():
    clock = HandClock()
    s = Sessions(clock, idle=60, lifetime=1000)
    kept, _ = s.open(token("kept"))
    idle, _ = s.open(token("idle"))
    for _ in range(5):
        clock.now += 50
        assert s.find(kept) is not None
    assert s.find(idle) is None
    assert len(s) == 1


def test_a_session_ends_at_its_lifetime_however_used():
    clock = HandClock()
    s = Sessions(clock, idle=60, lifetime=100)
    session_id, _ = s.open(token())
    clock.now += 50
    assert s.find(session_id) is not None
    clock.now += 51
    assert s.find(session_id) is None


def test_sessions_are_bounded_and_the_least_recently_used_is_signed_out_first(caplog):
    clock = HandClock()
    s = Sessions(clock, limit=3)
    ids = [s.open(token(f"t{i}"))[0] for i in range(3)]
    s.find(ids[0])  # used: t1 is now the least recently used
    newest, _ = s.open(token("t3"))
    assert len(s) == 3
    assert s.find(ids[1]) is None
    assert all(s.find(i) is not None for i in (ids[0], ids[2], newest))
    assert "signed out the least recently used (token t1)" in caplog.text


def test_expired_sessions_make_room_before_a_live_one_is_signed_out():
    clock = HandClock()
    s = Sessions(clock, limit=2, idle=10)
    old, _ = s.open(token("old"))
    clock.now += 5
    live, _ = s.open(token("live"))
    clock.now += 6  # old is idle 11 s, live 6 s
    s.open(token("new"))
    assert s.find(live) is not None and s.find(old) is None


def test_the_csrf_token_must_be_sent_exactly():
    _, session = Sessions(HandClock()).open(token())
    assert session.csrf_ok(session.csrf)
    for wrong in (None, "", session.csrf[:-1], session.csrf + "x", "é" * 43):
        assert not session.csrf_ok(wrong)


def test_cookies_are_read_from_every_cookie_header_and_bad_ones_are_left_out():
    class Headers(dict):
        def get_all(self, name, default):
            return ["a=1; wr_session=abc", 'bad="', "b=2"] if name == "Cookie" else default

    assert console.cookies(Headers()) == {"a": "1", "wr_session": "abc", "b": "2"}
    assert console.cookies({"Cookie": "wr_session=x"}) == {"wr_session": "x"}
    assert console.cookies({}) == {}


# --------------------------------------------------------------------------- over HTTP


class App(StandIn):
    """The stand-in, plus the one write the tests call."""

    def __init__(self, config):
        super().__init__(config)
        self.disabled: list[str] = []

    def disable(self, name: str) -> dict:
        self.disabled.append(name)
        return {"ok": True, "webhook": name}


@pytest.fixture
def server(tmp_path):
    entries = [
        f"- {{name: ops, sha256: {hashlib.sha256(ADMIN.encode()).hexdigest()}, scope: admin}}",
        f"- {{name: dash, sha256: {hashlib.sha256(READ.encode()).hexdigest()}, scope: read}}",
    ]
    (tmp_path / "tokens.yaml").write_text("\n".join(entries) + "\n")
    (tmp_path / "router.yaml").write_text(
        "api: {bind: '127.0.0.1:0'}\nwebhooks:\n"
        "  - {name: a, url: 'http://127.0.0.1:1/a', allow_private_networks: true, "
        "signature: none}\n"
    )
    s = api.ApiServer(("127.0.0.1", 0), App(load(str(tmp_path / "router.yaml"), env={})))
    s.start()
    yield s
    s.stop()


class Browser:
    """Plain HTTP with a cookie jar, as a browser keeps one for the console's origin."""

    def __init__(self, server: api.ApiServer):
        self.address = server.address
        self.jar: dict[str, str] = {}

    def call(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        conn = http.client.HTTPConnection(*self.address, timeout=20)
        try:
            sent = dict(headers or {})
            if self.jar:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
            conn.request(method, path, body=body or None, headers=sent)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        for line in r.headers.get_all("Set-Cookie") or []:
            name, value = line.split(";")[0].split("=", 1)
            if "Max-Age=0" in line:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        return r.status, r.headers, data

    def form(self, path: str, **fields: str):
        body = urlencode(fields).encode()
        return self.call("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})

    def signin_csrf(self) -> str:
        status, _, page = self.call("GET", "/")
        assert status == 200 and b'action="/login"' in page
        return re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()

    def sign_in(self, token: str = ADMIN) -> str:
        """Sign in; the page's CSRF token."""
        status, headers, _ = self.form("/login", token=token, csrf=self.signin_csrf())
        assert status == 303 and headers["Location"] == "/"
        _, _, page = self.call("GET", "/")
        return re.search(rb'<meta name="csrf" content="([^"]+)">', page).group(1).decode()


def test_the_sign_in_page_is_served_with_a_form_csrf_token_and_strict_headers(server):
    b = Browser(server)
    status, headers, page = b.call("GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'data-view="signin"' in page.decode()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    (cookie,) = headers.get_all("Set-Cookie")
    assert cookie.startswith(f"{SIGNIN_COOKIE}=") and "HttpOnly; SameSite=Strict; Path=/" in cookie
    assert b"{{" not in page


def test_the_script_and_style_sheet_are_served_from_the_package(server):
    b = Browser(server)
    for path, kind, start in (("/console.js", "text/javascript", b"// The webhook-router"),
                              ("/console.css", "text/css", b"/* The webhook-router")):  # fmt: skip
        status, headers, data = b.call("GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and data.startswith(start)
        data = data.replace(b'"http://www.w3.org/2000/svg"', b"")  # a name, never fetched
        assert b"http://" not in data and b"https://" not in data  # no external asset
    assert b.call("POST", "/console.js")[0] == 405


def test_signing_in_starts_a_session_whose_cookie_holds_neither_token_nor_csrf(server):
    b = Browser(server)
    status, headers, _ = b.form("/login", token=ADMIN, csrf=b.signin_csrf())
    assert status == 303
    cookies = headers.get_all("Set-Cookie")
    (session,) = [c for c in cookies if c.startswith(f"{SESSION_COOKIE}=")]
    assert session.endswith("; HttpOnly; SameSite=Strict; Path=/")
    assert ADMIN not in session and SIGNIN_COOKIE not in b.jar  # the form's nonce is spent
    status, _, page = b.call("GET", "/")
    text = page.decode()
    assert status == 200 and 'data-view="console"' in text and 'data-token="ops"' in text
    csrf = re.search(r'<meta name="csrf" content="([^"]+)">', text).group(1)
    assert csrf not in session and ADMIN not in text
    assert len(server.console.sessions) == 1


def test_a_sign_in_without_the_forms_csrf_token_is_refused_with_403(server, caplog):
    b = Browser(server)
    b.signin_csrf()
    for fields in ({"token": ADMIN}, {"token": ADMIN, "csrf": "0" * 64}):
        status, _, page = b.form("/login", **fields)
        assert status == 403 and b"expired or came from another page" in page
    other = Browser(server)  # a form from another browser's page: its nonce is not ours
    status, _, _ = other.form("/login", token=ADMIN, csrf=b.signin_csrf())
    assert status == 403
    assert len(server.console.sessions) == 0
    assert ADMIN not in caplog.text


def test_a_bad_token_is_refused_with_401_and_never_logged(server, caplog):
    caplog.set_level("INFO")
    b = Browser(server)
    status, _, page = b.form("/login", token="wr_not-a-token", csrf=b.signin_csrf())
    assert status == 401 and b"That token is not known here" in page
    assert SESSION_COOKIE not in b.jar
    assert "sign-in with an unknown token refused" in caplog.text
    assert "wr_not-a-token" not in caplog.text


def test_the_api_takes_the_session_and_needs_the_csrf_header_for_changes(server):
    b = Browser(server)
    csrf = b.sign_in()
    status, _, data = b.call("GET", "/api/v1/webhooks")
    assert status == 200 and b'"name": "a"' in data
    status, _, data = b.call("POST", "/api/v1/webhooks/a/disable")
    assert status == 403 and b"X-CSRF-Token" in data
    status, _, _ = b.call("POST", "/api/v1/webhooks/a/disable", headers={CSRF_HEADER: "x" + csrf})
    assert status == 403
    assert server.app.disabled == []
    status, _, _ = b.call("POST", "/api/v1/webhooks/a/disable", headers={CSRF_HEADER: csrf})
    assert status == 200 and server.app.disabled == ["a"]


def test_a_read_token_signed_in_sees_no_write_buttons_and_cannot_write(server):
    b = Browser(server)
    csrf = b.sign_in(READ)
    _, _, page = b.call("GET", "/")
    assert b'data-writes="no"' in page  # the style sheet hides every .writes element
    status, _, data = b.call("POST", "/api/v1/webhooks/a/disable", headers={CSRF_HEADER: csrf})
    assert status == 403 and b"may only read" in data
    assert server.app.disabled == []


def test_a_session_cookie_that_is_not_live_gets_401(server):
    b = Browser(server)
    b.jar[SESSION_COOKIE] = "made-up"
    status, headers, _ = b.call("GET", "/api/v1/webhooks")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="webhook-router"'
    _, _, page = b.call("GET", "/")
    assert b'data-view="signin"' in page


def test_a_bearer_token_wins_over_a_session_cookie(server):
    b = Browser(server)
    b.sign_in(READ)
    status, _, _ = b.call("POST", "/api/v1/webhooks/a/disable",
                          headers={"Authorization": f"Bearer {ADMIN}"})  # fmt: skip
    assert status == 200  # no CSRF header needed: a bearer token is not sent by a browser


def test_logout_needs_the_csrf_token_then_ends_the_session(server):
    b = Browser(server)
    csrf = b.sign_in()
    session_id = b.jar[SESSION_COOKIE]
    status, _, _ = b.form("/logout")
    assert status == 403 and SESSION_COOKIE in b.jar
    assert b.call("GET", "/api/v1/webhooks")[0] == 200
    status, headers, _ = b.form("/logout", csrf=csrf)
    assert status == 303 and headers["Location"] == "/" and SESSION_COOKIE not in b.jar
    b.jar[SESSION_COOKIE] = session_id  # the old cookie, kept by someone
    assert b.call("GET", "/api/v1/webhooks")[0] == 401
    assert b.call("GET", "/logout")[0] == 405


def test_a_token_taken_out_of_the_tokens_file_ends_its_sessions(server, tmp_path):
    b = Browser(server)
    b.sign_in()
    cfg = server.app.config
    tokens = dataclasses.replace(cfg.api_tokens, entries=cfg.api_tokens.entries[1:])
    server.app.config = dataclasses.replace(cfg, api_tokens=tokens)  # as a reload would
    assert b.call("GET", "/api/v1/webhooks")[0] == 401
    assert len(server.console.sessions) == 0


def test_pages_that_do_not_exist_are_404(server):
    b = Browser(server)
    status, headers, data = b.call("GET", "/nothing")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert b"the API is under /api/v1/" in data
