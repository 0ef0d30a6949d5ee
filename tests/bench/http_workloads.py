"""The workloads that go through a real daemon subprocess over HTTP on loopback.

- requests-1000x10: clients each POST a 10-job request (`line-10`) and follow its event stream
  until `end`, then start the next; p50/p99 are POST-to-end latencies of requests.
- api-read: while a fanout-10000 runs, clients GET /api/v1/requests/{id} (ids of small
  finished requests) and /api/v1/status/running in turn; p50/p99 are read latencies.
- resume-100k: a journal with many interrupted chains (made by a daemon killed with SIGKILL),
  then a fresh daemon: time from spawn to READY=1 on our notify socket, and to the moment
  every chain has a try running again (from the journal's own rows).

The client runs in the benchmark process (one asyncio loop, aiohttp), the daemon in its own;
both share the machine's cores. Peak RSS is the daemon's (RUSAGE_CHILDREN after it exits).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.daemon_proc import DaemonProc
from tests.bench.harness import percentile
from tests.bench.specs import items, write_specs

Result = dict[str, Any]
API = "/api/v1"


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> str:
    async with session.post(f"{url}{API}/requests", json=body) as resp:
        data = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"POST /requests: {resp.status} {data}")
        return str(data["id"])


async def _follow(session: aiohttp.ClientSession, url: str, rid: str) -> str:
    """Read the request's event stream until `end`; the final state."""
    async with session.get(f"{url}{API}/requests/{rid}/events") as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET events: {resp.status}")
        ended = False
        async for line in resp.content:
            if line.startswith(b"event: end"):
                ended = True
            elif ended and line.startswith(b"data:"):
                return str(_json(line[5:]).get("state", ""))
    raise RuntimeError(f"event stream of {rid} closed before its end")


def _json(raw: bytes) -> dict[str, Any]:
    import msgspec

    value = msgspec.json.decode(raw)
    return value if isinstance(value, dict) else {}


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status}")
        return await resp.json()


async def requests(root: Path, n: int, clients: int = 32) -> Result:
    """n requests of `line-10`, `clients` at a time, each followed to its end."""
    d = DaemonProc(root, write_specs(root / "specs")).start()
    try:
        latencies: list[float] = []
        todo = iter(range(n))
        failed: list[str] = []

        async def client(session: aiohttp.ClientSession) -> None:
            for _ in todo:
                t = time.perf_counter()
                rid = await _post(session, d.url, {"type": "line-10", "args": {}})
                state = await _follow(session, d.url, rid)
                latencies.append((time.perf_counter() - t) * 1000.0)
                if state != "COMPLETE":
                    failed.append(f"{rid} {state}")

        conn = aiohttp.TCPConnector(limit=clients * 2)
        async with aiohttp.ClientSession(connector=conn) as session:
            t0 = time.perf_counter()
            await asyncio.gather(*(client(session) for _ in range(clients)))
            wall = time.perf_counter() - t0
        if failed:
            raise RuntimeError(f"{len(failed)} requests did not complete: {failed[:3]}")
        peak = d.peak_rss_mb()
    finally:
        d.stop()
    jobs = n * 10
    return {
        "n": jobs,
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "requests_per_s": n / wall,
        "peak_rss_mb": peak,
    }


