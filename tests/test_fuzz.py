"""Fuzzing the two doors that take outside input: the envelope decoder and the config loader.

The property each time: a clean rejection (``BadEvent`` with a reason code from the README's
list; ``ConfigError`` whose every message reads ``FILE:LINE: key: message``) or a valid result
(an ``Event`` whose body is JSON carrying the same data; a ``Config``); never another exception.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from router import ConfigError
from router.config import Config, load
from router.envelope import KEYS, BadEvent, decode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = (ROOT / "conf" / "router.yaml").read_text()
NOW = 1795797513.123
# FUZZ_EXAMPLES=5000 for a longer hunt; make test keeps a few hundred per test
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None)


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return NOW


def readme_reasons() -> set[str]:
    """The reason codes as the README lists them ("Anything else is refused with a reason: …")."""
    start = re.search(r"Anything else is refused with\s+a reason", README).start()
    end = re.compile(r"A refused\s+event").search(README, start).start()
    return set(re.findall(r"`([a-z_]+)`(?=[,\s(])", README[start:end]))  # list items, not `data`)


REASONS = readme_reasons()


def test_the_readme_lists_the_reason_codes():
    assert {"not_msgpack", "not_map", "too_large", "bad_id", "bad_data"} <= REASONS


# --------------------------------------------------------------------------- the envelope

ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "\r\n", "\t", "\u202e", "\ufeff", "\U0001f600", "é", "订单-1", "a" * 201]
)
TEXT = st.one_of(st.text(max_size=30), ODD_TEXT)
ASCII_NAME = st.from_regex(r"[!-~]{1,40}", fullmatch=True)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),  # NaN and infinities included
    st.floats(width=32),
    TEXT,
    st.binary(max_size=16),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
)
KEYS_ANY = st.one_of(
    TEXT, st.integers(-(2**63), 2**64 - 1), st.binary(max_size=4), st.none(), st.booleans(),
    st.floats(), st.tuples(st.integers(0, 9)),  # a tuple packs as an array: a map key msgpack
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS_ANY, kids, max_size=4),
    max_leaves=25,
)
JSON_VALUES = st.recursive(  # what data may hold: the decoder must accept all of it
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=25,
)
ZONES = st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))
TIMESTAMPS = st.one_of(
    st.floats(),
    st.integers(-(2**63), 2**64 - 1),
    st.datetimes(timezones=st.none() | ZONES).map(datetime.isoformat),
    TEXT,
    VALUES,
)
EVENTS = st.fixed_dictionaries(
    {"type": st.one_of(ASCII_NAME, TEXT, VALUES)},
    optional={
        "id": st.one_of(ASCII_NAME, TEXT, VALUES),
        "company": st.one_of(st.none(), TEXT, VALUES),
        "project": st.one_of(st.none(), TEXT, VALUES),
        "timestamp": TIMESTAMPS,
        "data": st.one_of(st.dictionaries(TEXT, JSON_VALUES, max_size=5), VALUES),
    },
)
DOCS = st.one_of(
    EVENTS,
    st.tuples(EVENTS, KEYS_ANY, VALUES).map(lambda t: {**t[0], t[1]: t[2]}),  # maybe unknown key
    VALUES,
)
LIMITS = st.sampled_from([1 << 20, 1 << 20, 64, 8])


def pack(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


def same(got: Any, want: Any, where: str = "data") -> None:
    """``got`` (back from JSON) is ``want`` (from msgpack): equal values of the same types."""
    assert type(got) is type(want), f"{where}: {got!r} is not {want!r}"
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def decoded_or_refused(frame: bytes, limit: int = 1 << 20) -> None:
    """Decode ``frame``: a reason from the README's list, or an event that says what was sent."""
    try:
        event = decode(frame, limit, FixedClock())
    except BadEvent as bad:
        assert bad.reason in REASONS, bad
        assert bad.message and "\n" not in bad.message and "\r" not in bad.message, repr(bad)
        return
    assert len(frame) <= limit
    doc = msgpack.unpackb(frame, raw=False, strict_map_key=False, timestamp=0)
    body = json.loads(event.payload.for_webhook("fuzz").decode("utf-8"))
    assert set(body) <= {*KEYS, "webhook"} and body["webhook"] == "fuzz"
    assert body["id"] == event.id == (doc.get("id") or event.id)
    assert re.fullmatch(r"[!-~]{1,200}", event.id), event.id
    assert body["type"] == event.type == doc["type"]
    for key in ("company", "project"):
        assert body.get(key) == doc.get(key) == getattr(event, key)
    same(body["data"], doc.get("data") or {})
    same(event.data, doc.get("data") or {})
    sent = datetime.fromisoformat(body["timestamp"]).timestamp()
    assert math.isclose(sent, event.timestamp, abs_tol=0.001, rel_tol=1e-12), body["timestamp"]


