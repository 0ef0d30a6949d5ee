"""The `shell` job type: run a program, directly or with `/bin/sh -c`.

``with: {cmd: [prog, arg, ...]}`` runs the program directly; ``{{name}}`` is replaced inside
each item (a whole item or part of it; a list value becomes JSON text, it is not expanded).
``with: {cmd: "text"}`` runs ``/bin/sh -c text`` and NOTHING is ever pasted into the text: the
job's args reach the command only through the environment, so that hostile values stay data.

Environment: the daemon's own, then ``with.env`` (values are templates), then ``SPIND_ARG_<name>``
for every arg (non-alphanumerics of the name as ``_``; non-string values as JSON),
``SPIND_ARGS`` (every arg, as a JSON object), ``SPIND_REQUEST_ID``, ``SPIND_JOB_ID``,
``SPIND_TRY``, ``SPIND_TRY_KEY`` and ``SPIND_OUTPUT``: a fresh file where the command may write
``key=value`` lines, which become the try's outputs (a value that is valid JSON becomes that
value, anything else the raw string; blank lines and ``#`` comments are ignored). The file is
made in ``ctx.tmp_dir`` (the daemon's ``<journal>.tmp``) and removed when the try ends. Under a
daemon, ``SPIND_JOURNAL_PATH`` and ``SPIND_BOOT_ID`` name the journal and boot that ran the try:
with the try's ids they let a later boot find the processes a crash left running
(:mod:`daemon.orphans`).

The child runs in its own session (so its whole process group can be signalled); stdout and
stderr keep their last ``ctx.output_limit`` bytes each. ``timeout`` stops the group and fails
the try; ``stop()`` sends SIGTERM to the group and SIGKILL after ``ctx.stop_grace``. A timeout of
0 means none. A leader that exits normally leaves the rest of its group alone; if some process
left behind keeps stdout or stderr open, reading stops after `DRAIN_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shlex
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from daemon.duration import DurationError, format_duration, parse_duration
from daemon.jobs.base import (
    Job,
    JobContext,
    JobResult,
    OutputTail,
    check_duration,
    scalar_text,
)
from daemon.jobs.template import TemplateError, render
from daemon.model import JobState
from daemon.orphans import MARKER_ENV, marker_env

#: Seconds to keep reading stdout/stderr after the program exited (a child left behind may
#: hold them open).
DRAIN_TIMEOUT = 2.0
#: Largest outputs file read, in bytes.
MAX_OUTPUT_FILE = 1024 * 1024
#: Name prefix of the outputs files (`$SPIND_OUTPUT`).
OUTPUT_PREFIX = "spind-output-"
#: Environment variables the job sets itself (besides SPIND_ARG_*).
RESERVED_ENV = frozenset(
    {
        "SPIND_ARGS",
        "SPIND_REQUEST_ID",
        "SPIND_JOB_ID",
        "SPIND_TRY",
        "SPIND_TRY_KEY",
        "SPIND_OUTPUT",
        *MARKER_ENV,
    }
)

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


class ShellError(ValueError):
    """The job cannot run as configured (the message says why)."""


class OutputsError(ValueError):
    """The outputs file the command wrote is malformed."""


def env_name(arg: str) -> str:
    """The environment variable that carries an arg: `my-arg` -> `SPIND_ARG_my_arg`."""
    return "SPIND_ARG_" + _NON_ALNUM.sub("_", arg)


def parse_outputs(text: str) -> dict[str, Any]:
    """`key=value` lines -> outputs; a value that parses as JSON becomes that JSON value."""
    out: dict[str, Any] = {}
    for no, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key or any(c.isspace() for c in key):
            raise OutputsError(f"outputs file line {no}: expected key=value, got {line[:200]!r}")
        value = value.strip()
        try:
            out[key] = msgspec.json.decode(value)
        except msgspec.DecodeError:
            out[key] = value
    return out


class _Plan(msgspec.Struct, kw_only=True):
    """What to start, worked out (and checked) before anything is started."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    timeout: float | None
    stdin: bytes | None


