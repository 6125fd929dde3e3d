"""The envelope rules of SPEC §1, without sockets: every bad case and its reason code."""

from __future__ import annotations

import json
import threading

import msgpack
import pytest

from router import RouterError
from router.envelope import BadEvent, decode, new_id

LIMIT = 1024 * 1024
CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
NOW = 1795797513.123  # 2026-11-27T16:38:33.123Z


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def pack(doc) -> bytes:
    return msgpack.packb(doc)


def event(**fields):
    return decode(pack({"type": "T", **fields}), LIMIT, FakeClock())


def reason_of(frame: bytes, limit: int = LIMIT) -> BadEvent:
    with pytest.raises(BadEvent) as info:
        decode(frame, limit, FakeClock())
    return info.value


# --------------------------------------------------------------------------- bad events


def test_bad_event_is_a_router_error_with_reason_and_message():
    bad = reason_of(pack([1]))
    assert isinstance(bad, RouterError)
    assert bad.reason == "not_map"
    assert str(bad).startswith("not_map: ")


def test_frame_over_the_limit_is_too_large_before_unpacking():
    assert reason_of(b"\xc1" * 101, limit=100).reason == "too_large"
    assert reason_of(pack({"type": "T", "data": {"x": "y" * 200}}), limit=100).reason == "too_large"


def test_frame_at_the_limit_is_accepted():
    frame = pack({"type": "T"})
    assert decode(frame, len(frame), FakeClock()).type == "T"


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",  # never used
        b"",
        b"\x82\xa4type",  # truncated
        pack({"type": "T"}) + b"\x00",  # trailing bytes
        b"\x81\xa4type\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\x81\xa2\xff\xfe\xa1T",  # invalid UTF-8 in a key
        b"\x91" * 2000 + b"\x01",  # nested deeper than msgpack allows
        b"\x81\x91\x01\xa1x",  # an array as a map key
    ],
)
def test_frames_that_are_not_msgpack_are_refused(frame):
    assert reason_of(frame).reason == "not_msgpack"


@pytest.mark.parametrize("doc", [[{"type": "T"}], "T", 7, None, b"bin", 1.5])
def test_a_value_other_than_a_map_is_refused(doc):
    assert reason_of(pack(doc)).reason == "not_map"


def test_unknown_top_level_keys_are_named():
    bad = reason_of(pack({"type": "T", "payload": {}, "extra": 1}))
    assert bad.reason == "unknown_key"
    assert "'payload'" in bad.message and "'extra'" in bad.message


def test_a_non_string_top_level_key_is_unknown():
    assert reason_of(pack({"type": "T", 1: 2})).reason == "unknown_key"


def test_an_event_without_type_is_refused():
    assert reason_of(pack({"id": "x", "data": {}})).reason == "missing_type"


@pytest.mark.parametrize("value", ["", "T" * 201, 5, None, True, ["T"], b"T"])
def test_bad_types_are_refused(value):
    assert reason_of(pack({"type": value})).reason == "bad_type"


@pytest.mark.parametrize("value", ["", "i" * 201, 5, ["x"], b"x", 1.0])
def test_bad_ids_are_refused(value):
    assert reason_of(pack({"type": "T", "id": value})).reason == "bad_id"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("订单-1", "U+8BA2"),
        ("a\r\nX-Evil: 1", "U+000D"),
        ("a\x00b", "U+0000"),
        ("a b", "U+0020"),
        ("é", "U+00E9"),
        ("tab\t", "U+0009"),
        ("del\x7f", "U+007F"),
    ],
)
def test_ids_that_cannot_travel_in_a_header_are_refused_naming_the_character(value, named):
    bad = reason_of(pack({"type": "T", "id": value}))
    assert bad.reason == "bad_id"
    assert named in bad.message and "visible ASCII" in bad.message


def test_every_visible_ascii_character_is_a_valid_id():
    visible = "".join(chr(c) for c in range(0x21, 0x7F))
    assert event(id=visible).id == visible


def test_cost_counts_what_the_decoded_data_holds_not_only_the_frame():
    small = event(data={"a": [[] for _ in range(10)]})
    wide = event(data={"a": [[] for _ in range(100_000)]})  # 100 KB on the wire, ~6 MB decoded
    assert wide.cost > 60 * 100_000 > small.cost