@FUZZ
@given(st.binary(max_size=300), LIMITS)
def test_arbitrary_bytes_are_decoded_or_refused_with_a_reason(frame, limit):
    decoded_or_refused(frame, limit)


@FUZZ
@given(DOCS, LIMITS)
def test_arbitrary_msgpack_values_are_decoded_or_refused_with_a_reason(doc, limit):
    try:
        frame = pack(doc)
    except (OverflowError, ValueError, TypeError):
        return  # msgpack itself cannot write it (an int beyond 64 bits): no frame to send
    decoded_or_refused(frame, limit)


@FUZZ
@given(EVENTS, st.data())
def test_damaged_frames_are_decoded_or_refused_with_a_reason(doc, data):
    frame = bytearray(pack(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and at < len(frame):
            frame[at] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            frame[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del frame[at : at + data.draw(st.integers(1, 4))]
        elif action == "truncate":
            del frame[at:]
    decoded_or_refused(bytes(frame))


@FUZZ
@given(st.dictionaries(TEXT, JSON_VALUES, max_size=6), ASCII_NAME, ASCII_NAME)
def test_every_json_representable_data_is_accepted_and_carried_unchanged(data, etype, eid):
    event = decode(pack({"type": etype, "id": eid, "data": data}), 1 << 20, FixedClock())
    same(json.loads(event.payload.for_webhook("w"))["data"], data)


def test_a_timestamp_before_year_1000_is_written_with_four_digits():
    """Found by fuzzing: ``%Y`` drops the leading zeros, and the body's time was not ISO-8601."""
    frame = pack({"type": "T", "timestamp": "0001-01-01T00:00:00-05:00"})
    body = json.loads(decode(frame, 1 << 20, FixedClock()).payload.for_webhook("w"))
    assert body["timestamp"] == "0001-01-01T05:00:00.000Z"


# --------------------------------------------------------------------------- the config

ERROR = re.compile(r"(?P<file>[^\n]+?\.yaml):(?P<line>[1-9]\d*): (?P<key>[^\n]+?): [^\n]+")
SCHEMA_WORDS = sorted(
    {
        *re.findall(r"^\s*-?\s*([a-z_]+):", EXAMPLE, re.M),
        *("field", "eq", "in", "not", "all", "any", "regex", "gte", "secret_env", "secret_file"),
        *("curve", "secret_key_file", "authorized_keys_dir", "control", "include", "match"),
    }
)
YAML_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), TEXT,
    st.sampled_from(["10s", "500ms", "1MiB", "tcp://127.0.0.1:1", "ipc://@x", "http://127.0.0.1/",
                     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "TODO_*", "[", "*", "^("]),
)  # fmt: skip
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(SCHEMA_WORDS) | TEXT, kids, max_size=5)
    ),
    max_leaves=30,
)
ODD_CHARS = ["\x00", "\x07", "\t", "\ufeff", "\x85", "\u2028", "é", "\U0001f600", "%", "&a",
             "*a", "!!python/object:os.system", "{", "}", "[", "]", ":", "- ", "? ", "'", '"',
             "#", "|", ">", "\n", "\n  ", "---\n", "...\n", "\r"]  # fmt: skip


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzzconf")
    shutil.copy(ROOT / "conf" / "tokens.yaml", directory)  # the example's api.tokens_file
    return directory


