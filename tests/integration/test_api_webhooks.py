"""Webhooks made through the API, over real HTTP against the running daemon (SPEC §6).

Create, replace and delete; their secrets; the tenant rule for company tokens; the
store across restarts, ``kill -9`` and reloads; ``webhook-router export``.
"""

from __future__ import annotations

import json

import yaml
from standardwebhooks.webhooks import Webhook

from tests.integration.conftest import SECRET, wait_until
from tests.integration.test_api import ACME, ADMIN, READ, Client, start

HOOK = "/made"


def _create(api: Client, doc: dict, token: str = ADMIN) -> tuple[int, dict]:
    status, _, body = api.call("POST", "/api/v1/webhooks", token, json.dumps(doc).encode())
    return status, body


def _put(api: Client, name: str, doc: dict, token: str = ADMIN) -> tuple[int, dict]:
    status, _, body = api.call("PUT", f"/api/v1/webhooks/{name}", token, json.dumps(doc).encode())
    return status, body


def _made(hooks, path: str = HOOK, **settings) -> dict:
    return {"name": "made", "url": hooks.url(path), "events": ["MADE_*"], **settings}


def test_a_created_webhook_gets_a_secret_once_and_events_reach_it_signed_with_it(
    hooks, daemon_factory
):
    d, api = start(daemon_factory, hooks)
    status, made = _create(api, _made(hooks))
    assert status == 201, made
    secret = made["secret"]
    assert secret.startswith("whsec_") and secret != SECRET  # its own, not the defaults' one
    assert (made["name"], made["source"], made["state"], made["events"]) == (
        "made", "api", "active", ["MADE_*"]
    )  # fmt: skip
    d.send({"type": "MADE_ONE", "id": "m1"})
    d.send({"type": "OTHER", "id": "m2"})  # not subscribed
    wait_until(lambda: hooks.ids(HOOK) == ["m1"], what="m1 delivered to the new webhook")
    (req,) = hooks.at(HOOK)
    Webhook(secret).verify(req.body, req.headers)  # raises if not signed with that secret
    for answer in (
        api.get("/api/v1/webhooks/made")[1],
        *api.get("/api/v1/webhooks")[1]["webhooks"],
    ):
        assert "secret" not in answer
    status, listed = api.get("/api/v1/webhooks")
    assert [(w["name"], w["source"]) for w in listed["webhooks"]][-1] == ("made", "api")
    assert d.webhook("made")["delivered"] == 1
    assert secret not in d.log() and secret not in d.cli("status").stdout
    assert all(secret not in seen for seen in api.seen[1:])  # only the 201 showed it
    assert "webhook made created through the API (token ops)" in d.log()


def test_a_given_secret_is_used_and_never_shown_and_signature_none_needs_none(
    hooks, daemon_factory
):
    d, api = start(daemon_factory, hooks)
    own = "whsec_" + "c2VjcmV0LW9mLXRoZS1jYWxsZXItMDEyMzQ1Njc4OQ=="
    status, made = _create(api, _made(hooks, secret=own))
    assert status == 201 and "secret" not in made
    status, plain = _create(api, _made(hooks, "/plain", name="plain", signature="none"))
    assert status == 201 and "secret" not in plain
    d.send({"type": "MADE_X", "id": "s1"})
    wait_until(lambda: hooks.ids(HOOK) == ["s1"] and hooks.ids("/plain") == ["s1"], what="both")
    Webhook(own).verify(hooks.at(HOOK)[0].body, hooks.at(HOOK)[0].headers)
    assert "webhook-signature" not in hooks.at("/plain")[0].headers
    assert own not in d.log() and all(own not in seen for seen in api.seen)


