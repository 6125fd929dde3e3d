"""The event envelope: one msgpack frame in, one validated ``Event`` out, or a ``BadEvent``.

Plain logic with no sockets, so every rule of SPEC §1 is tested without ZeroMQ. The
webhook body is serialised here, once per event, and shared by every target webhook.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack

from router import RouterError
from router.clock import Clock
from router.messages import EVENT_KEYS, Event, Payload

KEYS = EVENT_KEYS  # the top-level keys a frame may hold
_KEY_SET = frozenset(KEYS)
MAX_NAME_CHARS = 200  # type and id
MAX_DEPTH = 100  # nesting inside data; far beyond real payloads, well inside every stack
# The id travels in the webhook-id header and in the signed content, so it is limited to
# what every HTTP stack carries unchanged: visible ASCII, no spaces or control characters.
_ID_CHARS = re.compile(r"[!-~]+")
# What one decoded value costs in memory beyond its text, in bytes (a Python object and
# the reference to it): an estimate on the high side, so that budgets err towards safety.
VALUE_COST = 80  # an empty list: 56 bytes, 16 of GC header, 8 for the reference to it

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class BadEvent(RouterError):
    """An event the router refuses. ``reason`` is the short code used as the metric label."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


def decode(frame: bytes, max_bytes: int, clock: Clock) -> Event:
    """Validate one ingest frame and build its ``Event`` (with the serialised payload).

    Raises:
        BadEvent: with one of the reason codes of SPEC §1.
    """
    if len(frame) > max_bytes:
        raise BadEvent("too_large", f"{len(frame)} bytes, the limit is {max_bytes}")
    try:
        doc = msgpack.unpackb(frame, raw=False, strict_map_key=False, timestamp=0)
    except (ValueError, TypeError, RecursionError) as exc:  # ExtraData, StackError, utf-8
        raise BadEvent("not_msgpack", _describe_unpack_error(exc)) from None
    if not isinstance(doc, dict):
        raise BadEvent("not_map", f"the frame holds {_kind(doc)}, not a map")
    if not _KEY_SET.issuperset(doc):
        unknown = [k for k in doc if k not in _KEY_SET]
        names = ", ".join(_short(repr(k)) for k in unknown[:5])
        raise BadEvent("unknown_key", f"unknown top-level key(s) {names}; allowed: {KEYS}")
    get = doc.get
    etype = get("type")
    if etype is None and "type" not in doc:
        raise BadEvent("missing_type", "the event has no 'type'")
    etype = _name(etype, "bad_type", "type")
    eid = get("id")
    eid = new_id(clock) if eid is None else _event_id(eid)
    company = _optional_str(get("company"), "bad_company", "company")
    project = _optional_str(get("project"), "bad_project", "project")
    ts = get("timestamp")
    ts = clock.time() if ts is None else _timestamp(ts)
    data = get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise BadEvent("bad_data", f"data must be a map, not {_kind(data)}")
    values = _check_json(data)
    payload = Payload(eid, etype, _body(eid, etype, ts, company, project, data))
    cost = len(frame) + len(payload.body) + VALUE_COST * values
    return Event(eid, etype, ts, company, project, data, payload, cost)


# --------------------------------------------------------------------------- fields


def _name(value: Any, reason: str, key: str) -> str:
    if not isinstance(value, str):
        raise BadEvent(reason, f"{key} must be a string, not {_kind(value)}")
    if not 1 <= len(value) <= MAX_NAME_CHARS:
        raise BadEvent(reason, f"{key} must be 1-{MAX_NAME_CHARS} characters, got {len(value)}")
    return value


def _event_id(value: Any) -> str:
    eid = _name(value, "bad_id", "id")
    if not _ID_CHARS.fullmatch(eid):
        bad = next(c for c in eid if not _ID_CHARS.fullmatch(c))
        raise BadEvent(
            "bad_id",
            f"id may hold only visible ASCII characters (no spaces or control characters);"
            f" found {bad!r} (U+{ord(bad):04X})",
        )
    return eid


def _optional_str(value: Any, reason: str, key: str) -> str | None:
    # nil counts as absent: producers in many languages write null for "no value".
    if value is not None and not isinstance(value, str):
        raise BadEvent(reason, f"{key} must be a string, not {_kind(value)}")
    return value


