"""The `shell` job type against real processes: /bin/sh, true, false, sleep, python."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.jobs import JobContext, JobFactory
from daemon.jobs import shell as shell_mod
from daemon.jobs.shell import ShellJob
from daemon.model import JobState
from daemon.orphans import ENV_BOOT, ENV_JOURNAL

FACTORY = JobFactory()
PY = sys.executable


def ctx(args: dict[str, Any] | None = None, **kw: Any) -> JobContext:
    base: dict[str, Any] = {
        "request_id": "req1",
        "job_id": "job7",
        "name": "node",
        "try_no": 2,
        "try_key": "req1/job7/2",
        "args": args or {},
        "stop_grace": 0.5,
    }
    base.update(kw)
    return JobContext(**base)


def shell(with_: dict[str, Any]) -> ShellJob:
    job = FACTORY.make("shell", name="node", with_=with_)
    assert isinstance(job, ShellJob)
    return job


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group `pgid`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


ARGS: dict[str, Any] = {"a": "v", "n": 3, "l": ["a", "b"]}


@pytest.mark.parametrize(
    ("with_", "state", "exit", "stdout", "error"),
    [
        ({"cmd": ["true"]}, JobState.COMPLETE, 0, "", ""),
        ({"cmd": ["false"]}, JobState.FAIL, 1, "", "exit status 1"),
        ({"cmd": "exit 3"}, JobState.FAIL, 3, "", "exit status 3"),
        ({"cmd": "kill -KILL $$"}, JobState.FAIL, -9, "", "killed by signal SIGKILL"),
        ({"cmd": ["echo", "{{a}}-x", "{{ n }}"]}, JobState.COMPLETE, 0, "v-x 3\n", ""),
        # a list value in a whole item is not expanded: it becomes JSON text
        ({"cmd": ["printf", "%s", "{{l}}"]}, JobState.COMPLETE, 0, '["a","b"]', ""),
        # nothing is ever pasted into a string cmd
        ({"cmd": "printf %s '{{a}}'"}, JobState.COMPLETE, 0, "{{a}}", ""),
        ({"cmd": ["sleep", 0]}, JobState.COMPLETE, 0, "", ""),
        ({"cmd": ["cat"], "stdin": "in {{a}}"}, JobState.COMPLETE, 0, "in v", ""),
        ({"cmd": ["cat"]}, JobState.COMPLETE, 0, "", ""),  # stdin is /dev/null
        ({"cmd": 'printf %s "$G"', "env": {"G": "hi {{a}}"}}, JobState.COMPLETE, 0, "hi v", ""),
        ({"cmd": ["echo", "{{missing}}"]}, JobState.FAIL, None, "", "unknown arg 'missing'"),
        ({"cmd": "true", "env": {"G": "{{zz}}"}}, JobState.FAIL, None, "", "env G: unknown"),
        ({"cmd": []}, JobState.FAIL, None, "", "cmd: expected a list"),
        ({}, JobState.FAIL, None, "", "cmd: expected a list"),
        ({"cmd": "  "}, JobState.FAIL, None, "", "cmd is empty"),
        ({"cmd": ["", "x"]}, JobState.FAIL, None, "", "program name is empty"),
        ({"cmd": "true", "env": ["X"]}, JobState.FAIL, None, "", "env: expected a mapping"),
        ({"cmd": "true", "env": {"A=B": "1"}}, JobState.FAIL, None, "", "not a valid environment"),
        ({"cmd": "true", "timeout": "soon"}, JobState.FAIL, None, "", "timeout: invalid duration"),
        ({"cmd": ["spind-no-such-program"]}, JobState.FAIL, None, "", "program not found"),
        ({"cmd": "true", "cwd": "/nonexistent/dir"}, JobState.FAIL, None, "", "not a directory"),
    ],
)
async def test_runs(
    with_: dict[str, Any], state: JobState, exit: int | None, stdout: str, error: str
) -> None:
    result = await shell(with_).run(ctx(ARGS))
    assert result.state is state
    assert result.exit == exit
    assert result.stdout == stdout
    assert error in result.error
    assert bool(result.error) == bool(error)


async def test_stderr_is_captured() -> None:
    result = await shell({"cmd": "echo out; echo err >&2; exit 4"}).run(ctx())
    assert (result.stdout, result.stderr, result.error) == ("out\n", "err\n", "exit status 4")


async def test_not_executable_is_a_clear_failure(tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    prog.write_text("#!/bin/sh\necho hi\n")
    job = shell({"cmd": [str(prog)]})
    result = await job.run(ctx())
    assert result.state is JobState.FAIL
    assert "permission denied" in result.error
    assert job.status() == f"not started: {result.error}"


async def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIND_ARG_stale", "from the daemon")
    monkeypatch.setenv("DAEMON_VAR", "inherited")
    script = (
        "import json, os; e = dict(os.environ);"
        "e['output_exists'] = os.path.exists(e['SPIND_OUTPUT']);"
        "print(json.dumps(e))"
    )
    args = {"my-arg": "x y", "n": 3, "l": ["a", 1], "d": {"k": None}, "s": "$(id)"}
    job = shell({"cmd": [PY, "-c", script], "env": {"EXTRA": "{{my-arg}}!"}})
    result = await job.run(ctx(args))
    assert result.state is JobState.COMPLETE, result.error
    env = json.loads(result.stdout)
    assert env["SPIND_ARG_my_arg"] == "x y"
    assert env["SPIND_ARG_n"] == "3"
    assert env["SPIND_ARG_l"] == '["a",1]'
    assert env["SPIND_ARG_d"] == '{"k":null}'
    assert env["SPIND_ARG_s"] == "$(id)"
    assert json.loads(env["SPIND_ARGS"]) == args
    assert (env["SPIND_REQUEST_ID"], env["SPIND_JOB_ID"]) == ("req1", "job7")
    assert (env["SPIND_TRY"], env["SPIND_TRY_KEY"]) == ("2", "req1/job7/2")
    assert env["output_exists"] is True
    assert not os.path.exists(env["SPIND_OUTPUT"])  # deleted afterwards
    assert env["EXTRA"] == "x y!"
    assert env["DAEMON_VAR"] == "inherited"
    assert "SPIND_ARG_stale" not in env


@pytest.mark.parametrize(
    ("kw", "with_env", "journal", "boot"),
    [
        ({}, {}, None, None),  # outside a daemon: no marker
        ({"journal": "/j/spind.db", "boot_id": "B1"}, {}, "/j/spind.db", "B1"),
        # only the daemon sets them: not `with.env`, not the daemon's own environment
        ({"journal": "/j/spind.db", "boot_id": "B1"}, {ENV_BOOT: "forged"}, "/j/spind.db", "B1"),
        ({}, {ENV_JOURNAL: "/forged", ENV_BOOT: "forged"}, None, None),
    ],
)
async def test_marker_environment(
    monkeypatch: pytest.MonkeyPatch,
    kw: dict[str, str],
    with_env: dict[str, str],
    journal: str | None,
    boot: str | None,
) -> None:
    monkeypatch.setenv(ENV_JOURNAL, "/inherited/spind.db")
    monkeypatch.setenv(ENV_BOOT, "inherited")
    script = "import json, os; print(json.dumps(dict(os.environ)))"
    result = await shell({"cmd": [PY, "-c", script], "env": with_env}).run(ctx(**kw))
    assert result.state is JobState.COMPLETE, result.error
    env = json.loads(result.stdout)
    assert (env.get(ENV_JOURNAL), env.get(ENV_BOOT)) == (journal, boot)


async def test_outputs_file_lives_in_tmp_dir(tmp_path: Path) -> None:
    job = shell({"cmd": 'printf %s "$SPIND_OUTPUT"; echo "k=1" > "$SPIND_OUTPUT"'})
    result = await job.run(ctx(tmp_dir=str(tmp_path)))
    assert result.state is JobState.COMPLETE, result.error
    assert result.outputs == {"k": 1}
    path = Path(result.stdout)
    assert path.parent == tmp_path and path.name.startswith(shell_mod.OUTPUT_PREFIX)
    assert os.listdir(tmp_path) == []  # removed when the try ended


async def test_missing_tmp_dir_is_a_clear_failure(tmp_path: Path) -> None:
    job = shell({"cmd": ["true"]})
    result = await job.run(ctx(tmp_dir=str(tmp_path / "gone")))
    assert result.state is JobState.FAIL
    assert result.error.startswith(f"cannot create the outputs file in {tmp_path / 'gone'}")
    assert job.status() == f"not started: {result.error}"


@pytest.mark.parametrize(
    ("script", "state", "outputs", "error"),
    [
        (
            'echo "hosts=[\\"a\\",\\"b\\"]" > "$SPIND_OUTPUT"',
            JobState.COMPLETE,
            {"hosts": ["a", "b"]},
            "",
        ),
        (
            "printf '# c\\n\\nn=5\\nname=db1\\n' > \"$SPIND_OUTPUT\"",
            JobState.COMPLETE,
            {"n": 5, "name": "db1"},
            "",
        ),
        ("true", JobState.COMPLETE, {}, ""),
        ('rm "$SPIND_OUTPUT"', JobState.COMPLETE, {}, ""),
        (
            "printf 'ok=1\\nthis is bad\\n' > \"$SPIND_OUTPUT\"",
            JobState.FAIL,
            {},
            "outputs file line 2: expected key=value, got 'this is bad'",
        ),
        ("printf 'k=\\377\\n' > \"$SPIND_OUTPUT\"", JobState.FAIL, {}, "not UTF-8"),
        # outputs of a failed command are not read
        ('echo "k=1" > "$SPIND_OUTPUT"; exit 2', JobState.FAIL, {}, "exit status 2"),
    ],
)
async def test_outputs(script: str, state: JobState, outputs: dict[str, Any], error: str) -> None:
    result = await shell({"cmd": script}).run(ctx())
    assert result.state is state
    assert result.outputs == outputs
    assert error in result.error
    assert bool(result.error) == bool(error)


async def test_outputs_file_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell_mod, "MAX_OUTPUT_FILE", 10)
    result = await shell({"cmd": 'echo "k=0123456789" > "$SPIND_OUTPUT"'}).run(ctx())
    assert result.state is JobState.FAIL
    assert "outputs file is too large: 13 bytes" in result.error


HOSTILE = [
    "$(touch {p})",
    "`touch {p}`",
    "; touch {p}",
    "x\ntouch {p}\n",
    "' ; touch {p} ; '",
    '" ; touch {p} ; "',
    "{{{{x}}}} && touch {p}",
]


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize(
    "cmd",
    [
        'printf %s "$SPIND_ARG_x"',
        ["printf", "%s", "{{x}}"],
        ["/bin/sh", "-c", 'printf %s "$1"', "sh", "{{x}}"],
    ],
)
async def test_hostile_args_stay_data(tmp_path: Path, template: str, cmd: Any) -> None:
    pwned = tmp_path / "pwned"
    value = template.format(p=pwned)
    result = await shell({"cmd": cmd}).run(ctx({"x": value}))
    assert result.state is JobState.COMPLETE, result.error
    assert result.stdout == value
    assert not pwned.exists()


@pytest.mark.parametrize(
    ("with_", "args", "error"),
    [
        ({"cmd": "true"}, {"evil": "a\0b"}, "arg 'evil' contains a NUL byte"),
        ({"cmd": ["echo", "{{x}}"]}, {"x": "a\0b"}, "contains a NUL byte"),
        ({"cmd": ["echo", "a\0"]}, {}, "cmd item 1 contains a NUL byte"),
        ({"cmd": "echo \0"}, {}, "cmd contains a NUL byte"),
    ],
)
async def test_nul_bytes_fail_the_try(
    with_: dict[str, Any], args: dict[str, Any], error: str
) -> None:
    result = await shell(with_).run(ctx(args))
    assert result.state is JobState.FAIL
    assert error in result.error


async def test_stdin_may_carry_nul_bytes() -> None:
    result = await shell({"cmd": ["od", "-An", "-c"], "stdin": "a\0"}).run(ctx())
    assert result.state is JobState.COMPLETE
    assert result.stdout.split() == ["a", "\\0"]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_output_keeps_the_tail(stream: str) -> None:
    fd = 1 if stream == "stdout" else 2
    script = f"import os; os.write({fd}, b'x' * 200000 + b'END')"
    result = await shell({"cmd": [PY, "-c", script]}).run(ctx(output_limit=1000))
    assert result.state is JobState.COMPLETE
    text = getattr(result, stream)
    assert text.startswith("[... 199003 bytes cut]\n")
    assert text.endswith("x" * 997 + "END")


async def test_cwd(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    cases: list[tuple[dict[str, Any], Path]] = [
        ({"cmd": ["pwd"]}, tmp_path),
        ({"cmd": ["pwd"], "cwd": "sub"}, sub),
        ({"cmd": ["pwd"], "cwd": str(sub)}, sub),
    ]
    for with_, want in cases:
        result = await shell(with_).run(ctx(work_dir=str(tmp_path)))
        assert result.stdout.strip() == str(want)


async def test_timeout_stops_the_group() -> None:
    job = shell({"cmd": "sleep 30 & sleep 30; wait", "timeout": "{{t}}"})
    result = await asyncio.wait_for(job.run(ctx({"t": "200ms"})), 10)
    assert result.state is JobState.FAIL
    assert result.error == "timed out after 200ms"
    assert job.pid is not None
    await eventually(lambda: not group_alive(job.pid or 0))


async def test_stop_returns_stopped_within_the_grace() -> None:
    job = shell({"cmd": ["sleep", "30"]})
    task = asyncio.create_task(job.run(ctx(stop_grace=5)))
    await eventually(lambda: job.pid is not None)
    assert job.status().startswith(f"running pid {job.pid} for ")
    assert job.status().endswith(": sleep 30")
    await job.stop()
    result = await asyncio.wait_for(task, 5)
    assert result.state is JobState.STOPPED
    assert result.exit == -signal.SIGTERM
    assert job.status().startswith("exited -15 after ")
    await eventually(lambda: not group_alive(job.pid or 0))


async def test_stop_sigkills_a_child_that_ignores_sigterm() -> None:
    job = shell({"cmd": "trap '' TERM; echo ready; sleep 30"})
    task = asyncio.create_task(job.run(ctx(stop_grace=0.5)))
    await eventually(lambda: job.pid is not None)
    await asyncio.sleep(0.2)  # let the shell install its trap
    await job.stop()
    assert job.status().startswith("stopping pid")
    result = await asyncio.wait_for(task, 5)
    assert result.state is JobState.STOPPED
    assert result.exit == -signal.SIGKILL
    assert result.stdout == "ready\n"
    await eventually(lambda: not group_alive(job.pid or 0))


async def test_stop_before_run_starts_nothing(tmp_path: Path) -> None:
    job = shell({"cmd": ["touch", str(tmp_path / "ran")]})
    await job.stop()
    result = await job.run(ctx())
    assert result.state is JobState.STOPPED
    assert job.pid is None
    assert not (tmp_path / "ran").exists()


async def test_cancelling_run_kills_the_group() -> None:
    job = shell({"cmd": "sleep 30 & sleep 30; wait"})
    task = asyncio.create_task(job.run(ctx()))
    await eventually(lambda: job.pid is not None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not group_alive(job.pid or 0))


async def test_child_left_behind_does_not_hold_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell_mod, "DRAIN_TIMEOUT", 0.2)
    job = shell({"cmd": "sleep 30 & echo started"})
    try:
        result = await asyncio.wait_for(job.run(ctx()), 10)
        assert result.state is JobState.COMPLETE
        assert result.stdout == "started\n"
    finally:
        if job.pid is not None:
            os.killpg(job.pid, signal.SIGKILL)
    await eventually(lambda: not group_alive(job.pid or 0))
