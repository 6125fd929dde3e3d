"""Who may call the HTTP API: the tokens file, matching a presented token, the tenant rule.

The file (``api.tokens_file``, SPEC §6) lists tokens by the SHA-256 of their text, so the
router never holds one in clear. A presented bearer token is hashed and compared with every
entry in constant time. Neither a token nor its hash is ever written to a log or an error:
entries are named by ``name`` and ``FILE:LINE``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from router.rules import Rule
from router.schema import BAD, File, Key, _is_null, _kind, _list, _scalar, join, section
from router.validators import choice, string, webhook_name

ADMIN, READ = "admin", "read"
SCOPES = (ADMIN, READ)  # admin: read and write; read: GET only
PREFIX = "wr_"  # makes a leaked token easy to recognise (secret scanners, logs)
_HEX = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Token:
    """One entry of the tokens file."""

    name: str  # shown in logs; the token never is
    digest: bytes = field(repr=False)  # SHA-256 of the token's text
    scope: str = READ
    companies: frozenset[str] | None = None  # None: every company
    source: str = ""  # "FILE:LINE" of the entry

    @property
    def writes(self) -> bool:
        return self.scope == ADMIN

    def sees(self, rules: Iterable[Rule]) -> bool:
        """The tenant rule: a company-scoped token sees a webhook only when every rule of it
        names a non-empty ``companies`` list within the token's own, so that the webhook can
        receive no other company's events."""
        if self.companies is None:
            return True
        return all(r.companies and r.companies <= self.companies for r in rules)


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens of one reading of the file; a reload replaces the whole value."""

    entries: tuple[Token, ...] = ()
    path: str = ""  # the file they came from ("" when the API is off)

    def find(self, presented: str) -> Token | None:
        """The entry whose digest is SHA-256 of ``presented``, compared in constant time.

        Every entry is compared, so the time taken says nothing about which one matched.
        """
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for token in self.entries:
            if hmac.compare_digest(token.digest, digest):
                found = token
        return found


# --------------------------------------------------------------------------- the file


_CLEAR = (
    "`webhook-router token NAME` prints an entry to copy "
    "(and replace this token: it has been written down)"
)


def _holds_clear_token(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and any(
        isinstance(k, yaml.ScalarNode) and str(k.value).startswith(PREFIX) for k, _ in node.value
    )


def _sha256(v: Any) -> bytes:
    """64 hex digits. Never echoes the value: a mistaken entry may be a token in clear."""
    if isinstance(v, str) and _HEX.fullmatch(v):
        return bytes.fromhex(v)
    if isinstance(v, str) and v.startswith(PREFIX):
        raise ValueError("this is a token in clear, not its SHA-256; " + _CLEAR)
    raise ValueError("expected the SHA-256 of the token: 64 hexadecimal digits")


TOKEN = {
    "name": Key(_scalar(webhook_name, "a name"), required=True),
    "sha256": Key(_scalar(_sha256, "64 hexadecimal digits"), required=True),
    "scope": Key(_scalar(choice(*SCOPES), "a scope"), required=True),
    "companies": Key(_list(_scalar(string, "a company"), nonempty=True, into=frozenset)),
}


def check(node: yaml.Node | None, f: File) -> Tokens:
    """The entries of a tokens file composed into ``node``; every error is recorded on ``f``."""
    if node is None or _is_null(node):
        return Tokens((), f.name)
    if not isinstance(node, yaml.SequenceNode):
        f.error(node, "tokens", f"expected a list of tokens, not {_kind(node)}")
        return Tokens((), f.name)
    entries: list[Token] = []
    names: dict[str, str] = {}
    digests: dict[bytes, str] = {}
    for i, item in enumerate(node.value):
        path = f"tokens[{i}]"
        if _holds_clear_token(item):  # as a key, "unknown key" would echo it
            f.error(item, path, "holds a token in clear; " + _CLEAR)
            continue
        m = f.check(section(TOKEN), item, path)
        if m is BAD or any(k in m.keys_at and k not in m for k in TOKEN) or len(m) < 3:
            continue  # a key missing or bad: reported
        name, digest, source = m["name"], m["sha256"], f.source(item)
        if name in names:
            where = names[name]
            f.error(m.keys_at["name"], join(path, "name"),
                    f"duplicate token name {name!r}; first defined at {where}")  # fmt: skip
        elif digest in digests:
            f.error(m.keys_at["sha256"], join(path, "sha256"),
                    f"the same token as {digests[digest]!r}; give each client its own")  # fmt: skip
        else:
            names[name], digests[digest] = source, name
            entries.append(Token(name, digest, m["scope"], m.get("companies"), source))
    return Tokens(tuple(entries), f.name)


# --------------------------------------------------------------------------- new tokens


def new_token() -> str:
    """A random token: 256 bits, URL-safe, recognisable by its prefix."""
    return PREFIX + secrets.token_urlsafe(32)


def entry(name: str, token: str, scope: str, companies: Iterable[str] = ()) -> str:
    """The YAML entry that lets ``token`` in, as ``check`` reads it."""
    item: dict[str, Any] = {
        "name": name,
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scope": scope,
    }
    if companies := sorted(set(companies)):
        item["companies"] = companies
    return yaml.safe_dump([item], sort_keys=False, default_flow_style=None)


def valid_name(name: str) -> str:
    """``name`` as the file takes it; ``ValueError`` with the file's message otherwise."""
    return webhook_name(name)
