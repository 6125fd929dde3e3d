"""The unit file parses and asks for what a production daemon needs."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).parent.parent / "systemd" / "webhook-router.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_unit_is_notify_with_reload_restart_and_state_directory():
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "webhook-router"
    assert "webhook-router run -c /etc/webhook-router/router.yaml" in service["ExecStart"]


def test_unit_is_hardened():
    service = _unit()["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "DynamicUser": "yes",
    }.items():
        assert service[key] == value, key


def _verify(tmp_path: Path, text: str) -> None:
    """``systemd-analyze verify`` finds nothing wrong with the unit ``text``."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: install Debian's systemd package"
    # verify insists the executables exist: point them at this interpreter.
    text = text.replace("/opt/webhook-router/bin/webhook-router", sys.executable)
    unit = tmp_path / "webhook-router.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if "webhook-router.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_unit_passes_systemd_analyze_verify(tmp_path):
    _verify(tmp_path, UNIT.read_text())


def test_the_units_credential_example_is_valid_once_uncommented(tmp_path):
    # The README tells operators to uncomment this line (one per secret_credential).
    example = "#LoadCredential=crm:/etc/webhook-router/credentials/crm\n"
    text = UNIT.read_text()
    assert example in text
    _verify(tmp_path, text.replace(example, example[1:]))


def test_unit_says_secret_env_rotates_only_on_restart_and_refreshes_no_credential_by_default():
    text = UNIT.read_text()
    assert "rotating it takes `systemctl restart`" in text
    # RefreshOnReload= exists from systemd v260 on; older versions warn about the key.
    assert "#RefreshOnReload=credentials" in text
    assert "RefreshOnReload" not in _unit()["Service"]
