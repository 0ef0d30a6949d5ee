"""spind under a real systemd, in a systemd-nspawn container (tests/e2e/nspawn/run_e2e.sh).

Needs root, systemd-nspawn and debootstrap (installed with apt-get if missing). The container
tree is built once (about a minute, cached in /var/tmp/spind-nsroot); then `harness` takes about
10 s and `spind` about a minute (it builds a wheel). Deselect with `-m "not nspawn"`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "nspawn"
SCRIPT_TIMEOUT = 540

pytestmark = [pytest.mark.nspawn, pytest.mark.slow, pytest.mark.timeout(SCRIPT_TIMEOUT + 60)]


def _tools_present() -> bool:
    return all(shutil.which(t) for t in ("systemd-nspawn", "debootstrap", "nsenter"))


@pytest.fixture(scope="module")
def nsroot() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-nspawn boots a container")
    if not _tools_present() and shutil.which("apt-get") is None:
        pytest.skip(
            "systemd-nspawn/debootstrap are missing and apt-get is not there to install them"
        )
    proc = subprocess.run(
        [str(HERE / "build_root.sh")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 and not _tools_present():
        pytest.skip(f"systemd-nspawn/debootstrap could not be installed:\n{proc.stderr[-2000:]}")
    assert proc.returncode == 0, f"build_root.sh failed:\n{proc.stderr[-4000:]}"
    yield proc.stdout.strip().splitlines()[-1]


def _kill_leftovers(name: str) -> None:
    """After a timeout: nothing of the container may survive the test."""
    for base in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        cg = Path(base) / f"nspawn-{name}"
        if not cg.is_dir():
            continue
        for procs in cg.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def run_scenario(scenario: str, nsroot: str) -> str:
    name = f"spind-pytest-{scenario}-{os.getpid()}"
    env = {**os.environ, "SPIND_NSROOT": nsroot, "SPIND_E2E_NAME": name}
    proc = subprocess.Popen(
        [str(HERE / "run_e2e.sh"), scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap halts the container
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        _kill_leftovers(name)
        pytest.fail(f"run_e2e.sh {scenario} timed out:\n{out[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"run_e2e.sh {scenario} failed:\n{out[-6000:]}"
    return out


def test_harness_with_a_minimal_notify_service(nsroot: str) -> None:
    out = run_scenario("harness", nsroot)
    assert "PASS: harness" in out
    for check in ("restarted once", "reload: READY=1 again", "watchdog", "stop: Result"):
        assert check in out, out


def test_spind_under_systemd(nsroot: str) -> None:
    out = run_scenario("spind", nsroot)
    assert "PASS: spind" in out
    for check in (
        "active as soon as start returns",
        "restarted once after kill -9",
        "COMPLETE tries per job (a 1 b 1 c 1 )",
        "old specs still serve",
        "stop: nothing needed SIGKILL",
        "SUSPENDED",
        "resumed and COMPLETE",
    ):
        assert check in out, out
