"""The webhooks made through the API (SPEC §6): kept in the journal's file, one row each.

A row holds the webhook's document: the JSON the API accepted, its generated secret
included, exactly what ``config.api_webhook`` builds a ``WebhookConfig`` from. Built
again on every start and reload, with that moment's ``defaults:``, so an API-made
webhook follows the operator's defaults as a file's webhook does.

Each change is one committed transaction with ``synchronous=FULL`` before the API
answers: a 201 survives ``kill -9`` and power loss. The table is this module's own,
created when missing; the journal's tables and their schema versions are
``router.store``'s. What the rest of the router uses, ``documents``, ``put`` and
``delete``, is all a shared database has to offer when several daemons serve one set
of webhooks (SPEC §8).

Bounded: at most ``MAX_WEBHOOKS`` API-made webhooks, each document at most
``MAX_DOCUMENT`` bytes of JSON; all of them are held in memory (a few MiB at most).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import yaml

from router import RouterError, config
from router.config import API_SOURCE, Config, WebhookConfig

log = logging.getLogger(__name__)

MAX_WEBHOOKS = 10_000
MAX_DOCUMENT = 64 * 1024  # bytes of JSON; a webhook with many rules is a few KiB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_webhooks (
    name TEXT PRIMARY KEY, document TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL)
"""


class Conflict(RouterError):
    """A change the API answers with 409: the name is taken, or the webhook is a file's."""


class Full(RouterError):
    """No room for another API-made webhook (``MAX_WEBHOOKS``) or the store cannot write."""


def writable(webhook: WebhookConfig | None, name: str) -> None:
    """Only API-made webhooks change through the API; a file's names its file and line."""
    if webhook is None:
        raise RouterError(f"no webhook named '{name}'")
    if webhook.source != API_SOURCE:
        raise Conflict(
            f"webhook '{name}' is defined in {webhook.source} and is read-only through the API; "
            "change it there and reload"
        )


class _Documents:
    """The documents by name, held in memory: what both stores give the daemon."""

    def __init__(self) -> None:
        self._docs: dict[str, dict] = {}
        self._lock = threading.Lock()

    def documents(self) -> dict[str, dict]:
        """Every document by name (copies: the caller may change them)."""
        with self._lock:
            return {name: dict(doc) for name, doc in self._docs.items()}

    def _room_for(self, name: str) -> None:
        if name not in self._docs and len(self._docs) >= MAX_WEBHOOKS:
            raise Full(f"there are {MAX_WEBHOOKS} webhooks made through the API already")


