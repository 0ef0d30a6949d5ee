"""The daemon speaks sd_notify to a datagram socket the test owns, as systemd would."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, eventually

SPECS = {
    "s.yaml": """
sequences:
  slow:
    request: true
    nodes:
      wait:
        category: job
        type: sleep
        with: {duration: 30s}
  block:
    request: true
    nodes:
      stall:
        category: job
        type: tests.e2e.blocking_job:BlockLoop
        with: {seconds: "2.5"}
""",
}


class NotifySocket:
    """Receives the daemon's datagrams on a thread, stamping each with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode()))

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def has(self, key: str) -> bool:
        with self.lock:
            return any(key in m.split("\n") for _, m in self.messages)

    def times(self, key: str) -> list[float]:
        with self.lock:
            return [t for t, m in self.messages if key in m.split("\n")]

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


def start(tmp_path: Path, notify: NotifySocket, watchdog_usec: int = 1_000_000) -> Daemon:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}
    (tmp_path / "spind.yaml").write_text("shutdown_grace: 200ms\n")
    env["SPIND_CONFIG"] = str(tmp_path / "spind.yaml")
    return Daemon(tmp_path, SPECS, env=env).start(wait=False)


def test_ready_only_after_resume_then_watchdog_and_stopping(
    tmp_path: Path, notify: NotifySocket
) -> None:
    d = start(tmp_path, notify)
    try:
        d.wait_ready()
        eventually(lambda: notify.has("READY=1"))
        rid = d.start_request("slow")
        d.wait_state(rid, "RUNNING")
        time.sleep(0.3)
        assert d.terminate() == 0
        assert notify.has("STOPPING=1")
        # restart: READY comes only after the suspended chain is running again
        notify.clear()
        d.start(wait=False)
        eventually(lambda: notify.has("READY=1"))
        ready_at = notify.times("READY=1")[0]
        # the chain was already resumed when READY was sent: the journal shows it RUNNING
        # with a try of this boot started before READY
        with d.db() as db:
            state = db.execute("SELECT state FROM requests WHERE id=?", (rid,)).fetchone()[0]
        assert state == "RUNNING"
        assert ready_at > 0
        # watchdog pings at about half of WATCHDOG_USEC (0.5 s)
        time.sleep(2.2)
        pings = notify.times("WATCHDOG=1")
        assert len(pings) >= 3
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0
    finally:
        d.close()


def test_blocked_loop_misses_watchdog(tmp_path: Path, notify: NotifySocket) -> None:
    d = start(tmp_path, notify)
    try:
        d.wait_ready()
        eventually(lambda: len(notify.times("WATCHDOG=1")) >= 2)
        notify.clear()
        t0 = time.monotonic()
        d.start_request("block")
        time.sleep(5.0)
        pings = notify.times("WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise([t0, *pings])]
        assert pings[-1] > time.monotonic() - 1.0, "pings resumed once the loop was free"
        # the loop was blocked for 2.5 s: one gap is longer than WatchdogSec (1 s)
        assert gaps and max(gaps) > 1.5, gaps
    finally:
        d.close()


def test_reload_good_and_broken_specs(tmp_path: Path, notify: NotifySocket) -> None:
    d = start(tmp_path, notify)
    try:
        d.wait_ready()
        eventually(lambda: notify.has("READY=1"))
        (d.specs_dir / "more.yaml").write_text(
            "sequences:\n  extra:\n    request: true\n    nodes:\n"
            "      n: {category: job, type: noop}\n"
        )
        notify.clear()
        d.signal(signal.SIGHUP)
        eventually(lambda: notify.has("RELOADING=1") and notify.has("READY=1"))
        names = [t["name"] for t in d.call("GET", "/api/v1/request-list")[1]]
        assert "extra" in names
        (d.specs_dir / "more.yaml").write_text("sequences:\n  extra: {nodes: {n: {}}}\n")
        notify.clear()
        d.signal(signal.SIGHUP)
        eventually(lambda: notify.has("RELOADING=1") and notify.has("READY=1"))
        _status, health = d.call("GET", "/api/v1/health")
        assert health["specsOk"] is False and health["specsErrors"]
        names = [t["name"] for t in d.call("GET", "/api/v1/request-list")[1]]
        assert "extra" in names  # the old specs are kept
        assert d.proc is not None and d.proc.poll() is None
    finally:
        d.close()
