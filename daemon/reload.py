"""`spind reload`: SIGHUP the daemon and wait until its reload finished (for ExecReload).

systemd 252 has no `Type=notify-reload`, so an `ExecReload=/bin/kill -HUP` returns before the
reload is done. This waits: it reads how many spec loads the daemon finished (health's
`specsLoads`), sends SIGHUP, and polls until that number grows. Exit 0 when the new specs are
in force, 1 when they had errors (the daemon keeps the old ones and says why), 2 when the
daemon cannot be reached or did not finish in time.
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
        before = (await client.health()).specs_loads
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            health = await client.health()
            if health.specs_loads > before:
                if health.specs_ok:
                    print("reloaded: the new specs are in force")
                    return 0
                print("reload: spec errors, the old specs stay in force:", file=sys.stderr)
                for line in health.specs_errors:
                    print(f"  {line}", file=sys.stderr)
                return 1
    print(f"spind reload: no reload finished within {args.timeout:g}s", file=sys.stderr)
    return 2
