"""The config schema: a generic walker over PyYAML nodes, the ``where`` checker and the tables.

The leaf checks on one value live in ``router.validators``; ``_scalar`` turns each into a node
check. Checks return plain values; ``router.config`` freezes them. Every problem is recorded on the
``File`` being checked, as ``FILE:LINE: key: message``, so one bad value hides no other.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import ScalarNode

from router.rules import OPERATORS, AllOf, AnyOf, Cond, Not, Pred, Rule
from router.validators import (
    any_scalar,
    boolean,
    choice,
    credential_name,
    credential_secrets,
    did_you_mean,
    duration_at_least,
    env_secrets,
    field_path,
    file_secrets,
    header_name,
    header_value,
    host_port,
    integer,
    node_name,
    not_a_secret,
    one_secret,
    orderable,
    parse_duration,
    parse_size,
    positive,
    rate,
    regex,
    string,
    text,
    url,
    webhook_name,
    zmq_address,
)

# --------------------------------------------------------------------------- the schema walker

BAD: Any = object()  # a value whose error is already recorded
_NULL = "tag:yaml.org,2002:null"
_AS_TEXT = frozenset(("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"))
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
Check = Callable[[yaml.Node, "File", str], Any]


class _Invalid(Exception):
    """Raised by a check: ``message`` about ``node`` (default: the node being checked)."""

    def __init__(self, message: str, node: yaml.Node | None = None):
        super().__init__(message)
        self.message, self.node = message, node


@dataclass
class File:
    """One YAML file being checked: where messages point and relative paths start."""

    name: str  # as shown in messages
    dir: str  # absolute; relative paths in this file start here
    env: Mapping[str, str]
    errors: list[tuple[int, int, str]]  # (file order, line, message), sorted at the end
    order: int
    problems: list[tuple[str, str]] | None = None  # also (path, message), for the API's answers

    def error(self, at: yaml.Node | int, path: str, message: str) -> None:
        if self.problems is not None:
            self.problems.append((path, message))
        line = _line(at)
        text = f"{self.name}:{line}: {path or 'config'}: {message}"
        if not text.isprintable():  # a key or value holding a newline: keep one line per error
            text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        self.errors.append((self.order, line, text))

    def check(self, check: Check, node: yaml.Node, path: str) -> Any:
        try:
            return check(node, self, path)
        except _Invalid as e:
            self.error(node if e.node is None else e.node, path, e.message)
            return BAD

    def source(self, at: yaml.Node | int) -> str:
        return f"{self.name}:{_line(at)}"

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.dir, os.path.expanduser(path)))


@dataclass(frozen=True)
class Key:
    """One schema entry. Defaults live in the dataclasses, so they are written once."""

    check: Check
    required: bool = False


def _line(at: yaml.Node | int) -> int:
    return at if isinstance(at, int) else at.start_mark.line + 1


class Map(dict):
    """A checked mapping: the keys with good values, plus the line of it and of every key.

    Lines, not nodes: a webhook's ``Map`` outlives the nodes it was read from
    (``router.compose`` drops them once the webhook is checked).
    """

    def __init__(self, node: yaml.Node | None):
        super().__init__()
        self.at = 1 if node is None else node.start_mark.line + 1
        self.keys_at: dict[str, int] = {}  # every known key present, good value or not


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "null" if _is_null(node) else "a single value"


def _value(node: yaml.ScalarNode) -> Any:
    """A scalar's Python value. Timestamps stay text: events carry no dates."""
    if node.tag in _AS_TEXT:  # most values: what SafeConstructor would return, sooner
        return node.value
    construct = _CONSTRUCTOR.yaml_constructors.get(node.tag)
    if construct is None:
        raise ValueError(f"unsupported tag {node.tag}")
    try:
        return construct(_CONSTRUCTOR, node)
    except yaml.YAMLError as e:
        raise ValueError(getattr(e, "problem", None) or "invalid value") from None


