"""`spind reload`: SIGHUP the daemon and wait until its reload finished (for ExecReload).

systemd 252 has no `Type=notify-reload`, so an `ExecReload=/bin/kill -HUP` returns before the
reload is done. This waits: it reads how many spec loads the daemon finished (health's
`specsLoads`; every reload ends with one), sends SIGHUP, and polls until that number grows.
Exit 0 when the new config and specs are in force, 1 when either had errors (the daemon keeps
the old config or specs and says why: `configErrors`, `specsErrors`), 2 when the daemon cannot
be reached, did not finish in time, or shows only the short probe health (a TCP caller without
a token).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from daemon.cli_client import connection
from daemon.client import Client
from daemon.model import HealthView


def _pid_from_lock(journal: str) -> int | None:
    lock = Path(journal + ".lock")
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def reload(args: argparse.Namespace, journal: str) -> int:
    pid = args.pid or _pid_from_lock(journal)
    if not pid:
        print(f"spind reload: no --pid and no daemon pid in {journal}.lock", file=sys.stderr)
        return 2
    async with Client(**connection(args)) as client:
        first = await client.health()
        if not isinstance(first, HealthView):
            print(
                "spind reload: the daemon shows this caller only the probe health (no token): "
                "use --socket, or set $SPIND_TOKEN with $SPIND_URL",
                file=sys.stderr,
            )
            return 2
        before = first.specs_loads
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            health = await client.health()
            if isinstance(health, HealthView) and health.specs_loads > before:
                return _report(health)
    print(f"spind reload: no reload finished within {args.timeout:g}s", file=sys.stderr)
    return 2


def _report(health: HealthView) -> int:
    if health.config_ok and health.specs_ok:
        print("reloaded: the new config and specs are in force")
        return 0
    if not health.config_ok:
        print("reload: config errors, the old config stays in force:", file=sys.stderr)
        for line in health.config_errors:
            print(f"  {line}", file=sys.stderr)
    if not health.specs_ok:
        print("reload: spec errors, the old specs stay in force:", file=sys.stderr)
        for line in health.specs_errors:
            print(f"  {line}", file=sys.stderr)
    return 1
