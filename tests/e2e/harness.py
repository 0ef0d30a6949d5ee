"""A real spind daemon as a subprocess, driven over its real Unix socket.

`Daemon(tmp_path, specs={...})` writes the spec files, starts `python -m daemon serve` with
its journal, socket and specs under tmp_path, and waits until the API answers. Helpers send
real signals (SIGTERM, SIGKILL, SIGHUP) and read the journal file directly with sqlite3.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import leftovers

REPO = Path(__file__).resolve().parents[2]
FINAL = ("COMPLETE", "FAIL", "STOPPED")


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, headers (names lower-cased) and the raw body."""

    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def eventually(fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `fn` until it returns something truthy; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s; last value: {last!r}")


class Daemon:
    def __init__(
        self,
        root: Path,
        specs: dict[str, str] | None = None,
        *,
        env: dict[str, str] | None = None,
        config: str | None = None,
        port: int | None = None,
    ) -> None:
        self.root = root
        self.port = port  # also listen on 127.0.0.1:port (TCP) when set
        self.specs_dir = root / "specs"
        self.specs_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (specs or {}).items():
            (self.specs_dir / name).write_text(text)
        self.journal = root / "var" / "spind.db"
        self.socket = root / "var" / "spind.sock"
        self.log_path = root / "daemon.log"
        self.config = None
        if config is not None:
            self.config = root / "spind.yaml"
            self.config.write_text(config)
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ---- process

    def start(self, wait: bool = True) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPIND_", "NOTIFY_"))}
        env.update(
            SPIND_SPECS=str(self.specs_dir),
            SPIND_JOURNAL=str(self.journal),
            SPIND_SOCKET=str(self.socket),
            SPIND_LISTEN="",
            SPIND_LOG_LEVEL="DEBUG",
            PYTHONPATH=str(REPO),
        )
        if self.port is not None:
            env["SPIND_LISTEN"] = f"127.0.0.1:{self.port}"
        env.update(self.extra_env)
        args = [sys.executable, "-m", "daemon", "serve"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"---- start {self.starts + 1}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.call("GET", "/api/v1/version")
            except OSError:
                return False
            return status == 200

        eventually(ready, timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait_exit()

    def terminate(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Kill the daemon (SIGKILL) if it runs, then the job processes it left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.kill_jobs()

    def kill_jobs(self) -> list[int]:
        """SIGKILL the process groups of job processes of this journal, i.e. what a killed
        daemon leaves running (a `sleep 30` would outlive the test by 30 s: the daemon
        only stops orphans at its next start, which a finished test never makes). Returns
        the groups signalled."""
        journal = os.path.realpath(self.journal)
        own = os.getpgrp()
        groups = sorted(
            {
                p.pgid
                for p in leftovers.scan()
                if p.marker is not None and p.marker.journal == journal and p.pgid != own
            }
        )
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        return groups

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- API

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = _UnixHTTP(str(self.socket))
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        tcp: bool = False,
        timeout: float = 30.0,
    ) -> Reply:
        """One call over the socket (or TCP with `tcp=True`); `raw` is sent as is."""
        if tcp:
            assert self.port is not None, "start the daemon with port= to call it over TCP"
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=timeout
            )
        else:
            conn = _UnixHTTP(str(self.socket), timeout=timeout)
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def start_request(self, type: str, **args: Any) -> str:
        status, body = self.call("POST", "/api/v1/requests", {"type": type, "args": args})
        assert status == 201, (status, body)
        return str(body["id"])

    def request(self, rid: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/api/v1/requests/{rid}")
        assert status == 200, (status, body)
        return dict(body)

    def state(self, rid: str) -> str:
        return str(self.request(rid)["state"])

    def wait_state(self, rid: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        want = states or FINAL
        return dict(eventually(lambda: (r := self.request(rid))["state"] in want and r, timeout))

    def log_rows(self, rid: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/v1/requests/{rid}/log")
        assert status == 200, (status, body)
        return list(body)

    def put(self, rid: str, action: str, body: Any = None) -> tuple[int, Any]:
        return self.call("PUT", f"/api/v1/requests/{rid}/{action}", body)

    # ---- journal, read directly

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn


def no_500(d: Daemon) -> None:
    """No call answered with a 5xx other than 503, and no unexpected error was logged."""
    log = d.log()
    assert "unexpected error" not in log, log[-4000:]
    access = re.findall(r"http_access\] (\S+ \S+) (\d{3}) ", log)
    assert access
    assert [a for a in access if a[1].startswith("5") and a[1] != "503"] == []


@contextlib.contextmanager
def serving(daemon: Daemon) -> Iterator[Daemon]:
    """Start `daemon` for a module's tests; at the end check that no call got a 5xx, then
    stop it."""
    daemon.start()
    try:
        yield daemon
        no_500(daemon)
    finally:
        daemon.close()


def ledger_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
