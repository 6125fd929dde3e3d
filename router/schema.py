"""The config schema: a generic walker over PyYAML nodes, its checks and the tables.

Checks return plain values; ``router.config`` freezes them. Every problem is recorded on the
``File`` being checked, as ``FILE:LINE: key: message``, so one bad value hides no other.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from router.rules import OPERATORS, AllOf, AnyOf, Cond, Not, Pred, Rule

# --------------------------------------------------------------------------- plain values

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|m|h)")
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):(\*|\d{1,5})")
_SPACE = re.compile(r"\s")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
SIGNATURES = ("standard", "hmac-sha256-hex", "none")
_SET_BY_ROUTER = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")
RESERVED_HEADERS = frozenset((*_SET_BY_ROUTER, "webhook-signature", "webhook-attempt"))
FIELD_ROOTS = ("type", "id", "company", "project", "timestamp", "data")


def parse_duration(v: object) -> float:
    """Seconds from ``500ms``, ``10s``, ``5m``, ``2h``, ``7d`` or a plain number of seconds."""
    m = _DURATION.fullmatch(v.strip()) if isinstance(v, str) else None
    if isinstance(v, int | float) and not isinstance(v, bool):
        seconds = float(v)
    elif m:
        seconds = float(m[1]) * _SECONDS[m[2]]
    else:
        raise ValueError(
            f"invalid duration {v!r}: write seconds or a number with ms, s, m, h or d "
            "(500ms, 10s, 5m, 2h, 7d)"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {v!r}: must be a finite number of seconds, 0 or more")
    return seconds


def parse_size(v: object) -> int:
    """Bytes from ``512KiB``, ``1MiB``, ``1GiB`` (or decimal ``KB``/``MB``/``GB``) or a number."""
    m = _SIZE.fullmatch(v.strip()) if isinstance(v, str) else None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if m:
        unit = _BYTES[(m[2] or "b").lower()]
        return int(m[1]) * unit if m[1].isdigit() else int(float(m[1]) * unit)
    raise ValueError(f"invalid size {v!r}: write bytes or a number with KiB, MiB or GiB (512KiB)")


def _positive(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def positive(v: Any) -> Any:
        if (parsed := parse(v)) <= 0:
            raise ValueError("must be more than 0")
        return parsed

    return positive


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string (quote numbers and true/false)")
    return v


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a string (quote numbers and true/false)")
    return v


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _integer(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def integer(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bounds = f"from {lo} to {hi}" if hi else f"{lo} or more"
            raise ValueError(f"expected an integer {bounds}")
        return v

    return integer


def _choice(*choices: str) -> Callable[[Any], str]:
    def choice(v: Any) -> str:
        if isinstance(v, str) and v in choices:
            return v
        raise ValueError(f"expected one of {', '.join(choices)}" + _did_you_mean(str(v), choices))

    return choice


def _name(v: Any) -> str:
    if isinstance(v, str) and _NAME.fullmatch(v):
        return v
    raise ValueError("expected 1-64 characters of a-z, 0-9, '_' and '-'")


def _url(v: Any) -> str:
    """An http(s) URL with a host. Never echoed: a URL may carry credentials."""
    if isinstance(v, str) and not _SPACE.search(v):
        try:
            parts = urlsplit(v)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad port
            ok = False
        if ok:
            return v
    raise ValueError("expected an http:// or https:// URL with a host")


def _host_port(v: Any) -> tuple[str, int]:
    host, sep, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if sep and host and port.isdigit() and int(port) <= 65535:
        return host, int(port)
    raise ValueError(f"invalid address {v!r}: write HOST:PORT (127.0.0.1:9464), or null for off")


def _rate(v: Any) -> tuple[float, float]:
    """(count, per seconds): ``50/s`` is (50.0, 1.0); ``router.config`` makes it a RateLimit."""
    m = _RATE.fullmatch(v.strip()) if isinstance(v, str) else None
    if m and float(m[1]) > 0:
        return float(m[1]), {"s": 1.0, "m": 60.0, "h": 3600.0}[m[2]]
    raise ValueError(f"invalid rate {v!r}: write COUNT/s, COUNT/m or COUNT/h (50/s), or null")


def _header_name(v: Any) -> str:
    if not isinstance(v, str) or not _TOKEN.fullmatch(v):
        raise ValueError("expected an HTTP header name (letters, digits and '-')")
    if v.lower() in RESERVED_HEADERS:
        raise ValueError(f"{v} is set by the router and cannot be configured")
    return v


def _header_value(v: Any) -> str:
    if not isinstance(v, str) or any(c in v for c in "\r\n\0"):
        raise ValueError("expected a string without line breaks (quote numbers)")
    return v


def _decode_secret(s: str, what: str) -> bytes:
    """``whsec_<base64>`` is the key's bytes; anything else is used as UTF-8. Never echoed."""
    if s.startswith("whsec_"):
        try:
            key = base64.b64decode(s[6:], validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ValueError(f"{what} is not valid base64 after 'whsec_' (the secret is not shown)")
        return key
    if not s:
        raise ValueError(f"{what} is empty")
    return s.encode()


def _one_secret(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ValueError("expected a secret string (whsec_<base64> or plain text)")
    return _decode_secret(v, "the secret")


def _split_secrets(text: str, where: str) -> tuple[bytes, ...]:
    """Several space-separated secrets: rotation, newest first."""
    if not text.split():
        raise ValueError(f"{where} holds no secret")
    return tuple(_decode_secret(s, f"secret {i} in {where}") for i, s in enumerate(text.split(), 1))


def _any_scalar(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise ValueError("expected a string, number, true/false or null")


def _orderable(v: Any) -> Any:
    if isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool)):
        return v
    raise ValueError("expected a number or a string")


def _regex(v: Any) -> re.Pattern[str]:
    try:
        return re.compile(_text(v))
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None


def _field(v: Any) -> tuple[str, tuple[str, ...]]:
    parts = tuple(_string(v).split("."))
    if "" in parts:
        raise ValueError(f"invalid field {v!r}: empty segment in the dotted path")
    if parts[0] not in FIELD_ROOTS:
        raise ValueError(
            f"unknown field {parts[0]!r}: use type, id, company, project, timestamp or data.…"
            + _did_you_mean(parts[0], FIELD_ROOTS)
        )
    if parts[0] != "data" and len(parts) > 1:
        raise ValueError(f"{parts[0]} has no sub-fields; only data.… paths go deeper")
    return v, parts


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- the schema walker

BAD: Any = object()  # a value whose error is already recorded
_NULL = "tag:yaml.org,2002:null"
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

    def error(self, at: yaml.Node | int, path: str, message: str) -> None:
        line = at if isinstance(at, int) else at.start_mark.line + 1
        self.errors.append((self.order, line, f"{self.name}:{line}: {path or 'config'}: {message}"))

    def check(self, check: Check, node: yaml.Node, path: str) -> Any:
        try:
            return check(node, self, path)
        except _Invalid as e:
            self.error(node if e.node is None else e.node, path, e.message)
            return BAD

    def source(self, node: yaml.Node) -> str:
        return f"{self.name}:{node.start_mark.line + 1}"

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.dir, os.path.expanduser(path)))


