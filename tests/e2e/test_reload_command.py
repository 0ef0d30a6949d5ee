"""`spind reload` sends SIGHUP and returns only when the reload is done (systemd's ExecReload)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO, Daemon

NOOP = "    request: true\n    nodes:\n      n: {category: job, type: noop}\n"
SPECS = {"a.yaml": "sequences:\n  one:\n" + NOOP}


def reload(d: Daemon, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "reload",
            "--journal",
            str(d.journal),
            "--socket",
            str(d.socket),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def types(d: Daemon) -> list[str]:
    return [t["name"] for t in d.call("GET", "/api/v1/request-list")[1]]


def test_reload_waits_and_reports(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS).start()
    try:
        (d.specs_dir / "b.yaml").write_text("sequences:\n  two:\n" + NOOP)
        res = reload(d)
        assert res.returncode == 0, res.stderr
        assert "two" in types(d)  # in force as soon as the command returned
        (d.specs_dir / "b.yaml").write_text("sequences:\n  two: {nodes: {n: {category: bad}}}\n")
        res = reload(d)
        assert res.returncode == 1
        assert "b.yaml" in res.stderr and "old specs stay" in res.stderr
        assert "two" in types(d)
        assert d.proc is not None
        res = reload(d, "--pid", str(d.proc.pid))
        assert res.returncode == 1
    finally:
        d.close()


def test_reload_without_a_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path, SPECS)
    res = reload(d)
    assert res.returncode == 2 and "pid" in res.stderr