def test_a_replaced_webhook_keeps_its_queue_and_its_secret(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    status, made = _create(api, _made(hooks, "/old", enabled=False))
    assert status == 201
    for i in range(3):
        d.send({"type": "MADE_HELD", "id": f"q{i}"})
    wait_until(lambda: d.webhook("made")["queued"] == 3, what="three deliveries held")
    status, now = _put(api, "made", _made(hooks, "/new", enabled=True, max_in_flight=1))
    assert status == 200, now
    assert "secret" not in now  # kept, not made again
    assert (now["url"], now["enabled"], now["max_in_flight"]) == (hooks.url("/new"), True, 1)
    wait_until(lambda: sorted(hooks.ids("/new")) == ["q0", "q1", "q2"], what="the queue")
    assert hooks.ids("/old") == []
    for req in hooks.at("/new"):
        Webhook(made["secret"]).verify(req.body, req.headers)
    assert "webhook made replaced through the API (token ops)" in d.log()


def test_a_deleted_webhook_is_gone_and_its_pending_deliveries_are_cancelled(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    assert _create(api, _made(hooks, enabled=False))[0] == 201
    d.send({"type": "MADE_HELD", "id": "gone1"})

    def held() -> bool:  # on PostgreSQL, once owned: its holder is who cancels (see below)
        w = d.webhook("made")
        return w["queued"] == 1 and w.get("owner", "-") is not None

    # A webhook deleted before any daemon took its lease keeps its deliveries pending in
    # the database (a reported defect), so the delete waits for the lease here.
    wait_until(held, what="one delivery held")
    status, _, body = api.call("DELETE", "/api/v1/webhooks/made", ADMIN)
    assert (status, body) == (204, {})
    assert api.get("/api/v1/webhooks/made")[0] == 404
    assert "made" not in [w["name"] for w in d.status()["webhooks"]]
    cancelled = "webhook 'made' cancelled: 1 unfinished deliveries cancelled"
    wait_until(lambda: cancelled in d.log(), what="the cancel logged")
    assert _create(api, _made(hooks))[0] == 201  # the name is free again, the old queue is not
    d.send({"type": "MADE_NEW", "id": "new1"})
    wait_until(lambda: hooks.ids(HOOK) == ["new1"], what="only the new event")
    assert api.call("DELETE", "/api/v1/webhooks/nope", ADMIN)[0] == 404


def test_api_made_webhooks_survive_a_restart_a_kill_9_and_a_reload(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    status, made = _create(api, _made(hooks))
    assert status == 201
    d.kill9()  # the 201 came after the commit: nothing to lose
    d.start()
    got = api.get("/api/v1/webhooks/made")[1]
    assert (got["source"], got["url"], "secret" in got) == ("api", hooks.url(HOOK), False)
    d.send({"type": "MADE_AFTER", "id": "k1"})
    wait_until(lambda: hooks.ids(HOOK) == ["k1"], what="delivered after kill -9")
    Webhook(made["secret"]).verify(hooks.at(HOOK)[0].body, hooks.at(HOOK)[0].headers)
    d.reload()
    assert api.get("/api/v1/webhooks/made")[0] == 200
    assert d.stop() == 0
    d.start()
    assert api.get("/api/v1/webhooks/made")[1]["source"] == "api"


def test_names_are_unique_across_files_and_the_api_and_files_are_read_only(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    line = next(i for i, t in enumerate(d.config_path.read_text().splitlines(), 1)
                if t.strip() == "- name: a")  # fmt: skip
    where = f"{d.config_path}:{line}"
    status, body = _create(api, _made(hooks, name="a"))
    assert status == 409
    assert body["errors"] == [{"path": "name", "message": f"a webhook named 'a' exists already "
                               f"(defined in {where})"}]  # fmt: skip
    for method, payload in (("PUT", json.dumps(_made(hooks, name="a")).encode()), ("DELETE", None)):
        status, _, body = api.call(method, "/api/v1/webhooks/a", ADMIN, payload)
        assert status == 409, method
        assert body["errors"][0]["message"] == (
            f"webhook 'a' is defined in {where} and is read-only through the API; "
            "change it there and reload"
        )
    assert _create(api, _made(hooks))[0] == 201
    status, body = _create(api, _made(hooks))
    assert (status, body["errors"][0]["message"]) == (
        409, "a webhook named 'made' exists already (made through the API)"
    )  # fmt: skip
    assert _put(api, "made", _made(hooks, name="renamed"))[0] == 422  # the path names it
    assert _put(api, "nope", _made(hooks, name="nope"))[0] == 404
    # A file that now names a webhook like an API-made one: the reload is refused.
    d.settings["webhooks"].append({"name": "made", "url": hooks.url("/file")})
    d.write()
    d.reload()
    assert (
        "reload refused" in d.log()
        and "'made' is taken by a webhook made through the API" in d.log()
    )
    assert api.get("/api/v1/webhooks/made")[1]["source"] == "api"


def test_an_invalid_webhook_gets_every_error_with_its_path_as_yaml_would(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    status, body = _create(api, {"name": "Bad Name", "url": "ftp://x", "retry": {"attempts": 0},
                                 "evnts": ["A"], "secret_file": "/etc/passwd"})  # fmt: skip
    assert status == 422
    assert body["errors"] == [
        {"path": "secret_file", "message": "a webhook made through the API takes its signing "
         "key as `secret` (or none, to get one generated)"},
        {"path": "name", "message": "expected 1-64 characters of a-z, 0-9, '_' and '-'"},
        {"path": "url", "message": "expected an http:// or https:// URL with a host"},
        {"path": "retry.attempts", "message": "expected an integer from 1 to 100"},
        {"path": "evnts", "message": "unknown key; did you mean 'events'?"},
    ]  # fmt: skip
    # The same document in a file gets the same messages from `check`.
    d.settings["webhooks"] = [{"name": "Bad Name", "url": "ftp://x", "retry": {"attempts": 0}}]
    d.write()
    out = d.cli("check").stdout + d.cli("check").stderr
    url = "expected an http:// or https:// URL with a host"
    for message in ("expected 1-64 characters", url, "from 1 to 100"):
        assert message in out
    for raw, why in ((b"{nope", "the body is not JSON"), (b"[1]", "must be a JSON object")):
        status, _, body = api.call("POST", "/api/v1/webhooks", ADMIN, raw)
        assert status in (400, 422) and why in body["errors"][0]["message"]
    assert _create(api, {"url": hooks.url("/x")})[1]["errors"] == [
        {"path": "name", "message": "is required"}
    ]
    assert [w["name"] for w in api.get("/api/v1/webhooks")[1]["webhooks"]] == ["a", "b"]


def test_a_company_token_makes_and_changes_only_its_companies_webhooks(hooks, daemon_factory):
    d, api = start(daemon_factory, hooks)
    assert _create(api, _made(hooks, name="ops-made"))[0] == 201  # by the admin: all companies
    status, mine = _create(api, _made(hooks, name="acme-made", companies=["acme"]), ACME)
    assert status == 201, mine
    for doc in (_made(hooks, name="x1"), _made(hooks, name="x2", companies=["acme", "other"]),
                {"name": "x3", "url": hooks.url("/x"),
                 "match": [{"companies": ["acme"]}, {"events": ["A"]}]}):  # fmt: skip
        status, body = _create(api, doc, ACME)
        assert status == 422, doc
        assert body["errors"][0]["path"] == "companies"
        assert "could receive another company's events" in body["errors"][0]["message"]
    status, body = _create(api, _made(hooks, name="x4", companies=["acme"],
                                      allow_private_networks=True), ACME)  # fmt: skip
    assert (status, body["errors"][0]["path"]) == (422, "allow_private_networks")
    assert [w["name"] for w in api.get("/api/v1/webhooks", ACME)[1]["webhooks"]] == ["acme-made"]
    for method in ("GET", "PUT", "DELETE"):  # another's webhook does not exist for this token
        status, _, _ = api.call(method, "/api/v1/webhooks/ops-made", ACME,
                                json.dumps(_made(hooks, name="ops-made")).encode())  # fmt: skip
        assert status == 404, method
    status, body = _put(api, "acme-made", _made(hooks, name="acme-made", companies=["other"]), ACME)
    assert status == 422
    d.send({"type": "MADE_A", "id": "c1", "company": "acme"})
    d.send({"type": "MADE_B", "id": "c2", "company": "other"})
    wait_until(lambda: sorted(hooks.ids(HOOK)) == ["c1", "c1", "c2"], what="both webhooks' share")
    assert api.call("DELETE", "/api/v1/webhooks/acme-made", ACME)[0] == 204
    assert api.call("POST", "/api/v1/webhooks", READ, b"{}")[0] == 403


def test_export_prints_the_api_made_webhooks_as_yaml_without_their_secrets(
    hooks, daemon_factory, tmp_path
):
    d, api = start(daemon_factory, hooks)
    status, made = _create(api, _made(hooks, retry={"attempts": 2}, headers={"X-Team": "crm"}))
    assert status == 201
    out = d.cli("export")
    assert out.returncode == 0, out.stderr
    assert made["secret"] not in out.stdout
    (exported,) = yaml.safe_load(out.stdout)
    assert exported["name"] == "made" and exported["url"] == hooks.url(HOOK)
    assert exported["retry"] == {"attempts": 2} and exported["headers"] == {"X-Team": "crm"}
    assert exported["secret_env"] == "WEBHOOK_ROUTER_SECRET_MADE"
    assert "secret" in out.stdout.split("- name")[0]  # the comment says what to do about it
    # It loads as an include file, once the secret is given.
    conf = tmp_path / "elsewhere"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "conf.d" / "made.yaml").write_text(out.stdout)
    (conf / "router.yaml").write_text(yaml.safe_dump({"include": "./conf.d", "defaults": {
        "allow_private_networks": True}}))  # fmt: skip
    from router import config

    loaded = config.load(str(conf / "router.yaml"), {"WEBHOOK_ROUTER_SECRET_MADE": SECRET})
    assert [w.name for w in loaded.webhooks] == ["made"]


def test_the_health_setting_shows_as_health_check_beside_the_health_status(hooks, daemon_factory):
    _, api = start(daemon_factory, hooks)
    status, made = _create(api, _made(hooks, health={"probe_interval": "5m"}))
    assert status == 201
    assert (made["health"], made["health_check"]) == ("HEALTHY", {"probe_interval": 300.0})
    got = api.get("/api/v1/webhooks/made")[1]
    doc = {k: got[k] for k in ("name", "url", "events")} | {"health": got["health_check"]}
    assert _put(api, "made", doc | {"timeout": 3})[0] == 200  # written back as `health:`
    assert api.get("/api/v1/webhooks/made")[1]["health_check"] == {"probe_interval": 300.0}