@dataclass(frozen=True)
class Key:
    """One schema entry. Defaults live in the dataclasses, so they are written once."""

    check: Check
    required: bool = False


class Map(dict):
    """A checked mapping: the keys with good values, plus where every key was written."""

    def __init__(self, node: yaml.Node | None):
        super().__init__()
        self.node = node
        self.keys_at: dict[str, yaml.Node] = {}  # every known key present, good value or not


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
    if node.tag == "tag:yaml.org,2002:timestamp":
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

    return check


def _optional(check: Check) -> Check:
    """``null`` means "off" (None); anything else goes to ``check``."""
    return lambda node, f, path: None if _is_null(node) else check(node, f, path)


def _list(item: Check, *, nonempty: bool = False, into: Callable = tuple) -> Check:
    def check(node: yaml.Node, f: File, path: str) -> Any:
        if _is_null(node) and not nonempty:
            return into()
        if not isinstance(node, yaml.SequenceNode):
            raise _Invalid(f"expected a list, not {_kind(node)}")
        if nonempty and not node.value:
            raise _Invalid("must not be empty")
        values = [f.check(item, n, f"{path}[{i}]") for i, n in enumerate(node.value)]
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

    def check(node: yaml.Node, f: File, path: str) -> Map:
        out = Map(node)
        for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
            if key not in schema:
                f.error(knode, join(path, key), "unknown key" + _did_you_mean(key, schema))
                continue
            out.keys_at[key] = knode
            if (value := f.check(schema[key].check, vnode, join(path, key))) is not BAD:
                out[key] = value
        for key, spec in schema.items():
            if spec.required and key not in out.keys_at:
                f.error(node, join(path, key), "is required")
        return out

    return check


