"""The HTTP API (SPEC §6) on ``api.bind``: bearer tokens, scopes and tenants; JSON in and out.

Control plane, never the data path: it reads the running config and the supervisors'
snapshots through ``App``. Every request under ``/api/v1`` is checked in one order: the
token (401), the method (405), the scope (403), then whether the token may see the webhook
named (404, as for one that does not exist, so a tenant learns nothing of the others).

Bounded against slow and hostile clients: at most ``MAX_CONNECTIONS`` at once (the next get
503), each read waits ``READ_TIMEOUT`` at most, a connection lives ``CONNECTION_DEADLINE`` at
most (a reaper closes it), and a body over ``MAX_BODY`` is refused unread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgpack

from router import (
    RouterError,
    __version__,
    config,
    envelope,
    openapi,
    predicates,
    registry,
    resources,
)
from router.console import CSRF_HEADER, Console, Page
from router.control import ATTEMPTS_LIMIT, MAX_ATTEMPTS_LIMIT
from router.signing import new_secret
from router.tokens import Token

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_BODY = 1024 * 1024  # bytes; a webhook's JSON is a few KiB
READ_TIMEOUT = 10.0  # seconds one read from the client may wait
CONNECTION_DEADLINE = 60.0  # seconds a connection may take, however it trickles
MAX_CONNECTIONS = 32  # served at once; a thread each
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b'Connection: close\r\n\r\n{"errors": [{"path": "", "message": "too many connections"}]}'
)


class ApiError(Exception):
    """An answer other than 2xx: ``status`` and the error body's entries, ``(path, message)``."""

    def __init__(self, status: int, message: str, path: str = "", headers: dict | None = None,
                 more: list[tuple[str, str]] = ()):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.path = status, message, path
        self.headers = headers or {}
        self.errors = [(path, message), *more]

    def body(self) -> dict:
        return {"errors": [{"path": path, "message": message} for path, message in self.errors]}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: dict[str, str]  # from the path, e.g. {"name": "crm-sync"}
    query: dict[str, list[str]]
    body: bytes
    token: Token


Handler = Callable[[Request], tuple[int, Any]]


# --------------------------------------------------------------------------- the endpoints