@pytest.mark.parametrize("key", ["company", "project"])
@pytest.mark.parametrize("value", [5, ["a"], b"acme", {"a": 1}, False])
def test_company_and_project_must_be_strings(key, value):
    assert reason_of(pack({"type": "T", key: value})).reason == f"bad_{key}"


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        float("nan"),
        float("inf"),
        -float("inf"),
        "yesterday",
        "",
        "2026-13-01T00:00:00Z",
        [1],
        {"s": 1},
        b"2026-01-01",
        1e300,  # beyond year 9999
        2**63,
        "9999-12-31T23:59:59.9999",  # rounds into year 10000
    ],
)
def test_bad_timestamps_are_refused(value):
    assert reason_of(pack({"type": "T", "timestamp": value})).reason == "bad_timestamp"


def test_a_msgpack_timestamp_ext_is_not_a_timestamp():
    frame = pack({"type": "T", "timestamp": msgpack.Timestamp(1_700_000_000, 0)})
    assert reason_of(frame).reason == "bad_timestamp"


@pytest.mark.parametrize("value", [[1, 2], "text", 3, b"bin", True])
def test_data_must_be_a_map(value):
    assert reason_of(pack({"type": "T", "data": value})).reason == "bad_data"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"items": [0, 1, {"x": b"bin"}]}, "data.items[2].x"),
        ({"a": {"b": {1: "one"}}}, "data.a.b"),
        ({"a": {b"k": "v"}}, "data.a"),
        ({"t": msgpack.Timestamp(1, 0)}, "data.t"),
        ({"e": [msgpack.ExtType(7, b"x")]}, "data.e[0]"),
        ({"f": float("nan")}, "data.f"),
        ({"g": [1.0, float("-inf")]}, "data.g[1]"),
        ({"my key": {"x": b""}}, 'data["my key"].x'),
    ],
)
def test_values_json_cannot_carry_are_refused_with_their_path(data, path):
    bad = reason_of(pack({"type": "T", "data": data}))
    assert bad.reason == "bad_data"
    assert bad.message.startswith(path + ":")


def test_data_nested_too_deeply_is_refused():
    deep: dict = {}
    inner = deep
    for _ in range(150):
        inner["a"] = {}
        inner = inner["a"]
    bad = reason_of(pack({"type": "T", "data": deep}))
    assert bad.reason == "bad_data"
    assert "nested deeper" in bad.message


def test_long_keys_do_not_make_long_error_messages():
    bad = reason_of(pack({"type": "T", "data": {"k" * 10_000: b"x"}}))
    assert bad.reason == "bad_data"
    assert len(str(bad)) < 300


# --------------------------------------------------------------------------- valid events


def test_a_minimal_event_gets_defaults():
    ev = event()
    assert ev.type == "T"
    assert ev.timestamp == NOW
    assert ev.company is None and ev.project is None
    assert ev.data == {}
    assert len(ev.id) == 26 and set(ev.id) <= CROCKFORD


def test_the_body_is_compact_json_in_field_order_without_its_closing_brace():
    ev = event(id="e1", company="acme", project="p1", data={"n": 1, "s": "x"})
    assert ev.payload.id == "e1" and ev.payload.type == "T"
    assert ev.payload.body == (
        '{"id":"e1","type":"T","timestamp":"2026-11-27T16:38:33.123Z",'
        '"company":"acme","project":"p1","data":{"n":1,"s":"x"}'
    )
    body = ev.payload.for_webhook("crm-sync")
    assert json.loads(body)["webhook"] == "crm-sync"
    assert body.endswith(b',"webhook":"crm-sync"}')


def test_company_and_project_are_omitted_when_absent_or_nil():
    assert "company" not in json.loads(event(id="e").payload.for_webhook("w"))
    ev = event(id="e", company=None, project="p")
    doc = json.loads(ev.payload.for_webhook("w"))
    assert list(doc) == ["id", "type", "timestamp", "project", "data", "webhook"]
    assert ev.company is None


def test_unicode_is_kept_as_utf8_not_escaped():
    ev = event(id="e-1", type="ÜBER", data={"emoji": "🦆", "ключ": "значение"})
    assert '"emoji":"🦆"' in ev.payload.body
    assert '"ключ":"значение"' in ev.payload.body
    assert json.loads(ev.payload.for_webhook("w"))["type"] == "ÜBER"


def test_data_with_every_json_type_is_accepted_as_given():
    data = {"s": "x", "i": -(2**63), "u": 2**64 - 1, "f": 1.5, "b": True, "n": None, "l": [[], {}]}
    ev = event(data=data)
    assert ev.data == data
    assert json.loads(ev.payload.for_webhook("w"))["data"] == data


def test_a_given_id_is_kept():
    assert event(id="order-42").id == "order-42"
    assert event(id="x" * 200).id == "x" * 200


