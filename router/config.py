"""The configuration: a declarative schema over PyYAML nodes, frozen values out.

Every error is collected before any is reported, each as ``FILE:LINE: key: message``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import glob
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from router import ConfigError
from router.rules import OPERATORS, AllOf, AnyOf, Cond, Not, Pred, Rule

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 5
    backoff: tuple[float, ...] = (10.0, 60.0, 300.0, 1800.0)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    probe_interval: float | None = None  # seconds; None: no automatic probes


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: float  # "50/s" -> count=50, per=1.0
    per: float


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    name: str
    url: str = field(repr=False)  # a URL may carry a token
    rules: tuple[Rule, ...] = (Rule(),)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)  # signing keys, newest first
    enabled: bool = True
    timeout: float = 7.0
    retry: RetryConfig = RetryConfig()
    max_in_flight: int = 4
    ordered: bool = False
    rate_limit: RateLimit | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold tokens
    signature: str = "standard"  # standard | hmac-sha256-hex | none
    signature_header: str = "X-Signature"
    allow_private_networks: bool = False
    health: HealthConfig = HealthConfig()
    source: str = ""  # "FILE:LINE" where the webhook is defined


@dataclass(frozen=True, slots=True)
class CurveConfig:
    secret_key_file: str  # absolute path
    authorized_keys_dir: str  # absolute path


@dataclass(frozen=True, slots=True)
class IngestConfig:
    bind: str | None = "tcp://127.0.0.1:5555"
    ack_bind: str | None = "tcp://127.0.0.1:5556"
    max_event_bytes: int = MiB
    curve: CurveConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    path: str  # absolute path of the main file
    state_dir: str  # absolute
    retention: float = 7 * 86400.0
    shutdown_timeout: float = 10.0
    ingest: IngestConfig = IngestConfig()
    control_bind: str = ""  # zmq address; default ipc://<state_dir>/control.sock
    metrics_bind: tuple[str, int] | None = ("127.0.0.1", 9464)
    delivery_workers: int = 64
    webhooks: tuple[WebhookConfig, ...] = ()


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


def _rate(v: Any) -> RateLimit:
    m = _RATE.fullmatch(v.strip()) if isinstance(v, str) else None
    if m and float(m[1]) > 0:
        return RateLimit(float(m[1]), {"s": 1.0, "m": 60.0, "h": 3600.0}[m[2]])
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


def _blocked(url: str) -> str | None:
    """Why a literal host is off limits without ``allow_private_networks``; names wait."""
    host = urlsplit(url).hostname or ""
    if host in ("localhost", "localhost."):
        return f"{host} is a loopback address"
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None  # a name: the delivery pool checks what it resolves to
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    kinds = [
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a reserved", ip.is_reserved),
        ("a private", ip.is_private),
        ("a non-public", not ip.is_global),
    ]
    return next((f"{host} is {kind} address" for kind, hit in kinds if hit), None)


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- the schema walker

_BAD: Any = object()  # a value whose error is already recorded
_NULL = "tag:yaml.org,2002:null"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 5x faster on big files
Check = Callable[[yaml.Node, "_File", str], Any]


class _Invalid(Exception):
    """Raised by a check: ``message`` about ``node`` (default: the node being checked)."""

    def __init__(self, message: str, node: yaml.Node | None = None):
        super().__init__(message)
        self.message, self.node = message, node


@dataclass
class _File:
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
            return _BAD

    def source(self, node: yaml.Node) -> str:
        return f"{self.name}:{node.start_mark.line + 1}"

    def resolve(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.dir, os.path.expanduser(path)))


@dataclass(frozen=True)
class Key:
    """One schema entry. Defaults live in the dataclasses, so they are written once."""

    check: Check
    required: bool = False


class _Map(dict):
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

    def check(node: yaml.Node, f: _File, path: str) -> Any:
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
    def check(node: yaml.Node, f: _File, path: str) -> Any:
        if _is_null(node) and not nonempty:
            return into()
        if not isinstance(node, yaml.SequenceNode):
            raise _Invalid(f"expected a list, not {_kind(node)}")
        if nonempty and not node.value:
            raise _Invalid("must not be empty")
        values = [f.check(item, n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        return _BAD if any(v is _BAD for v in values) else into(values)

    return check


def _pairs(node: yaml.Node, f: _File, path: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (key, key node, value node) of a mapping; bad and duplicate keys are reported."""
    if not isinstance(node, yaml.MappingNode):
        raise _Invalid(f"expected a mapping, not {_kind(node)}")
    pairs, seen = [], set()
    for knode, vnode in node.value:
        if not isinstance(knode, yaml.ScalarNode):
            f.error(knode, path, f"keys must be plain names, not {_kind(knode)}")
        elif knode.value in seen:
            f.error(knode, _join(path, knode.value), "duplicate key")
        else:
            seen.add(knode.value)
            pairs.append((knode.value, knode, vnode))
    return pairs


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _section(schema: Mapping[str, Key]) -> Check:
    """Walk a mapping against ``schema``; returns a ``_Map`` even when some keys are bad."""

    def check(node: yaml.Node, f: _File, path: str) -> _Map:
        out = _Map(node)
        for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
            if key not in schema:
                f.error(knode, _join(path, key), "unknown key" + _did_you_mean(key, schema))
                continue
            out.keys_at[key] = knode
            if (value := f.check(schema[key].check, vnode, _join(path, key))) is not _BAD:
                out[key] = value
        for key, spec in schema.items():
            if spec.required and key not in out.keys_at:
                f.error(node, _join(path, key), "is required")
        return out

    return check