class Api:
    """What each endpoint answers, for ``app`` (the running ``App``); no HTTP in here."""

    def __init__(self, app: Any):
        self.app = app

    def _visible(self, token: Token, name: str) -> Any:
        """The config of webhook ``name`` if the token may see it; 404 otherwise."""
        for w in self.app.config.webhooks:
            if w.name == name and token.sees(w.rules):
                return w
        raise ApiError(404, f"no webhook named '{name}'", "name")

    def _shown(self, token: Token, webhooks: list) -> list[dict]:
        """Each webhook with its status; one a reload is removing right now is left out.

        On a daemon of a cluster (SPEC §8), every webhook with its ``owner``, as in
        ``status --json``: those held elsewhere, or by nobody yet, as the journal has them.
        """
        if self.app.cluster is not None:
            snaps = {s["name"]: s for s in self.app._everywhere()}
            return [
                resources.webhook(w, snaps[w.name], full=token.writes)
                for w in webhooks
                if w.name in snaps
            ]
        handles = []
        for w in webhooks:
            try:
                handles.append((w, self.app.dispatcher.get(w.name)))
            except RouterError:
                continue
        snaps = self.app._snapshots([h for _, h in handles])
        return [
            resources.webhook(w, snap, full=token.writes)
            for (w, _), snap in zip(handles, snaps, strict=True)
        ]

    def list_webhooks(self, req: Request) -> tuple[int, Any]:
        """Every webhook the token may see, with its settings and status."""
        visible = [w for w in self.app.config.webhooks if req.token.sees(w.rules)]
        return 200, {"webhooks": self._shown(req.token, visible)}

    def get_webhook(self, req: Request) -> tuple[int, Any]:
        """One webhook, as in the list."""
        shown = self._shown(req.token, [self._visible(req.token, req.params["name"])])
        if not shown:
            raise ApiError(404, f"no webhook named '{req.params['name']}'", "name")
        return 200, shown[0]

    def create(self, req: Request) -> tuple[int, Any]:
        """Create a webhook: 201 with it; without a ``secret``, one is made and shown here only."""
        doc = _object(req.body)
        return self._put(req, doc, doc.get("secret"), create=True)

    def replace(self, req: Request) -> tuple[int, Any]:
        """Replace an API-made webhook; a ``secret`` left out keeps the one it has."""
        name = req.params["name"]
        doc = _object(req.body)
        if doc.setdefault("name", name) != name:
            raise ApiError(422, "the name is the one in the path; to rename a webhook, create "
                           "the new one, then delete the old", "name")  # fmt: skip
        try:
            registry.writable(self.app.config_for(name), name)
        except registry.Conflict as e:
            raise ApiError(409, str(e), "name") from None
        kept = self.app.registry.documents().get(name, {}).get("secret")
        return self._put(req, doc, doc.get("secret", kept), create=False)

    def delete(self, req: Request) -> tuple[int, Any]:
        """Remove an API-made webhook; its pending deliveries are cancelled, as on reload."""
        try:
            self.app.delete_webhook(req.params["name"], req.token.name)
        except registry.Conflict as e:
            raise ApiError(409, str(e), "name") from None
        return 204, None

    def _put(self, req: Request, doc: dict, secret: Any, create: bool) -> tuple[int, Any]:
        """Check ``doc`` as the token may send it, store it, run it, answer with it."""
        made = None
        if secret is None:
            made = secret = new_secret()
        doc["secret"] = secret
        try:
            hook = config.api_webhook(doc, self.app.config)
        except config.Invalid as e:
            raise _invalid(e) from None
        if hook.signature == "none" and made:
            del doc["secret"]  # nothing to sign with: no secret to keep or show
            made = None
        _may_make(req.token, hook, doc)
        try:
            hook = self.app.put_webhook(doc, create, req.token.name)
        except config.Invalid as e:  # the defaults changed meanwhile
            raise _invalid(e) from None
        except registry.Conflict as e:
            raise ApiError(409, str(e), "name") from None
        except registry.Full as e:
            raise ApiError(507, str(e)) from None
        shown = self._shown(req.token, [hook])
        answer = shown[0] if shown else resources.webhook(hook, None)
        if made:
            answer["secret"] = made  # this once; never again
        return (201 if create else 200), answer

    def explain(self, req: Request) -> tuple[int, Any]:
        """Which of the webhooks this token sees the event reaches, and why not the others.

        The event is checked as ingest checks it (the same errors, as 422), and
        judged by the same conditions the filter compiles.
        """
        try:
            doc = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not JSON: {e}", "body") from None
        cfg = self.app.config
        try:
            event = envelope.decode(msgpack.packb(doc), cfg.ingest.max_event_bytes, self.app.clock)
        except envelope.BadEvent as e:
            raise ApiError(
                422, f"the router would refuse this event: {e.message}", e.reason
            ) from None
        except (TypeError, ValueError, OverflowError) as e:  # what msgpack cannot carry
            raise ApiError(422, f"the router would refuse this event: {e}", "body") from None
        visible = [(w.name, w.rules) for w in cfg.webhooks if req.token.sees(w.rules)]
        verdicts = predicates.explain_webhooks(visible, event)
        return 200, {
            "event": event.id,
            "reaches": [v.webhook for v in verdicts if v.matched],
            "webhooks": [
                {
                    "name": v.webhook,
                    "reaches": v.matched,
                    "matched_by": v.matched_by,
                    "why_not": [] if v.matched else list(v.reasons),
                }
                for v in verdicts
            ],
        }

    def attempts(self, req: Request) -> tuple[int, Any]:
        """The attempt log, newest first: ``limit``, ``failed``, ``event``."""
        limit = _query(req, "limit", str(ATTEMPTS_LIMIT))
        if not limit.isdigit() or not 0 < int(limit) <= MAX_ATTEMPTS_LIMIT:
            raise ApiError(422, f"limit must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}",
                           "limit")  # fmt: skip
        failed = _query(req, "failed", "false").lower()
        if failed not in _BOOLEANS:
            raise ApiError(422, "failed must be true or false", "failed")
        event = _query(req, "event", "") or None
        found = self.app.attempts(req.params["name"], int(limit), _BOOLEANS[failed], event)
        return 200, {"attempts": found}

    def enable(self, req: Request) -> tuple[int, Any]:
        """Health check first: 200 once it passed and the webhook is enabled, 502 if not."""
        try:
            answer = self.app.enable(req.params["name"])
        except RouterError as e:
            raise ApiError(502, str(e)) from None
        return (200 if answer.get("ok") else 502), answer

    def disable(self, req: Request) -> tuple[int, Any]:
        """Disable by hand: no attempts, deliveries held."""
        return 200, self.app.disable(req.params["name"])

    def replay(self, req: Request) -> tuple[int, Any]:
        """Body ``{"since", "until", "failed", "event"}``, all optional: 202 ``{"replayed": N}``."""
        body = _object(req.body)
        unknown = sorted(set(body) - {"since", "until", "failed", "event"})
        if unknown:
            raise ApiError(422, f"unknown key {unknown[0]!r}", unknown[0])
        failed = body.get("failed", False)
        if not isinstance(failed, bool):
            raise ApiError(422, "failed must be true or false", "failed")
        event = body.get("event")
        if event is not None and (not isinstance(event, str) or not event):
            raise ApiError(422, "event must be an event id", "event")
        since, until = _moment(body, "since"), _moment(body, "until")
        answer = self.app.replay(req.params["name"], since, failed, until, event)
        return 202, {"webhook": answer.get("webhook"), "replayed": answer.get("requeued", 0)}

    def test(self, req: Request) -> tuple[int, Any]:
        """A ``WEBHOOK_TEST`` event to this webhook alone: 200 with the attempt's result."""
        try:
            return 200, self.app.test(req.params["name"])
        except RouterError as e:
            raise ApiError(504, str(e)) from None

    def publish(self, req: Request) -> tuple[int, Any]:
        """Publish one event: 201 ``{"ok": true, "id": …}`` once it is journaled.

        It goes the way of an event on the ack socket: the receiver checks it (its
        reasons, as 422), the filter routes it, the journal commits it, and the answer
        is that socket's ack: a repeated id gets ``"duplicate": true`` and is not
        delivered again. 503 when it was not journaled (it may be, late, after a
        timeout: send it again with the same id).
        """
        try:
            doc = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not JSON: {e}", "body") from None
        try:
            frame = msgpack.packb(doc)
        except (TypeError, ValueError, OverflowError) as e:  # what msgpack cannot carry
            raise ApiError(422, f"the router refused this event: {e}", "body") from None
        retry = {"Retry-After": "1"}
        try:
            waiter = self.app.publish(frame)
        except RouterError as e:
            raise ApiError(503, str(e), "", retry) from None
        if waiter.bad is not None:
            raise ApiError(422, f"the router refused this event: {waiter.bad.message}",
                           waiter.bad.reason)  # fmt: skip
        if not waiter.answer["ok"]:
            raise ApiError(503, f"not journaled: {waiter.answer['error']}", "", retry)
        return 201, waiter.answer

    def event_types(self, req: Request) -> tuple[int, Any]:
        """The event types seen (count, last seen, ``data`` paths), and the projects and companies.

        A company-scoped token is shown only what was seen with its own companies.
        """
        return 200, self.app.catalog.view(req.token.companies)

    def routes(self) -> list[tuple[tuple[str, ...], dict[str, Handler]]]:
        """Path patterns (``{name}`` is a parameter) and the handler of each method: every
        endpoint of SPEC §6."""
        webhook = ("webhooks", "{name}")
        return [
            (("webhooks",), {"GET": self.list_webhooks, "POST": self.create}),
            (webhook, {"GET": self.get_webhook, "PUT": self.replace, "DELETE": self.delete}),
            ((*webhook, "enable"), {"POST": self.enable}),
            ((*webhook, "disable"), {"POST": self.disable}),
            ((*webhook, "replay"), {"POST": self.replay}),
            ((*webhook, "test"), {"POST": self.test}),
            ((*webhook, "attempts"), {"GET": self.attempts}),
            (("events",), {"POST": self.publish}),
            (("explain",), {"POST": self.explain}),
            (("event-types",), {"GET": self.event_types}),
            (("openapi.json",), {"GET": self.openapi}),
        ]

    def openapi(self, req: Request) -> tuple[int, Any]:
        """This API described in OpenAPI 3.1."""
        return 200, openapi.document(PREFIX, self.routes())


