#!/usr/bin/python3
"""A minimal Type=notify service (stdlib only) that proves the nspawn harness end to end.

It speaks the same protocol as spind: READY=1 after a slow start, RELOADING=1 + READY=1 on
SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 every WatchdogSec/2. Creating /run/notify-demo-hang
makes it stop pinging once (it deletes the file), so systemd's watchdog must restart it.
"""

import os
import signal
import socket
import sys
import time

HANG = "/run/notify-demo-hang"
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
reloads = 0


def notify(*lines: str) -> None:
    sock.sendto("\n".join(lines).encode(), addr)


def on_hup(signum: int, frame: object) -> None:
    global reloads
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
    time.sleep(0.3)  # reload work: `systemctl reload` must wait for READY=1
    reloads += 1
    notify("READY=1", f"STATUS=reloaded {reloads}")


def on_term(signum: int, frame: object) -> None:
    notify("STOPPING=1")
    time.sleep(0.2)
    sys.exit(0)


signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
time.sleep(1.0)  # start-up work: `systemctl start` must wait for READY=1
notify("READY=1", "STATUS=ready")
interval = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6 or 1.0
while True:
    if os.path.exists(HANG):
        os.unlink(HANG)
        while True:  # a hung daemon: no more pings
            time.sleep(3600)
    notify("WATCHDOG=1")
    time.sleep(interval)