def loaded_or_refused(directory: Path, content: str | bytes) -> Config | None:
    """Load ``content`` as a config: a ``Config``, or a ``ConfigError`` of located messages."""
    path = directory / "router.yaml"
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    try:
        cfg = load(str(path), env={"SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    except ConfigError as e:
        assert e.errors, "a ConfigError with no message"
        for message in e.errors:
            assert ERROR.fullmatch(message), f"not FILE:LINE: key: message: {message!r}"
        return None
    assert isinstance(cfg, Config)
    assert all(w.name and w.url for w in cfg.webhooks)
    return cfg


def test_a_key_holding_a_newline_is_reported_on_one_line(config_dir):
    """Found by fuzzing: the key was shown raw, and its error spread over two lines."""
    (config_dir / "router.yaml").write_text('"state\\ndir": x\n')
    with pytest.raises(ConfigError) as info:
        load(str(config_dir / "router.yaml"), env={})
    assert info.value.errors == [
        f"{config_dir}/router.yaml:1: state\\ndir: unknown key; did you mean 'state_dir'?"
    ]


def test_the_example_config_loads(config_dir):
    assert loaded_or_refused(config_dir, EXAMPLE) is not None


@FUZZ
@given(YAML_VALUES)
def test_arbitrary_yaml_documents_load_or_are_refused_with_located_messages(config_dir, doc):
    loaded_or_refused(config_dir, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_loads_or_is_refused_with_located_messages(config_dir, text):
    loaded_or_refused(config_dir, text)


def _paths(node: Any, at: tuple = ()) -> list[tuple]:
    """Every path into a loaded YAML tree (keys of mappings, indexes of lists)."""
    out = [at] if at else []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        out += _paths(child, (*at, key))
    return out


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@FUZZ
@given(st.data())
def test_mutations_of_the_example_config_load_or_are_refused(config_dir, data):
    tree = yaml.safe_load(EXAMPLE)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(tree)
        path = data.draw(st.sampled_from(paths))
        parent, key = _get(tree, path[:-1]), path[-1]
        action = data.draw(st.sampled_from(["delete", "retype", "swap", "copy"]))
        if action == "delete":
            del parent[key]
        elif action == "retype":
            parent[key] = data.draw(YAML_VALUES)
        elif action == "swap":
            other = data.draw(st.sampled_from(paths))
            if path[: len(other)] != other and other[: len(path)] != path:  # not nested
                oparent, okey = _get(tree, other[:-1]), other[-1]
                parent[key], oparent[okey] = copy.deepcopy(oparent[okey]), parent[key]
        elif isinstance(parent, list):  # copy: a list item twice (e.g. a webhook)
            parent.append(copy.deepcopy(parent[key]))
        else:  # copy: under another key of the same mapping
            parent[data.draw(st.sampled_from(SCHEMA_WORDS))] = copy.deepcopy(parent[key])
    loaded_or_refused(config_dir, yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))


@FUZZ
@given(st.data())
def test_text_edits_of_the_example_config_load_or_are_refused(config_dir, data):
    text = EXAMPLE
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        lines = text.splitlines(keepends=True)
        action = data.draw(st.sampled_from(["truncate", "insert", "dup_line", "drop_line"]))
        if action == "truncate":
            text = text[:at]
        elif action == "insert":
            text = text[:at] + data.draw(st.sampled_from(ODD_CHARS) | TEXT) + text[at:]
        elif lines:
            i = data.draw(st.integers(0, len(lines) - 1))
            lines[i : i + 1] = [lines[i]] * (2 if action == "dup_line" else 0)
            text = "".join(lines)
    loaded_or_refused(config_dir, text)
