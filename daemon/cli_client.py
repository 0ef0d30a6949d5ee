"""The `spind` subcommands that talk to a running daemon: start, status, watch, stop, ...

Each command is `func(args) -> int` (exit code): 0 done, 1 a watched request failed or was
stopped, 2 an error (the API's message is printed). `--json` prints the API's JSON; otherwise
readable tables. The daemon is reached over `--socket` (default `$SPIND_SOCKET` or
./var/spind.sock) or `--url` (or `$SPIND_URL`, with `--token` / `$SPIND_TOKEN`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from daemon import __version__
from daemon.api.sse import EndView
from daemon.client import ApiError, Client, ClientError, ConnectError
from daemon.duration import DurationError, parse_duration
from daemon.model import Event, JobState, RequestDetail, RequestState

DEFAULT_SOCKET = "./var/spind.sock"
RECONNECTS = 5
Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """The command line is wrong (exit 2)."""


# --- plumbing ------------------------------------------------------------------------------


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """Client kwargs: --socket, else --url / $SPIND_URL, else $SPIND_SOCKET or the default."""
    if getattr(args, "socket", None):
        return {"socket_path": args.socket}
    url = getattr(args, "url", None) or os.environ.get("SPIND_URL")
    if url:
        token = getattr(args, "token", None) or os.environ.get("SPIND_TOKEN")
        return {"url": url, "token": token}
    return {"socket_path": os.environ.get("SPIND_SOCKET") or DEFAULT_SOCKET}


def run(args: argparse.Namespace, command: Command) -> int:
    async def go() -> int:
        async with Client(**connection(args)) as client:
            return await command(client, args)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        print(f"error: {exc.message} (HTTP {exc.status})", file=sys.stderr)
        if exc.details not in (None, {}, []):
            print(f"  details: {msgspec.json.encode(exc.details).decode()}", file=sys.stderr)
        print(f"  trace id: {exc.trace_id}", file=sys.stderr)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


def _command(command: Command) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        return run(args, command)

    func.__name__ = command.__name__
    return func


def emit_json(obj: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [
        [str(h) for h in headers],
        *[["-" if c in (None, "") else str(c) for c in r] for r in rows],
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def when(dt: datetime | None) -> str:
    return "-" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def parse_kv(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        out[key] = value
    return out


def time_arg(text: str, now: datetime) -> str:
    """RFC 3339, a date (UTC midnight), or a duration meaning that long ago -> RFC 3339."""
    try:
        return (now - timedelta(seconds=parse_duration(text))).isoformat()
    except DurationError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time or duration: {text!r} (e.g. 2h, 2024-05-01)") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


# --- progress (pure; used by watch) --------------------------------------------------------


class Progress:
    """What `watch` knows about a request: its state and each job's state and status."""

    def __init__(self, detail: RequestDetail) -> None:
        self.reset(detail)

    def reset(self, detail: RequestDetail) -> None:
        self.state = detail.state.value
        self.total = detail.total_jobs
        self.jobs = {j.id: [j.name, j.state.value, j.status] for j in detail.jobs}

    def apply(self, ev: Event) -> bool:
        """Take an event in; True when it names a job we do not know (time to re-read)."""
        if ev.kind == "request":
            self.state = ev.state
            return False
        if ev.job_id is None:
            return False
        job = self.jobs.get(ev.job_id)
        if job is None:
            self.jobs[ev.job_id] = [ev.job_id, ev.state, ev.detail]
            return True
        job[1], job[2] = ev.state, ev.detail if ev.state == JobState.RUNNING else ""
        return False

    def line(self) -> str:
        done = sum(
            1 for _, s, _ in self.jobs.values() if s in (JobState.COMPLETE, JobState.SKIPPED)
        )
        total = max(self.total, len(self.jobs))
        running = [
            f"{jid} {name}" + (f" ({status})" if status else "")
            for jid, (name, s, status) in self.jobs.items()
            if s == JobState.RUNNING
        ]
        text = f"{self.state} {done}/{total} done"
        return text + (" | running: " + ", ".join(running) if running else "")


def exit_code(state: str) -> int:
    if state == RequestState.COMPLETE:
        return 0
    if state in (RequestState.FAIL, RequestState.STOPPED):
        return 1
    return 2


# --- commands ------------------------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty()


async def _ask_missing(c: Client, rtype: str, args: dict[str, str]) -> None:
    """On a terminal: ask for required args not given, showing their descriptions."""
    found = [t for t in await c.request_types() if t.name == rtype]
    for arg in found[0].args if found else []:
        while arg.kind == "required" and not args.get(arg.name):
            sys.stderr.write(f"{arg.name}" + (f" ({arg.desc})" if arg.desc else "") + ": ")
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                raise UsageError(f"missing required arg {arg.name!r}")
            args[arg.name] = line.strip()