_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _invalid(e: config.Invalid) -> ApiError:
    """Every schema error of a webhook, as one 422."""
    (path, message), *more = e.problems
    return ApiError(422, message, path, more=more)


def _may_make(token: Token, hook: Any, doc: dict) -> None:
    """A company-scoped token makes only webhooks of its companies, on public addresses."""
    if token.companies is None:
        return
    if not token.sees(hook.rules):
        mine = ", ".join(sorted(token.companies))
        raise ApiError(422, f"token '{token.name}' may only make webhooks of its companies "
                       f"({mine}): every rule needs a companies list within them, or the "
                       "webhook could receive another company's events", "companies")  # fmt: skip
    if doc.get("allow_private_networks") is True:
        raise ApiError(422, f"token '{token.name}' is limited to companies and may not let "
                       "a webhook reach private networks", "allow_private_networks")  # fmt: skip


def _object(body: bytes) -> dict:
    """A request body that must be a JSON object (an empty body is ``{}``)."""
    try:
        value = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the body is not JSON: {e}", "body") from None
    if not isinstance(value, dict):
        raise ApiError(422, "the body must be a JSON object", "body")
    return value


def _moment(body: dict, key: str) -> float | None:
    """A time in a body: ISO-8601 (with its offset; none means UTC) or epoch seconds."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    raise ApiError(422, f"{key} must be an ISO-8601 time or epoch seconds", key)


def _query(req: Request, key: str, default: str) -> str:
    """One query parameter; given twice, the last one counts."""
    values = req.query.get(key)
    return values[-1] if values else default


def _match(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    params = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


_WRITES_ONLY = "events"  # POST /events publishes for every company: admin without companies
_ASKS = (["explain"],)  # POSTs that change nothing: a read token may send them


def authorize(token: Token, method: str, parts: list[str]) -> None:
    """The scope check (403), after the token is known and the method allowed."""
    if method != "GET" and parts not in _ASKS and not token.writes:
        raise ApiError(403, f"token '{token.name}' may only read (scope read)")
    if parts == [_WRITES_ONLY] and token.companies is not None:
        raise ApiError(403, f"token '{token.name}' is limited to companies; it cannot publish")


# --------------------------------------------------------------------------- HTTP


class ApiServer:
    """Serves the API for ``app`` on ``bind`` from a few threads; started and stopped by App."""

    def __init__(self, bind: tuple[str, int], app: Any):
        self.bind = bind
        self.app = app
        self.api = Api(app)
        self.console = Console(app)  # the pages at / and their sessions
        self.routes = self.api.routes()
        self.address = bind  # the bound (host, port), with the real port when port was 0
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Bind and serve; raises ``RouterError`` when binding fails."""
        host, port = self.bind
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as e:
            raise RouterError(f"cannot serve the API on {host}:{port}: {e.strerror or e}") from None
        self._server.owner = self
        self.address = self._server.server_address[:2]
        self._threads = [
            threading.Thread(target=self._server.serve_forever, args=(0.2,), name="api-http"),
            threading.Thread(target=self._server.reap, name="api-reaper"),
        ]
        for t in self._threads:
            t.daemon = True
            t.start()
        tokens = self.app.config.api_tokens
        log.info(
            "API on http://%s:%d%s/ (%d tokens from %s)",
            *self.address, PREFIX, len(tokens.entries), tokens.path,
        )  # fmt: skip

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(5)
        self._server, self._threads = None, []

    def answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple:
        """``(status, body, token)`` for one request; the token is never logged.

        Paths outside the API are the console's (``router.console``): its pages, as a ``Page``.
        """
        url = urlsplit(target)
        path = unquote(url.path)
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            page = self.console.answer(method, path, headers, body)
            if page is None:
                raise ApiError(404, f"no such page: {path} (the API is under {PREFIX}/)", "path")
            return page.status, page, None
        token = self._token(method, headers)
        parts = [p for p in path[len(PREFIX) :].split("/") if p]
        for pattern, methods in self.routes:
            if (params := _match(pattern, parts)) is None:
                continue
            if method not in methods:
                allow = ", ".join(methods)
                raise ApiError(405, f"{method} is not allowed here; use {allow}", "method",
                               {"Allow": allow})  # fmt: skip
            authorize(token, method, parts)
            if "name" in params:
                self.api._visible(token, params["name"])
            req = Request(method, params, parse_qs(url.query), body, token)
            status, answer = methods[method](req)
            return status, answer, token
        raise ApiError(404, f"no such endpoint: {path}", "path")

    def _token(self, method: str, headers: Any) -> Token:
        """The bearer token; without one, the console's session cookie, which needs the
        session's CSRF token in ``X-CSRF-Token`` on every method but GET (403 without)."""
        challenge = {"WWW-Authenticate": 'Bearer realm="webhook-router"'}
        authorization = headers.get("Authorization")
        session_id = None if authorization else self.console.session_id(headers)
        if session_id is not None:
            found = self.console.signed_in(session_id)
            if found is None:
                raise ApiError(401, "the console session has ended; sign in again",
                               "authorization", challenge)  # fmt: skip
            session, token = found
            if method != "GET" and not session.csrf_ok(headers.get(CSRF_HEADER)):
                raise ApiError(403, f"a request from the console needs its {CSRF_HEADER} header",
                               "csrf")  # fmt: skip
            return token
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "send Authorization: Bearer TOKEN", "authorization", challenge)
        token = self.app.config.api_tokens.find(presented.strip())
        if token is None:
            raise ApiError(401, "unknown token", "authorization", challenge)
        return token