# --------------------------------------------------------------------------- checks using the file


def _file_path(node: yaml.Node, f: _File, path: str) -> str:
    return f.resolve(_scalar(_string, "a path")(node, f, path))


def _existing(test: Callable[[str], bool], what: str) -> Check:
    def check(node: yaml.Node, f: _File, path: str) -> str:
        if not test(resolved := _file_path(node, f, path)):
            raise _Invalid(f"no such {what}: {resolved}")
        return resolved

    return check


def _address(node: yaml.Node, f: _File, path: str) -> str:
    """A ZeroMQ ``tcp://HOST:PORT`` or ``ipc://PATH``; a relative ipc path becomes absolute."""
    addr = _scalar(_string, "a tcp:// or ipc:// address")(node, f, path)
    if addr.startswith("ipc://") and len(addr) > 6:
        rest = addr[6:]
        return addr if rest.startswith("@") else "ipc://" + f.resolve(rest)
    m = _TCP.fullmatch(addr)
    if m and (m[2] == "*" or int(m[2]) <= 65535):
        return addr
    raise _Invalid(f"invalid address {addr!r}: write tcp://HOST:PORT or ipc://PATH")


def _secret(node: yaml.Node, f: _File, path: str) -> tuple[bytes, ...]:
    if isinstance(node, yaml.SequenceNode):
        return _list(_scalar(_one_secret, "a secret string"), nonempty=True)(node, f, path)
    return (_scalar(_one_secret, "a secret string, or a list of them")(node, f, path),)


def _not_a_secret(v: Any) -> str:
    """A name or path that is echoed in messages, so it must not be a misplaced secret."""
    if _string(v).startswith("whsec_"):
        raise ValueError("this looks like a secret, not a name (it is not shown); use secret:")
    return v


def _secret_env(node: yaml.Node, f: _File, path: str) -> tuple[bytes, ...]:
    var = _scalar(_not_a_secret, "an environment variable name")(node, f, path)
    if var not in f.env:
        raise _Invalid(f"environment variable {var} is not set")
    try:
        return _split_secrets(f.env[var], f"environment variable {var}")
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _secret_file(node: yaml.Node, f: _File, path: str) -> tuple[bytes, ...]:
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


def _headers(node: yaml.Node, f: _File, path: str) -> tuple[tuple[str, str], ...]:
    out: dict[str, tuple[str, str]] = {}
    for key, knode, vnode in [] if _is_null(node) else _pairs(node, f, path):
        name = f.check(_scalar(_header_name, "a header name"), knode, _join(path, key))
        value = f.check(_scalar(_header_value, "a string"), vnode, _join(path, key))
        if name is not _BAD and name.lower() in out:
            f.error(knode, _join(path, key), "duplicate header (names ignore case)")
        elif _BAD not in (name, value):
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


