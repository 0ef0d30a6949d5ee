"""daemon.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from daemon.sdnotify import Notifier, watchdog_loop


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message}")
    yield lines
    logger.remove(handler)


def test_messages_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="serving")
    assert received(sock) == "READY=1\nSTATUS=serving"
    assert n.ready()
    assert received(sock) == "READY=1"
    assert n.status("3 chains\nrunning")
    assert received(sock) == "STATUS=3 chains running"
    assert n.stopping()
    assert received(sock) == "STOPPING=1"
    assert n.watchdog()
    assert received(sock) == "WATCHDOG=1"
    assert n.send(errno=5, status="x")
    assert received(sock) == "ERRNO=5\nSTATUS=x"
    assert n.send_raw("EXTEND_TIMEOUT_USEC=1000000")
    assert received(sock) == "EXTEND_TIMEOUT_USEC=1000000"
    n.close()


def test_reloading_carries_the_monotonic_clock(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = received(sock).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    n.close()


def test_abstract_socket_name() -> None:
    name = f"spind-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert received(sock) == "READY=1"
        n.close()
    finally:
        sock.close()


@pytest.mark.parametrize("value", ["", "relative/path", "@"])
def test_disabled_without_a_usable_socket(value: str) -> None:
    n = Notifier({"NOTIFY_SOCKET": value} if value else {})
    assert not n.enabled
    assert not n.ready()
    assert n.watchdog_interval() is None


def test_send_failure_never_raises_and_logs_once(tmp_path: Path, log_lines: list[str]) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert not n.status("x")
    failures = [line for line in log_lines if "sd_notify" in line]
    assert len(failures) == 1
    n.close()


def test_full_socket_buffer_does_not_block(
    listener: tuple[socket.socket, str], log_lines: list[str]
) -> None:
    _, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    results = [n.status("x" * 1000) for _ in range(2000)]  # nobody reads: the queue fills
    assert results[0] is True
    assert results[-1] is False
    assert sum("sd_notify" in line for line in log_lines) == 1
    n.close()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert n.watchdog_interval() == interval


def test_watchdog_interval_needs_a_notify_socket() -> None:
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() is None


def test_unset_env_removes_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier(unset_env=True)
    assert n.enabled
    assert n.watchdog_interval() == 2.0
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert key not in os.environ


async def test_watchdog_loop_pings_only_while_healthy(
    listener: tuple[socket.socket, str], log_lines: list[str]
) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    answers = [True, True, False, False, True, "boom", True]
    calls = 0

    def health() -> bool:
        nonlocal calls
        answer = answers[calls]
        calls += 1
        if calls == len(answers):
            task.cancel()
        if answer == "boom":
            raise RuntimeError("health check broke")
        return bool(answer)

    task = asyncio.create_task(watchdog_loop(n, 0.001, health))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert drain(sock) == ["WATCHDOG=1"] * 4
    text = "\n".join(log_lines)
    assert text.count("watchdog pings stop") == 2
    assert text.count("watchdog pings resume") == 2
    assert "health check raised" in text
    n.close()


async def test_blocked_loop_sends_no_pings(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    task = asyncio.create_task(watchdog_loop(n, 0.01, lambda: True))
    await asyncio.sleep(0)  # the first ping
    assert drain(sock) == ["WATCHDOG=1"]
    time.sleep(0.1)  # the loop is blocked: no ping can be sent meanwhile
    assert drain(sock) == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    n.close()


async def test_watchdog_loop_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        await watchdog_loop(Notifier({}), 0, lambda: True)
