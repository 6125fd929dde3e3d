"""Leaf checks on one config value: durations, sizes, rates, names, URLs, headers, secrets.

Each takes a plain Python value and returns the parsed value or raises ``ValueError`` with a
message a user can act on; ``router.schema`` locates the message in the file. They know
nothing of YAML nodes, so they can be tested, and reused, on their own.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from router.messages import EVENT_KEYS
from router.signing import RESERVED_HEADERS  # the headers the router sets itself

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?b|b)?", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|m|h)")
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):(\*|\d{1,5})")
_SPACE = re.compile(r"\s")
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::([0-9]{1,5}))?(?:[/?#]\S*)?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FIELD_ROOTS = EVENT_KEYS  # what a where-condition's field may start with


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- plain values


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


def positive(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def positive(v: Any) -> Any:
        if (parsed := parse(v)) <= 0:
            raise ValueError("must be more than 0")
        return parsed

    return positive


def duration_at_least(least: float) -> Callable[[Any], float]:
    def duration_at_least(v: Any) -> float:
        if (seconds := parse_duration(v)) < least:
            raise ValueError(f"must be at least {least:g}s")
        return seconds

    return duration_at_least


def string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string (quote numbers and true/false)")
    return v


def text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a string (quote numbers and true/false)")
    return v


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def integer(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def integer(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bounds = f"from {lo} to {hi}" if hi else f"{lo} or more"
            raise ValueError(f"expected an integer {bounds}")
        return v

    return integer


def choice(*choices: str) -> Callable[[Any], str]:
    def choice(v: Any) -> str:
        if isinstance(v, str) and v in choices:
            return v
        raise ValueError(f"expected one of {', '.join(choices)}" + did_you_mean(str(v), choices))

    return choice


def any_scalar(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise ValueError("expected a string, number, true/false or null")


def orderable(v: Any) -> Any:
    if isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool)):
        return v
    raise ValueError("expected a number or a string")


def regex(v: Any) -> re.Pattern[str]:
    try:
        return re.compile(text(v))
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None


def field_path(v: Any) -> tuple[str, tuple[str, ...]]:
    """An event field as written and as its dotted parts: ``data.a.b`` is (…, (data, a, b))."""
    parts = tuple(string(v).split("."))
    if "" in parts:
        raise ValueError(f"invalid field {v!r}: empty segment in the dotted path")
    if parts[0] not in FIELD_ROOTS:
        raise ValueError(
            f"unknown field {parts[0]!r}: use type, id, company, project, timestamp or data.…"
            + did_you_mean(parts[0], FIELD_ROOTS)
        )
    if parts[0] != "data" and len(parts) > 1:
        raise ValueError(f"{parts[0]} has no sub-fields; only data.… paths go deeper")
    return v, parts


# --------------------------------------------------------------------------- names and addresses


_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def node_name(v: Any) -> str:
    """A daemon's name in a cluster (SPEC §8): a host name fits."""
    if isinstance(v, str) and _NODE.fullmatch(v):
        return v
    raise ValueError("expected 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")


def webhook_name(v: Any) -> str:
    if isinstance(v, str) and _NAME.fullmatch(v):
        return v
    raise ValueError("expected 1-64 characters of a-z, 0-9, '_' and '-'")


def url(v: Any) -> str:
    """An http(s) URL with a host. Never echoed: a URL may carry credentials."""
    if isinstance(v, str) and (m := _PLAIN_URL.fullmatch(v)) and 0 < int(m[1] or 80) < 65536:
        return v  # what urlsplit below would say of it, in a third of the time
    if isinstance(v, str) and not _SPACE.search(v):
        try:
            parts = urlsplit(v)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad port
            ok = False
        if ok:
            return v
    raise ValueError("expected an http:// or https:// URL with a host")


def zmq_address(v: Any) -> str:
    """A ZeroMQ ``tcp://HOST:PORT`` or ``ipc://PATH``, as written (the schema resolves PATH)."""
    addr = string(v)
    if addr.startswith("ipc://") and len(addr) > 6:
        return addr
    m = _TCP.fullmatch(addr)
    if m and (m[2] == "*" or int(m[2]) <= 65535):
        return addr
    raise ValueError(f"invalid address {addr!r}: write tcp://HOST:PORT or ipc://PATH")


