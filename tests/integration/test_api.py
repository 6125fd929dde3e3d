"""The HTTP API over real HTTP against the running daemon: tokens, scopes, tenants, reloads."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket

import yaml
from openapi_spec_validator import validate
from standardwebhooks.webhooks import Webhook

from router import __version__
from tests.integration.conftest import SECRET, Reply, wait_until

ADMIN = "wr_admin-token-of-the-integration-tests-0001"
READ = "wr_read-token-of-the-integration-tests-00002"
ACME = "wr_acme-portal-token-of-the-integration-003"
LATER = "wr_a-token-added-by-a-reload-000000000000004"
URL_SECRET = "path-credential-6f1c"  # a receiver's credential in a URL path (as Slack's are)
HEADER_SECRET = "header-credential-93ab"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(name: str, token: str, scope: str, companies: list[str] | None = None) -> dict:
    item = {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(), "scope": scope}
    return item | ({"companies": companies} if companies else {})


TOKENS = [
    _entry("ops", ADMIN, "admin"),
    _entry("dash", READ, "read"),
    _entry("acme-portal", ACME, "admin", ["acme"]),
]


class Client:
    """Plain HTTP to the daemon's API on loopback (no proxy); every answer is JSON."""

    def __init__(self, port: int):
        self.port = port
        self.seen: list[str] = []  # every answer's headers and body, to search for secrets

    def call(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict, dict]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=sent)
            r = conn.getresponse()
            raw = r.read()
            got = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        self.seen.append(json.dumps(got) + raw.decode(errors="replace"))
        assert got["content-type"] == "application/json"
        return r.status, got, json.loads(raw) if raw else {}

    def get(self, path: str, token: str | None = ADMIN) -> tuple[int, dict]:
        status, _, body = self.call("GET", path, token)
        return status, body


def start(daemon_factory, hooks, webhooks: list[dict] | None = None, tokens=TOKENS):
    port = _free_port()
    webhooks = webhooks or [
        {"name": "a", "url": hooks.url(f"/a/{URL_SECRET}"), "headers": {"X-Key": HEADER_SECRET}},
        {"name": "b", "url": hooks.url("/b"), "events": ["B_*"], "retry": {"attempts": 2}},
    ]
    d = daemon_factory(webhooks, api={"bind": f"127.0.0.1:{port}", "tokens_file": "./tokens.yaml"})
    write_tokens(d, tokens)
    d.start()
    return d, Client(port)


def write_tokens(d, tokens: list[dict]) -> None:
    (d.tmp / "tokens.yaml").write_text(yaml.safe_dump(tokens, sort_keys=False))


def _line_of(d, name: str) -> int:
    lines = d.config_path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip() == f"- name: {name}")