def _where(node: yaml.Node, f: _File, path: str) -> Pred:
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
            f.error(knode, _join(path, key), f"unknown {word}" + _did_you_mean(key, choices))
    if any(key not in known for key in keys):
        return _BAD  # reported above, with a suggestion
    if not keys:
        raise _Invalid("expected {field: PATH, OPERATOR: VALUE} or one of all, any, not")
    source = f.source(node)
    if combiner := next((k for k in keys if k in _COMBINERS), None):
        if len(keys) > 1:
            raise _Invalid(f"'{combiner}' must stand alone; found {', '.join(keys)}")
        check = _where if combiner == "not" else _list(_where, nonempty=True)
        if (inner := f.check(check, keys[combiner], _join(path, combiner))) is _BAD:
            return _BAD
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
    fld = f.check(_scalar(_field, "a dotted path"), keys["field"], _join(path, "field"))
    value = f.check(_OPERANDS[ops[0]], keys[ops[0]], _join(path, ops[0]))
    if _BAD in (fld, value):
        return _BAD
    return Cond(field=fld[0], op=ops[0], value=value, path=fld[1], source=source)


# --------------------------------------------------------------------------- the schema

RULE = {
    "events": Key(_list(_scalar(_string, "a glob pattern such as TODO_*"))),
    "projects": Key(_list(_scalar(_string, "a project"), into=frozenset)),
    "companies": Key(_list(_scalar(_string, "a company"), into=frozenset)),
    "where": Key(_optional(_where)),
}


def _rule_from(m: _Map, source: str) -> Rule:
    return Rule(
        events=m.get("events", ()),
        projects=m.get("projects", frozenset()),
        companies=m.get("companies", frozenset()),
        where=m.get("where"),
        source=source,
    )


def _rule(node: yaml.Node, f: _File, path: str) -> Rule:
    return _rule_from(_section(RULE)(node, f, path), f.source(node))


RETRY = {
    "attempts": Key(_scalar(_integer(1, 100), "an integer")),
    "backoff": Key(_list(_scalar(parse_duration, "a duration"), nonempty=True)),
}
HEALTH = {"probe_interval": Key(_optional(_scalar(_positive(parse_duration), "a duration")))}
_BOOL = _scalar(_boolean, "true or false")
TUNABLES = {  # the per-webhook keys `defaults:` may set
    "enabled": Key(_BOOL),
    "timeout": Key(_scalar(_positive(parse_duration), "a duration")),
    "retry": Key(_section(RETRY)),
    "max_in_flight": Key(_scalar(_integer(1, 1000), "an integer")),
    "ordered": Key(_BOOL),
    "rate_limit": Key(_optional(_scalar(_rate, "a rate such as 50/s"))),
    "headers": Key(_headers),
    "signature": Key(_scalar(_choice(*SIGNATURES), "a signature scheme")),
    "signature_header": Key(_scalar(_header_name, "a header name")),
    "allow_private_networks": Key(_BOOL),
    "health": Key(_section(HEALTH)),
}
_SECRET_KEYS = ("secret", "secret_env", "secret_file")
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


def _per_webhook(node: yaml.Node, f: _File, path: str) -> None:
    raise _Invalid("cannot be set in defaults; set it on each webhook")


_SECRETS = {k: WEBHOOK[k] for k in _SECRET_KEYS}  # a shared secret may come from defaults
DEFAULTS = {**{k: Key(_per_webhook) for k in WEBHOOK}, **TUNABLES, **_SECRETS}
CURVE = {
    "secret_key_file": Key(_existing(os.path.isfile, "file"), required=True),
    "authorized_keys_dir": Key(_existing(os.path.isdir, "directory"), required=True),
}
INGEST = {
    "bind": Key(_optional(_address)),
    "ack_bind": Key(_optional(_address)),
    "max_event_bytes": Key(_scalar(_positive(parse_size), "a size")),
    "curve": Key(_optional(_section(CURVE))),
}


