"""Leaf checks on one config value; the forms a user may write and the messages for the rest."""

from __future__ import annotations

import pytest

from router.validators import credential_name, credential_secrets, parse_duration, parse_size

# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(("value", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0),
    ("1.5s", 1.5), ("30", 30.0), (" 10 s ", 10.0), (12, 12.0), (0.25, 0.25), (0, 0.0),
])  # fmt: skip
def test_durations_accept_every_documented_form(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["10x", "s", "", "-5s", -1, True, None, "1e3", float("inf")])
def test_bad_durations_raise_value_error_with_the_forms_to_use(value):
    with pytest.raises(ValueError, match=r"invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(("value", "size"), [
    ("512KiB", 512 * 1024), ("1MiB", 2**20), ("1GiB", 2**30), ("2KB", 2000), ("3MB", 3 * 10**6),
    ("1GB", 10**9), ("100B", 100), ("4096", 4096), (1024, 1024), ("1.5KiB", 1536), ("1mib", 2**20),
])  # fmt: skip
def test_sizes_accept_binary_and_decimal_units_or_bytes(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["1TiB", "MiB", "", "-1", -1, True, None, 1.5])
def test_bad_sizes_raise_value_error_with_the_forms_to_use(value):
    with pytest.raises(ValueError, match=r"invalid size .*KiB, MiB or GiB"):
        parse_size(value)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("value", ["crm", "crm.secret", "webhook-router_crm"])
def test_a_credential_name_is_one_file_name(value):
    assert credential_name(value) == value


@pytest.mark.parametrize("value", ["a/b", "..", ".", "", "x" * 256, 7])
def test_a_credential_name_with_a_directory_or_none_at_all_is_refused(value):
    with pytest.raises(ValueError):
        credential_name(value)


def test_a_credential_is_read_from_the_directory_the_environment_names(tmp_path):
    (tmp_path / "crm").write_text("new-secret old-secret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert credential_secrets("crm", env) == (b"new-secret", b"old-secret")
    with pytest.raises(ValueError, match=r"no file .*/other; is LoadCredential=other:/PATH"):
        credential_secrets("other", env)
    with pytest.raises(ValueError, match=r"CREDENTIALS_DIRECTORY is not set"):
        credential_secrets("crm", {})