async def api_read(root: Path, fan: int, clients: int = 64, small: int = 100) -> Result:
    """Reads under `clients` concurrent clients while a fanout of `fan` jobs runs."""
    d = DaemonProc(root, write_specs(root / "specs")).start()
    try:
        conn = aiohttp.TCPConnector(limit=clients * 2)
        async with aiohttp.ClientSession(connector=conn) as session:
            ids = await asyncio.gather(
                *(_post(session, d.url, {"type": "line-10", "args": {}}) for _ in range(small))
            )
            for rid in ids:  # wait until they are all finished: reads then see stable data
                await _follow(session, d.url, rid)
            body = {"type": "fanout", "args": {"items": items(fan)}}
            t_fan = time.perf_counter()
            fan_id = await _post(session, d.url, body)
            done = asyncio.Event()
            latencies: list[float] = []
            paths = [f"{API}/requests/{rid}" for rid in ids] + [f"{API}/status/running"]

            async def reader(k: int) -> None:
                i = k
                while not done.is_set():
                    # every other read is /status/running, the rest cycle through the requests
                    path = paths[-1] if i % 2 else paths[(i // 2) % small]
                    t = time.perf_counter()
                    await _get_json(session, d.url + path)
                    latencies.append((time.perf_counter() - t) * 1000.0)
                    i += 1

            async def watcher() -> str:
                state = ""
                while state not in ("COMPLETE", "FAIL", "STOPPED"):
                    await asyncio.sleep(0.05)
                    found = await _get_json(session, f"{d.url}{API}/requests?type=fanout&limit=1")
                    state = found[0]["state"] if found else ""
                done.set()
                return state

            t0 = time.perf_counter()
            results = await asyncio.gather(watcher(), *(reader(k) for k in range(clients)))
            wall = time.perf_counter() - t0
            fan_wall = time.perf_counter() - t_fan
            if results[0] != "COMPLETE":
                raise RuntimeError(f"fanout {fan_id} ended {results[0]}")
        peak = d.peak_rss_mb()
    finally:
        d.stop()
    return {
        "n": len(latencies),
        "wall_s": wall,
        "jobs_per_s": (fan + 1) / fan_wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "reads_per_s": len(latencies) / wall,
        "peak_rss_mb": peak,
    }


async def _make_interrupted(root: Path, specs: Path, journal: Path, chains: int) -> None:
    """A journal of `chains` requests of `resume-100`, each with 50 jobs complete and the 51st
    running, left behind by a daemon killed with SIGKILL."""
    d = DaemonProc(root, specs, journal=journal, max_running_jobs=chains + 10, log_level="WARNING")
    d.start()
    try:
        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn) as session:
            body = {"type": "resume-100", "args": {"fast": "1ms", "slow": "1h"}}
            sem = asyncio.Semaphore(32)

            async def one() -> str:
                async with sem:
                    return await _post(session, d.url, body)

            await asyncio.gather(*(one() for _ in range(chains)))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                running = await _get_json(session, f"{d.url}{API}/status/running")
                if len(running) >= chains:
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("the chains did not all reach their slow half")
    finally:
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.stop()


def _resumed_at(journal: Path, chains: int) -> float | None:
    """Epoch time at which the last chain got a try running under the newest boot, or None
    while some chain has none yet."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            """SELECT COUNT(*), MAX(first) FROM (
                 SELECT MIN(started_at) AS first FROM job_log
                 WHERE boot_id = (SELECT id FROM boots ORDER BY started_at DESC LIMIT 1)
                 GROUP BY request_id)"""
        ).fetchone()
    finally:
        conn.close()
    count, last = row
    return float(last) if count >= chains else None


async def resume(root: Path, chains: int) -> Result:
    specs = write_specs(root / "specs")
    journal = root / "spind.db"
    await _make_interrupted(root, specs, journal, chains)
    d = DaemonProc(root, specs, journal=journal, max_running_jobs=chains + 10)
    spawned = time.time()
    d.start()
    try:
        ready_s = d.ready_at - d.spawned_at
        deadline = time.monotonic() + 300
        last = None
        while last is None and time.monotonic() < deadline:
            last = _resumed_at(journal, chains)
            if last is None:
                await asyncio.sleep(0.1)
        if last is None:
            raise RuntimeError("not every chain got running again")
        peak = d.peak_rss_mb()
    finally:
        d.stop()
    return {
        "n": chains * 100,
        "wall_s": last - spawned,
        "jobs_per_s": chains * 100 / (last - spawned),
        "running_s": last - spawned,
        "ready_s": ready_s,
        "chains": chains,
        "peak_rss_mb": peak,
    }