def _webhook_list(node: yaml.Node, f: _File, path: str) -> list[tuple[_File, str, _Map]]:
    """Each webhook checked on its own, so one bad webhook hides nothing about the others."""
    if _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise _Invalid(f"expected a list of webhooks, not {_kind(node)}")
    webhook = _section(WEBHOOK)
    items = [(f, f"{path}[{i}]", n) for i, n in enumerate(node.value)]
    return [(f, p, m) for f, p, n in items if (m := f.check(webhook, n, p)) is not _BAD]


TOP = {
    "state_dir": Key(_file_path),
    "retention": Key(_scalar(_positive(parse_duration), "a duration")),
    "shutdown_timeout": Key(_scalar(parse_duration, "a duration")),
    "ingest": Key(_section(INGEST)),
    "control": Key(_section({"bind": Key(_address)})),
    "metrics": Key(_section({"bind": Key(_optional(_scalar(_host_port, "HOST:PORT")))})),
    "defaults": Key(_section(DEFAULTS)),
    "include": Key(_existing(os.path.isdir, "directory")),
    "webhooks": Key(_webhook_list),
    "delivery_workers": Key(_scalar(_integer(1), "an integer")),
}


# --------------------------------------------------------------------------- building the values


def _webhook(f: _File, path: str, w: _Map, defaults: _Map) -> WebhookConfig:
    """Merge with ``defaults`` (retry and health key by key) and check what spans keys."""
    merged = {**defaults, **w}
    retry, health = ({**defaults.get(k, {}), **w.get(k, {})} for k in ("retry", "health"))
    secret_keys = [k for k in _SECRET_KEYS if k in w.keys_at]
    secret_from = w
    if not secret_keys:
        secret_keys = [k for k in _SECRET_KEYS if k in defaults]
        secret_from = defaults
    if len(secret_keys) > 1:
        found = ", ".join(secret_keys)
        f.error(secret_from.keys_at[secret_keys[1]], _join(path, secret_keys[1]),
                f"set only one of secret, secret_env, secret_file (found {found})")  # fmt: skip
    if (signature := merged.get("signature", "standard")) != "none" and not secret_keys:
        f.error(w.node, _join(path, "secret"), f"is required for signature {signature!r}: "
                "set secret, secret_env or secret_file")  # fmt: skip
    top_rule = [k for k in RULE if k in w.keys_at]
    if "match" in w.keys_at and top_rule:
        f.error(w.keys_at["match"], _join(path, "match"),
                f"cannot be combined with {', '.join(top_rule)} on the webhook; "
                "put them in each match rule")  # fmt: skip
    if "url" in w and not merged.get("allow_private_networks") and (why := _blocked(w["url"])):
        f.error(w.keys_at["url"], _join(path, "url"),
                f"{why}; set allow_private_networks: true to allow it")  # fmt: skip
    return WebhookConfig(
        name=w.get("name", ""),
        url=w.get("url", ""),
        rules=tuple(w.get("match", ())) or (_rule_from(w, f.source(w.node)),),
        secrets=next((secret_from[k] for k in secret_keys if k in secret_from), ()),
        retry=RetryConfig(**retry),
        health=HealthConfig(**health),
        source=f.source(w.node),
        **{k: v for k, v in merged.items() if k in TUNABLES and k not in ("retry", "health")},
    )


def _ingest(f: _File, top: _Map) -> IngestConfig:
    """An ``ingest`` section turns off the socket it leaves out; none at all keeps both."""
    if "ingest" not in top:
        return IngestConfig()
    ingest = top["ingest"]
    off = [k for k in ("bind", "ack_bind") if ingest.get(k) is None]
    if len(off) == 2 and all(k in ingest or k not in ingest.keys_at for k in off):
        f.error(top.keys_at["ingest"], "ingest", "set bind, ack_bind or both to let events in")
    curve = ingest.get("curve")
    return IngestConfig(
        bind=ingest.get("bind"),
        ack_bind=ingest.get("ack_bind"),
        max_event_bytes=ingest.get("max_event_bytes", MiB),
        curve=CurveConfig(**curve) if curve and len(curve) == 2 else None,
    )