def test_type_of_200_characters_is_accepted():
    assert event(type="T" * 200).type == "T" * 200


@pytest.mark.parametrize(
    ("value", "epoch", "text"),
    [
        (1795797513, 1795797513.0, "2026-11-27T16:38:33.000Z"),
        (1795797513.5, 1795797513.5, "2026-11-27T16:38:33.500Z"),
        (0, 0.0, "1970-01-01T00:00:00.000Z"),
        ("2026-11-27T16:38:33.123Z", 1795797513.123, "2026-11-27T16:38:33.123Z"),
        ("2026-11-27T17:38:33.123+01:00", 1795797513.123, "2026-11-27T16:38:33.123Z"),
        ("2026-11-27T16:38:33.123", 1795797513.123, "2026-11-27T16:38:33.123Z"),
        ("2026-11-27", 1795737600.0, "2026-11-27T00:00:00.000Z"),
    ],
)
def test_timestamps_become_epoch_seconds_and_iso_utc_milliseconds(value, epoch, text):
    ev = event(id="e", timestamp=value)
    assert ev.timestamp == pytest.approx(epoch, abs=1e-6)
    assert json.loads(ev.payload.for_webhook("w"))["timestamp"] == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1795797513.0004, "2026-11-27T16:38:33.000Z"),
        (1795797513.9994, "2026-11-27T16:38:33.999Z"),
        (1795797513.9996, "2026-11-27T16:38:34.000Z"),  # rounds up into the next second
        (1795823999.9996, "2026-11-28T00:00:00.000Z"),  # the next day
        (1798761599.9995, "2027-01-01T00:00:00.000Z"),  # the next year
        (-0.0004, "1970-01-01T00:00:00.000Z"),
        (-0.001, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_the_body_time_is_rounded_to_the_nearest_millisecond_across_boundaries(value, text):
    assert json.loads(event(id="e", timestamp=value).payload.for_webhook("w"))["timestamp"] == text


def test_events_within_one_second_keep_their_own_milliseconds():
    base = 1795797513
    for ms in [*range(1000), 999, 0, 500]:  # one second, then the same second again
        body = event(id="e", timestamp=base + ms / 1000).payload.for_webhook("w")
        assert json.loads(body)["timestamp"] == f"2026-11-27T16:38:33.{ms:03d}Z"


@pytest.mark.parametrize(
    "data",
    [
        {"s": 'quote " backslash \\ newline \n tab \t nul \x00 del \x7f', "u": "\u2028 🦆"},
        {"f": [0.1, 1e16, 1.5e-07, -0.0, 2.5, 1e300], "i": [0, -1, 2**64 - 1, -(2**63)]},
        {"nested": {"l": [[], {}, [None, True, False]], "e": ""}, "": {"k": [1, {"x": {}}]}},
    ],
)
def test_the_body_is_exactly_the_compact_json_of_the_event(data):
    ev = event(id="e1", company="c", project="p", data=data)
    doc = {"id": "e1", "type": "T", "timestamp": "2026-11-27T16:38:33.123Z"}
    doc |= {"company": "c", "project": "p", "data": data}
    expected = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert ev.payload.body + "}" == expected


def test_nil_timestamp_and_data_mean_absent():
    ev = event(timestamp=None, data=None)
    assert ev.timestamp == NOW
    assert ev.data == {}


# --------------------------------------------------------------------------- ids


def test_assigned_ids_sort_by_time():
    clock = FakeClock(1_000.0)
    first = new_id(clock)
    clock.now = 1_000.001
    second = new_id(clock)
    clock.now = 2_000_000_000.0
    third = new_id(clock)
    assert first < second < third


def test_ids_within_one_millisecond_are_strictly_increasing():
    clock = FakeClock(1_700_000_000.0)
    ids = [new_id(clock) for _ in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(i[:10] == ids[0][:10] for i in ids)  # same 48-bit time prefix


def test_ids_made_on_many_threads_are_unique():
    clock = FakeClock(1_700_000_100.0)
    made: list[list[str]] = [[] for _ in range(8)]

    def work(out: list[str]) -> None:
        out.extend(new_id(clock) for _ in range(500))

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    every = [i for out in made for i in out]
    assert len(set(every)) == 8 * 500
    assert all(out == sorted(out) for out in made)


def test_an_id_encodes_its_millisecond_in_the_first_ten_characters():
    clock = FakeClock(1_800_000_000.0)
    ident = new_id(clock)
    value = 0
    for ch in ident[:10]:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(ch)
    assert value == 1_800_000_000_000