# --------------------------------------------------------------------------- checks using the file


def _file_path(node: yaml.Node, f: File, path: str) -> str:
    return f.resolve(_scalar(_string, "a path")(node, f, path))


def _existing(test: Callable[[str], bool], what: str) -> Check:
    def check(node: yaml.Node, f: File, path: str) -> str:
        if not test(resolved := _file_path(node, f, path)):
            raise _Invalid(f"no such {what}: {resolved}")
        return resolved

    return check


def _address(node: yaml.Node, f: File, path: str) -> str:
    """A ZeroMQ ``tcp://HOST:PORT`` or ``ipc://PATH``; a relative ipc path becomes absolute."""
    addr = _scalar(_string, "a tcp:// or ipc:// address")(node, f, path)
    if addr.startswith("ipc://") and len(addr) > 6:
        rest = addr[6:]
        return addr if rest.startswith("@") else "ipc://" + f.resolve(rest)
    m = _TCP.fullmatch(addr)
    if m and (m[2] == "*" or int(m[2]) <= 65535):
        return addr
    raise _Invalid(f"invalid address {addr!r}: write tcp://HOST:PORT or ipc://PATH")


def _secret(node: yaml.Node, f: File, path: str) -> tuple[bytes, ...]:
    if isinstance(node, yaml.SequenceNode):
        return _list(_scalar(_one_secret, "a secret string"), nonempty=True)(node, f, path)
    return (_scalar(_one_secret, "a secret string, or a list of them")(node, f, path),)


def _not_a_secret(v: Any) -> str:
    """A name or path that is echoed in messages, so it must not be a misplaced secret."""
    if _string(v).startswith("whsec_"):
        raise ValueError("this looks like a secret, not a name (it is not shown); use secret:")
    return v


def _secret_env(node: yaml.Node, f: File, path: str) -> tuple[bytes, ...]:
    var = _scalar(_not_a_secret, "an environment variable name")(node, f, path)
    if var not in f.env:
        raise _Invalid(f"environment variable {var} is not set")
    try:
        return _split_secrets(f.env[var], f"environment variable {var}")
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _secret_file(node: yaml.Node, f: File, path: str) -> tuple[bytes, ...]:
    name = f.resolve(_scalar(_not_a_secret, "a path")(node, f, path))
    try:
        with open(name, encoding="utf-8") as fh:
            return _split_secrets(fh.read(), name)
    except OSError as e:
        raise _Invalid(f"cannot read {name}: {e.strerror}") from None
    except UnicodeDecodeError:  # before ValueError, its base: its text quotes secret bytes
        raise _Invalid(f"{name} is not UTF-8 text") from None
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _headers(node: yaml.Node, f: File, path: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, tuple[str, str]] = {}
    for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
        name = f.check(_scalar(_header_name, "a header name"), knode, join(path, key))
        value = f.check(_scalar(_header_value, "a string"), vnode, join(path, key))
        if name is not BAD and name.lower() in out:
            f.error(knode, join(path, key), "duplicate header (names ignore case)")
        elif BAD not in (name, value):
            out[name.lower()] = (name, value)
    return tuple(out.values())