def _scalar(parse: Callable[[Any], Any], what: str) -> Check:
    """A node check from a plain ``parse(value)`` that raises ValueError."""

    def check(node: yaml.Node, f: File, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise _Invalid(f"expected {what}, not {_kind(node)}")
        try:
            return parse(_value(node))
        except ValueError as e:
            raise _Invalid(str(e)) from None

    _PARSE[check] = parse
    return check


# The ``parse`` of every ``_scalar`` check. ``section`` and ``_list`` run it themselves on a
# scalar node, with the same outcome and message: a big config has ~50,000 scalars, and
# the calls in between were a third of checking it.
_PARSE: dict[Check, Callable[[Any], Any]] = {}


def _optional(check: Check) -> Check:
    """``null`` means "off" (None); anything else goes to ``check``."""
    return lambda node, f, path: None if _is_null(node) else check(node, f, path)


def _list(item: Check, *, nonempty: bool = False, into: Callable = tuple) -> Check:
    parse = _PARSE.get(item)

    def check(node: yaml.Node, f: File, path: str) -> Any:
        if _is_null(node) and not nonempty:
            return into()
        if not isinstance(node, yaml.SequenceNode):
            raise _Invalid(f"expected a list, not {_kind(node)}")
        if nonempty and not node.value:
            raise _Invalid("must not be empty")
        values = []
        for i, n in enumerate(node.value):
            if parse is None or type(n) is not ScalarNode:
                values.append(f.check(item, n, f"{path}[{i}]"))
                continue
            try:  # what f.check(item, ...) does, inline
                values.append(parse(_value(n)))
            except ValueError as e:
                f.error(n, f"{path}[{i}]", str(e))
                values.append(BAD)
        return BAD if any(v is BAD for v in values) else into(values)

    return check


def _pairs(node: yaml.Node, f: File, path: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (key, key node, value node) of a mapping; bad and duplicate keys are reported."""
    if not isinstance(node, yaml.MappingNode):
        raise _Invalid(f"expected a mapping, not {_kind(node)}")
    pairs, seen = [], set()
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            f.error(knode, path, f"keys must be plain names, not {_kind(knode)}")
        elif knode.value in seen:
            f.error(knode, join(path, knode.value), "duplicate key")
        else:
            seen.add(knode.value)
            pairs.append((knode.value, knode, vnode))
    return pairs


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def section(schema: Mapping[str, Key]) -> Check:
    """Walk a mapping against ``schema``; returns a ``Map`` even when some keys are bad."""

    parsers = {key: _PARSE[spec.check] for key, spec in schema.items() if spec.check in _PARSE}

    def check(node: yaml.Node, f: File, path: str) -> Map:
        out = Map(node)
        for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
            if key not in schema:
                f.error(knode, join(path, key), "unknown key" + did_you_mean(key, schema))
                continue
            out.keys_at[key] = knode.start_mark.line + 1
            if (parse := parsers.get(key)) is not None and type(vnode) is ScalarNode:
                try:  # what f.check(schema[key].check, ...) does, inline
                    out[key] = parse(_value(vnode))
                except ValueError as e:
                    f.error(vnode, join(path, key), str(e))
            elif (value := f.check(schema[key].check, vnode, join(path, key))) is not BAD:
                out[key] = value
        for key, spec in schema.items():
            if spec.required and key not in out.keys_at:
                f.error(node, join(path, key), "is required")
        return out

    return check


# --------------------------------------------------------------------------- checks using the file


def _file_path(node: yaml.Node, f: File, path: str) -> str:
    return f.resolve(_scalar(string, "a path")(node, f, path))


def _existing(test: Callable[[str], bool], what: str) -> Check:
    def check(node: yaml.Node, f: File, path: str) -> str:
        if not test(resolved := _file_path(node, f, path)):
            raise _Invalid(f"no such {what}: {resolved}")
        return resolved

    return check


def _address(node: yaml.Node, f: File, path: str) -> str:
    """A ZeroMQ ``tcp://HOST:PORT`` or ``ipc://PATH``; a relative ipc path becomes absolute."""
    addr = _scalar(zmq_address, "a tcp:// or ipc:// address")(node, f, path)
    if addr.startswith("ipc://") and not addr.startswith("ipc://@"):
        return "ipc://" + f.resolve(addr[6:])
    return addr


def _secret(node: yaml.Node, f: File, path: str) -> tuple[bytes, ...]:
    if isinstance(node, yaml.SequenceNode):
        return _list(_scalar(one_secret, "a secret string"), nonempty=True)(node, f, path)
    return (_scalar(one_secret, "a secret string, or a list of them")(node, f, path),)


def _secrets_from(name: Callable[[Any], str], what: str, read: Callable[[str, File], Any]) -> Check:
    """A secret source the file names (a variable, a path, a credential), read by ``read``."""

    def check(node: yaml.Node, f: File, path: str) -> tuple[bytes, ...]:
        named = _scalar(name, what)(node, f, path)
        try:
            return read(named, f)
        except ValueError as e:
            raise _Invalid(str(e)) from None

    return check


_secret_env = _secrets_from(
    not_a_secret, "an environment variable name", lambda var, f: env_secrets(var, f.env)
)
_secret_file = _secrets_from(not_a_secret, "a path", lambda p, f: file_secrets(f.resolve(p)))
_secret_credential = _secrets_from(
    credential_name, "a credential name", lambda name, f: credential_secrets(name, f.env)
)


def _control_address(node: yaml.Node, f: File, path: str) -> str:
    """The control socket can disable webhooks and replay events: only its owner may reach it."""
    addr = _address(node, f, path)
    if addr.startswith("ipc://@"):
        raise _Invalid(
            "an abstract socket (ipc://@…) has no file permissions, so every local user could "
            "disable webhooks and replay events; use an ipc:// path (made owner-only, mode 0600)"
        )
    return addr


def _headers(node: yaml.Node, f: File, path: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, tuple[str, str]] = {}
    for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
        name = f.check(_scalar(header_name, "a header name"), knode, join(path, key))
        value = f.check(_scalar(header_value, "a string"), vnode, join(path, key))
        if name is not BAD and name.lower() in out:
            f.error(knode, join(path, key), "duplicate header (names ignore case)")
        elif BAD not in (name, value):
            out[name.lower()] = (name, value)
    return tuple(out.values())


_SCALAR = _scalar(any_scalar, "a single value")
_OPERANDS: dict[str, Check] = {
    "eq": _SCALAR,
    "ne": _SCALAR,
    "in": _list(_SCALAR, nonempty=True),
    "nin": _list(_SCALAR, nonempty=True),
    "exists": _scalar(boolean, "true or false"),
    **dict.fromkeys(("gt", "gte", "lt", "lte"), _scalar(orderable, "a number or a string")),
    "prefix": _scalar(text, "a string"),
    "glob": _scalar(text, "a string"),
    "regex": _scalar(regex, "a regular expression"),
}
_COMBINERS = ("all", "any", "not")


def _where(node: yaml.Node, f: File, path: str) -> Pred:
    """A predicate: ``{field: F, OP: V}``, ``{all: [...]}``, ``{any: [...]}`` or ``{not: P}``."""
    if not isinstance(node, yaml.MappingNode):
        raise _Invalid("expected {field: PATH, OPERATOR: VALUE} or one of all, any, not")
    pairs = _pairs(node, f, path)
    keys = {key: vnode for key, _, vnode in pairs}
    known = ("field", *_COMBINERS, *OPERATORS)
    for key, knode, _ in pairs:
        if key not in known:
            word = "operator" if "field" in keys else "key"
            choices = OPERATORS if "field" in keys else known
            f.error(knode, join(path, key), f"unknown {word}" + did_you_mean(key, choices))
    if any(key not in known for key in keys):
        return BAD  # reported above, with a suggestion
    if not keys:
        raise _Invalid("expected {field: PATH, OPERATOR: VALUE} or one of all, any, not")
    source = f.source(node)
    if combiner := next((k for k in keys if k in _COMBINERS), None):
        if len(keys) > 1:
            raise _Invalid(f"'{combiner}' must stand alone; found {', '.join(keys)}")
        check = _where if combiner == "not" else _WHERE_LIST
        if (inner := f.check(check, keys[combiner], join(path, combiner))) is BAD:
            return BAD
        if combiner == "not":
            return Not(inner, source)
        return (AllOf if combiner == "all" else AnyOf)(inner, source)
    ops = [k for k in keys if k in OPERATORS]
    if "field" not in keys:
        raise _Invalid("a condition needs 'field' (a dotted path such as data.priority)")
    if not ops:
        raise _Invalid(f"a condition needs one operator: {', '.join(OPERATORS)}")
    if len(ops) > 1:
        raise _Invalid(f"a condition takes one operator, found {', '.join(ops)}; use all: [...]")
    fld = f.check(_FIELD, keys["field"], join(path, "field"))
    value = f.check(_OPERANDS[ops[0]], keys[ops[0]], join(path, ops[0]))
    if BAD in (fld, value):
        return BAD
    return Cond(field=fld[0], op=ops[0], value=value, path=fld[1], source=source)


_WHERE_LIST = _list(_where, nonempty=True)
_FIELD = _scalar(field_path, "a dotted path")


# --------------------------------------------------------------------------- the schema

RULE = {
    "events": Key(_list(_scalar(string, "a glob pattern such as TODO_*"))),
    "projects": Key(_list(_scalar(string, "a project"), into=frozenset)),
    "companies": Key(_list(_scalar(string, "a company"), into=frozenset)),
    "where": Key(_optional(_where)),
}


def rule_from(m: Map, source: str) -> Rule:
    return Rule(
        events=m.get("events", ()),
        projects=m.get("projects", frozenset()),
        companies=m.get("companies", frozenset()),
        where=m.get("where"),
        source=source,
    )


_RULE = section(RULE)


def _rule(node: yaml.Node, f: File, path: str) -> Rule:
    return rule_from(_RULE(node, f, path), f.source(node))


RETRY = {
    "attempts": Key(_scalar(integer(1, 100), "an integer")),
    "backoff": Key(_list(_scalar(parse_duration, "a duration"), nonempty=True)),
}
HEALTH = {"probe_interval": Key(_optional(_scalar(positive(parse_duration), "a duration")))}
_BOOL = _scalar(boolean, "true or false")
SIGNATURES = ("standard", "hmac-sha256-hex", "none")
JOURNAL_SYNC = ("full", "normal")  # SQLite's synchronous setting for the journal's commits
JOURNAL_BACKENDS = ("sqlite", "postgresql")
MIN_LEASE = 1.0  # seconds; a lease is renewed every third of it
TUNABLES = {  # the per-webhook keys `defaults:` may set
    "enabled": Key(_BOOL),
    "timeout": Key(_scalar(positive(parse_duration), "a duration")),
    "retry": Key(section(RETRY)),
    "max_in_flight": Key(_scalar(integer(1, 1000), "an integer")),
    "ordered": Key(_BOOL),
    "rate_limit": Key(_optional(_scalar(rate, "a rate such as 50/s"))),
    "headers": Key(_headers),
    "signature": Key(_scalar(choice(*SIGNATURES), "a signature scheme")),
    "signature_header": Key(_scalar(header_name, "a header name")),
    "allow_private_networks": Key(_BOOL),
    "health": Key(section(HEALTH)),
}
SECRET_KEYS = ("secret", "secret_env", "secret_file", "secret_credential")


_NOT_IN_ADDRESS = frozenset(' \t<>,;"\\')


def _email_address(v: Any) -> str:
    """``name@domain``, one address: it goes in an SMTP envelope and a header as it is."""
    plain = isinstance(v, str) and v.isprintable() and not any(c in _NOT_IN_ADDRESS for c in v)
    if plain and "@" in v.strip("@"):
        return v
    raise ValueError("expected one email address such as ops@example.com")


_EMAIL = _scalar(_email_address, "an email address")
WEBHOOK = {
    "name": Key(_scalar(webhook_name, "a name"), required=True),
    "url": Key(_scalar(url, "a URL"), required=True),
    "secret": Key(_secret),
    "secret_env": Key(_secret_env),
    "secret_file": Key(_secret_file),
    "secret_credential": Key(_secret_credential),
    **RULE,
    "match": Key(_list(_rule, nonempty=True)),
    **TUNABLES,
    "alert_email": Key(_list(_EMAIL)),  # also told about this webhook's alerts (SPEC §7)
}


def _per_webhook(node: yaml.Node, f: File, path: str) -> None:
    raise _Invalid("cannot be set in defaults; set it on each webhook")


_SECRETS = {k: WEBHOOK[k] for k in SECRET_KEYS}  # a shared secret may come from defaults
DEFAULTS = {**{k: Key(_per_webhook) for k in WEBHOOK}, **TUNABLES, **_SECRETS}
CURVE = {
    "secret_key_file": Key(_existing(os.path.isfile, "file"), required=True),
    "authorized_keys_dir": Key(_existing(os.path.isdir, "directory"), required=True),
}
INGEST = {
    "bind": Key(_optional(_address)),
    "ack_bind": Key(_optional(_address)),
    "max_event_bytes": Key(_scalar(positive(parse_size), "a size")),
    "curve": Key(_optional(section(CURVE))),
}

API = {
    "bind": Key(_optional(_scalar(host_port, "HOST:PORT"))),
    "tokens_file": Key(_file_path),  # read by router.tokens, only when the API is on
}


def _line_file(what: str) -> Check:
    """A file holding one secret line, read when the config is; the newline is not part of it.

    Never echoed: messages name the file, not what it holds.
    """

    def check(node: yaml.Node, f: File, path: str) -> str:
        name = _file_path(node, f, path)
        try:
            with open(name, encoding="utf-8") as fh:
                line = fh.read().rstrip("\r\n")
        except OSError as e:
            raise _Invalid(f"cannot read the {what} {name}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise _Invalid(f"the {what} {name} is not UTF-8 text") from None
        if not line:
            raise _Invalid(f"the {what} {name} is empty")
        return line

    return check


_password_file = _line_file("password file")  # the SMTP password (SPEC §7)
_dsn_file = _line_file("connection string file")  # libpq's, for the PostgreSQL journal (§8)


ALERT_WEBHOOK = {  # where alerts go as signed events: a webhook's connection keys
    "url": WEBHOOK["url"],
    **_SECRETS,
    **{k: TUNABLES[k] for k in ("timeout", "headers", "allow_private_networks")},
}
ALERT_EMAIL = {
    "smtp": Key(_scalar(host_port, "HOST:PORT"), required=True),
    "starttls": Key(_BOOL),
    "username": Key(_scalar(text, "a user name")),
    "password_file": Key(_password_file),
    "from": Key(_EMAIL, required=True),
    "to": Key(_list(_EMAIL)),
    "timeout": Key(_scalar(positive(parse_duration), "a duration")),
}
ALERTS = {
    "failing_after": Key(_optional(_scalar(positive(parse_duration), "a duration"))),
    "webhook": Key(_optional(section(ALERT_WEBHOOK))),
    "email": Key(_optional(section(ALERT_EMAIL))),
}


JOURNAL = {
    "sync": Key(_scalar(choice(*JOURNAL_SYNC), "a sync mode")),  # SQLite's
    "backend": Key(_scalar(choice(*JOURNAL_BACKENDS), "a journal backend")),
    "dsn_file": Key(_dsn_file),  # PostgreSQL's connection string, kept out of the config
    "lease": Key(_scalar(duration_at_least(MIN_LEASE), "a duration")),
}


ONE_WEBHOOK = section(WEBHOOK)  # one webhook: a file's, or the API's
WEBHOOKS = "webhooks"  # the key of the list, and how its items' messages start


class Read:
    """A webhook checked as soon as it was read (``reader``): its ``Map``, and its errors.

    The errors wait here, not in the file's list, so that they come in the order the
    schema walk would have recorded them, and vanish if the file turns out not to parse.
    """

    __slots__ = ("errors", "result")

    def __init__(self, result: Any, errors: tuple):
        self.result, self.errors = result, errors


def reader(f: File) -> Callable[[yaml.Node], Read]:
    """What ``router.compose`` hands each webhook's node to: checked at once, so its nodes
    can go before the next webhook is read."""
    side = File(f.name, f.dir, f.env, [], f.order)
    count = itertools.count()

    def read(node: yaml.Node) -> Read:
        result = side.check(ONE_WEBHOOK, node, f"{WEBHOOKS}[{next(count)}]")
        errors = ()
        if side.errors:
            errors = tuple(side.errors)
            side.errors.clear()
        return Read(result, errors)

    return read


def webhook_list(node: yaml.Node, f: File, path: str) -> list[tuple[File, str, Map]]:
    """Each webhook checked on its own, so one bad webhook hides nothing about the others."""
    if _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise _Invalid(f"expected a list of webhooks, not {_kind(node)}")
    out = []
    for i, n in enumerate(node.value):
        p = f"{path}[{i}]"
        if type(n) is Read:  # checked while the file was read
            f.errors.extend(n.errors)
            m = n.result
        else:
            m = f.check(ONE_WEBHOOK, n, p)
        if m is not BAD:
            out.append((f, p, m))
    return out


TOP = {
    "state_dir": Key(_file_path),
    "retention": Key(_scalar(positive(parse_duration), "a duration")),
    "shutdown_timeout": Key(_scalar(parse_duration, "a duration")),
    "ingest": Key(section(INGEST)),
    "control": Key(section({"bind": Key(_control_address)})),
    # `metrics: null` turns the server off, as `metrics: {bind: null}` does
    "metrics": Key(_optional(section({"bind": Key(_optional(_scalar(host_port, "HOST:PORT")))}))),
    # `api: null` and `api: {bind: null}` (the default) serve no API
    "api": Key(_optional(section(API))),
    "defaults": Key(section(DEFAULTS)),
    "include": Key(_existing(os.path.isdir, "directory")),
    WEBHOOKS: Key(webhook_list),
    "delivery_workers": Key(_scalar(integer(1, 4096), "an integer")),  # a thread each
    "delivery_processes": Key(_scalar(integer(0, 64), "an integer")),  # 0: in the daemon
    "attempt_log_max": Key(_scalar(positive(parse_size), "a size")),
    "node": Key(_scalar(node_name, "a node name")),  # SPEC §8; default: the host name
    "journal": Key(section(JOURNAL)),
    "alerts": Key(_optional(section(ALERTS))),  # `alerts: null`, or none: no alerts
}
