"""The tokens file, matching a presented token, the tenant rule and the ``token`` command."""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import pytest

from router import ConfigError
from router.cli import main
from router.config import load
from router.rules import Rule
from router.tokens import PREFIX, Token, Tokens, entry, new_token

CONFIG = "api: {bind: '127.0.0.1:0', tokens_file: ./tokens.yaml}\n"
ONE = hashlib.sha256(b"wr_one").hexdigest()
TWO = hashlib.sha256(b"wr_two").hexdigest()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("router.yaml").write_text(CONFIG)
    return tmp_path


def tokens_of(text: str) -> Tokens:
    Path("tokens.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return load("router.yaml", env={}).api_tokens


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        tokens_of(text)
    return caught.value.errors


def test_entries_are_read_with_their_scope_companies_and_line():
    tokens = tokens_of(f"""
        - name: ops
          sha256: {ONE}
          scope: admin
        - name: acme-portal
          sha256: {TWO.upper()}
          scope: read
          companies: [acme, initech]
    """)
    assert tokens.entries == (
        Token("ops", bytes.fromhex(ONE), "admin", None, "tokens.yaml:1"),
        Token("acme-portal", bytes.fromhex(TWO), "read", frozenset({"acme", "initech"}),
              "tokens.yaml:4"),
    )  # fmt: skip
    assert tokens.path == "tokens.yaml"
    assert tokens_of("").entries == ()  # an empty file: nobody may call the API


def test_a_presented_token_is_found_by_its_sha256_and_nothing_else_is():
    tokens = tokens_of(f"""
        - {{name: ops, sha256: {ONE}, scope: admin}}
        - {{name: dash, sha256: {TWO}, scope: read}}
    """)
    assert tokens.find("wr_one").name == "ops"
    assert tokens.find("wr_two").name == "dash"
    for wrong in ("", "wr_on", "wr_one ", ONE, "WR_ONE", "wr_\udcff"):
        assert tokens.find(wrong) is None


def test_every_mistake_is_reported_with_file_line_and_key_and_no_token_is_echoed():
    clear = new_token()
    errors = errors_of(f"""
        - name: ops
          sha256: {clear}
          scope: admin
        - name: Bad Name
          sha256: {ONE}
          scope: write
          companies: []
          colour: blue
        - {{name: ops, sha256: {TWO}, scope: read}}
        - {{name: again, sha256: {TWO}, scope: read}}
        - just a string
        - {{name: lonely}}
        - {{{clear}: admin}}
    """)
    assert errors == [
        "tokens.yaml:2: tokens[0].sha256: this is a token in clear, not its SHA-256; "
        "`webhook-router token NAME` prints an entry to copy (and replace this token: "
        "it has been written down)",
        "tokens.yaml:4: tokens[1].name: expected 1-64 characters of a-z, 0-9, '_' and '-'",
        "tokens.yaml:6: tokens[1].scope: expected one of admin, read",
        "tokens.yaml:7: tokens[1].companies: must not be empty",
        "tokens.yaml:8: tokens[1].colour: unknown key",
        "tokens.yaml:10: tokens[3].sha256: the same token as 'ops'; give each client its own",
        "tokens.yaml:11: tokens[4]: expected a mapping, not a single value",
        "tokens.yaml:12: tokens[5].sha256: is required",
        "tokens.yaml:12: tokens[5].scope: is required",
        "tokens.yaml:13: tokens[6]: holds a token in clear; `webhook-router token NAME` prints "
        "an entry to copy (and replace this token: it has been written down)",
    ]
    assert not any(clear in e or ONE in e or TWO in e for e in errors)


def test_a_duplicate_name_points_at_the_first_entry():
    assert errors_of(f"""
        - {{name: ops, sha256: {ONE}, scope: admin}}
        - {{name: ops, sha256: {TWO}, scope: admin}}
    """) == ["tokens.yaml:2: tokens[1].name: duplicate token name 'ops'; first defined at "
             "tokens.yaml:1"]  # fmt: skip


def test_a_file_that_is_not_a_list_or_not_yaml_is_refused():
    assert errors_of("ops: admin\n") == [
        "tokens.yaml:1: tokens: expected a list of tokens, not a mapping"
    ]
    (error,) = errors_of("- {name: ops\n")
    assert error.startswith("tokens.yaml:2: yaml: ")


def test_a_company_scoped_token_sees_only_webhooks_every_rule_of_which_is_within_its_companies():
    acme = Token("acme", b"", "admin", frozenset({"acme", "initech"}))
    everyone = Token("ops", b"", "admin")
    assert acme.sees([Rule(companies=frozenset({"acme"}))])
    assert acme.sees([Rule(companies=frozenset({"acme"})), Rule(companies=frozenset({"initech"}))])
    assert not acme.sees([Rule()])  # any company: could receive others' events
    assert not acme.sees([Rule(companies=frozenset({"acme", "globex"}))])
    assert not acme.sees([Rule(companies=frozenset({"acme"})), Rule(events=("T",))])
    assert everyone.sees([Rule()]) and everyone.sees([Rule(companies=frozenset({"globex"}))])


def test_new_tokens_are_random_prefixed_and_their_entry_loads_back():
    a, b = new_token(), new_token()
    assert a != b and a.startswith(PREFIX) and len(a) >= len(PREFIX) + 43
    Path("tokens.yaml").write_text(entry("acme-portal", a, "admin", ["initech", "acme", "acme"]))
    (token,) = load("router.yaml", env={}).api_tokens.entries
    assert (token.name, token.scope) == ("acme-portal", "admin")
    assert token.companies == frozenset({"acme", "initech"})
    assert load("router.yaml", env={}).api_tokens.find(a) == token


def test_the_token_command_prints_the_token_once_and_an_entry_that_lets_it_in(capsys):
    assert main(["token", "portal", "--scope", "admin", "--company", "acme"]) == 0
    out = capsys.readouterr().out
    token = out.splitlines()[0]
    assert re.fullmatch(r"wr_[A-Za-z0-9_-]{43}", token)
    assert out.count(token) == 1
    pasted = out.split("\n", 1)[1]  # the comments and the entry, as printed
    assert token not in pasted  # the file never holds a token in clear
    Path("tokens.yaml").write_text(pasted)
    found = load("router.yaml", env={}).api_tokens.find(token)
    assert (found.name, found.scope, found.companies) == ("portal", "admin", frozenset({"acme"}))


def test_the_token_command_defaults_to_read_and_refuses_a_name_the_file_would_refuse(capsys):
    assert main(["token", "dash"]) == 0
    Path("tokens.yaml").write_text(capsys.readouterr().out.split("\n", 1)[1])
    (token,) = load("router.yaml", env={}).api_tokens.entries
    assert (token.scope, token.companies) == ("read", None)
    assert main(["token", "Dash Board"]) == 2
    assert "expected 1-64 characters of a-z" in capsys.readouterr().err
    assert main(["token", "dash", "--scope", "write"]) == 2
    assert main(["token", "dash", "--company", ""]) == 2