def _read(f: _File, path: str) -> yaml.Node | None:
    """Compose one file into nodes (lines kept); syntax errors become located messages."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        f.error(1, "yaml", "the file is not UTF-8 text")
        return None
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        pass  # parse again below: PyYAML's own parser words errors the same on every machine
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = " ".join(str(p) for p in (e.problem, e.context and f"({e.context})") if p)
        f.error(mark.line + 1 if mark else 1, "yaml", message or "invalid YAML")
    except yaml.YAMLError as e:  # the reader: a character YAML does not allow
        position = getattr(e, "position", 0)
        line = text.count("\n", 0, position) + 1
        f.error(line, "yaml", "the file holds a character that YAML does not allow")
    return None


def _included(main: _File, directory: str, path: str) -> list[tuple[_File, str, _Map]]:
    """Webhooks from ``directory/*.yaml`` in name order; ``webhooks[i]`` counts within each file."""
    shown_dir = os.path.dirname(path)
    webhooks = []
    names = sorted(glob.glob(os.path.join(glob.escape(directory), "*.yaml")))
    for order, name in enumerate(names, 1):
        shown = name
        if os.path.commonpath([name, main.dir]) == main.dir:  # shown as the main file is
            shown = os.path.normpath(os.path.join(shown_dir, os.path.relpath(name, main.dir)))
        f = _File(shown, os.path.dirname(name), main.env, main.errors, order)
        try:
            node = _read(f, name)
        except OSError as e:
            f.error(1, "include", f"cannot read the file: {e.strerror}")
            continue
        if node is not None and (found := f.check(_webhook_list, node, "webhooks")) is not _BAD:
            webhooks += found
    return webhooks


def load(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read, check and freeze the config at ``path`` (and its ``include:`` directory).

    ``env`` (default ``os.environ``) answers ``secret_env``. Raises ``ConfigError`` holding
    every error found, each ``FILE:LINE: key.path: message``, in file and line order.
    """
    errors: list[tuple[int, int, str]] = []
    absolute = os.path.abspath(path)
    main = _File(path, os.path.dirname(absolute), os.environ if env is None else env, errors, 0)
    try:
        root = _read(main, absolute)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the config file: {e.strerror}"]) from None
    top = _Map(None) if root is None else main.check(_section(TOP), root, "")
    top = _Map(None) if top is _BAD else top
    webhooks = top.get("webhooks", [])
    if "include" in top:
        webhooks = webhooks + _included(main, top["include"], path)
    defaults = top.get("defaults", _Map(None))
    built = [_webhook(f, p, w, defaults) for f, p, w in webhooks]
    first: dict[str, str] = {}
    for (f, p, w), hook in zip(webhooks, built, strict=True):
        if hook.name and hook.name in first:
            where = first[hook.name]
            f.error(w.keys_at["name"], _join(p, "name"),
                    f"duplicate webhook name {hook.name!r}; first defined at {where}")  # fmt: skip
        first.setdefault(hook.name, hook.source)
    ingest = _ingest(main, top)
    if errors:
        raise ConfigError([text for _, _, text in sorted(errors, key=lambda e: e[:2])])
    state_dir = top.get("state_dir", main.resolve("./var"))
    extra = {k: top[k] for k in ("retention", "shutdown_timeout", "delivery_workers") if k in top}
    if "bind" in top.get("metrics", {}):
        extra["metrics_bind"] = top["metrics"]["bind"]
    return Config(
        path=absolute,
        state_dir=state_dir,
        ingest=ingest,
        control_bind=top.get("control", {}).get("bind", f"ipc://{state_dir}/control.sock"),
        webhooks=tuple(built),
        **extra,
    )


def check(path: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Every error in the config at ``path``, none when it is valid: ``webhook-router check``."""
    try:
        load(path, env)
    except ConfigError as e:
        return e.errors
    return []