def _text(value: Any, what: str, args: Mapping[str, Any], *, nul_ok: bool = False) -> str:
    text = scalar_text(value)
    if text is None:
        raise ShellError(f"{what}: expected a string, got {type(value).__name__}")
    try:
        out = render(text, args)
    except TemplateError as exc:
        raise ShellError(f"{what}: {exc}") from None
    if "\0" in out and not nul_ok:
        raise ShellError(f"{what} contains a NUL byte, which cannot be passed to a process")
    return out


def _argv(cmd: Any, args: Mapping[str, Any]) -> list[str]:
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ShellError("cmd is empty")
        if "\0" in cmd:
            raise ShellError("cmd contains a NUL byte, which cannot be passed to a process")
        return ["/bin/sh", "-c", cmd]
    if isinstance(cmd, list) and cmd:
        argv = [_text(item, f"cmd item {i}", args) for i, item in enumerate(cmd)]
        if not argv[0]:
            raise ShellError("cmd: the program name is empty")
        return argv
    raise ShellError(
        "cmd: expected a list (program and arguments, run directly) "
        "or a string (run with /bin/sh -c)"
    )


def _env(with_env: Any, ctx: JobContext, output_path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIND_ARG_")}
    if with_env is not None:
        if not isinstance(with_env, Mapping):
            raise ShellError(f"env: expected a mapping, got {type(with_env).__name__}")
        for key, value in with_env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ShellError(f"env: {key!r} is not a valid environment variable name")
            env[key] = _text(value, f"env {key}", ctx.args)
    for name, value in ctx.args.items():
        if "\0" in name or (isinstance(value, str) and "\0" in value):
            raise ShellError(
                f"arg {name!r} contains a NUL byte, which cannot be passed to a process"
            )
        try:
            env[env_name(name)] = value if isinstance(value, str) else _json(value)
        except (TypeError, ValueError) as exc:
            raise ShellError(f"arg {name!r} cannot be passed as JSON: {exc}") from None
    try:
        env["SPIND_ARGS"] = _json(ctx.args)
    except (TypeError, ValueError) as exc:
        raise ShellError(f"args cannot be passed as JSON: {exc}") from None
    env["SPIND_REQUEST_ID"] = ctx.request_id
    env["SPIND_JOB_ID"] = ctx.job_id
    env["SPIND_TRY"] = str(ctx.try_no)
    env["SPIND_TRY_KEY"] = ctx.try_key
    env["SPIND_OUTPUT"] = output_path
    for name in MARKER_ENV:  # only the daemon running this try may set them
        env.pop(name, None)
    if ctx.journal and ctx.boot_id:
        env.update(marker_env(ctx.journal, ctx.boot_id))
    return env


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _plan(with_: Mapping[str, Any], ctx: JobContext, output_path: str) -> _Plan:
    argv = _argv(with_.get("cmd"), ctx.args)
    env = _env(with_.get("env"), ctx, output_path)
    cwd = ctx.work_dir
    if with_.get("cwd") is not None:
        cwd = os.path.join(ctx.work_dir or "", _text(with_["cwd"], "cwd", ctx.args)) or None
    if cwd is not None and not os.path.isdir(cwd):
        raise ShellError(f"cwd {cwd!r} is not a directory")
    timeout: float | None = None
    if with_.get("timeout") is not None:
        try:
            timeout = parse_duration(_text(with_["timeout"], "timeout", ctx.args)) or None
        except DurationError as exc:
            raise ShellError(f"timeout: {exc}") from None
    stdin = None
    if with_.get("stdin") is not None:
        stdin = _text(with_["stdin"], "stdin", ctx.args, nul_ok=True).encode()
    return _Plan(argv=argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin)


class _Collect(asyncio.Protocol):
    """Feeds one read pipe into an OutputTail; `done` resolves at EOF."""

    def __init__(self, tail: OutputTail, done: asyncio.Future[None]) -> None:
        self.tail = tail
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.tail.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _exit_error(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class ShellJob(Job):
    type_name = "shell"
    params = frozenset({"cmd", "env", "cwd", "timeout", "stdin"})
    required_params = frozenset({"cmd"})

    def __init__(self, *, name: str, type_name: str, with_: Mapping[str, Any]) -> None:
        super().__init__(name=name, type_name=type_name, with_=with_)
        self._stop = asyncio.Event()
        self.pid: int | None = None
        self._argv: list[str] = []
        self._started: float | None = None
        self._ended: float | None = None
        self._returncode: int | None = None
        self._note = ""

    @classmethod
    def check_with(cls, with_: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        cmd = with_.get("cmd")
        if isinstance(cmd, list):
            if not cmd:
                problems.append("cmd: the list is empty")
            problems.extend(
                f"cmd item {i}: expected a string, got {type(item).__name__}"
                for i, item in enumerate(cmd)
                if scalar_text(item) is None
            )
        elif isinstance(cmd, str):
            if not cmd.strip():
                problems.append("cmd is empty")
        elif cmd is not None:
            problems.append("cmd: expected a list (run directly) or a string (run with /bin/sh)")
        env = with_.get("env")
        if env is not None and not isinstance(env, Mapping):
            problems.append(f"env: expected a mapping, got {type(env).__name__}")
        elif env is not None:
            problems.extend(
                f"env {k}: expected a string, got {type(v).__name__}"
                for k, v in env.items()
                if scalar_text(v) is None
            )
        for key in ("cwd", "stdin"):
            if with_.get(key) is not None and scalar_text(with_[key]) is None:
                problems.append(f"{key}: expected a string, got {type(with_[key]).__name__}")
        problems.extend(check_duration(with_, "timeout"))
        return problems

    async def run(self, ctx: JobContext) -> JobResult:
        if self._stop.is_set():
            return JobResult(state=JobState.STOPPED, error="stopped before it started")
        try:
            fd, output_path = tempfile.mkstemp(prefix=OUTPUT_PREFIX, suffix=".txt", dir=ctx.tmp_dir)
        except OSError as exc:
            error = f"cannot create the outputs file in {ctx.tmp_dir or 'the temp dir'}: {exc}"
            self._note = f"not started: {error}"
            return JobResult(state=JobState.FAIL, error=error)
        os.close(fd)
        try:
            try:
                plan = _plan(self.with_, ctx, output_path)
            except ShellError as exc:
                self._note = f"not started: {exc}"
                return JobResult(state=JobState.FAIL, error=str(exc))
            self._argv = plan.argv
            return await self._run(plan, ctx, output_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(output_path)

    async def _run(self, plan: _Plan, ctx: JobContext, output_path: str) -> JobResult:
        loop = asyncio.get_running_loop()
        tails = (OutputTail(ctx.output_limit), OutputTail(ctx.output_limit))
        drained: list[asyncio.Future[None]] = []
        transports: list[asyncio.ReadTransport] = []
        write_fds: list[int] = []
        try:
            for tail in tails:
                r, w = os.pipe()
                write_fds.append(w)
                done: asyncio.Future[None] = loop.create_future()
                pipe = os.fdopen(r, "rb", buffering=0)
                transport, _ = await loop.connect_read_pipe(
                    functools.partial(_Collect, tail, done), pipe
                )
                transports.append(transport)
                drained.append(done)
            stdin = asyncio.subprocess.DEVNULL if plan.stdin is None else asyncio.subprocess.PIPE
            try:
                proc = await asyncio.create_subprocess_exec(
                    *plan.argv,
                    stdin=stdin,
                    stdout=write_fds[0],
                    stderr=write_fds[1],
                    env=plan.env,
                    cwd=plan.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                error = self._spawn_error(exc, plan)
                self._note = f"not started: {error}"
                return JobResult(state=JobState.FAIL, error=error)
            finally:
                for w in write_fds:
                    os.close(w)
                write_fds.clear()
            outcome = await self._supervise(proc, plan, ctx, drained)
        finally:
            for w in write_fds:
                os.close(w)
            for transport in transports:
                transport.close()
        return self._result(outcome, plan, tails, output_path)

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        plan: _Plan,
        ctx: JobContext,
        drained: list[asyncio.Future[None]],
    ) -> str:
        """Wait for the program (or a stop, or the timeout); returns how it ended."""
        self.pid = proc.pid
        self._started = time.monotonic()
        exited = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(self._stop.wait())
        feeder = None
        if plan.stdin is not None and proc.stdin is not None:
            feeder = asyncio.ensure_future(_feed(proc.stdin, plan.stdin))
        outcome = "exit"
        try:
            done, _ = await asyncio.wait(
                {exited, stopped}, timeout=plan.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                await asyncio.wait(drained, timeout=DRAIN_TIMEOUT)
            else:
                outcome = "stop" if stopped in done else "timeout"
                await self._terminate(proc.pid, [exited, *drained], ctx.stop_grace)
            await asyncio.wait({exited})
        finally:
            stopped.cancel()
            if feeder is not None:
                feeder.cancel()
            if proc.returncode is None:  # cancelled: do not leave the group behind
                _killpg(proc.pid, signal.SIGKILL)
                await asyncio.wait({exited}, timeout=1.0)
            self._ended = time.monotonic()
            self._returncode = proc.returncode
        return outcome

    async def _terminate(self, pid: int, waits: list[asyncio.Future[Any]], grace: float) -> None:
        """SIGTERM to the group; SIGKILL if it is not gone (exited, pipes closed) in `grace`."""
        _killpg(pid, signal.SIGTERM)
        _, pending = await asyncio.wait(waits, timeout=max(0.0, grace))
        if pending:
            _killpg(pid, signal.SIGKILL)
            await asyncio.wait(waits, timeout=DRAIN_TIMEOUT)

    def _spawn_error(self, exc: OSError, plan: _Plan) -> str:
        prog = plan.argv[0]
        if isinstance(exc, FileNotFoundError):
            if plan.cwd is not None and exc.filename == plan.cwd:
                return f"cannot start {prog!r}: cwd {plan.cwd!r} does not exist"
            return f"cannot start {prog!r}: program not found"
        if isinstance(exc, PermissionError):
            return f"cannot start {prog!r}: permission denied"
        return f"cannot start {prog!r}: {exc.strerror or exc}"

    def _result(
        self, outcome: str, plan: _Plan, tails: tuple[OutputTail, OutputTail], output_path: str
    ) -> JobResult:
        rc = self._returncode
        res = JobResult(
            state=JobState.FAIL, exit=rc, stdout=tails[0].text(), stderr=tails[1].text()
        )
        if outcome == "stop":
            res.state = JobState.STOPPED
            res.error = "stopped"
        elif outcome == "timeout":
            res.error = f"timed out after {format_duration(plan.timeout or 0.0)}"
        elif rc != 0:
            res.error = _exit_error(rc if rc is not None else -1)
        else:
            try:
                res.outputs = _read_outputs(output_path)
            except OutputsError as exc:
                res.error = str(exc)
                return res
            res.state = JobState.COMPLETE
        return res

    async def stop(self) -> None:
        self._stop.set()

    def status(self) -> str:
        if self._argv[:2] == ["/bin/sh", "-c"] and len(self._argv) == 3:
            cmdline = "/bin/sh -c " + self._argv[2]
        else:
            cmdline = shlex.join(self._argv)
        if len(cmdline) > 200:
            cmdline = cmdline[:197] + "..."
        if self._started is None:
            if self._note:
                return self._note
            return "stopping before start" if self._stop.is_set() else "starting"
        if self._ended is not None:
            took = self._ended - self._started
            return f"exited {self._returncode} after {took:.1f}s: {cmdline}"
        verb = "stopping" if self._stop.is_set() else "running"
        took = time.monotonic() - self._started
        return f"{verb} pid {self.pid} for {took:.1f}s: {cmdline}"


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
        stream.close()


def _read_outputs(path: str) -> dict[str, Any]:
    try:
        size = os.path.getsize(path)
        if size > MAX_OUTPUT_FILE:
            raise OutputsError(f"outputs file is too large: {size} bytes (limit {MAX_OUTPUT_FILE})")
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}  # the command removed it: it set nothing
    except OSError as exc:
        raise OutputsError(f"cannot read the outputs file: {exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OutputsError(f"outputs file is not UTF-8: {exc}") from None
    return parse_outputs(text)