def test_no_token_or_an_unknown_one_gets_401_and_nothing_else(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    for headers in ({}, {"Authorization": "Bearer wr_nope"}, {"Authorization": f"Basic {ADMIN}"},
                    {"Authorization": "Bearer "}, {"Authorization": ADMIN}):  # fmt: skip
        for method, path in (("GET", "/api/v1/webhooks"), ("GET", "/api/v1/webhooks/a"),
                             ("POST", "/api/v1/webhooks"), ("GET", "/api/v1/nothing")):  # fmt: skip
            status, got, body = api.call(method, path, headers=headers)
            assert status == 401, (headers, path)
            assert got["www-authenticate"] == 'Bearer realm="webhook-router"'
            assert body["errors"][0]["path"] == "authorization"
    assert "refused with 401" in d.log()


def test_a_read_token_cannot_write(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    writes = [("POST", "/api/v1/webhooks"), ("PUT", "/api/v1/webhooks/a"),
              ("DELETE", "/api/v1/webhooks/a"), ("POST", "/api/v1/events"),
              ("POST", "/api/v1/webhooks/a/disable"),
              ("POST", "/api/v1/webhooks/a/replay")]  # fmt: skip
    for method, path in writes:
        status, _, body = api.call(method, path, READ, b"{}")
        assert status == 403, path
        assert body == {
            "errors": [{"path": "", "message": "token 'dash' may only read (scope read)"}]
        }
    assert api.get("/api/v1/webhooks", READ)[0] == 200
    assert api.get("/api/v1/webhooks/a", READ)[1]["state"] == "active"  # nothing changed


def test_the_list_and_one_webhook_show_settings_source_and_the_status_fields(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    d.send({"type": "A_DONE", "id": "e1"})
    wait_until(lambda: hooks.ids(f"/a/{URL_SECRET}") == ["e1"], what="the delivery to a")
    wait_until(lambda: d.webhook("a")["delivered"] == 1, what="a's delivered count")
    status, listed = api.get("/api/v1/webhooks")
    assert status == 200
    assert [w["name"] for w in listed["webhooks"]] == ["a", "b"]
    a, b = listed["webhooks"]
    assert a["source"] == f"{d.config_path}:{_line_of(d, 'a')}"
    assert b["source"] == f"{d.config_path}:{_line_of(d, 'b')}"
    assert a["url"] == hooks.url(f"/a/{URL_SECRET}")  # an admin token sees the whole URL
    assert b["events"] == ["B_*"] and b["retry"] == {"attempts": 2, "backoff": [0.05, 0.1]}
    assert a["headers"] == {"X-Key": HEADER_SECRET}
    assert "secret" not in a and a["signature"] == "standard"
    cli = d.webhook("a")
    for key in ("state", "health", "delivered", "failed", "queued", "in_flight",
                "consecutive_failures", "last_success", "last_error"):  # fmt: skip
        assert a[key] == cli[key], key
    assert (a["state"], a["health"], a["delivered"]) == ("active", "HEALTHY", 1)
    assert set(cli) - {"name", "url"} <= set(a)  # every field of status --json
    status, one = api.get("/api/v1/webhooks/a")
    assert status == 200
    assert {k: v for k, v in one.items() if k != "latency_ms"} == {
        k: v for k, v in a.items() if k != "latency_ms"
    }
    # a read token sees what status shows: scheme, host and port; header names only
    status, seen = api.get("/api/v1/webhooks/a", READ)
    assert seen["url"] == f"http://127.0.0.1:{hooks.port}"
    assert seen["headers"] == {"X-Key": "(hidden)"}


def test_unknown_paths_are_404_wrong_methods_405_and_every_answer_is_json(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    assert api.get("/api/v1/webhooks/nope") == (
        404, {"errors": [{"path": "name", "message": "no webhook named 'nope'"}]}
    )  # fmt: skip
    assert api.get("/api/v1/nothing")[0] == 404
    assert api.get("/api/v1/webhooks/a/b/c")[0] == 404
    assert api.get("/elsewhere", None)[0] == 404
    status, got, body = api.call("PATCH", "/api/v1/webhooks/a", ADMIN)
    assert (status, got["allow"]) == (405, "GET, PUT, DELETE")
    assert body["errors"][0]["path"] == "method"
    status, got, _ = api.call("DELETE", "/api/v1/webhooks", ADMIN)
    assert (status, got["allow"]) == (405, "GET, POST")
    # a body over the limit is refused from its Content-Length, before it is sent
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/webhooks HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
                  b"Authorization: Bearer " + ADMIN.encode() + b"\r\n\r\n")  # fmt: skip
        answer = s.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 413 ") and b"over 1048576 bytes" in answer


def test_no_secret_or_token_appears_in_any_answer_or_in_the_log(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    d.send({"type": "A_DONE", "id": "e1"})
    wait_until(lambda: hooks.ids(f"/a/{URL_SECRET}") == ["e1"], what="the delivery to a")
    limited = []  # what tokens that may not write see
    for token in (ADMIN, READ, ACME, "wr_wrong", None):
        for path in ("/api/v1/webhooks", "/api/v1/webhooks/a", "/api/v1/webhooks/b", "/x"):
            api.get(path, token)
        api.call("POST", "/api/v1/webhooks", token, json.dumps({"secret": SECRET}).encode())
        if token != ADMIN:
            limited += api.seen[-5:]
    d.reload()
    assert d.stop() == 0
    log = d.log()
    assert "refused with 401" in log and "refused with 403" in log  # the requests were logged
    hashes = [t["sha256"] for t in TOKENS]
    for text, where in [*((s, "an answer") for s in api.seen), (log, "the log")]:
        for secret in (SECRET, SECRET.removeprefix("whsec_"), ADMIN, READ, ACME, *hashes):
            assert secret not in text, f"{secret} in {where}"
    assert any(URL_SECRET in text and HEADER_SECRET in text for text in api.seen)  # admin's
    for text in limited:  # the receiver's credentials: only for tokens that may write
        assert URL_SECRET not in text and HEADER_SECRET not in text


def test_a_company_token_sees_only_its_companies_webhooks_and_404_for_the_others(
    hooks, daemon_factory
):
    webhooks = [
        {"name": "acme-crm", "url": hooks.url("/1"), "companies": ["acme"]},
        {"name": "acme-two", "url": hooks.url("/2"),
         "match": [{"companies": ["acme"], "events": ["X"]}, {"companies": ["acme"]}]},
        {"name": "shared", "url": hooks.url("/3"), "companies": ["acme", "globex"]},
        {"name": "globex", "url": hooks.url("/4"), "companies": ["globex"]},
        {"name": "anyone", "url": hooks.url("/5")},
        {"name": "half", "url": hooks.url("/6"),
         "match": [{"companies": ["acme"]}, {"events": ["Y"]}]},
    ]  # fmt: skip
    _, api = start(daemon_factory, hooks, webhooks)
    status, listed = api.get("/api/v1/webhooks", ACME)
    assert [w["name"] for w in listed["webhooks"]] == ["acme-crm", "acme-two"]
    assert api.get("/api/v1/webhooks/acme-crm", ACME)[0] == 200
    missing = api.get("/api/v1/webhooks/no-such", ACME)
    for name in ("shared", "globex", "anyone", "half"):
        status, body = api.get(f"/api/v1/webhooks/{name}", ACME)
        assert status == 404
        assert body == {"errors": [{"path": "name", "message": f"no webhook named '{name}'"}]}
        assert missing[1]["errors"][0]["message"] == "no webhook named 'no-such'"
        # not even a write reveals it: the same 404 before anything else happens
        assert api.call("POST", f"/api/v1/webhooks/{name}/disable", ACME)[0] == 404
    assert api.call("POST", "/api/v1/webhooks/acme-crm/disable", ACME)[0] == 200  # its own
    status, _, body = api.call("POST", "/api/v1/events", ACME, b"{}")
    assert status == 403 and "limited to companies" in body["errors"][0]["message"]
    assert len(api.get("/api/v1/webhooks", ADMIN)[1]["webhooks"]) == 6


def test_sighup_rereads_the_tokens_file_an_added_token_works_a_removed_one_gets_401(
    hooks, daemon_factory
):
    d, api = start(daemon_factory, hooks)
    assert api.get("/api/v1/webhooks", LATER)[0] == 401
    assert api.get("/api/v1/webhooks", READ)[0] == 200
    write_tokens(d, [TOKENS[0], _entry("later", LATER, "read")])  # dash removed, later added
    d.reload()
    assert api.get("/api/v1/webhooks", LATER)[0] == 200
    assert api.get("/api/v1/webhooks", READ)[0] == 401
    assert api.get("/api/v1/webhooks", ADMIN)[0] == 200
    # api.bind is kept until a restart: the server goes on where it was
    d.settings["api"]["bind"] = f"127.0.0.1:{_free_port()}"
    d.write()
    d.reload()
    assert "api_bind changed; that takes effect after a restart" in d.log()
    assert api.get("/api/v1/webhooks", LATER)[0] == 200


def test_a_broken_tokens_file_fails_check_and_refuses_the_reload(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    assert d.cli("check").returncode == 0
    broken = [TOKENS[0], {"name": "later", "sha256": LATER, "scope": "read"}]  # clear text
    write_tokens(d, broken)
    lines = (d.tmp / "tokens.yaml").read_text().splitlines()
    at = f"{d.tmp}/tokens.yaml:{lines.index(f'  sha256: {LATER}') + 1}: tokens[1].sha256"
    check = d.cli("check")
    assert check.returncode == 1
    assert check.stderr.startswith(f"{at}: this is a token in clear")
    assert LATER not in check.stderr + check.stdout
    d.reload()
    assert f"reload refused: {at}" in d.log()
    assert "reload refused: the old configuration keeps running" in d.log()
    assert LATER not in d.log()
    assert api.get("/api/v1/webhooks", READ)[0] == 200  # the old tokens keep working
    assert api.get("/api/v1/webhooks", LATER)[0] == 401
    (d.tmp / "tokens.yaml").unlink()
    check = d.cli("check")
    assert check.returncode == 1
    assert f"api.tokens_file: cannot read the tokens file {d.tmp}/tokens.yaml" in check.stderr


def test_idle_connections_beyond_the_limit_are_turned_away_and_the_api_recovers(
    hooks, daemon_factory
):
    _, api = start(daemon_factory, hooks)
    idle = []
    try:
        for _ in range(32):  # api.MAX_CONNECTIONS: each sends nothing and holds its slot
            idle.append(socket.create_connection(("127.0.0.1", api.port), timeout=10))
        wait_until(lambda: _turned_away(api.port), what="a connection past the limit refused")
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: api.get("/api/v1/webhooks")[0] == 200, what="the API serving again")


def _turned_away(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        answer = s.recv(4096)
    return answer.startswith(b"HTTP/1.0 503") and b"too many connections" in answer


def test_explain_says_which_webhooks_an_event_reaches_and_why_not_the_others(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    event = json.dumps({"type": "A_THING", "id": "why-1", "company": "acme"}).encode()
    status, _, body = api.call("POST", "/api/v1/explain", ADMIN, event)
    assert status == 200
    assert (body["event"], body["reaches"]) == ("why-1", ["a"])
    a, b = body["webhooks"]
    assert (a["name"], a["reaches"], a["why_not"]) == ("a", True, [])
    assert a["matched_by"].startswith("rule 1 (")
    assert (b["name"], b["reaches"]) == ("b", False)
    (why,) = b["why_not"]
    assert "A_THING" in why and "B_*" in why  # the first condition that failed, in words
    # It only asks: a read token may send it, and nothing was journaled or sent.
    assert api.call("POST", "/api/v1/explain", READ, event)[0] == 200
    assert d.status()["events"]["received"] == 0
    assert hooks.at("/b") == [] and hooks.at(f"/a/{URL_SECRET}") == []


def test_explain_refuses_what_ingest_would_refuse_with_its_reason(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    status, _, body = api.call("POST", "/api/v1/explain", ADMIN, b'{"id": "no-type"}')
    assert status == 422
    assert body["errors"] == [
        {"path": "missing_type", "message": "the router would refuse this event: the event "
         "has no 'type'"}
    ]  # fmt: skip
    status, _, body = api.call("POST", "/api/v1/explain", ADMIN, b"{not json")
    assert status == 400 and body["errors"][0]["path"] == "body"


def test_explain_for_a_company_token_speaks_only_of_its_companies_webhooks(hooks, daemon_factory):
    webhooks = [
        {"name": "acme-crm", "url": hooks.url("/1"), "companies": ["acme"]},
        {"name": "globex", "url": hooks.url("/2"), "companies": ["globex"]},
        {"name": "everyone", "url": hooks.url("/3")},
    ]
    _, api = start(daemon_factory, hooks, webhooks)
    event = json.dumps({"type": "T", "company": "globex"}).encode()
    status, _, body = api.call("POST", "/api/v1/explain", ACME, event)
    assert status == 200
    assert body["reaches"] == []  # globex and everyone would take it: not this token's to know
    assert [w["name"] for w in body["webhooks"]] == ["acme-crm"]
    assert "globex" in body["webhooks"][0]["why_not"][0]
    status, _, body = api.call("POST", "/api/v1/explain", ADMIN, event)
    assert body["reaches"] == ["globex", "everyone"]


def test_the_attempt_log_with_its_filters_for_tokens_that_may_see_the_webhook(
    hooks, daemon_factory
):
    webhooks = [
        {"name": "acme-crm", "url": hooks.url("/1"), "companies": ["acme"],
         "retry": {"backoff": ["50ms"]}},
        {"name": "globex", "url": hooks.url("/2"), "companies": ["globex"]},
    ]  # fmt: skip
    hooks.script("/1", Reply(500, body=b"try later"))
    d, api = start(daemon_factory, hooks, webhooks)
    d.send({"type": "T", "id": "e1", "company": "acme"})
    d.send({"type": "T", "id": "e2", "company": "acme"})
    wait_until(lambda: d.webhook("acme-crm")["delivered"] == 2, what="two deliveries")
    path = "/api/v1/webhooks/acme-crm/attempts"
    wait_until(lambda: len(api.get(path)[1]["attempts"]) == 3, what="3 attempts logged")
    status, body = api.get(path + "?failed=true", READ)
    assert status == 200
    (failed,) = body["attempts"]
    assert (failed["status"], failed["response"], failed["error"]) == (500, "try later", "HTTP 500")
    status, body = api.get(f"{path}?event={failed['id']}&limit=1", ACME)
    assert status == 200
    assert [(a["id"], a["attempt"]) for a in body["attempts"]] == [(failed["id"], 2)]
    assert api.get("/api/v1/webhooks/globex/attempts", ACME)[0] == 404  # not this tenant's
    for query, key in (("limit=0", "limit"), ("limit=x", "limit"), ("failed=maybe", "failed")):
        status, body = api.get(f"{path}?{query}")
        assert status == 422 and body["errors"][0]["path"] == key, query


def test_disable_enable_and_replay_as_the_cli_does_them(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    d.send({"type": "B_ONE", "id": "e1"})
    wait_until(lambda: d.webhook("b")["delivered"] == 1, what="the delivery")
    status, _, body = api.call("POST", "/api/v1/webhooks/b/disable", ADMIN)
    assert (status, body["state"]) == (200, "disabled")
    assert d.webhook("b")["state"] == "disabled"
    hooks.script("/b", Reply(500))  # the health check fails: it stays disabled
    status, _, body = api.call("POST", "/api/v1/webhooks/b/enable", ADMIN)
    assert (status, body["ok"], body["state"]) == (502, False, "disabled")
    status, _, body = api.call("POST", "/api/v1/webhooks/b/enable", ADMIN)  # now it answers 2xx
    assert (status, body["ok"], body["state"]) == (200, True, "active")
    status, _, body = api.call("POST", "/api/v1/webhooks/b/replay", ADMIN, b'{"event": "e1"}')
    assert (status, body) == (202, {"webhook": "b", "replayed": 1})
    wait_until(lambda: hooks.ids("/b", "B_ONE") == ["e1", "e1"], what="the replay")
    status, _, body = api.call(
        "POST", "/api/v1/webhooks/b/replay", ADMIN, b'{"until": "2000-01-01T00:00:00Z"}'
    )
    assert (status, body["replayed"]) == (202, 0)  # nothing was received before 2000


def test_replay_bodies_are_checked_and_scopes_and_tenants_hold(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    path = "/api/v1/webhooks/a/replay"
    for body, key in ((b'{"since": "yesterday"}', "since"), (b'{"failed": "yes"}', "failed"),
                      (b'{"event": 7}', "event"), (b'{"everything": true}', "everything"),
                      (b"[1]", "body")):  # fmt: skip
        status, _, answer = api.call("POST", path, ADMIN, body)
        assert status == 422 and answer["errors"][0]["path"] == key, body
    assert api.call("POST", path, ADMIN, b"{nope")[0] == 400
    assert api.call("POST", path, READ, b"{}")[0] == 403
    assert api.call("POST", path, ACME, b"{}")[0] == 404  # webhook a is not acme's
    assert api.call("POST", "/api/v1/webhooks/a/disable", ACME)[0] == 404


def test_a_test_event_goes_to_one_webhook_signed_and_changes_nothing(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    status, _, body = api.call("POST", "/api/v1/webhooks/b/test", ADMIN)
    assert status == 200
    assert (body["webhook"], body["ok"], body["status"], body["error"]) == ("b", True, 200, None)
    (req,) = hooks.at("/b", "WEBHOOK_TEST")
    assert req.headers["webhook-id"] == body["event"]
    Webhook(SECRET).verify(req.body, req.headers)
    assert hooks.at(f"/a/{URL_SECRET}") == []  # this webhook only
    hooks.script("/b", Reply(500, body=b"not today"))
    status, _, body = api.call("POST", "/api/v1/webhooks/b/test", ADMIN)
    assert (status, body["ok"], body["status"], body["response"]) == (200, False, 500, "not today")
    w = d.webhook("b")  # a test is not a delivery: no counts, no health change
    assert (w["state"], w["consecutive_failures"], w["delivered"], w["failed"]) == (
        "active", 0, 0, 0
    )  # fmt: skip
    assert api.call("POST", "/api/v1/webhooks/b/test", READ)[0] == 403
    assert api.call("POST", "/api/v1/webhooks/b/test", ACME)[0] == 404


def test_openapi_json_is_valid_openapi_and_says_what_each_endpoint_does(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    status, doc = api.get("/api/v1/openapi.json", READ)
    assert status == 200
    validate(doc)  # openapi-spec-validator, from PyPI
    assert doc["info"]["version"] == __version__
    # What the document says of each operation is what the daemon answers.
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            url = path.replace("{name}", "b")
            body = b"{}" if method in ("post", "put") else None
            if "explain" in path:
                body = b'{"type": "T"}'
            status, _, _ = api.call(method.upper(), url, ADMIN, body)
            assert str(status) in op["responses"], (method, path, status)
