"""A real `spind serve` subprocess for the HTTP workloads, and its systemd notify socket.

The daemon runs with its journal, specs and log under one directory, listens on a free
loopback port (no Unix socket), and gets `NOTIFY_SOCKET` pointing at a datagram socket we own,
so that READY=1 is observed exactly as systemd would observe it.
"""

from __future__ import annotations

import compileall
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_compiled = False


def compile_daemon() -> None:
    """Byte-compile the daemon's sources once, as `pip install` does for an installed
    daemon: its start (resume-100k counts it) then reads .pyc files instead of compiling
    every module again (this machine sets PYTHONDONTWRITEBYTECODE, so nothing else writes
    them)."""
    global _compiled
    if not _compiled:
        compileall.compile_dir(REPO / "daemon", quiet=1)
        _compiled = True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """A bound AF_UNIX datagram socket: what the service manager listens on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, key: str, timeout: float) -> float:
        """perf_counter() when a message holding the line `key` arrived; TimeoutError if none."""
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no {key} from the daemon within {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            now = time.perf_counter()
            text = data.decode(errors="replace")
            self.messages.append((now, text))
            if key in text.splitlines():
                return now

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


class DaemonProc:
    """`python -m daemon serve` in `root`; `start()` returns once READY=1 arrived."""

    def __init__(
        self,
        root: Path,
        specs: Path,
        *,
        journal: Path | None = None,
        max_running_jobs: int = 256,
        synchronous: str = "NORMAL",
        log_level: str = "INFO",
    ) -> None:
        self.root = root
        self.specs = specs
        self.journal = journal or root / "spind.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_running_jobs = max_running_jobs
        self.synchronous = synchronous
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifySocket | None = None
        self.spawned_at = 0.0
        self.ready_at = 0.0

    def start(self, timeout: float = 120.0) -> DaemonProc:
        compile_daemon()
        self.notify = NotifySocket(self.root / "notify.sock")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SPIND_", "NOTIFY_", "WATCH"))
        }
        env.update(
            PYTHONPATH=str(REPO),
            NOTIFY_SOCKET=str(self.notify.path),
            SPIND_SPECS=str(self.specs),
            SPIND_JOURNAL=str(self.journal),
            SPIND_SOCKET="",
            SPIND_LISTEN=f"127.0.0.1:{self.port}",
            SPIND_LOG_LEVEL=self.log_level,
            SPIND_MAX_RUNNING_JOBS=str(self.max_running_jobs),
            SPIND_SYNCHRONOUS=self.synchronous,
            SPIND_SHUTDOWN_GRACE="2s",
            SPIND_EVENT_LOOP=os.environ.get("SPIND_BENCH_LOOP", "asyncio"),
        )
        with open(self.root / "daemon.log", "ab") as log:
            self.spawned_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "serve"],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.ready_at = self.notify.wait_for("READY=1", timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"daemon not READY; see {self.root / 'daemon.log'}") from None
        return self

    def peak_rss_mb(self) -> float:
        """The daemon's peak resident memory so far (VmHWM), in MB; 0 once it has exited."""
        if self.proc is None:
            return 0.0
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (SIGKILL if it does not stop in time); its exit code."""
        code = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        return code