def _timestamp(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadEvent("bad_timestamp", f"not ISO-8601: {_short(repr(value))}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts = (parsed - _EPOCH).total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise BadEvent("bad_timestamp", f"timestamp must be finite, got {value}")
        ts = float(value)
    else:
        kind = _kind(value)
        raise BadEvent("bad_timestamp", f"must be epoch seconds or ISO-8601, not {kind}")
    try:
        _iso(ts)  # the body needs it; years outside 1-9999 cannot be written
    except (OverflowError, ValueError):
        raise BadEvent("bad_timestamp", f"{_short(repr(value))} is out of range") from None
    return ts


def _check_json(data: dict[str, Any]) -> int:
    """Refuse anything JSON cannot carry, naming where it sits (``data.items[2].x``).

    Returns how many values (containers, keys and items) ``data`` holds: what its
    decoded form costs beyond its text, which a small frame can make large. A fast
    pass checks every value without building paths; only a payload it refuses is
    walked again to say where the problem is.
    """
    values = _valid_values(data)
    if values is None:
        _explain_invalid(data)
        raise BadEvent("bad_data", "not representable in JSON")  # _explain_invalid raised
    return values


_SCALARS = frozenset({str, int, bool, type(None)})
_STR_ONLY = frozenset({str})


def _valid_values(data: dict[str, Any]) -> int | None:
    """The number of values in ``data`` if JSON can carry all of it, else None.

    Level by level, with an explicit depth bound, so a hostile payload cannot exhaust
    the (possibly small) stack of the receiver thread here or later in ``json.dumps``.
    msgpack gives exact types, so type lookups are enough.
    """
    level: list[Any] = [data]
    values, depth = 1, 1
    while level:
        if depth > MAX_DEPTH:
            return None
        deeper: list[Any] = []
        for container in level:
            if type(container) is dict:
                values += 2 * len(container)
                if not _STR_ONLY.issuperset(map(type, container)):
                    return None
                items = container.values()
            else:
                values += len(container)
                items = container
            for item in items:
                kind = type(item)
                if kind is dict or kind is list:
                    deeper.append(item)
                elif kind not in _SCALARS and not (kind is float and math.isfinite(item)):
                    return None
        level, depth = deeper, depth + 1
    return values


def _explain_invalid(data: dict[str, Any]) -> None:
    """Raise ``BadEvent`` naming the first value JSON cannot carry (a refused payload only)."""
    stack: list[tuple[Any, str, int]] = [(data, "data", 1)]
    while stack:
        container, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadEvent("bad_data", f"{_short(path)}: nested deeper than {MAX_DEPTH} levels")
        pairs = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in pairs:
            if isinstance(container, dict) and not isinstance(key, str):
                where, key_text = _short(path, 120), _short(repr(key))
                raise BadEvent("bad_data", f"{where}: map key {key_text} is not a string")
            if isinstance(item, dict | list):
                stack.append((item, _path(path, key), depth + 1))
            elif not _json_scalar(item):
                where = _short(_path(path, key), 120)
                raise BadEvent("bad_data", f"{where}: {_kind(item)} is not representable in JSON")


def _json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)  # bool is an int


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if key.isidentifier() else f"{parent}[{json.dumps(key)}]"


# --------------------------------------------------------------------------- payload


# Made once: json.dumps with any option builds a new JSONEncoder on every call. Cycles
# need no check: msgpack cannot make them, and _check_json bounds the depth.
_JSON = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def _body(
    eid: str, etype: str, ts: float, company: str | None, project: str | None, data: dict
) -> str:
    """The webhook body: compact JSON in field order, without the closing brace that
    ``Payload.for_webhook`` writes after the webhook's name."""
    doc: dict[str, Any] = {"id": eid, "type": etype, "timestamp": _iso(ts)}
    if company is not None:
        doc["company"] = company
    if project is not None:
        doc["project"] = project
    doc["data"] = data
    try:
        text = _JSON(doc)
    except (ValueError, TypeError, RecursionError) as exc:  # _check_json should prevent these
        raise BadEvent("bad_data", f"not representable in JSON: {exc}") from None
    return text[:-1]


def synthetic(eid: str, etype: str, ts: float, data: dict | None = None) -> Payload:
    """The payload of an event the router makes itself (a health check, a test event, an alert)."""
    return Payload(eid, etype, _body(eid, etype, ts, None, None, data or {}))


def _iso(ts: float) -> str:
    """``2026-11-27T16:38:33.123Z``: UTC, milliseconds, rounded to the nearest one."""
    seconds, millis = divmod(round(ts * 1000), 1000)
    return _iso_second(seconds) + _MILLIS[millis]


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    """``2026-11-27T16:38:33``; cached, as most events of a burst share their second."""
    moment = _EPOCH + timedelta(seconds=seconds)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"  # %Y: no zeros for year 1


# --------------------------------------------------------------------------- ids

_id_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def new_id(clock: Clock) -> str:
    """A ULID: 48-bit milliseconds then 80 random bits, in Crockford base32 (26 chars).

    Ids sort by time as plain strings. Within one millisecond the previous id's random
    part is incremented, so ids made by this process in one millisecond keep their order.
    """
    global _last_ms, _last_rand
    ms = int(clock.time() * 1000) & (2**48 - 1)
    with _id_lock:
        if ms == _last_ms:
            rand = (_last_rand + 1) & (2**80 - 1)  # wrapping needs 2**80 ids in 1 ms
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand
    value = ms << 80 | rand
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


# --------------------------------------------------------------------------- helpers


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, msgpack.Timestamp):
        return "a msgpack timestamp (ext -1)"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, msgpack.ExtType):
        return f"a msgpack ext type {value.code}"
    names = {bool: "a bool", int: "an int", float: "a float", str: "a string"}
    names.update({bytes: "bytes (bin)", list: "an array", dict: "a map"})
    return names.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_unpack_error(exc: BaseException) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "trailing bytes after the msgpack value"
    if isinstance(exc, UnicodeDecodeError):
        return "a string is not valid UTF-8"
    if isinstance(exc, msgpack.StackError | RecursionError):
        return "nested too deeply"
    if isinstance(exc, TypeError):
        return f"unusable msgpack value: {_short(str(exc))}"
    return _short(str(exc)) or "cannot unpack"