def host_port(v: Any) -> tuple[str, int]:
    host, sep, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if sep and host and port.isdigit() and int(port) <= 65535:
        return host, int(port)
    raise ValueError(f"invalid address {v!r}: write HOST:PORT (127.0.0.1:9464), or null for off")


def rate(v: Any) -> tuple[float, float]:
    """(count, per seconds): ``50/s`` is (50.0, 1.0); ``router.config`` makes it a RateLimit."""
    m = _RATE.fullmatch(v.strip()) if isinstance(v, str) else None
    if m and float(m[1]) > 0:
        return float(m[1]), {"s": 1.0, "m": 60.0, "h": 3600.0}[m[2]]
    raise ValueError(f"invalid rate {v!r}: write COUNT/s, COUNT/m or COUNT/h (50/s), or null")


def header_name(v: Any) -> str:
    if not isinstance(v, str) or not _TOKEN.fullmatch(v):
        raise ValueError("expected an HTTP header name (letters, digits and '-')")
    if v.lower() in RESERVED_HEADERS:
        raise ValueError(f"{v} is set by the router and cannot be configured")
    return v


def header_value(v: Any) -> str:
    if not isinstance(v, str) or any(c in v for c in "\r\n\0"):
        raise ValueError("expected a string without line breaks (quote numbers)")
    return v


# --------------------------------------------------------------------------- secrets


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


def one_secret(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ValueError("expected a secret string (whsec_<base64> or plain text)")
    return _decode_secret(v, "the secret")


def _split_secrets(content: str, where: str) -> tuple[bytes, ...]:
    """Several space-separated secrets: rotation, newest first."""
    if not content.split():
        raise ValueError(f"{where} holds no secret")
    secrets = content.split()
    return tuple(_decode_secret(s, f"secret {i} in {where}") for i, s in enumerate(secrets, 1))


def not_a_secret(v: Any) -> str:
    """A name or path that is echoed in messages, so it must not be a misplaced secret."""
    if string(v).startswith("whsec_"):
        raise ValueError("this looks like a secret, not a name (it is not shown); use secret:")
    return v


def env_secrets(var: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The secrets in environment variable ``var`` of ``env``."""
    if var not in env:
        raise ValueError(f"environment variable {var} is not set")
    return _split_secrets(env[var], f"environment variable {var}")


def credential_name(v: Any) -> str:
    """A systemd credential's name (``LoadCredential=NAME:…``): one file name, no directory."""
    name = not_a_secret(v)
    if "/" in name or name in (".", "..") or len(name) > 255:
        raise ValueError(
            f"invalid credential name {name!r}: write the NAME of LoadCredential=NAME:…"
        )
    return name


def credential_secrets(name: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The secrets in systemd credential ``name``: ``$CREDENTIALS_DIRECTORY/name``.

    systemd sets the variable for a unit with ``LoadCredential=``; any other service manager (or a
    test) may set it to a directory of its own the same way.
    """
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ValueError(
            f"credential {name}: CREDENTIALS_DIRECTORY is not set; under systemd add "
            f"LoadCredential={name}:/PATH to the unit, elsewhere set it to the credentials "
            "directory"
        )
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ValueError(
            f"credential {name}: no file {path}; is LoadCredential={name}:/PATH in the unit?"
        )
    return file_secrets(path)


def file_secrets(name: str) -> tuple[bytes, ...]:
    """The secrets in the file ``name``; every failure, a bad name too, is a ValueError."""
    try:
        with open(name, encoding="utf-8") as fh:
            return _split_secrets(fh.read(), name)
    except OSError as e:
        raise ValueError(f"cannot read {name}: {e.strerror}") from None
    except UnicodeDecodeError:  # its text quotes secret bytes
        raise ValueError(f"{name} is not UTF-8 text") from None
