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


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        # Without systemd on the machine, the parser checks above are what we have.
        assert _unit().has_section("Install")
        return
    # verify insists the executables exist: point them at this interpreter.
    text = UNIT.read_text().replace("/usr/local/bin/webhook-router", sys.executable)
    unit = tmp_path / "webhook-router.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if "webhook-router.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr
