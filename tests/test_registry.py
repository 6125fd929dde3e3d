"""The store of API-made webhooks: written through, read back, bounded; merged with the files'."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import yaml

from router import config, registry, store
from router.config import API_SOURCE, Config, WebhookConfig
from router.registry import Conflict, Full, Registry

DOC = {"name": "made", "url": "https://hooks.example.com/in", "secret": "s3cret", "events": ["A"]}


@pytest.fixture
def path(tmp_path):
    path = str(tmp_path / "journal.db")
    store.open_writer(path).close()  # the journal made the file
    return path


def test_documents_are_committed_and_read_back_by_a_new_registry(path):
    reg = Registry(path)
    reg.open()
    reg.put("made", DOC, 100.0)
    reg.put("other", {**DOC, "name": "other"}, 101.0)
    reg.put("made", {**DOC, "events": ["B"]}, 102.0)
    reg.delete("other")
    reg.close()
    again = Registry(path)
    again.open()
    assert again.documents() == {"made": {**DOC, "events": ["B"]}}
    assert registry.read_documents(path) == again.documents()
    again.documents()["made"]["url"] = "changed"  # a copy
    assert again.documents()["made"]["url"] == DOC["url"]


def test_a_journal_without_the_table_has_no_documents(path):
    assert registry.read_documents(path) == {}


def test_a_document_too_big_or_a_full_disk_changes_nothing(path):
    reg = Registry(path)
    reg.open()
    reg.put("made", DOC, 1.0)
    with pytest.raises(Full, match="over 65536 bytes"):
        reg.put("made", {**DOC, "events": ["E" * registry.MAX_DOCUMENT]}, 2.0)
    pages = reg._conn.execute("PRAGMA page_count").fetchone()[0]
    reg._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    with pytest.raises(Full, match="cannot write the webhook"):
        reg.put("big", {**DOC, "name": "big", "events": ["E" * 30_000]}, 3.0)
    assert reg.documents() == {"made": DOC}
    assert registry.read_documents(path) == {"made": DOC}


def test_at_most_max_webhooks_are_kept(path, monkeypatch):
    monkeypatch.setattr(registry, "MAX_WEBHOOKS", 2)
    reg = Registry(path)
    reg.open()
    reg.put("a", DOC, 1.0)
    reg.put("b", DOC, 1.0)
    with pytest.raises(Full, match="2 webhooks"):
        reg.put("c", DOC, 1.0)
    reg.put("a", {**DOC, "events": ["B"]}, 2.0)  # replacing one is no new one


def _cfg(*webhooks: WebhookConfig, **defaults) -> Config:
    return Config(path="/etc/r.yaml", state_dir="/tmp", webhooks=webhooks, defaults=defaults)


def test_merged_puts_api_webhooks_after_the_files_and_refuses_a_name_in_both():
    files = WebhookConfig("filed", "https://a.example.com/", source="r.yaml:7")
    cfg, errors = registry.merged(
        _cfg(files, timeout=3.0), {"made": DOC, "b": {**DOC, "name": "b"}}
    )
    assert errors == []
    assert [(w.name, w.source) for w in cfg.webhooks] == [
        ("filed", "r.yaml:7"), ("b", API_SOURCE), ("made", API_SOURCE)
    ]  # fmt: skip
    assert cfg.webhooks[2].timeout == 3.0  # the defaults apply to them too
    _, errors = registry.merged(_cfg(replace(files, name="made")), {"made": DOC})
    assert errors == ["r.yaml:7: name: 'made' is taken by a webhook made through the API; "
                      "rename one of them (`webhook-router export` prints the API's)"]  # fmt: skip


def test_an_api_webhook_the_new_defaults_make_invalid_keeps_running_as_it_was(caplog):
    doc = {**DOC, "url": "http://127.0.0.1:9/in"}
    before, _ = registry.merged(_cfg(allow_private_networks=True), {"made": doc})
    caplog.set_level(logging.ERROR)
    after, errors = registry.merged(_cfg(), {"made": doc}, before.webhooks)
    assert errors == [] and after.webhooks == before.webhooks
    assert "webhook made (made through the API) is invalid now" in caplog.text
    assert "keeps running as it was" in caplog.text
    at_start, _ = registry.merged(_cfg(), {"made": doc})
    assert at_start.webhooks == ()
    assert "s3cret" not in caplog.text


def test_a_shared_secret_in_the_defaults_is_not_given_to_api_webhooks():
    with pytest.raises(config.Invalid) as e:
        config.api_webhook({k: v for k, v in DOC.items() if k != "secret"}, _cfg(secret=(b"x",)))
    assert e.value.problems[0][0] == "secret"


def test_writable_names_the_file_and_line_of_a_files_webhook():
    with pytest.raises(Conflict, match=r"defined in r.yaml:7 and is read-only through the API"):
        registry.writable(WebhookConfig("filed", "https://a.example.com/", source="r.yaml:7"), "f")
    registry.writable(replace(config.api_webhook(DOC, _cfg()), source=API_SOURCE), "made")


def test_export_leaves_the_secret_out_and_names_a_variable_for_it():
    text = registry.exported({"made": DOC, "open": {**DOC, "name": "open", "signature": "none"}})
    assert "s3cret" not in text
    made, opened = yaml.safe_load(text)
    assert made == {**{k: v for k, v in DOC.items() if k != "secret"},
                    "secret_env": "WEBHOOK_ROUTER_SECRET_MADE"}  # fmt: skip
    assert opened["signature"] == "none" and "secret_env" in opened  # DOC has a secret
    assert yaml.safe_load(registry.exported({})) == []


def test_alert_email_on_an_api_webhook_needs_the_smtp_server_as_in_a_file():
    with pytest.raises(config.Invalid) as e:
        config.api_webhook({**DOC, "alert_email": ["owner@example.com"]}, _cfg())
    assert e.value.problems == [("alert_email", config.ALERT_EMAIL_NEEDS)]
