"""`make install` staged into a DESTDIR, as a package build does it, then checked where it goes.

The staged tree is put at its final place in a private mount namespace (``unshare``, as
root): PREFIX's parent is a fresh tmpfs there with DESTDIR's PREFIX bound onto PREFIX, so
``systemd-analyze verify`` checks the installed unit against the commands really installed
and the venv runs at PREFIX, while nothing changes outside the namespace.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

import router

REPO = Path(__file__).parent.parent
PREFIX = "/opt/webhook-router"
COMMAND = f"{PREFIX}/bin/webhook-router"
CONF = "etc/webhook-router"
UNIT = "etc/systemd/system/webhook-router.service"


def _run(*argv: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=lambda: os.umask(umask), check=False
    )


def _make(target: str, destdir: Path, umask: int = 0o022) -> None:
    proc = _run("make", "-C", str(REPO), target, f"DESTDIR={destdir}", f"PREFIX={PREFIX}",
                umask=umask)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _in_place(destdir: Path, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` run where DESTDIR's PREFIX is mounted at PREFIX, as once the package is unpacked."""
    script = 'mount -t tmpfs tmpfs "$1" && mkdir "$2" && mount --bind "$3" "$2" && shift 3 && "$@"'
    return _run("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                os.path.dirname(PREFIX), PREFIX, f"{destdir}{PREFIX}", *argv)  # fmt: skip


def _verify(destdir: Path, unit: Path) -> subprocess.CompletedProcess:
    return _in_place(destdir, "/usr/bin/systemd-analyze", "verify", str(unit))


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    subprocess.run(["sh", str(REPO / ".ci" / "install_debian.sh")], check=True)
    destdir = tmp_path_factory.mktemp("destdir")
    _make("install", destdir)
    return destdir


def _service(unit: Path) -> dict[str, str]:
    lines = unit.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line[:1].isalpha() and "=" in line)


def test_the_installed_unit_names_the_commands_at_prefix_and_they_are_installed(staged):
    service = _service(staged / UNIT)
    assert service["ExecStartPre"] == f"{COMMAND} check -c /etc/webhook-router/router.yaml"
    assert service["ExecStart"] == f"{COMMAND} run -c /etc/webhook-router/router.yaml"
    assert str(staged) not in (staged / UNIT).read_text()
    assert os.access(f"{staged}{COMMAND}", os.X_OK)


def test_the_installed_unit_passes_systemd_analyze_verify_in_place(staged):
    proc = _verify(staged, staged / UNIT)
    problems = [line for line in proc.stderr.splitlines() if "webhook-router.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_verify_in_place_fails_when_execstart_names_a_command_not_installed(staged, tmp_path):
    # The check above would catch a unit pointing where nothing was installed.
    unit = tmp_path / "webhook-router.service"
    unit.write_text((staged / UNIT).read_text().replace(COMMAND, f"{PREFIX}/bin/webhook-routerd"))
    proc = _verify(staged, unit)
    assert proc.returncode != 0
    assert f"Command {PREFIX}/bin/webhook-routerd is not executable" in proc.stderr


def test_the_staged_venv_runs_both_in_destdir_and_at_prefix(staged):
    version = f"webhook-router {router.__version__}"
    proc = _run(f"{staged}{COMMAND}", "--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, version), proc.stderr
    proc = _in_place(staged, COMMAND, "--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, version), proc.stderr
    # The package itself is in the venv (not an editable link to this checkout).
    where = _in_place(
        staged, f"{PREFIX}/bin/python", "-I", "-c", "import router; print(router.__file__)"
    )
    assert where.stdout.startswith(f"{PREFIX}/lib/"), where.stdout + where.stderr
    # With PostgreSQL's driver: the same install runs a daemon of a cluster (SPEC §8).
    pg = _in_place(staged, f"{PREFIX}/bin/python", "-I", "-c", "import psycopg, router.pgstore")
    assert pg.returncode == 0, pg.stderr
    for path in [Path(f"{staged}{PREFIX}/pyvenv.cfg"), *Path(f"{staged}{PREFIX}/bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            assert str(staged) not in path.read_text(errors="replace"), path


def test_the_installed_config_is_the_example_set_for_production(staged):
    config = staged / CONF / "router.yaml"
    assert yaml.safe_load(config.read_text())["state_dir"] == "/var/lib/webhook-router"
    proc = _run(f"{staged}{COMMAND}", "check", "-c", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The demo API token is published in the README: the installed tokens file has none.
    assert yaml.safe_load((REPO / "conf" / "tokens.yaml").read_text())[0]["name"] == "demo"
    assert yaml.safe_load((staged / CONF / "tokens.yaml").read_text()) is None


def _unreadable(root: Path) -> list[str]:
    """What a DynamicUser could not read (or enter) under ``root``."""
    bad = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if not stat.S_ISLNK(mode) and mode & need != need:
            bad.append(f"{path} {stat.filemode(mode)}")
    return bad


def test_install_keeps_an_operators_config_is_readable_by_the_service_and_uninstall_keeps_it(
    tmp_path,
):
    subprocess.run(["sh", str(REPO / ".ci" / "install_debian.sh")], check=True)
    conf = tmp_path / CONF
    conf.mkdir(parents=True)
    ours = {"router.yaml": "state_dir: /srv/router\nwebhooks: []\n", "tokens.yaml": "[]\n"}
    for name, text in ours.items():
        (conf / name).write_text(text)
    _make("install", tmp_path, umask=0o077)  # a root with a strict umask
    assert {name: (conf / name).read_text() for name in ours} == ours
    assert _unreadable(Path(f"{tmp_path}{PREFIX}")) == []
    assert _unreadable(tmp_path / UNIT) == []

    _make("uninstall", tmp_path)
    assert not Path(f"{tmp_path}{PREFIX}").exists()
    assert not (tmp_path / UNIT).exists()
    assert {name: (conf / name).read_text() for name in ours} == ours