async def start(c: Client, a: argparse.Namespace) -> int:
    args = parse_kv(a.args)
    if _interactive():
        await _ask_missing(c, a.type, args)
    if a.dry_run:
        plan = await c.plan(a.type, args)
        if a.json:
            emit_json(plan)
            return 0
        rows = [
            (j.id, j.name, j.type, j.sequence, j.scope, "deferred" if j.deferred else "", j.retry)
            for j in plan.jobs
        ]
        print(table(["JOB", "NAME", "TYPE", "SEQUENCE", "SCOPE", "KIND", "RETRY"], rows))
        print("edges: " + (", ".join(f"{x}->{y}" for x, y in plan.edges) or "none"))
        return 0
    view, created = await c.create(a.type, args, idempotency_key=a.idempotency_key)
    if a.json:
        emit_json(view)
    else:
        print(view.id)
        if not created:
            print(f"(already started with this idempotency key: {view.state})", file=sys.stderr)
    return await watch(c, argparse.Namespace(id=view.id, json=False)) if a.watch else 0


async def status(c: Client, a: argparse.Namespace) -> int:
    d = await c.get(a.id)
    if a.json:
        emit_json(d)
        return 0
    args = " ".join(f"{k}={v}" for k, v in d.args.items())
    print(f"{d.id}  {d.type}  {d.state}  by {d.user}")
    print(f"  args:     {args or '-'}")
    print(
        f"  created:  {when(d.created_at)}  started: {when(d.started_at)}"
        f"  finished: {when(d.finished_at)}"
    )
    print(f"  progress: {d.finished_jobs}/{d.total_jobs} jobs done")
    rows = [(j.id, j.name, j.type, j.state, j.tries, j.status) for j in d.jobs]
    print(table(["JOB", "NAME", "TYPE", "STATE", "TRIES", "STATUS"], rows))
    return 0


async def watch(c: Client, a: argparse.Namespace) -> int:
    detail = await c.get(a.id)
    progress = Progress(detail)
    tty = sys.stdout.isatty() and not a.json
    if detail.state.finished:
        if a.json:
            emit_json(detail)
        else:
            print(progress.line())
        return exit_code(detail.state)
    after, failures = 0, 0
    while True:
        try:
            async for item in c.events(a.id, after):
                failures = 0
                if isinstance(item, EndView):
                    state = item.state or (await c.get(a.id)).state.value
                    progress.state = state
                    _show(progress, None, a.json, tty, final=True)
                    return exit_code(state)
                after = item.seq
                if progress.apply(item):
                    progress.reset(await c.get(a.id))
                    progress.apply(item)
                _show(progress, item, a.json, tty)
        except ConnectError:
            failures += 1
            if failures > RECONNECTS:
                raise
        await asyncio.sleep(min(1.0 * failures, 5.0))


def _show(p: Progress, ev: Event | None, as_json: bool, tty: bool, final: bool = False) -> None:
    if as_json:
        if ev is not None:
            print(msgspec.json.encode(ev).decode(), flush=True)
        return
    if tty:
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write("\r\x1b[2K" + p.line()[:width] + ("\n" if final else ""))
        sys.stdout.flush()
    elif ev is not None or final:
        what = f"{ev.job_id} {ev.state}" if ev is not None and ev.job_id else ""
        print(
            f"{when(ev.at) if ev else when(datetime.now(UTC))}  {what:<16} {p.line()}", flush=True
        )


def _change(name: str) -> Command:
    async def change(c: Client, a: argparse.Namespace) -> int:
        if name == "retry":
            view = await c.retry(a.id, a.job or None)
        elif name == "skip":
            view = await c.skip(a.id, a.job, a.reason)
        else:
            view = await getattr(c, name)(a.id)
        if a.json:
            emit_json(view)
        else:
            print(f"{view.id} {view.state}")
        return 0

    change.__name__ = name
    return change


async def log(c: Client, a: argparse.Namespace) -> int:
    rows = await c.log(a.id, a.job)
    if a.json:
        emit_json(rows)
        return 0
    print(
        table(
            ["JOB", "NAME", "TRY", "STATE", "EXIT", "STARTED", "FINISHED", "ERROR"],
            [
                (
                    r.job_id,
                    r.name,
                    r.try_,
                    r.state,
                    r.exit,
                    when(r.started_at),
                    when(r.finished_at),
                    r.error.splitlines()[0][:60] if r.error else "",
                )
                for r in rows
            ],
        )
    )
    for r in rows if a.output else []:
        for stream, text in (("stdout", r.stdout), ("stderr", r.stderr)):
            if text:
                print(f"--- {r.job_id} try {r.try_} {stream} ---\n{text.rstrip()}")
    return 0


async def ps(c: Client, a: argparse.Namespace) -> int:
    jobs = await c.running()
    if a.json:
        emit_json(jobs)
        return 0
    now = datetime.now(UTC)
    rows = [
        (
            j.request_id,
            j.request_type,
            j.user,
            j.job_id,
            j.name,
            j.try_,
            f"{(now - j.started_at).total_seconds():.0f}s",
            j.status,
        )
        for j in jobs
    ]
    print(table(["REQUEST", "TYPE", "USER", "JOB", "NAME", "TRY", "RUNNING", "STATUS"], rows))
    return 0


