"""systemd/: the unit passes `systemd-analyze verify` and says what the daemon expects.

`systemd-analyze verify` refuses a unit whose ExecStart binary is missing. The unit names
/opt/spind/bin/spind (where the README installs the venv), which test machines do not have, so
the test verifies a copy whose ExecStart names an executable that exists here: the `spind`
console script of this checkout if installed, else /bin/true. Nothing else is changed.

Needs systemd's tools (no running systemd): `apt-get install -y --no-install-recommends systemd`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "spind.service"
SYSUSERS = ROOT / "systemd" / "spind.sysusers"
TMPFILES = ROOT / "systemd" / "spind.tmpfiles"
INSTALLED = "/opt/spind/bin/spind"
#: systemd's specifiers for the system manager's directories.
SPECIFIERS = {"%E": "/etc", "%S": "/var/lib", "%t": "/run"}

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing: apt-get install -y --no-install-recommends systemd",
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values is not None, f"{key}= missing from [{section}]"
    assert len(values) == 1, f"{key}= given {len(values)} times"
    return values[0]


def verifiable_copy(tmp_path: Path, text: str) -> Path:
    exe = shutil.which("spind") or "/bin/true"
    assert INSTALLED in text
    copy = tmp_path / "spind.service"
    copy.write_text(text.replace(INSTALLED, exe))
    return copy


def verify(path: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )
    # verify exits 0 even for unknown keys or bad values; it reports them on stderr.
    problems = [ln for ln in proc.stderr.splitlines() if path.name in ln or "Failed" in ln]
    return proc.returncode, problems


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    rc, problems = verify(verifiable_copy(tmp_path, UNIT.read_text()))
    assert rc == 0
    assert problems == []


@needs_analyze
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("LockPersonality=yes", "LockPersonalty=yes"), "Unknown key"),
        (("KillMode=mixed", "KillMode=gently"), "kill mode"),
    ],
)
def test_verify_catches_mistakes(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    """The check above can fail: a misspelt key or a bad value is reported."""
    text = UNIT.read_text()
    assert change[0] in text
    _, problems = verify(verifiable_copy(tmp_path, text.replace(change[0], change[1])))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", f"{INSTALLED} serve"),
        ("ExecReload", f"{INSTALLED} reload --pid $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
        ("RestartSec", "1"),
        ("WatchdogSec", "30"),
        ("User", "spind"),
        ("Group", "spind"),
        ("StateDirectory", "spind"),
        ("StateDirectoryMode", "0700"),
        ("RuntimeDirectory", "spind"),
        ("ConfigurationDirectory", "spind"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "read-only"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("OOMPolicy", "continue"),
    ],
)
def test_key_settings(unit: dict[str, dict[str, list[str]]], key: str, value: str) -> None:
    assert one(unit, "Service", key) == value


@pytest.mark.parametrize("key", ["PrivateNetwork", "MemoryDenyWriteExecute", "SystemCallFilter"])
def test_settings_that_would_break_jobs_are_absent(
    unit: dict[str, dict[str, list[str]]], key: str
) -> None:
    assert key not in unit["Service"]


def test_stop_timeout_exceeds_the_daemons_own_grace(unit: dict[str, dict[str, list[str]]]) -> None:
    timeout = float(one(unit, "Service", "TimeoutStopSec"))
    defaults = Config()
    assert timeout > defaults.shutdown_grace + defaults.job_stop_grace + 10


def test_install_and_ordering(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in one(unit, "Unit", "After")


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    env = {}
    for assignment in unit["Service"]["Environment"]:
        key, _, value = assignment.partition("=")
        for spec, path in SPECIFIERS.items():
            value = value.replace(spec, path)
        env[key] = value
    return env


def test_environment_points_into_the_service_directories(
    unit: dict[str, dict[str, list[str]]],
) -> None:
    env = unit_environment(unit)
    assert env["SPIND_CONFIG"] == "/etc/spind/spind.yaml"
    assert env["SPIND_JOURNAL"] == "/var/lib/spind/spind.db"
    assert env["SPIND_SOCKET"] == "/run/spind/spind.sock"
    assert env["SPIND_SPECS"] == "/etc/spind/specs"


def test_the_daemon_reads_the_unit_environment_as_intended(
    unit: dict[str, dict[str, list[str]]], tmp_path: Path
) -> None:
    """What systemd hands the daemon (directories + Environment=) yields the unit's paths."""
    env = unit_environment(unit)
    config = tmp_path / "spind.yaml"
    config.write_text("")  # as spind.tmpfiles creates it
    env["SPIND_CONFIG"] = str(config)
    env.update(
        STATE_DIRECTORY="/var/lib/spind",
        RUNTIME_DIRECTORY="/run/spind",
        CONFIGURATION_DIRECTORY="/etc/spind",
    )
    cfg, used = load_config(env=env)
    assert used == str(config)
    assert (cfg.journal, cfg.socket, cfg.specs) == (
        "/var/lib/spind/spind.db",
        "/run/spind/spind.sock",
        "/etc/spind/specs",
    )


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers/systemd-tmpfiles missing: apt-get install -y systemd",
)
def test_sysusers_and_tmpfiles_create_the_user_and_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (root / "etc" / "passwd").read_text()
    assert re.search(r"^spind:x:\d+:\d+:spind job-chain daemon:/var/lib/spind:", passwd, re.M)
    assert re.search(r"^spind:x:\d+:", (root / "etc" / "group").read_text(), re.M)
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create", str(TMPFILES)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = root / "etc" / "spind" / "spind.yaml"
    assert (root / "etc" / "spind" / "specs").is_dir()
    assert config.read_text() == ""
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o640
    cfg, _ = load_config(str(config), env={})
    assert cfg == Config()