_SCALAR = _scalar(_any_scalar, "a single value")
_OPERANDS: dict[str, Check] = {
    "eq": _SCALAR,
    "ne": _SCALAR,
    "in": _list(_SCALAR, nonempty=True),
    "nin": _list(_SCALAR, nonempty=True),
    "exists": _scalar(_boolean, "true or false"),
    **dict.fromkeys(("gt", "gte", "lt", "lte"), _scalar(_orderable, "a number or a string")),
    "prefix": _scalar(_text, "a string"),
    "glob": _scalar(_text, "a string"),
    "regex": _scalar(_regex, "a regular expression"),
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
            f.error(knode, join(path, key), f"unknown {word}" + _did_you_mean(key, choices))
    if any(key not in known for key in keys):
        return BAD  # reported above, with a suggestion
    if not keys:
        raise _Invalid("expected {field: PATH, OPERATOR: VALUE} or one of all, any, not")
    source = f.source(node)
    if combiner := next((k for k in keys if k in _COMBINERS), None):
        if len(keys) > 1:
            raise _Invalid(f"'{combiner}' must stand alone; found {', '.join(keys)}")
        check = _where if combiner == "not" else _list(_where, nonempty=True)
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
    fld = f.check(_scalar(_field, "a dotted path"), keys["field"], join(path, "field"))
    value = f.check(_OPERANDS[ops[0]], keys[ops[0]], join(path, ops[0]))
    if BAD in (fld, value):
        return BAD
    return Cond(field=fld[0], op=ops[0], value=value, path=fld[1], source=source)


# --------------------------------------------------------------------------- the schema

RULE = {
    "events": Key(_list(_scalar(_string, "a glob pattern such as TODO_*"))),
    "projects": Key(_list(_scalar(_string, "a project"), into=frozenset)),
    "companies": Key(_list(_scalar(_string, "a company"), into=frozenset)),
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


def _rule(node: yaml.Node, f: File, path: str) -> Rule:
    return rule_from(section(RULE)(node, f, path), f.source(node))


RETRY = {
    "attempts": Key(_scalar(_integer(1, 100), "an integer")),
    "backoff": Key(_list(_scalar(parse_duration, "a duration"), nonempty=True)),
}
HEALTH = {"probe_interval": Key(_optional(_scalar(_positive(parse_duration), "a duration")))}
_BOOL = _scalar(_boolean, "true or false")
TUNABLES = {  # the per-webhook keys `defaults:` may set
    "enabled": Key(_BOOL),
    "timeout": Key(_scalar(_positive(parse_duration), "a duration")),
    "retry": Key(section(RETRY)),
    "max_in_flight": Key(_scalar(_integer(1, 1000), "an integer")),
    "ordered": Key(_BOOL),
    "rate_limit": Key(_optional(_scalar(_rate, "a rate such as 50/s"))),
    "headers": Key(_headers),
    "signature": Key(_scalar(_choice(*SIGNATURES), "a signature scheme")),
    "signature_header": Key(_scalar(_header_name, "a header name")),
    "allow_private_networks": Key(_BOOL),
    "health": Key(section(HEALTH)),
}
SECRET_KEYS = ("secret", "secret_env", "secret_file")
WEBHOOK = {
    "name": Key(_scalar(_name, "a name"), required=True),
    "url": Key(_scalar(_url, "a URL"), required=True),
    "secret": Key(_secret),
    "secret_env": Key(_secret_env),
    "secret_file": Key(_secret_file),
    **RULE,
    "match": Key(_list(_rule, nonempty=True)),
    **TUNABLES,
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
    "max_event_bytes": Key(_scalar(_positive(parse_size), "a size")),
    "curve": Key(_optional(section(CURVE))),
}


def webhook_list(node: yaml.Node, f: File, path: str) -> list[tuple[File, str, Map]]:
    """Each webhook checked on its own, so one bad webhook hides nothing about the others."""
    if _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise _Invalid(f"expected a list of webhooks, not {_kind(node)}")
    webhook = section(WEBHOOK)
    items = [(f, f"{path}[{i}]", n) for i, n in enumerate(node.value)]
    return [(f, p, m) for f, p, n in items if (m := f.check(webhook, n, p)) is not BAD]


TOP = {
    "state_dir": Key(_file_path),
    "retention": Key(_scalar(_positive(parse_duration), "a duration")),
    "shutdown_timeout": Key(_scalar(parse_duration, "a duration")),
    "ingest": Key(section(INGEST)),
    "control": Key(section({"bind": Key(_address)})),
    "metrics": Key(section({"bind": Key(_optional(_scalar(_host_port, "HOST:PORT")))})),
    "defaults": Key(section(DEFAULTS)),
    "include": Key(_existing(os.path.isdir, "directory")),
    "webhooks": Key(webhook_list),
    "delivery_workers": Key(_scalar(_integer(1), "an integer")),
}
