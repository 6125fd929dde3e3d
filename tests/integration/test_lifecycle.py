"""Reload, kill -9, SIGTERM, and refusing a broken config: nothing accepted is lost."""

from standardwebhooks.webhooks import Webhook

from tests.integration.conftest import Reply, wait_until


def test_acked_events_survive_kill_9_and_go_out_after_restart(hooks, daemon_factory):
    hooks.default("/k", Reply(503))  # nothing gets through before the kill
    d = daemon_factory(
        [{"name": "k", "url": hooks.url("/k"), "retry": {"backoff": ["10s"]}}]
    ).start()
    acked = [d.send({"type": "T", "id": f"k{i}"})["id"] for i in range(50)]
    d.kill9()
    before = len(hooks.at("/k"))  # the 503s: these attempts did not deliver anything
    hooks.default("/k", Reply(200))
    d.start()
    wait_until(
        lambda: set(acked) <= set(hooks.ids("/k")[before:]),
        timeout=30,
        what="every acked event delivered after the restart",
    )


def test_sigterm_exits_zero_and_pending_deliveries_resume(hooks, daemon_factory):
    hooks.default("/t", Reply(500))
    d = daemon_factory(
        [{"name": "t", "url": hooks.url("/t"), "retry": {"attempts": 5, "backoff": ["2s"]}}]
    ).start()
    d.send({"type": "T", "id": "resume-me"})
    wait_until(lambda: hooks.at("/t"), what="a first attempt")
    assert d.stop() == 0  # SIGTERM
    assert d.count_notified("STOPPING=1") == 1
    before = len(hooks.at("/t"))
    hooks.default("/t", Reply(200))
    d.start()
    wait_until(
        lambda: "resume-me" in hooks.ids("/t")[before:],
        what="the pending delivery after restart",
    )


def test_reload_adds_removes_and_changes_webhooks_in_place(hooks, daemon_factory):
    hooks.default("/keep", Reply(500))
    hooks.default("/gone", Reply(500))  # so that its delivery is still pending at the reload
    d = daemon_factory(
        [
            {"name": "keep", "url": hooks.url("/keep"), "retry": {"backoff": ["30s"]}},
            {"name": "gone", "url": hooks.url("/gone"), "retry": {"backoff": ["30s"]}},
        ]
    ).start()
    d.send({"type": "T", "id": "before"})
    wait_until(lambda: hooks.at("/keep") and hooks.at("/gone"), what="first deliveries")
    assert d.webhook("keep")["consecutive_failures"] == 1

    # Change keep (a new header), remove gone, add fresh.
    d.settings["webhooks"] = [
        {
            "name": "keep",
            "url": hooks.url("/keep"),
            "retry": {"backoff": ["30s"]},
            "headers": {"X-Version": "2"},
        },
        {"name": "fresh", "url": hooks.url("/fresh")},
    ]
    d.write()
    d.reload()
    names = {w["name"] for w in d.status()["webhooks"]}
    assert names == {"keep", "fresh"}
    keep = d.webhook("keep")
    assert keep["consecutive_failures"] == 1 and keep["queued"] == 1  # retry state kept

    assert "reloaded: 1 added ['fresh'], 1 removed ['gone'], 1 changed ['keep']" in d.log()
    wait_until(
        lambda: "webhook 'gone' cancelled: 1 unfinished deliveries cancelled" in d.log(),
        what="the removed webhook's pending delivery cancelled",
    )

    d.send({"type": "T", "id": "after"})
    wait_until(lambda: hooks.ids("/fresh") == ["after"], what="the new webhook")
    (changed,) = wait_until(
        lambda: [r for r in hooks.at("/keep") if r.json["id"] == "after"], what="keep's attempt"
    )
    assert changed.headers["x-version"] == "2"  # the change took effect in place
    assert "x-version" not in hooks.at("/keep")[0].headers
    assert hooks.ids("/gone") == ["before"]


def test_invalid_reload_changes_nothing(hooks, daemon_factory):
    d = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    d.write_text("webhooks:\n  - name: a\n    url: [not, a, url]\n    retyr: {}\n")
    d.reload()
    assert "reload refused" in d.log()
    d.send({"type": "T", "id": "still"})
    wait_until(lambda: hooks.ids("/a") == ["still"], what="delivery on the old config")
    proc = d.cli("check")
    assert proc.returncode == 1
    assert "router.yaml:3: webhooks[0].url:" in proc.stderr
    assert "did you mean 'retry'" in proc.stderr


def test_the_daemon_refuses_to_start_on_an_invalid_file(daemon_factory):
    d = daemon_factory([{"name": "Bad Name", "url": "ftp://x"}])
    d.start(wait_ready=False)
    assert d.proc.wait(20) == 1
    assert "webhooks[0].name" in d.log() and "webhooks[0].url" in d.log()


def test_pull_events_are_journaled_and_delivered(hooks, daemon_factory):
    d = daemon_factory([{"name": "p", "url": hooks.url("/p")}]).start()
    for i in range(100):
        d.send({"type": "T", "id": f"p{i}"}, ack=False)
    wait_until(lambda: len(hooks.at("/p")) == 100, what="100 deliveries")
    assert sorted(hooks.ids("/p")) == sorted(f"p{i}" for i in range(100))


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(hooks, daemon_factory):
    first = daemon_factory([{"name": "a", "url": hooks.url("/a")}]).start()
    second = daemon_factory(first.settings["webhooks"], notify_name="notify2.sock")  # same journal
    try:
        second.start(wait_ready=False)
        assert second.proc.wait(20) == 1
        assert "another webhook-router is already running" in second.log()
    finally:
        second.close()
    first.send({"type": "T", "id": "still-served"})
    wait_until(lambda: hooks.ids("/a") == ["still-served"], what="the first daemon")


def test_reload_rereads_secrets_for_rotation(hooks, daemon_factory, tmp_path):
    old, new = (
        "whsec_b2xkLXNlY3JldC1rZXktb2xkLW9sZC1vbGQ=",
        "whsec_bmV3LXNlY3JldC1rZXktbmV3LW5ldy1uZXc=",
    )
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(old)
    d = daemon_factory([{"name": "s", "url": hooks.url("/s"), "secret_file": str(secret_file)}])
    del d.settings["defaults"]["secret"]
    d.write()
    d.start()
    d.send({"type": "T", "id": "signed-old"})
    (first,) = wait_until(lambda: hooks.at("/s"), what="the first delivery")
    Webhook(old).verify(first.body, first.headers)

    secret_file.write_text(f"{new} {old}")  # rotation: new first, old still accepted
    d.reload()
    d.send({"type": "T", "id": "signed-new"})
    second = wait_until(lambda: len(hooks.at("/s")) == 2 and hooks.at("/s")[1], what="the second")
    assert len(second.headers["webhook-signature"].split()) == 2
    Webhook(new).verify(second.body, second.headers)
    Webhook(old).verify(second.body, second.headers)
    assert "whsec_" not in d.log()