class Registry(_Documents):
    """The API-made webhooks' documents in the SQLite journal: read at open, written through."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open the journal's file (``router.store`` created it) and read every document."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")  # the journal's writer may hold the lock
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(_SCHEMA)
            rows = conn.execute("SELECT name, document FROM api_webhooks ORDER BY name").fetchall()
        except sqlite3.Error as e:
            raise RouterError(f"cannot read the API-made webhooks in {self.path}: {e}") from e
        self._conn = conn
        self._docs = {name: json.loads(doc) for name, doc in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def put(self, name: str, doc: Mapping[str, Any], now: float) -> None:
        """Create or replace webhook ``name``; committed when this returns."""
        text = _document(name, doc)
        with self._lock:
            self._room_for(name)
            self._write(
                "INSERT INTO api_webhooks VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET document = excluded.document, updated_at = excluded.updated_at",
                (name, text, now, now),
            )
            self._docs[name] = json.loads(text)

    def delete(self, name: str) -> None:
        with self._lock:
            self._write("DELETE FROM api_webhooks WHERE name = ?", (name,))
            self._docs.pop(name, None)

    def _write(self, sql: str, args: tuple) -> None:
        if self._conn is None:
            raise RouterError("the store of API-made webhooks is not open")
        try:
            self._conn.execute(sql, args)
        except sqlite3.Error as e:  # a full disk, an I/O error: nothing changed
            raise Full(f"cannot write the webhook to {self.path}: {e}") from e


class SharedRegistry(_Documents):
    """The API-made webhooks in the PostgreSQL journal several daemons share (SPEC §8).

    Each change commits and announces itself in one transaction; every daemon's
    ``router.cluster`` hears it and calls ``refresh`` (then applies the new set), so a
    webhook made through one daemon's API runs on whichever holds its lease.
    """

    def __init__(self, dsn: str):
        super().__init__()
        self._dsn = dsn
        self._conn: Any = None
        self._db: Any = None  # router.pgstore, imported by open()
        self._errors: Any = ()

    def open(self) -> None:
        import psycopg  # only where PostgreSQL is used

        from router import pgstore

        self._db, self._errors = pgstore, psycopg.Error
        self._conn = pgstore.connect(self._dsn)
        self.refresh()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def refresh(self) -> None:
        """Read every document again (another daemon changed them)."""
        with self._lock:
            try:
                rows = self._db.api_webhooks(self._conn)
            except self._errors as e:
                raise RouterError(f"cannot read the API-made webhooks: {e}") from e
            self._docs = {name: json.loads(doc) for name, doc in rows}

    def put(self, name: str, doc: Mapping[str, Any], now: float) -> None:
        """Create or replace webhook ``name``; committed and announced when this returns."""
        text = _document(name, doc)
        with self._lock:
            self._room_for(name)
            self._change(self._db.put_api_webhook, name, text, now)
            self._docs[name] = json.loads(text)

    def delete(self, name: str) -> None:
        with self._lock:
            self._change(self._db.delete_api_webhook, name)
            self._docs.pop(name, None)

    def _change(self, write: Any, *args: Any) -> None:
        try:
            with self._conn.transaction():
                write(self._conn, *args)
                self._db.webhooks_changed(self._conn)
        except self._errors as e:
            raise Full(f"cannot write the webhook to the PostgreSQL journal: {e}") from e


def _document(name: str, doc: Mapping[str, Any]) -> str:
    """``doc`` as stored: JSON, within ``MAX_DOCUMENT`` bytes."""
    text = json.dumps(doc, sort_keys=True)
    if len(text.encode()) > MAX_DOCUMENT:
        raise Full(f"webhook '{name}' is over {MAX_DOCUMENT} bytes as JSON")
    return text


def read_documents(path: str) -> dict[str, dict]:
    """The documents in the journal file at ``path``, read-only (``webhook-router export``)."""
    from router.store import open_reader  # the journal's read-only connection

    try:
        conn = open_reader(path)
    except sqlite3.Error as e:
        raise RouterError(f"cannot open {path}: {e}") from e
    try:
        rows = conn.execute("SELECT name, document FROM api_webhooks ORDER BY name").fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}  # a journal from before the API, or one that never had a webhook made
        raise RouterError(f"cannot read {path}: {e}") from e
    finally:
        conn.close()
    return {name: json.loads(doc) for name, doc in rows}


def read_shared_documents(dsn: str) -> dict[str, dict]:
    """The documents in the PostgreSQL journal at ``dsn`` (``webhook-router export``, SPEC §8)."""
    import psycopg  # only where PostgreSQL is used

    from router import pgstore

    try:
        with pgstore.open_reader(dsn) as conn:
            rows = pgstore.api_webhooks(conn)
    except psycopg.errors.UndefinedTable:
        return {}  # a database no daemon has started on yet
    except psycopg.Error as e:
        reason = f"cannot read the API-made webhooks in the PostgreSQL journal: {e}"
        raise RouterError(reason) from e
    return {name: json.loads(doc) for name, doc in rows}


def exported(documents: Mapping[str, dict]) -> str:
    """``documents`` as a YAML list of webhooks, an ``include:`` file; their secrets left out."""
    webhooks = []
    for name, doc in documents.items():
        doc = dict(doc)
        if doc.pop("secret", None) is not None:
            doc["secret_env"] = secret_variable(name)
        webhooks.append(doc)
    head = (
        "# Webhooks made through webhook-router's API, as a file's webhooks (an include: file).\n"
        "# Their secrets are not exported: set each secret_env variable below to the secret the\n"
        "# receiver has (or use secret_file / secret_credential), then delete the webhook through\n"
        "# the API before the reload that reads this file (names are unique across both).\n"
    )
    return head + (yaml.safe_dump(webhooks, sort_keys=False) if webhooks else "[]\n")


def secret_variable(name: str) -> str:
    """The environment variable an exported webhook's secret is to come from."""
    return "WEBHOOK_ROUTER_SECRET_" + name.upper().replace("-", "_")


def merged(
    cfg: Config, documents: Mapping[str, dict], running: Iterable[WebhookConfig] = ()
) -> tuple[Config, list[str]]:
    """``cfg``'s files' webhooks with the API-made ones from ``documents`` after them, by name.

    Returns the new config and the errors that forbid it: a file's webhook named like
    an API-made one. An API-made webhook that the new ``defaults:`` make invalid keeps
    its ``running`` version (none at start: it does not run, and the log says why).
    """
    files = {w.name: w for w in cfg.webhooks if w.source != API_SOURCE}
    before = {w.name: w for w in running if w.source == API_SOURCE}
    errors, made = [], []
    for name, doc in sorted(documents.items()):
        if name in files:
            errors.append(
                f"{files[name].source}: name: {name!r} is taken by a webhook made through the "
                "API; rename one of them (`webhook-router export` prints the API's)"
            )
            continue
        try:
            made.append(config.api_webhook(doc, cfg))
        except config.Invalid as e:
            keeps = "keeps running as it was" if name in before else "does not run"
            log.error("webhook %s (made through the API) is invalid now: %s; it %s", name, e, keeps)
            if name in before:
                made.append(before[name])
    return replace(cfg, webhooks=(*files.values(), *made)), errors