class _Gone(Exception):
    """The client is gone before its request was whole: nobody to answer."""


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer with a cap on connections and a deadline for each."""

    daemon_threads = True
    owner: ApiServer

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stopping = threading.Event()
        self.deadlines: dict[socket.socket, float] = {}
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        with self.lock:
            self.deadlines[request] = time.monotonic() + CONNECTION_DEADLINE
        try:
            super().process_request(request, client_address)
        except Exception:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self.lock:
            self.deadlines.pop(request, None)
        self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer is routine; anything else is a bug worth a traceback."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("api: %s went away", client_address[0])
        else:
            log.exception("api: serving %s failed", client_address[0])

    def reap(self) -> None:
        """Once a second: shut the connections past their deadline (their reads then end)."""
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            with self.lock:
                late = [s for s, deadline in self.deadlines.items() if deadline < now]
            for s in late:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"webhook-router/{__version__}"
    timeout = READ_TIMEOUT  # on every read and write of this connection

    def __getattr__(self, name: str) -> Any:
        """``do_GET``, ``do_PUT``, any ``do_X``: every method reaches ``_serve`` (a JSON 405)."""
        if name.startswith("do_"):
            return lambda: self._serve(name[3:])
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s: %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # _serve logs each request, without its query

    def _serve(self, method: str) -> None:
        path = urlsplit(self.path).path
        token: Token | None = None
        try:
            body = self._body()
            status, answer, token = self.server.owner.answer(method, self.path, self.headers, body)
            headers: dict = {}
        except _Gone:
            self.close_connection = True
            return
        except ApiError as e:
            status, headers = e.status, e.headers
            answer = e.body()
        except Exception:
            log.exception("api: %s %s failed", method, path)
            status, headers = 500, {}
            answer = {"errors": [{"path": "", "message": "internal error (see the router's log)"}]}
        who = f"token {token.name}" if token else self.address_string()
        if status in (401, 403):
            log.info("api: %s %s refused with %d (%s)", method, path, status, who)
        else:
            log.debug("api: %s %s %d (%s)", method, path, status, who)
        self._write(status, answer, headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, headers too long) in JSON too."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # a request line it could not read: still say why
        text = message or HTTPStatus(code).phrase
        self._write(code, {"errors": [{"path": "", "message": text}]}, {})

    def _write(self, status: int, answer: Any, headers: dict) -> None:
        """JSON, or a console ``Page`` as it is (its own type and headers, Set-Cookie included)."""
        if isinstance(answer, Page):
            data, kind, extra = answer.body, answer.content_type, answer.headers
        else:
            data = b"" if status == 204 else json.dumps(answer, default=str).encode()
            kind, extra = "application/json", (("Cache-Control", "no-store"),)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (*extra, *headers.items()):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        """The request body, read only when it is declared and small enough."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length", "body")
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number", "body")
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"the body is over {MAX_BODY} bytes", "body")
        body = self.rfile.read(int(length)) if int(length) else b""
        if len(body) < int(length):
            raise _Gone  # the client left, or its deadline cut it off
        return body
