"""systemd's notify protocol without libsystemd: one datagram per message to `$NOTIFY_SOCKET`.

A message is newline-separated `KEY=value` lines (`READY=1`, `STATUS=...`, `WATCHDOG=1`).
Sending never blocks and never raises: when systemd is not listening (or not there at all)
the daemon runs on, and the first failure is logged once. The watchdog is pinged from the event
loop itself (:func:`watchdog_loop`), so a loop blocked for longer than `WatchdogSec=` misses its
pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

from loguru import logger

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | bytes | None:
    """`/run/systemd/notify` stays a path; `@name` is Linux's abstract namespace (leading NUL)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


class Notifier:
    """Talks to the service manager named by `$NOTIFY_SOCKET` (disabled when unset).

    With `unset_env=True` (and `env` left to `os.environ`) the three notify variables are removed
    from `os.environ` once read, so that the jobs spind starts do not inherit them (as
    `sd_notify(unset_environment)` does).
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, unset_env: bool = False) -> None:
        source = os.environ if env is None else env
        raw = source.get("NOTIFY_SOCKET", "")
        self._addr = _address(raw)
        self._watchdog_usec = source.get("WATCHDOG_USEC", "")
        self._watchdog_pid = source.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self._failed = False
        if raw and self._addr is None:
            logger.warning("NOTIFY_SOCKET={!r} is not a socket path or @name; ignoring it", raw)
        if unset_env and env is None:
            for key in _ENV_KEYS:
                os.environ.pop(key, None)

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send_raw(self, text: str) -> bool:
        """Send one message as given; True if the datagram left. Never raises."""
        if self._addr is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode("utf-8", "replace"), self._addr)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("sd_notify to {} failed: {} (logged once)", self._addr, exc)
            return False
        return True

    def send(self, **fields: object) -> bool:
        """`send(READY=1, STATUS="x")`; names are upper-cased, newlines in values flattened."""
        lines = [
            f"{key.upper()}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()
        ]
        return self.send_raw("\n".join(lines))

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is finished: systemd now reports the service active."""
        return self.send(READY=1, **({"STATUS": status} if status is not None else {}))

    def reloading(self) -> bool:
        """A reload began; answer with `ready()` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status is not None else {}))

    def status(self, text: str) -> bool:
        """Free text shown by `systemctl status`."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of `WatchdogSec=`, or None when no watchdog is for us."""
        if self._addr is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 2 / 1e6 if usec > 0 else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def watchdog_loop(notifier: Notifier, interval: float, health: Callable[[], bool]) -> None:
    """Ping `WATCHDOG=1` every `interval` seconds while `health()` is true; runs until cancelled.

    An unhealthy daemon stops pinging, so systemd's watchdog restarts it after `WatchdogSec=`.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval}")
    healthy = True
    while True:
        try:
            ok = bool(health())
        except Exception:
            logger.opt(exception=True).error("health check raised; treating as unhealthy")
            ok = False
        if ok:
            notifier.watchdog()
            if not healthy:
                logger.bind(action="watchdog_resumed").info("healthy again; watchdog pings resume")
        elif healthy:
            logger.bind(action="watchdog_paused").error(
                "unhealthy: watchdog pings stop (systemd restarts spind if this lasts)"
            )
        healthy = ok
        await asyncio.sleep(interval)