async def find(c: Client, a: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    found = await c.find(
        type=a.type or "",
        user=a.user or "",
        states=[s.upper() for s in a.state or []],
        args=parse_kv(a.arg or []),
        since=time_arg(a.since, now) if a.since else "",
        until=time_arg(a.until, now) if a.until else "",
        limit=a.limit,
        offset=a.offset,
    )
    if a.json:
        emit_json(found)
        return 0
    rows = [
        (r.id, r.type, r.state, r.user, when(r.created_at), f"{r.finished_jobs}/{r.total_jobs}")
        for r in found
    ]
    print(table(["ID", "TYPE", "STATE", "USER", "CREATED", "JOBS"], rows))
    return 0


async def requests(c: Client, a: argparse.Namespace) -> int:
    types = await c.request_types()
    if a.json:
        emit_json(types)
        return 0
    rows = []
    for t in types:
        args = [
            x.name if x.kind == "required" else f"[{x.name}={x.default or ''}]"
            for x in t.args
            if x.kind != "static"
        ]
        rows.append((t.name, " ".join(args), t.desc))
    print(table(["TYPE", "ARGS", "DESCRIPTION"], rows))
    return 0


async def info(c: Client, a: argparse.Namespace) -> int:
    found = [t for t in await c.request_types() if t.name == a.type]
    if not found:
        raise UsageError(f"no request type {a.type!r} (see `spind requests`)")
    t = found[0]
    if a.json:
        emit_json(t)
        return 0
    print(f"{t.name}: {t.desc or '(no description)'}")
    print(
        table(
            ["ARG", "KIND", "DEFAULT", "DESCRIPTION"],
            [(x.name, x.kind, x.default, x.desc) for x in t.args],
        )
    )
    return 0


async def version(c: Client, a: argparse.Namespace) -> int:
    v = await c.version()
    if a.json:
        emit_json(v)
    else:
        print(f"client {__version__}\nserver {v.version} (API {v.api})")
    return 0


# --- argparse ------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--socket", help=f"daemon socket (default $SPIND_SOCKET or {DEFAULT_SOCKET})")
    g.add_argument("--url", help="daemon URL for TCP (default $SPIND_URL)")
    g.add_argument("--token", help="bearer token for --url (default $SPIND_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    return p


def register(subparsers: Any) -> None:
    """Add the client subcommands to an argparse subparsers object (existing names are kept)."""
    common = _common()
    taken = set(getattr(subparsers, "choices", None) or ())

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=_command(command))
        return p

    p = add("start", start, "start a request: start TYPE key=value ...")
    p.add_argument("type", help="request type")
    p.add_argument("args", nargs="*", metavar="key=value", help="request args")
    p.add_argument("--dry-run", action="store_true", help="show the chain; start nothing")
    p.add_argument("--idempotency-key", help="a retried start with this key starts nothing new")
    p.add_argument("--watch", action="store_true", help="then follow it like `watch`")
    for name, text in (
        ("status", "a request and its jobs"),
        ("watch", "follow a request until it ends (exit 0 COMPLETE, 1 otherwise)"),
        ("stop", "stop a request"),
        ("suspend", "suspend a request"),
        ("resume", "resume a suspended request"),
    ):
        fn = {"status": status, "watch": watch}.get(name) or _change(name)
        add(name, fn, text).add_argument("id", help="request id")
    p = add("retry", _change("retry"), "retry a failed, stopped or held request")
    p.add_argument("id", help="request id")
    p.add_argument("--job", action="append", help="only this job (repeatable)")
    p = add("skip", _change("skip"), "skip a job")
    p.add_argument("id", help="request id")
    p.add_argument("job", help="job id")
    p.add_argument("--reason", required=True, help="why (recorded)")
    p = add("log", log, "every try of every job (or of one job)")
    p.add_argument("id", help="request id")
    p.add_argument("job", nargs="?", help="job id")
    p.add_argument("--output", action="store_true", help="also print stdout and stderr")
    add("ps", ps, "jobs running now")
    p = add("find", find, "find requests, newest first")
    p.add_argument("--type", help="request type")
    p.add_argument("--user", help="who started it")
    p.add_argument("--state", action="append", help="state (repeatable)")
    p.add_argument("--arg", action="append", metavar="key=value", help="arg value (repeatable)")
    p.add_argument("--since", help="created since: RFC 3339, a date, or a duration ago (2h)")
    p.add_argument("--until", help="created before: as --since")
    p.add_argument("--limit", type=int, help="at most this many (default 100)")
    p.add_argument("--offset", type=int, help="skip this many")
    add("requests", requests, "request types you can start")
    add("info", info, "a request type's args").add_argument("type", help="request type")
    if "version" not in taken:
        add("version", version, "client and daemon versions")
    else:
        add("server-version", version, "client and daemon versions")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spind", description="talk to a running spind")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
